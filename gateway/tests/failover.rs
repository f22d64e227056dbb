//! Failover before the first byte, and clean ends after it: down, failing, stalled and blackholed replicas.

use std::time::Duration;

use crate::support::*;
use leasegate_replica_sim::Behavior;
use tokio::time::Instant;

fn failing(status: u16) -> Behavior {
    Behavior {
        models: vec!["m".into()],
        error_rate: 1.0,
        error_status: status,
        ..Behavior::default()
    }
}

/// A base URL on loopback where nothing listens any more.
async fn dead_url() -> String {
    let r = replica(&["m"]).await;
    let url = r.url();
    r.shutdown().await;
    url
}

#[tokio::test]
async fn a_replica_down_before_the_request_is_skipped() {
    let good = replica(&["m"]).await;
    let doomed = replica(&["m"]).await;
    // The scorer prefers the doomed replica, so every request must fail over from it.
    let gw = gateway(
        FAST,
        first_then(("down-dead", &doomed.url()), ("down-good", &good.url())),
    )
    .await;
    // It dies after the first health probe passed, so only a request finds out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.shutdown().await;
    for _ in 0..4 {
        let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let metrics = get(gw.admin_addr, "/metrics").await.text();
    let needle = "leasegate_upstream_attempts_total{endpoint=\"down-dead\",outcome=\"connect\"}";
    assert!(
        metrics.contains(needle),
        "the dead replica was never tried:\n{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_503_fails_over_to_another_replica() {
    let bad = replica_with(failing(503)).await;
    let good = replica(&["m"]).await;
    let gw = gateway(
        FAST,
        vec![
            endpoint("bad", &bad.url(), &["m"], None),
            endpoint("good", &good.url(), &["m"], None),
        ],
    )
    .await;
    for stream in [false, true] {
        for _ in 0..4 {
            let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", stream)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
    assert!(
        bad.stats().errors_injected > 0,
        "the failing replica was never tried"
    );
    let metrics = get(gw.admin_addr, "/metrics").await.text();
    for needle in [
        "leasegate_failovers_total{reason=\"status_5xx\"}",
        "leasegate_upstream_attempts_total{endpoint=\"bad\",outcome=\"status_5xx\"}",
        "leasegate_ttft_seconds",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn all_replicas_down_the_fallback_serves_with_its_own_model_name_and_key() {
    let dead = dead_url().await;
    let fallback = replica_with(Behavior {
        models: vec!["upstream-m".into()],
        api_key: Some(env!("CARGO_PKG_NAME").into()),
        ..Behavior::default()
    })
    .await;
    // The fallback key comes from an environment variable the test process has.
    let toml = format!(
        "{FAST}\n[[fallbacks]]\nid = \"cloud\"\nurl = \"{}/v1\"\nkey_env = \"CARGO_PKG_NAME\"\nmodels = {{ m = \"upstream-m\" }}\n",
        fallback.url()
    );
    let gw = gateway(&toml, vec![endpoint("dead", &dead, &["m"], None)]).await;
    let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model"], "upstream-m");
    let stats = fallback.stats();
    assert_eq!(
        stats.last_authorization.as_deref(),
        Some(concat!("Bearer ", env!("CARGO_PKG_NAME")))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn all_down_without_fallback_is_a_503_openai_error() {
    let a = dead_url().await;
    let b = replica_with(failing(500)).await;
    let gw = gateway(
        FAST,
        vec![
            endpoint("a", &a, &["m"], None),
            endpoint("b", &b.url(), &["m"], None),
        ],
    )
    .await;
    let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", false)).await;
    let status = reply.status.as_u16();
    assert!(
        status == 502 || status == 503,
        "status {status}: {}",
        reply.text()
    );
    reply.openai_error(status);
    // No endpoint at all for a known model is a plain 503.
    let gw2 = gateway(FAST, vec![endpoint("a", &a, &["m"], None)]).await;
    let reply = post(gw2.api_addr, "/v1/chat/completions", chat("m", false)).await;
    assert!(
        matches!(reply.status.as_u16(), 502 | 503),
        "{}",
        reply.text()
    );
    reply.openai_error(reply.status.as_u16());
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn a_disconnect_mid_stream_ends_with_an_sse_error_event() {
    let r = replica_with(Behavior {
        models: vec!["m".into()],
        disconnect_after: Some(3),
        inter_token: Duration::from_millis(20),
        ..Behavior::default()
    })
    .await;
    let gw = gateway(FAST, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", true)).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.starts_with("data: "), "{text}");
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\ndata: {\"error\""),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_stream_ends_after_the_inter_chunk_timeout() {
    let r = replica_with(Behavior {
        models: vec!["m".into()],
        stall_after: Some(2),
        ..Behavior::default()
    })
    .await;
    let gw = gateway(FAST, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let start = Instant::now();
    let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", true)).await;
    let text = reply.text();
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("upstream_timeout"), "{text}");
    // Liveness guard only: the stream ended instead of hanging.
    assert!(start.elapsed() < Duration::from_secs(15));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_blackholed_replica_costs_no_more_than_the_header_timeout() {
    let hole = replica(&["m"]).await;
    let good = replica(&["m"]).await;
    let gw = gateway(
        FAST,
        first_then(("bh-hole", &hole.url()), ("bh-good", &good.url())),
    )
    .await;
    // It vanishes after passing its first probe: accepts, never answers, no RST.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hole.set_behavior(Behavior {
        models: vec!["m".into()],
        blackhole: true,
        ..Behavior::default()
    });
    for stream in [false, true] {
        for _ in 0..2 {
            let start = Instant::now();
            let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", stream)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            // Liveness guard, generous: header timeout (1.5 s) plus normal latency.
            let took = start.elapsed();
            assert!(took < Duration::from_secs(10), "{took:?}");
        }
    }
    let metrics = get(gw.admin_addr, "/metrics").await.text();
    let needle =
        "leasegate_upstream_attempts_total{endpoint=\"bh-hole\",outcome=\"headers_timeout\"}";
    assert!(
        metrics.contains(needle),
        "the blackhole was never tried:\n{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_still_fails_over() {
    let early = replica_with(Behavior {
        models: vec!["m".into()],
        disconnect_after: Some(0),
        ..Behavior::default()
    })
    .await;
    let good = replica(&["m"]).await;
    let gw = gateway(
        FAST,
        first_then(("early-dies", &early.url()), ("early-good", &good.url())),
    )
    .await;
    for _ in 0..4 {
        let reply = post(gw.api_addr, "/v1/chat/completions", chat("m", true)).await;
        assert!(
            reply.text().ends_with("data: [DONE]\n\n"),
            "{}",
            reply.text()
        );
    }
    let metrics = get(gw.admin_addr, "/metrics").await.text();
    assert!(
        metrics.contains("leasegate_upstream_attempts_total{endpoint=\"early-dies\""),
        "the early-failing replica was never tried:\n{metrics}"
    );
    gw.shutdown().await;
}
