//! The controller's pool, replacement and crash-safety scenarios (see
//! `sim_controller.rs` and `crash.rs`) against the fake Console API through
//! the real `akash` market. Every verdict comes from the fake's ledger, the
//! market's own books. Real time: the fake and the replicas are on sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::akash_support::scenario::{self, Harness};
use crate::akash_support::*;
use leasegate_controller::reconcile::Failpoint;
use leasegate_controller::{Controller, ControllerHandle};
use leasegate_fake_console::{Control, FakeConsole, Ledger};
use leasegate_fleet::{Credential, Snapshot};
use tokio::sync::watch;

const WANTED: usize = 2;

/// A fake Console and a controller with one pool on it, on a fresh state file.
async fn start(
    name: &str,
    min: u32,
    max: u32,
) -> (
    FakeConsole,
    std::path::PathBuf,
    ControllerHandle,
    watch::Receiver<Arc<Snapshot>>,
) {
    let fake = FakeConsole::start(fake_config()).await.unwrap();
    let path = store_path(name);
    let (h, rx) = Controller::start_with(
        controller_config(vec![controller_pool(min, max)]),
        akash_deps(&fake, open_store(&path)),
    );
    (fake, path, h, rx)
}

fn remove_store(path: &std::path::Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

/// The shared verdict plus what only the fake shows: every deployment
/// carries this controller's tag as its group name.
fn assert_books(ledger: &Ledger, snap: &Snapshot, n: usize, what: &str) {
    scenario::assert_books(ledger, snap, n, what);
    for d in ledger.active_leases() {
        assert!(d.group_name.starts_with("lg-8-ctl-test-"), "{d:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_a_pool_reaches_its_minimum_and_is_published_with_keys() {
    let (fake, path, h, rx) = start("akash-min", 2, 3).await;
    let ok = wait_real(Duration::from_secs(30), || rx.borrow().ready().count() == 2).await;
    assert!(
        ok,
        "status: {:?}\n{:#?}",
        h.status().unwrap(),
        fake.ledger()
    );
    let ledger = fake.ledger();
    assert_books(&ledger, &rx.borrow(), 2, "minimum");
    let snap = rx.borrow().clone();
    for e in &snap.endpoints {
        assert!(e.url.starts_with("http://127.0.0.1:"), "{e:?}");
        assert!(
            matches!(&e.credential, Some(Credential::Key { key }) if key.expose().starts_with("sk-lg-"))
        );
        assert!(
            e.price_per_hour_usd > 0.5 && e.price_per_hour_usd <= 3.0,
            "{e:?}"
        );
        assert!(e.provider.is_some());
    }
    // Steady state: nothing more is bought.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.ledger().deployments.len(), ledger.deployments.len());
    let st = h.status().unwrap();
    assert_eq!(st.pools[0].ready, 2);
    assert_eq!(st.pools[0].phase, "ok");
    h.shutdown().await;
    remove_store(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_after_a_provider_failure_the_replacement_is_ready_before_the_old_lease_closes() {
    let (fake, path, h, rx) = start("akash-replace", 1, 1).await;
    let seen = scenario::record(rx.clone());
    assert!(wait_real(Duration::from_secs(30), || rx.borrow().ready().count() == 1).await);
    let old = fake.ledger().active_leases()[0].clone();
    let old_id = format!("lease-{}", old.dseq);
    let provider = old.leases[0].provider.clone();
    // The provider's containers die; the lease stays active, as on Akash
    // for the minutes before the provider closes it `unstable`.
    fake.control(Control::ReplicaDown {
        dseq: old.dseq.clone(),
    })
    .unwrap();
    let replaced = wait_real(Duration::from_secs(30), || {
        let l = fake.ledger();
        l.by_dseq(&old.dseq).unwrap().closed_ms.is_some() && l.active_leases().len() == 1
    })
    .await;
    assert!(
        replaced,
        "status: {:?}\n{:#?}",
        h.status().unwrap(),
        fake.ledger()
    );
    let ledger = fake.ledger();
    let gone = ledger.by_dseq(&old.dseq).unwrap();
    let new = ledger.active_leases()[0];
    assert_ne!(new.leases[0].provider, provider);
    let closed = gone.leases[0].closed_ms.unwrap();
    assert!(new.leases[0].created_ms < closed, "{ledger:#?}");
    // Closed by us (make-before-break), not by the provider.
    assert_eq!(gone.leases[0].close_reason.as_deref(), Some("owner"));
    // The gateway saw the new endpoint ready while the old one was listed.
    let new_id = format!("lease-{}", new.dseq);
    assert!(
        wait_real(Duration::from_secs(5), || rx
            .borrow()
            .ready()
            .any(|e| e.id == new_id))
        .await
    );
    scenario::assert_make_before_break(&seen.lock().clone(), &old_id, &new_id);
    assert_books(&fake.ledger(), &rx.borrow(), 1, "after replacement");
    h.shutdown().await;
    remove_store(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_a_lease_closed_unstable_is_replaced_and_its_deployment_closed() {
    let (fake, path, h, rx) = start("akash-unstable", 1, 1).await;
    assert!(wait_real(Duration::from_secs(30), || rx.borrow().ready().count() == 1).await);
    let old = fake.ledger().active_leases()[0].clone();
    fake.control(Control::CloseLease {
        dseq: old.dseq.clone(),
        reason: "unstable".into(),
    })
    .unwrap();
    let old_id = format!("lease-{}", old.dseq);
    let ok = wait_real(Duration::from_secs(30), || {
        let l = fake.ledger();
        let snap = rx.borrow();
        l.active_leases().len() == 1
            && l.orphans().is_empty()
            && snap.ready().count() == 1
            && snap.endpoints.iter().all(|e| e.id != old_id)
    })
    .await;
    assert!(
        ok,
        "status: {:?}\n{:#?}",
        h.status().unwrap(),
        fake.ledger()
    );
    let ledger = fake.ledger();
    let gone = ledger.by_dseq(&old.dseq).unwrap();
    assert_eq!(gone.leases[0].close_reason.as_deref(), Some("unstable"));
    // The deployment (and its escrow) did not outlive its lease.
    assert!(gone.closed_ms.is_some(), "{ledger:#?}");
    assert_books(&ledger, &rx.borrow(), 1, "after unstable");
    h.shutdown().await;
    remove_store(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_a_short_status_null_episode_is_ridden_out_and_a_long_one_replaces() {
    let (fake, path, h, rx) = start("akash-null", 1, 1).await;
    assert!(wait_real(Duration::from_secs(30), || rx.borrow().ready().count() == 1).await);
    let first = fake.ledger().active_leases()[0].dseq.clone();
    let null = |on: bool| {
        fake.control(Control::Unreachable {
            dseq: first.clone(),
            on,
        })
        .unwrap()
    };
    // Fewer than `unreachable_checks` (3 at 300 ms) null answers: nothing happens.
    null(true);
    tokio::time::sleep(Duration::from_millis(150)).await;
    null(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.ledger().deployments.len(), 1, "{:#?}", fake.ledger());
    // `status: null` for good: replaced even though the replica still serves.
    null(true);
    let ok = wait_real(Duration::from_secs(30), || {
        let l = fake.ledger();
        l.by_dseq(&first).unwrap().closed_ms.is_some()
            && l.active_leases().len() == 1
            && rx.borrow().ready().count() == 1
    })
    .await;
    assert!(
        ok,
        "status: {:?}\n{:#?}",
        h.status().unwrap(),
        fake.ledger()
    );
    assert_books(&fake.ledger(), &rx.borrow(), 1, "after status null");
    h.shutdown().await;
    remove_store(&path);
}

/// `support::scenario::crash_at` (shared with the sim's `crash.rs`) on
/// the akash market against the fake Console.
async fn crash_at(point: Failpoint) {
    let fake = Arc::new(FakeConsole::start(fake_config()).await.unwrap());
    let path = store_path(&format!("akash-crash-{point:?}"));
    let cfg = controller_config(vec![controller_pool(WANTED as u32, WANTED as u32)]);
    let harness = {
        let (f, path) = (fake.clone(), path.clone());
        let books = fake.clone();
        Harness {
            start: Box::new(move |failpoint| {
                let mut deps = akash_deps(&f, open_store(&path));
                deps.failpoint = failpoint;
                Controller::start_with(cfg.clone(), deps)
            }),
            books: Box::new(move || books.ledger()),
            downtime: Duration::from_millis(500),
            settle: Duration::from_secs(2),
            patience: Duration::from_secs(20),
        }
    };
    let (h, rx) = scenario::crash_at(&harness, point, WANTED).await;
    assert_books(&fake.ledger(), &rx.borrow(), WANTED, &format!("{point:?}"));
    h.shutdown().await;
    remove_store(&path);
}

macro_rules! crash_tests {
    ($($name:ident => $point:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crash_at(Failpoint::$point).await;
        }
    )*};
}

crash_tests! {
    fake_crash_after_the_intent => AfterIntent,
    fake_crash_after_the_create => AfterCreate,
    fake_crash_after_the_bids => AfterBids,
    fake_crash_after_the_lease => AfterLease,
    fake_crash_before_the_publish => BeforePublish,
}
