//! The `[routing]` section: global weights, the explain switch and per-pool overrides.
//!
//! ```toml
//! [routing]
//! load_ms = 100.0            # any RoutingWeights field: the default for every pool
//! explain_headers = true     # x-leasegate-endpoint / -region / -tier on answers
//!
//! [routing.pools.llama-3.1-8b-instruct]   # a pool, or an alias of one
//! load_ms = 50.0             # overrides the global weight for this pool only
//! affinity = "user"          # or "header:x-session-id"
//! affinity_max_load = 0.9    # above this load the sticky endpoint is skipped
//! regions = ["eu"]           # residency: region codes or continent codes
//! ```

use std::collections::BTreeMap;

use http::HeaderName;
use leasegate_fleet::region::{self, Continent};

use crate::route::RoutingWeights;

/// Keys of a pool table that are not weights.
const POOL_KEYS: &[&str] = &["affinity", "affinity_max_load", "regions"];
/// Keys of `[routing]` that are not weights.
const TOP_KEYS: &[&str] = &["explain_headers", "pools"];

/// The typed `[routing]` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingConfig {
    /// Weights of every pool without its own table.
    pub weights: RoutingWeights,
    /// Adds `x-leasegate-endpoint`, `x-leasegate-region` and
    /// `x-leasegate-tier` to proxied answers.
    pub explain_headers: bool,
    /// Per pool (or alias) name, as written.
    pub pools: BTreeMap<String, PoolRouting>,
}

/// Routing settings of one pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolRouting {
    /// The global weights with this pool's overrides applied.
    pub weights: RoutingWeights,
    pub affinity: Option<AffinitySource>,
    /// Load (in flight / capacity) at which affinity yields to scoring.
    pub affinity_max_load: f64,
    /// Residency: the region codes this pool may be served in, continents
    /// expanded through the catalogue. `None` means anywhere.
    pub regions: Option<Vec<String>>,
}

/// Where a request's affinity key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AffinitySource {
    /// The body's `user` field.
    User,
    /// A request header, e.g. `x-session-id`.
    Header(HeaderName),
}

/// A problem in the section: key path (from `routing`) and reason.
pub type RoutingProblem = (String, String);

impl RoutingConfig {
    /// Converts the `[routing]` table, reporting every problem with its key path.
    pub fn from_toml(value: toml::Value) -> Result<Self, Vec<RoutingProblem>> {
        let mut problems = Vec::new();
        let toml::Value::Table(mut table) = value else {
            return Err(vec![("routing".into(), "expected a table".into())]);
        };
        let explain_headers = match table.remove("explain_headers") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => {
                problems.push((
                    "routing.explain_headers".into(),
                    "expected true or false".into(),
                ));
                false
            }
        };
        let raw_pools = table.remove("pools");
        let weights = weights_from("routing", table.clone(), &mut problems);
        let mut pools = BTreeMap::new();
        match raw_pools {
            None => {}
            Some(toml::Value::Table(raw)) => {
                for (name, v) in raw {
                    let at = format!("routing.pools.{name}");
                    let toml::Value::Table(t) = v else {
                        problems.push((at, "expected a table".into()));
                        continue;
                    };
                    if let Some(p) = pool(&at, &table, t, &mut problems) {
                        pools.insert(name, p);
                    }
                }
            }
            Some(_) => problems.push(("routing.pools".into(), "expected a table".into())),
        }
        if problems.is_empty() {
            Ok(Self {
                weights,
                explain_headers,
                pools,
            })
        } else {
            Err(problems)
        }
    }
}

/// Deserializes and validates weights from a table of weight keys only.
fn weights_from(
    at: &str,
    table: toml::Table,
    problems: &mut Vec<RoutingProblem>,
) -> RoutingWeights {
    let weights: RoutingWeights = match toml::Value::Table(table).try_into() {
        Ok(w) => w,
        Err(e) => {
            let mut keys = TOP_KEYS.to_vec();
            if at != "routing" {
                keys = POOL_KEYS.to_vec();
            }
            problems.push((
                at.to_owned(),
                format!(
                    "{} (besides weights: {})",
                    e.message().trim_end(),
                    keys.join(", ")
                ),
            ));
            return RoutingWeights::default();
        }
    };
    if let Err(e) = weights.validate() {
        problems.push((format!("{at}.{}", e.field), e.to_string()));
    }
    weights
}

