//! Shared test harness: simulated replicas, an in-process gateway and a small HTTP client.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod mmdb_writer;

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use leasegate_fleet::{Credential, Endpoint, Engine, Kind, Region, Secret, Snapshot, State};
use leasegate_gateway::{Gateway, Running, config::Config};
use leasegate_replica_sim::{Behavior, Replica};
use tokio::sync::watch;

/// Timeouts short enough that failure tests finish quickly.
pub const FAST: &str = r#"
[listen]
api = "127.0.0.1:0"
admin = "127.0.0.1:0"

[timeouts]
connect = "500ms"
headers = "1500ms"
first_token = "1500ms"
inter_chunk = "700ms"
total = "20s"
drain = "2s"

[health]
probe_interval = "60s"
"#;

pub async fn replica(models: &[&str]) -> Replica {
    replica_with(Behavior {
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        ..Behavior::default()
    })
    .await
}

pub async fn replica_with(b: Behavior) -> Replica {
    Replica::start(b).await.expect("replica starts")
}

/// An endpoint of the fleet snapshot pointing at `url`.
pub fn endpoint(id: &str, url: &str, models: &[&str], key: Option<&str>) -> Endpoint {
    Endpoint {
        id: id.into(),
        url: url.into(),
        kind: Kind::Lease,
        engine: Engine::Vllm,
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        region: Region {
            code: "eu-central".into(),
            country: Some("DE".into()),
            lat: 50.1,
            lon: 8.7,
        },
        provider: None,
        price_per_hour_usd: 1.0,
        max_concurrency: 16,
        state: State::Ready,
        credential: key.map(|k| Credential::Key {
            key: Secret::new(k),
        }),
    }
}

/// Two endpoints serving `m` where the scorer prefers `first` (cheap) over
/// `second` (very expensive), so a failing `first` is always tried first.
pub fn first_then(first: (&str, &str), second: (&str, &str)) -> Vec<Endpoint> {
    let mut a = endpoint(first.0, first.1, &["m"], None);
    a.price_per_hour_usd = 0.0;
    let mut b = endpoint(second.0, second.1, &["m"], None);
    b.price_per_hour_usd = 1000.0;
    vec![a, b]
}

/// A gateway over `endpoints` with the config `toml` (listeners on port 0).
pub async fn gateway(toml: &str, endpoints: Vec<Endpoint>) -> Running {
    capture_logs();
    let config = Config::parse(toml).unwrap_or_else(|p| panic!("test config: {p:?}"));
    let (_tx, rx) = watch::channel(Arc::new(Snapshot {
        version: 1,
        generated_at_ms: 0,
        endpoints,
    }));
    let running = Gateway::start(config, rx).await.expect("gateway starts");
    // The snapshot is published by a task; wait until it is visible.
    for _ in 0..200 {
        if running.fleet.current().version() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    running
}

/// One replica serving `models` and a gateway (config [`FAST`]) in front of it.
pub async fn single(models: &[&str]) -> (leasegate_replica_sim::Replica, Running) {
    let r = replica(models).await;
    let gw = gateway(FAST, vec![endpoint("a", &r.url(), models, None)]).await;
    (r, gw)
}

/// One HTTP answer, body fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an OpenAI-shaped error with this status and returns its `error` object.
    pub fn openai_error(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let v = self.json();
        let e = v["error"].clone();
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error lacks {k}: {v}");
        }
        e
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn send(
    base: &str,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp = client().request(req).await.expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

pub async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Reply {
    send(&url(addr), Method::POST, path, body, &[]).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(&url(addr), Method::GET, path, Bytes::new(), &[]).await
}

pub fn chat(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello there"}}],"stream":{stream}}}"#
    )
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes every log line of this test process (debug and up) into a buffer.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far by this test process.
pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

/// Runs the binary with `args` until it prints its API address; the child is killed on drop.
pub struct Child(pub std::process::Child, pub std::net::SocketAddr);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_leasegate(args: &[&str]) -> Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().expect("a line on stdout").unwrap();
    let addr = first
        .strip_prefix("leasegate listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .parse()
        .unwrap();
    Child(child, addr)
}

/// Tests that load the machine for many seconds (wrk, provider kills, `kill
/// -9` chaos) take turns: in one test binary they would otherwise overlap and
/// each would judge its error rate on the other's noise. Hold the guard for
/// the whole test.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}
