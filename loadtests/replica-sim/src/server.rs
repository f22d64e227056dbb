//! The HTTP side: accept loop (HTTP/1.1 and h2c), blackholing, and request routing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::behavior::Behavior;
use crate::metrics;
use crate::openai::{self, EmbeddingsRequest, GenerateRequest, Kind, Reply};
use crate::state::{Phase, Route, Shared};
use crate::stream::{Aborted, SimBody, sleep_until, sse};

/// How long a graceful shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(5);

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shared.reached(Phase::Draining) => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.count_connection();
        if shared.behavior().blackhole {
            tokio::spawn(hold(shared.clone(), stream));
            continue;
        }
        // SSE chunks must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let conn_shared = shared.clone();
        tokio::spawn(async move {
            let svc_shared = conn_shared.clone();
            let svc = service_fn(move |req| handle(svc_shared.clone(), req));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = watcher.watch(conn) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = conn_shared.reached(Phase::Killed) => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    shared.set_phase(Phase::Killed);
}

/// A blackholed connection: never read, never answered, closed when blackholing ends.
async fn hold(shared: Arc<Shared>, stream: TcpStream) {
    let mut behavior = shared.watch_behavior();
    tokio::select! {
        _ = behavior.wait_for(|b| !b.blackhole) => {}
        () = shared.reached(Phase::Draining) => {}
    }
    drop(stream);
}

type Answer = Result<Response<SimBody>, Aborted>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let route = Route::of(req.uri().path());
    let in_flight = shared.begin(route);
    let behavior = shared.behavior();
    if behavior.blackhole {
        // A pooled connection opened before blackholing: it goes silent too.
        shared.reached(Phase::Draining).await;
        return Err(Aborted("blackholed request at shutdown"));
    }
    let (parts, body) = req.into_parts();
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        shared.record_authorization(auth.as_bytes());
    }
    let method_ok = match route {
        Route::Chat | Route::Completions | Route::Embeddings => parts.method == Method::POST,
        Route::Models | Route::Health | Route::Metrics => parts.method == Method::GET,
        Route::Other => true,
    };
    if !method_ok {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            "invalid_request_error",
        ));
    }
    match route {
        Route::Health => return Ok(response(StatusCode::OK, None, Bytes::new())),
        Route::Metrics => {
            let text = metrics::render(&shared, &behavior);
            return Ok(response(
                StatusCode::OK,
                Some("text/plain; version=0.0.4"),
                text,
            ));
        }
        Route::Other => {
            return Ok(error(
                StatusCode::NOT_FOUND,
                "not found",
                "invalid_request_error",
            ));
        }
        Route::Chat | Route::Completions | Route::Embeddings | Route::Models => {}
    }
    if let Some(key) = &behavior.api_key
        && !authorized(parts.headers.get(header::AUTHORIZATION), key)
    {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "invalid api key",
            "authentication_error",
        ));
    }
    if route == Route::Models {
        return Ok(json(StatusCode::OK, openai::models(&behavior.models)));
    }
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "request body failed");
            return Err(Aborted("request body failed"));
        }
    };
    let hash = openai::hash64(&body);
    shared.record_request(parts.headers, body.len(), hash);
    if shared.draw_error(behavior.error_rate) {
        let status =
            StatusCode::from_u16(behavior.error_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(error(status, "injected error", "server_error"));
    }
    match route {
        Route::Embeddings => embeddings(&behavior, &body, hash),
        Route::Chat => generate(shared, behavior, body, hash, Kind::Chat, in_flight).await,
        _ => generate(shared, behavior, body, hash, Kind::Text, in_flight).await,
    }
}

fn authorized(header: Option<&HeaderValue>, key: &str) -> bool {
    header
        .and_then(|h| h.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|k| k == key.as_bytes())
}

fn unknown_model(model: &str) -> Response<SimBody> {
    let msg = format!("The model `{model}` does not exist.");
    let body = openai::error_body(&msg, "invalid_request_error", Some("model_not_found"));
    response(StatusCode::NOT_FOUND, Some("application/json"), body)
}

fn bad_json(e: &serde_json::Error) -> Response<SimBody> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("invalid request body: {e}"),
        "invalid_request_error",
    )
}

fn embeddings(behavior: &Behavior, body: &[u8], hash: u64) -> Answer {
    let req: EmbeddingsRequest<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Ok(bad_json(&e)),
    };
    let Some(model) = req.model else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "missing model",
            "invalid_request_error",
        ));
    };
    if !behavior.serves(&model) {
        return Ok(unknown_model(&model));
    }
    let out = openai::embeddings(body, hash, &model, req.input.0, behavior.embedding_dim);
    Ok(json(StatusCode::OK, out))
}

async fn generate(
    shared: Arc<Shared>,
    behavior: Arc<Behavior>,
    body: Bytes,
    hash: u64,
    kind: Kind,
    in_flight: crate::state::InFlight,
) -> Answer {
    let req: GenerateRequest<'_> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return Ok(bad_json(&e)),
    };
    let Some(model) = req.model.as_deref() else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "missing model",
            "invalid_request_error",
        ));
    };
    if !behavior.serves(model) {
        return Ok(unknown_model(model));
    }
    let reply = Reply::new(kind, &body, hash, model, behavior.tokens, req.token_limit());
    if req.stream {
        let include_usage = req.include_usage();
        let body = sse(shared, behavior, reply, include_usage, in_flight);
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(resp);
    }
    let Some(_slot) = shared.admit().await else {
        return Err(Aborted("queue closed"));
    };
    // A whole reply arrives when its last token would have been generated.
    let steps = reply.completion_tokens.saturating_sub(1);
    sleep_until(Instant::now() + behavior.ttft + behavior.inter_token * steps).await;
    Ok(json(StatusCode::OK, reply.full()))
}

fn json(status: StatusCode, body: Bytes) -> Response<SimBody> {
    response(status, Some("application/json"), body)
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response<SimBody> {
    json(status, openai::error_body(message, kind, None))
}

fn response(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Response<SimBody> {
    let body = if body.is_empty() { None } else { Some(body) };
    let mut resp = Response::new(SimBody::Full(body));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}
