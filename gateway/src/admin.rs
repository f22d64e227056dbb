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
    if let Some(extra) = extra.filter(|x| x.serves(req.uri().path())) {
        return extra.handle(req).await;
    }
    if req.uri().path().starts_with("/admin/") {
        return api::handle(&live, req).await;
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
