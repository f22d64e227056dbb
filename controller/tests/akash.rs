//! The `akash` market against the fake Console: lifecycle, retries, status
//! null, pagination, close reasons, SDL schema and config. (Secrets in
//! logs: `akash_secrets.rs`, its own binary for its global subscriber.)

use std::time::{Duration, Instant};

use leasegate_controller::akash::sdl::{self, Expose};
use leasegate_controller::akash::{AkashConfig, AkashMarket, close_all_owned, tag};
use leasegate_controller::market::{
    BidState, DeploymentState, Dseq, LeaseState, Market, MarketError, Tag,
};
use leasegate_fake_console::{Control, FakeConsole, Fault, schema};
use leasegate_fleet::{Engine, Secret};

use crate::akash_support::*;

#[tokio::test]
async fn full_lifecycle_yields_a_reachable_replica_and_closes_cleanly() {
    let (fake, m) = setup().await;
    for (engine, expose) in [(Engine::Vllm, Expose::Port), (Engine::Tgi, Expose::Ingress)] {
        let t = tag(&format!("intent-{engine:?}"));
        let (dseq, url) = acquire(&m, &params(engine, expose), &t).await;
        // The replica behind the lease demands the per-replica key.
        assert_eq!(get_status(&url, Some(REPLICA_KEY)).await, 200, "{engine:?}");
        assert_eq!(get_status(&url, None).await, 401, "{engine:?}");
        let st = m.status(&dseq).await.unwrap();
        let escrow = st.escrow.unwrap();
        assert!(
            escrow.funds_usd > 4.9 && escrow.runway > Duration::from_secs(3600),
            "{escrow:?}"
        );
        // Creating the same lease again is harmless (idempotent).
        let bids = m.bids(&dseq).await.unwrap();
        let won = bids.iter().find(|b| b.state == BidState::Active).unwrap();
        assert_eq!(won.id.provider, "akash1cheap");
        assert!(bids.iter().any(|b| b.state == BidState::Lost));
        m.create_lease(&won.id, "manifest").await.unwrap();
        assert_eq!(
            fake.ledger()
                .deployments
                .iter()
                .filter(|d| d.dseq == dseq.0)
                .count(),
            1
        );
    }
    // A fresh market (a restarted controller) recognises both from group names.
    let fresh = AkashMarket::new(&fake.url(), Secret::new(API_KEY), policy()).unwrap();
    let listed = fresh.list_deployments().await.unwrap();
    let mut intents: Vec<_> = listed
        .iter()
        .map(|d| d.tag.clone().unwrap().intent_id)
        .collect();
    intents.sort();
    assert_eq!(intents, ["intent-Tgi", "intent-Vllm"]);
    m.set_auto_top_up(&listed[0].dseq, false).await.unwrap();
    assert!(!m.auto_top_up(&listed[0].dseq).await.unwrap());
    // Stop everything this controller owns; closing twice is fine.
    let closed = close_all_owned(&fresh, "ctl-test").await.unwrap();
    assert_eq!(closed.len(), 2);
    m.close(&closed[0]).await.unwrap();
    m.close(&Dseq("999999999".into())).await.unwrap();
    assert!(fresh.list_deployments().await.unwrap().is_empty());
    let ledger = fake.ledger();
    assert!(ledger.deployments.iter().all(|d| d.closed_ms.is_some()));
    assert!(ledger.deployments.iter().all(|d| d.leases.len() == 1));
    assert_eq!(
        m.status(&closed[0]).await.unwrap().state,
        DeploymentState::Closed
    );
}

