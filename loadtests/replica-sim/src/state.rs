//! State shared by the server tasks of one replica: behaviour, queue, counters, stats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::HeaderMap;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::behavior::Behavior;

/// Lifecycle of the server, watched by every task that may wait forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Running,
    /// Stop accepting, let requests finish; stalls and blackholes give up.
    Draining,
    /// Close every connection now.
    Killed,
}

/// The paths counted separately in [`Stats::requests_by_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    Completions,
    Embeddings,
    Models,
    Health,
    Metrics,
    Other,
}

impl Route {
    const ALL: [Route; 7] = [
        Route::Chat,
        Route::Completions,
        Route::Embeddings,
        Route::Models,
        Route::Health,
        Route::Metrics,
        Route::Other,
    ];

    pub(crate) fn of(path: &str) -> Self {
        match path {
            "/v1/chat/completions" => Route::Chat,
            "/v1/completions" => Route::Completions,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/models" => Route::Models,
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Models => "/v1/models",
            Route::Health => "/health",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }
}

/// A snapshot of what a replica has seen, from [`crate::Replica::stats`].
///
/// `last_*` fields describe the last inference request (chat, completions,
/// embeddings), so health probes do not overwrite them.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Every HTTP request, any path.
    pub requests: u64,
    /// Requests by path (`/v1/chat/completions`, …, `other`); paths never hit are absent.
    pub requests_by_path: BTreeMap<String, u64>,
    /// Requests whose handler or response body is still alive.
    pub in_flight: u64,
    /// Requests queued behind `max_concurrency`.
    pub waiting: u64,
    /// Requests holding a concurrency slot.
    pub running: u64,
    /// TCP connections accepted (blackholed ones included).
    pub connections: u64,
    /// Requests answered with an injected `error_status`.
    pub errors_injected: u64,
    pub last_request_headers: Option<HeaderMap>,
    pub last_body_len: usize,
    /// [`crate::hash64`] of the last inference request body.
    pub last_body_hash: Option<u64>,
    /// The `Authorization` header of the last request that had one (any path).
    pub last_authorization: Option<String>,
    /// Distinct `Authorization` values seen (first 64), in order of first sight.
    pub authorizations_seen: Vec<String>,
}

const MAX_AUTHORIZATIONS: usize = 64;

#[derive(Default)]
struct Recent {
    headers: Option<HeaderMap>,
    body_len: usize,
    body_hash: Option<u64>,
    last_authorization: Option<String>,
    authorizations: Vec<String>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    by_route: [AtomicU64; Route::ALL.len()],
    in_flight: AtomicU64,
    waiting: AtomicU64,
    running: AtomicU64,
    connections: AtomicU64,
    errors_injected: AtomicU64,
}

pub(crate) struct Shared {
    behavior: watch::Sender<Arc<Behavior>>,
    phase: watch::Sender<Phase>,
    queue: Arc<Semaphore>,
    /// Permits the queue is sized for; changed only under this lock.
    capacity: Mutex<u32>,
    rng: Mutex<fastrand::Rng>,
    counters: Counters,
    recent: Mutex<Recent>,
}

impl Shared {
    pub(crate) fn new(behavior: Behavior) -> Self {
        let capacity = behavior.max_concurrency.max(1);
        let rng = fastrand::Rng::with_seed(behavior.seed);
        Self {
            behavior: watch::Sender::new(Arc::new(behavior)),
            phase: watch::Sender::new(Phase::Running),
            queue: Arc::new(Semaphore::new(capacity as usize)),
            capacity: Mutex::new(capacity),
            rng: Mutex::new(rng),
            counters: Counters::default(),
            recent: Mutex::new(Recent::default()),
        }
    }

    pub(crate) fn behavior(&self) -> Arc<Behavior> {
        self.behavior.borrow().clone()
    }

    pub(crate) fn watch_behavior(&self) -> watch::Receiver<Arc<Behavior>> {
        self.behavior.subscribe()
    }

