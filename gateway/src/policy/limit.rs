//! Per-key rate limits (requests and tokens per minute) and daily $ budgets, exact under concurrency.
//!
//! Each key has one `parking_lot::Mutex` over its counters. Admission checks
//! every limit and then takes from all of them under that one lock, so
//! concurrent requests of a key are serialised for a few hundred nanoseconds
//! and can never jointly pass a limit; different keys never contend. The lock
//! is never held across an `.await`.
//!
//! Tokens are reserved at admission from an estimate (see [`estimate_tokens`])
//! and settled with the real usage when the response ends. Spend is recorded
//! by the caller after each request; a key whose spend for the current UTC day
//! reached its budget is refused until the day rolls over.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use foldhash::HashMap;
use parking_lot::Mutex;

use super::{
    clock::Clock,
    keys::{ClientKey, KeyLimits},
    window::{Denied, Window},
};

/// Completion tokens assumed when a request sets no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// Tokens to reserve for a request before its real usage is known.
///
/// The prompt is estimated at one token per four bytes of the whole request
/// body (JSON syntax included, so it errs high), plus the completion budget:
/// `max_tokens` (or `max_completion_tokens`) when given, else
/// [`DEFAULT_MAX_TOKENS`]; embeddings produce no completion, so callers pass
/// `Some(0)` for them. Erring high is deliberate: a reservation that is too
/// large is given back at settlement, one that is too small lets a burst of
/// long answers pass the limit before anyone knows.
pub fn estimate_tokens(body_len: usize, max_tokens: Option<u64>) -> u64 {
    (body_len as u64).div_ceil(4) + max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Budget,
}

/// One limit's state as OpenAI's `x-ratelimit-*` headers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window holds nothing of what is counted now.
    pub reset: Duration,
}

/// The rate headers for an answer; `None` where the key has no such limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub requests: Option<Rate>,
    pub tokens: Option<Rate>,
}

/// A request refused by a key's limits: everything the 429 answer needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LimitExceeded {
    pub kind: LimitKind,
    /// When to retry; for a request larger than the whole limit, the time
    /// until the window is empty (it will still be refused then).
    pub retry_after: Duration,
    /// Requests or tokens per minute; for a budget, US cents per day.
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
    /// What this request asked for (1 request, or the token estimate).
    pub requested: u64,
    /// Headers for both rate limits, as on a successful answer.
    pub rates: Rates,
}

impl fmt::Display for LimitExceeded {
    /// The client-facing message: the key's own numbers, nothing else.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wait = self.retry_after.as_secs_f64();
        match self.kind {
            LimitKind::Requests => write!(
                f,
                "Rate limit reached for requests per minute: limit {}, remaining {}. Please try again in {wait:.1}s.",
                self.limit, self.remaining
            ),
            LimitKind::Tokens if self.requested > self.limit => write!(
                f,
                "Request too large for tokens per minute: limit {}, requested {} (estimated). Lower max_tokens or the prompt size.",
                self.limit, self.requested
            ),
            LimitKind::Tokens => write!(
                f,
                "Rate limit reached for tokens per minute: limit {}, remaining {}, requested {} (estimated). Please try again in {wait:.1}s.",
                self.limit, self.remaining, self.requested
            ),
            LimitKind::Budget => write!(
                f,
                "You exceeded this key's daily budget of ${:.2}. It resets at 00:00 UTC, in {wait:.0}s.",
                self.limit as f64 / 100.0
            ),
        }
    }
}

/// The mutable counters of one key.
#[derive(Debug, Default)]
struct Counters {
    requests: Window,
    tokens: Window,
    /// The UTC day `spent_usd` belongs to.
    day: u64,
    spent_usd: f64,
}

impl Counters {
    fn roll(&mut self, day: u64) {
        if self.day != day {
            self.day = day;
            self.spent_usd = 0.0;
        }
    }

