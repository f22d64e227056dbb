//! The admin API and live reload: token, no secrets in any answer, drain, explain, reload under load.
// Helpers outside #[test] fns unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support::*;
use http::Method;
use leasegate_fleet::{Snapshot, region};
use leasegate_gateway::{
    Extras, Gateway, Running, auth::hash_key, config::Config, server::run::ReloadSource,
};
use leasegate_replica_sim::Replica;
use tokio::sync::watch;

/// Set by cargo for every test run, so the tests need no `set_var`: the
/// admin token, a replica key and a fallback key come from these.
const TOKEN_ENV: &str = "CARGO_PKG_DESCRIPTION";
const REPLICA_KEY_ENV: &str = "CARGO_PKG_NAME";
const FALLBACK_KEY_ENV: &str = "CARGO_MANIFEST_DIR";
const CLIENT_KEY: &str = "lg-admin-test-client-key-Zq81";
const INLINE_REPLICA_KEY: &str = "sk-inline-replica-key-Wm42";

fn token() -> String {
    std::env::var(TOKEN_ENV).unwrap()
}

/// Replaces the file in one step (write aside, then rename), as config
/// management should when a file watch is on: a watch can fire mid-write.
fn write_config(path: &PathBuf, text: &str) {
    let aside = path.with_extension("toml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn config_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.toml"))
}

/// Static endpoints for `replicas` (id `r<i>`, price `i`) and an admin token.
fn config_text(replicas: &[(usize, &Replica)], extra: &str) -> String {
    let mut t = format!("{FAST}\n[admin]\ntoken_env = \"{TOKEN_ENV}\"\n{extra}\n");
    for (i, r) in replicas {
        t += &format!(
            "[[endpoints]]\nid = \"r{i}\"\nurl = \"{}\"\nmodels = [\"m\"]\nregion = \"eu-central\"\nlat = 50.1\nlon = 8.7\nprice_per_hour_usd = {i}.5\nkey_env = \"{REPLICA_KEY_ENV}\"\n",
            r.url()
        );
    }
    t
}

