//! Reading an SSE response body as timed `data:` events.

use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;

/// What one stream looked like to the client.
#[derive(Debug, Default)]
pub struct StreamTrace {
    /// Arrival of the first `data:` chunk (not `[DONE]`).
    pub first: Option<Instant>,
    /// Gaps between successive chunks, microseconds.
    pub gaps: Vec<u32>,
    pub chunks: u64,
    pub done: bool,
}

/// Splits frames into lines and timestamps each `data:` line by the arrival of its frame.
#[derive(Debug, Default)]
pub struct Reader {
    line: Vec<u8>,
    last: Option<Instant>,
    pub trace: StreamTrace,
}

impl Reader {
    pub fn feed(&mut self, data: &[u8], at: Instant) {
        for &b in data {
            if b == b'\n' {
                self.line_end(at);
                self.line.clear();
            } else if self.line.len() < 64 {
                // Only the line's start matters; long JSON payloads are not kept.
                self.line.push(b);
            }
        }
    }

    fn line_end(&mut self, at: Instant) {
        let Some(payload) = self.line.strip_prefix(b"data:") else {
            return;
        };
        if payload.trim_ascii() == b"[DONE]" {
            self.trace.done = true;
            return;
        }
        self.trace.chunks += 1;
        if self.trace.first.is_none() {
            self.trace.first = Some(at);
        }
        if let Some(prev) = self.last {
            self.trace.gaps.push(crate::stats::micros(at - prev));
        }
        self.last = Some(at);
    }
}

/// Reads `body` to its end. Returns the trace, or the trace so far and an error.
pub async fn read(mut body: Incoming) -> Result<StreamTrace, StreamTrace> {
    let mut r = Reader::default();
    while let Some(frame) = body.frame().await {
        let at = Instant::now();
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    r.feed(d, at);
                }
            }
            Err(_) => return Err(r.trace),
        }
    }
    Ok(r.trace)
}

/// Reads until the first chunk arrived, then hands back the rest of the body unread.
pub async fn first_chunk(body: &mut Incoming) -> Option<Instant> {
    let mut r = Reader::default();
    while let Some(frame) = body.frame().await {
        let at = Instant::now();
        let f = frame.ok()?;
        if let Some(d) = f.data_ref() {
            r.feed(d, at);
            if r.trace.first.is_some() {
                return r.trace.first;
            }
        }
    }
    None
}