    fn rates(&mut self, now_ms: u64, limits: &KeyLimits) -> Rates {
        let rate = |w: &mut Window, limit: u64| Rate {
            limit,
            remaining: w.remaining(now_ms, limit),
            reset: w.reset(now_ms),
        };
        Rates {
            requests: limits
                .requests_per_minute
                .map(|l| rate(&mut self.requests, l.get())),
            tokens: limits
                .tokens_per_minute
                .map(|l| rate(&mut self.tokens, l.get())),
        }
    }
}

/// One key's counters, shared by all its requests and carried across reloads.
#[derive(Debug, Default)]
pub struct KeyState {
    counters: Mutex<Counters>,
    hits: Hits,
}

/// Refusals since start, by limit. Atomics, apart from the counters'
/// lock, so that the status view never waits on a busy key.
#[derive(Debug, Default)]
struct Hits {
    requests: AtomicU64,
    tokens: AtomicU64,
    budget: AtomicU64,
    spend_cap: AtomicU64,
}

impl Hits {
    fn count(&self, kind: LimitKind) {
        let counter = match kind {
            LimitKind::Requests => &self.requests,
            LimitKind::Tokens => &self.tokens,
            LimitKind::Budget => &self.budget,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> LimitHits {
        LimitHits {
            requests_per_minute: self.requests.load(Ordering::Relaxed),
            tokens_per_minute: self.tokens.load(Ordering::Relaxed),
            budget_per_day: self.budget.load(Ordering::Relaxed),
            spend_cap: self.spend_cap.load(Ordering::Relaxed),
        }
    }
}

/// How many of a key's requests were answered 429, by cause, since the
/// gateway started (kept across reloads with the key's counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LimitHits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub budget_per_day: u64,
    /// Refused because the fallback spend cap stopped the overflow.
    pub spend_cap: u64,
}

impl LimitHits {
    pub fn total(&self) -> u64 {
        self.requests_per_minute + self.tokens_per_minute + self.budget_per_day + self.spend_cap
    }
}

/// A key's usage now, for the admin API and status views.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub requests_last_minute: u64,
    pub tokens_last_minute: u64,
    pub spent_usd_today: f64,
}

/// The limiter state of every configured key, rebuilt (carrying state over) on reload.
#[derive(Debug)]
pub struct Limiter {
    clock: Clock,
    keys: HashMap<String, Arc<KeyState>>,
}

