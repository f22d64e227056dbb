//! The sim market's books: deployments, bids, leases, escrow, and the
//! ledger tests read. Time moves lazily: every call first settles the
//! books up to `now` (escrow drain, provider failures).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::launcher::RunningReplica;
use crate::market::{DeploymentState, LeaseState, Tag};

pub(super) struct SimBidRec {
    pub provider: String,
    pub gpu_model: String,
    pub uact_per_block: f64,
    pub arrives: Instant,
    pub expires: Instant,
}

pub(super) struct SimLeaseRec {
    pub provider: String,
    pub bseq: u32,
    pub uact_per_block: f64,
    pub state: LeaseState,
    pub reason: Option<String>,
    pub created: Instant,
    pub closed: Option<Instant>,
    pub services_at: Instant,
    pub url: Option<String>,
    pub replica: Option<Box<dyn RunningReplica>>,
}

pub(super) struct SimDeployment {
    pub tag: Option<Tag>,
    pub manifest: String,
    pub models: Vec<String>,
    pub api_key: Option<String>,
    pub state: DeploymentState,
    pub created: Instant,
    pub closed: Option<Instant>,
    /// Funds as of `settled_at`.
    pub funds_usd: f64,
    pub settled_at: Instant,
    pub deposits_usd: f64,
    pub bids: Vec<SimBidRec>,
    pub lease: Option<SimLeaseRec>,
}

/// Seconds as a `Duration`, saturating at a decade for infinite or huge
/// values (a free lease never runs dry).
pub(super) fn secs(s: f64) -> Duration {
    const DECADE: Duration = Duration::from_secs(10 * 365 * 86_400);
    Duration::try_from_secs_f64(s.max(0.0)).map_or(DECADE, |d| d.min(DECADE))
}

/// USD drained per second by a lease at `uact_per_block`.
pub(super) fn usd_per_sec(uact_per_block: f64) -> f64 {
    uact_per_block / 1e6 / crate::market::BLOCK_SECONDS
}

#[derive(Default)]
pub(super) struct Books {
    pub next_dseq: u64,
    pub deployments: BTreeMap<u64, SimDeployment>,
    /// Provider owner → when it went down.
    pub down: HashMap<String, Instant>,
    /// Provider owner → end of a `status: null` episode.
    pub null_until: HashMap<String, Instant>,
    pub no_bids: bool,
}

impl Books {
    /// Brings escrow and provider failures up to `now`. Returns replicas to
    /// drop once the lock is released.
    pub fn settle(
        &mut self,
        now: Instant,
        unstable_after: Duration,
    ) -> Vec<Box<dyn RunningReplica>> {
        let mut dropped = Vec::new();
        for d in self.deployments.values_mut() {
            let Some(lease) = d.lease.as_mut() else {
                continue;
            };
            if lease.state != LeaseState::Active || d.state != DeploymentState::Active {
                continue;
            }
            let rate = usd_per_sec(lease.uact_per_block);
            let elapsed = now.saturating_duration_since(d.settled_at).as_secs_f64();
            let dry_at = d.settled_at + secs(d.funds_usd / rate);
            let unstable_at = self.down.get(&lease.provider).map(|t| *t + unstable_after);
            // Whichever happens first closes the lease, at its own instant.
            let first = match unstable_at {
                Some(u) if u <= dry_at && u <= now => Some((u, "unstable")),
                _ if dry_at <= now => Some((dry_at, "insufficient_funds")),
                Some(u) if u <= now => Some((u, "unstable")),
                _ => None,
            };
            match first {
                Some((at, reason)) => {
                    let spent = at.saturating_duration_since(d.settled_at).as_secs_f64();
                    d.funds_usd = (d.funds_usd - rate * spent).max(0.0);
                    d.settled_at = at;
                    lease.closed = Some(at);
                    lease.reason = Some(reason.to_string());
                    if reason == "insufficient_funds" {
                        lease.state = LeaseState::InsufficientFunds;
                        // The escrow account closes, and the deployment with it.
                        d.state = DeploymentState::Closed;
                        d.closed = Some(at);
                    } else {
                        lease.state = LeaseState::Closed;
                    }
                    dropped.extend(lease.replica.take());
                }
                None => {
                    d.funds_usd -= rate * elapsed;
                    d.settled_at = now;
                }
            }
        }
        dropped
    }
}

/// The market's own record of everything that happened, for assertions.
/// Times are measured from the sim market's creation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    pub deployments: Vec<LedgerDeployment>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LedgerDeployment {
    pub dseq: String,
    pub tag: Option<Tag>,
    pub created_at: Duration,
    pub closed_at: Option<Duration>,
    pub deposits_usd: f64,
    pub lease: Option<LedgerLease>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LedgerLease {
    pub provider: String,
    pub price_usd_per_hour: f64,
    pub state: LeaseState,
    pub created_at: Duration,
    pub closed_at: Option<Duration>,
    pub close_reason: Option<String>,
}

impl LedgerDeployment {
    pub fn is_active(&self) -> bool {
        self.closed_at.is_none()
    }
    pub fn has_active_lease(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| l.state == LeaseState::Active)
    }
    pub fn intent(&self) -> Option<&str> {
        self.tag.as_ref().map(|t| t.intent_id.as_str())
    }
}

impl Ledger {
    pub(super) fn build(books: &Books, origin: Instant) -> Self {
        let at = |t: Instant| t.saturating_duration_since(origin);
        let deployments = books
            .deployments
            .iter()
            .map(|(dseq, d)| LedgerDeployment {
                dseq: dseq.to_string(),
                tag: d.tag.clone(),
                created_at: at(d.created),
                closed_at: d.closed.map(at),
                deposits_usd: d.deposits_usd,
                lease: d.lease.as_ref().map(|l| LedgerLease {
                    provider: l.provider.clone(),
                    price_usd_per_hour: usd_per_sec(l.uact_per_block) * 3600.0,
                    state: l.state,
                    created_at: at(l.created),
                    closed_at: l.closed.map(at),
                    close_reason: l.reason.clone(),
                }),
            })
            .collect();
        Self { deployments }
    }

    /// Leases the market is charging for now.
    pub fn active_leases(&self) -> Vec<&LedgerDeployment> {
        self.deployments
            .iter()
            .filter(|d| d.has_active_lease())
            .collect()
    }

    /// Open deployments with no active lease: escrow locked for nothing.
    pub fn idle_deployments(&self) -> Vec<&LedgerDeployment> {
        self.deployments
            .iter()
            .filter(|d| d.is_active() && !d.has_active_lease())
            .collect()
    }

    /// Leases ever created under one intent id.
    pub fn leases_for_intent(&self, intent: &str) -> usize {
        self.deployments
            .iter()
            .filter(|d| d.intent() == Some(intent) && d.lease.is_some())
            .count()
    }

    /// The largest number of leases any one intent ever got.
    pub fn max_leases_per_intent(&self) -> usize {
        self.deployments
            .iter()
            .filter_map(|d| d.intent())
            .map(|i| self.leases_for_intent(i))
            .max()
            .unwrap_or(0)
    }

    pub fn by_dseq(&self, dseq: &str) -> Option<&LedgerDeployment> {
        self.deployments.iter().find(|d| d.dseq == dseq)
    }
}
