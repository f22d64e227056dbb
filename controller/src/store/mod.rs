//! The controller's durable state: intents written before every market side
//! effect, the leases they produced, and our history with each provider.

mod sqlite;

use std::collections::HashMap;

use leasegate_fleet::Secret;
use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

use crate::market::{BidId, Dseq};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store holds an unreadable row: {0}")]
    Corrupt(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentKind {
    /// One replica slot of a pool, from deployment to close.
    Acquire,
    /// Close a deployment no acquire intent owns (an orphan found at startup).
    Close,
    /// Top up a deployment's escrow.
    Deposit,
}

/// Where an intent stands. Acquire intents walk the whole list; close and
/// deposit intents go straight from `Pending` to `Done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Written; the market call it guards may or may not have happened.
    Pending,
    /// The deployment exists; bids are being collected.
    Created,
    /// A bid is chosen; the lease is about to be (or was) created.
    BidChosen,
    /// The lease exists; waiting for the replica to be ready.
    Leased,
    /// Published as ready.
    Ready,
    /// Still serving, but a replacement is wanted (make-before-break).
    Replacing,
    /// Published as draining; closes when idle or after the drain timeout.
    Draining,
    /// About to close (or closing) the deployment.
    Closing,
    Done,
    Failed,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Created => "created",
            Self::BidChosen => "bid_chosen",
            Self::Leased => "leased",
            Self::Ready => "ready",
            Self::Replacing => "replacing",
            Self::Draining => "draining",
            Self::Closing => "closing",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Created,
            Self::BidChosen,
            Self::Leased,
            Self::Ready,
            Self::Replacing,
            Self::Draining,
            Self::Closing,
            Self::Done,
            Self::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }

    /// Counts toward the pool's replicas (not on its way out).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Created | Self::BidChosen | Self::Leased | Self::Ready
        )
    }
}

/// A durable record of something the controller is doing at the market.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub id: String,
    pub pool: String,
    pub kind: IntentKind,
    pub step: Step,
    pub dseq: Option<Dseq>,
    /// Needed for the lease; only `create_deployment` returns it. Made
    /// from the SDL, so it carries the replica key: never printed.
    pub manifest: Option<Secret>,
    pub bid: Option<BidId>,
    /// The region the acquisition aims at (demand placement).
    pub region: Option<String>,
    /// The per-deployment replica key; never logged.
    pub replica_key: Option<Secret>,
    /// Market calls attempted at the current step (an unclear failure
    /// means the call may have happened).
    pub attempts: u32,
    pub reason: Option<String>,
    /// For deposits: the amount.
    pub amount_usd: Option<f64>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When the current step began.
    pub step_ms: u64,
}

impl Intent {
    pub fn new(id: String, pool: &str, kind: IntentKind, now_ms: u64) -> Self {
        Self {
            id,
            pool: pool.to_string(),
            kind,
            step: Step::Pending,
            dseq: None,
            manifest: None,
            bid: None,
            region: None,
            replica_key: None,
            attempts: 0,
            reason: None,
            amount_usd: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            step_ms: now_ms,
        }
    }

    /// Moves to `step`, resetting the per-step attempt count.
    pub fn advance(&mut self, step: Step, now_ms: u64) {
        self.step = step;
        self.attempts = 0;
        self.step_ms = now_ms;
        self.updated_ms = now_ms;
    }
}

/// A lease we hold or held.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    pub dseq: Dseq,
    pub intent_id: String,
    pub pool: String,
    pub provider: String,
    pub region: String,
    pub country: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub audited: bool,
    pub uptime: f64,
    pub price_usd_per_hour: f64,
    pub url: Option<String>,
    pub replica_key: Option<Secret>,
    /// `active`, `ready`, `closed`.
    pub state: String,
    pub created_ms: u64,
    pub ready_ms: Option<u64>,
    pub closed_ms: Option<u64>,
    pub close_reason: Option<String>,
}

/// A provider the operator cordoned: no new lease goes to it, and the
/// leases it already has stay until they are replaced or released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cordon {
    pub provider: String,
    pub reason: Option<String>,
    /// When it was first cordoned (a repeat keeps this, updates the reason).
    pub since_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProviderHistory {
    pub successes: u64,
    pub failures: u64,
}

impl ProviderHistory {
    /// Laplace-smoothed success rate: 0.5 with no history.
    pub fn score(&self) -> f64 {
        (self.successes as f64 + 1.0) / ((self.successes + self.failures) as f64 + 2.0)
    }
}

/// Durable controller state. Calls are short and synchronous; callers never
/// hold anything across an `.await` while in one.
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces the intent with this id.
    fn save_intent(&self, intent: &Intent) -> Result<(), StoreError>;
    /// Non-terminal intents (or all, with `all`).
    fn intents(&self, all: bool) -> Result<Vec<Intent>, StoreError>;
    fn save_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError>;
    fn lease(&self, dseq: &Dseq) -> Result<Option<LeaseRecord>, StoreError>;
    /// Leases not yet closed (or all, with `all`).
    fn leases(&self, all: bool) -> Result<Vec<LeaseRecord>, StoreError>;
    fn record_provider(&self, provider: &str, success: bool, now_ms: u64)
    -> Result<(), StoreError>;
    fn provider_history(&self) -> Result<HashMap<String, ProviderHistory>, StoreError>;
    /// Cordons `c.provider`; cordoning it again only updates the reason.
    fn cordon(&self, c: &Cordon) -> Result<(), StoreError>;
    /// Lifts a cordon; whether there was one.
    fn uncordon(&self, provider: &str) -> Result<bool, StoreError>;
    /// Every cordoned provider, by provider id.
    fn cordons(&self) -> Result<Vec<Cordon>, StoreError>;
    /// The next fleet snapshot version; persisted so versions keep rising
    /// across controller restarts (gateways long-poll with `after=`).
    fn next_fleet_version(&self) -> Result<u64, StoreError>;
}
