//! Startup progress for `serve` and `controller`: what the controller is
//! acquiring, printed on stderr until every pool reaches its minimum.
//!
//! Acquiring a lease takes seconds on the sim market and minutes on Akash
//! (bids, manifest, image pull, model load); until then the gateway has no
//! replica for the pool's model. These lines say what is happening instead
//! of leaving an operator with 404s and silence. stdout stays reserved for
//! the announced addresses, which scripts read.

use std::{collections::HashSet, sync::Arc, time::Duration};

use leasegate_controller::{ControllerHandle, status::ControllerStatus};
use tokio::{task::JoinHandle, time::Instant};

/// How often the controller's status is read.
const POLL: Duration = Duration::from_millis(500);
/// Past this, progress stops reporting: the pools are in `status` and the logs.
const GIVE_UP: Duration = Duration::from_secs(30 * 60);

/// Prints progress lines on stderr until every pool holds its minimum of
/// ready leases (or [`GIVE_UP`] passes).
pub fn spawn(handle: Arc<ControllerHandle>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut last: Option<ControllerStatus> = None;
        while started.elapsed() < GIVE_UP {
            if let Ok(now) = handle.status() {
                for line in changes(last.as_ref(), &now) {
                    eprintln!("leasegate: {line}");
                }
                if at_minimum(&now) {
                    eprintln!(
                        "leasegate: every pool has its minimum of ready leases after {:.1}s",
                        started.elapsed().as_secs_f64()
                    );
                    return;
                }
                last = Some(now);
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

fn at_minimum(s: &ControllerStatus) -> bool {
    s.pools.iter().all(|p| p.ready >= p.min_replicas)
}

/// The lines worth printing between two readings: each pool whose counts or
/// phase moved, and each lease that became ready.
fn changes(before: Option<&ControllerStatus>, now: &ControllerStatus) -> Vec<String> {
    let mut out = Vec::new();
    for pool in &now.pools {
        let old = before.and_then(|b| b.pools.iter().find(|p| p.name == pool.name));
        let moved = old.is_none_or(|o| {
            (o.ready, o.acquiring, o.phase.as_str())
                != (pool.ready, pool.acquiring, pool.phase.as_str())
        });
        if !moved {
            continue;
        }
        let mut line = format!(
            "pool {} ({}): {}/{} ready, {} acquiring",
            pool.name, pool.model, pool.ready, pool.min_replicas, pool.acquiring
        );
        if pool.phase == "backing_off" {
            line.push_str(", backing off");
            if let Some(s) = pool.retry_in_s {
                line.push_str(&format!(" (next try in {s:.0}s)"));
            }
            if let Some(e) = &pool.last_error {
                line.push_str(&format!(": {e}"));
            }
        }
        out.push(line);
    }
    let was_ready: HashSet<&str> = before
        .map(|b| {
            b.leases
                .iter()
                .filter(|l| l.state == "ready")
                .map(|l| l.dseq.as_str())
                .collect()
        })
        .unwrap_or_default();
    for lease in now
        .leases
        .iter()
        .filter(|l| l.state == "ready" && !was_ready.contains(l.dseq.as_str()))
    {
        out.push(format!(
            "lease {} ready for pool {}: provider {} in {}, ${:.2}/h",
            lease.dseq, lease.pool, lease.provider, lease.region, lease.usd_per_hour
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use leasegate_controller::status::{LeaseView, PoolStatus};

    use super::*;

    fn pool(ready: u32, acquiring: u32, phase: &str) -> PoolStatus {
        PoolStatus {
            name: "llama".into(),
            model: "llama-3.1-8b".into(),
            min_replicas: 2,
            max_replicas: 4,
            desired: 2,
            ready,
            acquiring,
            phase: phase.into(),
            ..PoolStatus::default()
        }
    }

    fn lease(dseq: &str, state: &str) -> LeaseView {
        LeaseView {
            pool: "llama".into(),
            endpoint_id: format!("lease-{dseq}"),
            dseq: dseq.into(),
            provider: "akash1prov".into(),
            region: "us-west".into(),
            usd_per_hour: 2.65,
            state: state.into(),
            age_s: 1.0,
            runway_s: None,
            note: None,
            health: "healthy".into(),
            cordoned: false,
        }
    }

    fn status(pools: Vec<PoolStatus>, leases: Vec<LeaseView>) -> ControllerStatus {
        ControllerStatus {
            pools,
            leases,
            spend_usd_per_hour: 0.0,
            cordoned: Vec::new(),
        }
    }

    #[test]
    fn the_first_reading_names_every_pool() {
        let now = status(vec![pool(0, 2, "scaling")], vec![]);
        assert_eq!(
            changes(None, &now),
            ["pool llama (llama-3.1-8b): 0/2 ready, 2 acquiring"]
        );
        assert!(!at_minimum(&now));
    }

    #[test]
    fn an_unchanged_pool_prints_nothing_and_a_new_ready_lease_prints_once() {
        let a = status(vec![pool(0, 2, "scaling")], vec![lease("7", "leased")]);
        assert!(changes(Some(&a), &a).is_empty());
        let b = status(vec![pool(1, 1, "scaling")], vec![lease("7", "ready")]);
        assert_eq!(
            changes(Some(&a), &b),
            [
                "pool llama (llama-3.1-8b): 1/2 ready, 1 acquiring",
                "lease 7 ready for pool llama: provider akash1prov in us-west, $2.65/h",
            ]
        );
        let c = status(vec![pool(1, 1, "scaling")], vec![lease("7", "ready")]);
        assert!(changes(Some(&b), &c).is_empty());
    }

    #[test]
    fn backing_off_says_why_and_when() {
        let mut p = pool(0, 0, "backing_off");
        p.retry_in_s = Some(4.0);
        p.last_error = Some("no bids within the bid window".into());
        let now = status(vec![p], vec![]);
        assert_eq!(
            changes(None, &now),
            [
                "pool llama (llama-3.1-8b): 0/2 ready, 0 acquiring, backing off (next try in 4s): no bids within the bid window"
            ]
        );
    }

    #[test]
    fn at_minimum_needs_every_pool() {
        let mut other = pool(2, 0, "ok");
        other.name = "qwen".into();
        assert!(!at_minimum(&status(
            vec![pool(1, 1, "scaling"), other.clone()],
            vec![]
        )));
        assert!(at_minimum(&status(vec![pool(2, 0, "ok"), other], vec![])));
    }
}
