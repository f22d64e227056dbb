//! What reconcile works with: the market, the store, the prober, the
//! gateway's signals, the clock, and per-pool memory between runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Error, error_policy};
use crate::demand::{ScaleState, Signals};
use crate::launcher::Prober;
use crate::market::{Market, ProviderInfo};
use crate::pool::Backoff;
use crate::sdl::RenderSdl;
use crate::store::Store;

/// A step of an acquisition at which a test can make the controller "crash".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// The intent is durable; the deployment is not created yet.
    AfterIntent,
    /// The deployment exists; its dseq is not recorded yet.
    AfterCreate,
    /// A bid is chosen and recorded; the lease is not created yet.
    AfterBids,
    /// The lease exists; the store does not know yet.
    AfterLease,
    /// The replica passed its probes; it is not published yet.
    BeforePublish,
}

/// Per-pool memory that need not survive a restart.
#[derive(Debug, Default)]
pub struct PoolRuntime {
    pub scale: ScaleState,
    /// Intent id → consecutive `status: null` answers.
    pub unreachable: HashMap<String, u32>,
    /// Intent id → first failed health check of the current streak.
    pub unhealthy_since: HashMap<String, Instant>,
    /// Reconcile runs that failed in a row (market or store errors).
    pub consecutive_failures: u32,
    /// Acquisitions that failed in a row (no bids, lease refused, never
    /// ready); reset when a replica becomes ready.
    pub acquire_failures: u32,
    /// No new acquisition before this (backoff after failed ones).
    pub acquire_after: Option<Instant>,
    pub last_error: Option<String>,
    pub next_attempt: Option<Instant>,
    pub desired: u32,
    /// Intent id → escrow runway at the last check.
    pub runway: HashMap<String, Duration>,
}

/// Shared by every pool's reconcile.
pub struct Context {
    pub controller_id: String,
    pub market: Arc<dyn Market>,
    pub store: Arc<dyn Store>,
    pub prober: Arc<dyn Prober>,
    pub signals: Signals,
    pub render: RenderSdl,
    pub backoff: Backoff,
    pub(crate) pools: Mutex<HashMap<String, PoolRuntime>>,
    /// Bumped by operator actions so the pool loops reconcile now rather
    /// than at their next requeue.
    kick: watch::Sender<u64>,
    failpoint: Mutex<Option<Failpoint>>,
    crashed: AtomicBool,
    providers: Mutex<Option<(Instant, Arc<Vec<ProviderInfo>>)>>,
    origin: Instant,
    origin_ms: u64,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("controller_id", &self.controller_id)
            .field("market", &self.market.name())
            .finish_non_exhaustive()
    }
}

/// The provider catalogue changes slowly; one fetch serves many bids.
const PROVIDER_CACHE: Duration = Duration::from_secs(60);

impl Context {
    pub fn new(
        controller_id: String,
        market: Arc<dyn Market>,
        store: Arc<dyn Store>,
        prober: Arc<dyn Prober>,
        signals: Signals,
        render: RenderSdl,
    ) -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            controller_id,
            market,
            store,
            prober,
            signals,
            render,
            backoff: Backoff::default(),
            pools: Mutex::new(HashMap::new()),
            kick: watch::Sender::new(0),
            failpoint: Mutex::new(None),
            crashed: AtomicBool::new(false),
            providers: Mutex::new(None),
            origin: Instant::now(),
            origin_ms: wall,
        }
    }

    /// Milliseconds since the Unix epoch, advancing with tokio time so that
    /// paused-time tests and simulations see consistent timestamps.
    pub fn now_ms(&self) -> u64 {
        self.origin_ms + Instant::now().duration_since(self.origin).as_millis() as u64
    }

    /// Moves the clock's origin forward so `now_ms` never falls behind
    /// timestamps already stored (a restart under simulated time).
    pub fn not_before(&mut self, ms: u64) {
        self.origin_ms = self.origin_ms.max(ms);
    }

    /// Wakes every pool loop for a reconcile now.
    pub fn kick(&self) {
        self.kick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Fires on [`Context::kick`].
    pub fn kicks(&self) -> watch::Receiver<u64> {
        self.kick.subscribe()
    }

    pub fn set_failpoint(&self, point: Option<Failpoint>) {
        *self.failpoint.lock() = point;
    }

    /// Whether a failpoint fired: the controller is "dead" from then on.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Returns `Err(Crashed)` at the armed failpoint.
    pub fn fail(&self, at: Failpoint) -> Result<(), Error> {
        if self.crashed() || *self.failpoint.lock() == Some(at) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(Error::Crashed(at));
        }
        Ok(())
    }

    /// The provider catalogue, cached briefly.
    pub async fn providers(&self) -> Result<Arc<Vec<ProviderInfo>>, Error> {
        if let Some((at, list)) = &*self.providers.lock()
            && at.elapsed() < PROVIDER_CACHE
        {
            return Ok(list.clone());
        }
        let list = Arc::new(self.market.providers().await?);
        *self.providers.lock() = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Records a failed acquisition: the pool waits (backing off) before
    /// the next one, and its status says why.
    pub fn acquire_failed(&self, pool: &str, err: &Error) {
        self.with_pool(pool, |rt| {
            rt.acquire_failures += 1;
            let wait = error_policy(err, rt.acquire_failures, &self.backoff)
                .requeue_after
                .unwrap_or(self.backoff.max);
            rt.acquire_after = Some(Instant::now() + wait);
            rt.last_error = Some(err.to_string());
        });
    }

    /// A replica became ready: acquisitions work again.
    pub fn acquire_succeeded(&self, pool: &str) {
        self.with_pool(pool, |rt| {
            rt.acquire_failures = 0;
            rt.acquire_after = None;
            rt.last_error = None;
        });
    }

    pub fn with_pool<R>(&self, pool: &str, f: impl FnOnce(&mut PoolRuntime) -> R) -> R {
        let mut pools = self.pools.lock();
        f(pools.entry(pool.to_string()).or_default())
    }
}
