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
const STALE_TAU_SECS: f64 = 30.0;
/// Weight of one outcome in the error ratio.
const ERR_ALPHA: f64 = 0.1;
/// Errors are forgotten with this time constant when nothing is reported.
const ERR_TAU_SECS: f64 = 30.0;

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

/// A cheap stand-in for `exp(-dt / tau)` on the per-request read path,
/// where a libm `exp` per endpoint per term would dominate the routing
/// decision: `exp(-x) = exp(-x/4)^4`, with `exp(x/4)` from its 4th-order
/// Taylor polynomial. Exact at 0, monotone, within 0.001 of `exp(-x)`, and
/// exactly 0 once the value is long forgotten.
fn decay_fast(age_ns: u64, inv_tau_ns: f64) -> f64 {
    // Integer nanoseconds times a constant reciprocal: divisions dominate
    // this function's latency, and this leaves only one.
    let x = age_ns as f64 * inv_tau_ns;
    if x.is_nan() || x >= 40.0 {
        return 0.0;
    }
    let y = x / 4.0;
    let f = 1.0 / (1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y / 24.0))));
    let f2 = f * f;
    f2 * f2
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

    fn age_ns(&self, now: Instant, at: &AtomicU64) -> u64 {
        self.ns(now).saturating_sub(at.load(Ordering::Relaxed))
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
                let keep = decay(
                    Duration::from_nanos(self.age_ns(now, &self.ttfb_at_ns)),
                    TTFB_TAU,
                )
                .min(1.0 - TTFB_MIN_ALPHA);
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
        Some((
            v,
            decay_fast(self.age_ns(now, &self.ttfb_at_ns), 1e-9 / STALE_TAU_SECS),
        ))
    }

    pub(crate) fn error_rate(&self, now: Instant) -> f64 {
        let err = load_f64(&self.err);
        if err == 0.0 {
            return 0.0;
        }
        err * decay_fast(self.age_ns(now, &self.err_at_ns), 1e-9 / ERR_TAU_SECS)
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

    #[test]
    fn fast_decay_stays_close_to_exp_and_monotone() {
        let mut last = 1.0;
        for i in 0..=4000 {
            let dt = Duration::from_millis(i * 10);
            let (fast, exact) = (
                decay_fast(u64::try_from(dt.as_nanos()).unwrap(), 1e-9),
                decay(dt, Duration::from_secs(1)),
            );
            assert!((fast - exact).abs() < 0.001, "at {dt:?}: {fast} vs {exact}");
            assert!(fast <= last);
            last = fast;
        }
        assert_eq!(decay_fast(0, 1e-9), 1.0);
        assert_eq!(decay_fast(1, f64::INFINITY), 0.0);
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