/// One `[routing.pools.NAME]` table: its own keys, then its weights laid
/// over the global ones so an override names only what differs.
fn pool(
    at: &str,
    global: &toml::Table,
    mut t: toml::Table,
    problems: &mut Vec<RoutingProblem>,
) -> Option<PoolRouting> {
    let before = problems.len();
    let affinity = match t.remove("affinity") {
        None => None,
        Some(toml::Value::String(s)) => parse_affinity(&s)
            .map_err(|why| problems.push((format!("{at}.affinity"), why)))
            .ok(),
        Some(_) => {
            problems.push((format!("{at}.affinity"), "expected a string".into()));
            None
        }
    };
    let affinity_max_load = match t.remove("affinity_max_load") {
        None => 0.9,
        Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
            Some(f) if f.is_finite() && f > 0.0 => f,
            _ => {
                problems.push((
                    format!("{at}.affinity_max_load"),
                    "expected a number > 0 (1.0 = full load)".into(),
                ));
                0.9
            }
        },
    };
    let regions = match t.remove("regions") {
        None => None,
        Some(toml::Value::Array(items)) => Some(residency(at, &items, problems)),
        Some(_) => {
            problems.push((
                format!("{at}.regions"),
                "expected a list of region codes".into(),
            ));
            None
        }
    };
    let mut merged = global.clone();
    merged.extend(t);
    let weights = weights_from(at, merged, problems);
    (problems.len() == before).then_some(PoolRouting {
        weights,
        affinity,
        affinity_max_load,
        regions,
    })
}

fn parse_affinity(s: &str) -> Result<AffinitySource, String> {
    if s == "user" {
        return Ok(AffinitySource::User);
    }
    if let Some(name) = s.strip_prefix("header:") {
        return HeaderName::from_bytes(name.trim().as_bytes())
            .map(AffinitySource::Header)
            .map_err(|_| format!("`{name}` is not a valid header name"));
    }
    Err(format!("`{s}` is neither \"user\" nor \"header:NAME\""))
}

/// Region and continent codes to the region codes they allow. A code the
/// catalogue does not know is kept as written (lower-cased), so an operator
/// can pin to their own region names; continents expand to every catalogue
/// region on them. An empty list would make the pool unservable, so it is refused.
fn residency(at: &str, items: &[toml::Value], problems: &mut Vec<RoutingProblem>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(code) = item.as_str().map(str::trim).filter(|s| !s.is_empty()) else {
            problems.push((
                format!("{at}.regions[{i}]"),
                "expected a region code".into(),
            ));
            continue;
        };
        if let Some(info) = region::lookup(code) {
            out.push(info.code.to_owned());
        } else if let Some(c) = Continent::from_code(code) {
            out.extend(
                region::all()
                    .iter()
                    .filter(|r| r.continent == c)
                    .map(|r| r.code.to_owned()),
            );
        } else {
            out.push(code.to_ascii_lowercase());
        }
    }
    if items.is_empty() {
        problems.push((
            format!("{at}.regions"),
            "an empty list would allow no region; leave it out to allow all".into(),
        ));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RoutingConfig, Vec<RoutingProblem>> {
        RoutingConfig::from_toml(toml::Value::Table(text.parse().unwrap()))
    }

    #[test]
    fn pools_override_only_what_they_name() {
        let c = parse(
            r#"
            load_ms = 70.0
            explain_headers = true
            [pools.m]
            price_ms_per_usd_hour = 0.0
            affinity = "header:X-Session-Id"
            regions = ["eu", "us-east-1"]
            "#,
        )
        .unwrap();
        assert!(c.explain_headers);
        assert_eq!(c.weights.load_ms, 70.0);
        let m = &c.pools["m"];
        assert_eq!(
            m.weights.load_ms, 70.0,
            "global weights carry into the pool"
        );
        assert_eq!(m.weights.price_ms_per_usd_hour, 0.0);
        assert_eq!(
            m.affinity,
            Some(AffinitySource::Header(HeaderName::from_static(
                "x-session-id"
            )))
        );
        let regions = m.regions.as_ref().unwrap();
        assert!(regions.iter().any(|r| r == "eu-central"));
        assert!(regions.iter().any(|r| r == "us-east-1"));
        assert!(!regions.iter().any(|r| r == "na-us-west"));
    }

    #[test]
    fn bad_pool_settings_are_reported_with_their_key_path() {
        let errs = parse(
            r#"
            [pools.a]
            affinity = "cookie"
            [pools.b]
            load_ms = -1.0
            [pools.c]
            regions = []
            [pools.d]
            lod_ms = 1.0
            "#,
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routing.pools.a.affinity",
                "routing.pools.b.load_ms",
                "routing.pools.c.regions",
                "routing.pools.d"
            ]
        );
        assert!(parse("explain_headers = 1").is_err());
        assert!(parse("rtt = 1.0").is_err());
        assert_eq!(parse("").unwrap(), RoutingConfig::default());
    }
}
