"""Drives the gateway with the official openai Python client; exits non-zero on any mismatch."""

import os
import sys

import openai

base_url = os.environ["LEASEGATE_BASE_URL"]
key = os.environ["LEASEGATE_KEY"]
chat_model = os.environ["LEASEGATE_CHAT_MODEL"]
embed_model = os.environ["LEASEGATE_EMBED_MODEL"]

client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)

reply = client.chat.completions.create(
    model=chat_model, messages=[{"role": "user", "content": "Say hello"}]
)
assert reply.choices[0].message.content, reply
print("chat ok:", reply.choices[0].message.content[:40])

chunks = 0
text = ""
for chunk in client.chat.completions.create(
    model=chat_model,
    messages=[{"role": "user", "content": "Stream please"}],
    stream=True,
):
    chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
assert chunks > 1 and text, (chunks, text)
print("stream ok:", chunks, "chunks")

ids = sorted(m.id for m in client.models.list())
assert chat_model in ids and embed_model in ids, ids
print("models ok:", ids)

emb = client.embeddings.create(model=embed_model, input="hello")
assert len(emb.data) == 1 and len(emb.data[0].embedding) > 0, emb
print("embeddings ok:", len(emb.data[0].embedding))

try:
    client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "x"}]
    )
    sys.exit("expected NotFoundError for an unknown model")
except openai.NotFoundError as e:
    print("not found ok:", e.status_code)

bad = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0, timeout=30)
try:
    bad.models.list()
    sys.exit("expected AuthenticationError for a bad key")
except openai.AuthenticationError as e:
    print("auth ok:", e.status_code)

print("ALL OK")
