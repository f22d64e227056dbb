//! Console API wire shapes, as lenient as the spec allows.
//!
//! Every field is optional or defaulted and unknown fields are ignored, so an
//! answer that drifts from the spec degrades to "unknown" instead of a failed
//! decode. The mapping into the `Market` types lives in `map.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The `{"data": ...}` envelope used by most Console answers.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<T> {
    pub data: Option<T>,
}

/// A number that Console sends either as a JSON number or as a string
/// (`"12"`, `"4517.000000000000000000"`); anything else reads as `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Num(pub Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Num(match v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }))
    }
}

impl Num {
    pub fn u32(self) -> Option<u32> {
        self.0
            .filter(|v| v.is_finite() && *v >= 0.0 && *v <= f64::from(u32::MAX))
            .map(|v| v as u32)
    }
}

/// A DecCoin: `{denom, amount}` with the amount as a decimal string.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Coin {
    pub denom: Option<String>,
    pub amount: Num,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CreatedDeployment {
    pub dseq: Option<String>,
    pub manifest: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BidItem {
    pub bid: Option<BidBody>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BidBody {
    pub id: Option<BidIdWire>,
    pub state: Option<String>,
    pub price: Option<Coin>,
    pub resources_offer: Vec<ResourceOffer>,
}

/// The id of a bid, and of the lease made from it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BidIdWire {
    pub dseq: Option<String>,
    pub gseq: Num,
    pub oseq: Num,
    pub provider: Option<String>,
    pub bseq: Num,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ResourceOffer {
    pub resources: Option<Resources>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Resources {
    pub gpu: Option<Gpu>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Gpu {
    pub attributes: Vec<Attribute>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Attribute {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// `GET /v1/deployments/{dseq}` and the items of `GET /v1/deployments`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DeploymentInfo {
    pub deployment: Option<DeploymentHead>,
    pub leases: Vec<Lease>,
    pub escrow_account: Option<EscrowAccount>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DeploymentHead {
    pub id: Option<DeploymentId>,
    pub state: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DeploymentId {
    pub owner: Option<String>,
    pub dseq: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Lease {
    pub id: Option<BidIdWire>,
    pub state: Option<String>,
    pub price: Option<Coin>,
    pub reason: Option<String>,
    /// `null` when Console could not reach the provider.
    pub status: Option<LeaseStatusWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LeaseStatusWire {
    pub services: Option<BTreeMap<String, ServiceWire>>,
    pub forwarded_ports: Option<BTreeMap<String, Vec<ForwardedPort>>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ServiceWire {
    pub uris: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ForwardedPort {
    pub host: Option<String>,
    pub port: Num,
    #[serde(rename = "externalPort")]
    pub external_port: Num,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EscrowAccount {
    pub state: Option<EscrowState>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EscrowState {
    pub funds: Vec<Coin>,
    pub settled_at: Num,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DeploymentPage {
    pub deployments: Vec<DeploymentInfo>,
    pub pagination: Option<Pagination>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Pagination {
    pub total: Num,
    #[serde(rename = "hasMore")]
    pub has_more: Option<bool>,
}

/// `GET /v1/deployment/{owner}/{dseq}`: not enveloped; only the group names
/// are read, because they carry the leasegate tag.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DeploymentDetail {
    pub other: Option<DetailOther>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DetailOther {
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Group {
    pub group_spec: Option<GroupSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GroupSpec {
    pub name: Option<String>,
}

/// One item of `GET /v1/providers` (a bare array, not enveloped).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ProviderWire {
    pub owner: Option<String>,
    #[serde(rename = "hostUri")]
    pub host_uri: Option<String>,
    #[serde(rename = "isOnline")]
    pub is_online: Option<bool>,
    #[serde(rename = "isAudited")]
    pub is_audited: Option<bool>,
    pub uptime7d: Num,
    #[serde(rename = "gpuModels")]
    pub gpu_models: Vec<GpuModelWire>,
    #[serde(rename = "locationRegion")]
    pub location_region: Option<String>,
    pub country: Option<String>,
    #[serde(rename = "ipCountryCode")]
    pub ip_country_code: Option<String>,
    pub city: Option<String>,
    #[serde(rename = "ipLat")]
    pub ip_lat: Num,
    #[serde(rename = "ipLon")]
    pub ip_lon: Num,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GpuModelWire {
    pub model: Option<String>,
}

/// One item of `GET /v1/blocks?limit=1`, for the current height.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Block {
    pub height: Num,
}

/// Decodes JSON leniently: a body that is not the expected shape is a
/// protocol error, never a panic.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    body: &[u8],
) -> Result<T, crate::market::MarketError> {
    serde_json::from_slice(body).map_err(|e| {
        crate::market::MarketError::Protocol(format!("{what}: undecodable answer ({e})"))
    })
}
