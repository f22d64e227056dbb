//! Active probes: `/health`, `/v1/models` and the queue depth from `/metrics`, on an interval.
//!
//! Fallback endpoints are not probed at all. They are commercial APIs whose
//! `/health` usually does not exist, whose `/v1/models` lists upstream names
//! rather than the aliases clients use, and which bill or rate-limit polling;
//! passive outlier detection on real traffic covers them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use leasegate_fleet::{Credential, Engine, Kind, State};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::fleet::{EndpointHandle, FleetView};
use crate::health::HealthConfig;

/// The client [`probe_client`] builds: HTTP and HTTPS (rustls, bundled roots).
/// [`spawn_prober`] accepts any legacy client, so tests and the gateway may
/// share their own.
pub type ProbeClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Probe answers are small; anything bigger is not a health answer.
const MAX_PROBE_BODY: usize = 4 << 20;

/// Builds a client for probes whose connect timeout is the probe timeout.
pub fn probe_client(cfg: &HealthConfig) -> Result<ProbeClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.probe_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(cfg.probe_interval.saturating_mul(2))
        .build(https))
}

/// Why an endpoint failed its probe. Never carries the credential.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid probe url {0}")]
    Url(String),
    #[error("credential variable {0} is not set")]
    MissingKey(String),
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("no answer within the probe timeout")]
    Timeout,
    #[error("unexpected status {0}")]
    Status(StatusCode),
    #[error("unreadable body")]
    Body,
    #[error("/v1/models does not list {0}")]
    MissingModel(String),
}

/// Runs forever, probing every ready non-fallback endpoint of the current
/// fleet once per `probe_interval` (the first round at once). Each round
/// probes all endpoints concurrently; an endpoint is marked unhealthy when
/// `/health` fails or `/v1/models` lacks one of its models. Abort the
/// handle to stop it.
pub fn spawn_prober<C>(view: FleetView, client: Client<C, Empty<Bytes>>) -> JoinHandle<()>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let timeout = view.health_config().probe_timeout;
        let mut tick = tokio::time::interval(view.health_config().probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let state = view.current();
            let round = state
                .endpoints()
                .iter()
                .filter(|e| e.spec.kind != Kind::Fallback && e.spec.state == State::Ready)
                .map(|e| probe_and_mark(&client, e, timeout));
            futures_util::future::join_all(round).await;
        }
    })
}

async fn probe_and_mark<C>(client: &Client<C, Empty<Bytes>>, e: &Arc<EndpointHandle>, t: Duration)
where
    C: Connect + Clone + Send + Sync + 'static,
{
    match probe_once(client, e, t).await {
        Ok(depth) => {
            if !e.probe_ok() {
                tracing::info!(endpoint = %e.spec.id, "endpoint passes its probe again");
            }
            e.set_probe_ok(true);
            e.set_queue_depth(depth);
        }
        Err(err) => {
            if e.probe_ok() {
                tracing::warn!(endpoint = %e.spec.id, error = %err, "endpoint failed its probe");
            }
            e.set_probe_ok(false);
            e.set_queue_depth(None);
        }
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Probes one endpoint: `/health`, then `/v1/models`, then (vLLM and TGI
/// only) the queue depth from `/metrics`, whose failure is not fatal.
pub async fn probe_once<C>(
    client: &Client<C, Empty<Bytes>>,
    e: &EndpointHandle,
    timeout: Duration,
) -> Result<Option<u32>, ProbeError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let auth = bearer(e)?;
    get(client, e, "/health", auth.as_ref(), timeout).await?;
    let body = get(client, e, "/v1/models", auth.as_ref(), timeout).await?;
    let list: ModelList = serde_json::from_slice(&body).map_err(|_| ProbeError::Body)?;
    if let Some(missing) = e
        .spec
        .models
        .iter()
        .find(|m| !list.data.iter().any(|d| &d.id == *m))
    {
        return Err(ProbeError::MissingModel(missing.clone()));
    }
    if !matches!(e.spec.engine, Engine::Vllm | Engine::Tgi) {
        return Ok(None);
    }
    match get(client, e, "/metrics", auth.as_ref(), timeout).await {
        Ok(text) => Ok(parse_queue_depth(&String::from_utf8_lossy(&text))),
        Err(err) => {
            tracing::debug!(endpoint = %e.spec.id, error = %err, "metrics scrape failed");
            Ok(None)
        }
    }
}

fn bearer(e: &EndpointHandle) -> Result<Option<HeaderValue>, ProbeError> {
    let key = match &e.spec.credential {
        None => return Ok(None),
        Some(Credential::Env { var }) => {
            std::env::var(var).map_err(|_| ProbeError::MissingKey(var.clone()))?
        }
        Some(Credential::Key { key }) => key.expose().to_owned(),
    };
    let mut value = HeaderValue::try_from(format!("Bearer {key}"))
        .map_err(|_| ProbeError::MissingKey("(key is not a valid header value)".into()))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    e: &EndpointHandle,
    path: &str,
    auth: Option<&HeaderValue>,
    timeout: Duration,
) -> Result<Bytes, ProbeError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let url = format!("{}{path}", e.spec.url.trim_end_matches('/'));
    let uri: Uri = url.parse().map_err(|_| ProbeError::Url(url.clone()))?;
    let mut req = Request::get(uri);
    if let Some(v) = auth {
        req = req.header(header::AUTHORIZATION, v.clone());
    }
    let req = req.body(Empty::new()).map_err(|_| ProbeError::Url(url))?;
    let fetch = async {
        let resp = client.request(req).await?;
        if !resp.status().is_success() {
            return Err(ProbeError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_PROBE_BODY)
            .collect()
            .await
            .map_err(|_| ProbeError::Body)?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| ProbeError::Timeout)?
}

/// Sums the waiting-request gauges of a Prometheus text page: vLLM's
/// `vllm:num_requests_waiting` (one series per model) or TGI's
/// `tgi_queue_size`. `None` when neither appears.
pub fn parse_queue_depth(text: &str) -> Option<u32> {
    let mut total: Option<f64> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name != "vllm:num_requests_waiting" && name != "tgi_queue_size" {
            continue;
        }
        // The value follows the labels; an optional timestamp may follow it.
        let rest = match line[name_end..].rfind('}') {
            Some(close) => &line[name_end + close + 1..],
            None => &line[name_end..],
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0) {
            *total.get_or_insert(0.0) += v;
        }
    }
    // Truncation is intended: a gauge is a count; the cast saturates.
    total.map(|t| t.min(f64::from(u32::MAX - 1)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_sums_vllm_series_and_reads_tgi() {
        let vllm = "# HELP vllm:num_requests_waiting Number of requests waiting.\n\
            # TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"a\"} 3.0\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"b\"} 4.0 1700000000\n\
            vllm:num_requests_running{model_name=\"a\"} 9.0\n";
        assert_eq!(parse_queue_depth(vllm), Some(7));
        assert_eq!(parse_queue_depth("tgi_queue_size 12\n"), Some(12));
        assert_eq!(parse_queue_depth("tgi_queue_size_other 12\nfoo 1\n"), None);
        assert_eq!(parse_queue_depth("tgi_queue_size NaN\n"), None);
    }
}
