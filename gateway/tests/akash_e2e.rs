//! End to end on the `akash` market: the controller acquires a lease from
//! the fake Console API, the gateway follows the controller's fleet, and a
//! chat completion flows through the gateway to the simulated replica on
//! that lease, with the replica's own key. No secret shows in any log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use leasegate_controller::akash::{AkashMarket, RetryPolicy};
use leasegate_controller::probe::HttpProber;
use leasegate_controller::store::SqliteStore;
use leasegate_controller::{Controller, ControllerConfig, Deps};
use leasegate_fake_console::{FakeConfig, FakeConsole, FakeProvider};
use leasegate_fleet::{Credential, Secret};
use leasegate_gateway::{Gateway, config::Config};

const API_KEY: &str = "console-key-e2e-0123456789";

fn controller_config() -> ControllerConfig {
    toml::from_str(
        r#"
        controller_id = "ctl-e2e"
        [[pools]]
        name = "llama"
        model = "llama-3-8b"
        engine = "vllm"
        gpu_models = ["h100"]
        min_replicas = 1
        max_replicas = 1
        max_price_per_hour = 3.0
        bid_window = "300ms"
        readiness_timeout = "10s"
        check_interval = "300ms"
        probe_interval = "200ms"
        "#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_from_the_fake_console_serves_chat_through_the_gateway() {
    capture_logs();
    let fake = FakeConsole::start(FakeConfig {
        api_key: API_KEY.into(),
        providers: vec![FakeProvider {
            owner: "akash1e2e".into(),
            price_uact: 2500.0,
            bid_delay: Duration::ZERO,
            ..FakeProvider::default()
        }],
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let policy = RetryPolicy {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let market = AkashMarket::new(&fake.url(), Secret::new(API_KEY), policy).unwrap();
    let deps = Deps::new(
        Arc::new(market),
        Arc::new(SqliteStore::in_memory().unwrap()),
        Arc::new(HttpProber::new(Duration::from_millis(500))),
    );
    let (controller, fleet) = Controller::start_with(controller_config(), deps);
    let gw = Gateway::start(Config::parse(FAST).unwrap(), fleet.clone())
        .await
        .unwrap();
    let mut ready = false;
    for _ in 0..600 {
        if gw
            .fleet
            .current()
            .models()
            .iter()
            .any(|m| m == "llama-3-8b")
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "status: {:?}\n{:#?}",
        controller.status().unwrap(),
        fake.ledger()
    );
    // The endpoint the gateway uses is the lease the fake holds.
    let ledger = fake.ledger();
    assert_eq!(ledger.active_leases().len(), 1, "{ledger:#?}");
    let lease = &ledger.active_leases()[0].leases[0];
    let snap = fleet.borrow().clone();
    let endpoint = snap.ready().next().unwrap().clone();
    assert_eq!(
        endpoint.id,
        format!("lease-{}", ledger.active_leases()[0].dseq)
    );
    assert_eq!(Some(&endpoint.url), lease.replica_url.as_ref());
    let Some(Credential::Key { key: replica_key }) = endpoint.credential.clone() else {
        panic!("no replica key published: {endpoint:?}");
    };
    // The replica demands its key: only the gateway can use it.
    let direct = send(
        &endpoint.url,
        http::Method::POST,
        "/v1/chat/completions",
        chat("llama-3-8b", false),
        &[],
    )
    .await;
    assert_eq!(direct.status, 401, "{}", direct.text());
    for stream in [false, true] {
        let r = post(
            gw.api_addr,
            "/v1/chat/completions",
            chat("llama-3-8b", stream),
        )
        .await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.text());
        if stream {
            assert!(r.text().contains("data: [DONE]"), "{}", r.text());
        } else {
            assert_eq!(r.json()["choices"][0]["message"]["role"], "assistant");
        }
    }
    controller.shutdown().await;
    // Neither the Console key nor the replica key appears in any log line
    // of the acquisition or of the requests.
    let logs = logs();
    assert!(logs.contains("replica ready"), "logs were captured");
    for secret in [API_KEY, replica_key.expose()] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}
