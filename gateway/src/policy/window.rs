//! A per-minute sliding window over one-second slots: exact enough to never admit a burst past the limit.
//!
//! Why not GCRA or a token bucket: with a burst allowance of N both admit N
//! at once and then keep refilling, so a 60-second span can see almost 2N;
//! with no burst they space requests evenly and refuse the ordinary case of
//! a client sending a few requests at once. Why not the two-bucket
//! "sliding window counter": it assumes the previous minute was uniform and
//! can overshoot. Why not pingora-limits' `Rate`: its estimator is
//! approximate by design (a count-min sketch) and its windows are fixed.
//!
//! Here usage is kept in 61 one-second slots, and a slot is counted until it
//! is more than 60 s old *in full*. The counted span is therefore always at
//! least a whole minute (up to one second more), so in every 60-second span
//! at most `limit` units are admitted: the error only ever errs on the side
//! of refusing, by under a second.

use std::time::Duration;

/// Length of the window the limits are expressed in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Slot width; the window is `SLOTS - 1` of these.
const SLOT_MS: u64 = 1000;
const SLOTS: usize = 61;

/// Usage per slot over the last minute. `now_ms` is milliseconds on the
/// limiter's own monotonic clock.
#[derive(Clone, Debug)]
pub struct Window {
    counts: [u64; SLOTS],
    /// The newest slot number the counts are up to date for.
    head: u64,
    total: u64,
}

/// Why a take was refused, with the numbers for the answer's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Until the request would fit, if it ever can (`cost > limit` never fits).
    pub retry_after: Option<Duration>,
    pub remaining: u64,
    pub reset: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            counts: [0; SLOTS],
            head: 0,
            total: 0,
        }
    }
}

impl Window {
    /// Drops the slots that fell out of the window by `now_ms`.
    fn advance(&mut self, now_ms: u64) {
        let now = now_ms / SLOT_MS;
        if now <= self.head {
            return;
        }
        let stale = (now - self.head).min(SLOTS as u64);
        for s in (now + 1 - stale)..=now {
            let i = (s % SLOTS as u64) as usize;
            self.total -= self.counts[i];
            self.counts[i] = 0;
        }
        self.head = now;
    }

    /// Units used in the window ending now.
    pub fn used(&mut self, now_ms: u64) -> u64 {
        self.advance(now_ms);
        self.total
    }

    /// `limit - used`, floored at zero.
    pub fn remaining(&mut self, now_ms: u64, limit: u64) -> u64 {
        limit.saturating_sub(self.used(now_ms))
    }

    /// Checks whether `cost` more units fit under `limit` without taking them.
    pub fn check(&mut self, now_ms: u64, cost: u64, limit: u64) -> Result<(), Denied> {
        self.advance(now_ms);
        if self.total.saturating_add(cost) <= limit {
            return Ok(());
        }
        Err(Denied {
            retry_after: (cost <= limit)
                .then(|| self.time_to_free(now_ms, self.total + cost - limit)),
            remaining: limit.saturating_sub(self.total),
            reset: self.reset(now_ms),
        })
    }

    /// Takes `cost` units in the current slot; returns the slot for a later [`Window::adjust`].
    pub fn take(&mut self, now_ms: u64, cost: u64) -> u64 {
        self.advance(now_ms);
        let slot = self.head;
        self.counts[(slot % SLOTS as u64) as usize] += cost;
        self.total += cost;
        slot
    }

    /// Corrects an earlier take by `delta` units (the real cost minus the estimate).
    ///
    /// While the original slot is still counted the correction lands there, so
    /// it expires with the original; once that slot has left the window only
    /// an increase still matters, and it is charged now.
    pub fn adjust(&mut self, now_ms: u64, slot: u64, delta: i64) {
        self.advance(now_ms);
        let live = slot + (SLOTS as u64) > self.head && slot <= self.head;
        if live {
            let i = (slot % SLOTS as u64) as usize;
            if delta >= 0 {
                self.counts[i] += delta.unsigned_abs();
                self.total += delta.unsigned_abs();
            } else {
                let less = delta.unsigned_abs().min(self.counts[i]);
                self.counts[i] -= less;
                self.total -= less;
            }
        } else if delta > 0 {
            self.take(now_ms, delta.unsigned_abs());
        }
    }

    /// When the slot at `s` stops being counted.
    fn expiry_ms(s: u64) -> u64 {
        (s + SLOTS as u64) * SLOT_MS
    }

