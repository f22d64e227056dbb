//! The simulator seen from a plain hyper client on loopback.
// Helpers outside #[test] fns are not covered by clippy.toml's test allowance.
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use support::*;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use leasegate_replica_sim::{Behavior, Engine, Replica};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn non_streaming_chat_has_the_openai_shape() {
    let r = Replica::start(behavior(4)).await.unwrap();
    let (status, body) = call(&r, post("/v1/chat/completions", &chat(""))).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "m");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 tok3");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(prompt, chat("").len().div_ceil(4) as u64);
    assert_eq!(v["usage"]["total_tokens"], prompt + 4);
    let stats = r.stats();
    assert_eq!(stats.requests_by_path["/v1/chat/completions"], 1);
    assert_eq!(stats.last_body_len, chat("").len());
    assert_eq!(
        stats.last_body_hash,
        Some(leasegate_replica_sim::hash64(chat("").as_bytes()))
    );
    assert_eq!(
        stats.last_request_headers.unwrap()["content-type"],
        "application/json"
    );
}

#[tokio::test]
async fn stream_chunks_arrive_one_per_frame_and_end_with_done() {
    let r = Replica::start(Behavior {
        inter_token: Duration::from_millis(20),
        ..behavior(3)
    })
    .await
    .unwrap();
    let resp = send_with(&r, post("/v1/chat/completions", &chat(r#","stream":true"#))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut events = Vec::new();
    while let Some(f) = frame(&mut body).await {
        assert!(f.starts_with("data: ") && f.ends_with("\n\n"), "{f:?}");
        assert_eq!(f.matches("data: ").count(), 1, "one event per frame: {f:?}");
        events.push(f);
    }
    assert_eq!(events.len(), 5, "3 tokens, finish, [DONE]: {events:?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = events[..4].iter().map(|e| event_json(e)).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c.get("usage").is_none())
    );
}

#[tokio::test]
async fn include_usage_adds_a_final_usage_chunk_with_no_choices() {
    let r = Replica::start(behavior(2)).await.unwrap();
    let req = chat(r#","stream":true,"stream_options":{"include_usage":true}"#);
    let (status, body) = call(&r, post("/v1/chat/completions", &req)).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(events.len(), 5, "{text}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]\n\n");
    let usage = event_json(events[3]);
    assert_eq!(usage["choices"], Value::Array(vec![]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    for e in &events[..3] {
        assert_eq!(event_json(e)["usage"], Value::Null, "{e}");
        assert!(event_json(e).get("usage").is_some());
    }
}

#[tokio::test]
async fn max_tokens_from_the_request_is_honoured() {
    let r = Replica::start(behavior(16)).await.unwrap();
    let (_, body) = call(
        &r,
        post("/v1/chat/completions", &chat(r#","max_tokens":2"#)),
    )
    .await;
    let v = json(&body);
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let req = chat(r#","max_completion_tokens":3,"stream":true"#);
    let (_, body) = call(&r, post("/v1/chat/completions", &req)).await;
    assert_eq!(String::from_utf8_lossy(&body).matches("tok").count(), 3);
    let req = r#"{"model":"m","prompt":"hi","max_tokens":1}"#;
    let (_, body) = call(&r, post("/v1/completions", req)).await;
    let v = json(&body);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "tok0");
}

#[tokio::test]
async fn api_key_guards_v1_but_not_health_or_metrics() {
    let r = Replica::start(Behavior {
        api_key: Some("replica-key".into()),
        ..behavior(2)
    })
    .await
    .unwrap();
    let (status, body) = call(&r, post("/v1/chat/completions", &chat(""))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["error"]["type"], "authentication_error");
    let mut wrong = get("/v1/models");
    wrong
        .headers_mut()
        .insert("authorization", "Bearer client-key".parse().unwrap());
    assert_eq!(call(&r, wrong).await.0, StatusCode::UNAUTHORIZED);
    let mut right = post("/v1/chat/completions", &chat(""));
    right
        .headers_mut()
        .insert("authorization", "Bearer replica-key".parse().unwrap());
    assert_eq!(call(&r, right).await.0, StatusCode::OK);
    assert_eq!(call(&r, get("/health")).await.0, StatusCode::OK);
    assert_eq!(call(&r, get("/metrics")).await.0, StatusCode::OK);
    let stats = r.stats();
    assert_eq!(
        stats.authorizations_seen,
        ["Bearer client-key", "Bearer replica-key"]
    );
    assert_eq!(
        stats.last_authorization.as_deref(),
        Some("Bearer replica-key")
    );
}

#[tokio::test]
async fn error_rate_one_answers_the_error_status_with_an_openai_error() {
    let r = Replica::start(Behavior {
        error_rate: 1.0,
        error_status: 503,
        ..behavior(2)
    })
    .await
    .unwrap();
    let (status, body) = call(&r, post("/v1/chat/completions", &chat(""))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v = json(&body);
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
    assert_eq!(r.stats().errors_injected, 1);
    // Recovery is live.
    r.set_behavior(behavior(2));
    assert_eq!(
        call(&r, post("/v1/chat/completions", &chat(""))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn error_draws_follow_the_seed() {
    let b = Behavior {
        error_rate: 0.5,
        seed: 7,
        ..behavior(1)
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let r = Replica::start(b.clone()).await.unwrap();
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(
                call(&r, post("/v1/completions", r#"{"model":"m","prompt":"x"}"#))
                    .await
                    .0,
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let errors = runs[0]
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(
        (1..20).contains(&errors),
        "a 0.5 rate mixes outcomes: {errors}"
    );
}

#[tokio::test]
async fn stall_after_keeps_the_stream_open_and_silent() {
    let (r, mut body) = open_stream(Behavior {
        stall_after: Some(2),
        ..behavior(8)
    })
    .await;
    let mut got = String::new();
    while got.matches("data: ").count() < 2 {
        got += &timeout(WAIT, frame(&mut body)).await.unwrap().unwrap();
    }
    assert_eq!(got.matches("data: ").count(), 2, "{got}");
    // Neither another chunk, nor the end, nor an error arrives.
    assert!(
        timeout(WAIT, body.frame()).await.is_err(),
        "the stream must stay open and silent"
    );
    assert_eq!(r.stats().in_flight, 1);
    // Shutdown is not held up by the stalled stream.
    timeout(Duration::from_secs(3), r.shutdown()).await.unwrap();
}

#[tokio::test]
async fn stalled_stream_frees_its_slot_when_the_client_goes_away() {
    let (r, mut body) = open_stream(Behavior {
        stall_after: Some(1),
        max_concurrency: 1,
        ..behavior(8)
    })
    .await;
    timeout(WAIT, frame(&mut body)).await.unwrap().unwrap();
    assert_eq!(r.stats().running, 1);
    drop(body);
    let mut freed = false;
    for _ in 0..50 {
        let s = r.stats();
        if s.in_flight == 0 && s.running == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "{:?}", r.stats());
    assert_eq!(
        call(&r, post("/v1/chat/completions", &chat(""))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn disconnect_after_ends_the_body_with_an_error() {
    let (_replica, mut body) = open_stream(Behavior {
        disconnect_after: Some(2),
        ..behavior(8)
    })
    .await;
    let mut got = String::new();
    let err = loop {
        match timeout(WAIT, body.frame()).await.unwrap() {
            Some(Ok(f)) => got += std::str::from_utf8(&f.into_data().unwrap()).unwrap(),
            Some(Err(e)) => break e,
            None => panic!("the body ended cleanly after {got:?}"),
        }
    };
    assert_eq!(got.matches("data: ").count(), 2, "{got}");
    assert!(!got.contains("[DONE]"));
    drop(err);
}

#[tokio::test]
async fn blackhole_accepts_but_never_answers_and_recovers() {
    let r = Replica::start(behavior(2)).await.unwrap();
    r.set_behavior(Behavior {
        blackhole: true,
        ..behavior(2)
    });
    let tcp = timeout(WAIT, TcpStream::connect(r.addr()))
        .await
        .unwrap()
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let pending = tx.send_request(get("/health"));
    assert!(
        timeout(WAIT, pending).await.is_err(),
        "a blackhole must not answer"
    );
    r.set_behavior(behavior(2));
    assert_eq!(call(&r, get("/health")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn queued_requests_show_as_waiting_in_metrics() {
    let r = Replica::start(Behavior {
        max_concurrency: 1,
        ttft: Duration::from_millis(400),
        ..behavior(1)
    })
    .await
    .unwrap();
    let first = send_to(r.addr(), post("/v1/chat/completions", &chat("")));
    let second = send_to(r.addr(), post("/v1/chat/completions", &chat("")));
    let both = tokio::spawn(async move {
        // Both requests are sent from one task so they are on the wire together.
        let (a, b) = tokio::join!(first, second);
        (a.status(), b.status())
    });
    let seen = metrics_until(&r, "vllm:num_requests_waiting 1\n").await;
    assert!(seen.contains("vllm:num_requests_waiting 1\n"), "{seen}");
    assert!(seen.contains("vllm:num_requests_running 1\n"), "{seen}");
    assert_eq!(both.await.unwrap(), (StatusCode::OK, StatusCode::OK));
    let (_, body) = call(&r, get("/metrics")).await;
    assert!(String::from_utf8_lossy(&body).contains("vllm:num_requests_waiting 0\n"));
}

#[tokio::test]
async fn tgi_engine_names_its_queue_gauge() {
    let r = Replica::start(Behavior {
        engine: Engine::Tgi,
        ..behavior(1)
    })
    .await
    .unwrap();
    let (_, body) = call(&r, get("/metrics")).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("tgi_queue_size 0\n") && !text.contains("vllm:"),
        "{text}"
    );
}

#[tokio::test]
async fn same_body_gives_identical_bytes() {
    let r = Replica::start(behavior(5)).await.unwrap();
    for req in [
        chat(""),
        chat(r#","stream":true,"stream_options":{"include_usage":true}"#),
    ] {
        let a = call(&r, post("/v1/chat/completions", &req)).await.1;
        let b = call(&r, post("/v1/chat/completions", &req)).await.1;
        assert_eq!(a, b);
    }
    let other = call(&r, post("/v1/chat/completions", &chat(r#","user":"x""#)))
        .await
        .1;
    let first = call(&r, post("/v1/chat/completions", &chat(""))).await.1;
    assert_ne!(
        json(&other)["id"],
        json(&first)["id"],
        "ids derive from the body"
    );
}

#[tokio::test]
async fn models_embeddings_and_request_errors() {
    let r = Replica::start(Behavior {
        models: vec!["m".into(), "e".into()],
        embedding_dim: 4,
        ..Behavior::default()
    })
    .await
    .unwrap();
    let (_, body) = call(&r, get("/v1/models")).await;
    let v = json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["id"], "e");
    assert_eq!(v["data"][0]["owned_by"], "replica-sim");
    let req = r#"{"model":"e","input":["a","b"]}"#;
    let (status, body) = call(&r, post("/v1/embeddings", req)).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    assert_ne!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
    assert_eq!(call(&r, post("/v1/embeddings", req)).await.1, body);
    let (status, body) = call(
        &r,
        post("/v1/chat/completions", r#"{"model":"nope","messages":[]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error"]["code"], "model_not_found");
    let (status, body) = call(&r, post("/v1/chat/completions", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
    assert_eq!(
        call(&r, get("/v1/chat/completions")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let r = Replica::start(behavior(2)).await.unwrap();
    let tcp = TcpStream::connect(r.addr()).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("{}/v1/chat/completions", r.url()))
        .body(Full::new(Bytes::from(chat(""))))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&body)["choices"][0]["message"]["content"], "tok0 tok1");
}

#[tokio::test]
async fn dropping_the_replica_closes_the_port() {
    let r = Replica::start(behavior(1)).await.unwrap();
    let addr = r.addr();
    drop(r);
    tokio::task::yield_now().await;
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener must be closed after drop");
}

#[tokio::test]
async fn binary_prints_its_url_serves_and_exits_on_sigterm() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_replica-sim"))
        .args(["--listen", "127.0.0.1:0", "--model", "a", "--model", "b"])
        .args(["--tokens", "3", "--api-key-env", "SIM_TEST_KEY"])
        .env("SIM_TEST_KEY", "bin-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = timeout(Duration::from_secs(10), line)
        .await
        .unwrap()
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("replica-sim listening on http://")
        .unwrap();
    let addr: std::net::SocketAddr = url.parse().unwrap();

    let mut req = get("/v1/models");
    req.headers_mut()
        .insert("authorization", "Bearer bin-secret".parse().unwrap());
    let resp = send_to(addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&body)["data"][1]["id"], "b");

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut stderr = child.stderr.take().unwrap();
    let done = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).unwrap();
        (status, logs)
    });
    let (status, logs) = timeout(Duration::from_secs(10), done)
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}: {logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        !logs.contains("bin-secret"),
        "the key leaked into the logs: {logs}"
    );
}

#[tokio::test]
async fn ttft_and_inter_token_delays_pace_the_reply() {
    // Lower bounds only: the delays are behaviour, the upper side is the machine's.
    let ttft = Duration::from_millis(60);
    let itl = Duration::from_millis(20);
    let (r, mut body) = open_stream(Behavior {
        ttft,
        inter_token: itl,
        ..behavior(3)
    })
    .await;
    let start = tokio::time::Instant::now();
    timeout(Duration::from_secs(5), frame(&mut body))
        .await
        .unwrap()
        .unwrap();
    // Headers were already out, so the wait is measured from after them.
    assert!(
        start.elapsed() >= ttft - Duration::from_millis(5),
        "{:?}",
        start.elapsed()
    );
    while timeout(Duration::from_secs(5), frame(&mut body))
        .await
        .unwrap()
        .is_some()
    {}
    assert!(start.elapsed() >= ttft + itl * 2 - Duration::from_millis(5));

    let start = tokio::time::Instant::now();
    assert_eq!(
        call(&r, post("/v1/chat/completions", &chat(""))).await.0,
        StatusCode::OK
    );
    assert!(start.elapsed() >= ttft + itl * 2, "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn delays_follow_tokio_time_so_paused_tests_run_instantly() {
    // The controller's simulated market runs under a paused clock; an hour-long TTFT
    // must then cost nothing in real time.
    let r = Replica::start(Behavior {
        ttft: Duration::from_secs(3600),
        ..behavior(2)
    })
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    let (status, _) = call(&r, post("/v1/chat/completions", &chat(""))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_secs(3600));
}

#[tokio::test]
async fn max_concurrency_can_shrink_and_grow_live() {
    let slow = |max| Behavior {
        max_concurrency: max,
        ttft: Duration::from_millis(500),
        ..behavior(1)
    };
    let r = Replica::start(slow(2)).await.unwrap();
    r.set_behavior(slow(1));
    let a = tokio::spawn(send_to(r.addr(), post("/v1/chat/completions", &chat(""))));
    let b = tokio::spawn(send_to(r.addr(), post("/v1/chat/completions", &chat(""))));
    let seen = metrics_until(&r, "vllm:num_requests_waiting 1\n").await;
    assert!(seen.contains("vllm:num_requests_waiting 1\n"), "{seen}");
    r.set_behavior(slow(2));
    let seen = metrics_until(&r, "vllm:num_requests_running 2\n").await;
    assert!(seen.contains("vllm:num_requests_running 2\n"), "{seen}");
    assert!(seen.contains("vllm:num_requests_waiting 0\n"), "{seen}");
    assert_eq!(a.await.unwrap().status(), StatusCode::OK);
    assert_eq!(b.await.unwrap().status(), StatusCode::OK);
}
