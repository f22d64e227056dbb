//! The controller runtime: startup recovery, then one reconcile loop per
//! pool on its requeue schedule, publishing the fleet after each run.

use std::sync::Arc;
use std::time::Duration;

use leasegate_fleet::Snapshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::demand::Signals;
use crate::fleet::{Publisher, endpoints};
use crate::launcher::Prober;
use crate::market::Market;
use crate::ops::{self, OpsError, Replacement};
use crate::pool::{ControllerConfig, Pool};
use crate::reconcile::{Context, Error, Failpoint, error_policy, reconcile, recover};
use crate::sdl::{self, RenderSdl};
use crate::status::{self, ControllerStatus};
use crate::store::{Cordon, Store, StoreError};

/// What the controller runs against.
pub struct Deps {
    pub market: Arc<dyn Market>,
    pub store: Arc<dyn Store>,
    pub prober: Arc<dyn Prober>,
    /// Demand and endpoint reports from the gateway.
    pub signals: Signals,
    pub render: RenderSdl,
    /// Tests only: "crash" at this step of an acquisition.
    pub failpoint: Option<Failpoint>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("market", &self.market.name())
            .finish_non_exhaustive()
    }
}

impl Deps {
    pub fn new(market: Arc<dyn Market>, store: Arc<dyn Store>, prober: Arc<dyn Prober>) -> Self {
        // An akash market needs its tagged templates; see `sdl::for_market`.
        let render = sdl::for_market(market.name());
        Self {
            market,
            store,
            prober,
            signals: Signals::default(),
            render,
            failpoint: None,
        }
    }
}

/// Runs the controller until [`ControllerHandle::shutdown`]; dropping the
/// handle aborts it (as a crash would).
#[derive(Debug)]
pub struct ControllerHandle {
    ctx: Arc<Context>,
    pools: Arc<Vec<Pool>>,
    publisher: Arc<Publisher>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
pub struct Controller;

impl Controller {
    /// Starts the controller with the built-in SDL template.
    pub fn start(
        config: ControllerConfig,
        market: Arc<dyn Market>,
        store: Arc<dyn Store>,
        prober: Arc<dyn Prober>,
    ) -> (ControllerHandle, watch::Receiver<Arc<Snapshot>>) {
        Self::start_with(config, Deps::new(market, store, prober))
    }

    /// Pools that fail [`Pool::validate`] are not reconciled (an error goes
    /// to the log) but their leases are kept, not treated as orphans: a typo
    /// must not close a fleet. Call [`ControllerConfig::validate`] first to
    /// refuse such a config instead.
    pub fn start_with(
        config: ControllerConfig,
        deps: Deps,
    ) -> (ControllerHandle, watch::Receiver<Arc<Snapshot>>) {
        let mut ctx = Context::new(
            config.controller_id.clone(),
            deps.market,
            deps.store,
            deps.prober,
            deps.signals,
            deps.render,
        );
        ctx.backoff = config.backoff.clone();
        // Stored times come from an earlier run's clock; under simulated
        // time that clock may be ahead of the wall clock.
        if let Ok(all) = ctx.store.intents(true) {
            ctx.not_before(all.iter().map(|i| i.updated_ms).max().unwrap_or(0));
        }
        let ctx = Arc::new(ctx);
        ctx.set_failpoint(deps.failpoint);
        let (publisher, rx) = Publisher::new();
        let publisher = Arc::new(publisher);
        let pools = Arc::new(config.pools.clone());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(ctx.clone(), config, publisher.clone(), stop_rx));
        (
            ControllerHandle {
                ctx,
                pools,
                publisher,
                stop,
                task: Some(task),
            },
            rx,
        )
    }
}

impl ControllerHandle {
    /// Where the gateway reports demand and endpoint state.
    pub fn signals(&self) -> Signals {
        self.ctx.signals.clone()
    }

    pub fn fleet(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.publisher.subscribe()
    }

    pub fn status(&self) -> Result<ControllerStatus, StoreError> {
        status::build(&self.ctx, &self.pools)
    }

    /// Cordons a provider (durably): no new lease goes to it; its leases
    /// stay until replaced. See [`ops::cordon`].
    pub fn cordon(&self, provider: &str, reason: Option<String>) -> Result<Cordon, OpsError> {
        ops::cordon(&self.ctx, provider, reason)
    }

