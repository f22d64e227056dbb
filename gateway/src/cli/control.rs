//! The control plane as the binary runs it: market, state file, prober and
//! controller, plus the admin routes it adds (`/status`, `/fleet`) and the
//! controller behind the admin API's leases, pools, cordons and replacements.

use std::{future::Future, path::Path, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use leasegate_controller::{
    Controller, ControllerHandle, Deps,
    demand::Signals,
    fleet::{LONG_POLL, fleet_handler},
    launcher::SimReplicaLauncher,
    market::{
        Market,
        sim::{SimConfig, SimMarket},
    },
    ops::OpsError,
    probe::HttpProber,
    status::ControllerStatus,
    store::{SqliteStore, Store},
};
use leasegate_fleet::{Secret, Snapshot};
use sha2::{Digest, Sha256};
use tokio::{sync::watch, task::JoinHandle};

use super::unified::{ControlSettings, MarketKind};
use crate::{
    admin::{AdminRoutes, ControlApi, ControlApiError},
    server::{Body, body},
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
    #[error("akash market: {0}")]
    Akash(String),
}

/// A running controller and what the rest of the process needs from it.
#[derive(Debug)]
pub struct ControlPlane {
    pub handle: Arc<ControllerHandle>,
    pub fleet: watch::Receiver<Arc<Snapshot>>,
    pub signals: Signals,
    /// The simulated market, when that is the market (tests drive chaos on it).
    pub sim: Option<Arc<SimMarket>>,
    chaos: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Opens the state file, builds the market and starts the controller.
    pub fn start(settings: &ControlSettings, seed: Option<u64>) -> Result<Self, ControlError> {
        let path = settings.controller.state_path();
        let store = open_store(&path)?;
        let mut render = None;
        let (market, sim): (Arc<dyn Market>, Option<Arc<SimMarket>>) = match settings.market.kind {
            MarketKind::Akash => {
                let (market, r) =
                    super::akash::market(&settings.market).map_err(ControlError::Akash)?;
                render = Some(r);
                (market, None)
            }
            MarketKind::Sim => {
                let s = &settings.market.sim;
                let cfg = SimConfig::scaled(seed.unwrap_or(s.seed), s.speedup);
                let market = Arc::new(
                    SimMarket::new(cfg, Arc::new(demo_launcher()))
                        .starting_after(highest_dseq(&*store)),
                );
                (market.clone(), Some(market))
            }
        };
        let chaos = match (&sim, settings.market.sim.chaos_every) {
            (Some(m), Some(every)) => {
                Some(m.spawn_chaos(every, settings.market.sim.chaos_revive_after))
            }
            _ => None,
        };
        let prober = Arc::new(HttpProber::new(settings.controller.probe_timeout));
        let mut deps = Deps::new(market, store, prober);
        // The akash templates with the operator's expose/auditor/price settings.
        if let Some(r) = render {
            deps.render = r;
        }
        let signals = deps.signals.clone();
        let (handle, fleet) = Controller::start_with(settings.controller_config(), deps);
        tracing::info!(
            state = %path.display(),
            market = ?settings.market.kind,
            pools = settings.pools.len(),
            "controller started"
        );
        Ok(Self {
            handle: Arc::new(handle),
            fleet,
            signals,
            sim,
            chaos,
        })
    }

    /// The admin routes of this controller; `/fleet` needs `token` (none:
    /// `/fleet` refuses every caller).
    pub fn routes(&self, token: Option<&Secret>) -> Arc<dyn AdminRoutes> {
        self.build_routes(token, false)
    }

    /// [`ControlPlane::routes`] plus the admin API's controller routes
    /// (`/admin/leases`, `/admin/pools`, cordons, replacements) behind the
    /// same token, for a process with no gateway to serve them
    /// (`leasegate controller`).
    pub fn routes_with_admin_api(&self, token: Option<&Secret>) -> Arc<dyn AdminRoutes> {
        self.build_routes(token, true)
    }

    fn build_routes(&self, token: Option<&Secret>, admin_api: bool) -> Arc<dyn AdminRoutes> {
        let token = token.map(|t| Sha256::digest(t.expose().as_bytes()).into());
        Arc::new(ControllerRoutes {
            handle: self.handle.clone(),
            signals: self.signals.clone(),
            fleet: self.fleet.clone(),
            token,
            wait: LONG_POLL,
            admin_api,
        })
    }

    /// Stops the reconcile loops after the runs under way.
    pub async fn shutdown(self) {
        if let Some(c) = self.chaos {
            c.abort();
        }
        match Arc::try_unwrap(self.handle) {
            Ok(h) => h.shutdown().await,
            // An admin connection still holds it: dropping aborts, which the
            // controller survives by design (intents are durable).
            Err(h) => drop(h),
        }
    }
}

/// Replicas that take a little time to answer, like a small model on a
/// GPU, so streams are visibly streams and failures can hit mid-request.
fn demo_launcher() -> SimReplicaLauncher {
    SimReplicaLauncher {
        base: leasegate_replica_sim::Behavior {
            ttft: Duration::from_millis(50),
            inter_token: Duration::from_millis(10),
            ..leasegate_replica_sim::Behavior::default()
        },
    }
}

/// The admin token from the variable `var`; unset or empty means none.
/// Trimmed like the admin API's, so one variable gives one token.
pub fn admin_token(var: &str) -> Option<Secret> {
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
        _ => {
            tracing::info!(variable = %var, "no admin token set: /fleet is closed to every caller");
            None
        }
    }
}

