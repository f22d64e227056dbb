//! OpenAI wire shapes: the few request fields the simulator reads and the replies it writes.
//!
//! Everything written here is a pure function of the request body and the behaviour:
//! ids come from a hash of the body, `created` is fixed, and the text is `tok0 tok1 …`.
//! Prompt tokens are counted as the request body's length in bytes divided by 4,
//! rounded up (a stand-in for a tokenizer that needs no parsing of the prompt).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The `created` timestamp of every reply, so replies compare byte for byte.
pub const CREATED: u64 = 1_700_000_000;

/// Fields of a chat or completion request the simulator uses; the rest is skipped.
#[derive(Debug, Deserialize)]
pub struct GenerateRequest<'a> {
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stream_options: Option<StreamOptions>,
}

impl GenerateRequest<'_> {
    /// The smaller of the request's limits, if it gives one.
    pub fn token_limit(&self) -> Option<u32> {
        match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// An embeddings request: the model and how many inputs to embed.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
    pub input: InputCount,
}

/// Number of inputs in an embeddings `input`: a string or a token list is one,
/// a list of strings or of token lists is one per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputCount(pub usize);

impl<'de> Deserialize<'de> for InputCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputCount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a list of strings, or token lists")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<InputCount, E> {
        Ok(InputCount(1))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputCount, A::Error> {
        let mut count = 0;
        let mut tokens = false;
        while let Some(elem) = seq.next_element::<Element>()? {
            tokens |= elem == Element::Token;
            count += 1;
        }
        if count == 0 {
            return Err(de::Error::invalid_length(0, &"at least one input"));
        }
        // A flat list of token ids is a single input.
        Ok(InputCount(if tokens { 1 } else { count }))
    }
}

#[derive(PartialEq, Eq)]
enum Element {
    Token,
    Other,
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or a token list")
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
                Ok(Element::Token)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
                Ok(Element::Token)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Element, E> {
                Ok(Element::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether the reply is a chat completion or a (legacy) text completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
}

/// Everything a reply is built from; fixed once the request is accepted.
#[derive(Debug, Clone)]
pub struct Reply {
    pub kind: Kind,
    pub id: String,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub finish_reason: &'static str,
}

impl Reply {
    /// `body` is the request body and `hash` its [`hash64`], computed once by the caller.
    pub fn new(
        kind: Kind,
        body: &[u8],
        hash: u64,
        model: &str,
        tokens: u32,
        limit: Option<u32>,
    ) -> Self {
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Text => "cmpl",
        };
        let (completion_tokens, finish_reason) = match limit {
            Some(l) if l < tokens => (l, "length"),
            _ => (tokens, "stop"),
        };
        Self {
            kind,
            id: format!("{prefix}-{hash:016x}"),
            model: model.to_owned(),
            prompt_tokens: prompt_tokens(body),
            completion_tokens,
            finish_reason,
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
        }
    }

    /// The whole non-streaming reply.
    pub fn full(&self) -> Bytes {
        let text = full_text(self.completion_tokens);
        let usage = Some(self.usage());
        let json = match self.kind {
            Kind::Chat => serde_json::to_vec(&ChatCompletion {
                id: &self.id,
                object: "chat.completion",
                created: CREATED,
                model: &self.model,
                choices: [ChatChoice {
                    index: 0,
                    message: Message {
                        role: "assistant",
                        content: &text,
                    },
                    logprobs: (),
                    finish_reason: self.finish_reason,
                }],
                usage,
            }),
            Kind::Text => serde_json::to_vec(&TextCompletion {
                id: &self.id,
                object: "text_completion",
                created: CREATED,
                model: &self.model,
                choices: [TextChoice {
                    index: 0,
                    text: &text,
                    logprobs: (),
                    finish_reason: Some(self.finish_reason),
                }],
                usage,
            }),
        };
        Bytes::from(json.unwrap_or_default())
    }
}

/// The text of token `i`: `tok0`, then ` tok1`, ` tok2`, … so the pieces concatenate.
pub fn token_text(i: u32) -> String {
    if i == 0 {
        "tok0".to_owned()
    } else {
        format!(" tok{i}")
    }
}

fn full_text(n: u32) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(n as usize * 7);
    for i in 0..n {
        let sep = if i == 0 { "" } else { " " };
        // Writing into a String cannot fail.
        let _ = write!(s, "{sep}tok{i}");
    }
    s
}

