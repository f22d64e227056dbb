"""Writes the request bodies the harness sends: ~1.2 KB chat completion, its streaming twin, 1 MiB prompt."""

import json
import sys
from pathlib import Path

SYSTEM = "You are a concise assistant for a logistics company. Answer in plain English."
USER_SEED = (
    "Summarise the following shipment notes for the operations lead, listing delays, "
    "damaged items and the carriers involved. Notes: "
)


def chat(model: str, user: str, stream: bool) -> dict:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "user": "bench-user-0001",
    }
    if stream:
        body["stream"] = True
    return body


def padded(model: str, size: int, stream: bool) -> bytes:
    """A body of exactly `size` bytes (the user message is padded)."""
    base = json.dumps(chat(model, USER_SEED, stream), separators=(",", ":")).encode()
    # Lines and quotes as real prompts have them: the JSON string gets escapes.
    filler = 'crate 17 left Rotterdam on time; pallet 4 arrived "wet"; carrier swap at Lyon.\n'
    need = size - len(base)
    if need < 0:
        raise SystemExit(f"size {size} is smaller than the empty body ({len(base)})")
    text = USER_SEED + (filler * (need // len(filler) + 1))[:need]
    while True:
        out = json.dumps(chat(model, text, stream), separators=(",", ":")).encode()
        if len(out) > size:
            # Escapes take two bytes: cut, then pad with spaces (one byte each).
            text = text[: len(text) - (len(out) - size)]
        elif len(out) < size:
            text += " " * (size - len(out))
        else:
            return out


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "chat.json").write_bytes(padded("bench-model", 1200, False))
    (out / "stream.json").write_bytes(padded("bench-model", 1200, True))
    (out / "large.json").write_bytes(padded("bench-model", 1 << 20, False))
    # Readiness probe: one token, so even the slow streaming replicas answer it at once.
    probe = chat("bench-model", "ping", False)
    probe["max_tokens"] = 1
    (out / "probe.json").write_bytes(json.dumps(probe).encode())


if __name__ == "__main__":
    main()
