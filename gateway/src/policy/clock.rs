//! The limiter's clock: tokio's monotonic time, anchored once to UTC so daily budgets know the date.
//!
//! Deriving the date from the same monotonic clock (rather than reading the
//! wall clock per request) keeps windows and days consistent with each other,
//! unaffected by wall-clock steps, and lets tests move both with tokio's
//! paused time. The anchor is taken when the first limiter table is built and
//! carried across reloads; over months of uptime it may drift from NTP time
//! by the clock's skew, which only shifts the budget's midnight slightly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    /// Milliseconds since the Unix epoch (UTC) at `origin`.
    origin_unix_ms: u64,
}

impl Clock {
    /// Anchored to the system clock now.
    pub fn system() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::anchored(unix_ms)
    }

    /// Anchored so that "now" is `unix_ms` (tests pick the time of day).
    pub fn anchored(unix_ms: u64) -> Self {
        Self {
            origin: Instant::now(),
            origin_unix_ms: unix_ms,
        }
    }

    /// Milliseconds since this clock's origin; the windows' time axis.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn unix_ms(&self) -> u64 {
        self.origin_unix_ms.saturating_add(self.now_ms())
    }

    /// Days since the Unix epoch, in UTC.
    pub fn utc_day(&self) -> u64 {
        self.unix_ms() / DAY_MS
    }

    /// Time left until the next UTC midnight.
    pub fn until_next_utc_day(&self) -> Duration {
        Duration::from_millis(DAY_MS - self.unix_ms() % DAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_date_follows_tokio_time_across_midnight() {
        // 2026-11-21T23:59:00Z
        let clock = Clock::anchored(1_795_305_540_000);
        let day = clock.utc_day();
        assert_eq!(clock.until_next_utc_day(), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(clock.utc_day(), day);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.utc_day(), day + 1);
        assert_eq!(clock.until_next_utc_day(), Duration::from_secs(86_400));
        assert_eq!(clock.now_ms(), 60_000);
    }
}