/// Prompt tokens as documented at the top of this module.
pub fn prompt_tokens(body: &[u8]) -> u32 {
    u32::try_from(body.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// A fast, stable 64-bit hash (word-at-a-time multiply-xorshift); not cryptographic.
pub fn hash64(data: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (data.len() as u64).wrapping_mul(K) ^ 0x243F_6A88_85A3_08D3;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
    h ^= h >> 32;
    h.wrapping_mul(K) ^ (h >> 29)
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: (),
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [TextChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: (),
    finish_reason: Option<&'a str>,
}

/// `/v1/embeddings` reply: `n` deterministic unit-ish vectors of `dim` values.
pub fn embeddings(body: &[u8], seed: u64, model: &str, n: usize, dim: usize) -> Bytes {
    let data: Vec<Embedding> = (0..n)
        .map(|i| Embedding {
            object: "embedding",
            index: i,
            embedding: (0..dim)
                .map(|j| {
                    let x = hash64(
                        &[
                            seed.to_le_bytes(),
                            (i as u64).to_le_bytes(),
                            (j as u64).to_le_bytes(),
                        ]
                        .concat(),
                    );
                    // Map to [-1, 1) with 1/1024 resolution so the JSON stays short.
                    ((x >> 54) as f32 - 512.0) / 512.0
                })
                .collect(),
        })
        .collect();
    let tokens = prompt_tokens(body);
    let reply = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// `/v1/models` reply.
pub fn models(models: &[String]) -> Bytes {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Model<'a>>,
    }
    #[derive(Serialize)]
    struct Model<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'static str,
    }
    let list = List {
        object: "list",
        data: models
            .iter()
            .map(|id| Model {
                id,
                object: "model",
                created: CREATED,
                owned_by: "replica-sim",
            })
            .collect(),
    };
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

/// An OpenAI-shaped error body: `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        r#type: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    let e = Outer {
        error: Inner {
            message,
            r#type: kind,
            param: None,
            code,
        },
    };
    Bytes::from(serde_json::to_vec(&e).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(json: &str) -> usize {
        serde_json::from_str::<EmbeddingsRequest<'_>>(json)
            .unwrap()
            .input
            .0
    }

    #[test]
    fn embedding_inputs_are_counted_like_openai() {
        assert_eq!(count(r#"{"model":"m","input":"hello"}"#), 1);
        assert_eq!(count(r#"{"model":"m","input":["a","b","c"]}"#), 3);
        assert_eq!(count(r#"{"model":"m","input":[1,2,3]}"#), 1);
        assert_eq!(count(r#"{"model":"m","input":[[1,2],[3]]}"#), 2);
        assert!(
            serde_json::from_str::<EmbeddingsRequest<'_>>(r#"{"model":"m","input":[]}"#).is_err()
        );
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        assert_eq!(hash64(b"abc"), hash64(b"abc"));
        assert_ne!(hash64(b"abc"), hash64(b"abd"));
        assert_ne!(hash64(b""), hash64(b"\0"));
        assert_ne!(hash64(&[0u8; 9]), hash64(&[0u8; 10]));
    }

    #[test]
    fn smaller_request_limit_wins_and_finishes_with_length() {
        let r = Reply::new(Kind::Chat, b"{}", 1, "m", 16, Some(3));
        assert_eq!((r.completion_tokens, r.finish_reason), (3, "length"));
        let r = Reply::new(Kind::Chat, b"{}", 1, "m", 4, Some(30));
        assert_eq!((r.completion_tokens, r.finish_reason), (4, "stop"));
        assert_eq!(full_text(3), "tok0 tok1 tok2");
    }
}
