//! The `Market` trait: everything chain- or Console-specific stays behind it.
//!
//! One deployment holds one replica (one group, `count: 1`). Replacing a
//! replica means a new deployment; closing is per deployment.

pub mod sim;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Seconds per block on Akash; prices are quoted per block.
pub const BLOCK_SECONDS: f64 = 6.0;
/// Blocks per hour at [`BLOCK_SECONDS`].
pub const BLOCKS_PER_HOUR: f64 = 3600.0 / BLOCK_SECONDS;

/// A deployment's sequence number on the market.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dseq(pub String);

impl fmt::Display for Dseq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who made a deployment and why: lets a restarted controller recognise its
/// own deployments and tie each to the durable intent that created it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tag {
    pub controller_id: String,
    pub intent_id: String,
}

/// What the market returns for a new deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    pub dseq: Dseq,
    /// Needed to create the lease; kept by the caller until then.
    pub manifest: String,
}

/// Identifies one bid, and so the lease that accepting it creates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BidId {
    pub dseq: Dseq,
    pub gseq: u32,
    pub oseq: u32,
    pub provider: String,
    pub bseq: u32,
}

/// A price per block in the market's denomination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// `uact` (1 uact = 1e-6 USD) or `uakt`.
    pub denom: String,
    pub amount_per_block: f64,
}

impl Price {
    /// USD per hour, for USD-pegged denominations; `None` for others.
    pub fn usd_per_hour(&self) -> Option<f64> {
        match self.denom.as_str() {
            "uact" | "uusdc" => Some(self.amount_per_block * BLOCKS_PER_HOUR / 1e6),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BidState {
    Open,
    Active,
    Lost,
    Closed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Bid {
    pub id: BidId,
    pub state: BidState,
    pub price: Price,
    /// GPU models offered, lower-case as the market names them (`h100`).
    pub gpu_models: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Active,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Active,
    InsufficientFunds,
    Closed,
}

/// How a replica on a lease is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    /// A base URL such as `http://host:31234` or `https://ingress-host`.
    pub url: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeaseStatus {
    pub bid: BidId,
    pub state: LeaseState,
    /// The provider's reason when it closed the lease on its own:
    /// `unstable`, `insufficient_funds`, `manifest_timeout`, `decommission`.
    pub close_reason: Option<String>,
    pub price: Price,
    /// The provider's live view; `None` when it could not be reached
    /// (Console's `status: null`). Repeated `None` means unreachable.
    pub services: Option<Vec<ServiceAddress>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Escrow {
    pub funds_usd: f64,
    /// Time until the escrow runs dry at the current lease prices.
    pub runway: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentStatus {
    pub dseq: Dseq,
    pub state: DeploymentState,
    pub leases: Vec<LeaseStatus>,
    pub escrow: Option<Escrow>,
}

/// One of our deployments as listed by the market.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSummary {
    pub dseq: Dseq,
    pub state: DeploymentState,
    /// `None` when the deployment carries no leasegate tag (not ours).
    pub tag: Option<Tag>,
}

/// A provider as the market's catalogue describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub owner: String,
    pub host_uri: String,
    pub online: bool,
    pub audited: bool,
    /// 0.0 to 1.0.
    pub uptime_7d: f64,
    pub gpu_models: Vec<String>,
    /// Akash `location-region`, e.g. `eu-central`.
    pub region: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The market asked us to slow down.
    #[error("rate limited by the market (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// A timeout, a connection failure or a 5xx: the call may be retried if
    /// it is idempotent.
    #[error("market unavailable: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The market refused the call; retrying the same call will not help.
    #[error("market rejected the call with status {status}: {body}")]
    Rejected { status: u16, body: String },
    /// The answer did not have the expected shape.
    #[error("unexpected answer from the market: {0}")]
    Protocol(String),
}

impl MarketError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_))
    }
}

/// A GPU marketplace.
///
/// Every method is one round trip (or a bounded set) to the market. Callers
/// write a durable intent before each method with a side effect
/// (`create_deployment`, `create_lease`, `deposit`, `close`).
#[async_trait]
pub trait Market: Send + Sync + 'static {
    /// A short name for logs and metrics: `sim`, `akash`.
    fn name(&self) -> &'static str;

    /// Creates a deployment from a rendered SDL, tagged so that it can be
    /// recognised by [`Market::list_deployments`] after a crash.
    async fn create_deployment(&self, sdl: &str, tag: &Tag) -> Result<Created, MarketError>;

    /// The bids received so far for a deployment.
    async fn bids(&self, dseq: &Dseq) -> Result<Vec<Bid>, MarketError>;

    /// Accepts a bid and sends the manifest. Idempotent: retrying with the
    /// same bid after an unclear failure does not create a second lease.
    async fn create_lease(&self, bid: &BidId, manifest: &str) -> Result<(), MarketError>;

    /// The deployment, its leases and their live status.
    async fn status(&self, dseq: &Dseq) -> Result<DeploymentStatus, MarketError>;

    /// Adds funds to the deployment's escrow.
    async fn deposit(&self, dseq: &Dseq, usd: f64) -> Result<(), MarketError>;

    /// Closes the deployment and its lease. Idempotent: closing a deployment
    /// that is already closed, or unknown, succeeds.
    async fn close(&self, dseq: &Dseq) -> Result<(), MarketError>;

    /// Every deployment of this account that is not closed, across all pages.
    async fn list_deployments(&self) -> Result<Vec<DeploymentSummary>, MarketError>;

    /// The provider catalogue.
    async fn providers(&self) -> Result<Vec<ProviderInfo>, MarketError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uact_per_block_converts_to_dollars_per_hour() {
        // AKASH.md: 4,517 uact/block is about $2.71/h.
        let p = Price {
            denom: "uact".into(),
            amount_per_block: 4517.0,
        };
        let usd = p.usd_per_hour().unwrap();
        assert!((usd - 2.7102).abs() < 1e-3, "{usd}");
        let akt = Price {
            denom: "uakt".into(),
            amount_per_block: 4517.0,
        };
        assert_eq!(akt.usd_per_hour(), None);
    }
}
