//! The admin listener: Prometheus metrics and probes, and the token-protected admin API, apart from client traffic.

mod api;
mod views;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    error::ApiError,
    metrics,
    reload::Live,
    server::{body, body::Body, stack},
};

/// Answers `GET /metrics`, `/health` and `/ready` on the admin port, and
/// `/admin/*` (see `gateway/admin-openapi.yaml`) for the admin token.
pub async fn handle(
    prometheus: PrometheusHandle,
    live: Arc<Live>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path().starts_with("/admin/") {
        return api::handle(&live, req).await;
    }
    let fleet = live.fleet();
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
