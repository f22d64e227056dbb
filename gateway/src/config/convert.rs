//! Raw file to typed config: each section and list element converted on its own, every problem recorded.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use leasegate_fleet::{Credential, Engine};
use serde::de::DeserializeOwned;
use url::Url;

use super::{
    Problems,
    policy::{RawAdmin, convert_admin, convert_keys},
    raw,
    typed::{
        Config, EndpointSpec, FallbackSpec, GeoConfig, Limits, Listen, RegionSpec, RetryConfig,
        Timeouts, TlsFiles,
    },
};
use crate::{health::HealthConfig, route::RoutingConfig};

/// Converts the parsed TOML table; `None` only when problems were recorded.
/// `extra` names sections the caller took out first (they are not unknown).
pub(super) fn convert(mut table: toml::Table, extra: &[&str], p: &mut Problems) -> Option<Config> {
    for key in table.keys() {
        if !raw::SECTIONS.contains(&key.as_str()) {
            let known: Vec<&str> = raw::SECTIONS.iter().chain(extra).copied().collect();
            p.push(
                key.clone(),
                format!("unknown key, expected one of {}", known.join(", ")),
            );
        }
    }
    let listen: raw::Listen = section(&mut table, "listen", p).unwrap_or_default();
    let timeouts: raw::Timeouts = section(&mut table, "timeouts", p).unwrap_or_default();
    let retry: raw::Retry = section(&mut table, "retry", p).unwrap_or_default();
    let limits: raw::Limits = section(&mut table, "limits", p).unwrap_or_default();
    let auth: raw::Auth = section(&mut table, "auth", p).unwrap_or_default();
    let aliases: raw::Aliases = section(&mut table, "aliases", p).unwrap_or_default();
    let health: HealthConfig = section(&mut table, "health", p).unwrap_or_default();
    let geo: raw::Geo = section(&mut table, "geo", p).unwrap_or_default();
    let admin: RawAdmin = section(&mut table, "admin", p).unwrap_or_default();
    let keys = convert_keys(&mut table, auth, p);
    let routing = match table.remove("routing").map(RoutingConfig::from_toml) {
        None => RoutingConfig::default(),
        Some(Ok(r)) => r,
        Some(Err(problems)) => {
            for (path, reason) in problems {
                p.push(path, reason);
            }
            RoutingConfig::default()
        }
    };
    let endpoints: Vec<raw::Endpoint> = list(&mut table, "endpoints", p);
    let fallbacks: Vec<raw::Fallback> = list(&mut table, "fallbacks", p);
    let usage = crate::usage::config::convert(&mut table, p);

    let config = Config {
        listen: convert_listen(listen, p),
        timeouts: convert_timeouts(timeouts, p),
        retry: convert_retry(retry, p),
        limits: convert_limits(limits, p),
        keys,
        admin: convert_admin(admin, p),
        aliases: convert_aliases(aliases, p),
        endpoints: endpoints
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| convert_endpoint(i, e, p))
            .collect(),
        fallbacks: fallbacks
            .into_iter()
            .enumerate()
            .filter_map(|(i, f)| convert_fallback(i, f, p))
            .collect(),
        health,
        geo: convert_geo(geo, p),
        routing,
        usage,
    };
    check_unique_ids(&config, p);
    Some(config)
}

/// Deserializes one top-level table; an absent section is its default.
pub(super) fn section<T: DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    p: &mut Problems,
) -> Option<T> {
    let value = table.remove(key)?;
    value
        .try_into()
        .map_err(|e| p.push(key, serde_reason(&e)))
        .ok()
}

/// Deserializes an array of tables element by element, so each bad element
/// is reported with its index and the good ones still get checked.
fn list<T: DeserializeOwned>(table: &mut toml::Table, key: &str, p: &mut Problems) -> Vec<T> {
    match table.remove(key) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.try_into()
                    .map_err(|e| p.push(format!("{key}[{i}]"), serde_reason(&e)))
                    .ok()
            })
            .collect(),
        Some(_) => {
            p.push(key, "expected an array of tables ([[...]])");
            Vec::new()
        }
    }
}

fn serde_reason(e: &toml::de::Error) -> String {
    e.message().trim_end().to_string()
}

fn addr(path: &str, value: Option<String>, default: &str, p: &mut Problems) -> SocketAddr {
    let fallback = default
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    match value {
        None => fallback,
        Some(v) => v.parse().unwrap_or_else(|e| {
            p.push(path, format!("`{v}` is not an IP:port address ({e})"));
            fallback
        }),
    }
}

