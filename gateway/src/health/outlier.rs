//! Passive outlier detection: eject after consecutive failures, back off exponentially, trial once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::fleet::Outcome;
use crate::health::HealthConfig;

/// Where an endpoint stands in passive outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    /// Takes traffic.
    Closed,
    /// Takes nothing until the ejection time has passed.
    Ejected {
        #[serde(with = "humantime_serde")]
        remaining: Duration,
    },
    /// Admits exactly one trial request; its outcome closes or re-ejects.
    HalfOpen { trial_in_flight: bool },
}

/// How a request was let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The half-open trial, with the id that releases its slot.
    Trial(u64),
}

#[derive(Debug, Default)]
struct Counts {
    consecutive_failures: u32,
    /// Ejections since the endpoint last closed; the exponent of the backoff.
    ejections: u32,
}

/// The per-endpoint ejection state machine.
///
/// Reads (`admit`, `is_available_at`) are lock-free atomics because they run
/// for every candidate of every request; transitions take a small mutex
/// because they read and write several fields together.
#[derive(Debug)]
pub struct Breaker {
    epoch: Instant,
    eject_after: u32,
    base: Duration,
    max: Duration,
    /// 0 when closed, else nanos after `epoch` at which the ejection ends.
    open_until_ns: AtomicU64,
    /// Id of the half-open trial in flight, 0 when none.
    trial: AtomicU64,
    next_trial: AtomicU64,
    counts: Mutex<Counts>,
}

