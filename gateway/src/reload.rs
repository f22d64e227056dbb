//! Live configuration: each generation is built completely, then swapped in at once; reloads come from a file watch, SIGHUP or the admin API.
//!
//! A request loads the current generation (`Arc<Shared>`) when it arrives and
//! keeps it to the end, so a reload never changes a request mid-flight. A
//! reload parses and validates the whole file, then does every fallible step
//! (admin token from the environment, upstream client, limiter table carrying
//! the counters of keys that stay) before the one `ArcSwap` store. A rejected
//! file leaves the running generation untouched and is reported with its key
//! paths in the log, in `leasegate_config_reload_total{result="rejected"}`
//! and in `GET /admin/config`.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use leasegate_fleet::{Snapshot, State};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::{
    config::{Config, ConfigError, Problem},
    fleet::FleetView,
    geo::{GeoDb, GeoOptions},
    policy::{AdminToken, Policy},
    server::{run::with_config_endpoints, stack::Shared},
    upstream::{self, Upstream, h1},
};

pub const RELOADS: &str = "leasegate_config_reload_total";

/// Where a reload reads the config from: normally `Config::load(path)`.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What `GET /admin/config` reports about loading.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadStatus {
    /// 1 for the config the gateway started with; +1 per successful reload.
    pub generation: u64,
    pub file: Option<String>,
    pub loaded_at_ms: u64,
    /// `none` (no reload tried yet), `ok` or `rejected`.
    pub last_result: &'static str,
    pub last_attempt_at_ms: Option<u64>,
    pub problems: Vec<Problem>,
}

/// The fleet as the controller last published it, and what the admin API drained.
#[derive(Debug, Default)]
struct FleetInputs {
    controller: Arc<Snapshot>,
    drained: BTreeSet<String>,
}

/// The running generation and everything needed to build the next one.
pub struct Live {
    current: ArcSwap<Shared>,
    fleet: FleetView,
    /// Reused across generations so pooled upstream connections survive a reload.
    client: Mutex<(Duration, h1::Client)>,
    source: Option<ConfigSource>,
    file: Option<PathBuf>,
    status: Mutex<ReloadStatus>,
    /// One reload at a time, so two cannot both carry over from the same old state.
    reloading: Mutex<()>,
    inputs: Mutex<FleetInputs>,
    /// Demand counts for a controller, shared by every generation.
    demand: Option<Arc<crate::demand::DemandMeter>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.current.load().generation)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Live {
    /// Prepares generation 1. `file` is the path a file watch follows, if any.
    pub fn start(
        config: Config,
        fleet: FleetView,
        client: h1::Client,
        source: Option<ConfigSource>,
        file: Option<PathBuf>,
        demand: Option<Arc<crate::demand::DemandMeter>>,
    ) -> Result<Arc<Self>, Vec<Problem>> {
        let connect = config.timeouts.connect;
        let shared = prepare(config, None, &fleet, &client, 1, demand.clone())?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(shared),
            fleet,
            client: Mutex::new((connect, client)),
            source,
            status: Mutex::new(ReloadStatus {
                generation: 1,
                file: file.as_ref().map(|f| f.display().to_string()),
                loaded_at_ms: unix_ms(),
                last_result: "none",
                last_attempt_at_ms: None,
                problems: Vec::new(),
            }),
            file,
            reloading: Mutex::new(()),
            inputs: Mutex::new(FleetInputs::default()),
            demand,
        }))
    }

    /// The generation a new request should use (and keep).
    pub fn current(&self) -> Arc<Shared> {
        self.current.load_full()
    }

    pub fn fleet(&self) -> &FleetView {
        &self.fleet
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().clone()
    }

    /// Re-reads the config from its source and applies it.
    pub fn reload(&self) -> Result<u64, Vec<Problem>> {
        let Some(source) = &self.source else {
            let p = vec![Problem {
                path: String::new(),
                reason: "this gateway was started without a config file; nothing to reload".into(),
            }];
            return self.record(Err(p));
        };
        match source() {
            Ok(config) => self.apply(config),
            Err(e) => self.record(Err(e.problems)),
        }
    }

    /// Prepares a new generation from `config` and swaps it in; on any
    /// problem the running generation stays.
    pub fn apply(&self, config: Config) -> Result<u64, Vec<Problem>> {
        let _one_at_a_time = self.reloading.lock();
        let old = self.current.load_full();
        let client = match self.client_for(&config) {
            Ok(c) => c,
            Err(p) => return self.record(Err(p)),
        };
        let next = prepare(
            config,
            Some(&old),
            &self.fleet,
            &client,
            old.generation + 1,
            self.demand.clone(),
        );
        let result = next.map(|next| {
            warn_restart_only(&old.config, &next.config);
            let generation = next.generation;
            self.current.store(Arc::new(next));
            generation
        });
        if result.is_ok() {
            // After the swap, so the fleet never lists endpoints the running
            // config does not know; requests keep whichever fleet they loaded.
            self.republish();
        }
        self.record(result)
    }

    /// The upstream client for `config`: the running one unless the connect timeout changed.
    fn client_for(&self, config: &Config) -> Result<h1::Client, Vec<Problem>> {
        let mut slot = self.client.lock();
        if slot.0 != config.timeouts.connect {
            let client = upstream::build_client(config.timeouts.connect).map_err(|e| {
                vec![Problem {
                    path: "timeouts.connect".into(),
                    reason: format!("cannot build the upstream client: {e}"),
                }]
            })?;
            *slot = (config.timeouts.connect, client);
        }
        Ok(slot.1.clone())
    }

    fn record(&self, result: Result<u64, Vec<Problem>>) -> Result<u64, Vec<Problem>> {
        let mut status = self.status.lock();
        status.last_attempt_at_ms = Some(unix_ms());
        match &result {
            Ok(generation) => {
                metrics::counter!(RELOADS, "result" => "ok").increment(1);
                tracing::info!(generation, "config reloaded");
                status.generation = *generation;
                status.loaded_at_ms = unix_ms();
                status.last_result = "ok";
                status.problems.clear();
            }
            Err(problems) => {
                metrics::counter!(RELOADS, "result" => "rejected").increment(1);
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::error!(
                    file = status.file.as_deref().unwrap_or("-"),
                    problems = %list.join("; "),
                    "config reload rejected; the running config stays"
                );
                status.last_result = "rejected";
                status.problems.clone_from(problems);
            }
        }
        result
    }

    /// Stops new requests to endpoint `id` until it leaves the fleet; `false` if there is no such endpoint.
    pub fn drain(&self, id: &str) -> bool {
        if self.fleet.current().endpoint(id).is_none() {
            return false;
        }
        self.inputs.lock().drained.insert(id.to_owned());
        self.republish();
        true
    }

    pub fn is_drained(&self, id: &str) -> bool {
        self.inputs.lock().drained.contains(id)
    }

    /// Publishes the controller's fleet plus the running config's endpoints, with drains applied.
    fn republish(&self) {
        // Held across build and publish so two republishes cannot land out of order.
        let inputs = self.inputs.lock();
        let config = &self.current.load().config;
        let mut merged = with_config_endpoints(&inputs.controller, config);
        for e in &mut merged.endpoints {
            if inputs.drained.contains(&e.id) {
                e.state = State::Draining;
            }
        }
        self.fleet.publish(Arc::new(merged));
    }

    /// Follows the controller's snapshots until the sender goes away.
    pub fn follow(self: &Arc<Self>, mut rx: watch::Receiver<Arc<Snapshot>>) -> JoinHandle<()> {
        let live = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let snapshot = Arc::clone(&rx.borrow_and_update());
                {
                    let shared = live.current();
                    let config = &shared.config;
                    let mut inputs = live.inputs.lock();
                    // A drain ends when its endpoint leaves the fleet.
                    inputs.drained.retain(|id| {
                        snapshot.endpoints.iter().any(|e| e.id == *id)
                            || config.endpoints.iter().any(|e| e.id == *id)
                            || config.fallbacks.iter().any(|f| f.id == *id)
                    });
                    inputs.controller = snapshot;
                }
                live.republish();
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// The file a watch should follow.
    pub fn file(&self) -> Option<&PathBuf> {
        self.file.as_ref()
    }
}

