//! The fleet contract: the versioned set of endpoints the gateway may route to.
//!
//! The controller publishes [`Snapshot`]s; the gateway consumes them. Both
//! depend on this crate and on nothing of each other. A snapshot is immutable
//! once built: a change is a new snapshot with a higher `version`.

pub mod region;

use std::fmt;

use serde::{Deserialize, Serialize};

/// One immutable version of the fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Strictly increasing across publications from one controller.
    pub version: u64,
    /// Milliseconds since the Unix epoch when this version was built.
    pub generated_at_ms: u64,
    pub endpoints: Vec<Endpoint>,
}

impl Snapshot {
    /// The endpoints that may take new requests.
    pub fn ready(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.state == State::Ready)
    }
}

/// A replica (or fallback upstream) that serves one or more models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Stable across snapshots for the same replica.
    pub id: String,
    /// Base URL, e.g. `http://10.0.0.7:8000`; API paths are appended to it.
    pub url: String,
    pub kind: Kind,
    pub engine: Engine,
    /// Model names as the replica serves them.
    pub models: Vec<String>,
    pub region: Region,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// What the endpoint costs while it exists (leases and static endpoints).
    #[serde(default)]
    pub price_per_hour_usd: f64,
    /// A capacity hint: requests the replica serves at once without queueing.
    pub max_concurrency: u32,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
}

impl Endpoint {
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A replica on a rented lease, managed by the controller.
    Lease,
    /// An operator's own replica, listed in config.
    Static,
    /// A hyperscaler or commercial OpenAI-compatible upstream, used last.
    Fallback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Vllm,
    Tgi,
    Openai,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ready,
    /// Finishes what it has in flight and takes nothing new.
    Draining,
}

/// Where an endpoint runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// An Akash `location-region` value or a cloud-style code, e.g. `eu-central`.
    pub code: String,
    /// ISO 3166-1 alpha-2, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub audited: bool,
    /// Fraction of time up over the provider's recent window, 0.0 to 1.0.
    pub uptime: f64,
}

/// How the gateway authenticates to the endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Credential {
    /// Read the key from this environment variable of the gateway process.
    Env { var: String },
    /// The key itself, as generated for a lease. It travels only on the
    /// authenticated fleet feed and the gateway's own snapshot file.
    Key { key: Secret },
}

/// A string that never prints itself.
///
/// `Debug` and `Display` show `[redacted]`. Serialization does carry the
/// value, because the fleet feed must; views meant for people (the admin
/// API, logs, status) must never serialize a `Secret`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, state: State) -> Endpoint {
        Endpoint {
            id: id.into(),
            url: "http://127.0.0.1:1".into(),
            kind: Kind::Lease,
            engine: Engine::Vllm,
            models: vec!["m".into()],
            region: Region {
                code: "eu-central".into(),
                country: Some("DE".into()),
                lat: 50.1,
                lon: 8.7,
            },
            provider: None,
            price_per_hour_usd: 1.7,
            max_concurrency: 8,
            state,
            credential: Some(Credential::Key {
                key: Secret::new("sk-replica-123"),
            }),
        }
    }

    #[test]
    fn secret_never_prints_itself() {
        let e = endpoint("a", State::Ready);
        let shown = format!("{e:?}");
        assert!(!shown.contains("sk-replica-123"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn snapshot_round_trips_through_json_with_the_key() {
        let s = Snapshot {
            version: 7,
            generated_at_ms: 1,
            endpoints: vec![endpoint("a", State::Ready), endpoint("b", State::Draining)],
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let ready: Vec<_> = back.ready().map(|e| e.id.as_str()).collect();
        assert_eq!(ready, ["a"]);
    }
}
