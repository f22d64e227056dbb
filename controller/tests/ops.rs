//! Operator actions on the sim market, judged by the market's own ledger:
//! a cordoned provider gets no new lease, a force-replace is make-before-
//! break and buys exactly one lease, and a crash mid-replace leaves no orphan.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::scenario::{self, Books};
use crate::support::*;
use leasegate_controller::market::Market;
use leasegate_controller::market::sim::SimMarket;
use leasegate_controller::ops::OpsError;
use leasegate_controller::reconcile::Failpoint;
use leasegate_controller::store::{Cordon, SqliteStore, Store};
use leasegate_controller::{Controller, Deps};

fn provider_of(market: &SimMarket, dseq: &str) -> String {
    let ledger = market.ledger();
    let d = ledger.by_dseq(dseq).unwrap();
    d.lease.as_ref().unwrap().provider.clone()
}

#[tokio::test(start_paused = true)]
async fn a_cordoned_provider_gets_no_new_lease_and_keeps_the_one_it_has() {
    // Who this market's first acquisition goes to, with no cordon.
    let (market, mem) = sim(41, |_| {});
    let (h, rx) = start(&market, &mem, vec![pool(1, 1)]);
    assert!(until_ready(&rx, 1).await);
    let held = market.ledger().active_leases()[0].dseq.clone();
    let favourite = provider_of(&market, &held);
    let c = h.cordon(&favourite, Some("maintenance".into())).unwrap();
    assert_eq!(
        (c.provider.as_str(), c.reason.as_deref()),
        (favourite.as_str(), Some("maintenance"))
    );
    // Its lease stays: nothing is replaced or bought.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ledger = market.ledger();
    assert_eq!(ledger.deployments.len(), 1, "{ledger:#?}");
    assert!(ledger.by_dseq(&held).unwrap().has_active_lease());
    let st = h.status().unwrap();
    assert!(st.leases[0].cordoned, "{st:?}");
    assert_eq!(st.cordoned[0].provider, favourite);
    assert!(matches!(h.cordon("", None), Err(OpsError::BadProvider)));
    h.shutdown().await;

    // A fresh market of the same seed, on a state file that already holds
    // the cordon (as one written before a restart would).
    let (market, mem) = sim(41, |_| {});
    let path = store_path("cordon");
    SqliteStore::open(&path)
        .unwrap()
        .cordon(&Cordon {
            provider: favourite.clone(),
            reason: None,
            since_ms: 1,
        })
        .unwrap();
    let (h, rx) = Controller::start(
        config(vec![pool(3, 3)]),
        market.clone(),
        open_store(&path),
        Arc::new(mem.clone()),
    );
    assert!(until_ready(&rx, 3).await, "{:?}", h.status());
    let ledger = market.ledger();
    assert_eq!(ledger.active_leases().len(), 3, "{ledger:#?}");
    for d in ledger.active_leases() {
        assert_ne!(provider_of(&market, &d.dseq), favourite, "{ledger:#?}");
        // It did bid, within the pool's price: only the cordon kept it out.
        let bids = market
            .bids(&leasegate_controller::market::Dseq(d.dseq.clone()))
            .await
            .unwrap();
        let theirs = bids.iter().find(|b| b.id.provider == favourite);
        assert!(
            theirs.is_some_and(|b| b.price.usd_per_hour().unwrap() <= 3.0),
            "{bids:#?}"
        );
    }
    // Lifted: the store forgets it, and the status says so.
    assert!(h.uncordon(&favourite).unwrap());
    assert!(!h.uncordon(&favourite).unwrap());
    assert!(h.cordons().unwrap().is_empty());
    assert!(h.status().unwrap().leases.iter().all(|l| !l.cordoned));
    h.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn force_replace_is_make_before_break_and_buys_exactly_one_lease() {
    let (market, mem) = sim(42, |_| {});
    let (h, rx) = start(&market, &mem, vec![pool(1, 1)]);
    let seen = scenario::record(rx.clone());
    assert!(until_ready(&rx, 1).await);
    let old = market.ledger().active_leases()[0].dseq.clone();
    let old_id = format!("lease-{old}");
    let old_provider = provider_of(&market, &old);
    assert!(matches!(
        h.replace("lease-999999"),
        Err(OpsError::UnknownLease(_))
    ));
    let r = h.replace(&old_id).unwrap();
    assert_eq!(
        (r.dseq.as_str(), r.state, r.already),
        (old.as_str(), "replacing", false)
    );
    // Asking again (by dseq this time) while it is under way adds nothing.
    assert!(h.replace(&old).unwrap().already);
    let replaced = wait_until(Duration::from_secs(60), || {
        let l = market.ledger();
        l.by_dseq(&old).unwrap().closed_at.is_some() && l.active_leases().len() == 1
    })
    .await;
    assert!(replaced, "{:?}\n{:#?}", h.status(), market.ledger());
    // Settle, then judge: one new lease, bought before the old one closed.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ledger = market.ledger();
    assert_eq!(ledger.deployments.len(), 2, "{ledger:#?}");
    assert_eq!(ledger.max_leases_per_intent(), 1);
    let new = ledger.active_leases()[0].clone();
    let gone = ledger.by_dseq(&old).unwrap().lease.clone().unwrap();
    let new_lease = new.lease.clone().unwrap();
    assert!(
        new_lease.created_at < gone.closed_at.unwrap(),
        "{ledger:#?}"
    );
    assert_ne!(new_lease.provider, old_provider);
    assert_eq!(gone.close_reason, None, "closed by us: {ledger:#?}");
    let snaps = seen.lock().clone();
    scenario::assert_make_before_break(&snaps, &old_id, &format!("lease-{}", new.dseq));
    // Never more than the one extra lease in the fleet at any time.
    assert!(snaps.iter().all(|s| s.endpoints.len() <= 2), "{snaps:#?}");
    // The old lease is gone: replacing it again is refused.
    assert!(matches!(h.replace(&old), Err(OpsError::UnknownLease(_))));
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_replace_leaves_one_lease_and_no_orphan() {
    let (market, mem) = sim(43, |_| {});
    let path = store_path("replace-crash");
    let cfg = config(vec![pool(1, 1)]);
    let run = |failpoint| {
        let mut deps = Deps::new(market.clone(), open_store(&path), Arc::new(mem.clone()));
        deps.failpoint = failpoint;
        Controller::start_with(cfg.clone(), deps)
    };
    let (h, rx) = run(None);
    assert!(until_ready(&rx, 1).await);
    let old = market.ledger().active_leases()[0].dseq.clone();
    h.replace(&old).unwrap();
    // Dies before any reconcile saw the request: only the store knows.
    drop(h);
    // The restart takes the request up and dies again once the
    // replacement's lease exists but the store does not know it.
    let (h, _rx) = run(Some(Failpoint::AfterLease));
    assert!(
        wait_until(Duration::from_secs(60), || h.crashed()).await,
        "{:#?}",
        market.ledger()
    );
    drop(h);
    assert_eq!(
        market.ledger().active_leases().len(),
        2,
        "{:#?}",
        market.ledger()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (h, rx) = run(None);
    let done = wait_until(Duration::from_secs(120), || {
        let l = market.ledger();
        l.by_dseq(&old).unwrap().closed_at.is_some()
            && l.active_leases().len() == 1
            && rx.borrow().ready().count() == 1
    })
    .await;
    assert!(done, "{:?}\n{:#?}", h.status(), market.ledger());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ledger = market.ledger();
    scenario::assert_books(&ledger, &rx.borrow(), 1, "after a crash mid-replace");
    // The lease made before the crash was adopted, not bought again.
    assert_eq!(ledger.deployments.len(), 2, "{ledger:#?}");
    assert!(Books::orphans(&ledger).is_empty());
    h.shutdown().await;
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}
