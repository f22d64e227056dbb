//! The Console API HTTP client: auth header, timeouts, retries, typed errors.
//!
//! Retry facts live here so the `Market` methods only say whether a call is
//! idempotent. A call is retried when the server cannot have acted on it
//! (429, connection refused) or when repeating it is harmless (GET, DELETE,
//! `POST /v1/leases`). `POST /v1/deployments` is never repeated after a 5xx
//! or a timeout: a second deployment would be a paid orphan.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use leasegate_fleet::Secret;

use crate::market::MarketError;

/// Longest error body kept in an error, after redaction.
const MAX_ERROR_BODY: usize = 512;
/// Largest answer read; the provider list is the biggest, well under this.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// How patient the client is.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Per attempt, headers and body together.
    pub timeout: Duration,
    /// Attempts in all, including the first.
    pub attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff`, with jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is handed to the caller as
    /// `RateLimited` instead of being slept through.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Whether repeating a call after an unclear outcome is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotent {
    Yes,
    No,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A Console API client bound to one base URL and one API key.
#[derive(Clone)]
pub struct ConsoleClient {
    http: HttpsClient,
    base: String,
    api_key: Secret,
    policy: RetryPolicy,
}

impl std::fmt::Debug for ConsoleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleClient")
            .field("base", &self.base)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl ConsoleClient {
    pub fn new(base_url: &str, api_key: Secret, policy: RetryPolicy) -> Result<Self, MarketError> {
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(MarketError::Rejected {
                status: 0,
                body: format!("base URL must be http(s): {base_url}"),
            });
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| MarketError::Unavailable(format!("TLS setup failed: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            api_key,
            policy,
        })
    }

    /// Sends one call with retries; returns the body of a 2xx answer.
    /// `extra_secrets` are redacted from error bodies on top of the API key
    /// (e.g. the replica key inside an SDL that an error might echo).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: Idempotent,
        extra_secrets: &[&str],
    ) -> Result<Bytes, MarketError> {
        let payload = match body {
            Some(v) => Bytes::from(
                serde_json::to_vec(v).map_err(|e| MarketError::Protocol(e.to_string()))?,
            ),
            None => Bytes::new(),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.attempts;
            let outcome = self
                .once(&method, path, body.is_some(), payload.clone())
                .await;
            let wait = match outcome {
                Ok((status, _, bytes)) if status.is_success() => return Ok(bytes),
                Ok((StatusCode::TOO_MANY_REQUESTS, headers, _)) => {
                    let after = retry_after(&headers);
                    // A 429 means the call was not processed: safe to repeat
                    // for any method, but only as long as the server asks.
                    match after {
                        Some(d) if !last && d <= self.policy.max_retry_after => d,
                        None if !last => self.backoff(attempt),
                        _ => return Err(MarketError::RateLimited { retry_after: after }),
                    }
                }
                Ok((status, _, bytes)) => {
                    let text = self.redact(&bytes, extra_secrets);
                    let err = status_error(status, &method, path, text);
                    if status.is_server_error() && idempotent == Idempotent::Yes && !last {
                        tracing::debug!(%method, path, %status, attempt, "console call failed, retrying");
                        self.backoff(attempt)
                    } else {
                        return Err(err);
                    }
                }
                Err(Failure { connect, message }) => {
                    // Nothing reached the server when the connection failed,
                    // so even a non-idempotent call may be sent again.
                    let retry = connect || idempotent == Idempotent::Yes;
                    if retry && !last {
                        tracing::debug!(%method, path, attempt, error = %message, "console call failed, retrying");
                        self.backoff(attempt)
                    } else {
                        return Err(MarketError::Unavailable(format!(
                            "{method} {path}: {message}"
                        )));
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        has_body: bool,
        payload: Bytes,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Failure> {
        let uri = format!("{}{}", self.base, path);
        let mut key = HeaderValue::from_str(self.api_key.expose()).map_err(|_| Failure {
            connect: false,
            message: "the API key is not a valid header value".into(),
        })?;
        key.set_sensitive(true);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("x-api-key", key)
            .header(header::ACCEPT, "application/json");
        if has_body {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(payload)).map_err(|e| Failure {
            connect: false,
            message: format!("bad request: {e}"),
        })?;
        let fut = async {
            let resp = self.http.request(req).await.map_err(|e| Failure {
                connect: e.is_connect(),
                message: format!("request failed: {e}"),
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Failure {
                    connect: false,
                    message: format!("reading the answer failed: {e}"),
                })?
                .to_bytes();
            Ok((status, headers, body))
        };
        match tokio::time::timeout(self.policy.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                connect: false,
                message: format!("timed out after {:?}", self.policy.timeout),
            }),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.policy.max_backoff);
        // Full jitter in the upper half keeps callers from moving in step.
        capped / 2 + capped.mul_f64(fastrand::f64() / 2.0)
    }

    /// The body as text, truncated, with every secret replaced.
    fn redact(&self, body: &[u8], extra: &[&str]) -> String {
        let mut text = String::from_utf8_lossy(body).into_owned();
        for secret in std::iter::once(self.api_key.expose()).chain(extra.iter().copied()) {
            if !secret.is_empty() {
                text = text.replace(secret, "[redacted]");
            }
        }
        if text.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// A transport failure; `connect` says the request never left.
struct Failure {
    connect: bool,
    message: String,
}

fn status_error(status: StatusCode, method: &Method, path: &str, body: String) -> MarketError {
    match status.as_u16() {
        404 => MarketError::NotFound(format!("{method} {path}: {body}")),
        500..=599 => MarketError::Unavailable(format!("{method} {path}: status {status}: {body}")),
        s => MarketError::Rejected { status: s, body },
    }
}

/// `Retry-After` in seconds; the HTTP-date form is not used by Console and
/// reads as absent (the caller then backs off on its own).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let secs = v.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ConsoleClient {
        ConsoleClient::new(
            "http://127.0.0.1:1",
            Secret::new("ak-secret"),
            RetryPolicy::default(),
        )
        .unwrap()
    }

    #[test]
    fn error_bodies_lose_the_api_key_and_extra_secrets() {
        let c = client();
        let text = c.redact(b"bad key ak-secret near sk-replica", &["sk-replica"]);
        assert_eq!(text, "bad key [redacted] near [redacted]");
    }

    #[test]
    fn long_error_bodies_are_truncated_on_a_char_boundary() {
        let c = client();
        let body = "é".repeat(600);
        let text = c.redact(body.as_bytes(), &[]);
        assert!(text.len() <= MAX_ERROR_BODY + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }

    #[test]
    fn retry_after_reads_seconds_and_ignores_dates() {
        let mut h = http::HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", client()).contains("ak-secret"));
    }
}
