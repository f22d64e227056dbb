//! The response body relayed from an upstream: unbuffered, bounded by the inter-chunk and total timeouts.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::{error::ApiError, server::body::BoxError};

/// How a relayed body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The upstream finished the body.
    Complete,
    /// The upstream connection failed mid-body.
    UpstreamError,
    /// No chunk arrived within the inter-chunk timeout.
    Stalled,
    /// The request ran past its total timeout.
    TotalTimeout,
    /// The client went away before the end.
    ClientGone,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::UpstreamError => "upstream_error",
            Self::Stalled => "stalled",
            Self::TotalTimeout => "total_timeout",
            Self::ClientGone => "client_gone",
        }
    }
}

/// Called exactly once when the body ends, however it ends.
pub type OnEnd = Box<dyn FnOnce(End) + Send>;

pin_project! {
    /// Passes upstream frames through as they arrive.
    ///
    /// Headers already reached the client, so a failure can no longer be
    /// retried: an SSE stream gets a terminating `event: error` and ends,
    /// any other body is cut off with an error so the client sees a broken
    /// response rather than a short one.
    pub struct Relay<B> {
        #[pin]
        inner: B,
        // Armed for `inter_chunk` after the last chunk, but moved only when it
        // fires: resetting a timer on every chunk costs a timer-wheel lock.
        #[pin]
        idle: Sleep,
        last_chunk: Instant,
        #[pin]
        deadline: Sleep,
        inter_chunk: Duration,
        first: Option<Bytes>,
        sse: bool,
        at_event_boundary: bool,
        done: bool,
        on_end: Option<OnEnd>,
    }

    impl<B> PinnedDrop for Relay<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(f) = this.project().on_end.take() {
                f(End::ClientGone);
            }
        }
    }
}

impl<B> Relay<B> {
    /// `first` is a chunk already read while waiting for the first token.
    pub fn new(
        inner: B,
        first: Option<Bytes>,
        sse: bool,
        inter_chunk: Duration,
        deadline: Instant,
        on_end: OnEnd,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle: sleep_until(now + inter_chunk),
            last_chunk: now,
            deadline: sleep_until(deadline),
            inter_chunk,
            first,
            sse,
            at_event_boundary: true,
            done: false,
            on_end: Some(on_end),
        }
    }
}

impl<B> HttpBody for Relay<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            *this.at_event_boundary = first.ends_with(b"\n\n");
            *this.last_chunk = Instant::now();
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let failure = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !data.is_empty()
                {
                    *this.at_event_boundary = data.ends_with(b"\n\n");
                }
                *this.last_chunk = Instant::now();
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => {
                *this.done = true;
                if let Some(f) = this.on_end.take() {
                    f(End::Complete);
                }
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(_))) => End::UpstreamError,
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    End::TotalTimeout
                } else {
                    loop {
                        ready!(this.idle.as_mut().poll(cx));
                        let due = *this.last_chunk + *this.inter_chunk;
                        if Instant::now() >= due {
                            break End::Stalled;
                        }
                        // A chunk came since it was armed: re-arm from that chunk.
                        this.idle.as_mut().reset(due);
                    }
                }
            }
        };
        *this.done = true;
        if let Some(f) = this.on_end.take() {
            f(failure);
        }
        if !*this.sse {
            return Poll::Ready(Some(Err(
                format!("upstream body {}", failure.as_str()).into()
            )));
        }
        let err = match failure {
            End::Stalled | End::TotalTimeout => ApiError::UpstreamTimeout,
            _ => ApiError::UpstreamFailed,
        };
        let event = err.to_sse_event();
        let event = if *this.at_event_boundary {
            event
        } else {
            // Close the half-sent event first so the error is parsed on its own.
            let mut v = Vec::with_capacity(event.len() + 2);
            v.extend_from_slice(b"\n\n");
            v.extend_from_slice(&event);
            Bytes::from(v)
        };
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // An SSE error may be appended, so only a non-SSE body keeps its exact length.
        if self.sse || self.first.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};

    type Item = Result<Frame<Bytes>, BoxError>;

    fn recorder() -> (Arc<Mutex<Vec<End>>>, OnEnd) {
        let ends = Arc::new(Mutex::new(Vec::new()));
        let e = ends.clone();
        (ends, Box::new(move |end| e.lock().unwrap().push(end)))
    }

    async fn collect<B>(relay: Relay<B>) -> Vec<u8>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut relay = std::pin::pin!(relay);
        let mut out = Vec::new();
        while let Some(frame) = relay.frame().await {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_an_sse_error_after_the_inter_chunk_timeout() {
        let chunks: Vec<Item> = vec![Ok(Frame::data(Bytes::from_static(b"data: 1\n\n")))];
        let stalled = futures_util::stream::iter(chunks).chain(futures_util::stream::pending());
        let (ends, on_end) = recorder();
        let start = Instant::now();
        let relay = Relay::new(
            StreamBody::new(stalled),
            None,
            true,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(600),
            on_end,
        );
        let out = String::from_utf8(collect(relay).await).unwrap();
        assert!(
            out.starts_with("data: 1\n\nevent: error\ndata: {\"error\""),
            "{out}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(*ends.lock().unwrap(), [End::Stalled]);
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_closer_than_the_inter_chunk_timeout_never_stall_however_long_the_stream() {
        // Six chunks 3 s apart: 18 s in all, three times the 5 s timeout.
        let slow = futures_util::stream::unfold(0u8, |n| async move {
            if n == 6 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'a' + n]))),
                n + 1,
            ))
        });
        let (ends, on_end) = recorder();
        let start = Instant::now();
        let relay = Relay::new(
            StreamBody::new(slow),
            None,
            false,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(600),
            on_end,
        );
        assert_eq!(collect(relay).await, b"abcdef");
        assert_eq!(start.elapsed(), Duration::from_secs(18));
        assert_eq!(*ends.lock().unwrap(), [End::Complete]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_error_mid_event_closes_the_event_before_the_error() {
        let chunks: Vec<Item> = vec![
            Ok(Frame::data(Bytes::from_static(b"data: {\"par"))),
            Err("reset".into()),
        ];
        let (ends, on_end) = recorder();
        let relay = Relay::new(
            StreamBody::new(futures_util::stream::iter(chunks)),
            None,
            true,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(600),
            on_end,
        );
        let out = String::from_utf8(collect(relay).await).unwrap();
        assert!(out.contains("\n\nevent: error\n"), "{out}");
        assert_eq!(*ends.lock().unwrap(), [End::UpstreamError]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_passes_through_and_reports_once() {
        let chunks: Vec<Item> = vec![
            Ok(Frame::data(Bytes::from_static(b"b"))),
            Ok(Frame::data(Bytes::from_static(b"c"))),
        ];
        let (ends, on_end) = recorder();
        let relay = Relay::new(
            StreamBody::new(futures_util::stream::iter(chunks)),
            Some(Bytes::from_static(b"a")),
            false,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(600),
            on_end,
        );
        assert_eq!(collect(relay).await, b"abc");
        assert_eq!(*ends.lock().unwrap(), [End::Complete]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_reports_client_gone() {
        let (ends, on_end) = recorder();
        let relay = Relay::new(
            StreamBody::new(futures_util::stream::pending::<Item>()),
            None,
            true,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(600),
            on_end,
        );
        drop(relay);
        assert_eq!(*ends.lock().unwrap(), [End::ClientGone]);
    }
}
