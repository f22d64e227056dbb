//! The `akash` market: the Console API with a managed wallet.
//!
//! Endpoints and behaviour follow `console-api-openapi.json` (see AKASH.md).
//! Bodies are enveloped in `{"data": ...}` except the `POST /v1/leases`
//! request, `GET /v1/providers` and `GET /v1/deployment/{owner}/{dseq}`.
//! The API key and every replica key stay out of logs and errors.

pub mod client;
pub mod config;
mod map;
pub mod render;
pub mod sdl;
pub mod tag;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use leasegate_fleet::Secret;
use serde_json::json;
use tokio::time::Instant;

pub use client::{ConsoleClient, RetryPolicy};
pub use config::AkashConfig;
pub use render::{RenderOptions, renderer};

use crate::market::{
    Bid, BidId, Created, DeploymentState, DeploymentStatus, DeploymentSummary, Dseq, Market,
    MarketError, ProviderInfo, Tag,
};
use crate::sdl::RenderSdl;
use client::Idempotent;
use wire::{Envelope, decode};

/// Deployments per page when listing.
const PAGE: u32 = 100;
/// Bounds a listing even if the server keeps saying `hasMore`.
const MAX_PAGES: u32 = 1000;
/// How long a fetched block height is trusted before asking again.
const HEIGHT_TTL: Duration = Duration::from_secs(60);

