//! The gateway's live view of the fleet: immutable per-version state swapped atomically.

mod endpoint;
mod stats;

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashMapExt};
use leasegate_fleet::{Kind, Snapshot, State};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use endpoint::Live;
pub use endpoint::{EndpointHandle, FailureReason, InFlight, Outcome};

use crate::health::HealthConfig;

/// Cheap-to-clone handle on the current [`FleetState`].
#[derive(Clone, Debug)]
pub struct FleetView {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwap<FleetState>,
    health: Arc<HealthConfig>,
    /// Serialises publishers so two racing swaps cannot drop each other's
    /// carried-over live state. Readers never take it.
    publish: Mutex<()>,
}

impl FleetView {
    pub fn new(health: HealthConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(FleetState::empty()),
                health: Arc::new(health),
                publish: Mutex::new(()),
            }),
        }
    }

    pub fn health_config(&self) -> &HealthConfig {
        &self.inner.health
    }

    /// Builds the whole new state, then swaps it in at once. Live state
    /// (in-flight, health, averages) follows endpoint ids that persist.
    /// A snapshot older than the current one is ignored: watch channels and
    /// long-polls may deliver out of order across reconnects.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        let _guard = self.inner.publish.lock();
        let old = self.inner.current.load_full();
        if snapshot.version < old.version {
            tracing::warn!(
                current = old.version,
                offered = snapshot.version,
                "ignoring an older fleet snapshot"
            );
            return;
        }
        let next = FleetState::build(snapshot, &old, &self.inner.health);
        self.inner.current.store(Arc::new(next));
    }

    /// Follows a snapshot channel until its sender is dropped.
    pub fn subscribe_from(&self, mut rx: watch::Receiver<Arc<Snapshot>>) -> JoinHandle<()> {
        let view = self.clone();
        tokio::spawn(async move {
            loop {
                let snap = Arc::clone(&rx.borrow_and_update());
                view.publish(snap);
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// The state a request keeps for its whole lifetime.
    pub fn current(&self) -> Arc<FleetState> {
        self.inner.current.load_full()
    }
}

/// A point on the globe shared by the endpoints of one region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RegionPoint {
    pub(crate) lat: f64,
    pub(crate) lon: f64,
}

/// The endpoints of one model, pre-split so selection allocates nothing to find them.
#[derive(Debug, Default)]
struct Pool {
    primary: Vec<Arc<EndpointHandle>>,
    fallback: Vec<Arc<EndpointHandle>>,
    /// Built on the first request with an affinity key, then shared.
    ring: OnceLock<crate::route::Ring>,
}

/// One immutable version of the fleet with live per-endpoint state attached.
#[derive(Debug)]
pub struct FleetState {
    version: u64,
    snapshot: Arc<Snapshot>,
    /// Every endpoint of the snapshot, draining ones too, in snapshot order.
    endpoints: Vec<Arc<EndpointHandle>>,
    by_id: HashMap<String, usize>,
    pools: HashMap<String, Pool>,
    models: Vec<String>,
    regions: Vec<RegionPoint>,
}

/// The endpoints that may serve one model: ready, split by tier.
///
/// Availability (ejection, failing probes) changes between requests, so it
/// is not baked in here: selectors check [`EndpointHandle::is_available_at`]
/// at decision time, and [`Candidates::available`] does the same.
#[derive(Clone, Copy, Debug)]
pub struct Candidates<'a> {
    /// Lease and static endpoints, in snapshot order.
    pub primary: &'a [Arc<EndpointHandle>],
    /// Fallback endpoints, in snapshot (config) order.
    pub fallback: &'a [Arc<EndpointHandle>],
    state: &'a FleetState,
    pool: Option<&'a Pool>,
}

impl<'a> Candidates<'a> {
    pub fn is_empty(&self) -> bool {
        self.primary.is_empty() && self.fallback.is_empty()
    }

    /// Primary then fallback endpoints that may take a request right now.
    pub fn available(
        &self,
        now: tokio::time::Instant,
    ) -> impl Iterator<Item = &'a Arc<EndpointHandle>> + 'a {
        self.primary
            .iter()
            .chain(self.fallback.iter())
            .filter(move |e| e.is_available_at(now))
    }

    /// The non-fallback endpoint owning `key` on the pool's consistent-hash
    /// ring, whatever its current state.
    pub fn affinity_target(&self, key: &str) -> Option<&'a Arc<EndpointHandle>> {
        self.affinity_walk(key).next()
    }

    /// Non-fallback endpoints in ring order from `key`'s owner; endless and
    /// repeating, so bound it.
    pub fn affinity_walk(&self, key: &str) -> impl Iterator<Item = &'a Arc<EndpointHandle>> + 'a {
        let walk = self.pool.map(|pool| {
            let ring = pool
                .ring
                .get_or_init(|| crate::route::Ring::build(&pool.primary));
            ring.walk(key).filter_map(|i| pool.primary.get(i))
        });
        walk.into_iter().flatten()
    }

    pub(crate) fn region_count(&self) -> usize {
        self.state.regions.len()
    }

    /// Great-circle distance in km from `from` (lat, lon in degrees) to the
    /// endpoint's region.
    pub fn distance_km(&self, e: &EndpointHandle, from: (f64, f64)) -> Option<f64> {
        let r = self.state.regions.get(e.region_idx)?;
        Some(crate::route::haversine_km(from, (r.lat, r.lon)))
    }
}

