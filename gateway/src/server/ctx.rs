//! The per-request context: what one request carries through the stack and logs when it ends.

use std::time::Duration;

use http::{HeaderValue, Method};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use crate::metrics;

/// Everything known about one request, logged once as its access line.
///
/// It holds the concurrency permit, so a request counts against the limit
/// until its response body (a stream, possibly) has ended.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: HeaderValue,
    pub method: Method,
    pub path: String,
    pub started: Instant,
    pub model: Option<String>,
    pub stream: bool,
    pub endpoint: Option<String>,
    pub attempts: u32,
    pub ttfb: Option<Duration>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestCtx {
    pub fn new(
        request_id: HeaderValue,
        method: Method,
        path: String,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        metrics::in_flight(1.0);
        Self {
            request_id,
            method,
            path,
            started: Instant::now(),
            model: None,
            stream: false,
            endpoint: None,
            attempts: 0,
            ttfb: None,
            _permit: permit,
        }
    }

    /// Writes the access line and the request metrics. `end` says how the
    /// body ended (`complete`, `stalled`, ...) or `error`/`local` for answers
    /// the gateway made itself.
    pub fn finish(self, status: u16, end: &str) {
        let elapsed = self.started.elapsed();
        let model = self.model.as_deref().unwrap_or("-");
        let endpoint = self.endpoint.as_deref().unwrap_or("-");
        if self.model.is_some() {
            metrics::record_request(model, endpoint, status, elapsed);
        }
        tracing::info!(
            target: "leasegate::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            model,
            stream = self.stream,
            endpoint,
            status,
            attempts = self.attempts,
            ttfb_ms = self.ttfb.map(|d| d.as_millis() as u64),
            duration_ms = elapsed.as_millis() as u64,
            end,
            "request"
        );
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        metrics::in_flight(-1.0);
    }
}
