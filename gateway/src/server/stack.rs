//! The request stack, built in one place: each layer of the request path in order.

use std::{net::SocketAddr, sync::Arc};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
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
    policy::{AdminToken, Policy, answer, stage, usage::Price},
    route::{RouteRequest, Router, Selector},
    upstream::{self, Forwarded, Outbound, Trace, Upstream},
    usage::{
        Metered,
        stage::{Accounting, Plan},
    },
};

/// What every request handler shares: one config generation, read-only; a
/// reload builds the next one (see `crate::reload`) and requests keep theirs.
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
    /// Overflow, spend caps, usage and cost.
    pub accounting: Accounting,
    /// Demand counts for the controller, when one listens.
    pub demand: Option<Arc<crate::demand::DemandMeter>>,
    /// Client keys and their limiter state (carried across reloads).
    pub policy: Policy,
    pub admin_token: Option<AdminToken>,
    pub generation: u64,
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
        // Boxed: hyper keeps the allocation of a connection's service future
        // until the connection closes, so an inline `dispatch` (the largest
        // state here) would stay resident for every open stream.
        Box::pin(dispatch(&shared, req, peer, &mut ctx)).await
    };
    match result {
        Ok(Reply::Local(resp)) => {
            ctx.finish(resp.status().as_u16(), "local");
            with_request_id(resp, &request_id)
        }
        // 12. Relay the answer unbuffered; the access line is written, and the
        //     key's tokens and spend settled, when it ends. The meter reads usage
        //     as frames pass (and strips an injected usage chunk); the answer is
        //     priced at its end.
        Ok(Reply::Proxied {
            forwarded,
            stream,
            strip,
            plan,
        }) => {
            let status = forwarded.response.status().as_u16();
            let served = forwarded.response.status().is_success();
            let started = ctx.started;
            let rates = ctx.policy.rates();
            let tap = ctx.policy.tap_slot();
            let sse = stream && forwarded.response.status().is_success();
            let (meter, slot, settle) =
                shared
                    .accounting
                    .meter(forwarded.guard.endpoint(), sse, strip, Some(plan));
            let key_name = ctx.policy.key.clone();
            let on_end: upstream::OnEnd = Box::new(move |end| {
                ctx.policy.settle(served, ctx.started.elapsed());
                let settled =
                    settle.settle(ctx.model.as_deref().unwrap_or("-"), key_name.as_deref());
                if let Some(reason) = settled.overflow {
                    ctx.route = Some(reason.as_str());
                }
                ctx.tokens = settled.usage.map(|u| u.total_tokens);
                ctx.cost_usd = settled.cost_usd;
                ctx.finish(status, end.as_str());
            });
            let timeouts = shared.upstream.timeouts();
            let mut resp =
                upstream::relay_response(forwarded, stream, timeouts, started, &request_id, on_end)
                    .map(|body| tap.wrap(Metered::new(body, meter, slot).boxed_unsync()));
            if sse && strip {
                // Stripping changes the length an upstream may have declared.
                resp.headers_mut().remove(header::CONTENT_LENGTH);
            }
            with_rates(resp, &rates)
        }
        Err(err) => {
            let rates = ctx.policy.rates();
            // The spend cap refuses without knowing the key; count it on the key here.
            ctx.policy.refused(&err);
            ctx.policy.settle(false, ctx.started.elapsed());
            let resp = err.into_response();
            ctx.finish(resp.status().as_u16(), "error");
            with_rates(with_request_id(resp, &request_id), &rates)
        }
    }
}

