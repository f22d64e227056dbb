//! The request stack, built in one place: each layer of the request path in order.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::{
    body::{self, Body},
    ctx::RequestCtx,
};
use crate::{
    auth,
    config::Config,
    error::ApiError,
    fleet::FleetView,
    geo::{self, GeoDb},
    openai,
    route::{RouteRequest, Router, Selector},
    upstream::{self, Forwarded, Outbound, Trace, Upstream},
};

/// What every request handler shares: built once at start, read-only after.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub fleet: FleetView,
    /// Per-pool selectors, affinity and residency; also answers admin explain.
    pub router: Arc<Router>,
    pub upstream: Upstream,
    pub limiter: Arc<Semaphore>,
    /// GeoIP database, when configured.
    pub geo: Option<Arc<GeoDb>>,
}

/// The API paths that proxy to an upstream.
const PROXIED: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// Handles one API request from start to (the start of) its response.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    // 1. Concurrency limit: shed at once with 503 + Retry-After, never queue.
    let permit = Arc::clone(&shared.limiter).try_acquire_owned().ok();
    // 2. Request id: the client's or a new one; echoed on every answer and sent upstream.
    let request_id = upstream::headers::request_id(req.headers());
    // Probes skip the limit: a saturated gateway is alive and must not be restarted for it.
    let is_probe = matches!(req.uri().path(), "/health" | "/ready");
    let overloaded = permit.is_none() && !is_probe;
    let mut ctx = RequestCtx::new(
        request_id.clone(),
        req.method().clone(),
        req.uri().path().to_owned(),
        permit,
    );
    let result = if overloaded {
        Err(ApiError::Overloaded)
    } else {
        dispatch(&shared, req, peer, &mut ctx).await
    };
    match result {
        Ok(Reply::Local(resp)) => {
            ctx.finish(resp.status().as_u16(), "local");
            with_request_id(resp, &request_id)
        }
        // 11. Relay the answer unbuffered; the access line is written when it ends.
        Ok(Reply::Proxied { forwarded, stream }) => {
            let status = forwarded.response.status().as_u16();
            let started = ctx.started;
            let on_end: upstream::OnEnd = Box::new(move |end| ctx.finish(status, end.as_str()));
            let timeouts = shared.upstream.timeouts();
            upstream::relay_response(forwarded, stream, timeouts, started, &request_id, on_end)
        }
        Err(err) => {
            let resp = err.into_response();
            ctx.finish(resp.status().as_u16(), "error");
            with_request_id(resp, &request_id)
        }
    }
}

