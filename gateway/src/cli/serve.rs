//! `serve` (gateway and controller in one process) and `controller` (control plane only).

use std::{net::SocketAddr, sync::Arc};

use leasegate_fleet::Secret;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    CliResult,
    control::{ControlPlane, admin_token},
    feed,
    unified::Unified,
};
use crate::{
    Extras, Gateway, Running, admin,
    demand::DemandMeter,
    fleet::FleetView,
    health::HealthConfig,
    metrics,
    server::{self, ListenerOptions},
};

/// A running `serve`: the gateway over the controller's fleet.
#[derive(Debug)]
pub struct Served {
    pub gateway: Running,
    pub control: ControlPlane,
    feed: JoinHandle<()>,
}

impl Served {
    /// Starts the controller, then the gateway following its fleet (plus
    /// the config's static endpoints and fallbacks), then the demand feed.
    pub async fn start(
        unified: Unified,
        seed: Option<u64>,
        admin_token: Option<Secret>,
    ) -> CliResult<Self> {
        // The controller's gauges need the recorder before its first run.
        metrics::install();
        let control = ControlPlane::start(&unified.control, seed)?;
        let meter = Arc::new(DemandMeter::new(&unified.control.region_codes()));
        let extras = Extras {
            demand: Some(meter.clone()),
            admin: Some(control.routes(admin_token.as_ref())),
        };
        let gateway = Gateway::start_with(unified.gateway, control.fleet.clone(), extras).await?;
        let feed = feed::spawn(
            meter,
            gateway.fleet.clone(),
            feed::Sink::Local(control.signals.clone()),
            unified.control.controller.demand_interval,
        );
        Ok(Self {
            gateway,
            control,
            feed,
        })
    }

    /// Drains the gateway, then stops the controller (leases stay: a
    /// restart on the same state file adopts them).
    pub async fn shutdown(self) {
        self.feed.abort();
        self.gateway.shutdown().await;
        self.control.shutdown().await;
    }
}

pub async fn serve(unified: Unified, seed: Option<u64>) -> CliResult {
    let token = admin_token(&unified.control.controller.admin_token_env);
    let served = Served::start(unified, seed, token).await?;
    super::announce(&served.gateway);
    server::shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    served.shutdown().await;
    Ok(())
}

/// A running `controller`: the control plane and its admin listener.
#[derive(Debug)]
pub struct ControllerOnly {
    pub admin_addr: SocketAddr,
    pub control: ControlPlane,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControllerOnly {
    /// Starts the controller and serves `/fleet`, `/status`, `/metrics`,
    /// `/health` and `/ready` (a ready lease exists) on `admin`.
    pub async fn start(
        unified: Unified,
        seed: Option<u64>,
        admin: SocketAddr,
        admin_token: Option<Secret>,
    ) -> CliResult<Self> {
        let prometheus = metrics::install();
        let control = ControlPlane::start(&unified.control, seed)?;
        let listener = server::bind(admin).await?;
        let admin_addr = listener.local_addr()?;
        // The admin handler's /ready and endpoint gauges read a fleet view:
        // this one mirrors what the controller publishes.
        let view = FleetView::new(HealthConfig::default());
        let mirror = view.subscribe_from(control.fleet.clone());
        let routes = control.routes(admin_token.as_ref());
        let (stop, stop_rx) = watch::channel(false);
        let opts = ListenerOptions {
            header_read_timeout: unified.gateway.timeouts.header_read,
            drain: unified.gateway.timeouts.drain,
            tls: None,
        };
        let listener_task = server::serve(listener, opts, stop_rx, move |req, _peer| {
            admin::handle(prometheus.clone(), view.clone(), Some(routes.clone()), req)
        });
        tracing::info!(%admin_addr, "controller admin listener started");
        Ok(Self {
            admin_addr,
            control,
            stop,
            tasks: vec![listener_task, mirror],
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks.into_iter();
        if let Some(listener) = tasks.next() {
            let _ = listener.await;
        }
        for t in tasks {
            t.abort();
        }
        self.control.shutdown().await;
    }
}

pub async fn controller(unified: Unified, seed: Option<u64>, admin: SocketAddr) -> CliResult {
    let token = admin_token(&unified.control.controller.admin_token_env);
    let running = ControllerOnly::start(unified, seed, admin, token).await?;
    println!(
        "leasegate controller admin on http://{}",
        running.admin_addr
    );
    server::shutdown_signal().await;
    tracing::info!("shutdown signal received");
    running.shutdown().await;
    Ok(())
}