    /// Swaps the behaviour, resizes the queue and restarts the error draws from the seed.
    pub(crate) fn set_behavior(&self, b: Behavior) {
        let want = b.max_concurrency.max(1);
        *self.rng.lock() = fastrand::Rng::with_seed(b.seed);
        {
            let mut have = self.capacity.lock();
            if want > *have {
                self.queue.add_permits((want - *have) as usize);
            } else if want < *have {
                let excess = (*have - want) as usize;
                let forgotten = self.queue.forget_permits(excess);
                let rest = excess - forgotten;
                // Permits held by running requests are taken back as they are released.
                if rest > 0
                    && let Ok(rt) = tokio::runtime::Handle::try_current()
                {
                    let queue = self.queue.clone();
                    rt.spawn(async move {
                        if let Ok(p) = queue.acquire_many_owned(rest as u32).await {
                            p.forget();
                        }
                    });
                }
            }
            *have = want;
        }
        self.behavior.send_replace(Arc::new(b));
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.send_if_modified(|cur| {
            let later = p > *cur;
            if later {
                *cur = p;
            }
            later
        });
    }

    /// Resolves once the server is at least in phase `p`.
    pub(crate) async fn reached(&self, p: Phase) {
        let mut rx = self.phase.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|cur| *cur >= p).await;
    }

    /// Whether this inference request gets an injected error.
    pub(crate) fn draw_error(&self, rate: f64) -> bool {
        let hit = if rate >= 1.0 {
            true
        } else if rate <= 0.0 {
            false
        } else {
            self.rng.lock().f64() < rate
        };
        if hit {
            self.counters.errors_injected.fetch_add(1, Relaxed);
        }
        hit
    }

    pub(crate) fn count_connection(&self) {
        self.counters.connections.fetch_add(1, Relaxed);
    }

    /// Counts a request and returns a guard that keeps it in flight.
    pub(crate) fn begin(self: &Arc<Self>, route: Route) -> InFlight {
        self.counters.requests.fetch_add(1, Relaxed);
        let i = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        self.counters.by_route[i].fetch_add(1, Relaxed);
        self.counters.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub(crate) fn record_authorization(&self, value: &[u8]) {
        let mut r = self.recent.lock();
        if r.last_authorization.as_deref().map(str::as_bytes) == Some(value) {
            return;
        }
        let text = String::from_utf8_lossy(value).into_owned();
        if r.authorizations.len() < MAX_AUTHORIZATIONS && !r.authorizations.contains(&text) {
            r.authorizations.push(text.clone());
        }
        r.last_authorization = Some(text);
    }

    /// Keeps the headers and a fingerprint of the body of an inference request.
    pub(crate) fn record_request(&self, headers: HeaderMap, body_len: usize, hash: u64) {
        let mut r = self.recent.lock();
        r.headers = Some(headers);
        r.body_len = body_len;
        r.body_hash = Some(hash);
    }

    /// Waits for a concurrency slot in FIFO order, counted as waiting meanwhile.
    pub(crate) async fn admit(self: &Arc<Self>) -> Option<Running> {
        let permit = match self.queue.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.counters.waiting.fetch_add(1, Relaxed);
                let _waiting = Waiting(self.clone());
                self.queue.clone().acquire_owned().await.ok()?
            }
        };
        self.counters.running.fetch_add(1, Relaxed);
        Some(Running {
            shared: self.clone(),
            _permit: permit,
        })
    }

    pub(crate) fn waiting(&self) -> u64 {
        self.counters.waiting.load(Relaxed)
    }

    pub(crate) fn running(&self) -> u64 {
        self.counters.running.load(Relaxed)
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        let requests_by_path = Route::ALL
            .iter()
            .zip(&c.by_route)
            .map(|(r, n)| (r.name().to_owned(), n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let r = self.recent.lock();
        Stats {
            requests: c.requests.load(Relaxed),
            requests_by_path,
            in_flight: c.in_flight.load(Relaxed),
            waiting: c.waiting.load(Relaxed),
            running: c.running.load(Relaxed),
            connections: c.connections.load(Relaxed),
            errors_injected: c.errors_injected.load(Relaxed),
            last_request_headers: r.headers.clone(),
            last_body_len: r.body_len,
            last_body_hash: r.body_hash,
            last_authorization: r.last_authorization.clone(),
            authorizations_seen: r.authorizations.clone(),
        }
    }
}

/// Keeps a request counted in `in_flight` until dropped.
pub(crate) struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Relaxed);
    }
}

// A guard, so a request cancelled while queued stops counting as waiting.
struct Waiting(Arc<Shared>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.counters.waiting.fetch_sub(1, Relaxed);
    }
}

/// A concurrency slot; counted as running until dropped.
pub(crate) struct Running {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.counters.running.fetch_sub(1, Relaxed);
    }
}
