//! `serve` (gateway and controller in one process) and `controller` (control plane only).

use std::{net::SocketAddr, sync::Arc};

use leasegate_fleet::Secret;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    CliResult,
    control::{self, ControlPlane},
    feed,
    unified::Unified,
};
use crate::{
    Extras, Gateway, Running, admin,
    demand::DemandMeter,
    fleet::FleetView,
    health::HealthConfig,
    metrics,
    policy::admin_token::MIN_TOKEN_LEN,
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
    ///
    /// `admin_token` overrides the token of the controller's routes (tests);
    /// `None` reads it as [`unify_admin_token`] says, which is what the CLI does.
    pub async fn start(
        mut unified: Unified,
        seed: Option<u64>,
        admin_token: Option<Secret>,
    ) -> CliResult<Self> {
        let adopted = unify_admin_token(&mut unified);
        let admin_token = admin_token.or_else(|| control::admin_token(token_var(&unified)));
        // The controller's gauges need the recorder before its first run.
        metrics::install();
        let control = ControlPlane::start(&unified.control, seed)?;
        let meter = Arc::new(DemandMeter::new(&unified.control.region_codes()));
        let listen = unified.gateway.listen.clone();
        let reload = unified.source.clone().map(|file| {
            super::unified::reload_source(file, super::unified::Defaults::Serve, move |c| {
                c.listen = listen.clone();
                // A reloaded file still without `[admin] token_env` keeps
                // the controller's token for `/admin/*`.
                if c.admin.token_env.is_none() {
                    c.admin.token_env = adopted.clone();
                }
            })
        });
        let extras = Extras {
            demand: Some(meter.clone()),
            admin: Some(control.routes(admin_token.as_ref())),
            reload,
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

/// One admin token for the whole admin listener of a process that runs a
/// controller.
///
/// Two settings name an admin token: `[admin] token_env` guards the gateway's
/// `/admin/*`, `[controller] admin_token_env` (default `LEASEGATE_ADMIN_TOKEN`)
/// the controller's `/fleet` and `/demand`. Under `serve` both are on one
/// listener, so one token guards both:
///
/// - `[admin] token_env`, when set, wins for everything: it is the admin
///   API's own setting, and it is checked again on every reload.
/// - Otherwise the controller's variable is adopted for `/admin/*` as if
///   `[admin] token_env` named it, so a config that only ever set
///   `LEASEGATE_ADMIN_TOKEN` gets a working admin API with that token rather
///   than one that refuses everything.
/// - A controller token too short for the admin API (under
///   [`MIN_TOKEN_LEN`] characters) is not adopted: it keeps guarding
///   `/fleet` as it always did and `/admin/*` stays off, with a warning, so
///   existing configs start exactly as before.
///
/// Returns the adopted variable, if one was adopted.
pub fn unify_admin_token(unified: &mut Unified) -> Option<String> {
    if unified.gateway.admin.token_env.is_some() {
        return None;
    }
    let var = unified.control.controller.admin_token_env.clone();
    let len = std::env::var(&var).map_or(0, |t| t.trim().len());
    if len >= MIN_TOKEN_LEN {
        unified.gateway.admin.token_env = Some(var.clone());
        return Some(var);
    }
    if len > 0 {
        tracing::warn!(variable = %var, min = MIN_TOKEN_LEN,
            "the controller's admin token is too short for the admin API: /admin/* stays off");
    }
    None
}

/// The variable holding the admin token: `[admin] token_env`, else the
/// controller's (see [`unify_admin_token`]).
pub fn token_var(unified: &Unified) -> &str {
    unified
        .gateway
        .admin
        .token_env
        .as_deref()
        .unwrap_or(&unified.control.controller.admin_token_env)
}

pub async fn serve(unified: Unified, seed: Option<u64>) -> CliResult {
    let served = Served::start(unified, seed, None).await?;
    super::announce(&served.gateway);
    let progress = super::progress::spawn(served.control.handle.clone());
    server::shutdown_signal().await;
    progress.abort();
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
    /// `/health`, `/ready` (a ready lease exists) and the admin API's
    /// controller routes (`/admin/leases`, `/admin/pools`, cordons,
    /// replacements; behind the admin token) on `admin`.
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
        let routes = control.routes_with_admin_api(admin_token.as_ref());
        let (stop, stop_rx) = watch::channel(false);
        let opts = ListenerOptions {
            header_read_timeout: unified.gateway.timeouts.header_read,
            drain: unified.gateway.timeouts.drain,
            tls: None,
        };
        let listener_task = server::serve(listener, opts, stop_rx, move |req, _peer| {
            admin::handle_without_gateway(
                prometheus.clone(),
                view.clone(),
                Some(routes.clone()),
                req,
            )
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
    let token = control::admin_token(token_var(&unified));
    let running = ControllerOnly::start(unified, seed, admin, token).await?;
    println!(
        "leasegate controller admin on http://{}",
        running.admin_addr
    );
    let progress = super::progress::spawn(running.control.handle.clone());
    server::shutdown_signal().await;
    progress.abort();
    tracing::info!("shutdown signal received");
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::unified::{Defaults, parse};

    // Cargo sets these for every test run: a long value and a one-digit one.
    const LONG: &str = "CARGO_PKG_DESCRIPTION";
    const SHORT: &str = "CARGO_PKG_VERSION_MAJOR";

    fn unified(text: &str) -> Unified {
        parse(text, Defaults::Serve).unwrap()
    }

    #[test]
    fn the_admin_section_wins_else_a_long_enough_controller_token_is_adopted() {
        let mut u = unified(&format!(
            "[admin]\ntoken_env = \"{LONG}\"\n[controller]\nadmin_token_env = \"{SHORT}\"\n"
        ));
        assert_eq!(unify_admin_token(&mut u), None);
        assert_eq!(token_var(&u), LONG);

        let mut u = unified(&format!("[controller]\nadmin_token_env = \"{LONG}\"\n"));
        assert_eq!(unify_admin_token(&mut u).as_deref(), Some(LONG));
        assert_eq!(u.gateway.admin.token_env.as_deref(), Some(LONG));
        assert_eq!(token_var(&u), LONG);

        // Too short for /admin/*: it keeps guarding /fleet, /admin/* stays off.
        let mut u = unified(&format!("[controller]\nadmin_token_env = \"{SHORT}\"\n"));
        assert_eq!(unify_admin_token(&mut u), None);
        assert_eq!(u.gateway.admin.token_env, None);
        assert_eq!(token_var(&u), SHORT);
    }
}
