//! Overflow and cost end to end: spill under pressure and back, spend caps, the injected usage chunk, cost metrics.
//!
//! Metrics are process-wide, so each test uses its own model names.

use std::time::Duration;

use crate::support::*;
use http::Method;
use leasegate_fleet::Endpoint;
use leasegate_replica_sim::{Behavior, Replica};

/// Timeouts generous enough for replicas that queue on purpose.
const PATIENT: &str = r#"
[listen]
api = "127.0.0.1:0"
admin = "127.0.0.1:0"

[timeouts]
connect = "500ms"
headers = "10s"
first_token = "10s"
inter_chunk = "5s"
total = "30s"
drain = "1s"

[health]
probe_interval = "50ms"
"#;

fn lease(id: &str, r: &Replica, model: &str, max_concurrency: u32) -> Endpoint {
    let mut e = endpoint(id, &r.url(), &[model], None);
    e.max_concurrency = max_concurrency;
    e
}

fn fallback_toml(url: &str, model: &str, input: f64, output: f64) -> String {
    format!(
        "\n[[fallbacks]]\nid = \"cloud-{model}\"\nurl = \"{url}/v1\"\nmodels = {{ \"{model}\" = \"{model}\" }}\nprice_per_1m_input_usd = {input}\nprice_per_1m_output_usd = {output}\n"
    )
}

async fn slow_replica(
    model: &str,
    inter_token_ms: u64,
    tokens: u32,
    max_concurrency: u32,
) -> Replica {
    replica_with(Behavior {
        models: vec![model.into()],
        inter_token: Duration::from_millis(inter_token_ms),
        tokens,
        max_concurrency,
        ..Behavior::default()
    })
    .await
}

fn chats(r: &Replica) -> u64 {
    r.stats()
        .requests_by_path
        .get("/v1/chat/completions")
        .copied()
        .unwrap_or(0)
}

fn body(model: &str, stream: bool, max_tokens: u32) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"stream":{stream},"max_tokens":{max_tokens}}}"#
    )
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cond(), "timed out waiting for {what}");
}

async fn metrics_text(gw: &leasegate_gateway::Running) -> String {
    get(gw.admin_addr, "/metrics").await.text()
}

/// The value of the one sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Sends `n` requests at once in the background.
fn background(
    gw: &leasegate_gateway::Running,
    n: usize,
    body: String,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    (0..n)
        .map(|_| {
            let addr = gw.api_addr;
            let b = body.clone();
            tokio::spawn(async move { post(addr, "/v1/chat/completions", b).await })
        })
        .collect()
}

