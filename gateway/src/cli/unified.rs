//! The binary's one config file: the gateway's sections plus the controller's
//! `[controller]`, `[market]` and `[[pools]]`, every problem reported by key path.
//!
//! The gateway library hands the controller's sections back as raw TOML
//! ([`Config::parse_sections`]); they are deserialized here with the
//! controller's own types, so neither library knows the other's config.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use leasegate_controller::{ControllerConfig, Pool, akash::AkashConfig, pool::Backoff};
use serde::Deserialize;

use leasegate_controller::akash::config::ConfigError as AkashConfigError;

use crate::config::{Config, ConfigError, Problem};

/// The sections the controller owns.
pub const CONTROLLER_SECTIONS: &[&str] = &["controller", "market", "pools"];

/// `config/serve.toml`: what `serve` and `controller` run with when a file
/// leaves a section out.
pub const SERVE_DEFAULTS: &str = include_str!("../../../config/serve.toml");

/// Whether sections a file leaves out take the built-in `serve` defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defaults {
    /// `serve` and `controller`: `config/serve.toml` under the file.
    Serve,
    /// `gateway` and `check-config`: only the file (gateway defaults).
    None,
}

/// The parsed file: gateway config and the control plane's settings.
#[derive(Clone, Debug)]
pub struct Unified {
    pub gateway: Config,
    pub control: ControlSettings,
}

/// Everything the control plane runs with.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    pub controller: ControllerSection,
    pub market: MarketSection,
    pub pools: Vec<Pool>,
}

/// `[controller]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// Tags every deployment; a restarted controller adopts only its own.
    #[serde(default = "default_id")]
    pub id: String,
    /// The SQLite state file; see [`ControllerSection::state_path`].
    pub state_file: Option<PathBuf>,
    /// The variable holding the bearer token of the admin `/fleet`.
    #[serde(default = "default_token_env")]
    pub admin_token_env: String,
    /// Admin listener of `leasegate controller`.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// How often the gateway's demand and endpoint reports reach the controller.
    #[serde(default = "default_demand_interval", with = "humantime_serde")]
    pub demand_interval: Duration,
    #[serde(default)]
    pub backoff: Backoff,
}

fn default_id() -> String {
    "leasegate".into()
}
fn default_token_env() -> String {
    "LEASEGATE_ADMIN_TOKEN".into()
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9091))
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_demand_interval() -> Duration {
    Duration::from_secs(2)
}

impl Default for ControllerSection {
    fn default() -> Self {
        Self {
            id: default_id(),
            state_file: None,
            admin_token_env: default_token_env(),
            admin: default_admin(),
            probe_timeout: default_probe_timeout(),
            demand_interval: default_demand_interval(),
            backoff: Backoff::default(),
        }
    }
}

impl ControllerSection {
    /// `state_file`, else `$XDG_STATE_HOME/leasegate/state.sqlite`, else
    /// `./.leasegate/state.sqlite`.
    pub fn state_path(&self) -> PathBuf {
        if let Some(p) = &self.state_file {
            return p.clone();
        }
        match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => Path::new(&dir).join("leasegate").join("state.sqlite"),
            None => Path::new(".leasegate").join("state.sqlite"),
        }
    }
}

/// Which market leases come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MarketKind {
    /// The built-in simulated marketplace (replicas on loopback).
    #[default]
    Sim,
    /// Akash Network through the Console API.
    Akash,
}

/// `[market]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    #[serde(default)]
    pub kind: MarketKind,
    #[serde(default)]
    pub sim: SimSection,
    /// `[market.akash]`: the Console API, required with `kind = "akash"`.
    pub akash: Option<AkashConfig>,
}

/// `[market.sim]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSection {
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Every market delay is divided by this.
    #[serde(default = "default_speedup")]
    pub speedup: f64,
    /// Kill a provider holding a lease this often (demos of failover).
    #[serde(default, with = "humantime_serde")]
    pub chaos_every: Option<Duration>,
    #[serde(default = "default_revive", with = "humantime_serde")]
    pub chaos_revive_after: Duration,
}

