//! The request path end to end against simulated replicas: pass-through, limits, errors, hygiene.

use crate::support::*;
use http::Method;
use leasegate_replica_sim::{Behavior, hash64};

#[tokio::test]
async fn non_streaming_answer_is_byte_identical_to_the_replica() {
    let (r, gw) = single(&["m"]).await;
    let direct = send(
        &r.url(),
        Method::POST,
        "/v1/chat/completions",
        chat("m", false),
        &[],
    )
    .await;
    let via = post(gw.api_addr, "/v1/chat/completions", chat("m", false)).await;
    assert_eq!(via.status, 200, "{}", via.text());
    assert_eq!(via.body, direct.body);
    assert!(via.headers.contains_key("x-request-id"));
    for path in ["/v1/completions", "/v1/embeddings"] {
        let body = r#"{"model":"m","prompt":"hi","input":"hi"}"#;
        let direct = send(&r.url(), Method::POST, path, body, &[]).await;
        let via = post(gw.api_addr, path, body).await;
        assert_eq!(via.status, 200, "{path}: {}", via.text());
        assert_eq!(via.body, direct.body, "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn streaming_answer_is_byte_identical_to_the_replica() {
    let (r, gw) = single(&["m"]).await;
    // A client that asks for usage gets the stream exactly as sent. One that
    // does not is covered in overflow.rs: the gateway then adds the option
    // and strips its effects.
    let body = chat("m", true).replacen('{', r#"{"stream_options":{"include_usage":true},"#, 1);
    let direct = send(
        &r.url(),
        Method::POST,
        "/v1/chat/completions",
        body.clone(),
        &[],
    )
    .await;
    let via = post(gw.api_addr, "/v1/chat/completions", body).await;
    assert_eq!(via.status, 200);
    assert!(via.text().ends_with("data: [DONE]\n\n"), "{}", via.text());
    assert_eq!(via.body, direct.body);
    assert_eq!(via.headers["content-type"], direct.headers["content-type"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn body_over_the_limit_gets_413_and_a_large_body_arrives_intact() {
    let (r, gw) = single(&["m"]).await;
    // 40 MiB against the default 32 MiB limit.
    let mut big = br#"{"model":"m","input":""#.to_vec();
    big.resize(40 * 1024 * 1024, b'x');
    big.extend_from_slice(br#""}"#);
    let reply = post(gw.api_addr, "/v1/embeddings", big).await;
    reply.openai_error(413);

    let mut mib = br#"{"model":"m","input":""#.to_vec();
    mib.resize(1024 * 1024, b'y');
    mib.extend_from_slice(br#""}"#);
    let reply = post(gw.api_addr, "/v1/embeddings", mib.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = r.stats();
    assert_eq!(stats.last_body_len, mib.len());
    assert_eq!(stats.last_body_hash, Some(hash64(&mib)));
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let (r, gw) = single(&["m"]).await;
    let e = post(gw.api_addr, "/v1/chat/completions", "{\"model\":")
        .await
        .openai_error(400);
    assert_eq!(e["code"], "invalid_json");
    post(gw.api_addr, "/v1/chat/completions", r#"{"messages":[]}"#)
        .await
        .openai_error(400);
    let e = post(gw.api_addr, "/v1/chat/completions", chat("nope", false))
        .await
        .openai_error(404);
    assert_eq!(e["code"], "model_not_found");
    get(gw.api_addr, "/v1/chat/completions")
        .await
        .openai_error(405);
    post(gw.api_addr, "/v1/models", "").await.openai_error(405);
    get(gw.api_addr, "/v2/whatever").await.openai_error(404);
    assert_eq!(r.stats().requests_by_path.get("/v1/chat/completions"), None);
    gw.shutdown().await;
}

#[tokio::test]
async fn client_keys_are_checked_and_never_reach_the_replica() {
    let client_key = "sk-client-7f3a9c";
    let replica_key = "sk-replica-51be0d";
    let r = replica_with(Behavior {
        models: vec!["m".into()],
        api_key: Some(replica_key.into()),
        ..Behavior::default()
    })
    .await;
    let toml = format!(
        "{FAST}\n[auth]\nclient_key_sha256 = [\"{}\"]\n",
        leasegate_gateway::auth::hash_key(client_key)
    );
    let gw = gateway(
        &toml,
        vec![endpoint("a", &r.url(), &["m"], Some(replica_key))],
    )
    .await;
    let base = url(gw.api_addr);
    let path = "/v1/chat/completions";

    let none = send(&base, Method::POST, path, chat("m", false), &[]).await;
    none.openai_error(401);
    let wrong = send(
        &base,
        Method::POST,
        path,
        chat("m", false),
        &[("authorization", "Bearer sk-wrong")],
    )
    .await;
    let e = wrong.openai_error(401);
    assert_eq!(e["type"], "authentication_error");
    send(&base, Method::GET, "/v1/models", "", &[])
        .await
        .openai_error(401);

    let bearer = format!("Bearer {client_key}");
    let ok = send(
        &base,
        Method::POST,
        path,
        chat("m", true),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let stats = r.stats();
    assert_eq!(
        stats.last_authorization.as_deref(),
        Some(format!("Bearer {replica_key}").as_str())
    );
    assert!(
        stats
            .authorizations_seen
            .iter()
            .all(|a| !a.contains(client_key)),
        "replica saw the client key: {:?}",
        stats.authorizations_seen
    );
    let headers = stats.last_request_headers.unwrap();
    assert!(headers.contains_key("x-request-id") && headers.contains_key("traceparent"));

    // Secrets never show up in what the gateway logs or answers.
    let logs = logs();
    for secret in [client_key, replica_key] {
        assert!(!logs.contains(secret), "log line carries a secret");
        assert!(!wrong.text().contains(secret));
    }
    assert!(logs.contains("leasegate::access"), "no access line logged");
    gw.shutdown().await;
}

#[tokio::test]
async fn models_health_ready_and_metrics_answer() {
    let r = replica(&["m", "e"]).await;
    let toml = format!("{FAST}\n[aliases]\n\"gpt-4o-mini\" = \"m\"\n\"ghost\" = \"not-served\"\n");
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m", "e"], None)]).await;
    let models = get(gw.api_addr, "/v1/models").await;
    assert_eq!(models.status, 200);
    let v = models.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["e", "gpt-4o-mini", "m"]);
    assert_eq!(get(gw.api_addr, "/health").await.status, 200);
    assert_eq!(get(gw.api_addr, "/ready").await.status, 200);

    // An alias is served by its pool, with the model renamed for the replica.
    let via = post(
        gw.api_addr,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(via.status, 200, "{}", via.text());

    let metrics = get(gw.admin_addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("leasegate_requests_total"), "{text}");
    assert!(text.contains("leasegate_endpoint_available"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn ready_is_503_without_any_endpoint() {
    let gw = gateway(FAST, vec![]).await;
    assert_eq!(get(gw.api_addr, "/ready").await.status, 503);
    assert_eq!(get(gw.admin_addr, "/ready").await.status, 503);
    assert_eq!(get(gw.api_addr, "/health").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn past_the_concurrency_limit_the_answer_is_503_with_retry_after() {
    let r = replica_with(Behavior {
        models: vec!["m".into()],
        ttft: std::time::Duration::from_millis(800),
        ..Behavior::default()
    })
    .await;
    let toml = format!("{FAST}\n[limits]\nmax_concurrency = 1\n");
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let addr = gw.api_addr;
    let slow =
        tokio::spawn(async move { post(addr, "/v1/chat/completions", chat("m", false)).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let shed = post(addr, "/v1/chat/completions", chat("m", false)).await;
    shed.openai_error(503);
    assert_eq!(shed.headers["retry-after"], "1");
    assert_eq!(
        get(addr, "/health").await.status,
        200,
        "probes are never shed"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let (_r, gw) = single(&["m"]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::post(format!("{}/v1/chat/completions", url(gw.api_addr)))
        .body(http_body_util::Full::new(bytes::Bytes::from(chat(
            "m", true,
        ))))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    gw.shutdown().await;
}

/// A client that sends no request head is closed: one that says nothing at
/// all while the listener waits to learn its protocol, and one that starts an
/// HTTP/1 request and stops. (hyper-util's protocol detection, used before,
/// waited for the first bytes without any limit.)
#[tokio::test]
async fn silent_and_stalled_clients_are_closed_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = replica(&["m"]).await;
    let gw = gateway(
        "[timeouts]\nheader_read = \"300ms\"\n",
        vec![endpoint("a", &r.url(), &["m"], None)],
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(gw.api_addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(gw.api_addr).await.unwrap();
    stalled.write_all(b"POST /v1/chat").await.unwrap();
    for (name, conn) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let mut buf = [0u8; 256];
        // Closed, possibly after a 408: read to the end. The bound is generous
        // (the sniff and hyper's header timer are 300 ms each).
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{name} connection still open after 5 s");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_but_lets_an_open_stream_finish() {
    let r = replica_with(Behavior {
        models: vec!["m".into()],
        tokens: 20,
        inter_token: std::time::Duration::from_millis(40),
        ..Behavior::default()
    })
    .await;
    let gw = gateway(FAST, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let addr = gw.api_addr;
    let stream =
        tokio::spawn(async move { post(addr, "/v1/chat/completions", chat("m", true)).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = tokio::spawn(gw.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during drain"
    );
    let reply = stream.await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().ends_with("data: [DONE]\n\n"),
        "{}",
        reply.text()
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn tls_listener_negotiates_h2_with_alpn_and_serves() {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let r = replica(&["m"]).await;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let cert = data.join("test-cert.pem");
    let toml = format!(
        "{FAST}\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        data.join("test-key.pem").display()
    );
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_all_versions()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(https);
    let req = http::Request::post(format!(
        "https://localhost:{}/v1/chat/completions",
        gw.api_addr.port()
    ))
    .body(http_body_util::Full::new(bytes::Bytes::from(chat(
        "m", false,
    ))))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(
        hyper_util::client::legacy::connect::HttpConnector::new(),
    );
    let req = http::Request::get(format!("{}/health", url(gw.api_addr)))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert!(plain.request(req).await.is_err());
    gw.shutdown().await;
}

#[tokio::test]
async fn streams_are_relayed_chunk_by_chunk_not_buffered() {
    let r = replica_with(Behavior {
        models: vec!["m".into()],
        tokens: 10,
        inter_token: std::time::Duration::from_millis(100),
        ..Behavior::default()
    })
    .await;
    let gw = gateway(FAST, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let req = http::Request::post(format!("{}/v1/chat/completions", url(gw.api_addr)))
        .body(http_body_util::Full::new(bytes::Bytes::from(chat(
            "m", true,
        ))))
        .unwrap();
    let mut resp = client().request(req).await.unwrap();
    let first = http_body_util::BodyExt::frame(resp.body_mut())
        .await
        .unwrap()
        .unwrap();
    assert!(first.data_ref().unwrap().starts_with(b"data: "));
    // The first chunk reached the client while the replica was still generating.
    assert_eq!(r.stats().in_flight, 1, "the stream was buffered to the end");
    let rest = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_in_many_frames_arrives_whole_and_in_order() {
    let (r, gw) = single(&["m"]).await;
    // No Content-Length: the gateway joins the frames without a size to start from.
    let mut whole = br#"{"model":"m","input":""#.to_vec();
    for i in 0..64u8 {
        whole.extend(std::iter::repeat_n(b'a' + i % 26, 1000));
    }
    whole.extend_from_slice(br#""}"#);
    let frames = whole.chunks(4093).map(bytes::Bytes::copy_from_slice);
    let status = post_frames(gw.api_addr, "/v1/embeddings", frames.collect()).await;
    assert_eq!(status, 200);
    let stats = r.stats();
    assert_eq!(stats.last_body_len, whole.len());
    assert_eq!(stats.last_body_hash, Some(hash64(&whole)));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_without_length_is_cut_off_at_the_limit() {
    let r = replica(&["m"]).await;
    let toml = format!("{FAST}\n[limits]\nmax_body_bytes = 4096\n");
    let gw = gateway(&toml, vec![endpoint("a", &r.url(), &["m"], None)]).await;
    let frames = (0..16)
        .map(|_| bytes::Bytes::from(vec![b' '; 1024]))
        .collect();
    let status = post_frames(gw.api_addr, "/v1/embeddings", frames).await;
    assert_eq!(status, 413);
    assert_eq!(r.stats().requests_by_path.get("/v1/embeddings"), None);
    gw.shutdown().await;
}

/// POSTs `frames` as a chunked body (no `Content-Length`), one frame each.
async fn post_frames(
    addr: std::net::SocketAddr,
    path: &str,
    frames: Vec<bytes::Bytes>,
) -> http::StatusCode {
    let frames = frames
        .into_iter()
        .map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)));
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::StreamBody<_>>(
        hyper_util::client::legacy::connect::HttpConnector::new(),
    );
    let req = http::Request::post(format!("{}{path}", url(addr)))
        .body(body)
        .unwrap();
    client.request(req).await.unwrap().status()
}
