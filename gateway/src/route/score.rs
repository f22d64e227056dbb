//! The cost model: expected latency of one endpoint for one client, plus a price term.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::fleet::EndpointHandle;

/// How each term turns into milliseconds of expected latency; the
/// `[routing]` table of a pool. Every value must be finite and >= 0.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingWeights {
    /// Estimated round trip per 1000 km of great-circle distance. Light in
    /// fibre covers ~200 km/ms one way, i.e. 10 ms RTT per 1000 km; real
    /// routes are ~1.5x longer than the great circle.
    pub rtt_ms_per_1000km: f64,
    /// Multiplier on the measured time-to-first-byte average.
    pub latency_weight: f64,
    /// Cost of an endpoint at full load (in flight = max concurrency)
    /// against an idle one: batching engines slow down as they fill.
    pub load_ms: f64,
    /// Expected wait per queued request divided by the endpoint's
    /// concurrency (that many leave the queue at once).
    pub queued_request_ms: f64,
    /// Penalty at a 100% recent error rate, scaled linearly.
    pub error_penalty_ms: f64,
    /// Milliseconds one USD per hour of endpoint price is worth. Zero means
    /// price never matters; raise it to prefer cheap capacity.
    pub price_ms_per_usd_hour: f64,
    /// Regions whose best endpoint scores within this of the overall best
    /// form the near tier; the rest are the far tier.
    pub near_tolerance_ms: f64,
}

impl Default for RoutingWeights {
    fn default() -> Self {
        Self {
            rtt_ms_per_1000km: 15.0,
            latency_weight: 1.0,
            load_ms: 100.0,
            queued_request_ms: 200.0,
            error_penalty_ms: 1000.0,
            price_ms_per_usd_hour: 5.0,
            near_tolerance_ms: 30.0,
        }
    }
}

/// A weight that is negative, NaN or infinite.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("routing weight `{field}` must be a finite number >= 0, got {value}")]
pub struct WeightError {
    pub field: &'static str,
    pub value: f64,
}

impl RoutingWeights {
    /// Checks every weight; the config layer reports the error with its key path.
    pub fn validate(&self) -> Result<(), WeightError> {
        let fields = [
            ("rtt_ms_per_1000km", self.rtt_ms_per_1000km),
            ("latency_weight", self.latency_weight),
            ("load_ms", self.load_ms),
            ("queued_request_ms", self.queued_request_ms),
            ("error_penalty_ms", self.error_penalty_ms),
            ("price_ms_per_usd_hour", self.price_ms_per_usd_hour),
            ("near_tolerance_ms", self.near_tolerance_ms),
        ];
        match fields.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            Some(&(field, value)) => Err(WeightError { field, value }),
            None => Ok(()),
        }
    }
}

/// The tier an endpoint falls in for one request; lower tiers are tried first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Near,
    Far,
    Fallback,
    /// Not tried: ejected, failing probes or outside the allowed regions.
    Excluded,
}

/// The terms of one endpoint's score, all in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Terms {
    /// Estimated client round trip from distance; 0 without a client location.
    pub rtt_ms: f64,
    /// Measured time-to-first-byte average, scaled by its confidence.
    pub latency_ms: f64,
    /// From in-flight load and the replica's scraped queue.
    pub queue_ms: f64,
    pub error_ms: f64,
    pub price_ms: f64,
}

impl Terms {
    pub fn total(&self) -> f64 {
        self.rtt_ms + self.latency_ms + self.queue_ms + self.error_ms + self.price_ms
    }
}

/// Zero for anything that would poison a sum (NaN, infinities, negatives),
/// so one bad snapshot field degrades a term instead of the whole ranking.
fn clean(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// Scores `e` for a client `distance_km` away (`None`: unknown location).
pub(crate) fn terms(
    w: &RoutingWeights,
    e: &EndpointHandle,
    distance_km: Option<f64>,
    now: Instant,
) -> Terms {
    let rtt_ms = distance_km.map_or(0.0, |d| clean(d) / 1000.0 * w.rtt_ms_per_1000km);
    let latency_ms = e.ttfb_ewma_ms(now).map_or(0.0, |(ms, confidence)| {
        clean(ms) * confidence * w.latency_weight
    });
    let cap = e.spec.max_concurrency.max(1);
    let overflow = e.in_flight().saturating_sub(cap);
    // The scraped queue already holds our own overflow; take the larger
    // rather than the sum so it is not counted twice.
    let waiting = e.queue_depth().unwrap_or(0).max(overflow);
    let queue_ms =
        e.load().min(1.0) * w.load_ms + f64::from(waiting) / f64::from(cap) * w.queued_request_ms;
    let error_ms = e.error_rate(now) * w.error_penalty_ms;
    let price_ms = clean(e.spec.price_per_hour_usd) * w.price_ms_per_usd_hour;
    Terms {
        rtt_ms: clean(rtt_ms),
        latency_ms: clean(latency_ms),
        queue_ms: clean(queue_ms),
        error_ms: clean(error_ms),
        price_ms: clean(price_ms),
    }
}

/// One row of the admin "explain" answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreBreakdown {
    pub endpoint: String,
    pub region: String,
    pub tier: Tier,
    /// Why an endpoint is excluded, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    pub in_flight: u32,
    pub max_concurrency: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u32>,
    pub error_rate: f64,
    pub terms: Terms,
    pub score_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_with_defaults_and_refuse_unknown_or_bad_values() {
        let w: RoutingWeights = toml::from_str("price_ms_per_usd_hour = 0.0").unwrap();
        assert_eq!(w.price_ms_per_usd_hour, 0.0);
        assert_eq!(w.load_ms, RoutingWeights::default().load_ms);
        assert!(toml::from_str::<RoutingWeights>("load = 1.0").is_err());
        let bad: RoutingWeights = toml::from_str("error_penalty_ms = nan").unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "error_penalty_ms");
        let bad = RoutingWeights {
            load_ms: -1.0,
            ..RoutingWeights::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "load_ms");
        assert_eq!(RoutingWeights::default().validate(), Ok(()));
    }
}