pub(crate) fn duration(
    path: &str,
    value: Option<String>,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    let Some(v) = value else { return default };
    match humantime::parse_duration(&v) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            p.push(path, "must be greater than zero");
            default
        }
        Err(e) => {
            p.push(path, format!("`{v}` is not a duration like \"2s\" ({e})"));
            default
        }
    }
}

fn convert_listen(raw: raw::Listen, p: &mut Problems) -> Listen {
    Listen {
        api: addr("listen.api", raw.api, "127.0.0.1:8080", p),
        admin: addr("listen.admin", raw.admin, "127.0.0.1:9090", p),
        tls: raw.tls.map(|t| TlsFiles {
            cert: PathBuf::from(t.cert),
            key: PathBuf::from(t.key),
        }),
    }
}

fn convert_timeouts(raw: raw::Timeouts, p: &mut Problems) -> Timeouts {
    let d = Timeouts::default();
    Timeouts {
        connect: duration("timeouts.connect", raw.connect, d.connect, p),
        headers: duration("timeouts.headers", raw.headers, d.headers, p),
        first_token: duration("timeouts.first_token", raw.first_token, d.first_token, p),
        inter_chunk: duration("timeouts.inter_chunk", raw.inter_chunk, d.inter_chunk, p),
        total: duration("timeouts.total", raw.total, d.total, p),
        header_read: duration("timeouts.header_read", raw.header_read, d.header_read, p),
        drain: duration("timeouts.drain", raw.drain, d.drain, p),
    }
}

fn convert_retry(raw: raw::Retry, p: &mut Problems) -> RetryConfig {
    let d = RetryConfig::default();
    let max_attempts = raw.max_attempts.unwrap_or(d.max_attempts);
    if max_attempts == 0 {
        p.push("retry.max_attempts", "must be at least 1");
    }
    let budget_ratio = raw.budget_ratio.unwrap_or(d.budget_ratio);
    if !(0.0..=1.0).contains(&budget_ratio) {
        p.push("retry.budget_ratio", "must be between 0.0 and 1.0");
    }
    let budget_min_per_sec = raw.budget_min_per_sec.unwrap_or(d.budget_min_per_sec);
    if !(budget_min_per_sec >= 0.0 && budget_min_per_sec.is_finite()) {
        p.push("retry.budget_min_per_sec", "must be a non-negative number");
    }
    RetryConfig {
        max_attempts: max_attempts.max(1),
        budget_ratio,
        budget_min_per_sec,
    }
}

fn convert_limits(raw: raw::Limits, p: &mut Problems) -> Limits {
    let d = Limits::default();
    let positive = |path: &str, v: Option<u64>, default: usize, p: &mut Problems| match v {
        None => default,
        Some(0) => {
            p.push(path, "must be greater than zero");
            default
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Limits {
        max_body_bytes: positive(
            "limits.max_body_bytes",
            raw.max_body_bytes,
            d.max_body_bytes,
            p,
        ),
        max_concurrency: positive(
            "limits.max_concurrency",
            raw.max_concurrency,
            d.max_concurrency,
            p,
        ),
    }
}

fn convert_geo(raw: raw::Geo, p: &mut Problems) -> GeoConfig {
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, net)| {
            net.parse::<ipnet::IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    p.push(
                        format!("geo.trusted_proxies[{i}]"),
                        format!("`{net}` is not an IP or CIDR"),
                    )
                })
                .ok()
        })
        .collect();
    GeoConfig {
        mmdb: raw.mmdb.into_iter().map(PathBuf::from).collect(),
        trusted_proxies,
        allow_region_header: raw.allow_region_header.unwrap_or(true),
    }
}

fn convert_aliases(raw: raw::Aliases, p: &mut Problems) -> BTreeMap<String, String> {
    for (alias, target) in &raw {
        if target.is_empty() {
            p.push(format!("aliases.{alias}"), "target model must not be empty");
        } else if alias == target {
            p.push(format!("aliases.{alias}"), "an alias cannot name itself");
        } else if raw.contains_key(target) {
            p.push(
                format!("aliases.{alias}"),
                format!("target `{target}` is itself an alias; aliases do not chain"),
            );
        }
    }
    raw
}

/// `None` when the URL is unusable; the problem is recorded and conversion
/// goes on to find the rest.
fn url(path: &str, value: &str, p: &mut Problems) -> Option<Url> {
    match Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(u) => {
            p.push(
                path,
                format!("scheme `{}` is not http or https", u.scheme()),
            );
            None
        }
        Err(e) => {
            p.push(path, e);
            None
        }
    }
}

