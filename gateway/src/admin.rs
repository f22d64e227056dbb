//! The admin listener: Prometheus metrics and probes, and the token-protected admin API, apart from client traffic.

mod api;
mod usage;
mod views;

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    error::ApiError,
    fleet::FleetView,
    metrics,
    reload::Live,
    server::{body, body::Body, stack},
};

/// Routes the binary mounts on the admin listener, e.g. the controller's
/// `/status` and `/fleet` under `serve`. They are asked first.
pub trait AdminRoutes: Send + Sync + 'static {
    /// Whether `path` is one of these routes.
    fn serves(&self, path: &str) -> bool;
    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
    /// The lease controller in this process, for `/admin/leases`,
    /// `/admin/pools`, cordons and replacements. Default: none, and those
    /// routes answer 409 `no_controller`.
    fn control(&self) -> Option<Arc<dyn ControlApi>> {
        None
    }
}

/// The lease controller as the admin API sees it. The binary implements it
/// over the controller crate; this crate only sees JSON views, so the
/// gateway library never depends on controller types. Every call is quick
/// (a few state-store statements): the market work an action causes is
/// done later by the controller's reconcile loop.
pub trait ControlApi: Send + Sync + 'static {
    /// `GET /admin/leases`: the open leases and what they cost.
    fn leases(&self) -> Result<serde_json::Value, ControlApiError>;
    /// `GET /admin/pools`: each pool's size and phase, and the cordons.
    fn pools(&self) -> Result<serde_json::Value, ControlApiError>;
    /// Cordons (`on`) or uncordons a provider.
    fn cordon(
        &self,
        provider: &str,
        on: bool,
        reason: Option<String>,
    ) -> Result<serde_json::Value, ControlApiError>;
    /// Asks for a lease to be replaced, make-before-break.
    fn replace(&self, lease: &str) -> Result<serde_json::Value, ControlApiError>;
}

/// Why a controller action or view failed; mapped to HTTP in `api.rs`.
/// Messages are shown to the admin caller, so they carry no secret.
#[derive(Debug, thiserror::Error)]
pub enum ControlApiError {
    #[error(
        "this process runs no lease controller; use `leasegate serve` or the controller's admin API"
    )]
    NoController,
    #[error("{0}")]
    NotFound(String),
    /// The target exists but the action does not apply to its state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// The controller's state store cannot be read or written.
    #[error("the controller's state store is unavailable")]
    Unavailable,
}

/// Answers `GET /metrics`, `/health` and `/ready` on the admin port,
/// `/admin/*` (see `gateway/admin-openapi.yaml`) for the admin token, and
/// whatever `extra` serves.
pub async fn handle(
    prometheus: PrometheusHandle,
    live: Arc<Live>,
    extra: Option<Arc<dyn AdminRoutes>>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(x) = extra.as_ref().filter(|x| x.serves(req.uri().path())) {
        return x.handle(req).await;
    }
    if req.uri().path().starts_with("/admin/") {
        let control = extra.and_then(|x| x.control());
        return api::handle(&live, control, req).await;
    }
    probes_and_metrics(&prometheus, live.fleet(), &req)
}

/// The admin listener of a process without a gateway (`leasegate
/// controller`): `extra`, then metrics and probes over `fleet`.
pub async fn handle_without_gateway(
    prometheus: PrometheusHandle,
    fleet: FleetView,
    extra: Option<Arc<dyn AdminRoutes>>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(extra) = extra.filter(|x| x.serves(req.uri().path())) {
        return extra.handle(req).await;
    }
    probes_and_metrics(&prometheus, &fleet, &req)
}

/// The controller's `/admin/*` routes (leases, pools, cordons, replacements)
/// for a process without a gateway (`leasegate controller`), whose admin
/// routes check the token themselves.
pub fn control_only(control: Arc<dyn ControlApi>, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    api::control_routes(Some(control), req.method(), &segments, req.uri().query())
        .unwrap_or_else(|| ApiError::NotFound(path.to_owned()).into_response())
}

/// `GET /metrics`, `/health` and `/ready`.
fn probes_and_metrics(
    prometheus: &PrometheusHandle,
    fleet: &FleetView,
    req: &Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return ApiError::MethodNotAllowed(req.method().to_string()).into_response();
    }
    match req.uri().path() {
        "/metrics" => {
            // Endpoint health is read at scrape time so the gauge is never stale.
            for e in fleet.current().endpoints() {
                metrics::endpoint_available(&e.spec.id, e.is_available());
            }
            let mut resp = Response::new(body::full(Bytes::from(prometheus.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/health" => {
            let mut resp = Response::new(body::full(Bytes::from_static(b"{\"status\":\"ok\"}")));
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        "/ready" => stack::ready(fleet),
        other => ApiError::NotFound(other.to_owned()).into_response(),
    }
}
