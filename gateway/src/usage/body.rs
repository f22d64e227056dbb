//! The relayed-body wrapper that meters usage as frames pass, and the slot the end-of-request hook reads it from.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use parking_lot::Mutex;
use pin_project_lite::pin_project;

use super::{SseFilter, Usage, UsageScan};

/// Where a [`Metered`] body publishes usage as soon as it is seen.
///
/// The relay's end hook may run before the wrapper sees the end of the body
/// (the wrapper sits outside the relay), so usage is published when read,
/// not when the body ends.
#[derive(Debug, Default)]
pub struct UsageSlot(Mutex<Option<Usage>>);

impl UsageSlot {
    pub fn get(&self) -> Option<Usage> {
        *self.0.lock()
    }

    fn set(&self, usage: Option<Usage>) {
        if usage.is_some() {
            *self.0.lock() = usage;
        }
    }
}

/// How a body is metered.
#[derive(Debug)]
pub enum Meter {
    /// A JSON answer: scanned, never changed.
    Json(UsageScan),
    /// An SSE stream: filtered (see [`SseFilter`]).
    Sse(SseFilter),
}

impl Meter {
    fn push(&mut self, data: Bytes) -> Bytes {
        match self {
            Meter::Json(s) => {
                s.feed(&data);
                data
            }
            Meter::Sse(f) => f.push(data),
        }
    }

    fn finish(&mut self) -> Bytes {
        match self {
            Meter::Json(_) => Bytes::new(),
            Meter::Sse(f) => f.finish(),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Meter::Json(s) => s.usage(),
            Meter::Sse(f) => f.usage(),
        }
    }

    fn changes_length(&self) -> bool {
        matches!(self, Meter::Sse(_))
    }
}

pin_project! {
    /// A body whose data frames go through a [`Meter`].
    pub struct Metered<B> {
        #[pin]
        inner: B,
        meter: Meter,
        slot: Arc<UsageSlot>,
        ended: bool,
    }
}

impl<B> Metered<B> {
    pub fn new(inner: B, meter: Meter, slot: Arc<UsageSlot>) -> Self {
        Self {
            inner,
            meter,
            slot,
            ended: false,
        }
    }
}

impl<B> HttpBody for Metered<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            if *this.ended {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.meter.push(data);
                        this.slot.set(this.meter.usage());
                        // A frame that only extended a held event: nothing to send yet.
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    *this.ended = true;
                    let rest = this.meter.finish();
                    this.slot.set(this.meter.usage());
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        if self.meter.changes_length() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Item = Result<Frame<Bytes>, std::convert::Infallible>;

    #[tokio::test]
    async fn a_stripped_stream_publishes_usage_and_never_yields_the_chunk() {
        let frames: Vec<Item> = [
            &b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\nda"[..],
            b"ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n",
            b"data: [DONE]\n\n",
        ]
        .into_iter()
        .map(|b| Ok(Frame::data(Bytes::from_static(b))))
        .collect();
        let slot = Arc::new(UsageSlot::default());
        let body = Metered::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            Meter::Sse(SseFilter::new(true)),
            Arc::clone(&slot),
        );
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            &out[..],
            &b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n"[..]
        );
        assert_eq!(slot.get().map(|u| u.total_tokens), Some(5));
    }

    #[tokio::test]
    async fn a_json_answer_is_unchanged_and_metered() {
        let text = &b"{\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}}"[..];
        let frames: Vec<Item> = text
            .chunks(7)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let slot = Arc::new(UsageSlot::default());
        let body = Metered::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            Meter::Json(UsageScan::new()),
            Arc::clone(&slot),
        );
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], text);
        assert_eq!(slot.get().map(|u| u.prompt_tokens), Some(4));
    }
}
