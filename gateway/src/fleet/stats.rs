//! Time-decayed latency and error averages per endpoint, written on report and read lock-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::fleet::Outcome;

/// Weight a single new latency sample gets at least, so a burst of samples
/// arriving within a millisecond still moves the average.
const TTFB_MIN_ALPHA: f64 = 0.2;
/// Time constant for forgetting old latency when samples are sparse.
const TTFB_TAU: Duration = Duration::from_secs(10);
/// How fast trust in the last measurement fades once traffic stops: a
/// replica slow a minute ago should get a chance to prove it recovered.
const STALE_TAU: Duration = Duration::from_secs(30);
/// Weight of one outcome in the error ratio.
const ERR_ALPHA: f64 = 0.1;
/// Errors are forgotten with this time constant when nothing is reported.
const ERR_TAU: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Stats {
    epoch: Instant,
    /// Serialises read-modify-write on report; readers never take it.
    write: Mutex<()>,
    /// f64 bits; NaN while there is no sample.
    ttfb_ms: AtomicU64,
    ttfb_at_ns: AtomicU64,
    err: AtomicU64,
    err_at_ns: AtomicU64,
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store_f64(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

/// `exp(-dt / tau)`: the share of an old value that survives `dt`.
fn decay(dt: Duration, tau: Duration) -> f64 {
    (-dt.as_secs_f64() / tau.as_secs_f64()).exp()
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            write: Mutex::new(()),
            ttfb_ms: AtomicU64::new(f64::NAN.to_bits()),
            ttfb_at_ns: AtomicU64::new(0),
            err: AtomicU64::new(0f64.to_bits()),
            err_at_ns: AtomicU64::new(0),
        }
    }

    fn ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn age(&self, now: Instant, at: &AtomicU64) -> Duration {
        Duration::from_nanos(self.ns(now).saturating_sub(at.load(Ordering::Relaxed)))
    }

    pub(crate) fn record(&self, now: Instant, outcome: Outcome) {
        let _w = self.write.lock();
        let at = self.ns(now);
        let (sample_err, ttfb) = match outcome {
            Outcome::Success { ttfb } => (0.0, Some(ttfb.as_secs_f64() * 1000.0)),
            Outcome::Failure { .. } => (1.0, None),
        };
        let err = self.error_rate(now);
        store_f64(&self.err, err * (1.0 - ERR_ALPHA) + sample_err * ERR_ALPHA);
        self.err_at_ns.store(at, Ordering::Relaxed);
        if let Some(ms) = ttfb {
            let old = load_f64(&self.ttfb_ms);
            let new = if old.is_nan() {
                ms
            } else {
                let keep =
                    decay(self.age(now, &self.ttfb_at_ns), TTFB_TAU).min(1.0 - TTFB_MIN_ALPHA);
                old * keep + ms * (1.0 - keep)
            };
            store_f64(&self.ttfb_ms, new);
            self.ttfb_at_ns.store(at, Ordering::Relaxed);
        }
    }

    /// The EWMA in milliseconds and a confidence that fades with its age.
    pub(crate) fn ttfb_ms(&self, now: Instant) -> Option<(f64, f64)> {
        let v = load_f64(&self.ttfb_ms);
        if v.is_nan() {
            return None;
        }
        Some((v, decay(self.age(now, &self.ttfb_at_ns), STALE_TAU)))
    }

    pub(crate) fn error_rate(&self, now: Instant) -> f64 {
        load_f64(&self.err) * decay(self.age(now, &self.err_at_ns), ERR_TAU)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FailureReason;

    fn ok(ms: u64) -> Outcome {
        Outcome::Success {
            ttfb: Duration::from_millis(ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ewma_tracks_a_slowdown_and_its_confidence_fades() {
        let s = Stats::new();
        assert!(s.ttfb_ms(Instant::now()).is_none());
        s.record(Instant::now(), ok(100));
        let (v, c) = s.ttfb_ms(Instant::now()).unwrap();
        assert!((v - 100.0).abs() < 1e-9 && (c - 1.0).abs() < 1e-9);
        for _ in 0..30 {
            s.record(Instant::now(), ok(1000));
        }
        let (v, _) = s.ttfb_ms(Instant::now()).unwrap();
        assert!(v > 990.0, "a burst of slow samples must dominate: {v}");
        tokio::time::advance(Duration::from_secs(60)).await;
        let (_, c) = s.ttfb_ms(Instant::now()).unwrap();
        assert!(c < 0.2, "a minute-old measurement is barely trusted: {c}");
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_follows_half_failures_and_decays() {
        let s = Stats::new();
        for i in 0..100 {
            let o = if i % 2 == 0 {
                ok(10)
            } else {
                Outcome::Failure {
                    reason: FailureReason::Connect,
                }
            };
            s.record(Instant::now(), o);
        }
        let e = s.error_rate(Instant::now());
        assert!((0.4..0.6).contains(&e), "{e}");
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(s.error_rate(Instant::now()) < 0.02);
    }
}
