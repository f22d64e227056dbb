//! One request through the gateway's real routing code: the fleet view's
//! candidates, the score selector's attempt order, and the overflow decision
//! of `leasegate_gateway::usage::overflow` arranging leases and fallbacks.
//!
//! Only the forwarding is modelled: an attempt on a lease whose replica is
//! gone costs a connect timeout and is reported as a failure, so the
//! gateway's passive health check ejects it as it would in production.

use std::sync::Arc;
use std::time::Duration;

use leasegate_fleet::Kind;
use leasegate_gateway::fleet::{EndpointHandle, FailureReason, FleetView, Outcome};
use leasegate_gateway::route::{RouteRequest, ScoreSelector};
use leasegate_gateway::usage::overflow::{self, Decision, Inputs, LeaseLoad, Mode, PoolSlo};
use leasegate_gateway::usage::{FallbackLoad, Reason};
use tokio::time::Instant;

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

/// The gateway's decision step. Its one seam is [`decide`].
#[derive(Debug)]
pub struct Gateway {
    pub view: FleetView,
    selector: ScoreSelector,
    slo: PoolSlo,
    rng: fastrand::Rng,
}

/// The overflow decision for one request: the usage module's `decide`.
pub fn decide(slo: &PoolSlo, leases: &[LeaseLoad], fallbacks: &[FallbackLoad]) -> Decision {
    overflow::decide(Inputs {
        pool: slo,
        leases: leases.iter().copied(),
        fallbacks: fallbacks.iter().copied(),
        policy: None,
        spend_ok: true,
    })
}

fn full(e: &EndpointHandle) -> bool {
    e.spec.max_concurrency > 0 && e.in_flight() >= e.spec.max_concurrency
}

impl Gateway {
    pub fn new(view: FleetView, slo: PoolSlo, seed: u64) -> Self {
        Self {
            view,
            selector: ScoreSelector::default(),
            slo,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn mode(&self) -> Mode {
        self.slo.mode
    }

    /// Routes one request from `client` (lat, lon). `queue_depth` is the
    /// replica's own queue (what the gateway would scrape); `alive` says
    /// whether a lease's replica still answers.
    pub fn route(
        &mut self,
        model: &str,
        client: (f64, f64),
        now: Instant,
        queue_depth: impl Fn(&EndpointHandle) -> u32,
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
            .order_with(&mut self.rng, now, &req, &candidates);
        let ewma = |e: &EndpointHandle| {
            e.ttfb_ewma_ms(now)
                .map(|(ms, _)| Duration::from_secs_f64(ms / 1e3))
        };
        let is_fallback = |e: &Arc<EndpointHandle>| e.spec.kind == Kind::Fallback;
        let leases: Vec<LeaseLoad> = order
            .iter()
            .filter(|e| !is_fallback(e))
            .map(|e| LeaseLoad {
                in_flight: e.in_flight(),
                max_concurrency: e.spec.max_concurrency,
                queue_depth: queue_depth(e),
                ttft_ewma: ewma(e),
            })
            .collect();
        let fallbacks: Vec<FallbackLoad> = order
            .iter()
            .filter(|e| is_fallback(e))
            .map(|e| FallbackLoad {
                in_flight: e.in_flight(),
                max_concurrency: e.spec.max_concurrency,
                ttft_ewma: ewma(e),
            })
            .collect();
        let decision = decide(&self.slo, &leases, &fallbacks);
        let order = overflow::arrange(order.to_vec(), &decision, self.slo.mode, is_fallback, |e| {
            e.spec.price_per_hour_usd
        });
        self.walk(order, decision, alive)
    }

    /// The forwarder's walk: the first lease with a free slot that answers,
    /// else the first fallback; with no fallback, the least bad lease
    /// queues the request.
    fn walk(
        &self,
        order: Vec<Arc<EndpointHandle>>,
        decision: Decision,
        alive: impl Fn(&EndpointHandle) -> bool,
    ) -> Routed {
        let mut dead_attempts = 0;
        let mut passed_full = false;
        let mut queue_on = None;
        for e in order {
            if e.spec.kind == Kind::Fallback {
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
}
