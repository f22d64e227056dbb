//! Starting simulated replicas for sim leases, and probing replicas.
//!
//! The sim market starts one replica per lease through a [`ReplicaLauncher`];
//! the controller checks readiness through a [`Prober`]. Both have an
//! in-memory implementation ([`MemReplicas`]) so tests on paused time need
//! no sockets, and a real one (replica-sim on loopback, HTTP probes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use leasegate_fleet::Secret;
use parking_lot::Mutex;

/// What a lease asks the launcher to run.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    pub provider: String,
    pub dseq: String,
    pub models: Vec<String>,
    /// The per-deployment key the replica must require (from the SDL env).
    pub api_key: Option<Secret>,
}

/// A running replica; dropping it stops the replica.
pub trait RunningReplica: Send + Sync + std::fmt::Debug {
    fn url(&self) -> String;
    /// Makes the replica fail (or pass) its health checks, for chaos tests.
    fn set_healthy(&self, healthy: bool);
}

#[derive(Debug, thiserror::Error)]
#[error("could not start replica: {0}")]
pub struct LaunchError(pub String);

/// Starts a replica for a lease.
#[async_trait]
pub trait ReplicaLauncher: Send + Sync + 'static {
    async fn launch(&self, spec: ReplicaSpec) -> Result<Box<dyn RunningReplica>, LaunchError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0} unreachable: {1}")]
    Unreachable(&'static str, String),
    #[error("{0} answered {1}")]
    Status(&'static str, u16),
    #[error("model {0} not listed by /v1/models")]
    ModelMissing(String),
}

/// Checks a replica: `GET /health`, then `GET /v1/models` lists the model.
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    async fn probe(&self, url: &str, key: Option<&Secret>, model: &str) -> Result<(), ProbeError>;
}

/// In-memory replicas: `mem://replica-N` URLs whose health lives in a map.
///
/// One value serves as both launcher and prober, so a test can start sim
/// leases and check them without binding a socket (and so on paused time).
#[derive(Clone, Debug, Default)]
pub struct MemReplicas {
    inner: Arc<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    next: AtomicU64,
    /// url → (models, healthy). Absent once the replica was dropped.
    live: Mutex<HashMap<String, (Vec<String>, bool)>>,
}

impl MemReplicas {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many replicas are running now.
    pub fn running(&self) -> usize {
        self.inner.live.lock().len()
    }
}

#[derive(Debug)]
struct MemReplica {
    url: String,
    inner: Arc<MemInner>,
}

impl RunningReplica for MemReplica {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn set_healthy(&self, healthy: bool) {
        if let Some(entry) = self.inner.live.lock().get_mut(&self.url) {
            entry.1 = healthy;
        }
    }
}

impl Drop for MemReplica {
    fn drop(&mut self) {
        self.inner.live.lock().remove(&self.url);
    }
}

#[async_trait]
impl ReplicaLauncher for MemReplicas {
    async fn launch(&self, spec: ReplicaSpec) -> Result<Box<dyn RunningReplica>, LaunchError> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let url = format!("mem://replica-{n}");
        self.inner
            .live
            .lock()
            .insert(url.clone(), (spec.models, true));
        Ok(Box::new(MemReplica {
            url,
            inner: self.inner.clone(),
        }))
    }
}

#[async_trait]
impl Prober for MemReplicas {
    async fn probe(&self, url: &str, _key: Option<&Secret>, model: &str) -> Result<(), ProbeError> {
        let live = self.inner.live.lock();
        match live.get(url) {
            None => Err(ProbeError::Unreachable(
                "/health",
                "connection refused".into(),
            )),
            Some((_, false)) => Err(ProbeError::Status("/health", 503)),
            Some((models, true)) if !models.iter().any(|m| m == model) => {
                Err(ProbeError::ModelMissing(model.to_string()))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Starts a `leasegate-replica-sim` replica on `127.0.0.1:0` per lease,
/// serving the lease's model and requiring its key.
#[derive(Clone, Debug, Default)]
pub struct SimReplicaLauncher {
    /// Latency, faults and limits of every replica; models and key are
    /// taken from the lease.
    pub base: leasegate_replica_sim::Behavior,
}

/// A replica-sim replica; dropping it closes its listener and connections.
#[derive(Debug)]
struct SimReplica {
    replica: leasegate_replica_sim::Replica,
    base: leasegate_replica_sim::Behavior,
}

impl RunningReplica for SimReplica {
    fn url(&self) -> String {
        self.replica.url()
    }
    fn set_healthy(&self, healthy: bool) {
        // An unhealthy replica accepts connections and never answers: the
        // hardest failure to see, and the one probes must catch.
        let mut b = self.base.clone();
        b.blackhole = !healthy;
        self.replica.set_behavior(b);
    }
}

#[async_trait]
impl ReplicaLauncher for SimReplicaLauncher {
    async fn launch(&self, spec: ReplicaSpec) -> Result<Box<dyn RunningReplica>, LaunchError> {
        let mut b = self.base.clone();
        b.models = spec.models;
        b.api_key = spec.api_key.map(|k| k.expose().to_string());
        let replica = leasegate_replica_sim::Replica::start(b.clone())
            .await
            .map_err(|e| LaunchError(e.to_string()))?;
        Ok(Box::new(SimReplica { replica, base: b }))
    }
}
