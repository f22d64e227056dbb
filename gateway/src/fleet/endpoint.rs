//! One endpoint as the gateway sees it: its spec plus live, lock-free request state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use leasegate_fleet::Endpoint;
use tokio::time::Instant;

use crate::health::{Admission, Breaker, BreakerState, HealthConfig};

/// What happened to one attempt against an endpoint, as reported by the forwarder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered; `ttfb` is the time to the first token for
    /// streams and to the response headers otherwise.
    Success {
        ttfb: Duration,
    },
    Failure {
        reason: FailureReason,
    },
}

/// Why an attempt failed. Kept small and `Copy` so reporting never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    Connect,
    /// No response headers (or first token) within the deadline.
    Timeout,
    /// A 5xx or 429 status before the first byte.
    Status(u16),
    /// The stream died or stalled after it started.
    Stream,
}

impl FailureReason {
    /// A 429 means "busy", not "broken": load and queue terms steer traffic
    /// away from it, so it should not eject an otherwise healthy replica.
    pub fn counts_for_ejection(self) -> bool {
        !matches!(self, FailureReason::Status(429))
    }
}

/// Live state that survives snapshot swaps for as long as the endpoint id persists.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) in_flight: AtomicU32,
    pub(crate) breaker: Breaker,
    /// Set by the active prober; true until a probe says otherwise because
    /// the controller only publishes endpoints it has probed.
    pub(crate) probe_ok: AtomicBool,
    /// Queue depth scraped from the replica's `/metrics`, or `u32::MAX` when unknown.
    pub(crate) queue_depth: AtomicU32,
    pub(crate) stats: crate::fleet::stats::Stats,
}

impl Live {
    pub(crate) fn new(cfg: &HealthConfig) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            breaker: Breaker::new(cfg),
            probe_ok: AtomicBool::new(true),
            queue_depth: AtomicU32::new(u32::MAX),
            stats: crate::fleet::stats::Stats::new(),
        }
    }
}

/// An endpoint of the current fleet, shared by every request routed to it.
#[derive(Debug)]
pub struct EndpointHandle {
    pub spec: Endpoint,
    pub(crate) live: Arc<Live>,
    /// Index into the owning `FleetState`'s region table; lets scoring
    /// compute one distance per region instead of one per endpoint.
    pub(crate) region_idx: usize,
}

impl EndpointHandle {
    pub(crate) fn new(spec: Endpoint, live: Arc<Live>, region_idx: usize) -> Self {
        Self {
            spec,
            live,
            region_idx,
        }
    }

    /// Starts a request. Always admits: use [`EndpointHandle::try_begin`] to
    /// respect ejection. When the endpoint is half-open and the trial slot is
    /// free, this request becomes the trial.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let trial = match self.live.breaker.admit(Instant::now()) {
            Some(Admission::Trial(id)) => id,
            Some(Admission::Normal) | None => 0,
        };
        self.guard(trial)
    }

    /// Starts a request unless the endpoint is ejected or is half-open with
    /// its single trial already taken. The forwarder calls this right before
    /// connecting, so two racing requests cannot both become the trial.
    pub fn try_begin(self: &Arc<Self>) -> Option<InFlight> {
        match self.live.breaker.admit(Instant::now())? {
            Admission::Trial(id) => Some(self.guard(id)),
            Admission::Normal => Some(self.guard(0)),
        }
    }

    fn guard(self: &Arc<Self>, trial: u64) -> InFlight {
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            handle: Arc::clone(self),
            trial,
        }
    }

    /// Records the outcome of an attempt: feeds the latency and error
    /// averages and drives passive outlier detection.
    pub fn report(&self, outcome: Outcome) {
        let now = Instant::now();
        self.live.stats.record(now, outcome);
        self.live.breaker.record(now, outcome);
    }

    /// Requests in flight against capacity. A `max_concurrency` of 0 means
    /// "unknown" and is treated as 1 so the ratio stays finite.
    pub fn load(&self) -> f64 {
        let cap = self.spec.max_concurrency.max(1);
        f64::from(self.in_flight()) / f64::from(cap)
    }

    pub fn in_flight(&self) -> u32 {
        self.live.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a new request may be sent now: probes pass and the endpoint
    /// is not ejected (or is half-open with its trial slot free).
    pub fn is_available(&self) -> bool {
        self.is_available_at(Instant::now())
    }

    /// [`EndpointHandle::is_available`] with a caller-supplied clock, so a
    /// selector reads the time once per decision.
    pub fn is_available_at(&self, now: Instant) -> bool {
        self.live.probe_ok.load(Ordering::Relaxed) && self.live.breaker.is_available_at(now)
    }

    /// The passive outlier-detection state, for the admin API and metrics.
    pub fn breaker_state(&self) -> BreakerState {
        self.live.breaker.state_at(Instant::now())
    }

    /// Whether the last active probe passed.
    pub fn probe_ok(&self) -> bool {
        self.live.probe_ok.load(Ordering::Relaxed)
    }

    pub(crate) fn set_probe_ok(&self, ok: bool) {
        self.live.probe_ok.store(ok, Ordering::Relaxed);
    }

    /// The replica's own queue (requests waiting), as last scraped.
    pub fn queue_depth(&self) -> Option<u32> {
        match self.live.queue_depth.load(Ordering::Relaxed) {
            u32::MAX => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_queue_depth(&self, depth: Option<u32>) {
        let v = depth.map_or(u32::MAX, |d| d.min(u32::MAX - 1));
        self.live.queue_depth.store(v, Ordering::Relaxed);
    }

    /// Decayed EWMA of time to first byte in milliseconds, with its
    /// confidence in `[0, 1]` (1 = fresh sample, 0 = none or long ago).
    pub fn ttfb_ewma_ms(&self, now: Instant) -> Option<(f64, f64)> {
        self.live.stats.ttfb_ms(now)
    }

    /// Recent error ratio in `[0, 1]`, decaying toward 0 with time.
    pub fn error_rate(&self, now: Instant) -> f64 {
        self.live.stats.error_rate(now)
    }
}

/// Counts one request against its endpoint until dropped.
///
/// Dropping it without a report (e.g. the client went away) releases a
/// half-open trial slot so another request may try.
#[derive(Debug)]
pub struct InFlight {
    handle: Arc<EndpointHandle>,
    /// Non-zero when this request is the half-open trial.
    trial: u64,
}

impl InFlight {
    pub fn endpoint(&self) -> &Arc<EndpointHandle> {
        &self.handle
    }

    pub fn is_trial(&self) -> bool {
        self.trial != 0
    }

    /// Same as [`EndpointHandle::report`], for callers holding only the guard.
    pub fn report(&self, outcome: Outcome) {
        self.handle.report(outcome);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.handle.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.trial != 0 {
            self.handle.live.breaker.release_trial(self.trial);
        }
    }
}
