//! One request through the gateway's real routing code: the fleet view's
//! candidates, the score selector's attempt order, and the usage stage's
//! overflow plan (`leasegate_gateway::usage::stage::Accounting::plan`, the
//! call the request stack makes) in the pool's mode.
//!
//! Only the forwarding is modelled: an attempt on a lease whose replica is
//! gone costs a connect timeout and is reported as a failure, so the
//! gateway's passive health check ejects it as it would in production.

use std::sync::Arc;
use std::time::Duration;

use leasegate_fleet::Kind;
use leasegate_gateway::config::Config;
use leasegate_gateway::fleet::{EndpointHandle, FailureReason, FleetView, Outcome};
use leasegate_gateway::route::{RouteRequest, ScoreSelector};
use leasegate_gateway::usage::stage::Accounting;
use leasegate_gateway::usage::{Decision, Mode, Reason};
use tokio::time::Instant;

use crate::catalogue::FallbackModel;

/// Where the request ends up.
#[derive(Debug)]
pub enum Target {
    Lease(Arc<EndpointHandle>),
    Fallback(Arc<EndpointHandle>),
    /// Nothing could take it (leases-only with no ready lease).
    Nothing,
}

#[derive(Debug)]
pub struct Routed {
    pub target: Target,
    /// Why: the decision's reason, or `AllAttemptsFailed` / `AtCapacity`
    /// when the walk down the order had to pass the leases by.
    pub reason: Reason,
    /// Attempts on vanished replicas before the one that answered.
    pub dead_attempts: u32,
}

/// The overflow settings of the simulated pool, as a gateway config file
/// would give them.
#[derive(Clone, Copy, Debug)]
pub struct OverflowSettings {
    pub mode: Mode,
    pub slo_ttft: Duration,
    pub time_per_output_token: Duration,
}

/// The gateway config the usage stage is built from: the pool's overflow
/// section and the fallback with its per-token prices. Parsed by the
/// gateway's own config code, so a setting it rejects fails the run.
pub fn gateway_config(
    model: &str,
    fallback_id: &str,
    fallback: &FallbackModel,
    o: OverflowSettings,
) -> Result<Config, String> {
    let toml = format!(
        "[overflow]\nmode = \"{mode}\"\nslo_ttft = \"{slo}ms\"\ntime_per_output_token = \"{tpot}ms\"\n\n\
         [[fallbacks]]\nid = \"{fallback_id}\"\nurl = \"https://fallback.invalid\"\n\
         models = {{ \"{model}\" = \"{model}\" }}\n\
         price_per_1m_input_usd = {pin}\nprice_per_1m_output_usd = {pout}\n",
        mode = o.mode.as_str(),
        slo = o.slo_ttft.as_millis(),
        tpot = o.time_per_output_token.as_millis(),
        pin = fallback.usd_per_1m_input,
        pout = fallback.usd_per_1m_output,
    );
    Config::parse(&toml).map_err(|problems| {
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The gateway's decision step: selection, then the usage stage's plan.
#[derive(Debug)]
pub struct Gateway {
    pub view: FleetView,
    selector: ScoreSelector,
    accounting: Accounting,
    mode: Mode,
    rng: fastrand::Rng,
}

fn full(e: &EndpointHandle) -> bool {
    e.spec.max_concurrency > 0 && e.in_flight() >= e.spec.max_concurrency
}

impl Gateway {
    pub fn new(view: FleetView, config: &Config, mode: Mode, seed: u64) -> Self {
        Self {
            view,
            selector: ScoreSelector::default(),
            accounting: Accounting::new(config, Vec::new()),
            mode,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Routes one request for `model` from `client` (lat, lon); `alive`
    /// says whether a lease's replica still answers.
    pub async fn route(
        &mut self,
        model: &str,
        client: (f64, f64),
        now: Instant,
        alive: impl Fn(&EndpointHandle) -> bool,
    ) -> Routed {
        let state = self.view.current();
        let candidates = state.candidates(model);
        let req = RouteRequest {
            client_location: Some(client),
            ..RouteRequest::new(model)
        };
        let order = self
            .selector
            .order_with(&mut self.rng, now, &req, &candidates)
            .to_vec();
        let mut reason = None;
        // No spend cap is configured, so the plan never waits and never
        // reselects; `reselect` hands back the same order.
        let reselect = || order.clone();
        match self
            .accounting
            .plan(model, order.clone(), None, reselect, &mut reason)
            .await
        {
            Ok(plan) => walk(plan.order, plan.decision, alive),
            Err(_) => Routed {
                target: Target::Nothing,
                reason: Reason::AtCapacity,
                dead_attempts: 0,
            },
        }
    }
}

/// The forwarder's walk: the first lease with a free slot that answers,
/// else the first fallback; with no fallback, the least bad lease queues
/// the request.
fn walk(
    order: Vec<Arc<EndpointHandle>>,
    decision: Decision,
    alive: impl Fn(&EndpointHandle) -> bool,
) -> Routed {
    let mut dead_attempts = 0;
    let mut passed_full = false;
    let mut queue_on = None;
    for e in order {
        if e.spec.kind == Kind::Fallback {
            // A full fallback is passed like a full lease: its provider
            // would answer 429 (fallback-first's baseline quota).
            if full(&e) {
                passed_full = true;
                continue;
            }
            let reason = match (decision.is_overflow(), dead_attempts, passed_full) {
                (true, _, _) => decision.reason,
                (false, 0, true) => Reason::AtCapacity,
                (false, _, _) => Reason::AllAttemptsFailed,
            };
            return Routed {
                target: Target::Fallback(e),
                reason,
                dead_attempts,
            };
        }
        if !e.is_available() {
            continue;
        }
        if !alive(&e) {
            e.report(Outcome::Failure {
                reason: FailureReason::Connect,
            });
            dead_attempts += 1;
            continue;
        }
        if full(&e) {
            passed_full = true;
            queue_on.get_or_insert(e);
            continue;
        }
        return Routed {
            target: Target::Lease(e),
            reason: decision.reason,
            dead_attempts,
        };
    }
    Routed {
        target: queue_on.map_or(Target::Nothing, Target::Lease),
        reason: decision.reason,
        dead_attempts,
    }
}