fn default_seed() -> u64 {
    1
}
fn default_speedup() -> f64 {
    30.0
}
fn default_revive() -> Duration {
    Duration::from_secs(30)
}

impl Default for SimSection {
    fn default() -> Self {
        Self {
            seed: default_seed(),
            speedup: default_speedup(),
            chaos_every: None,
            chaos_revive_after: default_revive(),
        }
    }
}

impl ControlSettings {
    /// The controller crate's own config.
    pub fn controller_config(&self) -> ControllerConfig {
        ControllerConfig {
            controller_id: self.controller.id.clone(),
            pools: self.pools.clone(),
            backoff: self.controller.backoff.clone(),
        }
    }

    /// Every region code the pools name, for attributing demand.
    pub fn region_codes(&self) -> Vec<String> {
        let mut codes: Vec<String> = self
            .pools
            .iter()
            .flat_map(|p| p.regions.iter().map(|r| r.code.clone()))
            .collect();
        codes.sort();
        codes.dedup();
        codes
    }
}

/// Reads `path` (or nothing) and parses every section.
pub fn load(path: Option<&Path>, defaults: Defaults) -> Result<Unified, ConfigError> {
    let file = path.map_or_else(|| "(built-in)".to_owned(), |p| p.display().to_string());
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![problem("", format!("cannot read: {e}"))],
        })?,
        None => String::new(),
    };
    parse(&text, defaults).map_err(|problems| ConfigError { file, problems })
}

/// Parses text; with [`Defaults::Serve`] each top-level section of `text`
/// replaces the built-in one and the rest are kept.
pub fn parse(text: &str, defaults: Defaults) -> Result<Unified, Vec<Problem>> {
    let text = match defaults {
        Defaults::None => text.to_owned(),
        Defaults::Serve => over_serve_defaults(text)?,
    };
    let sections = Config::parse_sections(&text, CONTROLLER_SECTIONS);
    let mut problems = sections.problems;
    let mut extra = sections.extra;
    let controller = take(&mut extra, "controller", &mut problems).unwrap_or_default();
    // `[market.akash]` is read on its own so that its problems carry its path.
    let akash = match extra.get_mut("market") {
        Some(toml::Value::Table(t)) => t.remove("akash"),
        _ => None,
    };
    let mut market: MarketSection = take(&mut extra, "market", &mut problems).unwrap_or_default();
    market.akash = akash.and_then(|v| from_value(v, "market.akash", &mut problems));
    match &market.akash {
        None if market.kind == MarketKind::Akash => problems.push(problem(
            "market.akash",
            "required with kind = \"akash\" (see config/akash.toml)",
        )),
        Some(a) => {
            if let Err(e) = a.validate() {
                let (path, reason) = match e {
                    AkashConfigError::Invalid { key, reason } => {
                        (format!("market.akash.{key}"), reason)
                    }
                    other => ("market.akash".to_owned(), other.to_string()),
                };
                problems.push(problem(path, reason));
            }
        }
        None => {}
    }
    if !(market.sim.speedup.is_finite() && market.sim.speedup >= 1.0) {
        problems.push(problem("market.sim.speedup", "must be a number >= 1"));
    }
    let pools = pools(extra.remove("pools"), &mut problems);
    match sections.config {
        Some(gateway) if problems.is_empty() => Ok(Unified {
            gateway,
            control: ControlSettings {
                controller,
                market,
                pools,
            },
        }),
        _ => Err(problems),
    }
}

fn problem(path: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        reason: reason.into(),
    }
}

fn over_serve_defaults(text: &str) -> Result<String, Vec<Problem>> {
    let mut base: toml::Table = SERVE_DEFAULTS
        .parse()
        .map_err(|e| vec![problem("", format!("built-in defaults: {e}"))])?;
    let file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![problem("", e.to_string().trim_end())])?;
    base.extend(file);
    toml::to_string(&base).map_err(|e| vec![problem("", format!("cannot merge defaults: {e}"))])
}

