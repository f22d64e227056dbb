//! The overflow decision: whether a request goes to the leases or spills to the fallback tier, and why.
//!
//! A pure function of the pool's mode and SLO, a snapshot of the load on
//! each candidate, the policy and the spend caps, so every branch is tested
//! without a network. The caller turns the [`Decision`] into an attempt
//! order with [`arrange`], and records its [`Reason`] in metrics and the
//! access log.
//!
//! The predicted time to first token on a lease is
//! `queue_depth × time_per_output_token + ttft_ewma`: the requests waiting
//! ahead each hold a batch slot for roughly a decode step per token in the
//! pool's estimate, and the EWMA carries the rest (prefill, network). An
//! unknown EWMA counts as zero: a fresh lease gets the benefit of the doubt
//! until it has served.

use std::time::Duration;

/// How a pool shares traffic between its leases and the fallback tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Leases carry the traffic; the fallback takes what they cannot (bursts).
    #[default]
    LeasesFirst,
    /// The fallback carries the baseline up to its capacity; bursts go to leases.
    FallbackFirst,
    /// The cheapest tier that meets the SLO, at marginal cost: a lease's hour
    /// is paid anyway, so a lease with room is free; a fallback costs its
    /// per-token price, and is paid only when it would meet the SLO itself.
    CheapestWithinSlo,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "leases-first" => Some(Mode::LeasesFirst),
            "fallback-first" => Some(Mode::FallbackFirst),
            "cheapest-within-slo" => Some(Mode::CheapestWithinSlo),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::LeasesFirst => "leases-first",
            Mode::FallbackFirst => "fallback-first",
            Mode::CheapestWithinSlo => "cheapest-within-slo",
        }
    }
}

/// A pool's overflow settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolSlo {
    pub mode: Mode,
    pub slo_ttft: Duration,
    pub time_per_output_token: Duration,
}

impl Default for PoolSlo {
    fn default() -> Self {
        Self {
            mode: Mode::LeasesFirst,
            slo_ttft: Duration::from_secs(2),
            time_per_output_token: Duration::from_millis(50),
        }
    }
}

/// Load on one available lease (or static endpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LeaseLoad {
    pub in_flight: u32,
    /// 0 means unknown: never counted as full.
    pub max_concurrency: u32,
    /// Requests waiting in the replica's own queue (scraped), else 0.
    pub queue_depth: u32,
    pub ttft_ewma: Option<Duration>,
}

impl LeaseLoad {
    fn full(&self) -> bool {
        self.max_concurrency > 0 && self.in_flight >= self.max_concurrency
    }

    /// Predicted time to first token for a request sent now.
    pub fn predicted_ttft(&self, tpot: Duration) -> Duration {
        tpot.saturating_mul(self.queue_depth)
            .saturating_add(self.ttft_ewma.unwrap_or_default())
    }
}

/// Load on one available fallback.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FallbackLoad {
    pub in_flight: u32,
    pub max_concurrency: u32,
    pub ttft_ewma: Option<Duration>,
}

impl FallbackLoad {
    fn full(&self) -> bool {
        self.max_concurrency > 0 && self.in_flight >= self.max_concurrency
    }
}

/// What a tenant or pool policy says about the fallback for this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyRule {
    /// Send to the fallback tier first.
    PreferFallback,
    /// Never use the fallback tier (e.g. residency).
    NoFallback,
}

/// The tier tried first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Leases,
    Fallback,
}

/// Why a request went where it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A lease meets the SLO (the normal case; not an overflow).
    WithinSlo,
    NoReplicaReady,
    /// Every lease attempt failed and a fallback answered (set after forwarding).
    AllAttemptsFailed,
    SloBreach,
    AtCapacity,
    Policy,
    /// fallback-first: the fallback carries the baseline.
    Baseline,
    /// fallback-first: the fallback is full or slow, so the burst goes to leases.
    Burst,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WithinSlo => "within_slo",
            Reason::NoReplicaReady => "no_replica_ready",
            Reason::AllAttemptsFailed => "all_attempts_failed",
            Reason::SloBreach => "slo_breach",
            Reason::AtCapacity => "at_capacity",
            Reason::Policy => "policy",
            Reason::Baseline => "baseline",
            Reason::Burst => "burst",
        }
    }
}

/// The outcome: which tier first, whether the fallback may be used at all,
/// and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub first: Tier,
    /// False at the spend cap or under a no-fallback policy: fallbacks are
    /// removed from the attempt order, failover included.
    pub fallback_allowed: bool,
    pub reason: Reason,
    /// The request wanted the fallback but the spend cap stopped it.
    pub capped: bool,
}

impl Decision {
    /// Whether this decision is an overflow (counted in `leasegate_overflow_total`).
    pub fn is_overflow(&self) -> bool {
        self.first == Tier::Fallback
    }

