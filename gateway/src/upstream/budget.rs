//! The retry budget: failover may add only a bounded fraction of extra load.

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::RetryConfig;

/// A token bucket filled by requests (`ratio` per request) and by time
/// (`min_per_sec`), drained by one token per retry.
///
/// When the whole fleet is failing, retries would multiply the load on it;
/// the budget keeps them near `ratio` of traffic so failover cannot become
/// a retry storm.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    cap: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RetryBudget {
    pub fn new(cfg: &RetryConfig) -> Self {
        // Room for about ten seconds of the floor, and never less than a few retries.
        let cap = (cfg.budget_min_per_sec * 10.0).max(10.0);
        Self {
            ratio: cfg.budget_ratio,
            min_per_sec: cfg.budget_min_per_sec,
            cap,
            state: Mutex::new(Bucket {
                tokens: cap,
                refilled: Instant::now(),
            }),
        }
    }

    /// Called once per incoming request.
    pub fn deposit(&self) {
        let mut b = self.state.lock();
        self.refill(&mut b);
        b.tokens = (b.tokens + self.ratio).min(self.cap);
    }

    /// Takes one retry token, if any is left.
    pub fn try_withdraw(&self) -> bool {
        let mut b = self.state.lock();
        self.refill(&mut b);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let secs = now.duration_since(b.refilled).as_secs_f64();
        b.refilled = now;
        b.tokens = (b.tokens + secs * self.min_per_sec).min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(ratio: f64, min_per_sec: f64) -> RetryBudget {
        RetryBudget::new(&RetryConfig {
            max_attempts: 3,
            budget_ratio: ratio,
            budget_min_per_sec: min_per_sec,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_near_the_ratio_under_sustained_failure() {
        let b = budget(0.2, 0.0);
        // Drain the initial allowance.
        while b.try_withdraw() {}
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw() {
                retries += 1;
            }
        }
        assert!(
            (190..=210).contains(&retries),
            "{retries} retries for 1000 requests"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_refills_with_time() {
        let b = budget(0.0, 2.0);
        while b.try_withdraw() {}
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }
}