    /// Time until `need` units have expired, oldest slots first.
    fn time_to_free(&self, now_ms: u64, need: u64) -> Duration {
        let mut freed = 0;
        for s in self.live_slots() {
            freed += self.counts[(s % SLOTS as u64) as usize];
            if freed >= need {
                return Duration::from_millis(Self::expiry_ms(s).saturating_sub(now_ms));
            }
        }
        self.reset(now_ms)
    }

    /// Time until everything counted now has expired (OpenAI's "reset").
    pub fn reset(&self, now_ms: u64) -> Duration {
        self.live_slots()
            .rev()
            .find(|s| self.counts[(*s % SLOTS as u64) as usize] > 0)
            .map_or(Duration::ZERO, |s| {
                Duration::from_millis(Self::expiry_ms(s).saturating_sub(now_ms))
            })
    }

    /// Slot numbers still counted, oldest first.
    fn live_slots(&self) -> std::ops::RangeInclusive<u64> {
        self.head.saturating_sub(SLOTS as u64 - 1)..=self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    #[test]
    fn admits_up_to_the_limit_then_refuses() {
        let mut w = Window::default();
        for _ in 0..5 {
            assert!(w.check(0, 1, 5).is_ok());
            w.take(0, 1);
        }
        let d = w.check(500, 1, 5).unwrap_err();
        assert_eq!(d.remaining, 0);
        // Everything was taken in slot 0, counted until 61 s.
        assert_eq!(d.retry_after, Some(Duration::from_millis(61 * S - 500)));
        assert_eq!(d.reset, d.retry_after.unwrap());
    }

    #[test]
    fn no_sixty_second_span_ever_holds_more_than_the_limit() {
        // Greedy client: tries every 100 ms for five minutes; record admissions.
        let limit = 7;
        let mut w = Window::default();
        let mut admitted = Vec::new();
        for t in (0..300 * S).step_by(100) {
            if w.check(t, 1, limit).is_ok() {
                w.take(t, 1);
                admitted.push(t);
            }
        }
        for (i, start) in admitted.iter().enumerate() {
            let in_span = admitted[i..]
                .iter()
                .take_while(|t| **t < start + 60 * S)
                .count();
            assert!(
                in_span as u64 <= limit,
                "{in_span} admitted in 60s from {start}"
            );
        }
        // And it is not overly strict: close to `limit` per 61 s over five minutes.
        assert!(admitted.len() as u64 >= 4 * limit, "{}", admitted.len());
    }

    #[test]
    fn retry_after_is_when_enough_old_usage_expires() {
        let mut w = Window::default();
        w.take(0, 3);
        w.take(10 * S, 3);
        w.take(20 * S, 3);
        // 9 of 10 used; 5 more needs 4 freed: slot 0 (3) and slot 10 (3).
        let d = w.check(30 * S, 5, 10).unwrap_err();
        assert_eq!(d.retry_after, Some(Duration::from_secs(71 - 30)));
        assert_eq!(d.reset, Duration::from_secs(81 - 30));
        assert_eq!(d.remaining, 1);
        // At that time it fits.
        assert!(w.check(71 * S - 1, 5, 10).is_err());
        assert!(w.check(71 * S, 5, 10).is_ok());
    }

    #[test]
    fn a_cost_above_the_limit_never_fits() {
        let mut w = Window::default();
        let d = w.check(0, 11, 10).unwrap_err();
        assert_eq!(d.retry_after, None);
        assert_eq!(d.remaining, 10);
    }

    #[test]
    fn adjust_moves_usage_in_the_original_slot_or_charges_late_increases_now() {
        let mut w = Window::default();
        let slot = w.take(0, 100);
        w.adjust(5 * S, slot, -60);
        assert_eq!(w.used(5 * S), 40);
        w.adjust(5 * S, slot, 10);
        assert_eq!(w.used(5 * S), 50);
        // The correction expired with its slot.
        assert_eq!(w.used(61 * S), 0);
        // Past the window a decrease is moot, an increase is charged now.
        w.adjust(70 * S, slot, -30);
        assert_eq!(w.used(70 * S), 0);
        w.adjust(70 * S, slot, 30);
        assert_eq!(w.used(70 * S), 30);
    }

    #[test]
    fn a_long_idle_gap_clears_everything() {
        let mut w = Window::default();
        w.take(0, 5);
        w.take(30 * S, 5);
        assert_eq!(w.used(10_000 * S), 0);
        assert_eq!(w.reset(10_000 * S), Duration::ZERO);
    }
}