    /// Lifts a cordon; whether there was one.
    pub fn uncordon(&self, provider: &str) -> Result<bool, OpsError> {
        ops::uncordon(&self.ctx, provider)
    }

    pub fn cordons(&self) -> Result<Vec<Cordon>, StoreError> {
        self.ctx.store.cordons()
    }

    /// Force-replaces a ready lease, make-before-break. See [`ops::replace`].
    pub fn replace(&self, lease: &str) -> Result<Replacement, OpsError> {
        ops::replace(&self.ctx, lease)
    }

    /// Whether a test failpoint fired (the controller stopped working).
    pub fn crashed(&self) -> bool {
        self.ctx.crashed()
    }

    /// Stops after the reconciles under way finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    ctx: Arc<Context>,
    config: ControllerConfig,
    publisher: Arc<Publisher>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempts = 0;
    loop {
        match recover(&ctx, &config.pools).await {
            Ok(r) => {
                tracing::info!(
                    adopted = r.adopted.len(),
                    closed = r.closed.len(),
                    "recovered"
                );
                break;
            }
            Err(Error::Crashed(_)) => return,
            Err(e) => {
                attempts += 1;
                let wait = error_policy(&e, attempts, &config.backoff)
                    .requeue_after
                    .unwrap_or(config.backoff.max);
                tracing::warn!(error = %e, ?wait, "startup recovery failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
    let pools = Arc::new(config.pools.clone());
    let loops: Vec<_> = config
        .pools
        .iter()
        .filter(|p| match p.validate() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "pool not reconciled");
                false
            }
        })
        .map(|pool| {
            tokio::spawn(pool_loop(
                pool.clone(),
                ctx.clone(),
                config.clone(),
                pools.clone(),
                publisher.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Aborting `run` must stop the loops too: abort them on the way out.
    let guard = AbortAll(loops);
    let _ = stop.wait_for(|s| *s).await;
    // Each pool loop stops at its next sleep; wait for them.
    let mut guard = guard;
    for h in guard.0.iter_mut() {
        let _ = h.await;
    }
}

struct AbortAll(Vec<JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

fn publish(ctx: &Context, pools: &[Pool], publisher: &Publisher) {
    let built = ctx
        .store
        .intents(false)
        .and_then(|i| Ok((i, ctx.store.leases(false)?)));
    match built {
        Ok((intents, leases)) => {
            if let Err(e) = publisher.publish(&*ctx.store, endpoints(pools, &intents, &leases)) {
                tracing::warn!(error = %e, "fleet not published");
            }
        }
        Err(e) => tracing::warn!(error = %e, "fleet not built"),
    }
    if let Err(e) = status::build(ctx, pools) {
        tracing::debug!(error = %e, "status gauges not updated");
    }
}

async fn pool_loop(
    pool: Pool,
    ctx: Arc<Context>,
    config: ControllerConfig,
    pools: Arc<Vec<Pool>>,
    publisher: Arc<Publisher>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut kicks = ctx.kicks();
    loop {
        if *stop.borrow() || ctx.crashed() {
            return;
        }
        let action = match reconcile(&pool, &ctx).await {
            Ok(a) => {
                failures = 0;
                a
            }
            Err(Error::Crashed(at)) => {
                tracing::warn!(pool = %pool.name, ?at, "failpoint: controller stops here");
                return;
            }
            Err(e) => {
                failures += 1;
                let a = error_policy(&e, failures, &config.backoff);
                tracing::warn!(pool = %pool.name, error = %e, attempt = failures,
                    retry_in = ?a.requeue_after, "reconcile failed");
                ctx.with_pool(&pool.name, |rt| {
                    rt.consecutive_failures = failures;
                    rt.last_error = Some(e.to_string());
                    rt.next_attempt = a.requeue_after.map(|d| tokio::time::Instant::now() + d);
                });
                a
            }
        };
        publish(&ctx, &pools, &publisher);
        // A pool with nothing to wait for still checks in now and then.
        let wait = action
            .requeue_after
            .unwrap_or(Duration::from_secs(300))
            .max(Duration::from_millis(10));
        // A kick during the run wakes the loop at once: one more
        // (idempotent) run rather than a missed action.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // The sender lives in `ctx`, which this loop holds: never closed.
            Ok(()) = kicks.changed() => {}
            _ = stop.changed() => return,
        }
    }
}
