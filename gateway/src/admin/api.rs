//! The `/admin/*` routes: token check, then fleet and config views, drain, reload and explain,
//! and the lease controller's leases, pools, cordons and replacements when the process runs one.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ControlApi, ControlApiError, views};
use crate::{
    error::ApiError,
    reload::Live,
    route::RouteRequest,
    server::body::{self, Body},
};

/// Routes one admin request. Every path needs the admin token; without a
/// configured token the admin API refuses everything. `control` is the
/// lease controller, if this process runs one.
pub async fn handle(
    live: &Arc<Live>,
    control: Option<Arc<dyn ControlApi>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let shared = live.current();
    let authorized = match &shared.admin_token {
        None => Err(ApiError::AdminDisabled),
        Some(token) if token.check(req.headers()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized),
    };
    if let Err(e) = authorized {
        return e.into_response();
    }
    drop(shared);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(resp) = control_routes(control, &method, &segments, req.uri().query()) {
        return resp;
    }
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["admin", "fleet"]) => Ok(ok(views::fleet(&live.fleet().current()))),
        (&Method::GET, ["admin", "endpoints"]) => Ok(ok(views::endpoints(live))),
        (&Method::GET, ["admin", "usage"]) => Ok(ok(super::usage::view(live))),
        (&Method::POST, ["admin", "endpoints", id, "drain"]) => drain(live, id),
        (&Method::GET, ["admin", "config"]) => {
            let s = live.current();
            Ok(ok(views::config(
                &s.config,
                &s.policy,
                s.admin_token.is_some(),
                &live.status(),
            )))
        }
        (&Method::POST, ["admin", "reload"]) => Ok(reload(live).await),
        (&Method::GET, ["admin", "explain"]) => explain(live, req.uri().query().unwrap_or("")),
        (
            _,
            [
                "admin",
                "fleet" | "endpoints" | "config" | "explain" | "usage",
            ],
        )
        | (_, ["admin", "reload"])
        | (_, ["admin", "endpoints", _, "drain"]) => {
            Err(ApiError::MethodNotAllowed(method.to_string()))
        }
        _ => Err(ApiError::NotFound(path.clone())),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// The controller's routes (leases, pools, cordons, replacements), or
/// `None` when the path is not one of them. The caller checked the token.
pub(super) fn control_routes(
    control: Option<Arc<dyn ControlApi>>,
    method: &Method,
    segments: &[&str],
    query: Option<&str>,
) -> Option<Response<Body>> {
    Some(match (method, segments) {
        (&Method::GET, ["admin", "leases"]) => controlled(control, StatusCode::OK, |c| c.leases()),
        (&Method::GET, ["admin", "pools"]) => controlled(control, StatusCode::OK, |c| c.pools()),
        (&Method::POST, ["admin", "providers", p, "cordon"]) => {
            let reason = query_param(query, "reason");
            controlled(control, StatusCode::OK, |c| c.cordon(p, true, reason))
        }
        (&Method::DELETE, ["admin", "providers", p, "cordon"])
        | (&Method::POST, ["admin", "providers", p, "uncordon"]) => {
            controlled(control, StatusCode::OK, |c| c.cordon(p, false, None))
        }
        // Accepted: the replacement is acquired by the controller's loop.
        (&Method::POST, ["admin", "leases", id, "replace"]) => {
            controlled(control, StatusCode::ACCEPTED, |c| c.replace(id))
        }
        (_, ["admin", "leases" | "pools"])
        | (_, ["admin", "providers", _, "cordon" | "uncordon"])
        | (_, ["admin", "leases", _, "replace"]) => {
            ApiError::MethodNotAllowed(method.to_string()).into_response()
        }
        _ => return None,
    })
}

/// Runs `f` on the controller, or answers that there is none.
fn controlled(
    control: Option<Arc<dyn ControlApi>>,
    status: StatusCode,
    f: impl FnOnce(&dyn ControlApi) -> Result<Value, ControlApiError>,
) -> Response<Body> {
    let result = control
        .ok_or(ControlApiError::NoController)
        .and_then(|c| f(c.as_ref()));
    match result {
        Ok(v) => with_status(status, &v),
        Err(e) => control_error(&e),
    }
}