fn open_store(path: &Path) -> Result<Arc<dyn Store>, ControlError> {
    let fail = |reason: String| ControlError::State {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    let store = SqliteStore::open(path).map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(store))
}

/// The highest deployment number the store has seen.
fn highest_dseq(store: &dyn Store) -> u64 {
    store
        .leases(true)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.dseq.0.parse::<u64>().ok())
        .chain(
            store
                .intents(true)
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i.dseq.as_ref()?.0.parse::<u64>().ok()),
        )
        .max()
        .unwrap_or(0)
}

/// `GET /status` (no secrets), `GET /fleet?after=` (replica keys: token)
/// and `POST /demand` (a gateway's reports: token).
struct ControllerRoutes {
    handle: Arc<ControllerHandle>,
    signals: Signals,
    fleet: watch::Receiver<Arc<Snapshot>>,
    /// SHA-256 of the admin token; `None`: `/fleet` is closed.
    token: Option<[u8; 32]>,
    wait: Duration,
    /// Also serve `/admin/*` (no gateway in this process does).
    admin_api: bool,
}

impl AdminRoutes for ControllerRoutes {
    fn serves(&self, path: &str) -> bool {
        matches!(path, "/status" | "/fleet" | "/demand")
            || (self.admin_api && path.starts_with("/admin/"))
    }

    fn control(&self) -> Option<Arc<dyn ControlApi>> {
        Some(self.api())
    }

    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let path = req.uri().path();
        if path.starts_with("/admin/") {
            if !self.authorized(req.headers()) {
                return ready(unauthorized());
            }
            return ready(crate::admin::control_only(self.api(), &req));
        }
        let want = if path == "/demand" {
            http::Method::POST
        } else {
            http::Method::GET
        };
        if req.method() != want {
            let msg = format!("use {want}");
            return ready(error(
                StatusCode::METHOD_NOT_ALLOWED,
                &msg,
                "method_not_allowed",
            ));
        }
        if path == "/status" {
            return ready(self.status());
        }
        if !self.authorized(req.headers()) {
            return ready(unauthorized());
        }
        if path == "/demand" {
            let signals = self.signals.clone();
            return Box::pin(async move { demand(signals, req).await });
        }
        let rx = self.fleet.clone();
        let wait = self.wait;
        Box::pin(async move {
            let Ok(resp) = fleet_handler(rx, req, wait).await;
            let (parts, full) = resp.into_parts();
            let body = full
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Response::from_parts(parts, body::full(body))
        })
    }
}