/// A `Market` over the Akash Console API.
#[derive(Debug)]
pub struct AkashMarket {
    client: ConsoleClient,
    deposit_usd: f64,
    page_size: u32,
    /// Tags never change for a dseq, so each is looked up once per process.
    tags: Mutex<HashMap<Dseq, Option<Tag>>>,
    height: Mutex<Option<(f64, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing held under these locks can be left half-updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AkashMarket {
    pub fn new(base_url: &str, api_key: Secret, policy: RetryPolicy) -> Result<Self, MarketError> {
        Ok(Self {
            client: ConsoleClient::new(base_url, api_key, policy)?,
            deposit_usd: 0.0,
            page_size: PAGE,
            tags: Mutex::new(HashMap::new()),
            height: Mutex::new(None),
        })
    }

    /// Builds the market from its config section, reading the key from the
    /// environment.
    pub fn from_config(cfg: &AkashConfig) -> Result<Self, MarketError> {
        let invalid = |e: config::ConfigError| MarketError::Rejected {
            status: 0,
            body: e.to_string(),
        };
        cfg.validate().map_err(invalid)?;
        let key = cfg.api_key_from_env().map_err(invalid)?;
        let mut m = Self::new(&cfg.base_url, key, cfg.retry_policy())?;
        m.deposit_usd = cfg.deposit_usd;
        Ok(m)
    }

    /// Deployments per page when listing (default 100).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Whether Console tops this deployment's escrow up on its own.
    pub async fn auto_top_up(&self, dseq: &Dseq) -> Result<bool, MarketError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Settings {
            #[serde(rename = "autoTopUpEnabled")]
            auto_top_up_enabled: Option<bool>,
        }
        let path = format!("/v2/deployment-settings/{dseq}");
        let body = self
            .client
            .call(Method::GET, &path, None, Idempotent::Yes, &[])
            .await?;
        let s: Envelope<Settings> = decode("deployment settings", &body)?;
        Ok(s.data.and_then(|s| s.auto_top_up_enabled).unwrap_or(false))
    }

    /// Turns managed auto top-up on or off for one deployment.
    pub async fn set_auto_top_up(&self, dseq: &Dseq, on: bool) -> Result<(), MarketError> {
        let path = format!("/v2/deployment-settings/{dseq}");
        let body = json!({"data": {"autoTopUpEnabled": on}});
        // Setting a flag to a value is idempotent.
        self.client
            .call(Method::PATCH, &path, Some(&body), Idempotent::Yes, &[])
            .await
            .map(drop)
    }

    /// The chain height, fetched at most once a minute and extrapolated in
    /// between; `None` when it was never learned.
    async fn height(&self) -> Option<f64> {
        let cached = *lock(&self.height);
        if let Some((h, at)) = cached
            && at.elapsed() < HEIGHT_TTL
        {
            return Some(h + at.elapsed().as_secs_f64() / crate::market::BLOCK_SECONDS);
        }
        let fetched = async {
            let body = self
                .client
                .call(
                    Method::GET,
                    "/v1/blocks?limit=1",
                    None,
                    Idempotent::Yes,
                    &[],
                )
                .await
                .ok()?;
            let blocks: Vec<wire::Block> = serde_json::from_slice(&body).ok()?;
            blocks.first()?.height.0
        }
        .await;
        match fetched {
            Some(h) => {
                *lock(&self.height) = Some((h, Instant::now()));
                Some(h)
            }
            None => {
                cached.map(|(h, at)| h + at.elapsed().as_secs_f64() / crate::market::BLOCK_SECONDS)
            }
        }
    }

    /// The tag of a deployment, from its group names.
    async fn tag_of(&self, owner: &str, dseq: &Dseq) -> Result<Option<Tag>, MarketError> {
        if let Some(t) = lock(&self.tags).get(dseq) {
            return Ok(t.clone());
        }
        let path = format!("/v1/deployment/{owner}/{dseq}");
        // A 404 here for a listed deployment is indexer lag, not "not ours":
        // the error makes the caller list again later instead of guessing.
        let body = self
            .client
            .call(Method::GET, &path, None, Idempotent::Yes, &[])
            .await?;
        let detail: wire::DeploymentDetail = decode("deployment detail", &body)?;
        let tag = detail
            .other
            .iter()
            .flat_map(|o| o.groups.iter())
            .filter_map(|g| g.group_spec.as_ref()?.name.as_deref())
            .find_map(tag::decode);
        lock(&self.tags).insert(dseq.clone(), tag.clone());
        Ok(tag)
    }
}

/// Secrets a rendered SDL or a manifest carries: the value after
/// `"--api-key"` and the values of `*KEY`/`*TOKEN`/`*SECRET`/`*PASSWORD`
/// env entries. Both are JSON string lists in what leasegate sends.
pub(crate) fn secrets_in(text: &str) -> Vec<String> {
    fn json_string_at(s: &str) -> Option<String> {
        let s = s.trim_start().strip_prefix(',')?.trim_start();
        let mut de = serde_json::Deserializer::from_str(s).into_iter::<String>();
        de.next()?.ok()
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"--api-key\"") {
        rest = &rest[i + "\"--api-key\"".len()..];
        if let Some(v) = json_string_at(rest) {
            out.push(v);
        }
    }
    let mut rest = text;
    while let Some(i) = rest.find('"') {
        rest = &rest[i + 1..];
        let Some(end) = rest.find('"') else { break };
        let item = &rest[..end];
        if let Some((name, value)) = item.split_once('=') {
            let upper = name.to_ascii_uppercase();
            let secretish = ["KEY", "TOKEN", "SECRET", "PASSWORD"]
                .iter()
                .any(|s| upper.ends_with(s));
            if secretish && !value.is_empty() && !name.contains(' ') {
                out.push(value.to_owned());
            }
        }
    }
    out.retain(|s| s.len() >= 4);
    out
}

#[async_trait]
impl Market for AkashMarket {
    fn name(&self) -> &'static str {
        "akash"
    }

    async fn create_deployment(&self, sdl: &str, tag: &Tag) -> Result<Created, MarketError> {
        let sdl = tag::apply(sdl, tag).map_err(|reason| MarketError::Rejected {
            status: 0,
            body: reason,
        })?;
        let secrets = secrets_in(&sdl);
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let mut data = json!({"sdl": sdl});
        if self.deposit_usd > 0.0 {
            data["deposit"] = json!(self.deposit_usd);
        }
        let body = json!({ "data": data });
        // Never repeated after an unclear failure: a second deployment would
        // be a paid orphan. The tag lets reconcile find the first one.
        let answer = self
            .client
            .call(
                Method::POST,
                "/v1/deployments",
                Some(&body),
                Idempotent::No,
                &secrets,
            )
            .await?;
        let created: Envelope<wire::CreatedDeployment> = decode("create deployment", &answer)?;
        let data = created.data.unwrap_or_default();
        let dseq = data
            .dseq
            .filter(|d| !d.is_empty())
            .ok_or_else(|| MarketError::Protocol("create deployment: no dseq".into()))?;
        let manifest = data
            .manifest
            .ok_or_else(|| MarketError::Protocol("create deployment: no manifest".into()))?;
        let dseq = Dseq(dseq);
        lock(&self.tags).insert(dseq.clone(), Some(tag.clone()));
        tracing::info!(market = "akash", %dseq, intent = %tag.intent_id, "deployment created");
        Ok(Created { dseq, manifest })
    }

