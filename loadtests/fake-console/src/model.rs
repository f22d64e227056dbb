//! The fake marketplace state and the spec-shaped JSON built from it.
//!
//! Time is tokio time, so tests with a paused clock drive bid arrival, bid
//! expiry and escrow drain. Everything is evaluated lazily on access (no
//! background tasks): the state at an instant is a pure function of what
//! happened before it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The fake wallet that owns every deployment.
pub const OWNER: &str = "akash1fakeconsole0managed0wallet0000000000000";
/// Chain height at the fake's start.
const BASE_HEIGHT: f64 = 1_000_000.0;
const BLOCK_SECONDS: f64 = 6.0;

/// A provider the fake market simulates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct FakeProvider {
    pub owner: String,
    pub host_uri: String,
    pub region: String,
    pub country: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
    pub audited: bool,
    pub online: bool,
    pub uptime7d: f64,
    pub gpu_model: String,
    /// Bid price, uact per block.
    pub price_uact: f64,
    /// When its bid appears after the deployment is created.
    #[serde(with = "millis")]
    pub bid_delay: Duration,
}

impl Default for FakeProvider {
    fn default() -> Self {
        Self {
            owner: "akash1provider0".into(),
            host_uri: "https://provider.example:8443".into(),
            region: "eu-central".into(),
            country: "DE".into(),
            city: "Frankfurt".into(),
            lat: 50.11,
            lon: 8.68,
            audited: true,
            online: true,
            uptime7d: 0.99,
            gpu_model: "h100".into(),
            price_uact: 4517.0,
            bid_delay: Duration::from_secs(5),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What the fake read out of a submitted SDL.
#[derive(Clone, Debug, Default)]
pub struct SdlFacts {
    pub group: String,
    pub service: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub expose_as: u64,
    pub gpu_models: Vec<String>,
    pub price_cap: f64,
    pub region: Option<String>,
}

impl SdlFacts {
    /// Parses the parts of an SDL the fake acts on; `Err` is a 400.
    pub fn parse(sdl: &str) -> Result<Self, String> {
        let v: serde_yaml::Value =
            serde_yaml::from_str(sdl).map_err(|e| format!("invalid SDL YAML: {e}"))?;
        let get = |v: &serde_yaml::Value, k: &str| v.get(k).cloned();
        let strings = |v: Option<serde_yaml::Value>| -> Vec<String> {
            v.and_then(|v| v.as_sequence().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let services = v
            .get("services")
            .and_then(|s| s.as_mapping())
            .ok_or("SDL has no services")?;
        let (service, svc) = services.iter().next().ok_or("SDL has no services")?;
        let service = service.as_str().unwrap_or_default().to_owned();
        let placement = v
            .get("profiles")
            .and_then(|p| p.get("placement"))
            .and_then(|p| p.as_mapping())
            .ok_or("SDL has no placement")?;
        let (group, place) = placement.iter().next().ok_or("SDL has no placement")?;
        let price_cap = place
            .get("pricing")
            .and_then(|p| p.as_mapping())
            .and_then(|m| m.values().next().cloned())
            .and_then(|c| get(&c, "amount"))
            .and_then(|a| a.as_f64().or_else(|| a.as_str()?.parse().ok()))
            .ok_or("SDL has no price")?;
        let region = place
            .get("attributes")
            .and_then(|a| a.get("location-region"))
            .and_then(|r| r.as_str().map(str::to_owned));
        let mut gpu_models = Vec::new();
        if let Some(compute) = v
            .get("profiles")
            .and_then(|p| p.get("compute"))
            .and_then(|c| c.as_mapping())
        {
            for prof in compute.values() {
                let list = prof
                    .get("resources")
                    .and_then(|r| r.get("gpu"))
                    .and_then(|g| g.get("attributes"))
                    .and_then(|a| a.get("vendor"))
                    .and_then(|v| v.get("nvidia"))
                    .and_then(|n| n.as_sequence().cloned())
                    .unwrap_or_default();
                gpu_models.extend(
                    list.iter()
                        .filter_map(|g| g.get("model")?.as_str().map(str::to_ascii_lowercase)),
                );
            }
        }
        let expose_as = svc
            .get("expose")
            .and_then(|e| e.as_sequence())
            .and_then(|e| e.first())
            .and_then(|e| e.get("as").or_else(|| e.get("port")))
            .and_then(serde_yaml::Value::as_u64)
            .unwrap_or(80);
        Ok(Self {
            group: group.as_str().unwrap_or_default().to_owned(),
            service,
            image: svc
                .get("image")
                .and_then(|i| i.as_str())
                .unwrap_or_default()
                .to_owned(),
            args: strings(get(svc, "args")),
            env: strings(get(svc, "env")),
            expose_as,
            gpu_models,
            price_cap,
            region,
        })
    }

    /// The replica key: `--api-key K` (vLLM) or `API_KEY=K` (TGI).
    pub fn replica_key(&self) -> Option<String> {
        let from_args = self
            .args
            .iter()
            .position(|a| a == "--api-key")
            .and_then(|i| self.args.get(i + 1).cloned());
        from_args.or_else(|| {
            self.env
                .iter()
                .find_map(|e| e.strip_prefix("API_KEY=").map(str::to_owned))
        })
    }

    pub fn is_tgi(&self) -> bool {
        self.args.iter().any(|a| a == "--model-id")
    }

    /// The model name clients use.
    pub fn model(&self) -> String {
        for flag in ["--served-model-name", "--model", "--model-id"] {
            if let Some(i) = self.args.iter().position(|a| a == flag)
                && let Some(m) = self.args.get(i + 1)
            {
                return m.clone();
            }
        }
        "sim-model".into()
    }

    /// A manifest in the chain SDK's shape, carrying what the provider needs.
    pub fn manifest(&self) -> String {
        json!([{
            "name": self.group,
            "services": [{
                "name": self.service,
                "image": self.image,
                "args": self.args,
                "env": self.env,
                "count": 1,
                "expose": [{"port": 8000, "externalPort": self.expose_as, "global": true, "proto": "TCP"}],
            }],
        }])
        .to_string()
    }
}

#[derive(Debug)]
pub struct LeaseRec {
    pub provider: String,
    pub price: f64,
    pub created: Instant,
    pub closed: Option<(Instant, String)>,
    pub state: &'static str,
    pub replica: Option<Arc<leasegate_replica_sim::Replica>>,
    pub replica_url: Option<String>,
}

#[derive(Debug)]
pub struct Dep {
    pub dseq: u64,
    pub facts: SdlFacts,
    pub created: Instant,
    pub closed: Option<(Instant, String)>,
    pub funds: f64,
    pub settled_height: f64,
    pub lease: Option<LeaseRec>,
    pub unreachable: bool,
    pub auto_top_up: bool,
}

/// The fake's whole state, behind one lock that is never held across an await.
#[derive(Debug)]
pub struct World {
    pub start: Instant,
    pub next_dseq: u64,
    pub deps: BTreeMap<u64, Dep>,
    pub providers: Vec<FakeProvider>,
    pub bid_ttl: Duration,
    pub initial_funds_uact: f64,
}

fn ms(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// An ISO-ish timestamp from tokio time, stable under a paused clock.
fn stamp(start: Instant, t: Instant) -> String {
    let s = t.saturating_duration_since(start).as_secs();
    format!(
        "2026-01-01T{:02}:{:02}:{:02}.000Z",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

fn coin(denom: &str, amount: f64) -> Value {
    json!({"denom": denom, "amount": format!("{amount:.18}")})
}

impl World {
    pub fn height(&self, now: Instant) -> f64 {
        (BASE_HEIGHT + now.saturating_duration_since(self.start).as_secs_f64() / BLOCK_SECONDS)
            .floor()
    }

    /// Applies escrow drain up to `now`: an overdrawn escrow closes the lease
    /// with `insufficient_funds` and the deployment with it.
    pub fn tick(&mut self, now: Instant) {
        let h = self.height(now);
        for d in self.deps.values_mut() {
            if d.closed.is_some() {
                continue;
            }
            let Some(l) = d.lease.as_mut().filter(|l| l.closed.is_none()) else {
                continue;
            };
            if d.funds - l.price * (h - d.settled_height) <= 0.0 {
                l.state = "insufficient_funds";
                l.closed = Some((now, "insufficient_funds".into()));
                l.replica = None;
                d.closed = Some((now, "insufficient_funds".into()));
            }
        }
    }

    pub fn funds_left(&self, d: &Dep, now: Instant) -> f64 {
        let rate = d
            .lease
            .as_ref()
            .filter(|l| l.closed.is_none())
            .map_or(0.0, |l| l.price);
        (d.funds - rate * (self.height(now) - d.settled_height)).max(0.0)
    }

    /// Providers that bid on a deployment: GPU model wanted, price under cap.
    pub fn bidders(&self, d: &Dep) -> Vec<(usize, &FakeProvider)> {
        self.providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.online && d.facts.gpu_models.contains(&p.gpu_model))
            .filter(|(_, p)| p.price_uact <= d.facts.price_cap)
            .filter(|(_, p)| d.facts.region.as_ref().is_none_or(|r| *r == p.region))
            .collect()
    }

    fn escrow_json(&self, d: &Dep, now: Instant) -> Value {
        json!({
            "id": {"scope": "deployment", "xid": format!("{OWNER}/{}", d.dseq)},
            "state": {
                "owner": OWNER,
                "state": if d.closed.is_some() { "closed" } else { "open" },
                "transferred": [coin("uact", d.funds - self.funds_left(d, now))],
                "settled_at": format!("{}", d.settled_height),
                "funds": [coin("uact", d.funds)],
                "deposits": [{"owner": OWNER, "height": format!("{}", BASE_HEIGHT), "source": "balance",
                              "balance": coin("uact", d.funds)}],
            },
        })
    }

    fn head_json(&self, d: &Dep) -> Value {
        json!({
            "id": {"owner": OWNER, "dseq": d.dseq.to_string()},
            "state": if d.closed.is_some() { "closed" } else { "active" },
            "hash": format!("fakehash{:08x}", d.dseq),
            "created_at": stamp(self.start, d.created),
        })
    }

    fn lease_json(&self, d: &Dep, l: &LeaseRec, with_status: bool) -> Value {
        let mut v = json!({
            "id": {"owner": OWNER, "dseq": d.dseq.to_string(), "gseq": 1, "oseq": 1, "provider": l.provider, "bseq": 1},
            "state": l.state,
            "price": coin("uact", l.price),
            "created_at": stamp(self.start, l.created),
            "closed_on": l.closed.as_ref().map(|(t, _)| stamp(self.start, *t)).unwrap_or_default(),
        });
        if let Some((_, reason)) = &l.closed {
            v["reason"] = json!(reason);
        }
        if with_status {
            v["status"] = self.lease_status_json(d, l);
        }
        v
    }

    /// The provider's live view: `null` when unreachable, and the simulated
    /// replica's address as an ingress URI (`as: 80`) or a forwarded port.
    fn lease_status_json(&self, d: &Dep, l: &LeaseRec) -> Value {
        if d.unreachable || l.closed.is_some() {
            return Value::Null;
        }
        let Some(url) = &l.replica_url else {
            return json!({"forwarded_ports": {}, "ips": {}, "services": {}});
        };
        let hostport = url.trim_start_matches("http://");
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "0"));
        let port: u64 = port.parse().unwrap_or(0);
        let ingress = d.facts.expose_as == 80;
        let service = json!({
            "name": d.facts.service, "available": 1, "total": 1,
            "uris": if ingress { vec![hostport.to_owned()] } else { Vec::new() },
            "observed_generation": 1, "replicas": 1, "updated_replicas": 1,
            "ready_replicas": 1, "available_replicas": 1,
        });
        let mut fwd = serde_json::Map::new();
        if !ingress {
            fwd.insert(
                d.facts.service.clone(),
                json!([{"host": host, "port": 8000, "externalPort": port, "available": 1}]),
            );
        }
        json!({"forwarded_ports": fwd, "ips": {}, "services": {d.facts.service.clone(): service}})
    }

    /// `GET /v1/deployments/{dseq}` data, also the answer to leases and deposits.
    pub fn deployment_json(&self, d: &Dep, now: Instant) -> Value {
        json!({
            "deployment": self.head_json(d),
            "leases": d.lease.iter().map(|l| self.lease_json(d, l, true)).collect::<Vec<_>>(),
            "escrow_account": self.escrow_json(d, now),
        })
    }

    /// An item of `GET /v1/deployments` (no live status there).
    pub fn list_item_json(&self, d: &Dep, now: Instant) -> Value {
        json!({
            "deployment": self.head_json(d),
            "leases": d.lease.iter().map(|l| self.lease_json(d, l, false)).collect::<Vec<_>>(),
            "escrow_account": self.escrow_json(d, now),
        })
    }

    fn resources_json(&self, d: &Dep, model: &str) -> Value {
        let _ = d;
        json!({
            "cpu": {"units": {"val": "8000"}, "attributes": []},
            "gpu": {"units": {"val": "1"}, "attributes": [
                {"key": format!("vendor/nvidia/model/{model}"), "value": "true"},
                {"key": format!("vendor/nvidia/model/{model}/ram/80Gi"), "value": "true"}]},
            "memory": {"quantity": {"val": "68719476736"}, "attributes": []},
            "storage": [{"name": "default", "quantity": {"val": "107374182400"}, "attributes": []}],
            "endpoints": [{"kind": "SHARED_HTTP", "sequence_number": 0}],
        })
    }

    /// `GET /v1/bids?dseq=` data: bids appear after each provider's delay,
    /// expire after the bid TTL, and turn `active`/`lost` once a lease exists.
    pub fn bids_json(&self, d: &Dep, now: Instant) -> Vec<Value> {
        let age = now.saturating_duration_since(d.created);
        self.bidders(d)
            .into_iter()
            .filter(|(_, p)| age >= p.bid_delay)
            .map(|(i, p)| {
                let state = match (&d.lease, &d.closed) {
                    (_, Some(_)) => "closed",
                    (Some(l), _) if l.provider == p.owner => "active",
                    (Some(_), _) => "lost",
                    (None, _) if age >= p.bid_delay + self.bid_ttl => "closed",
                    (None, _) => "open",
                };
                json!({
                    "bid": {
                        "id": {"owner": OWNER, "dseq": d.dseq.to_string(), "gseq": 1, "oseq": 1, "provider": p.owner, "bseq": i + 1},
                        "state": state,
                        "price": coin("uact", p.price_uact),
                        "created_at": stamp(self.start, d.created + p.bid_delay),
                        "resources_offer": [{"resources": self.resources_json(d, &p.gpu_model), "count": 1}],
                    },
                    "escrow_account": {
                        "id": {"scope": "bid", "xid": format!("{}/{}", p.owner, d.dseq)},
                        "state": {"owner": p.owner, "state": "open", "transferred": [], "settled_at": "0",
                                  "funds": [], "deposits": []},
                    },
                })
            })
            .collect()
    }

    /// `GET /v1/deployment/{owner}/{dseq}`: the indexer view with group names.
    pub fn detail_json(&self, d: &Dep, now: Instant) -> Value {
        let leases: Vec<Value> = d.lease.iter().map(|l| json!({
            "gseq": 1, "oseq": 1,
            "provider": {"address": l.provider, "hostUri": "https://provider.example:8443", "isDeleted": false, "attributes": []},
            "status": l.state, "monthlyCostUDenom": l.price * 432_000.0,
            "cpuUnits": 8, "gpuUnits": 1, "memoryQuantity": 68_719_476_736u64, "storageQuantity": 107_374_182_400u64,
        })).collect();
        let signed = json!({"all_of": [], "any_of": []});
        let attrs: Vec<Value> = d
            .facts
            .region
            .iter()
            .map(|r| json!({"key": "location-region", "value": r}))
            .collect();
        json!({
            "owner": OWNER,
            "dseq": d.dseq.to_string(),
            "balance": self.funds_left(d, now),
            "denom": "uact",
            "status": if d.closed.is_some() { "closed" } else { "active" },
            "totalMonthlyCostUDenom": d.lease.as_ref().map_or(0.0, |l| l.price * 432_000.0),
            "leases": leases,
            "events": [],
            "other": {
                "deployment": self.head_json(d),
                "groups": [{
                    "id": {"owner": OWNER, "dseq": d.dseq.to_string(), "gseq": 1},
                    "state": if d.closed.is_some() { "closed" } else { "open" },
                    "group_spec": {
                        "name": d.facts.group,
                        "requirements": {"signed_by": signed, "attributes": attrs},
                        "resources": [{
                            "resource": {"id": 1, "cpu": {"units": {"val": "8000"}, "attributes": []},
                                "memory": {"quantity": {"val": "68719476736"}, "attributes": []},
                                "storage": [{"name": "default", "quantity": {"val": "107374182400"}, "attributes": []}],
                                "gpu": {"units": {"val": "1"}, "attributes": []},
                                "endpoints": [{"kind": "SHARED_HTTP", "sequence_number": 0}]},
                            "count": 1,
                            "price": coin("uact", d.facts.price_cap),
                        }],
                    },
                    "created_at": stamp(self.start, d.created),
                }],
                "escrow_account": self.escrow_json(d, now),
            },
        })
    }

    pub fn provider_json(p: &FakeProvider) -> Value {
        json!({
            "owner": p.owner, "name": p.owner, "hostUri": p.host_uri, "createdHeight": 1,
            "email": null, "website": null, "lastCheckDate": null, "deploymentCount": 0, "leaseCount": 0,
            "cosmosSdkVersion": "v0.53.0", "akashVersion": "v1.0.0",
            "ipRegion": null, "ipRegionCode": null, "ipCountry": null, "ipCountryCode": p.country,
            "ipLat": p.lat.to_string(), "ipLon": p.lon.to_string(),
            "uptime1d": p.uptime7d, "uptime7d": p.uptime7d, "uptime30d": p.uptime7d,
            "isValidVersion": true, "isOnline": p.online, "lastOnlineDate": null, "isAudited": p.audited,
            "gpuModels": [{"vendor": "nvidia", "model": p.gpu_model, "ram": "80Gi", "interface": "SXM"}],
            "attributes": [{"key": "location-region", "value": p.region, "auditedBy": []}],
            "host": null, "organization": null, "statusPage": null,
            "locationRegion": p.region, "country": p.country, "city": p.city, "timezone": null,
            "locationType": null, "hostingProvider": null, "hardwareCpu": null, "hardwareCpuArch": null,
            "hardwareGpuVendor": "nvidia", "hardwareGpuModels": [p.gpu_model], "hardwareDisk": null,
            "featPersistentStorage": false, "featPersistentStorageType": null, "hardwareMemory": null,
            "networkProvider": null, "networkSpeedDown": 1000, "networkSpeedUp": 1000, "tier": null,
            "featEndpointCustomDomain": false, "workloadSupportChia": false,
            "workloadSupportChiaCapabilities": null, "featEndpointIp": false,
        })
    }

    pub fn ledger(&self) -> Ledger {
        Ledger {
            deployments: self
                .deps
                .values()
                .map(|d| LedgerDeployment {
                    dseq: d.dseq.to_string(),
                    owner: OWNER.into(),
                    group_name: d.facts.group.clone(),
                    created_ms: ms(self.start, d.created),
                    closed_ms: d.closed.as_ref().map(|(t, _)| ms(self.start, *t)),
                    close_reason: d.closed.as_ref().map(|(_, r)| r.clone()),
                    leases: d
                        .lease
                        .iter()
                        .map(|l| LedgerLease {
                            provider: l.provider.clone(),
                            state: l.state.into(),
                            created_ms: ms(self.start, l.created),
                            closed_ms: l.closed.as_ref().map(|(t, _)| ms(self.start, *t)),
                            close_reason: l.closed.as_ref().map(|(_, r)| r.clone()),
                            replica_url: l.replica_url.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Everything the fake holds, for chaos checks: orphans and doubles show
/// up as open deployments or several leases per owner tag.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ledger {
    pub deployments: Vec<LedgerDeployment>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LedgerDeployment {
    pub dseq: String,
    pub owner: String,
    /// The placement group name: leasegate's owner tag (controller + intent).
    pub group_name: String,
    /// Milliseconds since the fake started (tokio time).
    pub created_ms: u64,
    pub closed_ms: Option<u64>,
    pub close_reason: Option<String>,
    pub leases: Vec<LedgerLease>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LedgerLease {
    pub provider: String,
    pub state: String,
    pub created_ms: u64,
    pub closed_ms: Option<u64>,
    pub close_reason: Option<String>,
    pub replica_url: Option<String>,
}
