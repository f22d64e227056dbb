//! A fake Akash Console API: every endpoint leasegate's `akash` market uses,
//! in the spec's shapes, with knobs for the failures seen in practice.
//!
//! Runs in-process (`FakeConsole::start`, bound to `127.0.0.1:0`) or as the
//! `fake-console` binary. `GET /_ledger` lists every deployment and lease it
//! holds; `POST /_control` turns the knobs from another process.

// The provider entry is one large `json!` literal.
#![recursion_limit = "256"]

mod books;
mod model;
mod routes;
pub mod schema;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use model::World;
pub use model::{FakeProvider, Ledger, LedgerDeployment, LedgerLease, OWNER};
use routes::{error, route};

/// How the fake market behaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct FakeConfig {
    /// The `x-api-key` every authenticated call must carry.
    pub api_key: String,
    pub providers: Vec<FakeProvider>,
    /// Providers cancel an unanswered bid this long after making it.
    #[serde(with = "secs")]
    pub bid_ttl: Duration,
    /// Escrow of a new deployment when the request names no deposit.
    pub initial_funds_uact: f64,
    /// Start a simulated replica behind each lease.
    pub start_replicas: bool,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "fake-console-key".into(),
            providers: vec![FakeProvider::default()],
            bid_ttl: Duration::from_secs(300),
            initial_funds_uact: 5_000_000.0,
            start_replicas: true,
        }
    }
}

/// An injected failure: the next `times` requests matching `method` (any
/// when `None`) and `path_prefix` get `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    pub method: Option<String>,
    pub path_prefix: String,
    pub status: u16,
    pub times: u32,
    /// Sent as `Retry-After` (seconds), typically with 429.
    pub retry_after: Option<u64>,
    /// Echo the request body in the error, as a careless server might.
    #[serde(default)]
    pub echo_request: bool,
}

/// The knobs, as `POST /_control` bodies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// The provider closes the lease (`unstable`, `decommission`, `manifest_timeout`, ...).
    CloseLease {
        dseq: String,
        reason: String,
    },
    /// Escrow runs dry now: the lease closes with `insufficient_funds`.
    DrainEscrow {
        dseq: String,
    },
    /// The replica behind the lease dies (connections refused) while the
    /// lease stays active: what a provider failure looks like until the
    /// provider closes the lease `unstable` minutes later.
    ReplicaDown {
        dseq: String,
    },
    /// Console cannot reach the provider: lease `status: null`.
    Unreachable {
        dseq: String,
        on: bool,
    },
    Inject {
        fault: Fault,
    },
}

struct Inner {
    world: Mutex<World>,
    faults: Mutex<Vec<Fault>>,
    requests: Mutex<VecDeque<(String, String)>>,
    cfg: FakeConfig,
}

/// A running fake Console. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeConsole {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

impl Drop for FakeConsole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeConsole {
    pub async fn start(cfg: FakeConfig) -> std::io::Result<Self> {
        Self::start_on(TcpListener::bind(("127.0.0.1", 0)).await?, cfg).await
    }

    pub async fn start_on(listener: TcpListener, cfg: FakeConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            world: Mutex::new(World {
                start: Instant::now(),
                next_dseq: 1_000_001,
                deps: Default::default(),
                providers: cfg.providers.clone(),
                bid_ttl: cfg.bid_ttl,
                initial_funds_uact: cfg.initial_funds_uact,
            }),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(VecDeque::new()),
            cfg,
        });
        let task = tokio::spawn(serve(listener, inner.clone()));
        Ok(Self { addr, inner, task })
    }

    /// `http://127.0.0.1:PORT`: the Console base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ledger(&self) -> Ledger {
        let mut w = self.inner.world.lock();
        w.tick(Instant::now());
        w.ledger()
    }

    pub fn control(&self, c: Control) -> Result<(), String> {
        control(&self.inner, c)
    }

    pub fn inject(&self, fault: Fault) {
        self.inner.faults.lock().push(fault);
    }

    /// Every request seen, as `(method, path?query)`, oldest first.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.requests.lock().iter().cloned().collect()
    }
}

fn control(inner: &Inner, c: Control) -> Result<(), String> {
    let now = Instant::now();
    let mut w = inner.world.lock();
    w.tick(now);
    let dep = |w: &mut World, dseq: &str| -> Result<u64, String> {
        let n: u64 = dseq.parse().map_err(|_| format!("bad dseq {dseq}"))?;
        w.deps
            .contains_key(&n)
            .then_some(n)
            .ok_or(format!("no deployment {dseq}"))
    };
    match c {
        Control::CloseLease { dseq, reason } => {
            let n = dep(&mut w, &dseq)?;
            // A lease closes once; its first reason stands.
            let l = w
                .deps
                .get_mut(&n)
                .and_then(|d| d.lease.as_mut())
                .filter(|l| l.closed.is_none())
                .ok_or("no open lease")?;
            l.state = "closed";
            l.closed = Some((now, reason));
            l.replica = None;
        }
        Control::DrainEscrow { dseq } => {
            let n = dep(&mut w, &dseq)?;
            let h = w.height(now);
            if let Some(d) = w.deps.get_mut(&n) {
                let rate = d.lease.as_ref().map_or(0.0, |l| l.price);
                d.funds = rate * (h - d.settled_height);
            }
            w.tick(now);
        }
        Control::ReplicaDown { dseq } => {
            let n = dep(&mut w, &dseq)?;
            let l = w
                .deps
                .get_mut(&n)
                .and_then(|d| d.lease.as_mut())
                .ok_or("no lease")?;
            // Dropping the replica stops it; its URL stays in the status.
            l.replica = None;
        }
        Control::Unreachable { dseq, on } => {
            let n = dep(&mut w, &dseq)?;
            if let Some(d) = w.deps.get_mut(&n) {
                d.unreachable = on;
            }
        }
        Control::Inject { fault } => {
            drop(w);
            inner.faults.lock().push(fault);
        }
    }
    Ok(())
}

async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(handle(&inner, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let key_ok = req
        .headers()
        .get("x-api-key")
        .is_some_and(|k| k.as_bytes() == inner.cfg.api_key.as_bytes());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    {
        let mut log = inner.requests.lock();
        log.push_back((method.to_string(), format!("{path}?{query}")));
        if log.len() > 10_000 {
            log.pop_front();
        }
    }
    if !path.starts_with("/_") {
        let mut faults = inner.faults.lock();
        if let Some(i) = faults.iter().position(|f| {
            f.times > 0
                && path.starts_with(&f.path_prefix)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
        }) {
            let f = &mut faults[i];
            f.times -= 1;
            let status =
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = if f.echo_request {
                format!(
                    "injected failure for request {}",
                    String::from_utf8_lossy(&body)
                )
            } else {
                "injected failure".to_owned()
            };
            let mut r = error(status, &msg);
            if let Some(s) = f.retry_after {
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
            }
            faults.retain(|f| f.times > 0);
            return r;
        }
    }
    let public = matches!(
        (&method, path.as_str()),
        (&Method::GET, "/v1/providers" | "/v1/blocks" | "/_ledger") | (&Method::POST, "/_control")
    ) || path.starts_with("/v1/deployment/");
    if !public && !key_ok {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid x-api-key");
    }
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    route(inner, &method, &path, &query, json_body).await
}
