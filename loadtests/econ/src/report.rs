//! What a run measured, per strategy: cost per 1M tokens, TTFT-SLO
//! attainment, idle lease spend, overflow, orphaned lease-hours; as
//! Markdown and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::catalogue::{FallbackModel, ServiceModel};

/// Issue 7's goal for hybrid: at most this share of hyperscaler-only's
/// $/1M tokens ...
pub const GOAL_COST_RATIO: f64 = 0.40;
/// ... with at least this TTFT-SLO attainment.
pub const GOAL_SLO_ATTAINMENT: f64 = 0.995;

/// TTFT histogram resolution and range: 10 ms buckets up to two minutes;
/// unserved requests land in the last bucket.
const BUCKET_S: f64 = 0.01;
const BUCKETS: usize = 12_000;

#[derive(Clone, Debug)]
pub struct TtftHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for TtftHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS + 1],
            total: 0,
        }
    }
}

impl TtftHistogram {
    /// `None`: the request was never served.
    pub fn record(&mut self, ttft_s: Option<f64>) {
        let i = ttft_s.map_or(BUCKETS, |t| ((t / BUCKET_S) as usize).min(BUCKETS));
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Upper bound of the bucket holding quantile `q` (seconds); infinite
    /// when it falls among unserved requests.
    pub fn quantile(&self, q: f64) -> f64 {
        let rank = (q * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return if i == BUCKETS {
                    f64::INFINITY
                } else {
                    (i + 1) as f64 * BUCKET_S
                };
            }
        }
        0.0
    }

    /// Share of requests with TTFT at or under `slo_s`.
    pub fn share_within(&self, slo_s: f64) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        let last = ((slo_s / BUCKET_S).round() as usize).min(BUCKETS);
        let within: u64 = self.counts[..last].iter().sum();
        within as f64 / self.total as f64
    }
}

/// One time bucket of one client region.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RegionBucket {
    pub requests: u64,
    pub overflow: u64,
    pub slo_misses: u64,
    /// Ready leases in the region's lease region at the bucket's end.
    pub ready_leases: u32,
}

impl RegionBucket {
    pub fn overflow_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.overflow as f64 / self.requests as f64
        }
    }
}

/// A time bucket across regions (index = client region).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    pub start_s: f64,
    pub regions: Vec<RegionBucket>,
}

/// The figures of one strategy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StrategyReport {
    pub strategy: String,
    pub requests: u64,
    pub served: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub lease_spend_usd: f64,
    pub fallback_spend_usd: f64,
    pub total_spend_usd: f64,
    pub usd_per_1m_tokens: f64,
    /// $/1M tokens over hyperscaler-only's $/1M tokens.
    pub cost_vs_hyperscaler_only: Option<f64>,
    pub slo_ttft_s: f64,
    /// Share of requests (unserved ones count as misses) with TTFT ≤ SLO.
    pub slo_attainment: f64,
    pub ttft_p50_s: f64,
    pub ttft_p95_s: f64,
    pub ttft_p99_s: f64,
    /// Lease spend on time when a lease had nothing in flight (starting,
    /// draining, or just quiet), as a share of all lease spend.
    pub idle_lease_spend_share: f64,
    /// Busy slot-seconds over paid slot-seconds.
    pub lease_slot_utilization: f64,
    /// Share of served requests that went to the fallback.
    pub overflow_share: f64,
    pub reasons: BTreeMap<String, u64>,
    pub lease_hours: f64,
    pub peak_ready_leases: u32,
    pub leases_created: u64,
    pub leases_closed_by_provider: u64,
    pub provider_failures: u32,
    pub status_null_episodes: u32,
    /// Lease-hours the market charged for leases the controller no longer
    /// tracked. Must be 0.
    pub orphaned_lease_hours: f64,
    /// Idle deployments (escrow locked, no lease) open at the end.
    pub idle_deployments_at_end: usize,
    pub series: Vec<Bucket>,
}

