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
    /// No fallback serves this model.
    NoFallback,
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
            Reason::NoFallback => "no_fallback",
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
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub pool: &'a PoolSlo,
    /// Available leases and static endpoints of the pool.
    pub leases: &'a [LeaseLoad],
    /// Available fallbacks serving the model.
    pub fallbacks: &'a [FallbackLoad],
    pub policy: Option<PolicyRule>,
    /// The fallback spend caps have room.
    pub spend_ok: bool,
}

/// Why the leases cannot take the request well, if they cannot.
fn lease_trouble(i: &Inputs<'_>) -> Option<Reason> {
    if i.leases.is_empty() {
        return Some(Reason::NoReplicaReady);
    }
    let open = i.leases.iter().filter(|l| !l.full());
    let best = open
        .map(|l| l.predicted_ttft(i.pool.time_per_output_token))
        .min();
    match best {
        None => Some(Reason::AtCapacity),
        Some(t) if t > i.pool.slo_ttft => Some(Reason::SloBreach),
        Some(_) => None,
    }
}

/// Decides the tier for one request.
pub fn decide(i: &Inputs<'_>) -> Decision {
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
    let trouble = lease_trouble(i);
    if i.policy == Some(PolicyRule::NoFallback) {
        return leases(trouble.unwrap_or(Reason::Policy), false);
    }
    if i.fallbacks.is_empty() {
        return leases(trouble.unwrap_or(Reason::NoFallback), false);
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
            let slo = i.pool.slo_ttft;
            let room = i
                .fallbacks
                .iter()
                .any(|f| !f.full() && f.ttft_ewma.is_none_or(|t| t <= slo));
            if room {
                spill(Reason::Baseline)
            } else {
                leases(Reason::Burst, false)
            }
        }
        Mode::CheapestWithinSlo => match trouble {
            None => leases(Reason::WithinSlo, false),
            Some(r) => {
                let slo = i.pool.slo_ttft;
                let helps = i
                    .fallbacks
                    .iter()
                    .any(|f| f.ttft_ewma.is_none_or(|t| t <= slo));
                // A fallback that would miss the SLO too is not worth paying for,
                // unless the leases cannot take the request at all.
                if helps || r != Reason::SloBreach {
                    spill(r)
                } else {
                    leases(r, false)
                }
            }
        },
    }
}

/// Reorders an attempt order (leases, then fallbacks) to follow a decision.
///
/// `order` keeps the selector's ranking inside each tier; `price` sorts the
/// fallbacks for cheapest-within-slo. Fallbacks are dropped when not allowed.
pub fn arrange<T>(
    order: Vec<T>,
    decision: &Decision,
    mode: Mode,
    is_fallback: impl Fn(&T) -> bool,
    price: impl Fn(&T) -> f64,
) -> Vec<T> {
    let (mut fallbacks, leases): (Vec<T>, Vec<T>) = order.into_iter().partition(&is_fallback);
    if !decision.fallback_allowed {
        return leases;
    }
    if mode == Mode::CheapestWithinSlo {
        fallbacks.sort_by(|a, b| price(a).total_cmp(&price(b)));
    }
    match decision.first {
        Tier::Leases => leases.into_iter().chain(fallbacks).collect(),
        Tier::Fallback => fallbacks.into_iter().chain(leases).collect(),
    }
}

#[cfg(test)]
mod tests;
