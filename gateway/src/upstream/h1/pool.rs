//! Idle upstream connections, per origin, newest first.

use std::{
    collections::VecDeque,
    sync::{Arc, Weak},
    time::Duration,
};

use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::conn::Conn;

/// Where a connection goes: scheme and `host[:port]` as the URI wrote them.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub tls: bool,
    pub authority: Box<str>,
}

impl Origin {
    pub fn new(tls: bool, authority: &str) -> Self {
        Self {
            tls,
            authority: authority.into(),
        }
    }

    /// The port the authority names, or the scheme's default.
    pub fn port(&self) -> u16 {
        let default = if self.tls { 443 } else { 80 };
        // An IPv6 literal's colons are inside its brackets.
        let host_end = self.authority.rfind(']').unwrap_or(0);
        match self.authority[host_end..].rfind(':') {
            Some(i) => self.authority[host_end + i + 1..]
                .parse()
                .unwrap_or(default),
            None => default,
        }
    }
}

#[derive(Debug)]
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// One list of idle connections per origin, plain and TLS apart so a lookup
/// needs only the authority as a `&str`.
#[derive(Debug, Default)]
struct Lists {
    plain: HashMap<Box<str>, VecDeque<Idle>>,
    tls: HashMap<Box<str>, VecDeque<Idle>>,
}

impl Lists {
    fn side(&mut self, tls: bool) -> &mut HashMap<Box<str>, VecDeque<Idle>> {
        if tls { &mut self.tls } else { &mut self.plain }
    }
}

#[derive(Debug)]
pub(super) struct Pool {
    lists: Mutex<Lists>,
    timeout: Duration,
    max_per_origin: usize,
}

impl Pool {
    pub fn new(timeout: Duration, max_per_origin: usize) -> Self {
        Self {
            lists: Mutex::new(Lists::default()),
            timeout,
            max_per_origin,
        }
    }

    /// The most recently used idle connection to the origin that still looks
    /// open. Closed and expired ones met on the way are dropped.
    pub fn checkout(&self, tls: bool, authority: &str) -> Option<Box<Conn>> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut lists = self.lists.lock();
                let list = lists.side(tls).get_mut(authority)?;
                list.pop_back()?
            };
            // Checked outside the lock: it may read from the socket.
            let mut conn = idle.conn;
            if now.duration_since(idle.since) < self.timeout && conn.is_reusable() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose response ended cleanly.
    pub fn put(&self, conn: Box<Conn>) {
        let now = Instant::now();
        let evicted = {
            let mut lists = self.lists.lock();
            let side = lists.side(conn.origin.tls);
            let list = match side.get_mut(&*conn.origin.authority) {
                Some(list) => list,
                None => side.entry(conn.origin.authority.clone()).or_default(),
            };
            list.push_back(Idle { conn, since: now });
            // Oldest first out, past the cap or past the idle timeout.
            let mut evicted = Vec::new();
            while list.len() > self.max_per_origin
                || list
                    .front()
                    .is_some_and(|i| now.duration_since(i.since) >= self.timeout)
            {
                evicted.extend(list.pop_front());
            }
            evicted
        };
        // Sockets are closed outside the lock.
        drop(evicted);
    }

    /// Drops expired connections everywhere, and origins left with none.
    fn sweep(&self) {
        let now = Instant::now();
        let mut evicted = Vec::new();
        {
            let mut lists = self.lists.lock();
            let Lists { plain, tls } = &mut *lists;
            for side in [plain, tls] {
                side.retain(|_, list| {
                    while list
                        .front()
                        .is_some_and(|i| now.duration_since(i.since) >= self.timeout)
                    {
                        evicted.extend(list.pop_front());
                    }
                    !list.is_empty()
                });
            }
        }
        drop(evicted);
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        let lists = self.lists.lock();
        lists
            .plain
            .values()
            .chain(lists.tls.values())
            .map(VecDeque::len)
            .sum()
    }
}

/// Sweeps the pool now and then so connections to origins no longer used
/// are closed too; stops when the pool is dropped. Needs a runtime; without
/// one (a client built outside tokio) expiry happens on use only.
pub(super) fn spawn_sweeper(pool: &Arc<Pool>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Pool> = Arc::downgrade(pool);
    let every = pool.timeout / 3;
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(pool) => pool.sweep(),
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_ports_default_by_scheme_and_survive_ipv6_literals() {
        assert_eq!(Origin::new(false, "example.com").port(), 80);
        assert_eq!(Origin::new(true, "example.com").port(), 443);
        assert_eq!(Origin::new(false, "127.0.0.1:8000").port(), 8000);
        assert_eq!(Origin::new(true, "[::1]").port(), 443);
        assert_eq!(Origin::new(false, "[::1]:9000").port(), 9000);
    }
}
