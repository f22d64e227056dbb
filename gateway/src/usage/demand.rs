//! Demand per pool model and region as the gateway sees it: request and overflow rates for the controller.
//!
//! Overflow is unmet demand: requests the leases could not take well. The
//! controller leases capacity where it happens, and overflow falls once the
//! new leases are ready. Rates are over the last minute (one-second buckets);
//! a (model, region) pair quiet for a minute is forgotten.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::window::Window;

/// One (model, region) rate.
#[derive(Clone, Debug, PartialEq)]
pub struct DemandRate {
    pub model: String,
    pub region: String,
    pub requests_per_sec: f64,
    pub overflow_per_sec: f64,
}

/// Counts requests and overflows; read by whoever feeds the controller.
#[derive(Debug)]
pub struct DemandMeter {
    epoch: Instant,
    /// Model to region to a window of (requests, overflows).
    state: Mutex<HashMap<String, HashMap<String, Window>>>,
}

impl Default for DemandMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl DemandMeter {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// One routed request; `overflow` when it went to the fallback tier
    /// (or could not, at the spend cap).
    pub fn record(&self, model: &str, region: &str, overflow: bool) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let regions = match state.get_mut(model) {
            Some(r) => r,
            None => state.entry(model.to_owned()).or_default(),
        };
        let w = match regions.get_mut(region) {
            Some(w) => w,
            None => regions
                .entry(region.to_owned())
                .or_insert_with(|| Window::minute(self.epoch)),
        };
        w.add(now, 1, if overflow { 1.0 } else { 0.0 });
    }

    /// Current rates, sorted by model then region; forgets idle pairs.
    pub fn rates(&self) -> Vec<DemandRate> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let mut out = Vec::new();
        for (model, regions) in state.iter_mut() {
            regions.retain(|_, w| !w.idle(now));
            for (region, w) in regions.iter() {
                let (requests, overflows) = w.sums(now);
                let secs = w.covered(now).as_secs_f64();
                out.push(DemandRate {
                    model: model.clone(),
                    region: region.clone(),
                    requests_per_sec: requests as f64 / secs,
                    overflow_per_sec: overflows / secs,
                });
            }
        }
        state.retain(|_, regions| !regions.is_empty());
        out.sort_by(|a, b| (&a.model, &a.region).cmp(&(&b.model, &b.region)));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn overflow_rate_rises_and_falls_with_unmet_demand() {
        let d = DemandMeter::new();
        for i in 0..60 {
            d.record("m", "eu", i % 3 == 0);
            d.record("m", "us", false);
            tokio::time::advance(Duration::from_millis(500)).await;
        }
        let r = d.rates();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].region.as_str(), r[1].region.as_str()), ("eu", "us"));
        assert!((r[0].requests_per_sec - 2.0).abs() < 0.05, "{r:?}");
        assert!((r[0].overflow_per_sec - 2.0 / 3.0).abs() < 0.05, "{r:?}");
        assert_eq!(r[1].overflow_per_sec, 0.0);
        // New leases are ready: no more overflow, and a minute later the
        // old overflow has left the window.
        for _ in 0..120 {
            d.record("m", "eu", false);
            tokio::time::advance(Duration::from_millis(500)).await;
        }
        let r = d.rates();
        assert_eq!(r.len(), 1, "us went quiet and is forgotten: {r:?}");
        assert_eq!(r[0].overflow_per_sec, 0.0);
    }
}
