//! `serve` end to end, in process, on the simulated market: leases answer,
//! providers die under load and the pool recovers, and a gateway following a
//! controller over HTTP survives the controller and its own restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use leasegate_controller::status::ControllerStatus;
use leasegate_fleet::{Kind, Secret};
use leasegate_gateway::cli::{
    GatewayArgs,
    gateway::GatewayOnly,
    serve::{ControllerOnly, Served},
    unified::{self, Defaults, Unified},
};
use tokio::time::Instant;

const LLAMA: &str = "llama-3.1-8b-instruct";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "leasegate-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built-in serve config on loopback port 0 with its own state file.
fn serve_config(dir: &Path, seed: u64) -> Unified {
    serve_config_with(dir, seed, "")
}

/// [`serve_config`] with more `[controller]` keys.
fn serve_config_with(dir: &Path, seed: u64, controller: &str) -> Unified {
    let text = format!(
        r#"
[listen]
api = "127.0.0.1:0"
admin = "127.0.0.1:0"

[timeouts]
connect = "1s"
first_token = "10s"
headers = "30s"
drain = "2s"

[controller]
id = "serve-test"
state_file = {state:?}
admin = "127.0.0.1:0"
demand_interval = "500ms"
{controller}

[controller.backoff]
base = "500ms"
max = "5s"

[market]
kind = "sim"

[market.sim]
seed = {seed}
speedup = 30.0
"#,
        state = dir.join("state.sqlite").display().to_string()
    );
    unified::parse(&text, Defaults::Serve).unwrap()
}

/// Polls `cond` every 100 ms for up to `limit`.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// Waits until the gateway's fleet view has a replica of llama.
async fn until_serving(gateway: &leasegate_gateway::Running, limit: Duration) -> bool {
    wait_until(limit, || gateway.fleet.current().serves(LLAMA)).await
}

fn ready(status: &ControllerStatus, pool: &str) -> u32 {
    status
        .pools
        .iter()
        .find(|p| p.name == pool)
        .map_or(0, |p| p.ready)
}

/// Waits (up to 60 s) until the controller has llama's minimum of 3 ready.
async fn until_llama_ready(handle: &leasegate_controller::ControllerHandle) -> bool {
    wait_until(Duration::from_secs(60), || {
        handle.status().is_ok_and(|s| ready(&s, "llama") >= 3)
    })
    .await
}

