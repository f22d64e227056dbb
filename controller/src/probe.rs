//! [`Prober`] over HTTP(S): `GET /health`, then `GET /v1/models` with the
//! replica key, and the model must be listed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use leasegate_fleet::Secret;

use crate::launcher::{ProbeError, Prober};

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Probes replicas over HTTP or HTTPS with a per-call timeout.
#[derive(Clone, Debug)]
pub struct HttpProber {
    client: Client<Https, Empty<Bytes>>,
    timeout: Duration,
}

/// Upper bound on a `/v1/models` body we are willing to read.
const MAX_BODY: usize = 1 << 20;

impl HttpProber {
    pub fn new(timeout: Duration) -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        }
    }

    async fn get(
        &self,
        url: &str,
        path: &'static str,
        key: Option<&Secret>,
    ) -> Result<Bytes, ProbeError> {
        let unreachable = |e: String| ProbeError::Unreachable(path, e);
        let mut req = http::Request::get(format!("{}{path}", url.trim_end_matches('/')));
        if let Some(k) = key {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", k.expose()),
            );
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(ProbeError::Status(path, status.as_u16()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| unreachable("timed out".into()))?
    }
}

#[derive(serde::Deserialize)]
struct Models {
    data: Vec<ModelEntry>,
}

#[derive(serde::Deserialize)]
struct ModelEntry {
    id: String,
}

#[async_trait]
impl Prober for HttpProber {
    async fn probe(&self, url: &str, key: Option<&Secret>, model: &str) -> Result<(), ProbeError> {
        self.get(url, "/health", key).await?;
        let body = self.get(url, "/v1/models", key).await?;
        let models: Models = serde_json::from_slice(&body)
            .map_err(|e| ProbeError::Unreachable("/v1/models", format!("bad body: {e}")))?;
        if models.data.iter().any(|m| m.id == model) {
            Ok(())
        } else {
            Err(ProbeError::ModelMissing(model.to_string()))
        }
    }
}
