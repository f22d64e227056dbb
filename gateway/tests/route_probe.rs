//! Active prober against in-process loopback replicas: health, model list, queue depth, credentials.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns may fail loudly"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use leasegate_fleet::{Credential, Endpoint, Engine, Kind, Region, Secret, Snapshot, State};
use leasegate_gateway::fleet::FleetView;
use leasegate_gateway::health::{HealthConfig, ProbeError, probe_client, probe_once, spawn_prober};
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// What the fake replica answers, changeable while it runs.
#[derive(Clone)]
struct Script {
    health: StatusCode,
    models: Vec<&'static str>,
    metrics: &'static str,
    /// Accept connections but never answer.
    blackhole: bool,
}

#[derive(Default)]
struct Seen {
    paths: Vec<String>,
    auth: Vec<String>,
}

struct Fake {
    url: String,
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake(script: Script) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let script = Arc::new(Mutex::new(script));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (s, n) = (Arc::clone(&script), Arc::clone(&seen));
    let task = tokio::spawn(async move {
        // Blackholed connections are held here so they stay open and silent.
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let (s, n) = (Arc::clone(&s), Arc::clone(&n));
            if s.lock().blackhole {
                held.push(stream);
                continue;
            }
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let script = s.lock().clone();
                    let resp = answer(&script, &n, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Fake {
        url,
        script,
        seen,
        task,
    }
}

fn answer(s: &Script, seen: &Mutex<Seen>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut seen = seen.lock();
    seen.paths.push(req.uri().path().to_string());
    if let Some(a) = req.headers().get("authorization") {
        seen.auth.push(a.to_str().unwrap().to_string());
    }
    let (status, body) = match req.uri().path() {
        "/health" => (s.health, String::new()),
        "/v1/models" => {
            let data: Vec<_> = s
                .models
                .iter()
                .map(|m| serde_json::json!({"id": m, "object": "model"}))
                .collect();
            let list = serde_json::json!({"object": "list", "data": data});
            (StatusCode::OK, list.to_string())
        }
        "/metrics" => (StatusCode::OK, s.metrics.to_string()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

fn healthy() -> Script {
    Script {
        health: StatusCode::OK,
        models: vec!["m"],
        metrics: "# TYPE vllm:num_requests_waiting gauge\n\
                  vllm:num_requests_waiting{model_name=\"m\"} 3.0\n",
        blackhole: false,
    }
}

fn endpoint(id: &str, url: &str, kind: Kind, credential: Option<Credential>) -> Endpoint {
    Endpoint {
        id: id.into(),
        url: url.into(),
        kind,
        engine: Engine::Vllm,
        models: vec!["m".into()],
        region: Region {
            code: "eu-central".into(),
            country: None,
            lat: 50.1,
            lon: 8.7,
        },
        provider: None,
        price_per_hour_usd: 1.0,
        max_concurrency: 4,
        state: State::Ready,
        credential,
    }
}

fn cfg() -> HealthConfig {
    HealthConfig {
        probe_interval: Duration::from_millis(50),
        probe_timeout: Duration::from_millis(300),
        ..HealthConfig::default()
    }
}

fn view_of(endpoints: Vec<Endpoint>) -> FleetView {
    let view = FleetView::new(cfg());
    view.publish(Arc::new(Snapshot {
        version: 1,
        generated_at_ms: 0,
        endpoints,
    }));
    view
}

/// Polls `cond` every 10 ms for at most 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn healthy_replica_reports_its_queue_and_gets_its_own_key() {
    let r = fake(healthy()).await;
    let key = Credential::Key {
        key: Secret::new("sk-replica-probe"),
    };
    let view = view_of(vec![endpoint("a", &r.url, Kind::Lease, Some(key))]);
    let client = probe_client(&cfg()).unwrap();
    let h = Arc::clone(view.current().endpoint("a").unwrap());
    let depth = probe_once(&client, &h, cfg().probe_timeout).await.unwrap();
    assert_eq!(depth, Some(3));
    let seen = r.seen.lock();
    assert_eq!(seen.paths, ["/health", "/v1/models", "/metrics"]);
    assert!(
        seen.auth.len() == 3 && seen.auth.iter().all(|a| a == "Bearer sk-replica-probe"),
        "{:?}",
        seen.auth
    );
}

#[tokio::test]
async fn env_credential_is_read_from_the_environment() {
    let r = fake(healthy()).await;
    // `set_var` is unsafe in edition 2024 and unsafe code is forbidden, so
    // the credential names a variable the test process already has.
    let Some((name, value)) =
        std::env::vars().find(|(_, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
    else {
        eprintln!("SKIP: no header-safe environment variable to point at");
        return;
    };
    let missing = "LEASEGATE_ROUTE_PROBE_UNSET_KEY";
    let view = view_of(vec![
        endpoint(
            "a",
            &r.url,
            Kind::Lease,
            Some(Credential::Env { var: name }),
        ),
        endpoint(
            "b",
            &r.url,
            Kind::Lease,
            Some(Credential::Env {
                var: missing.into(),
            }),
        ),
    ]);
    let client = probe_client(&cfg()).unwrap();
    let state = view.current();
    probe_once(&client, state.endpoint("a").unwrap(), cfg().probe_timeout)
        .await
        .unwrap();
    assert_eq!(r.seen.lock().auth[0], format!("Bearer {value}"));
    let err = probe_once(&client, state.endpoint("b").unwrap(), cfg().probe_timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::MissingKey(ref v) if v == missing),
        "{err}"
    );
    assert!(!err.to_string().contains(&value));
}

#[tokio::test]
async fn a_missing_model_or_failing_health_marks_the_endpoint_down_until_it_recovers() {
    let r = fake(healthy()).await;
    let view = view_of(vec![endpoint("a", &r.url, Kind::Lease, None)]);
    let prober = spawn_prober(view.clone(), probe_client(&cfg()).unwrap());
    let h = Arc::clone(view.current().endpoint("a").unwrap());
    eventually("queue depth scraped", || h.queue_depth() == Some(3)).await;
    r.script.lock().models = vec!["other"];
    eventually("model missing -> down", || !h.is_available()).await;
    r.script.lock().models = vec!["m"];
    eventually("recovered", || h.is_available()).await;
    r.script.lock().health = StatusCode::SERVICE_UNAVAILABLE;
    eventually("/health 503 -> down", || !h.probe_ok()).await;
    assert_eq!(h.queue_depth(), None, "a failed probe forgets the queue");
    r.script.lock().health = StatusCode::OK;
    eventually("recovered again", || h.probe_ok()).await;
    prober.abort();
}

#[tokio::test]
async fn a_blackholed_replica_fails_within_the_probe_timeout() {
    let r = fake(Script {
        blackhole: true,
        ..healthy()
    })
    .await;
    let view = view_of(vec![endpoint("a", &r.url, Kind::Lease, None)]);
    let client = probe_client(&cfg()).unwrap();
    let started = tokio::time::Instant::now();
    let state = view.current();
    let err = probe_once(&client, state.endpoint("a").unwrap(), cfg().probe_timeout)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Timeout), "{err}");
    // A bound against hanging, not a performance assertion.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn fallbacks_and_draining_endpoints_are_not_probed() {
    let r = fake(healthy()).await;
    let mut draining = endpoint("d", &r.url, Kind::Lease, None);
    draining.state = State::Draining;
    let probed = fake(healthy()).await;
    let view = view_of(vec![
        endpoint("f", &r.url, Kind::Fallback, None),
        draining,
        endpoint("a", &probed.url, Kind::Lease, None),
    ]);
    let prober = spawn_prober(view.clone(), probe_client(&cfg()).unwrap());
    eventually("two probe rounds", || probed.seen.lock().paths.len() >= 6).await;
    prober.abort();
    assert!(r.seen.lock().paths.is_empty(), "{:?}", r.seen.lock().paths);
}
