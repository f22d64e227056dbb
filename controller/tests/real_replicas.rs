//! The sim market with real replica-sim replicas on loopback and HTTP
//! probes, on real (short) time: what `leasegate serve` runs by default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_tracks_the_long_poll_keeps_the_last_snapshot_and_restarts_from_its_cache() {
    use leasegate_controller::fleet::{Publisher, fleet_handler};
    use leasegate_controller::fleet_follow::{FollowConfig, follow};
    let store = SqliteStore::in_memory().unwrap();
    let (publisher, rx) = Publisher::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let rx = rx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    fleet_handler(rx.clone(), req, Duration::from_millis(300))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    let cache = store_path("fleet-cache").with_extension("json");
    let mut cfg = FollowConfig::new(format!("http://{addr}"));
    cfg.cache_path = Some(cache.clone());
    cfg.retry = Duration::from_millis(50);
    let (frx, task) = follow(cfg.clone());
    let mut ep = leasegate_fleet::Endpoint {
        id: "lease-1".into(),
        url: "http://127.0.0.1:9".into(),
        kind: leasegate_fleet::Kind::Lease,
        engine: leasegate_fleet::Engine::Vllm,
        models: vec!["m".into()],
        region: leasegate_fleet::Region {
            code: "eu-central".into(),
            country: None,
            lat: 0.0,
            lon: 0.0,
        },
        provider: None,
        price_per_hour_usd: 2.0,
        max_concurrency: 4,
        state: leasegate_fleet::State::Ready,
        credential: Some(Credential::Key {
            key: leasegate_fleet::Secret::new("sk-x"),
        }),
    };
    let v1 = publisher.publish(&store, vec![ep.clone()]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || frx.borrow().version == v1).await);
    ep.state = leasegate_fleet::State::Draining;
    let v2 = publisher.publish(&store, vec![ep.clone()]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || frx.borrow().version == v2).await);
    assert_eq!(
        frx.borrow().endpoints[0].state,
        leasegate_fleet::State::Draining
    );
    // The controller goes away: the follower keeps what it had.
    server.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(frx.borrow().version, v2);
    task.abort();
    // A restarted follower starts from the cache, controller or not.
    let (again, task) = follow(cfg);
    assert_eq!(again.borrow().version, v2);
    assert_eq!(again.borrow().endpoints, vec![ep]);
    task.abort();
    let _ = std::fs::remove_file(&cache);
}