/// A chat completion, streaming or not, counted as a success only when
/// the whole answer arrived (a stream cut mid-way is an error).
async fn one_request(api: SocketAddr, stream: bool, region: Option<&str>) -> bool {
    let headers: Vec<(&str, &str)> = region
        .map(|r| vec![("x-leasegate-region", r)])
        .unwrap_or_default();
    let reply = support::send(
        &support::url(api),
        http::Method::POST,
        "/v1/chat/completions",
        bytes::Bytes::from(support::chat(LLAMA, stream)),
        &headers,
    )
    .await;
    let text = reply.text();
    let ok = reply.status == 200
        && if stream {
            text.ends_with("data: [DONE]\n\n") && !text.contains("event: error")
        } else {
            text.contains("\"choices\"")
        };
    // The first few failures are shown, to explain the error rate.
    static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if !ok && SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
        let end = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
        println!("failed request: {} {}", reply.status, &text[..end]);
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_answering_while_the_sim_kills_providers_and_the_pool_recovers() {
    let _heavy = crate::support::heavy().await;
    let dir = temp_dir("serve-chaos");
    let served = Served::start(serve_config(&dir, 7), None, None)
        .await
        .unwrap();
    let api = served.gateway.api_addr;
    let handle = served.control.handle.clone();
    assert!(
        until_llama_ready(&handle).await,
        "the pool never reached its minimum: {:?}",
        handle.status()
    );
    // Wait for the gateway to have the fleet too, then a lease answers.
    assert!(until_serving(&served.gateway, Duration::from_secs(10)).await);
    assert!(one_request(api, false, None).await);
    assert!(
        served
            .gateway
            .fleet
            .current()
            .endpoints()
            .iter()
            .all(|e| e.spec.kind == Kind::Lease),
        "serve's config has no static endpoint or fallback: every answer is a lease's"
    );

    let sim = served.control.sim.clone().unwrap();
    let leases_before = sim.ledger().deployments.len();
    let chaos = sim.spawn_chaos(Duration::from_secs(6), Duration::from_secs(6));
    // Bounded load: 4 clients, 24 s (four provider deaths), at most 1500 requests each; every
    // fourth request streams, one client says it is in eu-central.
    let deadline = Instant::now() + Duration::from_secs(24);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(async move {
                let region = (w == 0).then_some("eu-central");
                let (mut ok, mut total) = (0u32, 0u32);
                while Instant::now() < deadline && total < 1500 {
                    total += 1;
                    ok += u32::from(one_request(api, total % 4 == 0, region).await);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (ok, total)
            })
        })
        .collect();
    let (mut ok, mut total) = (0u32, 0u32);
    for w in workers {
        let (o, t) = w.await.unwrap();
        ok += o;
        total += t;
    }
    chaos.abort();
    let errors = total - ok;
    let rate = f64::from(errors) / f64::from(total.max(1));
    println!(
        "serve under provider chaos: {errors} errors in {total} requests = {:.2}% error rate",
        rate * 100.0
    );

    // A replaced lease is closed only once its replacement is ready, which on
    // a loaded machine can come after the load ends: watch a while longer.
    let lost_leases = |sim: &leasegate_controller::market::sim::SimMarket| {
        let ledger = sim.ledger();
        let lost = ledger
            .deployments
            .iter()
            .filter(|d| d.lease.is_some() && d.closed_at.is_some())
            .count();
        (ledger, lost)
    };
    let settle_until = Instant::now() + Duration::from_secs(60);
    let (mut ledger, mut lost) = lost_leases(&sim);
    while lost == 0 && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (ledger, lost) = lost_leases(&sim);
    }
    println!(
        "leases: {} deployments before the chaos, {} after; {lost} leases closed",
        leases_before,
        ledger.deployments.len()
    );
    assert!(lost >= 1, "the chaos never cost a lease");
    assert!(
        ledger.deployments.len() > leases_before,
        "nothing was replaced"
    );
    assert!(total >= 100, "too few requests to judge: {total}");
    // The bound: a killed replica fails the requests it holds over to the
    // others before any byte reached the client, so only streams cut
    // mid-answer and requests racing every replica of one moment fail.
    assert!(rate <= 0.05, "error rate {:.2}% > 5%", rate * 100.0);

    // Demand reached the controller, by region of the client.
    let demand = served.control.signals.demand_for(LLAMA);
    assert!(demand.iter().any(|(r, _)| r == "eu-central"), "{demand:?}");

    // The pool recovers: every llama replica ready again, none backing off.
    let recovered = wait_until(Duration::from_secs(60), || {
        handle.status().is_ok_and(|s| {
            s.pools
                .iter()
                .find(|p| p.name == "llama")
                .is_some_and(|p| p.ready >= 3 && p.ready >= p.desired && p.acquiring == 0)
        })
    })
    .await;
    assert!(recovered, "{:#?}", handle.status());
    assert!(one_request(api, true, None).await);
    served.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

