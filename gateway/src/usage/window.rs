//! A sliding window of 60 buckets on tokio time: the memory behind the cost estimators.

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: u64 = 60;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    index: u64,
    count: u64,
    amount: f64,
}

/// A count and an amount (tokens and dollars) over the last 60 buckets.
///
/// A bucket is reused when its slot comes round again, so the window costs
/// 60 buckets whatever the traffic, and it is exact to one bucket width.
#[derive(Debug)]
pub(crate) struct Window {
    epoch: Instant,
    width: Duration,
    first: Option<Instant>,
    last: Instant,
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    /// An hour in one-minute buckets.
    pub(crate) fn hour(epoch: Instant) -> Self {
        Self::with_width(epoch, Duration::from_secs(60))
    }

    fn with_width(epoch: Instant, width: Duration) -> Self {
        Self {
            epoch,
            width,
            first: None,
            last: epoch,
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    /// The whole window's length.
    pub(crate) fn span(&self) -> Duration {
        self.width.saturating_mul(BUCKETS as u32)
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(since / self.width.as_millis().max(1)).unwrap_or(u64::MAX)
    }

    pub(crate) fn add(&mut self, now: Instant, count: u64, amount: f64) {
        let i = self.index(now);
        let b = &mut self.buckets[(i % BUCKETS) as usize];
        if b.index != i {
            *b = Bucket {
                index: i,
                ..Bucket::default()
            };
        }
        b.count = b.count.saturating_add(count);
        b.amount += amount;
        self.first.get_or_insert(now);
        self.last = now;
    }

    /// Count and amount over the window.
    pub(crate) fn sums(&self, now: Instant) -> (u64, f64) {
        let i = self.index(now);
        self.buckets
            .iter()
            .filter(|b| b.index <= i && b.index + BUCKETS > i)
            .fold((0, 0.0), |(c, a), b| {
                (c.saturating_add(b.count), a + b.amount)
            })
    }

    /// How much of the window has been observed: from the first sample, at
    /// least one bucket so a first sample is not divided by zero.
    pub(crate) fn covered(&self, now: Instant) -> Duration {
        let since = self
            .first
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f));
        since.clamp(self.width, self.span())
    }

    /// Nothing recorded for a whole window: the entry may be forgotten.
    pub(crate) fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) > self.span()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn old_minutes_leave_the_window() {
        let t0 = Instant::now();
        let mut w = Window::hour(t0);
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
