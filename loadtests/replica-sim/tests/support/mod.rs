//! Helpers for the simulator tests: a plain hyper client and request builders.
// Helpers outside #[test] fns are not covered by clippy.toml's test allowance.
#![allow(clippy::unwrap_used, clippy::panic, dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use leasegate_replica_sim::{Behavior, Replica};
use serde_json::Value;
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_millis(300);

pub fn behavior(tokens: u32) -> Behavior {
    Behavior {
        models: vec!["m".into()],
        tokens,
        ..Behavior::default()
    }
}

pub fn chat(extra: &str) -> String {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hello there"}}]{extra}}}"#)
}

pub async fn send_with(r: &Replica, req: Request<Full<Bytes>>) -> http::Response<Incoming> {
    send_to(r.addr(), req).await
}

pub async fn send_to(
    addr: std::net::SocketAddr,
    req: Request<Full<Bytes>>,
) -> http::Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx.send_request(req).await.unwrap()
}

pub fn post(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "sim")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "sim")
        .body(Full::default())
        .unwrap()
}

pub async fn call(r: &Replica, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let resp = send_with(r, req).await;
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

pub fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

/// The next body frame's data, `None` at the end; panics on a body error.
pub async fn frame(body: &mut Incoming) -> Option<String> {
    let f = body.frame().await?.unwrap();
    Some(String::from_utf8(f.into_data().unwrap().to_vec()).unwrap())
}

pub fn event_json(event: &str) -> Value {
    json(event.strip_prefix("data: ").unwrap().trim_end().as_bytes())
}

/// A replica with `b` and the body of a streaming chat request to it.
pub async fn open_stream(b: Behavior) -> (Replica, Incoming) {
    let r = Replica::start(b).await.unwrap();
    let resp = send_with(&r, post("/v1/chat/completions", &chat(r#","stream":true"#))).await;
    (r, resp.into_body())
}

/// Polls `/metrics` (bounded) until it contains `want`; returns the last text.
pub async fn metrics_until(r: &Replica, want: &str) -> String {
    let mut seen = String::new();
    for _ in 0..50 {
        seen = String::from_utf8(call(r, get("/metrics")).await.1.to_vec()).unwrap();
        if seen.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}