impl FleetState {
    fn empty() -> Self {
        Self {
            version: 0,
            snapshot: Arc::new(Snapshot::default()),
            endpoints: Vec::new(),
            by_id: HashMap::new(),
            pools: HashMap::new(),
            models: Vec::new(),
            regions: Vec::new(),
        }
    }

    fn build(snapshot: Arc<Snapshot>, old: &FleetState, health: &HealthConfig) -> Self {
        let mut endpoints = Vec::with_capacity(snapshot.endpoints.len());
        let mut by_id = HashMap::with_capacity(snapshot.endpoints.len());
        let mut pools: HashMap<String, Pool> = HashMap::new();
        let mut regions: Vec<RegionPoint> = Vec::new();
        for spec in &snapshot.endpoints {
            if by_id.contains_key(&spec.id) {
                tracing::warn!(id = %spec.id, "duplicate endpoint id in snapshot; keeping the first");
                continue;
            }
            let live = old
                .endpoint(&spec.id)
                .map(|h| Arc::clone(&h.live))
                .unwrap_or_else(|| Arc::new(Live::new(health)));
            let point = RegionPoint {
                lat: spec.region.lat,
                lon: spec.region.lon,
            };
            let region_idx = match regions.iter().position(|r| *r == point) {
                Some(i) => i,
                None => {
                    regions.push(point);
                    regions.len() - 1
                }
            };
            let handle = Arc::new(EndpointHandle::new(spec.clone(), live, region_idx));
            by_id.insert(spec.id.clone(), endpoints.len());
            if spec.state == State::Ready {
                for model in &spec.models {
                    let pool = pools.entry(model.clone()).or_default();
                    match spec.kind {
                        Kind::Fallback => pool.fallback.push(Arc::clone(&handle)),
                        Kind::Lease | Kind::Static => pool.primary.push(Arc::clone(&handle)),
                    }
                }
            }
            endpoints.push(handle);
        }
        let mut models: Vec<String> = pools
            .iter()
            .filter(|(_, p)| !p.primary.is_empty())
            .map(|(m, _)| m.clone())
            .collect();
        models.sort();
        Self {
            version: snapshot.version,
            snapshot,
            endpoints,
            by_id,
            pools,
            models,
            regions,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Models served by ready non-fallback endpoints, sorted.
    pub fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    /// Whether any ready endpoint, fallbacks included, serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.pools.contains_key(model)
    }

    /// Ready endpoints serving `model`; empty when none does.
    pub fn candidates(&self, model: &str) -> Candidates<'_> {
        let pool = self.pools.get(model);
        let (primary, fallback) = match pool {
            Some(p) => (p.primary.as_slice(), p.fallback.as_slice()),
            None => (&[][..], &[][..]),
        };
        Candidates {
            primary,
            fallback,
            state: self,
            pool,
        }
    }

    /// Any endpoint of this version by id, draining ones included.
    pub fn endpoint(&self, id: &str) -> Option<&Arc<EndpointHandle>> {
        self.by_id.get(id).and_then(|&i| self.endpoints.get(i))
    }

    /// Every endpoint of this version, in snapshot order.
    pub fn endpoints(&self) -> &[Arc<EndpointHandle>] {
        &self.endpoints
    }

    /// Whether at least one ready endpoint or fallback exists (for `/ready`).
    pub fn has_ready(&self) -> bool {
        self.pools
            .values()
            .any(|p| !p.primary.is_empty() || !p.fallback.is_empty())
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
