//! The sim market with real replica-sim replicas on loopback and HTTP
//! probes, on real (short) time: what `leasegate serve` runs by default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use leasegate_controller::Controller;
use leasegate_controller::launcher::SimReplicaLauncher;
use leasegate_controller::market::sim::{SimConfig, SimMarket};
use leasegate_controller::probe::HttpProber;
use leasegate_controller::store::SqliteStore;
use leasegate_fleet::Credential;
use support::*;

async fn get(url: &str, key: Option<&str>) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = http::Request::get(url);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_run_real_replicas_that_require_their_own_key() {
    let mut cfg = SimConfig::fast(31);
    for p in &mut cfg.providers {
        p.no_bid_chance = 0.0;
    }
    cfg.replica_start_delay = Duration::from_millis(50);
    let market = Arc::new(SimMarket::new(cfg, Arc::new(SimReplicaLauncher::default())));
    let mut p = pool(1, 1);
    p.bid_window = Duration::from_millis(300);
    p.probe_interval = Duration::from_millis(100);
    p.check_interval = Duration::from_millis(200);
    p.unhealthy_after = Duration::from_millis(600);
    p.drain_timeout = Duration::from_millis(300);
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let prober = Arc::new(HttpProber::new(Duration::from_millis(300)));
    let (h, rx) = Controller::start(config(vec![p]), market.clone(), store, prober);
    assert!(wait_until(Duration::from_secs(20), || rx.borrow().ready().count() == 1).await);
    let e = rx.borrow().ready().next().cloned().unwrap();
    assert!(e.url.starts_with("http://127.0.0.1:"));
    let Some(Credential::Key { key }) = &e.credential else {
        panic!("no key")
    };
    let models = format!("{}/v1/models", e.url);
    assert_eq!(get(&models, Some(key.expose())).await, 200);
    assert_eq!(
        get(&models, None).await,
        401,
        "the replica must require its key"
    );
    assert_eq!(get(&models, Some("sk-wrong")).await, 401);
    // A replica that stops answering is replaced, make-before-break.
    let dseq = e.id.trim_start_matches("lease-").to_string();
    market.set_replica_healthy(&dseq, false);
    let replaced = wait_until(Duration::from_secs(20), || {
        let s = rx.borrow();
        s.ready().count() == 1 && s.ready().all(|x| x.id != e.id)
    })
    .await;
    assert!(replaced, "{:?}", h.status().unwrap());
    assert!(
        wait_until(Duration::from_secs(5), || market
            .ledger()
            .by_dseq(&dseq)
            .unwrap()
            .closed_at
            .is_some())
        .await
    );
    assert_eq!(market.ledger().active_leases().len(), 1);
    h.shutdown().await;
}
