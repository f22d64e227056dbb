//! What a request used and cost: token usage read from the tail of the relayed body, and the price of the endpoint that served it.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use leasegate_fleet::Kind;
use parking_lot::Mutex;

use crate::{
    config::Config,
    fleet::EndpointHandle,
    server::body::{Body, BoxError},
};

/// How the endpoint that served a request charges for it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Price {
    #[default]
    Free,
    /// A fallback: per million prompt and completion tokens.
    PerToken { input: f64, output: f64 },
    /// A lease or static replica, paid by the hour whatever it serves: a
    /// request is charged its share of the replica for as long as it ran,
    /// `price × duration / max_concurrency`.
    PerHour { usd: f64, slots: u32 },
}

impl Price {
    /// The price of the endpoint `e` under `config`.
    pub fn of(e: &EndpointHandle, config: &Config) -> Self {
        match e.spec.kind {
            Kind::Fallback => {
                config
                    .fallbacks
                    .iter()
                    .find(|f| f.id == e.spec.id)
                    .map_or(Price::Free, |f| Price::PerToken {
                        input: f.price_per_1m_input_usd,
                        output: f.price_per_1m_output_usd,
                    })
            }
            Kind::Lease | Kind::Static => Price::PerHour {
                usd: e.spec.price_per_hour_usd,
                slots: e.spec.max_concurrency.max(1),
            },
        }
    }

    /// The cost of one request; with unknown usage a per-token price charges
    /// the whole reservation as output, the dearer side.
    pub fn cost(&self, usage: Option<Usage>, reserved: u64, elapsed: Duration) -> f64 {
        let cost = match *self {
            Price::Free => 0.0,
            Price::PerToken { input, output } => match usage {
                Some(u) => (u.prompt as f64 * input + u.completion as f64 * output) / 1e6,
                None => reserved as f64 * input.max(output) / 1e6,
            },
            Price::PerHour { usd, slots } => {
                usd * elapsed.as_secs_f64() / 3600.0 / f64::from(slots)
            }
        };
        if cost.is_finite() && cost > 0.0 {
            cost
        } else {
            0.0
        }
    }
}

/// Token usage as the upstream reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// Wraps the response body once it exists; see `PolicyCtx::tap_slot`.
#[derive(Debug)]
pub struct TapSlot(pub(super) Option<UsageTail>);

impl TapSlot {
    pub fn wrap(self, body: Body) -> Body {
        match self.0 {
            None => body,
            Some(tail) => http_body_util::BodyExt::boxed_unsync(Tap { inner: body, tail }),
        }
    }
}

/// The last few data frames of a body, shared with the end-of-body hook.
#[derive(Clone, Debug, Default)]
pub(super) struct UsageTail(Arc<Mutex<Vec<Bytes>>>);

/// Frames kept: usage sits in the last JSON object or in the SSE event before `[DONE]`.
const TAIL_FRAMES: usize = 4;
/// Bytes searched from the end; a usage object is a few hundred bytes.
const TAIL_BYTES: usize = 8192;

impl UsageTail {
    fn push(&self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        let mut frames = self.0.lock();
        if frames.len() == TAIL_FRAMES {
            frames.remove(0);
        }
        // A clone of `Bytes` shares the buffer; nothing is copied here.
        frames.push(data.clone());
    }

    pub(super) fn parse(&self) -> Option<Usage> {
        let frames = self.0.lock();
        let joined: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
        let start = joined.len().saturating_sub(TAIL_BYTES);
        parse_usage(&joined[start..])
    }
}

/// The last `"usage": {...}` object in `text`.
fn parse_usage(text: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Raw {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        total_tokens: Option<u64>,
    }
    let at = memchr::memmem::rfind(text, b"\"usage\"")?;
    let rest = &text[at + b"\"usage\"".len()..];
    let brace = rest.iter().position(|b| *b == b'{')?;
    if !rest[..brace]
        .iter()
        .all(|b| b.is_ascii_whitespace() || *b == b':')
    {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(&rest[brace..]).into_iter::<Raw>();
    let raw = de.next()?.ok()?;
    let prompt = raw.prompt_tokens.unwrap_or(0);
    let completion = match (raw.completion_tokens, raw.total_tokens) {
        (Some(c), _) => c,
        (None, Some(t)) => t.saturating_sub(prompt),
        (None, None) => return None,
    };
    Some(Usage { prompt, completion })
}

pin_project_lite::pin_project! {
    struct Tap {
        #[pin]
        inner: Body,
        tail: UsageTail,
    }
}

impl HttpBody for Tap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.tail.push(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_a_json_answer_and_from_an_sse_tail() {
        let json = br#"{"id":"x","choices":[{"text":"usage"}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(
            parse_usage(json),
            Some(Usage {
                prompt: 12,
                completion: 30
            })
        );
        let sse = b"data: {\"choices\":[],\"usage\": {\"prompt_tokens\":5,\"total_tokens\":9}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse_usage(sse),
            Some(Usage {
                prompt: 5,
                completion: 4
            })
        );
        assert_eq!(
            parse_usage(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"),
            None
        );
        assert_eq!(parse_usage(b"{\"usage\":null}"), None);
    }

    #[test]
    fn costs_follow_the_endpoint_kind() {
        let u = Some(Usage {
            prompt: 1_000_000,
            completion: 500_000,
        });
        let fallback = Price::PerToken {
            input: 1.0,
            output: 4.0,
        };
        assert_eq!(fallback.cost(u, 0, Duration::ZERO), 3.0);
        assert_eq!(fallback.cost(None, 250_000, Duration::ZERO), 1.0);
        let lease = Price::PerHour { usd: 2.0, slots: 4 };
        assert_eq!(lease.cost(u, 0, Duration::from_secs(1800)), 0.25);
        assert_eq!(Price::Free.cost(u, 9, Duration::from_secs(9)), 0.0);
    }
}
