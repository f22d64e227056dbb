//! A fake Akash Console API: every endpoint leasegate's `akash` market uses,
//! in the spec's shapes, with knobs for the failures seen in practice.
//!
//! Runs in-process (`FakeConsole::start`, bound to `127.0.0.1:0`) or as the
//! `fake-console` binary. `GET /_ledger` lists every deployment and lease it
//! holds; `POST /_control` turns the knobs from another process.

// The provider entry is one large `json!` literal.
#![recursion_limit = "256"]

mod model;
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
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use model::{Dep, LeaseRec, SdlFacts, World};
pub use model::{FakeProvider, Ledger, LedgerDeployment, LedgerLease, OWNER};

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
            let l = w
                .deps
                .get_mut(&n)
                .and_then(|d| d.lease.as_mut())
                .ok_or("no lease")?;
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

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        &json!({"error": status.canonical_reason().unwrap_or("Error"), "message": message}),
    )
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

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

async fn route(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> Response<Full<Bytes>> {
    let now = Instant::now();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let data = |v: Value| reply(StatusCode::OK, &json!({ "data": v }));
    match (method, segs.as_slice()) {
        (&Method::GET, ["_ledger"]) => {
            let mut w = inner.world.lock();
            w.tick(now);
            reply(StatusCode::OK, &json!(w.ledger()))
        }
        (&Method::POST, ["_control"]) => {
            match body.and_then(|b| serde_json::from_value::<Control>(b).ok()) {
                Some(c) => match control(inner, c) {
                    Ok(()) => reply(StatusCode::OK, &json!({"ok": true})),
                    Err(e) => error(StatusCode::NOT_FOUND, &e),
                },
                None => error(StatusCode::BAD_REQUEST, "expected a control op"),
            }
        }
        (&Method::GET, ["v1", "providers"]) => {
            let w = inner.world.lock();
            reply(
                StatusCode::OK,
                &Value::Array(w.providers.iter().map(World::provider_json).collect()),
            )
        }
        (&Method::GET, ["v1", "blocks"]) => {
            let w = inner.world.lock();
            let h = w.height(now);
            reply(
                StatusCode::OK,
                &json!([{
                "height": h, "proposer": {"address": "fake", "operatorAddress": "fake", "moniker": "fake", "avatarUrl": null},
                "transactionCount": 0, "totalTransactionCount": 0, "datetime": "2026-01-01T00:00:00.000Z"}]),
            )
        }
        (&Method::POST, ["v1", "deployments"]) => {
            let Some(sdl) = body
                .as_ref()
                .and_then(|b| b.pointer("/data/sdl"))
                .and_then(Value::as_str)
            else {
                return error(StatusCode::BAD_REQUEST, "data.sdl is required");
            };
            let facts = match SdlFacts::parse(sdl) {
                Ok(f) => f,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let deposit = body
                .as_ref()
                .and_then(|b| b.pointer("/data/deposit"))
                .and_then(Value::as_f64);
            let mut w = inner.world.lock();
            w.tick(now);
            let dseq = w.next_dseq;
            w.next_dseq += 1;
            let manifest = facts.manifest();
            let funds = deposit.map_or(w.initial_funds_uact, |usd| usd * 1e6);
            let settled = w.height(now);
            w.deps.insert(
                dseq,
                Dep {
                    dseq,
                    facts,
                    created: now,
                    closed: None,
                    funds,
                    settled_height: settled,
                    lease: None,
                    unreachable: false,
                    auto_top_up: true,
                },
            );
            reply(
                StatusCode::CREATED,
                &json!({"data": {
                "dseq": dseq.to_string(), "manifest": manifest,
                "signTx": {"code": 0, "transactionHash": format!("FAKETX{dseq}"), "rawLog": ""}}}),
            )
        }
        (&Method::GET, ["v1", "deployments"]) => {
            let skip: usize = param(query, "skip")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let limit: usize = param(query, "limit")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000)
                .max(1);
            let mut w = inner.world.lock();
            w.tick(now);
            let total = w.deps.len();
            let items: Vec<Value> = w
                .deps
                .values()
                .skip(skip)
                .take(limit)
                .map(|d| w.list_item_json(d, now))
                .collect();
            data(json!({"deployments": items, "pagination": {
                "total": total, "skip": skip, "limit": limit, "hasMore": skip + limit < total}}))
        }
        (_, ["v1", "deployments", dseq]) => deployment_call(inner, method, dseq, now),
        (&Method::GET, ["v1", "deployment", _owner, dseq]) => {
            let mut w = inner.world.lock();
            w.tick(now);
            match dseq.parse::<u64>().ok().and_then(|n| w.deps.get(&n)) {
                Some(d) => reply(StatusCode::OK, &w.detail_json(d, now)),
                None => error(StatusCode::NOT_FOUND, "deployment not found"),
            }
        }
        (&Method::GET, ["v1", "bids"]) => {
            let mut w = inner.world.lock();
            w.tick(now);
            match param(query, "dseq")
                .and_then(|d| d.parse::<u64>().ok())
                .and_then(|n| w.deps.get(&n))
            {
                Some(d) => data(Value::Array(w.bids_json(d, now))),
                None => error(StatusCode::NOT_FOUND, "deployment not found"),
            }
        }
        (&Method::POST, ["v1", "leases"]) => create_lease(inner, body, now).await,
        (&Method::POST, ["v1", "deposit-deployment"]) => {
            let dseq = body
                .as_ref()
                .and_then(|b| b.pointer("/data/dseq"))
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<u64>().ok());
            let usd = body
                .as_ref()
                .and_then(|b| b.pointer("/data/deposit"))
                .and_then(Value::as_f64);
            let (Some(n), Some(usd)) = (dseq, usd) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "data.dseq and data.deposit are required",
                );
            };
            let mut w = inner.world.lock();
            w.tick(now);
            let h = w.height(now);
            let Some(d) = w.deps.get_mut(&n).filter(|d| d.closed.is_none()) else {
                return error(StatusCode::NOT_FOUND, "no active deployment");
            };
            // Settle what accrued, then add the deposit.
            let rate = d
                .lease
                .as_ref()
                .filter(|l| l.closed.is_none())
                .map_or(0.0, |l| l.price);
            d.funds = (d.funds - rate * (h - d.settled_height)).max(0.0) + usd * 1e6;
            d.settled_height = h;
            let d = &w.deps[&n];
            data(w.deployment_json(d, now))
        }
        (_, ["v2", "deployment-settings", dseq]) => {
            let mut w = inner.world.lock();
            let Some(d) = dseq.parse::<u64>().ok().and_then(|n| w.deps.get_mut(&n)) else {
                return reply(
                    StatusCode::NOT_FOUND,
                    &json!({"message": "Deployment settings not found"}),
                );
            };
            if method == Method::PATCH {
                match body
                    .as_ref()
                    .and_then(|b| b.pointer("/data/autoTopUpEnabled"))
                    .and_then(Value::as_bool)
                {
                    Some(on) => d.auto_top_up = on,
                    None => {
                        return error(StatusCode::BAD_REQUEST, "data.autoTopUpEnabled is required");
                    }
                }
            }
            data(json!({
                "id": format!("00000000-0000-4000-8000-{:012}", d.dseq), "userId": "fake-user",
                "dseq": d.dseq.to_string(), "autoTopUpEnabled": d.auto_top_up,
                "estimatedTopUpAmount": 0, "topUpFrequencyMs": 3_600_000,
                "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint in the fake Console",
        ),
    }
}

fn deployment_call(
    inner: &Inner,
    method: &Method,
    dseq: &str,
    now: Instant,
) -> Response<Full<Bytes>> {
    let mut w = inner.world.lock();
    w.tick(now);
    let Some(n) = dseq.parse::<u64>().ok().filter(|n| w.deps.contains_key(n)) else {
        return error(StatusCode::NOT_FOUND, "deployment not found");
    };
    match *method {
        Method::GET => reply(
            StatusCode::OK,
            &json!({"data": w.deployment_json(&w.deps[&n], now)}),
        ),
        Method::DELETE => {
            if let Some(d) = w.deps.get_mut(&n) {
                if d.closed.is_none() {
                    d.closed = Some((now, "owner".into()));
                }
                if let Some(l) = d.lease.as_mut().filter(|l| l.closed.is_none()) {
                    l.state = "closed";
                    l.closed = Some((now, "owner".into()));
                    l.replica = None;
                }
            }
            reply(StatusCode::OK, &json!({"data": {"success": true}}))
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "unsupported"),
    }
}

async fn create_lease(inner: &Inner, body: Option<Value>, now: Instant) -> Response<Full<Bytes>> {
    let lease = body.as_ref().and_then(|b| b.pointer("/leases/0")).cloned();
    let manifest_ok = body
        .as_ref()
        .and_then(|b| b.get("manifest"))
        .and_then(Value::as_str)
        .is_some_and(|m| !m.is_empty());
    let (Some(lease), true) = (lease, manifest_ok) else {
        return error(
            StatusCode::BAD_REQUEST,
            "manifest and leases[0] are required",
        );
    };
    let n = lease
        .get("dseq")
        .and_then(Value::as_str)
        .and_then(|d| d.parse::<u64>().ok());
    let provider = lease
        .get("provider")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (n, facts, price) = {
        let mut w = inner.world.lock();
        w.tick(now);
        let Some(d) = n
            .and_then(|n| w.deps.get(&n))
            .filter(|d| d.closed.is_none())
        else {
            return error(StatusCode::NOT_FOUND, "no active deployment");
        };
        if let Some(l) = &d.lease {
            // Idempotent: the same lease again is a success, another is refused.
            return if l.provider == provider {
                reply(StatusCode::OK, &json!({"data": w.deployment_json(d, now)}))
            } else {
                error(StatusCode::BAD_REQUEST, "the order already has a lease")
            };
        }
        let age = now.saturating_duration_since(d.created);
        let Some((_, p)) = w.bidders(d).into_iter().find(|(_, p)| p.owner == provider) else {
            return error(StatusCode::BAD_REQUEST, "no bid from this provider");
        };
        if age < p.bid_delay || age >= p.bid_delay + w.bid_ttl {
            return error(StatusCode::BAD_REQUEST, "bid is not open");
        }
        (d.dseq, d.facts.clone(), p.price_uact)
    };
    let replica = if inner.cfg.start_replicas {
        let behavior = leasegate_replica_sim::Behavior {
            models: vec![facts.model()],
            engine: if facts.is_tgi() {
                leasegate_replica_sim::Engine::Tgi
            } else {
                leasegate_replica_sim::Engine::Vllm
            },
            api_key: facts.replica_key(),
            ..leasegate_replica_sim::Behavior::default()
        };
        match leasegate_replica_sim::Replica::start(behavior).await {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("replica start failed: {e}"),
                );
            }
        }
    } else {
        None
    };
    let mut w = inner.world.lock();
    let h = w.height(now);
    let Some(d) = w.deps.get_mut(&n).filter(|d| d.closed.is_none()) else {
        return error(StatusCode::NOT_FOUND, "no active deployment");
    };
    if d.lease.is_none() {
        d.settled_height = h;
        d.lease = Some(LeaseRec {
            provider,
            price,
            created: now,
            closed: None,
            state: "active",
            replica_url: replica.as_ref().map(|r| r.url()),
            replica,
        });
    }
    let d = &w.deps[&n];
    reply(StatusCode::OK, &json!({"data": w.deployment_json(d, now)}))
}