/// The one mapping of [`ControlApiError`] to an OpenAI-shaped answer.
fn control_error(e: &ControlApiError) -> Response<Body> {
    let (status, kind, code) = match e {
        ControlApiError::NoController => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            "no_controller",
        ),
        ControlApiError::NotFound(_) => {
            (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
        }
        ControlApiError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
        ControlApiError::BadRequest(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_parameter",
        ),
        ControlApiError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "store_unavailable",
        ),
    };
    let body = json!({"error": {
        "message": e.to_string(), "type": kind, "param": null, "code": code,
    }});
    with_status(status, &body)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_status(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok(value: Value) -> Response<Body> {
    with_status(StatusCode::OK, &value)
}

fn drain(live: &Live, id: &str) -> Result<Response<Body>, ApiError> {
    if !live.drain(id) {
        return Err(ApiError::NotFound(format!("endpoint {id}")));
    }
    tracing::info!(endpoint = id, "endpoint drained through the admin API");
    let in_flight = live.fleet().current().endpoint(id).map(|e| e.in_flight());
    Ok(ok(
        json!({ "id": id, "state": "draining", "in_flight": in_flight }),
    ))
}

async fn reload(live: &Arc<Live>) -> Response<Body> {
    let task = {
        let live = Arc::clone(live);
        // Reading and parsing the file is blocking work.
        tokio::task::spawn_blocking(move || live.reload())
    };
    let status = match task.await {
        Ok(Ok(_)) => StatusCode::OK,
        Ok(Err(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = serde_json::to_value(live.status()).unwrap_or(Value::Null);
    with_status(status, &body)
}

/// `GET /admin/explain?model=M[&region=CODE][&key=NAME][&ip=IP]`: the
/// candidates for a request, in the order the selector would try them now,
/// then the ones it would skip and why.
fn explain(live: &Live, query: &str) -> Result<Response<Body>, ApiError> {
    let mut model = None;
    let mut region = None;
    let mut key_name = None;
    let mut ip = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "model" => model = Some(v.into_owned()),
            "region" => region = Some(v.into_owned()),
            "key" => key_name = Some(v.into_owned()),
            "ip" => ip = Some(v.into_owned()),
            other => return Err(ApiError::BadRequest(format!("unknown parameter `{other}`"))),
        }
    }
    let model = model.ok_or_else(|| ApiError::BadRequest("`model` is required".into()))?;
    let shared = live.current();
    let key = match &key_name {
        None => None,
        Some(name) => Some(
            shared
                .policy
                .keys
                .iter()
                .find(|k| k.name == *name)
                .ok_or_else(|| ApiError::BadRequest(format!("no client key named `{name}`")))?,
        ),
    };
    // Placed like a request: a region (as the header would give it) wins,
    // else the GeoIP database, when one is configured.
    let (location, source) = match (&region, &ip) {
        (Some(code), _) => {
            let r = leasegate_fleet::region::lookup(code).ok_or_else(|| {
                ApiError::BadRequest(format!("`{code}` is not a known region code"))
            })?;
            (
                Some((r.lat, r.lon, r.country.map(str::to_owned))),
                "region_header",
            )
        }
        (None, Some(text)) => {
            let addr: std::net::IpAddr = text
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("`{text}` is not an IP address")))?;
            match shared.geo.as_ref().and_then(|db| db.lookup(addr)) {
                Some(l) => (
                    Some((l.lat, l.lon, l.country.map(|c| c.to_string()))),
                    "geoip",
                ),
                None => (None, "none"),
            }
        }
        (None, None) => (None, "none"),
    };
    let pool = shared
        .config
        .aliases
        .get(&model)
        .map_or(model.as_str(), String::as_str);
    let state = live.fleet().current();
    if !state.serves(pool) {
        return Err(ApiError::UnknownModel(model));
    }
    let candidates = state.candidates(pool);
    let pin = crate::policy::stage::pin(key, &candidates);
    let route = RouteRequest {
        client_location: location.as_ref().map(|l| (l.0, l.1)),
        allowed_regions: pin.regions(),
        ..RouteRequest::new(pool)
    };
    // A selector with the running weights scores exactly as the running one:
    // the live terms (latency, load, errors) are in the endpoint handles.
    let rows = shared
        .router
        .pool(pool)
        .selector()
        .explain(Instant::now(), &route, &candidates);
    Ok(ok(json!({
        "model": model,
        "pool": pool,
        "client": {
            "ip": ip,
            "location": location.map(|(lat, lon, country)| json!({ "lat": lat, "lon": lon, "country": country })),
            "source": source,
        },
        "residency": key.map_or_else(|| "any".to_owned(), |k| k.residency.to_string()),
        "candidates": rows,
    })))
}