    async fn bids(&self, dseq: &Dseq) -> Result<Vec<Bid>, MarketError> {
        let path = format!("/v1/bids?dseq={dseq}");
        let body = self
            .client
            .call(Method::GET, &path, None, Idempotent::Yes, &[])
            .await?;
        let items: Envelope<Vec<wire::BidItem>> = decode("bids", &body)?;
        Ok(items
            .data
            .unwrap_or_default()
            .iter()
            .filter_map(|b| map::bid(b, dseq))
            .collect())
    }

    async fn create_lease(&self, bid: &BidId, manifest: &str) -> Result<(), MarketError> {
        // The one request body Console does not envelope.
        let body = json!({
            "manifest": manifest,
            "leases": [{
                "dseq": bid.dseq.0,
                "gseq": bid.gseq,
                "oseq": bid.oseq,
                "provider": bid.provider,
            }],
        });
        let secrets = secrets_in(manifest);
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        // AKASH.md: creating the same lease again is idempotent.
        self.client
            .call(
                Method::POST,
                "/v1/leases",
                Some(&body),
                Idempotent::Yes,
                &secrets,
            )
            .await?;
        tracing::info!(market = "akash", dseq = %bid.dseq, provider = %bid.provider, "lease created");
        Ok(())
    }

    async fn status(&self, dseq: &Dseq) -> Result<DeploymentStatus, MarketError> {
        let path = format!("/v1/deployments/{dseq}");
        let body = self
            .client
            .call(Method::GET, &path, None, Idempotent::Yes, &[])
            .await?;
        let info: Envelope<wire::DeploymentInfo> = decode("deployment", &body)?;
        let info = info
            .data
            .ok_or_else(|| MarketError::Protocol("deployment: no data".into()))?;
        let height = self.height().await;
        Ok(map::status(&info, dseq, height))
    }

    async fn deposit(&self, dseq: &Dseq, usd: f64) -> Result<(), MarketError> {
        if !(usd.is_finite() && usd > 0.0) {
            return Err(MarketError::Rejected {
                status: 0,
                body: format!("deposit must be a positive amount, got {usd}"),
            });
        }
        let body = json!({"data": {"dseq": dseq.0, "deposit": usd}});
        // Not idempotent: a repeated deposit pays twice.
        self.client
            .call(
                Method::POST,
                "/v1/deposit-deployment",
                Some(&body),
                Idempotent::No,
                &[],
            )
            .await
            .map(drop)
    }

