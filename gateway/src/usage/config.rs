//! The `[overflow]` and `[spend]` sections: per-pool overflow mode and SLO, and the fallback spend caps.
//!
//! Per-pool settings live under `[[overflow.pools]]`: top-level `[[pools]]`
//! is the controller's (what to lease), and a pool served only by static
//! endpoints and fallbacks still needs an overflow mode.
//!
//! ```toml
//! [overflow]                      # defaults for every pool without its own entry
//! mode = "leases-first"           # leases-first | fallback-first | cheapest-within-slo
//! slo_ttft = "2s"                 # time-to-first-token objective
//! time_per_output_token = "50ms"  # the pool's decode pace, prices a queued request
//!
//! [[overflow.pools]]
//! model = "llama-3.1-8b-instruct" # the pool's model (an alias target)
//! mode = "fallback-first"
//! slo_ttft = "1500ms"
//!
//! [spend]
//! fallback_hourly_usd = 5.0       # per UTC hour; absent = no cap
//! fallback_daily_usd = 50.0       # per UTC day
//! on_cap = "queue"                # queue | reject (429 + Retry-After)
//! max_queue_wait = "5s"           # queue: longest wait for a lease before 429
//! retry_after = "1s"              # Retry-After when leases exist but are full
//! ```

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

use super::{Mode, OnCap, PoolSlo, SpendConfig};
use crate::config::{Problems, duration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverflow {
    mode: Option<String>,
    slo_ttft: Option<String>,
    time_per_output_token: Option<String>,
    /// Checked element by element, so each bad pool is reported by index.
    pools: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    model: String,
    mode: Option<String>,
    slo_ttft: Option<String>,
    time_per_output_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpend {
    fallback_hourly_usd: Option<f64>,
    fallback_daily_usd: Option<f64>,
    on_cap: Option<String>,
    max_queue_wait: Option<String>,
    retry_after: Option<String>,
}

/// Overflow and spend settings, typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageConfig {
    /// For pools without an entry.
    pub default_pool: PoolSlo,
    /// Pool model name to its settings.
    pub pools: HashMap<String, PoolSlo>,
    pub spend: SpendConfig,
}

impl UsageConfig {
    pub fn pool(&self, model: &str) -> &PoolSlo {
        self.pools.get(model).unwrap_or(&self.default_pool)
    }
}

fn take<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<T> {
    value
        .try_into()
        .map_err(|e: toml::de::Error| p.push(path, e.message().trim_end()))
        .ok()
}

fn pool(
    at: &str,
    mode: Option<String>,
    slo: Option<String>,
    tpot: Option<String>,
    base: &PoolSlo,
    p: &mut Problems,
) -> PoolSlo {
    let mode = match mode.as_deref().map(|m| (m, Mode::parse(m))) {
        None => base.mode,
        Some((_, Some(m))) => m,
        Some((other, None)) => {
            p.push(
                format!("{at}.mode"),
                format!(
                    "`{other}` is not one of leases-first, fallback-first, cheapest-within-slo"
                ),
            );
            base.mode
        }
    };
    PoolSlo {
        mode,
        slo_ttft: duration(&format!("{at}.slo_ttft"), slo, base.slo_ttft, p),
        time_per_output_token: duration(
            &format!("{at}.time_per_output_token"),
            tpot,
            base.time_per_output_token,
            p,
        ),
    }
}

fn usd(path: &str, v: Option<f64>, p: &mut Problems) -> Option<f64> {
    if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
        p.push(path, "must be a non-negative number of dollars");
        return None;
    }
    v
}

