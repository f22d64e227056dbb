//! Shared set-up for the controller's integration tests: a seeded sim
//! market with in-memory replicas, pools with tiny durations, and waits on
//! paused time.
#![allow(dead_code)]

pub mod scenario;

use std::sync::Arc;
use std::time::Duration;

use leasegate_controller::launcher::MemReplicas;
use leasegate_controller::market::sim::{SimConfig, SimMarket};
use leasegate_controller::pool::{Backoff, ControllerConfig, Pool};
use leasegate_controller::store::{SqliteStore, Store};

pub fn pool(min: u32, max: u32) -> Pool {
    let p: Pool = toml::from_str(&format!(
        r#"
        name = "llama"
        model = "llama-3-8b"
        engine = "vllm"
        gpu_models = ["h100", "a100"]
        min_replicas = {min}
        max_replicas = {max}
        max_price_per_hour = 3.0
        bid_window = "2s"
        readiness_timeout = "30s"
        runway_threshold = "30m"
        topup = "4h"
        unreachable_checks = 3
        unhealthy_after = "5s"
        drain_timeout = "3s"
        check_interval = "1s"
        probe_interval = "500ms"
        scale_up_cooldown = "0s"
        scale_down_cooldown = "2s"
        target_rps_per_replica = 10.0
        "#
    ))
    .unwrap();
    p.validate().unwrap();
    p
}

pub fn config(pools: Vec<Pool>) -> ControllerConfig {
    ControllerConfig {
        controller_id: "ctl-test".into(),
        pools,
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            jitter: false,
        },
    }
}

/// A sim market whose providers always bid (unless told otherwise).
pub fn sim(seed: u64, tweak: impl FnOnce(&mut SimConfig)) -> (Arc<SimMarket>, MemReplicas) {
    let mem = MemReplicas::new();
    let mut cfg = SimConfig::fast(seed);
    for p in &mut cfg.providers {
        p.no_bid_chance = 0.0;
    }
    tweak(&mut cfg);
    (Arc::new(SimMarket::new(cfg, Arc::new(mem.clone()))), mem)
}

/// A store file unique to this test, under the system temp dir.
pub fn store_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "leasegate-{name}-{}-{}.sqlite",
        std::process::id(),
        fastrand_like()
    ))
}

fn fastrand_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn open_store(path: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path).unwrap())
}

/// Polls `cond` every 100 ms of (paused) time, up to `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// Starts a controller on an in-memory store against `market`.
pub fn start(
    market: &Arc<SimMarket>,
    mem: &MemReplicas,
    pools: Vec<Pool>,
) -> (
    leasegate_controller::ControllerHandle,
    tokio::sync::watch::Receiver<Arc<leasegate_fleet::Snapshot>>,
) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    leasegate_controller::Controller::start(
        config(pools),
        market.clone(),
        store,
        Arc::new(mem.clone()),
    )
}

/// Waits until the fleet lists `n` ready endpoints (paused time, 60 s).
pub async fn until_ready(
    rx: &tokio::sync::watch::Receiver<Arc<leasegate_fleet::Snapshot>>,
    n: usize,
) -> bool {
    wait_until(Duration::from_secs(60), || rx.borrow().ready().count() == n).await
}
