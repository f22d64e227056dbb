//! What the gateway tells the controller (demand per model and region,
//! in-flight and health per endpoint), and how a pool's size and placement
//! follow demand with hysteresis and cooldown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use tokio::time::Instant;

use crate::pool::Pool;

/// Demand for one model in one region, as the gateway measured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Demand {
    /// Every request for the model from the region, wherever it was served
    /// (the fallback's share included).
    pub requests_per_sec: f64,
    /// Requests in flight plus the replicas' own queues, per replica slot
    /// of the model's ready leases: a utilisation. Above 1.0 requests wait.
    pub queue_pressure: f64,
    /// The part of `requests_per_sec` the fallback tier served.
    pub overflow_per_sec: f64,
}

/// One endpoint as the gateway sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EndpointReport {
    pub in_flight: u32,
    /// `None` when the gateway has no opinion yet.
    pub healthy: Option<bool>,
}

/// The gateway → controller channel. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    inner: Arc<RwLock<SignalsInner>>,
}

#[derive(Debug, Default)]
struct SignalsInner {
    demand: HashMap<(String, String), Demand>,
    endpoints: HashMap<String, EndpointReport>,
}

impl Signals {
    pub fn report_demand(&self, model: &str, region: &str, demand: Demand) {
        self.inner
            .write()
            .demand
            .insert((model.to_string(), region.to_string()), demand);
    }

    pub fn report_endpoint(&self, endpoint_id: &str, report: EndpointReport) {
        self.inner
            .write()
            .endpoints
            .insert(endpoint_id.to_string(), report);
    }

    pub fn endpoint(&self, endpoint_id: &str) -> Option<EndpointReport> {
        self.inner.read().endpoints.get(endpoint_id).copied()
    }

    /// Demand for a model, by region.
    pub fn demand_for(&self, model: &str) -> Vec<(String, Demand)> {
        let mut v: Vec<_> = self
            .inner
            .read()
            .demand
            .iter()
            .filter(|((m, _), _)| m == model)
            .map(|((_, r), d)| (r.clone(), *d))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// A pool's scaling memory between reconciles.
#[derive(Clone, Debug, Default)]
pub struct ScaleState {
    /// `None` until the first decision (which starts at min).
    pub target: Option<u32>,
    pub last_change: Option<Instant>,
}

/// Lower count's utilisation must fall below this before scaling down:
/// the gap between up and down thresholds keeps the pool from flapping.
const DOWN_UTILISATION: f64 = 0.7;

fn cooled(last: Option<Instant>, cooldown: Duration, now: Instant) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= cooldown)
}

/// The number of replicas the pool should have now.
///
/// Up: to what demand needs, at once (after the up cooldown). Down: one at
/// a time, only when one replica fewer would still run under 70%, and only
/// after the down cooldown. Always within min..=max.
pub fn desired_replicas(
    pool: &Pool,
    demand: &[(String, Demand)],
    state: &mut ScaleState,
    now: Instant,
) -> u32 {
    // `clamp` panics on min > max; a pool that skipped validation must
    // not take the reconcile loop down with it.
    let (lo, hi) = (pool.min_replicas, pool.max_replicas.max(pool.min_replicas));
    let current = state.target.unwrap_or(lo).clamp(lo, hi);
    // Overflow is already inside `requests_per_sec`: adding it again leased
    // for the fallback's share twice.
    let load: f64 = demand.iter().map(|(_, d)| d.requests_per_sec).sum();
    let pressure = demand
        .iter()
        .map(|(_, d)| d.queue_pressure)
        .fold(0.0, f64::max);
    let mut needed = (load / pool.target_rps_per_replica).ceil() as u32;
    if pressure > 1.0 {
        needed = needed.max(current + 1);
    }
    let needed = needed.clamp(lo, hi);
    let next = if needed > current && cooled(state.last_change, pool.scale_up_cooldown, now) {
        needed
    } else if needed < current
        && load <= f64::from(current - 1) * pool.target_rps_per_replica * DOWN_UTILISATION
        && pressure * f64::from(current) / f64::from(current - 1) <= DOWN_UTILISATION
        && cooled(state.last_change, pool.scale_down_cooldown, now)
    {
        current - 1
    } else {
        current
    };
    if state.target.is_some() && next != current {
        state.last_change = Some(now);
    }
    state.target = Some(next);
    next
}