    async fn close(&self, dseq: &Dseq) -> Result<(), MarketError> {
        let path = format!("/v1/deployments/{dseq}");
        match self
            .client
            .call(Method::DELETE, &path, None, Idempotent::Yes, &[])
            .await
        {
            Ok(_) | Err(MarketError::NotFound(_)) => Ok(()),
            // Closing twice may be refused as "not active": fine if it is
            // in fact closed.
            Err(e @ MarketError::Rejected { .. }) => match self.status(dseq).await {
                Ok(s) if s.state == DeploymentState::Closed => Ok(()),
                Err(MarketError::NotFound(_)) => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn list_deployments(&self) -> Result<Vec<DeploymentSummary>, MarketError> {
        let mut out = Vec::new();
        let mut skip = 0u64;
        for _ in 0..MAX_PAGES {
            let path = format!("/v1/deployments?skip={skip}&limit={}", self.page_size);
            let body = self
                .client
                .call(Method::GET, &path, None, Idempotent::Yes, &[])
                .await?;
            let page: Envelope<wire::DeploymentPage> = decode("deployment list", &body)?;
            let page = page.data.unwrap_or_default();
            let n = page.deployments.len() as u64;
            for d in &page.deployments {
                let head = d.deployment.as_ref();
                let id = head.and_then(|h| h.id.as_ref());
                let (Some(dseq), owner) = (
                    id.and_then(|i| i.dseq.clone()),
                    id.and_then(|i| i.owner.clone()).unwrap_or_default(),
                ) else {
                    continue;
                };
                let state = map::deployment_state(head.and_then(|h| h.state.as_deref()));
                if state == DeploymentState::Closed {
                    continue;
                }
                let dseq = Dseq(dseq);
                let tag = self.tag_of(&owner, &dseq).await?;
                out.push(DeploymentSummary { dseq, state, tag });
            }
            skip += n;
            let more = page.pagination.and_then(|p| p.has_more).unwrap_or(false);
            if !more || n == 0 {
                return Ok(out);
            }
        }
        Err(MarketError::Protocol(format!(
            "deployment list did not end after {MAX_PAGES} pages"
        )))
    }

    async fn providers(&self) -> Result<Vec<ProviderInfo>, MarketError> {
        let body = self
            .client
            .call(Method::GET, "/v1/providers", None, Idempotent::Yes, &[])
            .await?;
        let v: serde_json::Value = decode("providers", &body)?;
        // A bare array per the spec; tolerate an envelope too.
        let items = match v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(mut o) => match o.remove("data") {
                Some(serde_json::Value::Array(a)) => a,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        // One odd provider entry must not hide the others.
        Ok(items
            .into_iter()
            .filter_map(|p| serde_json::from_value::<wire::ProviderWire>(p).ok())
            .filter_map(|p| map::provider(&p))
            .collect())
    }
}

/// The akash market and its SDL renderer from the operator's config, the
/// API key read from the environment: what a binary puts in `Deps`.
pub fn build(cfg: &AkashConfig) -> Result<(Arc<AkashMarket>, RenderSdl), MarketError> {
    let market = AkashMarket::from_config(cfg)?;
    Ok((Arc::new(market), renderer(cfg.into())))
}

/// Closes every open deployment tagged with `controller_id`, and nothing
/// else; returns what it closed. Works for any market.
pub async fn close_all_owned(
    market: &dyn Market,
    controller_id: &str,
) -> Result<Vec<Dseq>, MarketError> {
    close_all_owned_with(market, controller_id, &mut |_| {}).await
}

/// A step of [`close_all_owned_with`], for progress output.
#[derive(Clone, Copy, Debug)]
pub enum CloseStep<'a> {
    /// The account was listed: `owned` of its `open` deployments are this controller's.
    Listed {
        owned: usize,
        open: usize,
    },
    /// About to close the `n`th (from 1) of `of`.
    Closing {
        dseq: &'a Dseq,
        n: usize,
        of: usize,
    },
    Closed {
        dseq: &'a Dseq,
    },
}

/// As [`close_all_owned`], telling `progress` each step as it happens.
pub async fn close_all_owned_with(
    market: &dyn Market,
    controller_id: &str,
    progress: &mut (dyn FnMut(CloseStep<'_>) + Send),
) -> Result<Vec<Dseq>, MarketError> {
    let all = market.list_deployments().await?;
    let open = all.len();
    let owned: Vec<Dseq> = all
        .into_iter()
        .filter(|d| {
            d.tag
                .as_ref()
                .is_some_and(|t| t.controller_id == controller_id)
        })
        .map(|d| d.dseq)
        .collect();
    progress(CloseStep::Listed {
        owned: owned.len(),
        open,
    });
    for (i, dseq) in owned.iter().enumerate() {
        progress(CloseStep::Closing {
            dseq,
            n: i + 1,
            of: owned.len(),
        });
        market.close(dseq).await?;
        tracing::info!(market = market.name(), %dseq, "closed owned deployment");
        progress(CloseStep::Closed { dseq });
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_in_rendered_sdl_and_manifest_shapes() {
        let sdl = r#"args: ["--model", "m", "--api-key", "sk-replica-123456"]
    env: ["API_KEY=tgi-key-abcdef", "HF_TOKEN=hf_xyz123", "MODE=fast"]"#;
        let s = secrets_in(sdl);
        assert!(s.contains(&"sk-replica-123456".to_owned()));
        assert!(s.contains(&"tgi-key-abcdef".to_owned()));
        assert!(s.contains(&"hf_xyz123".to_owned()));
        assert!(!s.iter().any(|v| v == "fast"));
        let manifest = r#"[{"services":[{"args":["--api-key","k-manifest-9999"],"env":null}]}]"#;
        assert_eq!(secrets_in(manifest), ["k-manifest-9999"]);
    }
}
