//! Response bodies: whole replies, and SSE token streams paced by the behaviour.
//!
//! A stream is a sequence of data events: one per token, a finish event, the usage
//! event when asked for, and `[DONE]`. `stall_after`/`disconnect_after` count these
//! events. Headers go out at once; queueing and TTFT happen inside the body, as in vLLM.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::behavior::Behavior;
use crate::openai::{CREATED, Kind, Reply, Usage, token_text};
use crate::state::{InFlight, Phase, Running, Shared};

/// The error that ends a body abruptly (a simulated disconnect or a shutdown).
#[derive(Debug)]
pub struct Aborted(pub &'static str);

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aborted: {}", self.0)
    }
}

impl std::error::Error for Aborted {}

type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Aborted>> + Send>>;

/// Every response body the simulator sends; whole replies need no allocation here.
pub enum SimBody {
    Full(Option<Bytes>),
    Stream(Frames),
}

impl fmt::Debug for SimBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimBody::Full(b) => f.debug_tuple("Full").field(b).finish(),
            SimBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            SimBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            SimBody::Stream(s) => s.as_mut().poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Sleeps until `at`, skipping the timer entirely when it is already due.
pub(crate) async fn sleep_until(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
}

/// Builds the SSE body for an accepted streaming request.
pub(crate) fn sse(
    shared: Arc<Shared>,
    behavior: Arc<Behavior>,
    reply: Reply,
    include_usage: bool,
    in_flight: InFlight,
) -> SimBody {
    let g = Gen {
        shared,
        behavior,
        reply,
        include_usage,
        step: Step::Queue,
        sent: 0,
        start: Instant::now(),
        slot: None,
        _in_flight: in_flight,
    };
    SimBody::Stream(Box::pin(futures_util::stream::unfold(g, Gen::next)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Queue,
    Token(u32),
    Usage,
    Done,
    End,
}

struct Gen {
    shared: Arc<Shared>,
    behavior: Arc<Behavior>,
    reply: Reply,
    include_usage: bool,
    step: Step,
    /// Data events sent so far.
    sent: u32,
    /// When the first token is due.
    start: Instant,
    slot: Option<Running>,
    _in_flight: InFlight,
}

type Item = Result<Frame<Bytes>, Aborted>;

impl Gen {
    async fn next(mut self) -> Option<(Item, Gen)> {
        if self.step == Step::Queue {
            self.slot = Some(self.shared.admit().await?);
            self.start = Instant::now() + self.behavior.ttft;
            self.step = Step::Token(0);
        }
        if self.step == Step::End {
            return None;
        }
        if self.behavior.disconnect_after == Some(self.sent) {
            // hyper discards unflushed bytes when a body fails; returning Pending
            // once lets it flush the chunks already sent, as a real replica would have.
            tokio::task::yield_now().await;
            self.step = Step::End;
            return Some((Err(Aborted("disconnect_after")), self));
        }
        if self.behavior.stall_after == Some(self.sent) {
            // Silent but open until the server drains.
            self.shared.reached(Phase::Draining).await;
            self.step = Step::End;
            return Some((Err(Aborted("stalled stream at shutdown")), self));
        }
        let n = self.reply.completion_tokens;
        let (data, step) = match self.step {
            Step::Token(i) if i < n => {
                sleep_until(self.start + self.behavior.inter_token * i).await;
                (self.token(i), Step::Token(i + 1))
            }
            Step::Token(_) => {
                // The finish event follows the last token without another delay.
                sleep_until(self.start).await;
                let next = if self.include_usage {
                    Step::Usage
                } else {
                    Step::Done
                };
                (self.finish(), next)
            }
            Step::Usage => (self.usage(), Step::Done),
            Step::Done | Step::Queue | Step::End => {
                self.slot = None;
                (Bytes::from_static(b"data: [DONE]\n\n"), Step::End)
            }
        };
        self.step = step;
        self.sent += 1;
        Some((Ok(Frame::data(data)), self))
    }

    fn usage_field(&self) -> UsageField {
        if self.include_usage {
            UsageField::Null
        } else {
            UsageField::Absent
        }
    }

    fn token(&self, i: u32) -> Bytes {
        let text = token_text(i);
        let role = (i == 0).then_some("assistant");
        match self.reply.kind {
            Kind::Chat => self.event([ChatChoice {
                index: 0,
                delta: Delta {
                    role,
                    content: Some(&text),
                },
                logprobs: (),
                finish_reason: None,
            }]),
            Kind::Text => self.event([TextChoice {
                index: 0,
                text: &text,
                logprobs: (),
                finish_reason: None,
            }]),
        }
    }

    fn finish(&self) -> Bytes {
        let reason = Some(self.reply.finish_reason);
        match self.reply.kind {
            Kind::Chat => self.event([ChatChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: None,
                },
                logprobs: (),
                finish_reason: reason,
            }]),
            Kind::Text => self.event([TextChoice {
                index: 0,
                text: "",
                logprobs: (),
                finish_reason: reason,
            }]),
        }
    }

    fn usage(&self) -> Bytes {
        self.event_with::<[(); 0]>([], UsageField::Some(self.reply.usage()))
    }

    fn event<C: Serialize>(&self, choices: C) -> Bytes {
        self.event_with(choices, self.usage_field())
    }

    fn event_with<C: Serialize>(&self, choices: C, usage: UsageField) -> Bytes {
        let chunk = Chunk {
            id: &self.reply.id,
            object: match self.reply.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Text => "text_completion",
            },
            created: CREATED,
            model: &self.reply.model,
            choices,
            usage,
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"data: ");
        // Serializing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &chunk);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

#[derive(Serialize)]
struct Chunk<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: C,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    usage: UsageField,
}

/// OpenAI puts `"usage": null` on every chunk once usage is requested.
enum UsageField {
    Absent,
    Null,
    Some(Usage),
}

impl UsageField {
    fn is_absent(&self) -> bool {
        matches!(self, UsageField::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UsageField::Some(u) => u.serialize(s),
            UsageField::Absent | UsageField::Null => s.serialize_unit(),
        }
    }
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: (),
    finish_reason: Option<&'a str>,
}
