//! Crash safety: the controller dies at each step of an acquisition and
//! restarts on the same SQLite file. The sim market's ledger must then show
//! exactly the wanted leases, no orphan and no intent with two leases (the
//! scenario is `support::scenario::crash_at`, shared with the fake Console
//! in `akash_controller.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::scenario::{self, Harness};
use crate::support::*;
use leasegate_controller::market::{Market, Tag};
use leasegate_controller::reconcile::Failpoint;
use leasegate_controller::{Controller, Deps};

const WANTED: usize = 2;

async fn crash_at(point: Failpoint, seed: u64) {
    let (market, mem) = sim(seed, |_| {});
    let path = store_path(&format!("crash-{point:?}"));
    let cfg = config(vec![pool(WANTED as u32, WANTED as u32)]);
    let harness = {
        let (market, mem, path) = (market.clone(), mem.clone(), path.clone());
        let m = market.clone();
        Harness {
            start: Box::new(move |failpoint| {
                let mut deps = Deps::new(market.clone(), open_store(&path), Arc::new(mem.clone()));
                deps.failpoint = failpoint;
                Controller::start_with(cfg.clone(), deps)
            }),
            books: Box::new(move || m.ledger()),
            downtime: Duration::from_secs(5),
            settle: Duration::from_secs(10),
            patience: Duration::from_secs(60),
        }
    };
    let (h, _rx) = scenario::crash_at(&harness, point, WANTED).await;
    assert_eq!(mem.running(), WANTED);
    h.shutdown().await;
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

#[tokio::test(start_paused = true)]
async fn crash_after_the_intent() {
    crash_at(Failpoint::AfterIntent, 21).await;
}

#[tokio::test(start_paused = true)]
async fn crash_after_the_create() {
    crash_at(Failpoint::AfterCreate, 22).await;
}

#[tokio::test(start_paused = true)]
async fn crash_after_the_bids() {
    crash_at(Failpoint::AfterBids, 23).await;
}

#[tokio::test(start_paused = true)]
async fn crash_after_the_lease() {
    crash_at(Failpoint::AfterLease, 24).await;
}

#[tokio::test(start_paused = true)]
async fn crash_before_the_publish() {
    crash_at(Failpoint::BeforePublish, 25).await;
}

#[tokio::test(start_paused = true)]
async fn startup_closes_our_orphans_and_leaves_other_controllers_alone() {
    let (market, mem) = sim(26, |_| {});
    let sdl = "args: [\"--served-model-name\", \"llama-3-8b\"]\n";
    let ours = Tag {
        controller_id: "ctl-test".into(),
        intent_id: "forgotten".into(),
    };
    let theirs = Tag {
        controller_id: "someone-else".into(),
        intent_id: "x".into(),
    };
    let orphan = market.create_deployment(sdl, &ours).await.unwrap();
    let foreign = market.create_deployment(sdl, &theirs).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bid = market.bids(&orphan.dseq).await.unwrap().remove(0);
    market
        .create_lease(&bid.id, &orphan.manifest)
        .await
        .unwrap();
    let path = store_path("orphans");
    let (h, rx) = Controller::start(
        config(vec![pool(1, 1)]),
        market.clone(),
        open_store(&path),
        Arc::new(mem.clone()),
    );
    assert!(wait_until(Duration::from_secs(60), || rx.borrow().ready().count() == 1).await);
    let ledger = market.ledger();
    assert!(
        ledger.by_dseq(&orphan.dseq.0).unwrap().closed_at.is_some(),
        "{ledger:#?}"
    );
    assert!(
        ledger.by_dseq(&foreign.dseq.0).unwrap().closed_at.is_none(),
        "{ledger:#?}"
    );
    h.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn reconcile_is_idempotent_once_the_pool_is_in_shape() {
    use leasegate_controller::demand::Signals;
    use leasegate_controller::reconcile::{Context, reconcile};
    let (market, mem) = sim(27, |_| {});
    let path = store_path("idempotent");
    let cfg = config(vec![pool(2, 2)]);
    let (h, rx) = Controller::start(
        cfg.clone(),
        market.clone(),
        open_store(&path),
        Arc::new(mem.clone()),
    );
    assert!(until_ready(&rx, 2).await);
    h.shutdown().await;
    let before = market.ledger();
    let ctx = Context::new(
        "ctl-test".into(),
        market.clone(),
        open_store(&path),
        Arc::new(mem.clone()),
        Signals::default(),
        leasegate_controller::sdl::builtin(),
    );
    for _ in 0..2 {
        let action = reconcile(&cfg.pools[0], &ctx).await.unwrap();
        assert!(action.requeue_after.is_some(), "explicit requeue");
        assert_eq!(market.ledger(), before);
    }
    let _ = std::fs::remove_file(&path);
}
