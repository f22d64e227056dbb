//! The usage stage of the request path: splice before forwarding, the overflow plan before it, metering and pricing as the answer ends.
//!
//! The request stack calls, in order:
//! 1. [`Accounting::prepare_body`] after the peek: adds `include_usage` to a stream that lacks it;
//! 2. [`Accounting::plan`] after selection: decides the tier, applies the spend
//!    caps (queue or 429) and reorders the attempts;
//! 3. [`Accounting::meter`] when the answer's headers are in: the body wrapper
//!    and the [`Settle`] the end-of-body hook runs to price the answer.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use leasegate_fleet::Kind;
use tokio::time::Instant;

use super::{
    Charge, CostRecorder, Decision, FallbackLoad, FallbackPrice, Inputs, LeaseLoad, Meter, OnCap,
    PolicyRule, Reason, Reservation, SpendCaps, SpendSink, SseFilter, Tier, Usage, UsageScan,
    UsageSlot, config::UsageConfig, overflow, spend, splice,
};
use crate::{config::Config, error::ApiError, fleet::EndpointHandle, openai::Peek};

pub const OVERFLOW: &str = "leasegate_overflow_total";
pub const OVERFLOW_CAPPED: &str = "leasegate_overflow_capped_total";

/// Shared by every request: the pool settings, the cost recorder and the caps.
#[derive(Debug)]
pub struct Accounting {
    config: UsageConfig,
    recorder: Arc<CostRecorder>,
    caps: Arc<SpendCaps>,
}

/// The attempt order a request follows and what it reserved.
#[derive(Debug)]
pub struct Plan {
    pub order: Vec<Arc<EndpointHandle>>,
    pub decision: Decision,
    /// The spend cap stopped an overflow (the request may have queued for a lease).
    pub capped: bool,
    reservation: Option<Reservation>,
    /// The pool, kept only when a fallback may serve after the leases fail
    /// (the overflow metric is per pool).
    pool: Option<String>,
}

/// Prices the answer when its body ends.
#[derive(Debug)]
pub struct Settle {
    recorder: Arc<CostRecorder>,
    slot: Arc<UsageSlot>,
    endpoint: Arc<EndpointHandle>,
    decision: Option<Decision>,
    pool: Option<String>,
    _reservation: Option<Reservation>,
}

/// What the end hook learns for the access log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settled {
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// The overflow reason, when the answer came from the fallback tier.
    pub overflow: Option<Reason>,
}

impl Accounting {
    pub fn new(config: &Config, sinks: Vec<Arc<dyn SpendSink>>) -> Self {
        let caps = SpendCaps::new(config.usage.spend, spend::UtcClock::system());
        Self::with_caps(config, sinks, caps, None)
    }

    /// The accounting of a reloaded config: prices and pool settings from
    /// `config`, while the spend windows carry over, so that a reload can
    /// never reset a fallback spend cap (cap amounts change with a restart).
    pub fn reloaded(&self, config: &Config) -> Self {
        // The spend record goes on too: `status` shows spend since start.
        Self::with_caps(
            config,
            Vec::new(),
            Arc::clone(&self.caps),
            Some(&self.recorder),
        )
    }

    fn with_caps(
        config: &Config,
        sinks: Vec<Arc<dyn SpendSink>>,
        caps: Arc<SpendCaps>,
        previous: Option<&CostRecorder>,
    ) -> Self {
        let prices: HashMap<String, FallbackPrice> = config
            .fallbacks
            .iter()
            .map(|f| {
                let price = FallbackPrice {
                    input_per_1m_usd: f.price_per_1m_input_usd,
                    output_per_1m_usd: f.price_per_1m_output_usd,
                };
                (f.id.clone(), price)
            })
            .collect();
        // The first fallback listing a pool model prices it for the
        // hyperscaler-only comparison.
        let mut list_prices = HashMap::new();
        for f in &config.fallbacks {
            for model in f.models.keys() {
                list_prices
                    .entry(model.clone())
                    .or_insert_with(|| prices.get(&f.id).copied().unwrap_or_default());
            }
        }
        let recorder = sinks.into_iter().fold(
            CostRecorder::new(prices, Some(Arc::clone(&caps)))
                .with_list_prices(list_prices, config.aliases.clone()),
            CostRecorder::with_sink,
        );
        let recorder = match previous {
            Some(p) => recorder.carrying(p),
            None => recorder,
        };
        Self {
            config: config.usage.clone(),
            recorder: Arc::new(recorder),
            caps,
        }
    }