impl Breaker {
    pub fn new(cfg: &HealthConfig) -> Self {
        Self {
            epoch: Instant::now(),
            eject_after: cfg.consecutive_failures.max(1),
            base: cfg.base_ejection_time,
            max: cfg.max_ejection_time.max(cfg.base_ejection_time),
            open_until_ns: AtomicU64::new(0),
            trial: AtomicU64::new(0),
            next_trial: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn state_at(&self, now: Instant) -> BreakerState {
        let until = self.open_until_ns.load(Ordering::Acquire);
        if until == 0 {
            return BreakerState::Closed;
        }
        let now_ns = self.ns(now);
        if now_ns < until {
            BreakerState::Ejected {
                remaining: Duration::from_nanos(until - now_ns),
            }
        } else {
            BreakerState::HalfOpen {
                trial_in_flight: self.trial.load(Ordering::Acquire) != 0,
            }
        }
    }

    pub fn is_available_at(&self, now: Instant) -> bool {
        match self.state_at(now) {
            BreakerState::Closed => true,
            BreakerState::Ejected { .. } => false,
            BreakerState::HalfOpen { trial_in_flight } => !trial_in_flight,
        }
    }

    /// Lets a request in, or refuses it while ejected or while the
    /// half-open trial slot is taken. The slot is claimed with a CAS, so of
    /// many racing requests exactly one becomes the trial.
    pub fn admit(&self, now: Instant) -> Option<Admission> {
        match self.state_at(now) {
            BreakerState::Closed => Some(Admission::Normal),
            BreakerState::Ejected { .. } => None,
            BreakerState::HalfOpen { .. } => {
                let id = self.next_trial.fetch_add(1, Ordering::Relaxed) + 1;
                self.trial
                    .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
                    .ok()
                    .map(|_| Admission::Trial(id))
            }
        }
    }

    /// Frees the trial slot if `id` still holds it (the trial ended without
    /// a verdict, e.g. the client went away).
    pub fn release_trial(&self, id: u64) {
        let _ = self
            .trial
            .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    fn eject(&self, now: Instant, counts: &mut Counts) {
        let factor = 1u32.checked_shl(counts.ejections).unwrap_or(u32::MAX);
        let time = self.base.saturating_mul(factor).min(self.max);
        let until = self
            .ns(now)
            .saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        counts.ejections = counts.ejections.saturating_add(1);
        counts.consecutive_failures = 0;
        self.open_until_ns.store(until.max(1), Ordering::Release);
        self.trial.store(0, Ordering::Release);
        tracing::debug!(?time, ejections = counts.ejections, "endpoint ejected");
    }

    pub fn record(&self, now: Instant, outcome: Outcome) {
        let mut counts = self.counts.lock();
        let counts = &mut *counts;
        let failure = match outcome {
            Outcome::Success { .. } => None,
            Outcome::Failure { reason } => Some(reason.counts_for_ejection()),
        };
        match self.state_at(now) {
            BreakerState::Closed => match failure {
                None => counts.consecutive_failures = 0,
                Some(false) => {}
                Some(true) => {
                    counts.consecutive_failures += 1;
                    if counts.consecutive_failures >= self.eject_after {
                        self.eject(now, counts);
                    }
                }
            },
            // Outcomes of requests sent before the ejection say nothing new.
            BreakerState::Ejected { .. } => {}
            BreakerState::HalfOpen { .. } => match failure {
                None => {
                    // Closing forgets the backoff: a replica that proved itself
                    // starts again from the base ejection time.
                    *counts = Counts::default();
                    self.open_until_ns.store(0, Ordering::Release);
                    self.trial.store(0, Ordering::Release);
                }
                // Busy is not broken: let another trial find out.
                Some(false) => self.trial.store(0, Ordering::Release),
                Some(true) => self.eject(now, counts),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FailureReason;

    fn cfg() -> HealthConfig {
        HealthConfig {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
            ..HealthConfig::default()
        }
    }

    const FAIL: Outcome = Outcome::Failure {
        reason: FailureReason::Status(503),
    };
    const OK: Outcome = Outcome::Success {
        ttfb: Duration::from_millis(5),
    };

    fn fail_n(b: &Breaker, n: usize) {
        for _ in 0..n {
            b.record(Instant::now(), FAIL);
        }
    }

    async fn sleep(s: u64) {
        tokio::time::sleep(Duration::from_secs(s)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_only() {
        let b = Breaker::new(&cfg());
        fail_n(&b, 2);
        b.record(Instant::now(), OK);
        fail_n(&b, 2);
        assert_eq!(b.state_at(Instant::now()), BreakerState::Closed);
        fail_n(&b, 1);
        assert!(matches!(
            b.state_at(Instant::now()),
            BreakerState::Ejected { .. }
        ));
        assert!(!b.is_available_at(Instant::now()));
        assert_eq!(b.admit(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_requests_never_ejects() {
        let b = Breaker::new(&cfg());
        for _ in 0..10 {
            b.record(
                Instant::now(),
                Outcome::Failure {
                    reason: FailureReason::Status(429),
                },
            );
        }
        assert_eq!(b.state_at(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_trial_then_closes_on_success() {
        let b = Breaker::new(&cfg());
        fail_n(&b, 3);
        sleep(9).await;
        assert_eq!(b.admit(Instant::now()), None, "still ejected at 9s");
        sleep(1).await;
        assert_eq!(
            b.state_at(Instant::now()),
            BreakerState::HalfOpen {
                trial_in_flight: false
            }
        );
        let first = b.admit(Instant::now());
        assert!(matches!(first, Some(Admission::Trial(_))));
        assert_eq!(b.admit(Instant::now()), None, "second request must wait");
        assert!(!b.is_available_at(Instant::now()));
        b.record(Instant::now(), OK);
        assert_eq!(b.state_at(Instant::now()), BreakerState::Closed);
        assert_eq!(b.admit(Instant::now()), Some(Admission::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_trial_doubles_the_ejection_up_to_the_cap() {
        let b = Breaker::new(&cfg());
        fail_n(&b, 3);
        let mut expected = [10u64, 20, 35, 35].into_iter();
        let mut wait = expected.next().unwrap();
        loop {
            sleep(wait - 1).await;
            assert!(!b.is_available_at(Instant::now()), "ejected for {wait}s");
            sleep(1).await;
            assert!(matches!(b.admit(Instant::now()), Some(Admission::Trial(_))));
            b.record(Instant::now(), FAIL);
            match expected.next() {
                Some(next) => wait = next,
                None => break,
            }
        }
        // After a successful trial the backoff starts from the base again.
        sleep(35).await;
        assert!(b.admit(Instant::now()).is_some());
        b.record(Instant::now(), OK);
        fail_n(&b, 3);
        sleep(10).await;
        assert!(b.is_available_at(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_trial_frees_the_slot_but_a_stale_release_does_not() {
        let b = Breaker::new(&cfg());
        fail_n(&b, 3);
        sleep(10).await;
        let Some(Admission::Trial(first)) = b.admit(Instant::now()) else {
            panic!("expected a trial");
        };
        b.release_trial(first);
        let Some(Admission::Trial(second)) = b.admit(Instant::now()) else {
            panic!("slot should be free again");
        };
        b.release_trial(first);
        assert_eq!(
            b.admit(Instant::now()),
            None,
            "stale id must not free the slot"
        );
        b.release_trial(second);
        assert!(b.is_available_at(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_during_ejection_are_ignored() {
        let b = Breaker::new(&cfg());
        fail_n(&b, 3);
        b.record(Instant::now(), OK);
        fail_n(&b, 5);
        sleep(10).await;
        assert!(b.is_available_at(Instant::now()), "base time, not doubled");
    }
}