/// A response made here (logged now) or relayed from upstream (logged when its body ends).
enum Reply {
    Local(Response<Body>),
    Proxied {
        forwarded: Forwarded,
        stream: bool,
        /// The gateway added `include_usage`; the client must not see its effects.
        strip: bool,
        plan: Plan,
    },
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
            let key = auth::identify(&shared.policy, req.headers())?;
            return Ok(Reply::Local(models(shared, key)));
        }
        p if PROXIED.contains(&p) => only(&req, Method::POST)?,
        other => return Err(ApiError::NotFound(other.to_owned())),
    }
    // 4. Authentication: which key, and so which policy.
    let key = auth::identify(&shared.policy, req.headers())?;
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
    // 6b. Usage: a stream must end with a usage chunk to be priced; add the option if missing.
    let (body, strip) = shared.accounting.prepare_body(body, &peek);
    // 7. Candidates: resolve an alias to its pool and take that pool's ready endpoints.
    let pool_model = shared.router.pool_name(&peek.model);
    let state = shared.fleet.current();
    if !state.serves(pool_model) {
        return Err(ApiError::UnknownModel(peek.model));
    }
    // 8. Policy: the key's models, then its limits (counted before any endpoint is chosen).
    //    An embedding generates no tokens beyond its input.
    let completion = if parts.uri.path() == "/v1/embeddings" {
        Some(0)
    } else {
        peek.max_tokens
    };
    stage::admit(
        &shared.policy,
        key,
        &peek.model,
        body.len(),
        completion,
        &mut ctx.policy,
    )?;
    // 9. Locate the client: region header, else GeoIP of the client address; unknown means no geo term.
    let geo = &shared.config.geo;
    let located = geo::locate(
        shared.geo.as_deref(),
        peer,
        &parts.headers,
        &geo.trusted_proxies,
        // The global switch, and the key's own permission when a key is used.
        geo.allow_region_header && key.is_none_or(|k| k.allow_region_header),
    );
    // 10. Selection: the pool's weights, affinity and residency (the pool's
    //     pin and the key's, fallbacks too); the order in which endpoints are
    //     tried, fallbacks last.
    let candidates = state.candidates(pool_model);
    let pin = stage::pin(key, &candidates);
    let pool = shared.router.pool(pool_model);
    let allowed = pool.allowed_regions(pin.regions());
    let route = RouteRequest {
        model: pool_model,
        client_location: located.location.map(|l| (l.lat, l.lon)),
        affinity_key: pool.affinity_key(&parts.headers, peek.user.as_deref()),
        allowed_regions: allowed.as_deref(),
        limit: Some(shared.router.order_limit()),
    };
    let order = pool.selector().order(&route, &candidates);
    let attempts = pin.apply(&peek.model, order.to_vec())?;
    // 10b. Overflow: leases or the fallback tier first, within the fallback spend caps.
    let reselect = || {
        pool.selector()
            .order(&route, &shared.fleet.current().candidates(pool_model))
            .to_vec()
    };
    let plan = shared
        .accounting
        .plan(pool_model, attempts, None, reselect, &mut ctx.route)
        .await;
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            // Refused at the spend cap: unmet demand the controller should see as overflow.
            if let Some(meter) = &shared.demand {
                meter.record(pool_model, route.client_location, true);
            }
            return Err(e);
        }
    };
    ctx.capped = plan.capped;
    // 11. Forward with failover, before any byte reaches the client.
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
    let forwarded = shared.upstream.forward(&out, &plan.order, &mut trace).await;
    ctx.endpoint = trace.endpoint;
    ctx.attempts = trace.attempts;
    // 10b. Demand for the controller, failed requests included; a fallback answer is overflow.
    if let Some(meter) = &shared.demand {
        let overflow = ctx
            .endpoint
            .as_deref()
            .and_then(|id| state.endpoint(id))
            .is_some_and(|e| e.spec.kind == leasegate_fleet::Kind::Fallback);
        meter.record(pool_model, route.client_location, overflow);
    }
    let mut forwarded = forwarded.map_err(|e| pin.on_failure(&peek.model, e))?;
    ctx.policy
        .served_by(Price::of(forwarded.guard.endpoint(), &shared.config));
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
        strip,
        plan,
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
///
/// A body that arrives in one frame is kept as hyper read it. A longer one is
/// copied into one buffer sized from `Content-Length` as its frames arrive,
/// so the copy overlaps the wait for the rest instead of following it.
async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ApiError::BodyRead)?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    // `declared` fits: it was checked against the limit.
                    let size = declared.map_or(len, |d| (d as usize).max(len));
                    joined.reserve(size);
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
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

/// The ready fleet's models plus the aliases that resolve to one of them,
/// limited to what the caller's key may use.
fn models(shared: &Shared, key: Option<&crate::policy::ClientKey>) -> Response<Body> {
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
    names.retain(|m| key.is_none_or(|k| k.allows_model(m)));
    names.sort();
    names.dedup();
    let mut resp = Response::new(body::full(openai::models_list(&names)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// OpenAI's `x-ratelimit-*` headers, on every answer to a key with limits.
fn with_rates(mut resp: Response<Body>, rates: &crate::policy::Rates) -> Response<Body> {
    answer::insert_rate_headers(resp.headers_mut(), rates);
    resp
}

fn with_request_id(mut resp: Response<Body>, id: &HeaderValue) -> Response<Body> {
    resp.headers_mut()
        .insert(upstream::headers::REQUEST_ID, id.clone());
    resp
}