    pub fn caps(&self) -> &Arc<SpendCaps> {
        &self.caps
    }

    /// Spend since start and the saving against hyperscaler-only (for `status`).
    pub fn summary(&self) -> super::CostSummary {
        self.recorder.summary()
    }

    /// The cost recorder, for the per-model view of spend.
    pub fn recorder(&self) -> &CostRecorder {
        &self.recorder
    }

    /// The body to forward, and whether the gateway added `include_usage`
    /// (so the stream filter must strip what the client did not ask for).
    pub fn prepare_body(&self, body: Bytes, peek: &Peek) -> (Bytes, bool) {
        if !peek.stream || peek.include_usage {
            return (body, false);
        }
        let options = splice::StreamOptions::probe(&body);
        if !options.needs_splice() {
            return (body, false);
        }
        match splice::include_usage(&body, options) {
            Ok(spliced) => (spliced, true),
            Err(e) => {
                tracing::debug!(error = %e, "stream left without include_usage; it will not be priced");
                (body, false)
            }
        }
    }

    /// Decides the tier for a request and turns `order` into its attempt order.
    ///
    /// `reselect` gives a fresh order from the current fleet; a request
    /// queued at the spend cap calls it while waiting for a lease.
    pub async fn plan(
        &self,
        pool_model: &str,
        order: Vec<Arc<EndpointHandle>>,
        policy: Option<PolicyRule>,
        mut reselect: impl FnMut() -> Vec<Arc<EndpointHandle>>,
        reason: &mut Option<&'static str>,
    ) -> Result<Plan, ApiError> {
        let pool = self.config.pool(pool_model);
        let mut order = order;
        let (mut decision, mut reservation) = self.admit(pool_model, &order, policy);
        *reason = Some(decision.reason.as_str());
        let capped = decision.capped;
        if decision.blocked() {
            metrics::counter!(OVERFLOW_CAPPED, "model" => pool_model.to_owned(), "reason" => decision.reason.as_str()).increment(1);
            let reset = self.caps.check().err().map(|c| c.reset_in);
            // Called only to answer 429, so it counts the refusal too.
            let retry_after = |d: &Decision| {
                self.caps.count_refusal();
                let wait = match (d.reason, reset) {
                    (Reason::NoReplicaReady, Some(reset)) => reset,
                    _ => self.config.spend.retry_after,
                };
                ApiError::SpendCapReached {
                    retry_after_secs: wait.as_secs().max(1),
                }
            };
            let OnCap::Queue { max_wait } = self.config.spend.on_cap else {
                return Err(retry_after(&decision));
            };
            // A lease may free up, the fleet may grow, or the cap window may roll over.
            let waited = spend::wait_until(max_wait, || {
                order = reselect();
                (decision, reservation) = self.admit(pool_model, &order, policy);
                !decision.blocked()
            })
            .await;
            *reason = Some(decision.reason.as_str());
            if !waited {
                return Err(retry_after(&decision));
            }
        }
        if decision.is_overflow() {
            metrics::counter!(OVERFLOW, "model" => pool_model.to_owned(), "reason" => decision.reason.as_str()).increment(1);
        }
        let order = overflow::arrange(
            order,
            &decision,
            pool.mode,
            |e| is_fallback(e),
            |e| self.recorder.usd_per_1m(&e.spec).unwrap_or(f64::MAX),
        );
        let pool = (decision.first == Tier::Leases && order.iter().any(|e| is_fallback(e)))
            .then(|| pool_model.to_owned());
        Ok(Plan {
            order,
            decision,
            capped,
            reservation,
            pool,
        })
    }