#[tokio::test]
async fn close_all_owned_leaves_other_controllers_and_humans_alone() {
    let (fake, m) = setup().await;
    let p = params(Engine::Vllm, Expose::Port);
    let rendered = sdl::render(&p).unwrap();
    m.create_deployment(&rendered, &tag("mine")).await.unwrap();
    let other = Tag {
        controller_id: "ctl-other".into(),
        intent_id: "theirs".into(),
    };
    m.create_deployment(&rendered, &other).await.unwrap();
    // A deployment made by hand in the Console UI: group `dcloud`, no tag.
    // (The placeholder in a comment only gets it past `create_deployment`.)
    let manual = rendered.replace(tag::PLACEHOLDER, "dcloud") + "\n# " + tag::PLACEHOLDER + "\n";
    m.create_deployment(&manual, &other).await.unwrap();
    // A restarted controller: nothing cached, tags read from group names.
    let fresh = AkashMarket::new(&fake.url(), Secret::new(API_KEY), policy()).unwrap();
    let tags: Vec<_> = fresh
        .list_deployments()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.tag)
        .collect();
    assert_eq!(tags.iter().filter(|t| t.is_none()).count(), 1, "{tags:?}");
    let closed = close_all_owned(&fresh, "ctl-test").await.unwrap();
    assert_eq!(closed.len(), 1);
    let open: Vec<_> = fake
        .ledger()
        .deployments
        .into_iter()
        .filter(|d| d.closed_ms.is_none())
        .collect();
    let mut groups: Vec<_> = open.iter().map(|d| d.group_name.clone()).collect();
    groups.sort();
    assert_eq!(groups, ["dcloud".to_owned(), tag::encode(&other).unwrap()]);
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured() {
    let (fake, m) = setup().await;
    let created = m
        .create_deployment(
            &sdl::render(&params(Engine::Vllm, Expose::Port)).unwrap(),
            &tag("rl"),
        )
        .await
        .unwrap();
    fake.inject(Fault {
        method: Some("GET".into()),
        path_prefix: "/v1/bids".into(),
        status: 429,
        times: 1,
        retry_after: Some(1),
        echo_request: false,
    });
    let started = Instant::now();
    let bids = m.bids(&created.dseq).await.unwrap();
    assert!(!bids.is_empty());
    // Waited as told (a lower bound on correctness, not a speed check).
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let asks = fake
        .requests()
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/bids"))
        .count();
    assert_eq!(asks, 2);
    // A Retry-After beyond the policy goes back to the caller.
    fake.inject(Fault {
        method: None,
        path_prefix: "/v1/bids".into(),
        status: 429,
        times: 1,
        retry_after: Some(3600),
        echo_request: false,
    });
    match m.bids(&created.dseq).await {
        Err(MarketError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3600)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_calls_only() {
    let (fake, m) = setup().await;
    let rendered = sdl::render(&params(Engine::Vllm, Expose::Port)).unwrap();
    fake.inject(Fault {
        method: Some("POST".into()),
        path_prefix: "/v1/deployments".into(),
        status: 500,
        times: 1,
        retry_after: None,
        echo_request: false,
    });
    let err = m
        .create_deployment(&rendered, &tag("once"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let posts = fake
        .requests()
        .iter()
        .filter(|(meth, p)| meth == "POST" && p.starts_with("/v1/deployments"))
        .count();
    assert_eq!(
        posts, 1,
        "POST /v1/deployments must not be repeated blindly"
    );
    let created = m.create_deployment(&rendered, &tag("once")).await.unwrap();
    for path in ["/v1/deployments/", "/v1/leases"] {
        fake.inject(Fault {
            method: None,
            path_prefix: path.into(),
            status: 500,
            times: 2,
            retry_after: None,
            echo_request: false,
        });
    }
    m.status(&created.dseq).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let bid = m.bids(&created.dseq).await.unwrap().remove(0);
    m.create_lease(&bid.id, &created.manifest).await.unwrap();
    assert_eq!(
        fake.ledger()
            .deployments
            .iter()
            .filter(|d| !d.leases.is_empty())
            .count(),
        1
    );
    // The deposit is not idempotent either: one 503 is one failure.
    fake.inject(Fault {
        method: None,
        path_prefix: "/v1/deposit-deployment".into(),
        status: 503,
        times: 1,
        retry_after: None,
        echo_request: false,
    });
    assert!(m.deposit(&created.dseq, 1.0).await.is_err());
    m.deposit(&created.dseq, 1.0).await.unwrap();
    let deposits = fake
        .requests()
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/deposit"))
        .count();
    assert_eq!(deposits, 2);
}

#[tokio::test]
async fn status_null_reads_as_unreachable_and_close_reasons_come_through() {
    let (fake, m) = setup().await;
    let p = params(Engine::Vllm, Expose::Port);
    let mut dseqs = Vec::new();
    for i in 0..4 {
        dseqs.push(acquire(&m, &p, &tag(&format!("r{i}"))).await.0);
    }
    let ctl = |c| fake.control(c).unwrap();
    ctl(Control::Unreachable {
        dseq: dseqs[0].0.clone(),
        on: true,
    });
    assert_eq!(m.status(&dseqs[0]).await.unwrap().leases[0].services, None);
    ctl(Control::Unreachable {
        dseq: dseqs[0].0.clone(),
        on: false,
    });
    assert!(
        m.status(&dseqs[0]).await.unwrap().leases[0]
            .services
            .is_some()
    );
    for (d, reason) in dseqs[1..]
        .iter()
        .zip(["unstable", "manifest_timeout", "decommission"])
    {
        ctl(Control::CloseLease {
            dseq: d.0.clone(),
            reason: reason.into(),
        });
        let l = &m.status(d).await.unwrap().leases[0];
        assert_eq!(l.state, LeaseState::Closed);
        assert_eq!(l.close_reason.as_deref(), Some(reason));
    }
    ctl(Control::DrainEscrow {
        dseq: dseqs[0].0.clone(),
    });
    let st = m.status(&dseqs[0]).await.unwrap();
    assert_eq!(st.leases[0].state, LeaseState::InsufficientFunds);
    assert_eq!(
        st.leases[0].close_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(st.escrow.unwrap().funds_usd, 0.0);
}

#[tokio::test]
async fn listing_walks_every_page() {
    let (fake, m) = setup().await;
    let m = m.with_page_size(2);
    let rendered = sdl::render(&params(Engine::Vllm, Expose::Port)).unwrap();
    for i in 0..5 {
        m.create_deployment(&rendered, &tag(&format!("p{i}")))
            .await
            .unwrap();
    }
    let listed = m.list_deployments().await.unwrap();
    assert_eq!(listed.len(), 5);
    let pages: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|(meth, p)| meth == "GET" && p.starts_with("/v1/deployments?"))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        pages,
        [
            "/v1/deployments?skip=0&limit=2",
            "/v1/deployments?skip=2&limit=2",
            "/v1/deployments?skip=4&limit=2"
        ]
    );
}

fn reference(name: &str) -> Option<std::path::PathBuf> {
    // `../shared` beside the checkout; LEASEGATE_SHARED overrides it (worktrees).
    let shared = std::env::var_os("LEASEGATE_SHARED").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        std::path::PathBuf::from,
    );
    let p = shared.join("reference/akash").join(name);
    if p.exists() {
        Some(p)
    } else {
        println!("SKIP: {} is absent", p.display());
        None
    }
}

#[test]
fn rendered_sdls_match_the_sdl_schema() {
    let Some(path) = reference("sdl-input.schema.yaml") else {
        return;
    };
    let schema: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (engine, expose, region) in [
        (Engine::Vllm, Expose::Ingress, Some("eu-central")),
        (Engine::Tgi, Expose::Port, None),
    ] {
        let mut p = params(engine, expose);
        p.region = region.map(str::to_owned);
        p.hf_token = Some(Secret::new("hf_token_value_123"));
        let rendered = tag::apply(&sdl::render(&p).unwrap(), &tag("schema")).unwrap();
        let doc: serde_json::Value = serde_yaml::from_str(&rendered).unwrap();
        let errors = schema::validate(&schema, &schema, &doc);
        assert!(errors.is_empty(), "{engine:?}: {errors:#?}\n{rendered}");
        let group = doc["profiles"]["placement"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        assert_eq!(tag::decode(&group), Some(tag("schema")));
        assert_eq!(doc["deployment"]["replica"][&group]["count"], 1);
        assert_eq!(
            doc["profiles"]["placement"][&group]["signedBy"]["anyOf"][0],
            sdl::DEFAULT_AUDITOR
        );
        let gpu = &doc["profiles"]["compute"]["replica"]["resources"]["gpu"]["attributes"]["vendor"]
            ["nvidia"][0];
        assert_eq!(gpu["model"], "h100");
        let text = rendered.to_string();
        match engine {
            Engine::Tgi => assert!(text.contains(&format!("API_KEY={REPLICA_KEY}"))),
            _ => assert!(text.contains(&format!("\"--api-key\",\"{REPLICA_KEY}\""))),
        }
        if region.is_some() {
            assert_eq!(
                doc["profiles"]["placement"][&group]["attributes"]["location-region"],
                "eu-central"
            );
        }
    }
    // The schema check can fail: a broken SDL is caught.
    let bad: serde_json::Value =
        serde_json::json!({"version": "2.0", "services": {}, "profiles": {}, "deployment": {}});
    assert!(!schema::validate(&schema, &schema, &bad).is_empty());
}

#[test]
fn config_akash_toml_parses_and_validates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/akash.toml");
    let cfg: AkashConfig = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.api_key_env, "AKASH_CONSOLE_API_KEY");
    assert_eq!(cfg.request_timeout, Duration::from_secs(20));
    assert_eq!(cfg.signed_by().len(), 1);
    assert!(cfg.price_caps_usd_per_hour["h100"] > 0.0);
    let typo = "base_url = \"https://x\"\napi_key_env = \"K\"\nbid_windw = \"9s\"\n[price_caps_usd_per_hour]\nh100 = 1.0\n";
    let err = toml::from_str::<AkashConfig>(typo).unwrap_err().to_string();
    assert!(err.contains("bid_windw"), "{err}");
    // The bid window is the pool's: the market section refuses it by name.
    let stale = "base_url = \"https://x\"\napi_key_env = \"K\"\nbid_window = \"9s\"\n[price_caps_usd_per_hour]\nh100 = 1.0\n";
    let err = toml::from_str::<AkashConfig>(stale)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bid_window"), "{err}");
}

#[tokio::test]
async fn bids_arrive_over_time_and_expire() {
    let mut cfg = fake_config();
    cfg.bid_ttl = Duration::from_millis(300);
    for p in &mut cfg.providers {
        p.bid_delay = Duration::from_millis(150);
    }
    let fake = FakeConsole::start(cfg).await.unwrap();
    let m = AkashMarket::new(&fake.url(), Secret::new(API_KEY), policy()).unwrap();
    let p = params(Engine::Vllm, Expose::Port);
    let created = m
        .create_deployment(&sdl::render(&p).unwrap(), &tag("late"))
        .await
        .unwrap();
    assert!(m.bids(&created.dseq).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = m.bids(&created.dseq).await.unwrap();
    assert!(
        !open.is_empty() && open.iter().all(|b| b.state == BidState::Open),
        "{open:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = m.bids(&created.dseq).await.unwrap();
    assert!(
        expired.iter().all(|b| b.state == BidState::Closed),
        "{expired:?}"
    );
    // Accepting an expired bid is refused, and no lease appears.
    let err = m
        .create_lease(&open[0].id, &created.manifest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MarketError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert!(fake.ledger().deployments[0].leases.is_empty());
}