impl StrategyReport {
    /// Whether this strategy meets the cost and SLO goal.
    pub fn meets_goal(&self) -> bool {
        self.cost_vs_hyperscaler_only
            .is_some_and(|r| r <= GOAL_COST_RATIO)
            && self.slo_attainment >= GOAL_SLO_ATTAINMENT
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub hours: f64,
    pub warmup_hours: f64,
    pub service: ServiceModel,
    pub fallback: FallbackModel,
    pub regions: Vec<String>,
    pub strategies: Vec<StrategyReport>,
}

impl Report {
    pub fn strategy(&self, name: &str) -> Option<&StrategyReport> {
        self.strategies.iter().find(|s| s.strategy == name)
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Economics simulation: seed {}, {} h measured after {} h warm-up; fallback {} at ${}/${} per 1M in/out tokens.\n",
            self.seed,
            self.hours,
            self.warmup_hours,
            self.fallback.name,
            self.fallback.usd_per_1m_input,
            self.fallback.usd_per_1m_output
        );
        let slo = self.strategies.first().map_or(0.0, |r| r.slo_ttft_s);
        let _ = writeln!(
            s,
            "| strategy | $/1M tokens | vs hyperscaler-only | total $ | lease $ | fallback $ | TTFT ≤ {slo} s | p95 TTFT | p99 TTFT | idle lease spend | slot utilisation | overflow share | lease-hours | orphaned lease-hours |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.strategies {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {} | {:.2} | {:.2} | {:.2} | {:.3}% | {} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1} | {:.2} |",
                r.strategy,
                r.usd_per_1m_tokens,
                r.cost_vs_hyperscaler_only
                    .map_or_else(|| "-".to_owned(), |c| format!("{:.1}%", c * 100.0)),
                r.total_spend_usd,
                r.lease_spend_usd,
                r.fallback_spend_usd,
                r.slo_attainment * 100.0,
                seconds(r.ttft_p95_s),
                seconds(r.ttft_p99_s),
                r.idle_lease_spend_share * 100.0,
                r.lease_slot_utilization * 100.0,
                r.overflow_share * 100.0,
                r.lease_hours,
                r.orphaned_lease_hours
            );
        }
        let _ = writeln!(
            s,
            "\nGoal: hybrid at ≤ {:.0}% of hyperscaler-only $/1M tokens with ≥ {:.1}% TTFT-SLO attainment.",
            GOAL_COST_RATIO * 100.0,
            GOAL_SLO_ATTAINMENT * 100.0
        );
        for r in self
            .strategies
            .iter()
            .filter(|r| r.strategy.starts_with("hybrid"))
        {
            let _ = writeln!(
                s,
                "- {}: {} of hyperscaler-only at {:.3}% attainment: goal {}.",
                r.strategy,
                r.cost_vs_hyperscaler_only
                    .map_or_else(|| "?".to_owned(), |c| format!("{:.1}%", c * 100.0)),
                r.slo_attainment * 100.0,
                if r.meets_goal() { "met" } else { "missed" }
            );
        }
        for r in &self.strategies {
            let _ = writeln!(
                s,
                "\n{}: {} requests, {} served, {:.1}M tokens; {} leases created, {} closed by a provider; {} provider failures, {} status-null episodes; peak {} ready leases; reasons {:?}.",
                r.strategy,
                r.requests,
                r.served,
                (r.prompt_tokens + r.output_tokens) as f64 / 1e6,
                r.leases_created,
                r.leases_closed_by_provider,
                r.provider_failures,
                r.status_null_episodes,
                r.peak_ready_leases,
                r.reasons
            );
        }
        s
    }
}

/// A quantile for the table: past the histogram's range (or unserved) it
/// is only known to be large. (JSON writes such values as `null`.)
fn seconds(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2} s")
    } else {
        format!("> {:.0} s", BUCKETS as f64 * BUCKET_S)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_attainment_count_unserved_requests_as_misses() {
        let mut h = TtftHistogram::default();
        for i in 0..98 {
            h.record(Some(0.5 + f64::from(i) * 0.001));
        }
        h.record(Some(3.0));
        h.record(None);
        assert!((h.share_within(2.0) - 0.98).abs() < 1e-9);
        assert!(h.quantile(0.5) <= 0.6);
        assert!(h.quantile(0.99) > 2.9 && h.quantile(0.99) < 3.1);
        assert!(h.quantile(1.0).is_infinite());
    }
}