/// The region the next lease should go to: the one furthest below its
/// share. Shares follow demand where there is some, else region weights.
/// `None`: no preference (anywhere the pool allows).
pub fn place(pool: &Pool, demand: &[(String, Demand)], existing: &[String]) -> Option<String> {
    let allowed = |code: &str| pool.regions.is_empty() || pool.region_weight(code).is_some();
    let mut shares: Vec<(String, f64)> = demand
        .iter()
        .filter(|(r, _)| allowed(r))
        // Overflow weighs twice here on purpose: a region whose demand spills
        // to the fallback is where a new lease helps most.
        .map(|(r, d)| (r.clone(), d.requests_per_sec + d.overflow_per_sec))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    if shares.is_empty() {
        shares = pool
            .regions
            .iter()
            .map(|r| (r.code.clone(), r.weight))
            .collect();
    }
    let total: f64 = shares.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return None;
    }
    let n = existing.len() as f64 + 1.0;
    shares
        .iter()
        .map(|(code, w)| {
            let have = existing.iter().filter(|e| *e == code).count() as f64;
            (code, w / total * n - have)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(code, _)| code.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        toml::from_str(
            "name=\"p\"\nmodel=\"m\"\nengine=\"vllm\"\ngpu_models=[\"h100\"]\nmin_replicas=1\nmax_replicas=4\nmax_price_per_hour=3.0\ntarget_rps_per_replica=10.0\nscale_up_cooldown=\"10s\"\nscale_down_cooldown=\"60s\"\nregions=[{code=\"eu-central\"},{code=\"na-us-west\"}]\n",
        )
        .unwrap()
    }

    fn d(region: &str, rps: f64) -> (String, Demand) {
        (
            region.to_string(),
            Demand {
                requests_per_sec: rps,
                ..Demand::default()
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn scales_up_at_once_and_down_slowly_with_hysteresis() {
        let p = pool();
        let mut s = ScaleState::default();
        let t0 = Instant::now();
        assert_eq!(desired_replicas(&p, &[], &mut s, t0), 1);
        assert_eq!(
            desired_replicas(&p, &[d("eu-central", 35.0)], &mut s, t0),
            4
        );
        // 25 rps: 3 replicas would run at 83% > 70%: stay at 4.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(
            desired_replicas(&p, &[d("eu-central", 25.0)], &mut s, later),
            4
        );
        // 15 rps: one fewer is fine, but only one step per cooldown.
        assert_eq!(
            desired_replicas(&p, &[d("eu-central", 15.0)], &mut s, later),
            3
        );
        let soon = later + Duration::from_secs(5);
        assert_eq!(
            desired_replicas(&p, &[d("eu-central", 0.0)], &mut s, soon),
            3
        );
        let after = later + Duration::from_secs(61);
        assert_eq!(
            desired_replicas(&p, &[d("eu-central", 0.0)], &mut s, after),
            2
        );
        // Never above max, whatever the demand.
        let far = after + Duration::from_secs(600);
        assert_eq!(
            desired_replicas(&p, &[d("eu-central", 1e6)], &mut s, far),
            4
        );
    }

    #[test]
    fn places_new_leases_where_demand_is() {
        let p = pool();
        let demand = [
            d("eu-central", 1.0),
            d("na-us-west", 9.0),
            d("as-east", 50.0),
        ];
        // as-east is not one of the pool's regions.
        assert_eq!(place(&p, &demand, &[]).as_deref(), Some("na-us-west"));
        let have = vec!["na-us-west".to_string()];
        assert_eq!(place(&p, &demand, &have).as_deref(), Some("na-us-west"));
        // No demand: weights, spread evenly.
        assert_eq!(
            place(&p, &[], &["eu-central".into()]).as_deref(),
            Some("na-us-west")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_inside_the_request_rate_is_not_counted_twice() {
        let p = pool();
        let mut s = ScaleState::default();
        let spilled = Demand {
            requests_per_sec: 25.0,
            overflow_per_sec: 10.0,
            queue_pressure: 0.9,
        };
        // 25 rps at 10 per replica: 3, not the 4 that 25 + 10 would ask.
        assert_eq!(
            desired_replicas(
                &p,
                &[("eu-central".into(), spilled)],
                &mut s,
                Instant::now()
            ),
            3
        );
    }

    #[tokio::test(start_paused = true)]
    async fn scale_down_asks_whether_one_replica_fewer_would_run_under_seventy_percent() {
        let p = pool();
        let t0 = Instant::now();
        let at = |pressure: f64| {
            (
                "eu-central".to_string(),
                Demand {
                    requests_per_sec: 5.0,
                    queue_pressure: pressure,
                    overflow_per_sec: 0.0,
                },
            )
        };
        let mut s = ScaleState {
            target: Some(4),
            last_change: None,
        };
        // Slots 60% busy on 4 replicas would be 80% on 3: stay.
        assert_eq!(desired_replicas(&p, &[at(0.6)], &mut s, t0), 4);
        // 52% on 4 is 69% on 3: one fewer is fine (a fixed 0.5 bar on the
        // utilisation kept such pools at their size).
        assert_eq!(desired_replicas(&p, &[at(0.52)], &mut s, t0), 3);
    }
}
