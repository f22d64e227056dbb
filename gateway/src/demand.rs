//! The demand signal for the controller: requests and overflow counted per model and client region.
//!
//! The request path records one entry per proxied request; whoever drives
//! the controller (the binary) takes a [`DemandSample`] now and then and
//! turns the counts into rates. The gateway knows nothing of the
//! controller's types: this is the whole interface.

use std::collections::HashMap;

use leasegate_fleet::region::{self, RegionInfo};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::fleet::FleetState;

/// The region of clients the meter cannot place.
pub const UNKNOWN_REGION: &str = "unknown";

/// Counts requests per (model, region) between two samples. Cheap to share.
#[derive(Debug)]
pub struct DemandMeter {
    /// The regions demand is attributed to: a client counts for the nearest.
    regions: Vec<RegionInfo>,
    counts: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    by_key: HashMap<(String, String), Counts>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    requests: u64,
    overflow: u64,
}

/// Demand of one model in one region over one sampling window.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDemand {
    pub model: String,
    pub region: String,
    pub requests_per_sec: f64,
    /// Requests per second the fallback tier served.
    pub overflow_per_sec: f64,
}

/// What [`DemandMeter::take`] hands back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemandSample {
    pub demand: Vec<ModelDemand>,
}

impl DemandMeter {
    /// Demand is attributed to the nearest of `region_codes` (unknown codes
    /// are skipped); with none, to the nearest region of the whole catalogue.
    pub fn new(region_codes: &[String]) -> Self {
        let mut regions: Vec<RegionInfo> = region_codes
            .iter()
            .filter_map(|c| region::lookup(c))
            .collect();
        if regions.is_empty() {
            regions = region::all().to_vec();
        }
        Self {
            regions,
            counts: Mutex::new(Window {
                since: Instant::now(),
                by_key: HashMap::new(),
            }),
        }
    }

    /// The region a client at `location` (lat, lon) counts for.
    pub fn region_of(&self, location: Option<(f64, f64)>) -> &str {
        let Some((lat, lon)) = location else {
            return UNKNOWN_REGION;
        };
        self.regions
            .iter()
            .map(|r| (r.code, region::haversine_km(lat, lon, r.lat, r.lon)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(UNKNOWN_REGION, |(code, _)| code)
    }

    /// Counts one request for `model` from a client at `location`;
    /// `overflow` when the fallback tier answered it.
    pub fn record(&self, model: &str, location: Option<(f64, f64)>, overflow: bool) {
        let region = self.region_of(location).to_owned();
        let mut w = self.counts.lock();
        let c = w.by_key.entry((model.to_owned(), region)).or_default();
        c.requests += 1;
        c.overflow += u64::from(overflow);
    }

    /// Rates since the previous take, and a fresh window. Keys seen in the
    /// last window but quiet now are reported at zero by the caller's
    /// bookkeeping, not here: a region with no request has no entry.
    pub fn take(&self) -> DemandSample {
        let now = Instant::now();
        let (since, by_key) = {
            let mut w = self.counts.lock();
            let since = std::mem::replace(&mut w.since, now);
            (since, std::mem::take(&mut w.by_key))
        };
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-3);
        let mut demand: Vec<ModelDemand> = by_key
            .into_iter()
            .map(|((model, region), c)| ModelDemand {
                model,
                region,
                requests_per_sec: c.requests as f64 / secs,
                overflow_per_sec: c.overflow as f64 / secs,
            })
            .collect();
        demand.sort_by(|a, b| (&a.model, &a.region).cmp(&(&b.model, &b.region)));
        DemandSample { demand }
    }
}

/// Queue pressure of `model`'s ready replicas: requests in flight plus the
/// replicas' own queues, over their capacity. Above 1.0 requests wait.
pub fn queue_pressure(state: &FleetState, model: &str) -> f64 {
    let (mut load, mut capacity) = (0.0, 0.0);
    for e in state.candidates(model).primary {
        load += f64::from(e.in_flight()) + f64::from(e.queue_depth().unwrap_or(0));
        capacity += f64::from(e.spec.max_concurrency.max(1));
    }
    if capacity == 0.0 {
        0.0
    } else {
        load / capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_become_rates_per_model_and_nearest_region() {
        let m = DemandMeter::new(&["na-us-west".into(), "eu-central".into(), "bogus".into()]);
        let paris = Some((48.85, 2.35));
        let tokyo = Some((35.68, 139.69));
        for _ in 0..10 {
            m.record("llama", paris, false);
        }
        m.record("llama", paris, true);
        m.record("llama", None, false);
        // Only the configured regions count: Tokyo is nearer California than Frankfurt.
        m.record("bge", tokyo, false);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let s = m.take();
        let get = |model: &str, region: &str| {
            s.demand
                .iter()
                .find(|d| d.model == model && d.region == region)
                .cloned()
        };
        let eu = get("llama", "eu-central").unwrap();
        assert_eq!(eu.requests_per_sec, 5.5);
        assert_eq!(eu.overflow_per_sec, 0.5);
        assert_eq!(get("llama", UNKNOWN_REGION).unwrap().requests_per_sec, 0.5);
        assert!(get("bge", "na-us-west").is_some());
        assert_eq!(s.demand.len(), 3);
        // A fresh window after each take.
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(m.take().demand.is_empty());
    }
}