/// Builds one generation. Everything that can fail happens here, before any swap:
/// the admin token from its environment variable and the GeoIP files (opened
/// afresh, so a reload also picks up an updated database).
fn prepare(
    config: Config,
    previous: Option<&Shared>,
    fleet: &FleetView,
    client: &h1::Client,
    generation: u64,
    demand: Option<Arc<crate::demand::DemandMeter>>,
) -> Result<Shared, Vec<Problem>> {
    let mut problems = Vec::new();
    let admin_token = match &config.admin.token_env {
        None => None,
        Some(var) => match AdminToken::from_env(var) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(Problem {
                    path: "admin.token_env".into(),
                    reason: e.to_string(),
                });
                None
            }
        },
    };
    let geo = if config.geo.mmdb.is_empty() {
        None
    } else {
        match GeoDb::open(&config.geo.mmdb, GeoOptions::default()) {
            Ok(db) => Some(db),
            Err(e) => {
                problems.push(Problem {
                    path: "geo.mmdb".into(),
                    reason: e.to_string(),
                });
                None
            }
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let policy = Policy::new(config.keys.clone(), previous.map(|p| &p.policy));
    let accounting = match previous {
        Some(p) => p.accounting.reloaded(&config),
        None => crate::usage::stage::Accounting::new(&config, Vec::new()),
    };
    // The concurrency limit carries over unless its size changed: permits
    // held by requests in flight must keep counting against it.
    let limiter = match previous {
        Some(p) if p.config.limits.max_concurrency == config.limits.max_concurrency => {
            Arc::clone(&p.limiter)
        }
        _ => Arc::new(Semaphore::new(config.limits.max_concurrency)),
    };
    let upstream = Upstream::new(&config, client.clone());
    let geo = geo.map(Arc::new);
    let router = Arc::new(crate::route::Router::new(
        &config,
        fleet.clone(),
        geo.clone(),
    ));
    Ok(Shared {
        config: Arc::new(config),
        fleet: fleet.clone(),
        router,
        upstream,
        limiter,
        geo,
        policy,
        admin_token,
        generation,
        demand,
        accounting,
    })
}

/// Settings bound at start (sockets, TLS, prober) keep their old values until a restart.
fn warn_restart_only(old: &Config, new: &Config) {
    let changed = [
        ("listen.api", old.listen.api != new.listen.api),
        ("listen.admin", old.listen.admin != new.listen.admin),
        (
            "listen.tls",
            old.listen.tls.as_ref().map(|t| (&t.cert, &t.key))
                != new.listen.tls.as_ref().map(|t| (&t.cert, &t.key)),
        ),
        ("health", old.health != new.health),
        (
            "timeouts.header_read",
            old.timeouts.header_read != new.timeouts.header_read,
        ),
    ];
    for (path, _) in changed.iter().filter(|(_, c)| *c) {
        tracing::warn!(
            path,
            "changed in the config; takes effect at the next restart"
        );
    }
}

mod triggers;

pub use triggers::spawn_watchers;
