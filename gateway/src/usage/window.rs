//! A sliding hour of per-minute sums on tokio time: the memory behind the cost estimators.

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: u64 = 60;
const BUCKET: Duration = Duration::from_secs(60);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    minute: u64,
    tokens: u64,
    usd: f64,
}

/// Tokens and dollars of the last hour, in one-minute buckets.
///
/// A bucket is reused when its minute comes round again, so the window
/// costs 60 buckets whatever the traffic, and it is exact to a minute.
#[derive(Debug)]
pub(crate) struct Window {
    epoch: Instant,
    first: Option<Instant>,
    last: Instant,
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            first: None,
            last: epoch,
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / BUCKET.as_secs()
    }

    pub(crate) fn add(&mut self, now: Instant, tokens: u64, usd: f64) {
        let m = self.minute(now);
        let b = &mut self.buckets[(m % BUCKETS) as usize];
        if b.minute != m {
            *b = Bucket {
                minute: m,
                ..Bucket::default()
            };
        }
        b.tokens = b.tokens.saturating_add(tokens);
        b.usd += usd;
        self.first.get_or_insert(now);
        self.last = now;
    }

    /// Tokens and dollars over the last hour.
    pub(crate) fn sums(&self, now: Instant) -> (u64, f64) {
        let m = self.minute(now);
        self.buckets
            .iter()
            .filter(|b| b.minute <= m && b.minute + BUCKETS > m)
            .fold((0, 0.0), |(t, u), b| {
                (t.saturating_add(b.tokens), u + b.usd)
            })
    }

    /// How much of the last hour this window has seen: from its first
    /// sample, at least one bucket so a first request is not divided by zero.
    pub(crate) fn covered(&self, now: Instant) -> Duration {
        let since = self
            .first
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f));
        since.clamp(BUCKET, HOUR)
    }

    /// Nothing recorded for an hour: the entry may be forgotten.
    pub(crate) fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) > HOUR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_minutes_leave_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.add(t0, 100, 1.0);
        tokio::time::advance(Duration::from_secs(1800)).await;
        w.add(Instant::now(), 50, 0.5);
        assert_eq!(w.sums(Instant::now()), (150, 1.5));
        assert_eq!(w.covered(Instant::now()), Duration::from_secs(1800));
        tokio::time::advance(Duration::from_secs(1830)).await;
        assert_eq!(w.sums(Instant::now()), (50, 0.5));
        assert_eq!(w.covered(Instant::now()), HOUR);
        tokio::time::advance(HOUR).await;
        assert_eq!(w.sums(Instant::now()), (0, 0.0));
        assert!(w.idle(Instant::now()));
    }
}