/// The controller as the admin API's `/admin/leases`, `/admin/pools`,
/// cordons and replacements see it: the status views and the handle's
/// operator actions, as JSON.
struct ControllerApi {
    handle: Arc<ControllerHandle>,
}

impl ControllerApi {
    fn status(&self) -> Result<ControllerStatus, ControlApiError> {
        self.handle.status().map_err(|e| {
            tracing::warn!(error = %e, "controller status not built");
            ControlApiError::Unavailable
        })
    }
}

fn ops_error(e: OpsError) -> ControlApiError {
    match e {
        OpsError::Store(e) => {
            tracing::warn!(error = %e, "operator action failed at the state store");
            ControlApiError::Unavailable
        }
        OpsError::UnknownLease(_) => ControlApiError::NotFound(e.to_string()),
        OpsError::NotReplaceable { .. } => ControlApiError::Conflict(e.to_string()),
        OpsError::BadProvider => ControlApiError::BadRequest(e.to_string()),
    }
}

impl ControlApi for ControllerApi {
    fn leases(&self) -> Result<serde_json::Value, ControlApiError> {
        let st = self.status()?;
        Ok(serde_json::json!({
            "leases": st.leases,
            "spend_usd_per_hour": st.spend_usd_per_hour,
        }))
    }

    fn pools(&self) -> Result<serde_json::Value, ControlApiError> {
        let st = self.status()?;
        Ok(serde_json::json!({ "pools": st.pools, "cordoned": st.cordoned }))
    }

    fn cordon(
        &self,
        provider: &str,
        on: bool,
        reason: Option<String>,
    ) -> Result<serde_json::Value, ControlApiError> {
        if on {
            let c = self.handle.cordon(provider, reason).map_err(ops_error)?;
            Ok(serde_json::json!({
                "provider": c.provider,
                "cordoned": true,
                "reason": c.reason,
                "since_ms": c.since_ms,
            }))
        } else {
            let was = self.handle.uncordon(provider).map_err(ops_error)?;
            Ok(serde_json::json!({
                "provider": provider,
                "cordoned": false,
                "was_cordoned": was,
            }))
        }
    }

    fn replace(&self, lease: &str) -> Result<serde_json::Value, ControlApiError> {
        let r = self.handle.replace(lease).map_err(ops_error)?;
        serde_json::to_value(r).map_err(|_| ControlApiError::Unavailable)
    }
}

fn unauthorized() -> Response<Body> {
    error(
        StatusCode::UNAUTHORIZED,
        "a valid admin bearer token is required",
        "invalid_admin_token",
    )
}

fn ready(resp: Response<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
    Box::pin(std::future::ready(resp))
}

/// Reports are small; anything bigger is not a gateway's.
const MAX_REPORT: usize = 1 << 20;

async fn demand(signals: Signals, req: Request<Incoming>) -> Response<Body> {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_REPORT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the report could not be read (over 1 MiB?)",
                "invalid_report",
            );
        }
    };
    match serde_json::from_slice::<super::feed::Report>(&body) {
        Ok(report) => {
            report.apply(&signals);
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("not a demand report: {e}"),
            "invalid_report",
        ),
    }
}

impl ControllerRoutes {
    fn api(&self) -> Arc<dyn ControlApi> {
        Arc::new(ControllerApi {
            handle: self.handle.clone(),
        })
    }

    fn status(&self) -> Response<Body> {
        match self.handle.status() {
            Ok(st) => json(StatusCode::OK, serde_json::to_vec(&st).unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "status not built");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the state store cannot be read",
                    "store_unavailable",
                )
            }
        }
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return false;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Digests of equal length compare without leaking the token's prefix.
        given.is_some_and(|t| Sha256::digest(t.as_bytes()).as_slice() == want.as_slice())
    }
}

fn json(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str, code: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": code,
    }});
    json(status, body.to_string().into_bytes())
}