/// Removes and converts this module's sections from the config table.
pub(crate) fn convert(table: &mut toml::Table, p: &mut Problems) -> UsageConfig {
    let mut overflow: RawOverflow = table
        .remove("overflow")
        .and_then(|v| take(v, "overflow", p))
        .unwrap_or_default();
    let default_pool = pool(
        "overflow",
        overflow.mode,
        overflow.slo_ttft,
        overflow.time_per_output_token,
        &PoolSlo::default(),
        p,
    );
    let mut pools = HashMap::new();
    match overflow.pools.take() {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("overflow.pools[{i}]");
                let Some(raw) = take::<RawPool>(item, &at, p) else {
                    continue;
                };
                if raw.model.is_empty() {
                    p.push(format!("{at}.model"), "must not be empty");
                }
                let slo = pool(
                    &at,
                    raw.mode,
                    raw.slo_ttft,
                    raw.time_per_output_token,
                    &default_pool,
                    p,
                );
                if pools.insert(raw.model.clone(), slo).is_some() {
                    p.push(
                        format!("{at}.model"),
                        format!("pool `{}` is listed twice", raw.model),
                    );
                }
            }
        }
        Some(_) => p.push(
            "overflow.pools",
            "expected an array of tables ([[overflow.pools]])",
        ),
    }
    let raw: RawSpend = table
        .remove("spend")
        .and_then(|v| take(v, "spend", p))
        .unwrap_or_default();
    let d = SpendConfig::default();
    let max_wait = duration(
        "spend.max_queue_wait",
        raw.max_queue_wait,
        Duration::from_secs(5),
        p,
    );
    let on_cap = match raw.on_cap.as_deref() {
        None | Some("reject") => OnCap::Reject,
        Some("queue") => OnCap::Queue { max_wait },
        Some(other) => {
            p.push(
                "spend.on_cap",
                format!("`{other}` is not one of queue, reject"),
            );
            OnCap::Reject
        }
    };
    let spend = SpendConfig {
        fallback_hourly_usd: usd("spend.fallback_hourly_usd", raw.fallback_hourly_usd, p),
        fallback_daily_usd: usd("spend.fallback_daily_usd", raw.fallback_daily_usd, p),
        on_cap,
        retry_after: duration("spend.retry_after", raw.retry_after, d.retry_after, p),
    };
    UsageConfig {
        default_pool,
        pools,
        spend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;

    fn parse(text: &str) -> Result<UsageConfig, Vec<String>> {
        Config::parse(text)
            .map(|c| c.usage)
            .map_err(|ps| ps.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn pools_inherit_the_overflow_defaults() {
        let c = parse(
            r#"
            [overflow]
            slo_ttft = "3s"
            [[overflow.pools]]
            model = "a"
            mode = "cheapest-within-slo"
            [spend]
            fallback_hourly_usd = 2.5
            on_cap = "queue"
            max_queue_wait = "750ms"
            "#,
        )
        .unwrap();
        let a = c.pool("a");
        assert_eq!(
            (a.mode, a.slo_ttft),
            (Mode::CheapestWithinSlo, Duration::from_secs(3))
        );
        assert_eq!(c.pool("other").mode, Mode::LeasesFirst);
        assert_eq!(c.spend.fallback_hourly_usd, Some(2.5));
        assert_eq!(
            c.spend.on_cap,
            OnCap::Queue {
                max_wait: Duration::from_millis(750)
            }
        );
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let errs = parse(
            r#"
            [[overflow.pools]]
            model = "a"
            mode = "fastest"
            slo_ttft = "soon"
            [[overflow.pools]]
            model = "a"
            [spend]
            fallback_daily_usd = -1.0
            on_cap = "panic"
            "#,
        )
        .unwrap_err();
        let text = errs.join("\n");
        for needle in [
            "overflow.pools[0].mode",
            "overflow.pools[0].slo_ttft",
            "overflow.pools[1].model",
            "spend.fallback_daily_usd",
            "spend.on_cap",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }

    #[test]
    fn the_example_config_sets_every_key_of_these_sections() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/leasegate.toml");
        let c = Config::load(&path).unwrap().usage;
        let pool = c.pool("llama-3.1-8b-instruct");
        assert_eq!(
            (pool.mode, pool.slo_ttft),
            (Mode::LeasesFirst, Duration::from_millis(1500))
        );
        assert_eq!(pool.time_per_output_token, Duration::from_millis(50));
        assert_eq!(
            (c.spend.fallback_hourly_usd, c.spend.fallback_daily_usd),
            (Some(5.0), Some(50.0))
        );
        assert_eq!(
            c.spend.on_cap,
            OnCap::Queue {
                max_wait: Duration::from_secs(5)
            }
        );
    }
}
