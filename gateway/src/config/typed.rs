//! Typed configuration: the values the gateway runs with, parsed from the raw file.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use leasegate_fleet::{Credential, Endpoint, Engine, Kind, Region, State};
use url::Url;

use super::AdminConfig;
use crate::{health::HealthConfig, policy::KeySet, route::RoutingConfig};

/// The whole gateway configuration, ready to use.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Listen,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub limits: Limits,
    /// Client keys with their limits; empty means no key is required.
    pub keys: KeySet,
    pub admin: AdminConfig,
    /// Client-facing name to the model name of the pool that serves it.
    pub aliases: BTreeMap<String, String>,
    pub endpoints: Vec<EndpointSpec>,
    pub fallbacks: Vec<FallbackSpec>,
    pub health: HealthConfig,
    pub geo: GeoConfig,
    /// Weights, explain switch and per-pool overrides of the scoring selector.
    pub routing: RoutingConfig,
    /// Overflow modes and SLOs per pool, and the fallback spend caps.
    pub usage: crate::usage::config::UsageConfig,
}

/// Locating clients for geographic routing.
#[derive(Clone, Debug)]
pub struct GeoConfig {
    /// GeoLite2/DB-IP City mmdb files; none means no GeoIP term.
    pub mmdb: Vec<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether `x-leasegate-region` may name the client's region.
    pub allow_region_header: bool,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            mmdb: Vec::new(),
            trusted_proxies: Vec::new(),
            allow_region_header: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Listen {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<TlsFiles>,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Upstream and client timeouts.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP (and TLS) connect to an upstream.
    pub connect: Duration,
    /// Non-streaming: until the upstream's response headers. An engine sends
    /// them only after generating the whole answer, so this is long; it is
    /// also what a blackholed replica costs a non-streaming request.
    pub headers: Duration,
    /// Streaming: until the headers and the first chunk. Nothing reached the
    /// client yet, so a miss still fails over.
    pub first_token: Duration,
    /// Streaming: the longest silence between two chunks before the stream
    /// is ended with an SSE error event.
    pub inter_chunk: Duration,
    /// A whole request, first attempt to last byte.
    pub total: Duration,
    /// A client must send its first byte within this, then its request head
    /// within this again.
    pub header_read: Duration,
    /// On shutdown, how long in-flight requests and streams may finish.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            headers: Duration::from_secs(120),
            first_token: Duration::from_secs(30),
            inter_chunk: Duration::from_secs(30),
            total: Duration::from_secs(600),
            header_read: Duration::from_secs(10),
            drain: Duration::from_secs(30),
        }
    }
}

/// Bounds on failover.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retries may add at most this fraction of requests as extra load ...
    pub budget_ratio: f64,
    /// ... plus this many retries per second, so a quiet gateway can still fail over.
    pub budget_min_per_sec: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_sec: 5.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Requests handled at once; beyond it the answer is 503 with `Retry-After`.
    pub max_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_concurrency: 4096,
        }
    }
}

/// Where an endpoint runs. Coordinates come from config or, for a known
/// region code, from the region catalogue; an endpoint with neither gets no
/// geography term when routing.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionSpec {
    pub code: String,
    pub country: Option<String>,
    pub coords: Option<(f64, f64)>,
}

impl RegionSpec {
    /// Fills coordinates and country from the catalogue where config left them out.
    pub fn resolve(code: String, coords: Option<(f64, f64)>) -> Self {
        let known = leasegate_fleet::region::lookup(&code);
        Self {
            country: known.and_then(|r| r.country).map(str::to_owned),
            coords: coords.or(known.map(|r| (r.lat, r.lon))),
            code,
        }
    }

    /// The fleet contract requires numbers; unknown coordinates travel as NaN,
    /// which the route scorer treats as "no geography".
    pub fn to_fleet(&self) -> Region {
        let (lat, lon) = self.coords.unwrap_or((f64::NAN, f64::NAN));
        Region {
            code: self.code.clone(),
            country: self.country.clone(),
            lat,
            lon,
        }
    }
}

/// A static replica from config.
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub id: String,
    pub url: Url,
    pub models: Vec<String>,
    pub engine: Engine,
    pub region: RegionSpec,
    pub price_per_hour_usd: f64,
    pub max_concurrency: u32,
    pub credential: Option<Credential>,
}

impl EndpointSpec {
    pub fn to_fleet(&self) -> Endpoint {
        Endpoint {
            id: self.id.clone(),
            url: base_url(&self.url),
            kind: Kind::Static,
            engine: self.engine,
            models: self.models.clone(),
            region: self.region.to_fleet(),
            provider: None,
            price_per_hour_usd: self.price_per_hour_usd,
            max_concurrency: self.max_concurrency,
            state: State::Ready,
            credential: self.credential.clone(),
        }
    }
}

/// An OpenAI-compatible upstream used when the fleet cannot serve.
#[derive(Clone, Debug)]
pub struct FallbackSpec {
    pub id: String,
    pub url: Url,
    pub credential: Option<Credential>,
    /// Client-facing model name to the upstream's own name for it.
    pub models: BTreeMap<String, String>,
    pub price_per_1m_input_usd: f64,
    pub price_per_1m_output_usd: f64,
    pub region: RegionSpec,
    pub max_concurrency: u32,
}

impl FallbackSpec {
    pub fn to_fleet(&self) -> Endpoint {
        Endpoint {
            id: self.id.clone(),
            url: base_url(&self.url),
            kind: Kind::Fallback,
            engine: Engine::Openai,
            models: self.models.keys().cloned().collect(),
            region: self.region.to_fleet(),
            provider: None,
            price_per_hour_usd: 0.0,
            max_concurrency: self.max_concurrency,
            state: State::Ready,
            credential: self.credential.clone(),
        }
    }

    /// The name to send upstream when it differs from the client's.
    pub fn upstream_model(&self, client_model: &str) -> Option<&str> {
        self.models
            .get(client_model)
            .map(String::as_str)
            .filter(|m| *m != client_model)
    }
}

/// API paths (`/v1/...`) are appended to a base, so a trailing `/v1` or `/`
/// as written in an OpenAI-style base URL is dropped.
pub fn base_url(url: &Url) -> String {
    let s = url.as_str().trim_end_matches('/');
    s.strip_suffix("/v1").unwrap_or(s).to_string()
}
