//! Hourly and daily caps on fallback spend, in fixed UTC windows, with reservations for requests in flight.
//!
//! Windows are fixed UTC hours and days (`12:00–13:00`, `00:00–24:00`),
//! the way providers bill and operators budget; a sliding window would
//! never say when room comes back. The time is tokio time anchored to the
//! wall clock once at start ([`UtcClock`]), so paused-time tests move the
//! windows too.
//!
//! Spend is known only when an answer ends, so a request admitted to the
//! fallback reserves the running average cost of a fallback request until
//! it is priced; admission counts spent plus reserved. Before the first
//! fallback answer the average is 0, which bounds the overshoot to the
//! requests admitted before the first one finishes.
//!
//! At the cap overflow stops. A request that then has no lease to go to
//! either waits up to `max_wait` for one ([`OnCap::Queue`], see
//! [`wait_until`]) or is answered 429 with `Retry-After` ([`OnCap::Reject`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use tokio::time::Instant;

const HOUR_SECS: u64 = 3600;
const DAY_SECS: u64 = 86_400;
/// Weight of the latest cost in the average a reservation uses.
const AVG_ALPHA: f64 = 0.2;

/// UTC seconds from tokio time: one wall-clock reading at construction.
#[derive(Clone, Copy, Debug)]
pub struct UtcClock {
    base: Instant,
    base_unix: Duration,
}

impl UtcClock {
    pub fn system() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self::starting_at(unix)
    }

    /// A clock that reads `unix` now (tests).
    pub fn starting_at(unix: Duration) -> Self {
        Self {
            base: Instant::now(),
            base_unix: unix,
        }
    }

    pub fn now_unix(&self) -> Duration {
        self.base_unix + Instant::now().saturating_duration_since(self.base)
    }
}

/// What happens to a request that needs the fallback when the cap is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCap {
    /// Wait up to this long for a lease to take it, then 429.
    Queue { max_wait: Duration },
    /// Answer 429 at once.
    Reject,
}

/// The `[spend]` settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpendConfig {
    pub fallback_hourly_usd: Option<f64>,
    pub fallback_daily_usd: Option<f64>,
    pub on_cap: OnCap,
    /// `Retry-After` when leases exist but are full; with no lease at all the
    /// answer names the end of the capped window instead.
    pub retry_after: Duration,
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self {
            fallback_hourly_usd: None,
            fallback_daily_usd: None,
            on_cap: OnCap::Reject,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The cap stopped an overflow; `reset_in` is when its window ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fallback spend cap reached; room again in {reset_in:?}")]
pub struct CapReached {
    pub reset_in: Duration,
}

#[derive(Debug, Default)]
struct Windows {
    hour: u64,
    hour_usd: f64,
    day: u64,
    day_usd: f64,
    reserved_usd: f64,
    avg_request_usd: f64,
}

/// Fallback spend so far in the current windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpendStatus {
    pub hour_usd: f64,
    pub day_usd: f64,
    pub hourly_cap_usd: Option<f64>,
    pub daily_cap_usd: Option<f64>,
}

/// The live caps; shared by every request.
#[derive(Debug)]
pub struct SpendCaps {
    config: SpendConfig,
    clock: UtcClock,
    state: Mutex<Windows>,
    /// Requests answered 429 at the cap since start.
    refusals: AtomicU64,
}

impl SpendCaps {
    pub fn new(config: SpendConfig, clock: UtcClock) -> Arc<Self> {
        Arc::new(Self {
            config,
            clock,
            state: Mutex::new(Windows::default()),
            refusals: AtomicU64::new(0),
        })
    }

    /// Counts one request answered 429 because of the cap.
    pub fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered 429 at the cap since start (reloads keep the caps).
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &SpendConfig {
        &self.config
    }

    /// Rolls the windows to now; returns the current UTC seconds.
    fn roll(&self, w: &mut Windows) -> u64 {
        let now = self.clock.now_unix().as_secs();
        if w.hour != now / HOUR_SECS {
            w.hour = now / HOUR_SECS;
            w.hour_usd = 0.0;
        }
        if w.day != now / DAY_SECS {
            w.day = now / DAY_SECS;
            w.day_usd = 0.0;
        }
        now
    }

    /// Checks the caps without reserving: `Err` says when room comes back.
    pub fn check(&self) -> Result<(), CapReached> {
        let mut w = self.state.lock();
        self.check_locked(&mut w, 0.0)
    }

    /// Room for `extra` more: spent plus reserved plus `extra` stays below
    /// each cap (a cap is reached when spend meets it).
    fn check_locked(&self, w: &mut Windows, extra: f64) -> Result<(), CapReached> {
        let now = self.roll(w);
        let pending = w.reserved_usd + extra;
        let over =
            |spent: f64, cap: Option<f64>| cap.is_some_and(|c| spent >= c || spent + pending > c);
        let reset = if over(w.day_usd, self.config.fallback_daily_usd) {
            DAY_SECS - now % DAY_SECS
        } else if over(w.hour_usd, self.config.fallback_hourly_usd) {
            HOUR_SECS - now % HOUR_SECS
        } else {
            return Ok(());
        };
        Err(CapReached {
            reset_in: Duration::from_secs(reset),
        })
    }

