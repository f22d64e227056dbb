//! Starting and stopping a gateway: binds the listeners and wires fleet, health, routing and upstreams.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use leasegate_fleet::Snapshot;
use tokio::{sync::watch, task::JoinHandle};

use super::{ListenerOptions, bind, serve, tls};
use crate::{
    admin,
    config::{Config, ConfigError, Problem},
    fleet::FleetView,
    health, metrics,
    reload::{self, ConfigSource, Live},
    upstream,
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
    #[error("config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<Problem>),
}

/// Where a live reload reads the config from: `file` is watched, `load` parses it.
#[derive(Clone)]
pub struct ReloadSource {
    pub file: PathBuf,
    pub load: ConfigSource,
}

impl std::fmt::Debug for ReloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadSource")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl ReloadSource {
    /// Reloads from `file` itself.
    pub fn file(file: PathBuf) -> Self {
        let path = file.clone();
        Self {
            file,
            load: Arc::new(move || {
                // A file caught mid-write by a watch may be empty, and an
                // empty file is a valid config of all defaults: never reload to it.
                let blank = std::fs::read_to_string(&path).is_ok_and(|t| t.trim().is_empty());
                if blank {
                    return Err(ConfigError {
                        file: path.display().to_string(),
                        problems: vec![Problem {
                            path: String::new(),
                            reason: "the file is empty; keeping the running config".into(),
                        }],
                    });
                }
                Config::load(&path)
            }),
        }
    }
}

/// The gateway entry point.
#[derive(Debug)]
pub struct Gateway;

/// What a binary adds to a gateway: a controller to report demand to and
/// admin routes of its own. The default adds nothing.
#[derive(Clone, Default)]
pub struct Extras {
    pub demand: Option<Arc<crate::demand::DemandMeter>>,
    pub admin: Option<Arc<dyn admin::AdminRoutes>>,
    /// Where live reloads read the config from; `None`: no reloads.
    pub reload: Option<ReloadSource>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("demand", &self.demand.is_some())
            .field("admin", &self.admin.is_some())
            .field("reload", &self.reload)
            .finish()
    }
}

/// A started gateway: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub fleet: FleetView,
    /// The running config generation; reload through it.
    pub live: Arc<Live>,
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
        Self::start_with(config, fleet_rx, Extras::default()).await
    }

    /// [`Gateway::start`] with a binary's [`Extras`].
    pub async fn start_with(
        config: Config,
        fleet_rx: watch::Receiver<Arc<Snapshot>>,
        extras: Extras,
    ) -> Result<Running, StartError> {
        let prometheus = metrics::install();
        let tls = config.listen.tls.as_ref().map(tls::acceptor).transpose()?;
        let api = bind(config.listen.api).await?;
        let admin_listener = bind(config.listen.admin).await?;
        let api_addr = api.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        warn_missing_keys(&config);
        let fleet = FleetView::new(config.health.clone());
        let prober = health::spawn_prober(fleet.clone(), health::probe_client(&config.health)?);
        let client = upstream::build_client(config.timeouts.connect)?;
        let api_opts = ListenerOptions {
            header_read_timeout: config.timeouts.header_read,
            drain: config.timeouts.drain,
            tls,
        };
        let admin_opts = ListenerOptions {
            tls: None,
            ..api_opts.clone()
        };
        let tls_on = api_opts.tls.is_some();
        // Generation 1: the same preparation (GeoIP files, admin token, limiter
        // table) a reload does, so a bad start fails like a bad reload would.
        let (file, load) = extras.reload.map(|s| (s.file, s.load)).unzip();
        let live = Live::start(config, fleet.clone(), client, load, file, extras.demand)
            .map_err(StartError::Config)?;
        let mut background = vec![live.follow(fleet_rx), prober];
        if live.file().is_some() {
            background.extend(reload::spawn_watchers(&live));
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        // Each request takes the generation current when it arrives and keeps it.
        let api_live = Arc::clone(&live);
        let api_task = serve(api, api_opts, shutdown_rx.clone(), move |req, peer| {
            super::stack::handle(api_live.current(), req, peer)
        });
        let admin_live = Arc::clone(&live);
        let admin_extra = extras.admin;
        let admin_task = serve(
            admin_listener,
            admin_opts,
            shutdown_rx,
            move |req, _peer| {
                admin::handle(
                    prometheus.clone(),
                    Arc::clone(&admin_live),
                    admin_extra.clone(),
                    req,
                )
            },
        );
        tracing::info!(%api_addr, %admin_addr, tls = tls_on, "gateway started");
        Ok(Running {
            api_addr,
            admin_addr,
            fleet,
            live,
            shutdown,
            listeners: vec![api_task, admin_task],
            background,
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

/// The controller's fleet plus static endpoints and fallbacks from config,
/// under the controller's version. Config wins an id both use: the
/// controller's endpoint is left out (its ids are `lease-<dseq>`).
pub fn with_config_endpoints(snapshot: &Snapshot, config: &Config) -> Snapshot {
    let mut merged = snapshot.clone();
    let taken = |id: &str| {
        config.endpoints.iter().any(|e| e.id == id) || config.fallbacks.iter().any(|f| f.id == id)
    };
    merged.endpoints.retain(|e| {
        let keep = !taken(&e.id);
        if !keep {
            tracing::warn!(endpoint = %e.id, "controller endpoint shadowed by a config endpoint of the same id");
        }
        keep
    });
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