/// A response made here (logged now) or relayed from upstream (logged when its body ends).
enum Reply {
    Local(Response<Body>),
    Proxied { forwarded: Forwarded, stream: bool },
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    ctx: &mut RequestCtx,
) -> Result<Reply, ApiError> {
    let path = req.uri().path();
    // 3. Routing by path and method: probes and the models list are answered here.
    match path {
        "/health" => {
            only(&req, Method::GET)?;
            return Ok(Reply::Local(json(StatusCode::OK, r#"{"status":"ok"}"#)));
        }
        "/ready" => {
            only(&req, Method::GET)?;
            return Ok(Reply::Local(ready(&shared.fleet)));
        }
        "/v1/models" => {
            only(&req, Method::GET)?;
            // 4. Authentication (every /v1 path).
            auth::check(&shared.config.client_keys, req.headers())?;
            return Ok(Reply::Local(models(shared)));
        }
        p if PROXIED.contains(&p) => only(&req, Method::POST)?,
        other => return Err(ApiError::NotFound(other.to_owned())),
    }
    // 4. Authentication.
    auth::check(&shared.config.client_keys, req.headers())?;
    let (parts, incoming) = req.into_parts();
    // 5. Body: read once, under the limit; a client trickling it would hold
    //    a concurrency slot, so reading is bounded by the total timeout too.
    let limit = shared.config.limits.max_body_bytes;
    let body = tokio::time::timeout(
        shared.config.timeouts.total,
        read_body(incoming, &parts.headers, limit),
    )
    .await
    .map_err(|_| ApiError::BodyRead)??;
    // 6. Peek: model and stream flags from the raw bytes; the bytes go upstream unchanged.
    let peek = openai::peek(&body)?;
    ctx.model = Some(peek.model.clone());
    ctx.stream = peek.stream;
    // 7. Candidates: resolve an alias to its pool and take that pool's ready endpoints.
    let pool_model = shared.router.pool_name(&peek.model);
    let state = shared.fleet.current();
    if !state.serves(pool_model) {
        return Err(ApiError::UnknownModel(peek.model));
    }
    // 8. Locate the client: region header, else GeoIP of the client address; unknown means no geo term.
    let geo = &shared.config.geo;
    let located = geo::locate(
        shared.geo.as_deref(),
        peer,
        &parts.headers,
        &geo.trusted_proxies,
        geo.allow_region_header,
    );
    // 9. Selection: the pool's weights, affinity and residency; the order
    //    in which endpoints are tried, fallbacks last.
    let pool = shared.router.pool(pool_model);
    let allowed = pool.allowed_regions(None);
    let route = RouteRequest {
        model: pool_model,
        client_location: located.location.map(|l| (l.lat, l.lon)),
        affinity_key: pool.affinity_key(&parts.headers, peek.user.as_deref()),
        allowed_regions: allowed.as_deref(),
        limit: Some(shared.router.order_limit()),
    };
    let order = pool.selector().order(&route, &state.candidates(pool_model));
    // 10. Forward with failover, before any byte reaches the client.
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    let out = Outbound {
        method: parts.method.clone(),
        path: path_and_query,
        headers: &parts.headers,
        body,
        client_model: &peek.model,
        pool_model,
        stream: peek.stream,
        request_id: &ctx.request_id,
        started: ctx.started,
    };
    let mut trace = Trace::default();
    let forwarded = shared.upstream.forward(&out, &order, &mut trace).await;
    ctx.endpoint = trace.endpoint;
    ctx.attempts = trace.attempts;
    let mut forwarded = forwarded?;
    ctx.ttfb = Some(forwarded.ttfb);
    if shared.router.explain_headers() {
        explain_headers(&mut forwarded, &order);
    }
    if let Some(endpoint) = &ctx.endpoint {
        crate::metrics::record_ttft(&peek.model, endpoint, forwarded.ttfb);
    }
    Ok(Reply::Proxied {
        forwarded,
        stream: peek.stream,
    })
}

/// Names the endpoint that answered, its region and why it was chosen.
fn explain_headers(forwarded: &mut Forwarded, order: &crate::route::Order) {
    let endpoint = forwarded.guard.endpoint();
    let tier = order
        .placement_of(endpoint)
        .map_or("unknown", |p| p.as_str());
    let headers = forwarded.response.headers_mut();
    for (name, value) in [
        ("x-leasegate-endpoint", endpoint.spec.id.as_str()),
        ("x-leasegate-region", endpoint.spec.region.code.as_str()),
        ("x-leasegate-tier", tier),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

fn only(req: &Request<Incoming>, method: Method) -> Result<(), ApiError> {
    if req.method() == method {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(req.method().to_string()))
    }
}

/// Reads the whole body, refusing early on a declared length over the limit
/// and again while reading for bodies without one.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::BodyRead),
    }
}

fn json(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 200 when at least one ready endpoint or fallback exists.
pub fn ready(fleet: &FleetView) -> Response<Body> {
    if fleet.current().has_ready() {
        json(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#)
    }
}

/// The ready fleet's models plus the aliases that resolve to one of them.
fn models(shared: &Shared) -> Response<Body> {
    let state = shared.fleet.current();
    let mut names = state.models();
    for f in &shared.config.fallbacks {
        names.extend(f.models.keys().filter(|m| state.serves(m)).cloned());
    }
    names.extend(
        shared
            .config
            .aliases
            .iter()
            .filter(|(_, target)| state.serves(target))
            .map(|(alias, _)| alias.clone()),
    );
    names.sort();
    names.dedup();
    let mut resp = Response::new(body::full(openai::models_list(&names)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn with_request_id(mut resp: Response<Body>, id: &HeaderValue) -> Response<Body> {
    resp.headers_mut()
        .insert(upstream::headers::REQUEST_ID, id.clone());
    resp
}
