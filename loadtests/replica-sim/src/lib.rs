//! An OpenAI-compatible replica simulator with configurable latency and faults.
//!
//! Used in-process by tests, by the controller's simulated market (one replica per
//! lease), by the demo and by the benchmarks. Replies are a pure function of the
//! request body and the [`Behavior`], so bytes can be compared across paths.

mod behavior;
mod metrics;
mod openai;
mod server;
mod state;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use behavior::{Behavior, Engine};
pub use openai::{CREATED, hash64, prompt_tokens};
pub use state::Stats;

use state::{Phase, Shared};

/// Where a replica listens: a listener the caller already bound, or an address to bind.
#[derive(Debug)]
pub enum Bind {
    Listener(TcpListener),
    Addr(SocketAddr),
}

impl From<TcpListener> for Bind {
    fn from(l: TcpListener) -> Self {
        Bind::Listener(l)
    }
}

impl From<SocketAddr> for Bind {
    fn from(a: SocketAddr) -> Self {
        Bind::Addr(a)
    }
}

/// A running simulated replica. Dropping it closes the listener and every connection.
pub struct Replica {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Starts a replica on `127.0.0.1:0`.
    pub async fn start(behavior: Behavior) -> io::Result<Replica> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), behavior).await
    }

    /// Starts a replica on the given listener or address.
    pub async fn start_on(bind: impl Into<Bind>, behavior: Behavior) -> io::Result<Replica> {
        let listener = match bind.into() {
            Bind::Listener(l) => l,
            Bind::Addr(a) => TcpListener::bind(a).await?,
        };
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(behavior));
        let task = tokio::spawn(server::serve(shared.clone(), listener));
        Ok(Replica {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// `http://IP:PORT`, the base URL to which API paths are appended.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the behaviour for requests (and connections) that arrive from now on.
    /// The error draws restart from `b.seed`.
    pub fn set_behavior(&self, b: Behavior) {
        self.shared.set_behavior(b);
    }

    pub fn behavior(&self) -> Behavior {
        (*self.shared.behavior()).clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops accepting, lets in-flight requests finish (stalled streams and
    /// blackholed requests end at once), then closes everything.
    pub async fn shutdown(mut self) {
        self.shared.set_phase(Phase::Draining);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared.set_phase(Phase::Killed);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shared.set_phase(Phase::Killed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