fn follower_args(controller: SocketAddr, cache: &Path) -> GatewayArgs {
    GatewayArgs {
        endpoints: Vec::new(),
        fallbacks: Vec::new(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        config: None,
        fleet_from: Some(format!("http://{controller}")),
        fleet_token_env: "UNUSED".into(),
        fleet_cache: Some(cache.to_path_buf()),
        geo: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_following_a_controller_serves_without_it_and_restarts_from_its_cache() {
    let dir = temp_dir("follow");
    let token = Secret::new("admin-token-for-test");
    let controller = ControllerOnly::start(
        serve_config(&dir, 11),
        None,
        "127.0.0.1:0".parse().unwrap(),
        Some(token.clone()),
    )
    .await
    .unwrap();
    let admin = controller.admin_addr;
    let fleet = controller.control.fleet.clone();
    assert!(
        wait_until(Duration::from_secs(60), || fleet
            .borrow()
            .ready()
            .any(|e| e.models.iter().any(|m| m == LLAMA)))
        .await
    );
    // /fleet carries replica keys: no token, no fleet; /status is plain.
    assert_eq!(support::get(admin, "/fleet").await.status, 401);
    // With no gateway here, the controller serves the admin API's
    // controller routes itself, behind the same token.
    let t = Some(token.expose());
    assert_eq!(
        admin_call(admin, "GET", "/admin/leases", None).await.status,
        401
    );
    let leases = admin_call(admin, "GET", "/admin/leases", t).await;
    assert!(!leases.json()["leases"].as_array().unwrap().is_empty());
    let cordon = admin_call(admin, "POST", "/admin/providers/akash1x/cordon", t).await;
    assert_eq!(cordon.json()["cordoned"], true);
    let lifted = admin_call(admin, "POST", "/admin/providers/akash1x/uncordon", t).await;
    assert_eq!(lifted.json()["was_cordoned"], true);
    assert_eq!(
        admin_call(admin, "GET", "/admin/fleet", t).await.status,
        404
    );
    assert_eq!(
        admin_call(admin, "PUT", "/admin/pools", t).await.status,
        405
    );
    let status: ControllerStatus =
        serde_json::from_str(&support::get(admin, "/status").await.text()).unwrap();
    assert!(status.pools.iter().any(|p| p.name == "llama"));
    assert!(support::get(admin, "/metrics").await.status == 200);

    let cache = dir.join("fleet-cache.json");
    let gateway_only = |token: Option<Secret>| {
        let args = follower_args(admin, &cache);
        async move {
            let quick = "[timeouts]\ndrain = \"2s\"\n[health]\nprobe_interval = \"1s\"\n\
                [controller]\ndemand_interval = \"300ms\"\n";
            GatewayOnly::start(args, unified::parse(quick, Defaults::None).unwrap(), token)
                .await
                .unwrap()
        }
    };
    let gw = gateway_only(Some(token.clone())).await;
    let api = gw.gateway.api_addr;
    assert!(until_serving(&gw.gateway, Duration::from_secs(30)).await);
    for _ in 0..3 {
        assert!(one_request(api, false, Some("eu-central")).await);
    }
    // The follower reports demand and in-flight counts back over HTTP.
    let signals = controller.control.signals.clone();
    assert!(
        wait_until(Duration::from_secs(10), || signals
            .demand_for(LLAMA)
            .iter()
            .any(|(r, d)| r == "eu-central" && d.requests_per_sec > 0.0))
        .await,
        "{:?}",
        signals.demand_for(LLAMA)
    );
    let lease = fleet.borrow().ready().next().map(|e| e.id.clone()).unwrap();
    assert!(signals.endpoint(&lease).is_some());
    let anonymous = support::post(admin, "/demand", r#"{"demand":[],"endpoints":[]}"#).await;
    assert_eq!(anonymous.status, 401);

    // The controller goes away; its leases (the market) stay up.
    let market = controller.control.sim.clone().unwrap();
    controller.shutdown().await;
    for _ in 0..5 {
        assert!(one_request(api, true, None).await);
    }

    // A restarted gateway serves from the persisted snapshot at once,
    // the controller still gone.
    gw.shutdown().await;
    let cached: leasegate_fleet::Snapshot =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert!(cached.ready().count() >= 1);
    let gw = gateway_only(Some(token)).await;
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .gateway
            .fleet
            .current()
            .serves(LLAMA))
        .await,
        "the restarted gateway did not load its cache"
    );
    for _ in 0..5 {
        assert!(one_request(gw.gateway.api_addr, false, None).await);
    }
    gw.shutdown().await;
    drop(market);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarted_on_its_state_file_numbers_new_deployments_above_the_old_ones() {
    let dir = temp_dir("restart");
    let first = Served::start(serve_config(&dir, 3), None, None)
        .await
        .unwrap();
    let handle = first.control.handle.clone();
    assert!(
        wait_until(Duration::from_secs(60), || handle
            .status()
            .is_ok_and(|s| ready(&s, "llama") >= 3))
        .await
    );
    let old_max = max_dseq(&first.control.sim.clone().unwrap().ledger());
    let old_version = first.control.fleet.borrow().version;
    drop(handle);
    first.shutdown().await;

    // The sim market died with the process; the store remembers its leases.
    let second = Served::start(serve_config(&dir, 3), None, None)
        .await
        .unwrap();
    let handle = second.control.handle.clone();
    let market = second.control.sim.clone().unwrap();
    // The old leases are gone with the old market: the pools lease anew
    // (3 llama + 1 bge) and the store's stale records are closed.
    assert!(
        wait_until(Duration::from_secs(60), || market
            .ledger()
            .active_leases()
            .len()
            >= 4
            && handle.status().is_ok_and(|s| ready(&s, "llama") >= 3
                && s.leases
                    .iter()
                    .all(|l| l.dseq.parse::<u64>().unwrap() > old_max)))
        .await,
        "{:#?}",
        handle.status()
    );
    let ledger = market.ledger();
    assert!(
        ledger
            .deployments
            .iter()
            .all(|d| d.dseq.parse::<u64>().unwrap() > old_max),
        "a new deployment reused an old number"
    );
    // Gateways following this controller never see the version go back.
    assert!(until_serving(&second.gateway, Duration::from_secs(10)).await);
    assert!(second.control.fleet.borrow().version > old_version);
    assert!(one_request(second.gateway.api_addr, false, None).await);
    drop(handle);
    second.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

fn max_dseq(ledger: &leasegate_controller::market::sim::Ledger) -> u64 {
    ledger
        .deployments
        .iter()
        .filter_map(|d| d.dseq.parse().ok())
        .max()
        .unwrap_or(0)
}

/// An admin call on `serve`'s admin listener, with or without a bearer token.
async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> support::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    support::send(
        &support::url(addr),
        method.parse().unwrap(),
        path,
        bytes::Bytes::new(),
        &headers,
    )
    .await
}

/// The replica keys of the fleet the controller publishes.
fn replica_keys(served: &Served) -> Vec<String> {
    served
        .control
        .fleet
        .borrow()
        .endpoints
        .iter()
        .filter_map(|e| match &e.credential {
            Some(leasegate_fleet::Credential::Key { key }) => Some(key.expose().to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_admin_api_lists_leases_cordons_and_replaces_behind_one_token() {
    // Cargo sets this for every test run (no `set_var` needed). Only the
    // controller's variable names it: under `serve` it guards /admin/* too.
    const TOKEN_ENV: &str = "CARGO_PKG_DESCRIPTION";
    let token = std::env::var(TOKEN_ENV).unwrap();
    let dir = temp_dir("serve-admin");
    let config = serve_config_with(&dir, 5, &format!("admin_token_env = \"{TOKEN_ENV}\""));
    let served = Served::start(config, None, None).await.unwrap();
    let admin = served.gateway.admin_addr;
    let handle = served.control.handle.clone();
    assert!(until_llama_ready(&handle).await, "{:?}", handle.status());
    let mut secrets = replica_keys(&served);
    assert!(!secrets.is_empty());
    secrets.push(token.clone());
    let mut answers = Vec::new();
    let routes = [
        ("GET", "/admin/leases"),
        ("GET", "/admin/pools"),
        ("POST", "/admin/providers/p1/cordon"),
        ("DELETE", "/admin/providers/p1/cordon"),
        ("POST", "/admin/providers/p1/uncordon"),
        ("POST", "/admin/leases/lease-1/replace"),
        ("GET", "/admin/fleet"),
        ("GET", "/fleet"),
        ("POST", "/demand"),
    ];
    for (m, p) in routes {
        for t in [None, Some("wrong-token-but-long-enough")] {
            let reply = admin_call(admin, m, p, t).await;
            assert_eq!(reply.status, 401, "{m} {p} with {t:?}: {}", reply.text());
            answers.push(reply.text());
        }
    }
    // One token for the whole listener: the controller's /fleet and the gateway's /admin/*.
    assert_eq!(
        admin_call(admin, "GET", "/fleet", Some(&token))
            .await
            .status,
        200
    );
    let fleet = admin_call(admin, "GET", "/admin/fleet", Some(&token)).await;
    assert_eq!(fleet.status, 200, "{}", fleet.text());
    answers.push(fleet.text());

    let leases = admin_call(admin, "GET", "/admin/leases", Some(&token)).await;
    assert_eq!(leases.status, 200, "{}", leases.text());
    answers.push(leases.text());
    let leases = leases.json();
    assert!(leases["spend_usd_per_hour"].as_f64().unwrap() > 0.0);
    let rows = leases["leases"].as_array().unwrap();
    let first = rows
        .iter()
        .find(|l| l["pool"] == "llama" && l["state"] == "ready")
        .unwrap()
        .clone();
    let provider = first["provider"].as_str().unwrap().to_owned();
    let old = first["endpoint_id"].as_str().unwrap().to_owned();

    // Cordon the provider of that lease: the lease stays, and says so.
    let path = format!("/admin/providers/{provider}/cordon?reason=maintenance");
    let reply = admin_call(admin, "POST", &path, Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    answers.push(reply.text());
    assert_eq!(reply.json()["cordoned"], true);
    let pools = admin_call(admin, "GET", "/admin/pools", Some(&token)).await;
    answers.push(pools.text());
    let pools = pools.json();
    assert_eq!(pools["cordoned"][0]["provider"], provider.as_str());
    assert_eq!(pools["cordoned"][0]["reason"], "maintenance");
    assert!(
        pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "llama")
    );
    let sim = served.control.sim.clone().unwrap();
    let before: Vec<String> = sim
        .ledger()
        .deployments
        .iter()
        .map(|d| d.dseq.clone())
        .collect();

    // Force-replace it: accepted, then the old lease goes once a new one serves.
    let unknown = admin_call(
        admin,
        "POST",
        "/admin/leases/lease-999999/replace",
        Some(&token),
    )
    .await;
    assert_eq!(unknown.openai_error(404)["code"], "not_found");
    let path = format!("/admin/leases/{old}/replace");
    let reply = admin_call(admin, "POST", &path, Some(&token)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    answers.push(reply.text());
    assert_eq!(reply.json()["state"], "replacing");
    let gone = wait_until(Duration::from_secs(60), || {
        handle.status().is_ok_and(|s| {
            ready(&s, "llama") >= 3 && !s.leases.iter().any(|l| l.endpoint_id == old)
        })
    })
    .await;
    assert!(gone, "{:?}", handle.status());
    secrets.extend(replica_keys(&served));
    // No new lease went to the cordoned provider.
    let ledger = sim.ledger();
    let new: Vec<_> = ledger
        .deployments
        .iter()
        .filter(|d| !before.contains(&d.dseq))
        .collect();
    assert!(!new.is_empty(), "{ledger:#?}");
    for d in new.iter().filter_map(|d| d.lease.as_ref()) {
        assert_ne!(d.provider, provider, "{ledger:#?}");
    }
    let leases = admin_call(admin, "GET", "/admin/leases", Some(&token)).await;
    answers.push(leases.text());

    // Lifted again.
    let path = format!("/admin/providers/{provider}/cordon");
    let reply = admin_call(admin, "DELETE", &path, Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["was_cordoned"], true);
    let pools = admin_call(admin, "GET", "/admin/pools", Some(&token)).await;
    answers.push(pools.text());
    assert_eq!(pools.json()["cordoned"], serde_json::json!([]));
    answers.push(admin_call(admin, "GET", "/status", None).await.text());

    // No admin answer carried a replica key or the token.
    for text in &answers {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret in: {text}");
        }
    }
    served.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