    /// At the cap with no lease able to take the request now: the spend
    /// cap's configured behaviour (queue or 429) applies.
    pub fn blocked(&self) -> bool {
        self.capped && matches!(self.reason, Reason::NoReplicaReady | Reason::AtCapacity)
    }
}

/// Everything the decision looks at for one request.
///
/// The loads are iterators so the caller maps its endpoints without
/// collecting them: the decision runs on every request.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a, L, F> {
    pub pool: &'a PoolSlo,
    /// Available leases and static endpoints of the pool.
    pub leases: L,
    /// Available fallbacks serving the model.
    pub fallbacks: F,
    pub policy: Option<PolicyRule>,
    /// The fallback spend caps have room.
    pub spend_ok: bool,
}

/// Why the leases cannot take the request well, if they cannot.
fn lease_trouble(pool: &PoolSlo, leases: impl Iterator<Item = LeaseLoad>) -> Option<Reason> {
    let mut any = false;
    let mut best: Option<Duration> = None;
    for l in leases {
        any = true;
        if !l.full() {
            let t = l.predicted_ttft(pool.time_per_output_token);
            best = Some(best.map_or(t, |b| b.min(t)));
        }
    }
    match best {
        _ if !any => Some(Reason::NoReplicaReady),
        None => Some(Reason::AtCapacity),
        Some(t) if t > pool.slo_ttft => Some(Reason::SloBreach),
        Some(_) => None,
    }
}

/// Decides the tier for one request.
pub fn decide<L, F>(i: Inputs<'_, L, F>) -> Decision
where
    L: Iterator<Item = LeaseLoad>,
    F: Iterator<Item = FallbackLoad> + Clone,
{
    let leases = |reason, capped| Decision {
        first: Tier::Leases,
        fallback_allowed: i.spend_ok && i.policy != Some(PolicyRule::NoFallback),
        reason,
        capped,
    };
    let spill = |reason| {
        if i.spend_ok {
            Decision {
                first: Tier::Fallback,
                fallback_allowed: true,
                reason,
                capped: false,
            }
        } else {
            leases(reason, true)
        }
    };
    let trouble = lease_trouble(i.pool, i.leases);
    let slo = i.pool.slo_ttft;
    let mut fallbacks = i.fallbacks;
    if i.policy == Some(PolicyRule::NoFallback) || fallbacks.clone().next().is_none() {
        return leases(trouble.unwrap_or(Reason::WithinSlo), false);
    }
    if i.policy == Some(PolicyRule::PreferFallback) {
        return spill(Reason::Policy);
    }
    match i.pool.mode {
        Mode::LeasesFirst => match trouble {
            None => leases(Reason::WithinSlo, false),
            Some(r) => spill(r),
        },
        Mode::FallbackFirst => {
            if fallbacks.any(|f| !f.full() && f.ttft_ewma.is_none_or(|t| t <= slo)) {
                spill(Reason::Baseline)
            } else {
                leases(Reason::Burst, false)
            }
        }
        Mode::CheapestWithinSlo => match trouble {
            None => leases(Reason::WithinSlo, false),
            // A fallback that would miss the SLO too is not worth paying for,
            // unless the leases cannot take the request at all.
            Some(Reason::SloBreach) if !fallbacks.any(|f| f.ttft_ewma.is_none_or(|t| t <= slo)) => {
                leases(Reason::SloBreach, false)
            }
            Some(r) => spill(r),
        },
    }
}

/// Reorders an attempt order to follow a decision, in place.
///
/// Selectors put fallbacks after every lease; inside each tier their
/// ranking is kept. Fallbacks are dropped when not allowed, moved first on
/// an overflow, and sorted by `price` for cheapest-within-slo.
pub fn arrange<T>(
    mut order: Vec<T>,
    decision: &Decision,
    mode: Mode,
    is_fallback: impl Fn(&T) -> bool,
    price: impl Fn(&T) -> f64,
) -> Vec<T> {
    let tiered = order
        .iter()
        .skip_while(|e| !is_fallback(e))
        .all(&is_fallback);
    if !tiered {
        // Not the selector contract; restore it (stable) rather than guess.
        let (fallbacks, leases): (Vec<T>, Vec<T>) = order.into_iter().partition(&is_fallback);
        order = leases;
        order.extend(fallbacks);
    }
    let k = order.iter().position(&is_fallback).unwrap_or(order.len());
    if !decision.fallback_allowed {
        order.truncate(k);
        return order;
    }
    if mode == Mode::CheapestWithinSlo {
        order[k..].sort_by(|a, b| price(a).total_cmp(&price(b)));
    }
    if decision.first == Tier::Fallback {
        order.rotate_left(k);
    }
    order
}

#[cfg(test)]
mod tests;