    /// The decision under the caps. Only a request sent to the fallback tier
    /// first reserves room: reserving for every request that might fail
    /// over would let lease traffic crowd out real overflow. A fallback
    /// reached by failover is still priced and counted when it ends.
    fn admit(
        &self,
        pool_model: &str,
        order: &[Arc<EndpointHandle>],
        policy: Option<PolicyRule>,
    ) -> (Decision, Option<Reservation>) {
        let decision = self.decide(pool_model, order, policy, self.caps.check().is_ok());
        if decision.first != Tier::Fallback {
            return (decision, None);
        }
        match self.caps.reserve() {
            Ok(r) => (decision, Some(r)),
            // One more average request would pass the cap: overflow stops here.
            Err(_) => (self.decide(pool_model, order, policy, false), None),
        }
    }

    fn decide(
        &self,
        pool_model: &str,
        order: &[Arc<EndpointHandle>],
        policy: Option<PolicyRule>,
        spend_ok: bool,
    ) -> Decision {
        let now = Instant::now();
        let ewma = |e: &EndpointHandle| {
            // A measurement's weight fades with its age, so a lease slow a
            // while ago is tried again and can show it recovered.
            e.ttfb_ewma_ms(now)
                .map(|(ms, trust)| Duration::from_secs_f64((ms * trust).max(0.0) / 1000.0))
        };
        let leases = order.iter().filter(|e| !is_fallback(e)).map(|e| LeaseLoad {
            in_flight: e.in_flight(),
            max_concurrency: e.spec.max_concurrency,
            queue_depth: e.queue_depth().unwrap_or(0),
            ttft_ewma: ewma(e),
        });
        let fallbacks = order
            .iter()
            .filter(|e| is_fallback(e))
            .map(|e| FallbackLoad {
                in_flight: e.in_flight(),
                max_concurrency: e.spec.max_concurrency,
                ttft_ewma: ewma(e),
            });
        overflow::decide(Inputs {
            pool: self.config.pool(pool_model),
            leases,
            fallbacks,
            policy,
            spend_ok,
        })
    }

    /// The body meter for an answer and the hook that prices it.
    ///
    /// `sse`: a successful streaming answer (an error answer to a stream
    /// request is JSON); `strip`: the gateway added `include_usage` to it.
    pub fn meter(
        &self,
        endpoint: &Arc<EndpointHandle>,
        sse: bool,
        strip: bool,
        plan: Option<Plan>,
    ) -> (Meter, Arc<UsageSlot>, Settle) {
        let meter = if sse {
            Meter::Sse(SseFilter::new(strip))
        } else {
            Meter::Json(UsageScan::new())
        };
        let slot = Arc::new(UsageSlot::default());
        let (decision, reservation, pool) = match plan {
            Some(p) => (Some(p.decision), p.reservation, p.pool),
            None => (None, None, None),
        };
        let settle = Settle {
            recorder: Arc::clone(&self.recorder),
            slot: Arc::clone(&slot),
            endpoint: Arc::clone(endpoint),
            decision,
            pool,
            _reservation: reservation,
        };
        (meter, slot, settle)
    }
}

fn is_fallback(e: &EndpointHandle) -> bool {
    e.spec.kind == Kind::Fallback
}

impl Settle {
    /// Prices the answer (when it reported usage) and tells what happened.
    /// `model` is the client's model name; `key` the client key's name.
    pub fn settle(self, model: &str, key: Option<&str>) -> Settled {
        let by_fallback = is_fallback(&self.endpoint);
        let overflow = match self.decision {
            Some(d) if by_fallback && d.first == Tier::Fallback => Some(d.reason),
            Some(_) if by_fallback => {
                let pool = self.pool.unwrap_or_else(|| model.to_owned());
                metrics::counter!(OVERFLOW, "model" => pool, "reason" => Reason::AllAttemptsFailed.as_str()).increment(1);
                Some(Reason::AllAttemptsFailed)
            }
            _ => None,
        };
        let usage = self.slot.get();
        let cost_usd = usage.map(|usage| {
            self.recorder
                .record(&Charge {
                    model,
                    endpoint: &self.endpoint.spec,
                    key,
                    usage,
                })
                .usd
        });
        Settled {
            usage,
            cost_usd,
            overflow,
        }
    }
}

#[cfg(test)]
mod tests;
