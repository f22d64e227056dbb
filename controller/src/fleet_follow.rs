//! The client side of `GET /fleet?after=VERSION`: follows a controller
//! across processes, keeps the last snapshot while the controller is away,
//! and persists it so a restarted gateway starts from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use leasegate_fleet::{Secret, Snapshot};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where to follow and how.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The controller's admin base URL, e.g. `http://10.0.0.2:9091`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` to the admin listener.
    pub token: Option<Secret>,
    /// The last snapshot, read at start and rewritten on each new version.
    pub cache_path: Option<PathBuf>,
    /// Longer than the server's long poll, so a quiet poll is not an error.
    pub request_timeout: Duration,
    /// Wait after a failed poll (doubles up to 16×).
    pub retry: Duration,
}

impl FollowConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            cache_path: None,
            request_timeout: Duration::from_secs(45),
            retry: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("request: {0}")]
    Request(String),
    #[error("status {0}")]
    Status(u16),
    #[error("body: {0}")]
    Body(String),
}

/// Reads the cached snapshot, if there is a readable one.
pub fn load_cached(path: &std::path::Path) -> Option<Snapshot> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable fleet cache");
            None
        }
    }
}

/// Writes the snapshot next to its final name, then renames: a crash
/// mid-write never leaves a torn cache.
async fn persist(path: &std::path::Path, snap: &Snapshot) -> std::io::Result<()> {
    let body = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, body).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Starts following. The receiver holds the cached snapshot (or an empty
/// one) until the controller answers; it never goes back to empty.
pub fn follow(cfg: FollowConfig) -> (watch::Receiver<Arc<Snapshot>>, JoinHandle<()>) {
    let initial = cfg
        .cache_path
        .as_deref()
        .and_then(load_cached)
        .unwrap_or_default();
    let (tx, rx) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(run(cfg, tx));
    (rx, task)
}

async fn run(cfg: FollowConfig, tx: watch::Sender<Arc<Snapshot>>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut failures = 0u32;
    loop {
        let after = tx.borrow().version;
        match poll(&client, &cfg, after).await {
            Ok(Some(snap)) if snap.version > after => {
                failures = 0;
                if let Some(p) = &cfg.cache_path
                    && let Err(e) = persist(p, &snap).await
                {
                    tracing::warn!(path = %p.display(), error = %e, "fleet cache not written");
                }
                tx.send_replace(Arc::new(snap));
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                let wait = cfg.retry * 2u32.pow(failures.min(5) - 1);
                tracing::warn!(error = %e, ?wait, "fleet poll failed; keeping the last snapshot");
                tokio::time::sleep(wait).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn poll(
    client: &Client<HttpConnector, Empty<Bytes>>,
    cfg: &FollowConfig,
    after: u64,
) -> Result<Option<Snapshot>, PollError> {
    let url = format!("{}/fleet?after={after}", cfg.base_url.trim_end_matches('/'));
    let mut req = http::Request::get(url);
    if let Some(t) = &cfg.token {
        req = req.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", t.expose()),
        );
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| PollError::Request(e.to_string()))?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| PollError::Request(e.to_string()))?;
        match resp.status().as_u16() {
            304 | 204 => Ok(None),
            200 => {
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| PollError::Body(e.to_string()))?
                    .to_bytes();
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| PollError::Body(e.to_string()))
            }
            s => Err(PollError::Status(s)),
        }
    };
    tokio::time::timeout(cfg.request_timeout, call)
        .await
        .map_err(|_| PollError::Request("timed out".into()))?
}
