//! Shared helpers for the `akash` market tests: a fake Console with three
//! providers, a fast retry policy, SDL parameters and one acquisition.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use leasegate_controller::akash::sdl::{self, Expose, GpuSpec, SdlParams};
use leasegate_controller::akash::{AkashMarket, RetryPolicy};
use leasegate_controller::market::{BidState, Dseq, LeaseState, Market, Tag};
use leasegate_fake_console::{FakeConfig, FakeConsole, FakeProvider};
use leasegate_fleet::{Engine, Secret};

use crate::support as base;
#[allow(unused_imports)]
pub use base::{open_store, scenario, store_path};

pub const API_KEY: &str = "console-key-0123456789";
pub const REPLICA_KEY: &str = "replica-key-abcdefghijklmnop";

pub fn fake_config() -> FakeConfig {
    FakeConfig {
        api_key: API_KEY.into(),
        providers: vec![
            FakeProvider {
                owner: "akash1cheap".into(),
                price_uact: 2000.0,
                bid_delay: Duration::ZERO,
                ..FakeProvider::default()
            },
            FakeProvider {
                owner: "akash1dear".into(),
                price_uact: 4000.0,
                bid_delay: Duration::from_millis(50),
                region: "us-west".into(),
                ..FakeProvider::default()
            },
            FakeProvider {
                owner: "akash1a100".into(),
                gpu_model: "a100".into(),
                price_uact: 1000.0,
                bid_delay: Duration::ZERO,
                ..FakeProvider::default()
            },
        ],
        ..FakeConfig::default()
    }
}

pub fn policy() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(10),
        attempts: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

pub async fn setup() -> (FakeConsole, AkashMarket) {
    let fake = FakeConsole::start(fake_config()).await.unwrap();
    let market = AkashMarket::new(&fake.url(), Secret::new(API_KEY), policy()).unwrap();
    (fake, market)
}

pub fn params(engine: Engine, expose: Expose) -> SdlParams {
    SdlParams {
        engine,
        image: match engine {
            Engine::Tgi => "ghcr.io/huggingface/text-generation-inference:3.3.4".into(),
            _ => "vllm/vllm-openai:v0.10.1".into(),
        },
        model: "meta-llama/Llama-3.1-8B-Instruct".into(),
        served_model_name: Some("llama-8b".into()),
        gpus: vec![GpuSpec {
            model: "h100".into(),
            ram: Some("80Gi".into()),
        }],
        gpu_units: 1,
        cpu_units: 8.0,
        memory: "64Gi".into(),
        storage: "100Gi".into(),
        shm: "10Gi".into(),
        expose,
        price_cap_uact: sdl::uact_per_block(3.0),
        replica_key: Secret::new(REPLICA_KEY),
        hf_token: None,
        region: None,
        signed_by: vec![sdl::DEFAULT_AUDITOR.into()],
        extra_args: vec!["--max-model-len".into(), "8192".into()],
    }
}

pub fn tag(intent: &str) -> Tag {
    Tag {
        controller_id: "ctl-test".into(),
        intent_id: intent.into(),
    }
}

/// Create, collect bids, lease the cheapest matching one; returns the dseq
/// and the replica URL from the lease status.
pub async fn acquire(m: &AkashMarket, p: &SdlParams, t: &Tag) -> (Dseq, String) {
    let rendered = sdl::render(p).unwrap();
    let created = m.create_deployment(&rendered, t).await.unwrap();
    let mut bids = Vec::new();
    for _ in 0..100 {
        bids = m.bids(&created.dseq).await.unwrap();
        if bids.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(bids.iter().all(|b| b.gpu_models == ["h100"]), "{bids:?}");
    let best = bids
        .iter()
        .filter(|b| b.state == BidState::Open)
        .min_by(|a, b| {
            a.price
                .amount_per_block
                .total_cmp(&b.price.amount_per_block)
        })
        .unwrap();
    assert_eq!(best.id.provider, "akash1cheap");
    assert!((best.price.usd_per_hour().unwrap() - 1.2).abs() < 1e-9);
    m.create_lease(&best.id, &created.manifest).await.unwrap();
    let st = m.status(&created.dseq).await.unwrap();
    let lease = &st.leases[0];
    assert_eq!(lease.state, LeaseState::Active);
    let url = lease.services.as_ref().unwrap()[0].url.clone();
    (created.dseq, url)
}

pub async fn get_status(url: &str, bearer: Option<&str>) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut req = http::Request::get(format!("{url}/v1/models"));
    if let Some(k) = bearer {
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

/// The sim tests' pool, with real-time durations short enough for tests
/// against the fake (which runs on real sockets: the clock cannot pause).
pub fn controller_pool(min: u32, max: u32) -> leasegate_controller::Pool {
    let mut p = base::pool(min, max);
    p.bid_window = Duration::from_millis(300);
    p.readiness_timeout = Duration::from_secs(10);
    p.unhealthy_after = Duration::from_secs(1);
    p.drain_timeout = Duration::from_secs(1);
    p.check_interval = Duration::from_millis(300);
    p.probe_interval = Duration::from_millis(200);
    p.validate().unwrap();
    p
}

pub fn controller_config(
    pools: Vec<leasegate_controller::Pool>,
) -> leasegate_controller::ControllerConfig {
    let mut c = base::config(pools);
    c.backoff.base = Duration::from_millis(300);
    c.backoff.max = Duration::from_secs(2);
    c
}

/// The controller as `leasegate controller --market akash` builds it: the
/// akash market over the fake's URL, the default (akash) SDL renderer, a
/// real HTTP prober.
pub fn akash_deps(
    fake: &FakeConsole,
    store: std::sync::Arc<dyn leasegate_controller::store::Store>,
) -> leasegate_controller::Deps {
    let market = AkashMarket::new(&fake.url(), Secret::new(API_KEY), policy()).unwrap();
    leasegate_controller::Deps::new(
        std::sync::Arc::new(market),
        store,
        std::sync::Arc::new(leasegate_controller::probe::HttpProber::new(
            Duration::from_millis(500),
        )),
    )
}

/// Polls `cond` every 50 ms (real time), up to `limit`.
pub async fn wait_real(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}
