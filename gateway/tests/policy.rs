//! Client-key policy end to end: limits under concurrency, budgets, model access and residency.
// Helpers outside #[test] fns unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use crate::support::*;
use http::Method;
use leasegate_fleet::Region;
use leasegate_gateway::auth::hash_key;
use leasegate_replica_sim::Replica;

const KEY: &str = "lg-test-key-for-policy-0001";

fn chat_calls(r: &Replica) -> u64 {
    r.stats()
        .requests_by_path
        .get("/v1/chat/completions")
        .copied()
        .unwrap_or(0)
}

/// `FAST` plus one `[[keys]]` entry for [`KEY`] with `extra` lines, and `more` config.
fn with_key(extra: &str, more: &str) -> String {
    format!(
        "{FAST}\n{more}\n[[keys]]\nname = \"tenant\"\nsha256 = \"{}\"\n{extra}\n",
        hash_key(KEY)
    )
}

async fn call(gw: &leasegate_gateway::Running, model: &str, key: &str) -> Reply {
    let auth = format!("Bearer {key}");
    send(
        &url(gw.api_addr),
        Method::POST,
        "/v1/chat/completions",
        chat(model, false),
        &[("authorization", auth.as_str())],
    )
    .await
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requests_per_minute_limit_holds_under_32_concurrent_clients() {
    let r = replica(&["m"]).await;
    let toml = with_key("requests_per_minute = 20", "");
    let gw = Arc::new(gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await);
    // 32 clients, 5 requests each, all within a fraction of the window.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let gw = Arc::clone(&gw);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    let reply = call(&gw, "m", KEY).await;
                    if reply.status == 429 {
                        let e = reply.openai_error(429);
                        assert_eq!(e["type"], "rate_limit_exceeded");
                        assert_eq!(header(&reply, "x-ratelimit-limit-requests"), "20");
                        assert_eq!(header(&reply, "x-ratelimit-remaining-requests"), "0");
                        assert!(header(&reply, "retry-after").parse::<u64>().unwrap() >= 1);
                    }
                    statuses.push(reply.status.as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        for s in t.await.unwrap() {
            match s {
                200 => ok += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
    }
    // Within one request of the limit; the algorithm makes it exact.
    assert!((20..=21).contains(&ok), "{ok} admitted for a limit of 20");
    assert_eq!(chat_calls(&r), ok, "refused requests never reach a replica");
    let metrics = get(gw.admin_addr, "/metrics").await.text();
    assert!(
        metrics.contains(r#"leasegate_client_limited_total{key="tenant",limit="requests"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn successful_answers_carry_the_rate_limit_headers() {
    let r = replica(&["m"]).await;
    let toml = with_key("requests_per_minute = 100\ntokens_per_minute = 100000", "");
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let reply = call(&gw, "m", KEY).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(header(&reply, "x-ratelimit-limit-requests"), "100");
    assert_eq!(header(&reply, "x-ratelimit-remaining-requests"), "99");
    assert!(header(&reply, "x-ratelimit-reset-requests").ends_with('s'));
    assert_eq!(header(&reply, "x-ratelimit-limit-tokens"), "100000");
    let remaining: u64 = header(&reply, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!(
        remaining < 100000 - 1024,
        "the estimate is reserved: {remaining}"
    );
}

#[tokio::test]
async fn a_budget_that_runs_out_gets_429_insufficient_quota_with_headers() {
    // A fallback charging $1 per output token: the replica's 16 tokens cost $16.
    let r = replica(&["m"]).await;
    let fallback = format!(
        "[[fallbacks]]\nid = \"cloud\"\nurl = \"{}/v1\"\nmodels = {{ m = \"m\" }}\nprice_per_1m_output_usd = 1000000.0\nregion = \"us-east-1\"\n",
        r.url()
    );
    let toml = with_key(
        "budget_usd_per_day = 20.0\nrequests_per_minute = 100",
        &fallback,
    );
    let gw = gateway(&toml, vec![]).await;
    assert_eq!(call(&gw, "m", KEY).await.status, 200);
    // Settled from the usage the upstream reported, not from the estimate,
    // when the relayed body ends (a moment after the client has it all).
    let spent = || {
        gw.live
            .current()
            .policy
            .limiter
            .usage("tenant")
            .unwrap()
            .spent_usd_today
    };
    for _ in 0..100 {
        if spent() > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(spent(), 16.0);
    // $16 < $20: one more is allowed, and it takes spend past the budget.
    assert_eq!(call(&gw, "m", KEY).await.status, 200);
    let reply = call(&gw, "m", KEY).await;
    let e = reply.openai_error(429);
    assert_eq!(e["type"], "insufficient_quota");
    assert_eq!(e["code"], "insufficient_quota");
    assert!(e["message"].as_str().unwrap().contains("$20.00"), "{e}");
    // Until the next UTC midnight: at most a day.
    let retry: u64 = header(&reply, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(header(&reply, "x-ratelimit-limit-requests"), "100");
    assert_eq!(header(&reply, "x-ratelimit-remaining-requests"), "98");
    assert_eq!(chat_calls(&r), 2);
}

#[tokio::test]
async fn a_model_the_key_may_not_use_looks_exactly_like_an_unknown_one() {
    let r = replica(&["m1", "m2"]).await;
    let toml = with_key("allowed_models = [\"m1\"]", "");
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m1", "m2"], None)]).await;
    assert_eq!(call(&gw, "m1", KEY).await.status, 200);
    let forbidden = call(&gw, "m2", KEY).await.openai_error(404);
    let unknown = call(&gw, "nope", KEY).await.openai_error(404);
    assert_eq!(forbidden["code"], "model_not_found");
    assert_eq!(forbidden["type"], unknown["type"]);
    assert_eq!(
        forbidden["message"].as_str().unwrap().replace("m2", "X"),
        unknown["message"].as_str().unwrap().replace("nope", "X")
    );
    let auth = format!("Bearer {KEY}");
    let models = send(
        &url(gw.api_addr),
        Method::GET,
        "/v1/models",
        "",
        &[("authorization", auth.as_str())],
    )
    .await
    .json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1"]);
}

#[tokio::test]
async fn legacy_client_key_hashes_still_authenticate_without_limits() {
    let r = replica(&["m"]).await;
    let toml = format!(
        "{FAST}\n[auth]\nclient_key_sha256 = [\"{}\"]\n",
        hash_key("sk-old")
    );
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let ok = call(&gw, "m", "sk-old").await;
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("x-ratelimit-limit-requests").is_none());
    call(&gw, "m", "sk-other").await.openai_error(401);
}

fn in_region(
    mut e: leasegate_fleet::Endpoint,
    code: &str,
    lat: f64,
    lon: f64,
) -> leasegate_fleet::Endpoint {
    e.region = Region {
        code: code.into(),
        country: None,
        lat,
        lon,
    };
    e
}

#[tokio::test]
async fn an_eu_pinned_key_never_leaves_the_eu_and_gets_a_clear_503_when_it_is_down() {
    let eu = replica(&["m"]).await;
    let us = replica(&["m"]).await;
    let cloud = replica(&["m"]).await;
    // Only the US replica and a US fallback remain once the EU is gone.
    let fallback = format!(
        "[[fallbacks]]\nid = \"cloud\"\nurl = \"{}/v1\"\nmodels = {{ m = \"m\" }}\nregion = \"us-east-1\"\n",
        cloud.url()
    );
    let toml = with_key("regions = [\"eu\"]", &fallback);
    let fleet = vec![
        in_region(
            endpoint("eu-1", &eu.url(), &["m"], None),
            "eu-central",
            50.2,
            13.3,
        ),
        in_region(
            endpoint("us-1", &us.url(), &["m"], None),
            "na-us-west",
            40.0,
            -120.0,
        ),
    ];
    let gw = gateway(&toml, fleet).await;
    for _ in 0..20 {
        assert_eq!(call(&gw, "m", KEY).await.status, 200);
    }
    assert_eq!(chat_calls(&eu), 20);

    eu.shutdown().await;
    // First the dead replica is tried and fails; once ejected it is not even
    // a candidate. Both ways the answer is the same 503, never the US.
    for i in 0..8 {
        let reply = call(&gw, "m", KEY).await;
        let e = reply.openai_error(503);
        assert_eq!(e["code"], "residency_unavailable", "request {i}");
        assert!(e["message"].as_str().unwrap().contains("(eu)"), "{e}");
        assert!(reply.headers.contains_key("retry-after"));
    }
    assert_eq!(chat_calls(&us), 0, "an EU-pinned request reached the US");
    assert_eq!(
        chat_calls(&cloud),
        0,
        "an EU-pinned request reached a US fallback"
    );

    // The same gateway still serves an unpinned key from the US.
    let open_key = "lg-test-open-key-0002";
    let reloaded = with_key("regions = [\"eu\"]", &fallback)
        + &format!(
            "\n[[keys]]\nname = \"open\"\nsha256 = \"{}\"\n",
            hash_key(open_key)
        );
    gw.live
        .apply(leasegate_gateway::config::Config::parse(&reloaded).unwrap())
        .unwrap();
    assert_eq!(call(&gw, "m", open_key).await.status, 200);
    assert_eq!(chat_calls(&us) + chat_calls(&cloud), 1);
}

#[tokio::test]
async fn regression_a_request_for_an_unknown_model_does_not_use_up_the_limit() {
    let r = replica(&["m"]).await;
    let toml = with_key("requests_per_minute = 1", "");
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    call(&gw, "nope", KEY).await.openai_error(404);
    assert_eq!(call(&gw, "m", KEY).await.status, 200);
    call(&gw, "m", KEY).await.openai_error(429);
}