/// A gateway that reloads from `path` (written with `text` first).
async fn reloading_gateway(path: &PathBuf, text: &str, fleet: Snapshot) -> Running {
    capture_logs();
    write_config(path, text);
    let config = Config::load(path).unwrap();
    let (_tx, rx) = watch::channel(Arc::new(fleet));
    let gw = Gateway::start_with(
        config,
        rx,
        Extras {
            reload: Some(ReloadSource::file(path.clone())),
            ..Extras::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..200 {
        if gw.fleet.current().version() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw
}

fn snapshot(endpoints: Vec<leasegate_fleet::Endpoint>) -> Snapshot {
    Snapshot {
        version: 1,
        generated_at_ms: 0,
        endpoints,
    }
}

async fn admin(gw: &Running, method: Method, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(&url(gw.admin_addr), method, path, "", &headers).await
}

/// A chat completion with [`CLIENT_KEY`].
async fn client_chat(gw: &Running) -> Reply {
    let auth = format!("Bearer {CLIENT_KEY}");
    send(
        &url(gw.api_addr),
        Method::POST,
        "/v1/chat/completions",
        chat("m", false),
        &[("authorization", auth.as_str())],
    )
    .await
}

const ADMIN_CALLS: &[(&str, &str)] = &[
    ("GET", "/admin/fleet"),
    ("GET", "/admin/endpoints"),
    ("GET", "/admin/leases"),
    ("GET", "/admin/pools"),
    ("GET", "/admin/config"),
    ("GET", "/admin/explain?model=m&region=eu-west-1&key=tenant"),
    ("POST", "/admin/reload"),
    ("POST", "/admin/providers/p1/cordon"),
    ("DELETE", "/admin/providers/p1/cordon"),
    ("POST", "/admin/providers/p1/uncordon"),
    ("POST", "/admin/leases/l1/replace"),
    ("POST", "/admin/endpoints/nope/drain"),
    ("GET", "/admin/nothing-here"),
    ("DELETE", "/admin/fleet"),
    ("POST", "/admin/endpoints/inline/drain"),
];

fn method(m: &str) -> Method {
    m.parse().unwrap()
}

#[tokio::test]
async fn the_admin_api_refuses_requests_without_the_token() {
    let r = replica(&["m"]).await;
    let path = config_path("token");
    let gw = reloading_gateway(&path, &config_text(&[(0, &r)], ""), snapshot(vec![])).await;
    for (m, p) in ADMIN_CALLS {
        for t in [None, Some("wrong-token-but-long-enough"), Some("")] {
            let reply = admin(&gw, method(m), p, t).await;
            let e = reply.openai_error(401);
            assert_eq!(e["type"], "authentication_error", "{m} {p}");
        }
    }
    // Scrapers and probes need no token.
    assert_eq!(get(gw.admin_addr, "/metrics").await.status, 200);
    assert_eq!(get(gw.admin_addr, "/health").await.status, 200);
    // With no token configured the admin API is off altogether.
    let open = gateway(FAST, vec![]).await;
    let reply = admin(&open, Method::GET, "/admin/fleet", Some(&token())).await;
    assert_eq!(reply.openai_error(401)["code"], "admin_disabled");
}

#[tokio::test]
async fn no_admin_response_contains_a_secret() {
    let r = replica(&["m"]).await;
    let cloud = replica(&["m"]).await;
    let keys = format!(
        "[[keys]]\nname = \"tenant\"\nsha256 = \"{}\"\nrequests_per_minute = 50\nregions = [\"eu\"]\n\
         [[fallbacks]]\nid = \"cloud\"\nurl = \"{}/v1\"\nkey_env = \"{FALLBACK_KEY_ENV}\"\nmodels = {{ m = \"m\" }}\nregion = \"eu-west-1\"\n",
        hash_key(CLIENT_KEY),
        cloud.url()
    );
    let path = config_path("secrets");
    let inline = endpoint("inline", &r.url(), &["m"], Some(INLINE_REPLICA_KEY));
    let gw = reloading_gateway(
        &path,
        &config_text(&[(0, &r)], &keys),
        snapshot(vec![inline]),
    )
    .await;
    // Some traffic first, so usage, health and metrics have something to show.
    for _ in 0..3 {
        let reply = client_chat(&gw).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let secrets = [
        ("client key", CLIENT_KEY.to_owned()),
        ("client key digest", hash_key(CLIENT_KEY)),
        ("inline replica key", INLINE_REPLICA_KEY.to_owned()),
        ("replica key", std::env::var(REPLICA_KEY_ENV).unwrap()),
        ("fallback key", std::env::var(FALLBACK_KEY_ENV).unwrap()),
        ("admin token", token()),
        ("admin token digest", hash_key(&token())),
    ];
    let mut seen = Vec::new();
    for (m, p) in ADMIN_CALLS.iter().chain(&[("GET", "/metrics")]) {
        let reply = admin(&gw, method(m), p, Some(&token())).await;
        seen.push(format!("{m} {p} -> {}", reply.status));
        let mut text = reply.text();
        for (k, v) in &reply.headers {
            text += &format!("\n{k}: {}", v.to_str().unwrap_or(""));
        }
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} in {m} {p}: {text}");
        }
    }
    // The answers were real ones, not all errors.
    let config = admin(&gw, Method::GET, "/admin/config", Some(&token()))
        .await
        .json();
    assert_eq!(config["config"]["keys"][0]["name"], "tenant");
    assert_eq!(
        config["config"]["keys"][0]["usage"]["requests_last_minute"],
        3
    );
    assert_eq!(
        config["config"]["fallbacks"][0]["credential"]["env"],
        FALLBACK_KEY_ENV
    );
    let fleet = admin(&gw, Method::GET, "/admin/fleet", Some(&token()))
        .await
        .json();
    assert_eq!(fleet["endpoints"][0]["credential"], "<redacted>");
    // A gateway without a controller says so on the controller's routes.
    for (m, p) in ADMIN_CALLS {
        if ["/leases", "/pools", "/providers/"]
            .iter()
            .any(|x| p.starts_with(&format!("/admin{x}")))
        {
            let reply = admin(&gw, method(m), p, Some(&token())).await;
            let e = reply.openai_error(409);
            assert_eq!(e["code"], "no_controller", "{m} {p}");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("runs no lease controller")
            );
        }
    }
    assert!(!seen.iter().any(|s| s.contains("-> 501")), "{seen:?}");
    // And none of it went to the log either.
    let log = logs();
    for (what, secret) in &secrets[..6] {
        assert!(!log.contains(secret.as_str()), "{what} in the log");
    }
}

#[tokio::test]
async fn drain_stops_new_requests_and_explain_ranks_what_is_left() {
    let a = replica(&["m"]).await;
    let b = replica(&["m"]).await;
    let keys = format!(
        "[[keys]]\nname = \"tenant\"\nsha256 = \"{}\"\nregions = [\"eu-central\"]\n",
        hash_key(CLIENT_KEY)
    );
    let path = config_path("drain");
    let gw = reloading_gateway(
        &path,
        &config_text(&[(0, &a), (1, &b)], &keys),
        snapshot(vec![]),
    )
    .await;
    let reply = admin(
        &gw,
        Method::POST,
        "/admin/endpoints/r0/drain",
        Some(&token()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["state"], "draining");
    let before = a
        .stats()
        .requests_by_path
        .get("/v1/chat/completions")
        .copied();
    for _ in 0..10 {
        assert_eq!(client_chat(&gw).await.status, 200);
    }
    assert_eq!(
        a.stats()
            .requests_by_path
            .get("/v1/chat/completions")
            .copied(),
        before
    );
    let eps = admin(&gw, Method::GET, "/admin/endpoints", Some(&token()))
        .await
        .json();
    let r0 = &eps["endpoints"][0];
    assert_eq!(
        (r0["id"].as_str(), r0["state"].as_str()),
        (Some("r0"), Some("draining"))
    );
    assert_eq!(r0["health"]["drained"], true);
    assert!(r0["health"]["breaker"].is_object());
    // A drain survives a reload.
    assert_eq!(
        admin(&gw, Method::POST, "/admin/reload", Some(&token()))
            .await
            .status,
        200
    );
    let explain = admin(
        &gw,
        Method::GET,
        "/admin/explain?model=m&region=eu-west-2",
        Some(&token()),
    )
    .await
    .json();
    let rows = explain["candidates"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only r1 is a candidate: {explain}");
    assert_eq!(rows[0]["endpoint"], "r1");
    assert_eq!(rows[0]["tier"], "near");
    assert!(rows[0]["terms"]["rtt_ms"].as_f64().unwrap() > 0.0);
    let london = region::lookup("eu-west-2").unwrap();
    assert_eq!(explain["client"]["location"]["lat"], london.lat);
    assert!(rows[0]["distance_km"].as_f64().unwrap() > 100.0);
    let bad = admin(
        &gw,
        Method::GET,
        "/admin/explain?region=eu-west-2",
        Some(&token()),
    )
    .await;
    bad.openai_error(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_drops_nothing_and_a_broken_config_is_rejected() {
    let replicas = [
        replica(&["m"]).await,
        replica(&["m"]).await,
        replica(&["m"]).await,
    ];
    let path = config_path("under-load");
    let configs = [
        config_text(&[(0, &replicas[0]), (1, &replicas[1])], ""),
        // Weights: price and concurrency change.
        config_text(
            &[(0, &replicas[0]), (1, &replicas[1])],
            "[retry]\nmax_attempts = 2\n",
        )
        .replace(
            "price_per_hour_usd = 1.5",
            "price_per_hour_usd = 9.0\nmax_concurrency = 4",
        ),
        // An endpoint is added.
        config_text(
            &[(0, &replicas[0]), (1, &replicas[1]), (2, &replicas[2])],
            "",
        ),
        // One is removed.
        config_text(&[(1, &replicas[1]), (2, &replicas[2])], ""),
    ];
    let gw = Arc::new(reloading_gateway(&path, &configs[0], snapshot(vec![])).await);

    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..32)
        .map(|_| {
            let (gw, done) = (Arc::clone(&gw), Arc::clone(&done));
            tokio::spawn(async move {
                let mut bad = Vec::new();
                for i in 0..40 {
                    let stream = i % 4 == 0;
                    let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", stream)).await;
                    if !reply.status.is_success() || reply.text().contains("event: error") {
                        bad.push(format!("{}: {}", reply.status, reply.text()));
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                bad
            })
        })
        .collect();

    let mut reloads = 0;
    let mut rejected = 0;
    while done.load(Ordering::Relaxed) < 32 && reloads < 200 {
        let broken = reloads % 7 == 6;
        let text = if broken {
            // A typo'd key, and a limit that cannot be.
            configs[0].clone()
                + "[[keys]]\nname = \"x\"\nsha256 = \"00\"\nrequests_per_minute = 0\n"
        } else {
            configs[reloads % configs.len()].clone()
        };
        write_config(&path, &text);
        let reply = admin(&gw, Method::POST, "/admin/reload", Some(&token())).await;
        if broken {
            assert_eq!(reply.status, 422, "{}", reply.text());
            let v = reply.json();
            assert_eq!(v["last_result"], "rejected");
            assert!(v["problems"].to_string().contains("keys[0].sha256"), "{v}");
            rejected += 1;
        } else {
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut bad = Vec::new();
    for t in load {
        bad.extend(t.await.unwrap());
    }
    assert!(
        bad.is_empty(),
        "{} non-2xx of 1280: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        reloads >= 10 && rejected >= 1,
        "{reloads} reloads, {rejected} rejected"
    );
    let metrics = get(gw.admin_addr, "/metrics").await.text();
    assert!(
        metrics.contains("leasegate_config_reload_total{result=\"rejected\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("leasegate_config_reload_total{result=\"ok\"}"));
    assert!(
        logs().contains("keys[0].sha256"),
        "the log names the key path"
    );
    // Every replica served: the added one after its reload.
    for r in &replicas {
        assert!(
            r.stats()
                .requests_by_path
                .contains_key("/v1/chat/completions")
        );
    }
}

#[tokio::test]
async fn a_file_change_and_sighup_reload_and_a_broken_file_keeps_the_running_config() {
    let r = replica(&["m"]).await;
    let path = config_path("watched");
    let gw = reloading_gateway(&path, &config_text(&[(0, &r)], ""), snapshot(vec![])).await;
    let live = Arc::clone(&gw.live);
    let generation = || live.status().generation;
    let wait_for = |want: u64| {
        let live = Arc::clone(&live);
        async move {
            for _ in 0..300 {
                if live.status().generation >= want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };
    assert_eq!(generation(), 1);
    // A file change is picked up by the watch.
    write_config(
        &path,
        &config_text(&[(0, &r)], "[retry]\nmax_attempts = 2\n"),
    );
    assert!(wait_for(2).await, "file change not reloaded");
    assert_eq!(gw.live.current().config.retry.max_attempts, 2);
    // A broken file is refused; the running config stays and serves.
    write_config(&path, "[retry]\nmax_attempts = \"many\"\n");
    for _ in 0..300 {
        if gw.live.status().last_result == "rejected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = gw.live.status();
    assert_eq!(status.last_result, "rejected");
    assert_eq!(status.problems[0].path, "retry");
    assert_eq!(generation(), 2);
    assert_eq!(
        post(gw.api_addr, "/v1/chat/completions", chat("m", false))
            .await
            .status,
        200
    );
    let shown = admin(&gw, Method::GET, "/admin/config", Some(&token()))
        .await
        .json();
    assert_eq!(shown["status"]["last_result"], "rejected");
    // SIGHUP reloads too (the watch may also fire on this write; either counts).
    write_config(&path, &config_text(&[(0, &r)], ""));
    let pid = std::process::id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(wait_for(3).await, "SIGHUP not reloaded");
    assert_eq!(gw.live.current().config.retry.max_attempts, 3);
}

#[test]
fn the_openapi_document_describes_every_admin_route() {
    let doc = include_str!("../admin-openapi.yaml");
    assert!(doc.starts_with("openapi: 3.1"));
    for path in [
        "/admin/fleet",
        "/admin/endpoints",
        "/admin/endpoints/{id}/drain",
        "/admin/providers/{id}/cordon",
        "/admin/providers/{id}/uncordon",
        "/admin/leases",
        "/admin/leases/{id}/replace",
        "/admin/pools",
        "/admin/config",
        "/admin/reload",
        "/admin/explain",
        "/metrics",
    ] {
        assert!(
            doc.contains(&format!("\n  {path}:\n")),
            "{path} is not described"
        );
    }
}