fn take<T: serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = table.remove(key)?;
    from_value(value, key, problems)
}

/// Deserializes one value, recording a problem at `key` when it doesn't fit.
fn from_value<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    value
        .try_into()
        .map_err(|e: toml::de::Error| problems.push(problem(key, e.message().trim_end())))
        .ok()
}

/// `[[pools]]`, element by element so each bad pool is reported with its index.
fn pools(value: Option<toml::Value>, problems: &mut Vec<Problem>) -> Vec<Pool> {
    let items = match value {
        None => return Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            problems.push(problem("pools", "expected an array of tables ([[pools]])"));
            return Vec::new();
        }
    };
    let mut out: Vec<Pool> = Vec::new();
    for (i, v) in items.into_iter().enumerate() {
        let at = format!("pools[{i}]");
        let pool: Pool = match v.try_into() {
            Ok(p) => p,
            Err(e) => {
                let e: toml::de::Error = e;
                problems.push(problem(&at, e.message().trim_end()));
                continue;
            }
        };
        if let Err(e) = pool.validate() {
            problems.push(problem(&at, e));
        }
        if out.iter().any(|p| p.name == pool.name) {
            problems.push(problem(
                format!("{at}.name"),
                format!("pool `{}` is defined twice", pool.name),
            ));
        }
        for (j, r) in pool.regions.iter().enumerate() {
            if leasegate_fleet::region::lookup(&r.code).is_none() {
                problems.push(problem(
                    format!("{at}.regions[{j}].code"),
                    format!("unknown region `{}`", r.code),
                ));
            }
        }
        out.push(pool);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_serve_config_has_three_regions() {
        let u = parse("", Defaults::Serve).unwrap();
        assert_eq!(u.control.market.kind, MarketKind::Sim);
        assert_eq!(
            u.control.region_codes(),
            ["as-east", "eu-central", "na-us-west"]
        );
        assert!(u.control.pools.iter().any(|p| p.min_replicas == 3));
    }

    #[test]
    fn a_file_section_replaces_the_default_one_and_others_stay() {
        let u = parse("[listen]\napi = \"127.0.0.1:0\"\n", Defaults::Serve).unwrap();
        assert_eq!(u.gateway.listen.api.port(), 0);
        // The default [listen] is replaced whole: admin is back to the gateway default.
        assert_eq!(u.gateway.listen.admin.port(), 9090);
        assert_eq!(u.control.pools.len(), 2);
        let none = parse("pools = []\n", Defaults::Serve).unwrap();
        assert!(none.control.pools.is_empty());
    }

    #[test]
    fn the_akash_market_needs_its_table() {
        let shown = parse("[market]\nkind = \"akash\"\n", Defaults::Serve).unwrap_err();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(shown[0].to_string().starts_with("market.akash: required"));
    }

    #[test]
    fn problems_of_every_section_are_reported_with_key_paths() {
        let bad = r#"
            [listen]
            api = "nowhere"
            [controller]
            idd = "x"
            [market]
            kind = "akash"
            [market.akash]
            base_url = "ftp://console"
            api_key_env = "K"
            [market.akash.price_caps_usd_per_hour]
            h100 = 3.0
            [[pools]]
            name = "a"
            model = "m"
            engine = "vllm"
            gpu_models = ["h100"]
            min_replicas = 3
            max_replicas = 1
            max_price_per_hour = 1.0
            regions = [{ code = "atlantis" }]
            [[pools]]
            name = "b"
            engine = "vllm"
        "#;
        let shown: Vec<String> = parse(bad, Defaults::None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "listen.api: `nowhere` is not an IP:port",
            "controller: unknown field `idd`",
            "market.akash.base_url: must start with https://",
            "pools[0]: pool \"a\": min_replicas (3) exceeds max_replicas (1)",
            "pools[0].regions[0].code: unknown region `atlantis`",
            "pools[1]: missing field",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(want)),
                "missing `{want}` in {shown:#?}"
            );
        }
        assert_eq!(shown.len(), 6, "{shown:#?}");
    }
}
