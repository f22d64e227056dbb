//! The demo fleet behind `leasegate serve`: simulated replicas on loopback in three regions.

use std::sync::Arc;

use leasegate_fleet::{Endpoint, Engine, Kind, Region, Snapshot, State};
use leasegate_replica_sim::{Behavior, Replica};
use tokio::sync::watch;

pub const DEMO_MODELS: &[&str] = &["llama-3.1-8b-instruct", "bge-small-en"];

/// (region code, country, lat, lon) of each demo replica.
const REGIONS: &[(&str, &str, f64, f64)] = &[
    ("na-us-west", "US", 37.77, -122.42),
    ("eu-central", "DE", 50.11, 8.68),
    ("as-east", "JP", 35.68, 139.69),
];

/// Replicas plus the snapshot channel that describes them.
///
/// The channel is the seam `serve` will later take from the controller on the
/// simulated market instead.
#[derive(Debug)]
pub struct DemoFleet {
    replicas: Vec<Replica>,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl DemoFleet {
    pub async fn start() -> std::io::Result<Self> {
        let mut replicas = Vec::new();
        let mut endpoints = Vec::new();
        for (code, country, lat, lon) in REGIONS {
            let replica = Replica::start(Behavior {
                models: DEMO_MODELS.iter().map(|m| (*m).to_owned()).collect(),
                ..Behavior::default()
            })
            .await?;
            endpoints.push(Endpoint {
                id: format!("sim-{code}"),
                url: replica.url(),
                kind: Kind::Lease,
                engine: Engine::Vllm,
                models: DEMO_MODELS.iter().map(|m| (*m).to_owned()).collect(),
                region: Region {
                    code: (*code).to_owned(),
                    country: Some((*country).to_owned()),
                    lat: *lat,
                    lon: *lon,
                },
                provider: None,
                price_per_hour_usd: 1.0,
                max_concurrency: 32,
                state: State::Ready,
                credential: None,
            });
            tracing::info!(region = code, url = %replica.url(), "demo replica started");
            replicas.push(replica);
        }
        let (tx, _) = watch::channel(Arc::new(Snapshot {
            version: 1,
            generated_at_ms: 0,
            endpoints,
        }));
        Ok(Self { replicas, tx })
    }

    pub fn fleet(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub async fn shutdown(self) {
        for r in self.replicas {
            r.shutdown().await;
        }
    }
}
