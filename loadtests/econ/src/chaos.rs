//! Seeded market trouble: providers whose control plane goes down (their
//! leases close as `unstable`), and providers Console cannot reach for a
//! few minutes (`status: null`). Victims are drawn among providers that
//! hold an active lease, so every event hurts the fleet.

use std::time::Duration;

use leasegate_controller::market::sim::SimMarket;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Down,
    Revive,
    Null,
}

#[derive(Clone, Debug)]
struct Event {
    at: f64,
    kind: Kind,
    /// Set for revivals: who comes back.
    provider: Option<String>,
}

/// The schedule, consumed as simulated time passes.
#[derive(Debug)]
pub struct Chaos {
    events: Vec<Event>,
    rng: fastrand::Rng,
    pub failures: u32,
    pub null_episodes: u32,
}

/// Event times of a Poisson process with `per_day` events a day in `[from, to)`.
fn poisson_times(rng: &mut fastrand::Rng, per_day: f64, from: f64, to: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if per_day <= 0.0 {
        return out;
    }
    let mean_gap = 86_400.0 / per_day;
    let mut t = from;
    loop {
        t += -mean_gap * (1.0 - rng.f64()).ln();
        if t >= to {
            return out;
        }
        out.push(t);
    }
}

impl Chaos {
    pub fn new(seed: u64, failures_per_day: f64, null_per_day: f64, from: f64, to: f64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xC4A0_5EED);
        let mut events: Vec<Event> = poisson_times(&mut rng, failures_per_day, from, to)
            .into_iter()
            .map(|at| Event {
                at,
                kind: Kind::Down,
                provider: None,
            })
            .chain(
                poisson_times(&mut rng, null_per_day, from, to)
                    .into_iter()
                    .map(|at| Event {
                        at,
                        kind: Kind::Null,
                        provider: None,
                    }),
            )
            .collect();
        events.sort_by(|a, b| b.at.total_cmp(&a.at));
        Self {
            events,
            rng,
            failures: 0,
            null_episodes: 0,
        }
    }

    /// Applies every event due by `t`.
    pub fn apply(&mut self, market: &SimMarket, t: f64) {
        while self.events.last().is_some_and(|e| e.at <= t) {
            let Some(e) = self.events.pop() else { return };
            match e.kind {
                Kind::Revive => {
                    if let Some(p) = &e.provider {
                        market.revive_provider(p);
                    }
                }
                Kind::Down | Kind::Null => {
                    let mut holders: Vec<String> = market
                        .ledger()
                        .active_leases()
                        .iter()
                        .filter_map(|d| d.lease.as_ref().map(|l| l.provider.clone()))
                        .collect();
                    holders.sort();
                    holders.dedup();
                    if holders.is_empty() {
                        continue;
                    }
                    let victim = holders[self.rng.usize(..holders.len())].clone();
                    if e.kind == Kind::Null {
                        // Console loses the provider for 2–6 minutes.
                        let secs = 120.0 + self.rng.f64() * 240.0;
                        market.null_status(&victim, Duration::from_secs_f64(secs));
                        self.null_episodes += 1;
                    } else {
                        market.kill_provider(&victim);
                        self.failures += 1;
                        // Back (for new leases) after 30 minutes to 2 hours.
                        let back = e.at + 1800.0 + self.rng.f64() * 5400.0;
                        self.schedule(Event {
                            at: back,
                            kind: Kind::Revive,
                            provider: Some(victim),
                        });
                    }
                }
            }
        }
    }

    fn schedule(&mut self, e: Event) {
        let i = self.events.partition_point(|x| x.at > e.at);
        self.events.insert(i, e);
    }
}
