//! A response body read straight from its connection, which goes back to the pool at the end.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{
    Error,
    codec::{Decoded, Framing},
    conn::Conn,
    pool::Pool,
};

/// The body of an upstream response.
///
/// Dropped before its end, it closes the connection: the rest of the body
/// would have to be read before the connection could carry another request.
#[derive(Debug)]
pub struct ResponseBody {
    /// `None` once the body ended or failed.
    conn: Option<Box<Conn>>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl ResponseBody {
    pub(super) fn new(
        conn: Box<Conn>,
        framing: Framing,
        keep_alive: bool,
        pool: Arc<Pool>,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            framing,
            keep_alive,
            pool,
        };
        if body.framing.is_done() {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection is reusable if nothing follows
    /// it in the buffer and neither side asked to close.
    fn finish(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            conn.buf = bytes::BytesMut::new();
            self.pool.put(conn);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.framing == Framing::Close => {
                    // The replica closing is how this body ends.
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