impl Limiter {
    /// A table for the keys named `names`. Keys that exist in `previous` keep
    /// their counters, so a reload neither resets a limit nor forgives spend;
    /// keys that were removed drop theirs.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, previous: Option<&Limiter>) -> Self {
        let clock = previous.map_or_else(Clock::system, |p| p.clock);
        Self::with_clock(clock, names, previous)
    }

    /// As [`Limiter::new`] with a chosen clock (tests).
    pub fn with_clock<'a>(
        clock: Clock,
        names: impl IntoIterator<Item = &'a str>,
        previous: Option<&Limiter>,
    ) -> Self {
        let keys = names
            .into_iter()
            .map(|name| {
                let state = previous
                    .and_then(|p| p.keys.get(name))
                    .map_or_else(Default::default, Arc::clone);
                (name.to_owned(), state)
            })
            .collect();
        Self { clock, keys }
    }

    /// Checks every limit of `key` and, if all pass, counts one request and
    /// reserves `tokens` in one step.
    pub fn admit(&self, key: &ClientKey, tokens: u64) -> Result<Ticket, Box<LimitExceeded>> {
        let Some(state) = self.keys.get(&key.name) else {
            // Only a key missing from the table it was configured with gets
            // here; refusing would turn a bug into an outage, so count nothing.
            tracing::warn!(key = %key.name, "client key has no limiter state; not limiting");
            return Ok(Ticket::unlimited(self.clock));
        };
        let limits = &key.limits;
        let now = self.clock.now_ms();
        let mut c = state.counters.lock();
        c.roll(self.clock.utc_day());
        let refuse = |kind, requested, limit, d: Denied, c: &mut Counters| {
            state.hits.count(kind);
            Box::new(LimitExceeded {
                kind,
                // A request larger than the limit never fits; point at the reset.
                retry_after: d.retry_after.unwrap_or(d.reset),
                limit,
                remaining: d.remaining,
                reset: d.reset,
                requested,
                rates: c.rates(now, limits),
            })
        };
        if let Some(budget) = limits.budget_usd_per_day
            && c.spent_usd >= budget
        {
            let until = self.clock.until_next_utc_day();
            let cents = (budget * 100.0).round() as u64;
            let d = Denied {
                retry_after: Some(until),
                remaining: 0,
                reset: until,
            };
            return Err(refuse(LimitKind::Budget, 0, cents, d, &mut c));
        }
        if let Some(rpm) = limits.requests_per_minute
            && let Err(d) = c.requests.check(now, 1, rpm.get())
        {
            return Err(refuse(LimitKind::Requests, 1, rpm.get(), d, &mut c));
        }
        if let Some(tpm) = limits.tokens_per_minute
            && let Err(d) = c.tokens.check(now, tokens, tpm.get())
        {
            return Err(refuse(LimitKind::Tokens, tokens, tpm.get(), d, &mut c));
        }
        c.requests.take(now, 1);
        let slot = c.tokens.take(now, tokens);
        let rates = c.rates(now, limits);
        drop(c);
        Ok(Ticket {
            state: Some(Arc::clone(state)),
            clock: self.clock,
            slot,
            reserved: tokens,
            rates,
        })
    }

    /// The refusals of the key called `name` since start.
    pub fn hits(&self, name: &str) -> Option<LimitHits> {
        self.keys.get(name).map(|s| s.hits.get())
    }

    /// Current usage of the key called `name`.
    pub fn usage(&self, name: &str) -> Option<Usage> {
        let state = self.keys.get(name)?;
        let now = self.clock.now_ms();
        let mut c = state.counters.lock();
        c.roll(self.clock.utc_day());
        Some(Usage {
            requests_last_minute: c.requests.used(now),
            tokens_last_minute: c.tokens.used(now),
            spent_usd_today: c.spent_usd,
        })
    }
}

/// An admitted request's reservation, settled when its response ends.
///
/// Dropping it without [`Ticket::settle`] keeps the estimate as the usage.
#[derive(Debug)]
pub struct Ticket {
    state: Option<Arc<KeyState>>,
    clock: Clock,
    slot: u64,
    reserved: u64,
    /// The rate headers as of admission, for the successful answer.
    pub rates: Rates,
}

impl Ticket {
    /// A ticket that limits and records nothing (no keys configured).
    pub fn unlimited(clock: Clock) -> Self {
        Self {
            state: None,
            clock,
            slot: 0,
            reserved: 0,
            rates: Rates::default(),
        }
    }

    /// Counts a 429 given to this request because the fallback spend cap
    /// stopped its overflow (the cap is global; this says whose it was).
    pub fn count_spend_cap(&self) {
        if let Some(state) = &self.state {
            state.hits.spend_cap.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tokens reserved at admission.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Replaces the token estimate with the real usage (when known; `None`
    /// keeps the estimate) and adds the request's cost to today's spend.
    pub fn settle(self, used_tokens: Option<u64>, cost_usd: f64) {
        let Some(state) = self.state else { return };
        let now = self.clock.now_ms();
        let mut c = state.counters.lock();
        if let Some(used) = used_tokens {
            let delta = i128::from(used) - i128::from(self.reserved);
            let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
            c.tokens.adjust(now, self.slot, delta);
        }
        if cost_usd > 0.0 && cost_usd.is_finite() {
            c.roll(self.clock.utc_day());
            c.spent_usd += cost_usd;
        }
    }
}

#[cfg(test)]
#[path = "limit_tests.rs"]
mod tests;
