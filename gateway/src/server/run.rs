//! Starting and stopping a gateway: binds the listeners and wires fleet, health, routing and upstreams.

use std::{net::SocketAddr, sync::Arc};

use leasegate_fleet::Snapshot;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use super::{ListenerOptions, bind, serve, stack::Shared, tls};
use crate::{
    admin,
    config::Config,
    fleet::FleetView,
    geo::{GeoDb, GeoOptions},
    health, metrics,
    route::Router,
    upstream::{self, Upstream},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot set up the upstream client: {0}")]
    Client(#[from] rustls::Error),
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
}

/// The gateway entry point.
#[derive(Debug)]
pub struct Gateway;

/// A started gateway: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub fleet: FleetView,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds the API and admin listeners from `config` and serves the fleet
    /// published on `fleet_rx`, with the config's static endpoints and
    /// fallbacks added to every snapshot.
    pub async fn start(
        config: Config,
        fleet_rx: watch::Receiver<Arc<Snapshot>>,
    ) -> Result<Running, StartError> {
        let prometheus = metrics::install();
        let config = Arc::new(config);
        let tls = config.listen.tls.as_ref().map(tls::acceptor).transpose()?;
        let api = bind(config.listen.api).await?;
        let admin_listener = bind(config.listen.admin).await?;
        let api_addr = api.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        warn_missing_keys(&config);
        let fleet = FleetView::new(config.health.clone());
        let merge = spawn_merge(Arc::clone(&config), fleet.clone(), fleet_rx);
        let prober = health::spawn_prober(fleet.clone(), health::probe_client(&config.health)?);
        let client = upstream::build_client(config.timeouts.connect)?;
        let geo = if config.geo.mmdb.is_empty() {
            None
        } else {
            Some(Arc::new(GeoDb::open(
                &config.geo.mmdb,
                GeoOptions::default(),
            )?))
        };
        let shared = Arc::new(Shared {
            config: Arc::clone(&config),
            fleet: fleet.clone(),
            router: Arc::new(Router::new(&config, fleet.clone(), geo.clone())),
            upstream: Upstream::new(&config, client),
            limiter: Arc::new(Semaphore::new(config.limits.max_concurrency)),
            geo,
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let api_opts = ListenerOptions {
            header_read_timeout: config.timeouts.header_read,
            drain: config.timeouts.drain,
            tls,
        };
        let admin_opts = ListenerOptions {
            tls: None,
            ..api_opts.clone()
        };
        let api_task = serve(api, api_opts, shutdown_rx.clone(), move |req, peer| {
            super::stack::handle(Arc::clone(&shared), req, peer)
        });
        let admin_fleet = fleet.clone();
        let admin_task = serve(
            admin_listener,
            admin_opts,
            shutdown_rx,
            move |req, _peer| admin::handle(prometheus.clone(), admin_fleet.clone(), req),
        );
        tracing::info!(%api_addr, %admin_addr, tls = config.listen.tls.is_some(), "gateway started");
        Ok(Running {
            api_addr,
            admin_addr,
            fleet,
            shutdown,
            listeners: vec![api_task, admin_task],
            background: vec![merge, prober],
        })
    }
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to the drain timeout), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.listeners {
            let _ = task.await;
        }
        for task in self.background {
            task.abort();
        }
    }

    /// Serves until SIGTERM or ctrl-c, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        super::shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        self.shutdown().await;
    }
}

/// Publishes every snapshot from `rx` with the config's own endpoints added.
fn spawn_merge(
    config: Arc<Config>,
    fleet: FleetView,
    mut rx: watch::Receiver<Arc<Snapshot>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let snapshot = Arc::clone(&rx.borrow_and_update());
            fleet.publish(Arc::new(with_config_endpoints(&snapshot, &config)));
            if rx.changed().await.is_err() {
                break;
            }
        }
    })
}

/// The controller's fleet plus static endpoints and fallbacks from config.
pub fn with_config_endpoints(snapshot: &Snapshot, config: &Config) -> Snapshot {
    let mut merged = snapshot.clone();
    merged
        .endpoints
        .extend(config.endpoints.iter().map(|e| e.to_fleet()));
    merged
        .endpoints
        .extend(config.fallbacks.iter().map(|f| f.to_fleet()));
    merged
}

/// A key variable that is unset means the upstream will answer 401; say so
/// at start (by variable name only) rather than on the first request.
fn warn_missing_keys(config: &Config) {
    let creds = config
        .endpoints
        .iter()
        .map(|e| (&e.id, &e.credential))
        .chain(config.fallbacks.iter().map(|f| (&f.id, &f.credential)));
    for (id, cred) in creds {
        if let Some(leasegate_fleet::Credential::Env { var }) = cred
            && std::env::var_os(var).is_none()
        {
            tracing::warn!(endpoint = %id, variable = %var, "key variable is not set; requests go without a key");
        }
    }
}
