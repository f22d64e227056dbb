//! The usage report behind `GET /admin/usage` and `leasegate status`: spend since start against hyperscaler-only, and the limits each key hit.
//!
//! One typed document, built here and read back by the CLI, so the server
//! and `status` cannot drift apart. Keys appear by name only.

use serde::{Deserialize, Serialize};

use super::{CostSummary, ModelSpend, stage::Accounting};
use crate::policy::{LimitHits, Policy, Usage as KeyUsage};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub spend: SpendReport,
    /// One entry per configured client key, in config order.
    pub limits: Vec<KeyReport>,
}

/// Spend since the gateway started (reloads included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpendReport {
    pub since_s: f64,
    pub tokens: u64,
    pub lease_usd: f64,
    pub static_usd: f64,
    pub fallback_usd: f64,
    pub total_usd: f64,
    /// `None` before the first priced token.
    pub usd_per_1m_tokens: Option<f64>,
    /// The same tokens at the list price of the fallback serving each model.
    pub hyperscaler_only_usd: f64,
    /// `hyperscaler_only_usd - total_usd`.
    pub saving_usd: f64,
    /// The saving as a share of `hyperscaler_only_usd`, in percent.
    pub saving_pct: Option<f64>,
    pub by_model: Vec<ModelRow>,
    pub fallback_window: FallbackWindow,
    /// Requests answered 429 because the fallback spend cap stopped their overflow.
    pub spend_cap_refusals: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    /// The model as clients named it.
    pub model: String,
    /// `lease`, `static` or `fallback`.
    pub path: String,
    pub tokens: u64,
    pub usd: f64,
    pub usd_per_1m_tokens: Option<f64>,
    pub hyperscaler_only_usd: f64,
}

/// Fallback spend in the current UTC hour and day, against the caps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FallbackWindow {
    pub hour_usd: f64,
    pub day_usd: f64,
    pub hourly_cap_usd: Option<f64>,
    pub daily_cap_usd: Option<f64>,
}

/// One client key: its limits, what it hit, where it stands now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyReport {
    pub name: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub budget_usd_per_day: Option<f64>,
    pub hits: LimitHits,
    pub now: Option<KeyUsage>,
}

fn per_1m(usd: f64, tokens: u64) -> Option<f64> {
    (tokens > 0).then(|| usd / tokens as f64 * 1e6)
}

impl SpendReport {
    fn new(s: &CostSummary, rows: Vec<ModelSpend>, acc: &Accounting) -> Self {
        let total = s.total_usd();
        let caps = acc.caps();
        let window = caps.status();
        SpendReport {
            since_s: acc.recorder().since().elapsed().as_secs_f64(),
            tokens: s.tokens,
            lease_usd: s.lease_usd,
            static_usd: s.static_usd,
            fallback_usd: s.fallback_usd,
            total_usd: total,
            usd_per_1m_tokens: per_1m(total, s.tokens),
            hyperscaler_only_usd: s.hyperscaler_usd,
            saving_usd: s.saving_usd(),
            saving_pct: (s.hyperscaler_usd > 0.0)
                .then(|| s.saving_usd() / s.hyperscaler_usd * 100.0),
            by_model: rows
                .into_iter()
                .map(|r| ModelRow {
                    path: r.path.as_str().to_owned(),
                    tokens: r.spend.tokens,
                    usd: r.spend.usd,
                    usd_per_1m_tokens: per_1m(r.spend.usd, r.spend.tokens),
                    hyperscaler_only_usd: r.spend.hyperscaler_usd,
                    model: r.model,
                })
                .collect(),
            fallback_window: FallbackWindow {
                hour_usd: window.hour_usd,
                day_usd: window.day_usd,
                hourly_cap_usd: window.hourly_cap_usd,
                daily_cap_usd: window.daily_cap_usd,
            },
            spend_cap_refusals: caps.refusals(),
        }
    }
}

impl UsageReport {
    pub fn build(acc: &Accounting, policy: &Policy) -> Self {
        let spend = SpendReport::new(&acc.summary(), acc.recorder().by_model(), acc);
        let limits = policy
            .keys
            .iter()
            .map(|k| KeyReport {
                name: k.name.clone(),
                requests_per_minute: k.limits.requests_per_minute.map(|n| n.get()),
                tokens_per_minute: k.limits.tokens_per_minute.map(|n| n.get()),
                budget_usd_per_day: k.limits.budget_usd_per_day,
                hits: policy.limiter.hits(&k.name).unwrap_or_default(),
                now: policy.limiter.usage(&k.name),
            })
            .collect();
        UsageReport { spend, limits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        policy::{ClientKey, KeyDigest, KeySet},
        usage::{Charge, Usage},
    };
    use leasegate_fleet::{Endpoint, Engine, Kind, Region, State};

    fn fallback() -> Endpoint {
        Endpoint {
            id: "fb".into(),
            url: "http://127.0.0.1:1".into(),
            kind: Kind::Fallback,
            engine: Engine::Openai,
            models: vec!["m".into()],
            region: Region {
                code: "us-east".into(),
                country: None,
                lat: f64::NAN,
                lon: f64::NAN,
            },
            provider: None,
            price_per_hour_usd: 0.0,
            max_concurrency: 8,
            state: State::Ready,
            credential: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_report_names_keys_and_prices_what_was_recorded() {
        let config = Config::parse(
            "[[fallbacks]]\nid = \"fb\"\nurl = \"http://127.0.0.1:1\"\nmodels = { m = \"m\" }\nprice_per_1m_input_usd = 2.0\nprice_per_1m_output_usd = 6.0\n",
        )
        .unwrap();
        let acc = Accounting::new(&config, Vec::new());
        let mut key = ClientKey::unlimited("tenant".into(), KeyDigest::of("lg-secret"));
        key.limits.requests_per_minute = std::num::NonZeroU64::new(1);
        let policy = Policy::new(KeySet::new(vec![key.clone()], &[], &mut vec![]), None);
        let _ticket = policy.limiter.admit(&key, 1).unwrap();
        assert!(policy.limiter.admit(&key, 1).is_err());
        acc.recorder().record(&Charge {
            model: "m",
            endpoint: &fallback(),
            key: Some("tenant"),
            usage: Usage {
                prompt_tokens: 500_000,
                completion_tokens: 500_000,
                total_tokens: 1_000_000,
            },
        });
        let r = UsageReport::build(&acc, &policy);
        assert_eq!(r.spend.tokens, 1_000_000);
        assert!((r.spend.fallback_usd - 4.0).abs() < 1e-12);
        assert_eq!(r.spend.usd_per_1m_tokens, Some(4.0));
        // Everything went to the fallback: nothing saved.
        assert!(r.spend.saving_usd.abs() < 1e-12);
        assert_eq!(r.spend.by_model[0].path, "fallback");
        assert_eq!(r.limits[0].name, "tenant");
        assert_eq!(r.limits[0].hits.requests_per_minute, 1);
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("lg-secret")
                && !text.contains(&hex::encode(KeyDigest::of("lg-secret").0))
        );
        let back: UsageReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
