//! Forwarding to upstreams: one pooled client, the failover loop, and the relayed response.

mod budget;
pub mod h1;
pub mod headers;
mod relay;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use leasegate_fleet::Credential;
use tokio::time::{Instant, timeout_at};

pub use budget::RetryBudget;
pub use relay::{End, OnEnd, Relay};

use crate::{
    config::{Config, RetryConfig, Timeouts},
    error::ApiError,
    fleet::{EndpointHandle, FailureReason, InFlight, Outcome},
    metrics, openai,
    server::body::{Body, BoxError},
};

/// hyper's pooled client, for the gateway's own calls (the demand feed to a
/// controller, model discovery); forwarding goes through [`h1::Client`].
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the one pooled client every forwarded request goes through.
pub fn build_client(connect_timeout: Duration) -> Result<h1::Client, rustls::Error> {
    h1::Client::new(connect_timeout)
}

/// Builds a hyper client for the gateway's own calls.
pub fn build_http_client(connect_timeout: Duration) -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

/// The key to present to an endpoint, resolved at send time so a rotated
/// environment variable takes effect without a restart.
fn upstream_key(credential: Option<&Credential>) -> Option<String> {
    match credential? {
        Credential::Env { var } => std::env::var(var).ok(),
        Credential::Key { key } => Some(key.expose().to_owned()),
    }
}

/// One client request, ready to be sent to any endpoint.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub method: Method,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// The model name the client asked for.
    pub client_model: &'a str,
    /// The pool it resolved to (differs from `client_model` for an alias).
    pub pool_model: &'a str,
    pub stream: bool,
    pub request_id: &'a HeaderValue,
    /// When the request arrived; `timeouts.total` counts from here.
    pub started: Instant,
}

/// An upstream answer whose headers (and, for streams, first chunk) arrived.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<h1::ResponseBody>,
    pub first: Option<Bytes>,
    pub guard: InFlight,
    pub ttfb: Duration,
    pub attempts: u32,
}

/// The endpoint chosen so far and the attempts made, for the access log even on failure.
#[derive(Debug, Default)]
pub struct Trace {
    pub endpoint: Option<String>,
    pub attempts: u32,
}

/// Sends requests along a selector's order with bounded, budgeted failover.
#[derive(Debug)]
pub struct Upstream {
    client: h1::Client,
    timeouts: Timeouts,
    retry: RetryConfig,
    budget: RetryBudget,
    /// Fallback id to its model mapping (client-facing name to upstream name).
    fallback_models: HashMap<String, std::collections::BTreeMap<String, String>>,
}

