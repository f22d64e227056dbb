//! The config file as written: serde structs that mirror the TOML, strings not yet parsed.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Top-level sections; each is deserialized on its own so one bad section
/// does not hide the problems of the next.
pub const SECTIONS: &[&str] = &[
    "listen",
    "timeouts",
    "retry",
    "limits",
    "auth",
    "aliases",
    "health",
    "geo",
    "routing",
    "endpoints",
    "fallbacks",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub api: Option<String>,
    pub admin: Option<String>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<String>,
    pub headers: Option<String>,
    pub first_token: Option<String>,
    pub inter_chunk: Option<String>,
    pub total: Option<String>,
    pub header_read: Option<String>,
    pub drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: Option<u32>,
    pub budget_ratio: Option<f64>,
    pub budget_min_per_sec: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: Option<u64>,
    pub max_concurrency: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Lowercase hex SHA-256 digests of the accepted client keys.
    #[serde(default)]
    pub client_key_sha256: Vec<String>,
}

pub type Aliases = BTreeMap<String, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    #[serde(default)]
    pub mmdb: Vec<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub allow_region_header: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub id: Option<String>,
    pub url: String,
    pub models: Vec<String>,
    pub engine: Option<String>,
    pub region: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub price_per_hour_usd: Option<f64>,
    pub max_concurrency: Option<u32>,
    pub key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    pub id: Option<String>,
    pub url: String,
    pub key_env: Option<String>,
    /// Client-facing model name to the name this upstream knows it by.
    pub models: BTreeMap<String, String>,
    pub price_per_1m_input_usd: Option<f64>,
    pub price_per_1m_output_usd: Option<f64>,
    pub region: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub max_concurrency: Option<u32>,
}