fn region(
    path: &str,
    code: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    p: &mut Problems,
) -> RegionSpec {
    let coords = match (lat, lon) {
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) {
                p.push(format!("{path}.lat"), "must be between -90 and 90");
            }
            if !(-180.0..=180.0).contains(&lon) {
                p.push(format!("{path}.lon"), "must be between -180 and 180");
            }
            Some((lat, lon))
        }
        (None, None) => None,
        _ => {
            p.push(format!("{path}.lat"), "lat and lon go together");
            None
        }
    };
    RegionSpec::resolve(code.unwrap_or_else(|| "unknown".into()), coords)
}

fn credential(path: &str, key_env: Option<String>, p: &mut Problems) -> Option<Credential> {
    let var = key_env?;
    if var.is_empty() || var.contains('=') || var.contains('\0') {
        p.push(path, "not a valid environment variable name");
    }
    Some(Credential::Env { var })
}

fn models(path: &str, models: &[String], p: &mut Problems) {
    if models.is_empty() {
        p.push(path, "at least one model is required");
    }
    if models.iter().any(String::is_empty) {
        p.push(path, "model names must not be empty");
    }
}

fn convert_endpoint(i: usize, e: raw::Endpoint, p: &mut Problems) -> Option<EndpointSpec> {
    let at = format!("endpoints[{i}]");
    models(&format!("{at}.models"), &e.models, p);
    let engine = match e.engine.as_deref() {
        None | Some("vllm") => Engine::Vllm,
        Some("tgi") => Engine::Tgi,
        Some("openai") => Engine::Openai,
        Some(other) => {
            p.push(
                format!("{at}.engine"),
                format!("`{other}` is not one of vllm, tgi, openai"),
            );
            Engine::Vllm
        }
    };
    let price = e.price_per_hour_usd.unwrap_or(0.0);
    if !(price >= 0.0 && price.is_finite()) {
        p.push(
            format!("{at}.price_per_hour_usd"),
            "must be a non-negative number",
        );
    }
    if e.max_concurrency == Some(0) {
        p.push(format!("{at}.max_concurrency"), "must be at least 1");
    }
    let region = region(&at, e.region, e.lat, e.lon, p);
    let credential = credential(&format!("{at}.key_env"), e.key_env, p);
    Some(EndpointSpec {
        id: e.id.unwrap_or_else(|| format!("static-{i}")),
        url: url(&format!("{at}.url"), &e.url, p)?,
        models: e.models,
        engine,
        region,
        price_per_hour_usd: price,
        max_concurrency: e.max_concurrency.unwrap_or(16).max(1),
        credential,
    })
}

fn convert_fallback(i: usize, f: raw::Fallback, p: &mut Problems) -> Option<FallbackSpec> {
    let at = format!("fallbacks[{i}]");
    if f.models.is_empty() {
        p.push(
            format!("{at}.models"),
            "map at least one client model name to an upstream name",
        );
    }
    for (k, v) in &f.models {
        if v.is_empty() {
            p.push(
                format!("{at}.models.{k}"),
                "upstream model name must not be empty",
            );
        }
    }
    for (key, v) in [
        ("price_per_1m_input_usd", f.price_per_1m_input_usd),
        ("price_per_1m_output_usd", f.price_per_1m_output_usd),
    ] {
        if v.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
            p.push(format!("{at}.{key}"), "must be a non-negative number");
        }
    }
    let region = region(&at, f.region, f.lat, f.lon, p);
    let credential = credential(&format!("{at}.key_env"), f.key_env, p);
    Some(FallbackSpec {
        id: f.id.unwrap_or_else(|| format!("fallback-{i}")),
        url: url(&format!("{at}.url"), &f.url, p)?,
        credential,
        models: f.models,
        price_per_1m_input_usd: f.price_per_1m_input_usd.unwrap_or(0.0),
        price_per_1m_output_usd: f.price_per_1m_output_usd.unwrap_or(0.0),
        region,
        max_concurrency: f.max_concurrency.unwrap_or(256).max(1),
    })
}

fn check_unique_ids(config: &Config, p: &mut Problems) {
    let mut seen = std::collections::BTreeSet::new();
    let ids = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("endpoints[{i}].id"), &e.id))
        .chain(
            config
                .fallbacks
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("fallbacks[{i}].id"), &f.id)),
        );
    for (path, id) in ids {
        if !seen.insert(id.clone()) {
            p.push(path, format!("duplicate id `{id}`"));
        }
    }
}