impl Upstream {
    pub fn new(config: &Config, client: h1::Client) -> Self {
        Self {
            client,
            timeouts: config.timeouts.clone(),
            retry: config.retry.clone(),
            budget: RetryBudget::new(&config.retry),
            fallback_models: config
                .fallbacks
                .iter()
                .map(|f| (f.id.clone(), f.models.clone()))
                .collect(),
        }
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The model name an endpoint must receive for this request.
    fn target_model<'a>(&'a self, endpoint: &EndpointHandle, out: &'a Outbound<'_>) -> &'a str {
        self.fallback_models
            .get(&endpoint.spec.id)
            .and_then(|m| m.get(out.pool_model))
            .map_or(out.pool_model, String::as_str)
    }

    /// Tries endpoints in `order` until one answers without a retryable failure.
    ///
    /// Nothing has reached the client while this runs, so every failure here
    /// may move on: a connect error, no headers (or first chunk) in time, a
    /// 5xx or a 429. Attempts stop at `retry.max_attempts` or when the retry
    /// budget is spent.
    pub async fn forward(
        &self,
        out: &Outbound<'_>,
        order: &[Arc<EndpointHandle>],
        trace: &mut Trace,
    ) -> Result<Forwarded, ApiError> {
        self.budget.deposit();
        let total_deadline = out.started + self.timeouts.total;
        let mut last_error = None;
        for endpoint in order {
            if trace.attempts >= self.retry.max_attempts {
                break;
            }
            if trace.attempts > 0 && !self.budget.try_withdraw() {
                tracing::warn!(request_id = ?out.request_id, "retry budget exhausted; not failing over");
                break;
            }
            // Ejected, or half-open with its trial taken: not an attempt.
            let Some(guard) = endpoint.try_begin() else {
                continue;
            };
            trace.attempts += 1;
            trace.endpoint = Some(endpoint.spec.id.clone());
            match self.attempt(out, endpoint, total_deadline).await {
                Ok((response, first, ttfb)) => {
                    metrics::record_attempt(&endpoint.spec.id, "ok");
                    return Ok(Forwarded {
                        response,
                        first,
                        guard,
                        ttfb,
                        attempts: trace.attempts,
                    });
                }
                Err(failure) => {
                    tracing::info!(
                        request_id = ?out.request_id,
                        endpoint = %endpoint.spec.id,
                        reason = failure.label,
                        detail = %failure.detail,
                        "upstream attempt failed"
                    );
                    guard.report(Outcome::Failure {
                        reason: failure.reason,
                    });
                    metrics::record_attempt(&endpoint.spec.id, failure.label);
                    metrics::record_failover(failure.label);
                    last_error = Some(failure.error);
                    if Instant::now() >= total_deadline {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ApiError::NoUpstream(out.client_model.to_owned())))
    }

    /// One attempt against one endpoint.
    async fn attempt(
        &self,
        out: &Outbound<'_>,
        endpoint: &EndpointHandle,
        total_deadline: Instant,
    ) -> Result<(Response<h1::ResponseBody>, Option<Bytes>, Duration), Failure> {
        let request = self.build_request(out, endpoint)?;
        let start = Instant::now();
        let wait = if out.stream {
            self.timeouts.first_token
        } else {
            self.timeouts.headers
        };
        let deadline = (start + wait).min(total_deadline);
        let mut response = match timeout_at(deadline, self.client.send(request)).await {
            Err(_) => return Err(Failure::timeout("headers_timeout")),
            Ok(Err(e)) if e.is_connect() => {
                return Err(Failure::new(
                    FailureReason::Connect,
                    "connect",
                    e.to_string(),
                ));
            }
            Ok(Err(e)) => {
                return Err(Failure::new(
                    FailureReason::Connect,
                    "request",
                    e.to_string(),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let label = if status == StatusCode::TOO_MANY_REQUESTS {
                "status_429"
            } else {
                "status_5xx"
            };
            let mut f = Failure::new(
                FailureReason::Status(status.as_u16()),
                label,
                status.to_string(),
            );
            if status == StatusCode::TOO_MANY_REQUESTS {
                f.error = ApiError::UpstreamRateLimited;
            }
            return Err(f);
        }
        // A stream is committed only once its first chunk is here: until
        // then the client has seen nothing and a dead replica can be skipped.
        let first = if out.stream && status.is_success() {
            match timeout_at(deadline, response.body_mut().frame()).await {
                Err(_) => return Err(Failure::timeout("first_token_timeout")),
                Ok(Some(Err(e))) => {
                    return Err(Failure::new(
                        FailureReason::Stream,
                        "first_token",
                        e.to_string(),
                    ));
                }
                Ok(Some(Ok(frame))) => frame.into_data().ok(),
                Ok(None) => None,
            }
        } else {
            None
        };
        Ok((response, first, start.elapsed()))
    }

    fn build_request(
        &self,
        out: &Outbound<'_>,
        endpoint: &EndpointHandle,
    ) -> Result<Request<Bytes>, Failure> {
        // One allocation, handed to the `Uri` without a copy.
        let base = endpoint.spec.url.trim_end_matches('/');
        let mut target = String::with_capacity(base.len() + out.path.len());
        target.push_str(base);
        target.push_str(out.path);
        let uri = Uri::try_from(target).map_err(|e: http::uri::InvalidUri| {
            Failure::new(FailureReason::Connect, "bad_url", e.to_string())
        })?;
        let target = self.target_model(endpoint, out);
        let body = if target == out.client_model {
            out.body.clone()
        } else {
            openai::rewrite_model(&out.body, target)
                .map_err(|e| Failure::new(FailureReason::Connect, "rewrite", e.to_string()))?
        };
        let key = upstream_key(endpoint.spec.credential.as_ref());
        let headers = headers::upstream_request(out.headers, out.request_id, key.as_deref());
        let mut request = Request::new(body);
        *request.method_mut() = out.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Why one attempt failed: the fact for health, a label for metrics, the
/// detail for the log, and what the client gets if it was the last attempt.
struct Failure {
    reason: FailureReason,
    label: &'static str,
    detail: String,
    error: ApiError,
}

impl Failure {
    fn new(reason: FailureReason, label: &'static str, detail: String) -> Self {
        Self {
            reason,
            label,
            detail,
            error: ApiError::UpstreamFailed,
        }
    }

    fn timeout(label: &'static str) -> Self {
        Self {
            reason: FailureReason::Timeout,
            label,
            detail: String::from("deadline passed"),
            error: ApiError::UpstreamTimeout,
        }
    }
}

/// Turns an upstream answer into the client's response, relaying the body.
///
/// `on_end` runs once when the body ends; the endpoint's outcome for a
/// failure after the headers is reported here, since failover is over.
pub fn relay_response(
    fwd: Forwarded,
    stream: bool,
    timeouts: &Timeouts,
    started: Instant,
    request_id: &HeaderValue,
    on_end: OnEnd,
) -> Response<Body> {
    let Forwarded {
        response,
        first,
        guard,
        ttfb,
        ..
    } = fwd;
    let (mut parts, incoming) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(headers::REQUEST_ID, request_id.clone());
    let status_ok = parts.status.is_success();
    let sse = stream && status_ok;
    if status_ok {
        guard.report(Outcome::Success { ttfb });
    }
    let end: OnEnd = Box::new(move |end| {
        if matches!(end, End::UpstreamError | End::Stalled) {
            guard.report(Outcome::Failure {
                reason: FailureReason::Stream,
            });
        }
        drop(guard);
        on_end(end);
    });
    let relay = Relay::new(
        incoming,
        first,
        sse,
        timeouts.inter_chunk,
        started + timeouts.total,
        end,
    );
    Response::from_parts(parts, relay.map_err(Into::<BoxError>::into).boxed_unsync())
}
