//! `gateway`: the data plane alone, over endpoints from the command line and
//! config, and optionally the fleet of a controller followed over HTTP.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use leasegate_controller::fleet_follow::{self, FollowConfig};
use leasegate_fleet::{Secret, Snapshot};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    CliResult, GatewayArgs,
    feed::{Remote, Sink},
    unified::Unified,
};
use crate::{Extras, Gateway, Running, config::Config, demand::DemandMeter, upstream};

/// A running `gateway`, with the follower of its controller if any.
#[derive(Debug)]
pub struct GatewayOnly {
    pub gateway: Running,
    follower: Option<JoinHandle<()>>,
    feed: Option<JoinHandle<()>>,
    _fleet_tx: Option<watch::Sender<Arc<Snapshot>>>,
}

impl GatewayOnly {
    /// `fleet_token` authenticates to the controller's `/fleet`.
    pub async fn start(
        args: GatewayArgs,
        unified: Unified,
        fleet_token: Option<Secret>,
    ) -> CliResult<Self> {
        let mut config = unified.gateway;
        if let Some(addr) = args.listen {
            config.listen.api = addr;
        }
        if let Some(addr) = args.admin_listen {
            config.listen.admin = addr;
        }
        args.geo.clone().apply(&mut config.geo);
        if args.fleet_from.is_none() && args.endpoints.is_empty() && config.endpoints.is_empty() {
            return Err(
                "no endpoints: give --endpoint URL (repeatable), --fleet-from URL, \
                 or a --config with [[endpoints]]"
                    .into(),
            );
        }
        let (file_endpoints, file_fallbacks) = (config.endpoints.len(), config.fallbacks.len());
        add_cli_endpoints(&mut config, &args).await?;
        let mut extras = Extras::default();
        // Reloads re-read the file and re-apply what the command line added
        // (listeners, and the endpoints and fallbacks given there, already discovered).
        if let Some(file) = unified.source.clone() {
            let listen = config.listen.clone();
            let endpoints = config.endpoints[file_endpoints..].to_vec();
            let fallbacks = config.fallbacks[file_fallbacks..].to_vec();
            extras.reload = Some(super::unified::reload_source(
                file,
                super::unified::Defaults::None,
                move |c| {
                    c.listen = listen.clone();
                    c.endpoints.extend(endpoints.iter().cloned());
                    c.fallbacks.extend(fallbacks.iter().cloned());
                },
            ));
        }
        let mut feed = None;
        let (rx, follower, tx) = match &args.fleet_from {
            Some(url) => {
                let mut follow = FollowConfig::new(url.clone());
                follow.token = fleet_token.clone();
                // Demand goes back the same way the fleet comes.
                let meter = Arc::new(DemandMeter::new(&unified.control.region_codes()));
                extras.demand = Some(meter.clone());
                feed = Some((
                    meter,
                    Sink::Remote(Box::new(Remote {
                        client: upstream::build_http_client(config.timeouts.connect)?,
                        base_url: url.clone(),
                        token: fleet_token,
                    })),
                ));
                let cache = args.fleet_cache.clone().unwrap_or_else(|| {
                    let state = unified.control.controller.state_path();
                    state.with_file_name("fleet-cache.json")
                });
                if let Some(dir) = cache.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                follow.cache_path = Some(cache);
                let (rx, task) = fleet_follow::follow(follow);
                tracing::info!(controller = %url, version = rx.borrow().version, "following the controller's fleet");
                (rx, Some(task), None)
            }
            None => {
                // Quick start has no controller: the fleet is the config's own endpoints.
                let (tx, rx) = watch::channel(Arc::new(Snapshot {
                    version: 1,
                    ..Snapshot::default()
                }));
                (rx, None, Some(tx))
            }
        };
        let gateway = Gateway::start_with(config, rx, extras).await?;
        let feed = feed.map(|(meter, sink)| {
            let every = unified.control.controller.demand_interval;
            super::feed::spawn(meter, gateway.fleet.clone(), sink, every)
        });
        Ok(Self {
            gateway,
            follower,
            feed,
            _fleet_tx: tx,
        })
    }

    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        for task in [self.follower, self.feed].into_iter().flatten() {
            task.abort();
        }
    }
}

pub async fn gateway(args: GatewayArgs, unified: Unified) -> CliResult {
    let token = if args.fleet_from.is_some() {
        token(&args.fleet_token_env)?
    } else {
        None
    };
    let running = GatewayOnly::start(args, unified, token).await?;
    super::announce(&running.gateway);
    crate::server::shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    running.shutdown().await;
    Ok(())
}

fn token(var: &str) -> CliResult<Option<Secret>> {
    match std::env::var(var) {
        Ok(t) if !t.is_empty() => Ok(Some(Secret::new(t))),
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            tracing::warn!(variable = %var, "no admin token set: the controller will refuse /fleet");
            Ok(None)
        }
        Err(e) => Err(format!("{var}: {e}").into()),
    }
}

/// Adds `--endpoint` (models discovered) and `--fallback` specs to `config`.
async fn add_cli_endpoints(config: &mut Config, args: &GatewayArgs) -> CliResult {
    let client = upstream::build_http_client(config.timeouts.connect)?;
    let base = config.endpoints.len();
    let mut all_models = Vec::new();
    for (i, arg) in args.endpoints.iter().enumerate() {
        let models = discover_models(&client, arg).await?;
        tracing::info!(endpoint = %arg.url, ?models, "discovered models");
        all_models.extend(models.iter().cloned());
        config
            .endpoints
            .push(arg.clone().into_spec(base + i, models));
    }
    all_models.extend(
        config
            .endpoints
            .iter()
            .flat_map(|e| e.models.iter().cloned()),
    );
    all_models.sort();
    all_models.dedup();
    let base = config.fallbacks.len();
    for (i, arg) in args.fallbacks.iter().enumerate() {
        config
            .fallbacks
            .push(arg.clone().into_spec(base + i, &all_models));
    }
    Ok(())
}

/// Asks an endpoint which models it serves, like vllm-router's `--worker-urls`.
async fn discover_models(
    client: &upstream::HttpClient,
    arg: &super::EndpointArg,
) -> CliResult<Vec<String>> {
    let base = crate::config::base_url(&arg.url);
    let mut req = Request::get(format!("{base}/v1/models")).body(Full::new(Bytes::new()))?;
    if let Some(var) = &arg.key_env {
        let key = std::env::var(var)
            .map_err(|_| format!("{}: environment variable {var} is not set", arg.url))?;
        req.headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {key}").parse()?);
    }
    let fail = |why: String| format!("cannot discover the models of {}: {why}", arg.url);
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| fail("no answer within 10s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("status {}", resp.status())).into());
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let list: ModelList =
        serde_json::from_slice(&body.to_bytes()).map_err(|e| fail(e.to_string()))?;
    let models: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
    if models.is_empty() {
        return Err(fail("it lists no models".into()).into());
    }
    Ok(models)
}

#[derive(serde::Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(serde::Deserialize)]
struct ModelEntry {
    id: String,
}