#[tokio::test]
async fn a_saturated_lease_pool_spills_to_the_fallback_and_comes_back() {
    let model = "ov-sat";
    let r = slow_replica(model, 100, 8, 64).await;
    let cloud = replica(&[model]).await;
    let toml = format!("{PATIENT}{}", fallback_toml(&cloud.url(), model, 1.0, 2.0));
    let gw = gateway(&toml, vec![lease("sat-lease", &r, model, 2)]).await;

    let held = background(&gw, 2, body(model, true, 8));
    until("two streams on the lease", || chats(&r) == 2).await;
    let spilled = post(gw.api_addr, "/v1/chat/completions", body(model, false, 2)).await;
    assert_eq!(spilled.status, 200, "{}", spilled.text());
    assert_eq!(
        (chats(&r), chats(&cloud)),
        (2, 1),
        "the full pool spilled to the fallback"
    );

    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    until("the lease to be free", || {
        gw.fleet
            .current()
            .endpoint("sat-lease")
            .unwrap()
            .in_flight()
            == 0
    })
    .await;
    let back = post(gw.api_addr, "/v1/chat/completions", body(model, false, 2)).await;
    assert_eq!(back.status, 200);
    assert_eq!(
        (chats(&r), chats(&cloud)),
        (3, 1),
        "traffic came back to the lease"
    );

    let m = metrics_text(&gw).await;
    assert_eq!(
        sample(
            &m,
            &format!(r#"leasegate_overflow_total{{model="{model}",reason="at_capacity"}}"#)
        ),
        Some(1.0),
        "{m}"
    );
    let log = logs();
    let line = log
        .lines()
        .find(|l| l.contains("leasegate::access") && l.contains(model) && l.contains("route"));
    assert!(
        line.is_some_and(|l| l.contains(r#""at_capacity""#)),
        "the access log names the reason: {line:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slowed_lease_pool_spills_on_its_queue_and_comes_back() {
    let model = "ov-slow";
    // One request at a time on the replica: the rest wait in its queue,
    // which the prober reads from its /metrics.
    let r = slow_replica(model, 100, 5, 1).await;
    let cloud = replica(&[model]).await;
    let toml = format!(
        "{PATIENT}\n[[overflow.pools]]\nmodel = \"{model}\"\nslo_ttft = \"1500ms\"\ntime_per_output_token = \"1s\"\n{}",
        fallback_toml(&cloud.url(), model, 1.0, 2.0)
    );
    let gw = gateway(&toml, vec![lease("slow-lease", &r, model, 16)]).await;
    let depth = || {
        gw.fleet
            .current()
            .endpoint("slow-lease")
            .unwrap()
            .queue_depth()
    };

    let held = background(&gw, 3, body(model, true, 5));
    until("a queue of two on the replica", || depth() >= Some(2)).await;
    let spilled = post(gw.api_addr, "/v1/chat/completions", body(model, false, 1)).await;
    assert_eq!(spilled.status, 200);
    assert_eq!(
        chats(&cloud),
        1,
        "2 queued × 1 s per token breaks the 1.5 s SLO"
    );

    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    until("the queue to drain", || depth() == Some(0)).await;
    let before = chats(&r);
    let back = post(gw.api_addr, "/v1/chat/completions", body(model, false, 1)).await;
    assert_eq!(back.status, 200);
    assert_eq!(
        (chats(&r), chats(&cloud)),
        (before + 1, 1),
        "the recovered lease serves again"
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        sample(
            &m,
            &format!(r#"leasegate_overflow_total{{model="{model}",reason="slo_breach"}}"#)
        ),
        Some(1.0),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn at_the_spend_cap_overflow_stops_with_429_and_retry_after() {
    let model = "ov-cap-reject";
    let cloud = replica(&[model]).await;
    // $1000 per 1M tokens: the first answer alone passes the $0.001 cap.
    let toml = format!(
        "{PATIENT}\n[spend]\nfallback_hourly_usd = 0.001\non_cap = \"reject\"\n{}",
        fallback_toml(&cloud.url(), model, 1000.0, 1000.0)
    );
    let gw = gateway(&toml, vec![]).await;
    let first = post(gw.api_addr, "/v1/chat/completions", body(model, false, 4)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let capped = post(gw.api_addr, "/v1/chat/completions", body(model, false, 4)).await;
    let e = capped.openai_error(429);
    assert_eq!(e["code"], "spend_cap_reached");
    let retry: u64 = capped.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry),
        "no lease at all: wait for the next UTC hour ({retry})"
    );
    assert_eq!(
        chats(&cloud),
        1,
        "the capped request never reached the fallback"
    );
    let m = metrics_text(&gw).await;
    assert!(
        sample(
            &m,
            &format!(
                r#"leasegate_overflow_capped_total{{model="{model}",reason="no_replica_ready"}}"#
            )
        ) >= Some(1.0),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn at_the_spend_cap_a_queued_request_waits_for_a_lease_or_gets_429() {
    let model = "ov-cap-queue";
    let r = slow_replica(model, 100, 30, 64).await;
    let cloud = replica(&[model]).await;
    let toml = format!(
        "{PATIENT}\n[spend]\nfallback_hourly_usd = 0.000001\non_cap = \"queue\"\nmax_queue_wait = \"1500ms\"\nretry_after = \"2s\"\n{}",
        fallback_toml(&cloud.url(), model, 1000.0, 1000.0)
    );
    let gw = gateway(&toml, vec![lease("q-lease", &r, model, 1)]).await;
    let busy = || gw.fleet.current().endpoint("q-lease").unwrap().in_flight() > 0;

    // A short stream holds the only slot; the next request spills and spends the cap.
    let short = background(&gw, 1, body(model, true, 5));
    until("the lease to be busy", busy).await;
    let spilled = post(gw.api_addr, "/v1/chat/completions", body(model, false, 1)).await;
    assert_eq!(spilled.status, 200);
    assert_eq!(chats(&cloud), 1);
    // Capped now: this one waits in the queue until the short stream ends.
    let queued = post(gw.api_addr, "/v1/chat/completions", body(model, false, 1)).await;
    assert_eq!(queued.status, 200, "{}", queued.text());
    assert_eq!(
        (chats(&r), chats(&cloud)),
        (2, 1),
        "served by the lease after waiting"
    );
    short.into_iter().next().unwrap().await.unwrap();

    // A 3 s stream outlasts the 1.5 s queue bound: 429 with the configured Retry-After.
    until("the lease to be free", || !busy()).await;
    let long = background(&gw, 1, body(model, true, 30));
    until("the lease to be busy again", busy).await;
    let refused = post(gw.api_addr, "/v1/chat/completions", body(model, false, 1)).await;
    assert_eq!(refused.openai_error(429)["code"], "spend_cap_reached");
    assert_eq!(refused.headers["retry-after"], "2");
    assert_eq!(chats(&cloud), 1);
    long.into_iter().next().unwrap().await.unwrap();
    gw.shutdown().await;
}

#[tokio::test]
async fn an_injected_usage_chunk_never_reaches_a_client_that_did_not_ask() {
    let model = "ov-inject";
    let r = replica(&[model]).await;
    let gw = gateway(PATIENT, vec![lease("u-lease", &r, model, 16)]).await;
    let plain = body(model, true, 6);
    let via = post(gw.api_addr, "/v1/chat/completions", plain.clone()).await;
    assert_eq!(via.status, 200);
    assert!(!via.text().contains("usage"), "{}", via.text());
    let injected = r#""stream_options":{"include_usage":true},"#;
    assert_eq!(
        r.stats().last_body_len,
        plain.len() + injected.len(),
        "the gateway asked upstream"
    );
    // What the replica sends for the body the gateway forwarded, minus the
    // usage chunk and the `"usage":null` members: byte for byte what the
    // client got.
    let asked = plain.replacen('{', &format!("{{{injected}"), 1);
    let direct = send(
        &r.url(),
        Method::POST,
        "/v1/chat/completions",
        asked.clone(),
        &[],
    )
    .await;
    let expected: String = direct
        .text()
        .split_inclusive("\n\n")
        .filter(|event| !event.contains(r#""choices":[]"#))
        .map(|event| event.replace(r#","usage":null"#, ""))
        .collect();
    assert!(direct.text().contains(r#""usage":null"#));
    assert_eq!(via.text(), expected);

    let via = post(gw.api_addr, "/v1/chat/completions", asked).await;
    let text = via.text();
    assert!(
        text.contains(r#""choices":[],"usage":{"prompt_tokens""#),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));

    let m = metrics_text(&gw).await;
    let tokens = sample(
        &m,
        &format!(r#"leasegate_tokens_total{{model="{model}",path="lease",key="-"}}"#),
    );
    assert!(
        tokens > Some(12.0),
        "both streams were counted: {tokens:?}\n{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn cost_metrics_add_up_to_the_configured_prices() {
    let (lease_model, fb_model) = ("ov-cost-lease", "ov-cost-fb");
    let r = replica(&[lease_model]).await;
    let cloud = replica(&[fb_model]).await;
    let (input, output) = (3.0, 15.0);
    let toml = format!(
        "{PATIENT}{}",
        fallback_toml(&cloud.url(), fb_model, input, output)
    );
    let mut ep = lease("c-lease", &r, lease_model, 16);
    ep.price_per_hour_usd = 3.6;
    let gw = gateway(&toml, vec![ep]).await;

    // Known usage from the answers themselves (non-streaming and asked-for streams).
    let usage_of = |reply: &Reply| -> (f64, f64) {
        let text = reply.text();
        let json = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .find(|l| l.contains(r#""choices":[]"#))
            .map_or_else(|| reply.json(), |l| serde_json::from_str(l).unwrap());
        let u = &json["usage"];
        (
            u["prompt_tokens"].as_f64().unwrap(),
            u["completion_tokens"].as_f64().unwrap(),
        )
    };
    let mix = |model: &str| {
        vec![
            body(model, false, 3),
            body(model, false, 9),
            body(model, true, 5).replacen('{', r#"{"stream_options":{"include_usage":true},"#, 1),
        ]
    };
    let (mut lease_tokens, mut lease_usd, mut running) = (0.0, 0.0, 0.0);
    for b in mix(lease_model) {
        let reply = post(gw.api_addr, "/v1/chat/completions", b).await;
        let (p, c) = usage_of(&reply);
        // The estimator inside its first minute: $3.6/h × 1 min over the tokens so far.
        running += p + c;
        lease_tokens += p + c;
        lease_usd += 3.6 / 60.0 * (p + c) / running;
    }
    let (mut fb_tokens, mut fb_usd) = (0.0, 0.0);
    for b in mix(fb_model) {
        let reply = post(gw.api_addr, "/v1/chat/completions", b).await;
        let (p, c) = usage_of(&reply);
        fb_tokens += p + c;
        fb_usd += (p * input + c * output) / 1e6;
    }
    let m = metrics_text(&gw).await;
    let get = |name: &str, model: &str, path: &str| {
        sample(
            &m,
            &format!(r#"{name}{{model="{model}",path="{path}",key="-"}}"#),
        )
        .unwrap_or(f64::NAN)
    };
    assert_eq!(
        get("leasegate_tokens_total", lease_model, "lease"),
        lease_tokens,
        "{m}"
    );
    assert_eq!(
        get("leasegate_tokens_total", fb_model, "fallback"),
        fb_tokens
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.max(1.0);
    assert!(
        close(
            get("leasegate_cost_usd_total", fb_model, "fallback"),
            fb_usd
        ),
        "{fb_usd}\n{m}"
    );
    assert!(
        close(
            get("leasegate_cost_usd_total", lease_model, "lease"),
            lease_usd
        ),
        "{lease_usd}\n{m}"
    );
    let list = sample(
        &m,
        &format!(r#"leasegate_hyperscaler_equivalent_usd_total{{model="{fb_model}"}}"#),
    );
    assert!(
        list.is_some_and(|v| close(v, fb_usd)),
        "fallback tokens cost list price: {list:?}"
    );
    let per_1m = sample(
        &m,
        &format!(r#"leasegate_cost_per_1m_tokens_usd{{model="{fb_model}",path="fallback"}}"#),
    )
    .unwrap();
    assert!(close(per_1m, fb_usd / fb_tokens * 1e6), "{per_1m}");
    gw.shutdown().await;
}