    /// Admits one fallback request, holding its expected cost until priced.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, CapReached> {
        let mut w = self.state.lock();
        let usd = w.avg_request_usd;
        self.check_locked(&mut w, usd)?;
        w.reserved_usd += usd;
        Ok(Reservation {
            caps: Arc::clone(self),
            usd,
        })
    }

    /// Adds the priced cost of a fallback answer.
    pub fn add(&self, usd: f64) {
        if !(usd.is_finite() && usd >= 0.0) {
            return;
        }
        let mut w = self.state.lock();
        self.roll(&mut w);
        w.hour_usd += usd;
        w.day_usd += usd;
        w.avg_request_usd = if w.avg_request_usd == 0.0 {
            usd
        } else {
            w.avg_request_usd * (1.0 - AVG_ALPHA) + usd * AVG_ALPHA
        };
        metrics::gauge!(SPEND, "window" => "hour").set(w.hour_usd);
        metrics::gauge!(SPEND, "window" => "day").set(w.day_usd);
    }

    pub fn status(&self) -> SpendStatus {
        let mut w = self.state.lock();
        self.roll(&mut w);
        SpendStatus {
            hour_usd: w.hour_usd,
            day_usd: w.day_usd,
            hourly_cap_usd: self.config.fallback_hourly_usd,
            daily_cap_usd: self.config.fallback_daily_usd,
        }
    }

    fn release(&self, usd: f64) {
        let mut w = self.state.lock();
        w.reserved_usd = (w.reserved_usd - usd).max(0.0);
    }
}

pub const SPEND: &str = "leasegate_fallback_spend_usd";

/// An admitted fallback request's expected cost; released on drop (the
/// actual cost arrives through [`SpendCaps::add`]).
#[derive(Debug)]
pub struct Reservation {
    caps: Arc<SpendCaps>,
    usd: f64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.caps.release(self.usd);
    }
}

/// How often a queued request looks again for a lease with room.
pub const QUEUE_POLL: Duration = Duration::from_millis(20);

/// Waits up to `max_wait` for `ready()` to hold, checking every [`QUEUE_POLL`].
///
/// Polling keeps the queue free of any wake-up plumbing into the fleet; a
/// waiting request costs one timer. The caller bounds how many wait through
/// its concurrency limit.
pub async fn wait_until(max_wait: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + max_wait;
    loop {
        if ready() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep_until((now + QUEUE_POLL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(hourly: Option<f64>, daily: Option<f64>, at: u64) -> Arc<SpendCaps> {
        SpendCaps::new(
            SpendConfig {
                fallback_hourly_usd: hourly,
                fallback_daily_usd: daily,
                ..SpendConfig::default()
            },
            UtcClock::starting_at(Duration::from_secs(at)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_cap_closes_until_the_next_utc_hour() {
        // 10:59:00 UTC on day 3.
        let c = caps(Some(1.0), None, 3 * DAY_SECS + 10 * HOUR_SECS + 59 * 60);
        c.add(0.6);
        assert!(c.check().is_ok());
        c.add(0.5);
        let err = c.check().unwrap_err();
        assert_eq!(err.reset_in, Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(c.check().is_ok());
        assert_eq!(c.status().hour_usd, 0.0);
        assert!((c.status().day_usd - 1.1).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn the_daily_cap_outlasts_hours_and_names_midnight() {
        let c = caps(Some(10.0), Some(2.0), 23 * HOUR_SECS);
        c.add(1.5);
        tokio::time::advance(Duration::from_secs(1800)).await;
        c.add(0.6);
        assert_eq!(c.check().unwrap_err().reset_in, Duration::from_secs(1800));
        tokio::time::advance(Duration::from_secs(1800)).await;
        assert!(c.check().is_ok(), "a new UTC day starts empty");
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_hold_room_for_requests_in_flight_and_release_on_drop() {
        let c = caps(Some(1.0), None, 0);
        c.add(0.4); // the average request now costs 0.4
        let a = c.reserve().unwrap();
        assert!(
            c.reserve().is_err(),
            "0.4 spent + 0.4 + 0.4 reserved reaches 1.0"
        );
        drop(a);
        assert!(c.reserve().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn no_caps_never_refuse() {
        let c = caps(None, None, 0);
        c.add(1e9);
        assert!(c.reserve().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_is_bounded_and_returns_as_soon_as_ready() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_secs(2), || false).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let start = Instant::now();
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(2), || {
                n += 1;
                n == 3
            })
            .await
        );
        assert_eq!(start.elapsed(), QUEUE_POLL * 2);
    }
}
