//! The controller against the seeded sim market, on paused time. Every
//! verdict comes from the market's own ledger (and the published fleet),
//! never from the controller's view of itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::scenario;
use crate::support::*;
use leasegate_controller::demand::{Demand, EndpointReport};
use leasegate_controller::market::LeaseState;
use leasegate_fleet::{Credential, State};

#[tokio::test(start_paused = true)]
async fn a_pool_reaches_its_minimum_and_is_published_with_keys() {
    let (market, mem) = sim(11, |_| {});
    let (h, rx) = start(&market, &mem, vec![pool(2, 3)]);
    let ok = wait_until(Duration::from_secs(60), || rx.borrow().ready().count() == 2).await;
    assert!(ok, "status: {:?}", h.status().unwrap());
    let ledger = market.ledger();
    assert_eq!(ledger.active_leases().len(), 2, "{ledger:#?}");
    assert!(ledger.idle_deployments().is_empty(), "{ledger:#?}");
    assert_eq!(ledger.max_leases_per_intent(), 1);
    let snap = rx.borrow().clone();
    for e in &snap.endpoints {
        assert!(e.url.starts_with("mem://"));
        assert!(
            matches!(&e.credential, Some(Credential::Key { key }) if key.expose().starts_with("sk-lg-"))
        );
        assert!(e.price_per_hour_usd > 1.5 && e.price_per_hour_usd <= 3.0);
        assert!(e.provider.is_some());
    }
    // Steady state: nothing more is bought.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(market.ledger().deployments.len(), ledger.deployments.len());
    let st = h.status().unwrap();
    assert_eq!(st.pools[0].ready, 2);
    assert_eq!(st.pools[0].phase, "ok");
    assert!(st.spend_usd_per_hour > 3.0);
    assert!(
        !serde_json::to_string(&st).unwrap().contains("sk-lg-"),
        "status must not show keys"
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_provider_failure_the_replacement_is_ready_before_the_old_lease_closes() {
    let (market, mem) = sim(12, |c| c.unstable_after = Duration::from_secs(120));
    let (h, rx) = start(&market, &mem, vec![pool(1, 1)]);
    let seen = scenario::record(rx.clone());
    assert!(until_ready(&rx, 1).await);
    let old = market.ledger().active_leases()[0].clone();
    let old_id = format!("lease-{}", old.dseq);
    let provider = old.lease.as_ref().unwrap().provider.clone();
    market.kill_provider(&provider);
    let replaced = wait_until(Duration::from_secs(90), || {
        let l = market.ledger();
        l.by_dseq(&old.dseq).unwrap().closed_at.is_some() && l.active_leases().len() == 1
    })
    .await;
    assert!(replaced, "status: {:?}", h.status().unwrap());
    let ledger = market.ledger();
    let gone = ledger.by_dseq(&old.dseq).unwrap();
    let new = ledger.active_leases()[0];
    assert_ne!(new.lease.as_ref().unwrap().provider, provider);
    let closed = gone.lease.as_ref().unwrap().closed_at.unwrap();
    assert!(
        new.lease.as_ref().unwrap().created_at < closed,
        "{ledger:#?}"
    );
    // Closed by us (make-before-break), not by the provider's `unstable`.
    assert_eq!(
        gone.lease.as_ref().unwrap().close_reason,
        None,
        "{ledger:#?}"
    );
    // The gateway saw the new endpoint ready while the old one was still listed.
    let new_id = format!("lease-{}", new.dseq);
    scenario::assert_make_before_break(&seen.lock().clone(), &old_id, &new_id);
    assert_eq!(market.ledger().max_leases_per_intent(), 1);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn low_escrow_is_topped_up_before_the_lease_runs_dry() {
    // $0.5 lasts about 11 minutes at $2.65/h; the threshold is 30 minutes.
    let (market, mem) = sim(13, |c| c.initial_deposit_usd = 0.5);
    let mut p = pool(1, 1);
    p.check_interval = Duration::from_secs(10);
    let (h, rx) = start(&market, &mem, vec![p]);
    assert!(until_ready(&rx, 1).await);
    let dseq = market.ledger().active_leases()[0].dseq.clone();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let ledger = market.ledger();
    let d = ledger.by_dseq(&dseq).unwrap();
    assert_eq!(
        d.lease.as_ref().unwrap().state,
        LeaseState::Active,
        "{d:#?}"
    );
    assert!(d.deposits_usd > 5.0, "topped up: {d:#?}");
    assert!(
        ledger
            .deployments
            .iter()
            .all(|d| d.lease.as_ref().is_none_or(|l| l.close_reason.is_none()))
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_no_bids_the_pool_backs_off_says_why_and_recovers() {
    let (market, mem) = sim(14, |_| {});
    market.set_no_bids(true);
    let (h, rx) = start(&market, &mem, vec![pool(1, 1)]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let st = h.status().unwrap();
    let p = &st.pools[0];
    assert_eq!(p.phase, "backing_off", "{st:?}");
    assert!(
        p.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no eligible bids"),
        "{st:?}"
    );
    assert!(p.consecutive_failures >= 3, "{st:?}");
    let ledger = market.ledger();
    // Backoff 1,2,4,8,8.. plus a 2 s window: a handful of tries, not 30.
    let tries = ledger.deployments.len();
    assert!(
        (3..=12).contains(&tries),
        "{tries} deployments: {ledger:#?}"
    );
    // Every failed try was cleaned up (at most the one in its window is open).
    assert!(ledger.idle_deployments().len() <= 1, "{ledger:#?}");
    market.set_no_bids(false);
    assert!(until_ready(&rx, 1).await);
    assert_eq!(h.status().unwrap().pools[0].phase, "ok");
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn scale_down_drains_before_closing_and_demand_scales_up() {
    let (market, mem) = sim(15, |_| {});
    let (h, rx) = start(&market, &mem, vec![pool(1, 3)]);
    let seen = scenario::record(rx.clone());
    let signals = h.signals();
    signals.report_demand(
        "llama-3-8b",
        "na-us-west",
        Demand {
            requests_per_sec: 25.0,
            ..Demand::default()
        },
    );
    assert!(until_ready(&rx, 3).await);
    let ledger = market.ledger();
    assert_eq!(ledger.active_leases().len(), 3);
    // The new leases went where the demand is.
    for d in ledger.active_leases() {
        let provider = &d.lease.as_ref().unwrap().provider;
        assert_eq!(
            market.provider_info(provider).unwrap().region,
            "na-us-west",
            "{ledger:#?}"
        );
    }
    let table = leasegate_controller::status::table(&h.status().unwrap());
    println!("{table}");
    assert!(
        table.contains("na-us-west") && table.contains("spend: $"),
        "{table}"
    );
    // Demand falls: one step down per cooldown.
    signals.report_demand("llama-3-8b", "na-us-west", Demand::default());
    assert!(
        wait_until(Duration::from_secs(30), || rx
            .borrow()
            .endpoints
            .iter()
            .any(|e| e.state == State::Draining))
        .await
    );
    let draining = rx
        .borrow()
        .endpoints
        .iter()
        .find(|e| e.state == State::Draining)
        .unwrap()
        .id
        .clone();
    let dseq = draining.trim_start_matches("lease-").to_string();
    // Still open while draining with requests in flight.
    signals.report_endpoint(
        &draining,
        EndpointReport {
            in_flight: 2,
            healthy: Some(true),
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(market.ledger().by_dseq(&dseq).unwrap().closed_at.is_none());
    // Idle: closed promptly.
    signals.report_endpoint(
        &draining,
        EndpointReport {
            in_flight: 0,
            healthy: Some(true),
        },
    );
    assert!(
        wait_until(Duration::from_secs(3), || market
            .ledger()
            .by_dseq(&dseq)
            .unwrap()
            .closed_at
            .is_some())
        .await
    );
    assert!(
        wait_until(Duration::from_secs(60), || market
            .ledger()
            .active_leases()
            .len()
            == 1)
        .await
    );
    // Every closed lease was published as draining first.
    let snaps = seen.lock().clone();
    for d in market
        .ledger()
        .deployments
        .iter()
        .filter(|d| d.closed_at.is_some())
    {
        let id = format!("lease-{}", d.dseq);
        assert!(
            snaps.iter().any(|s| s
                .endpoints
                .iter()
                .any(|e| e.id == id && e.state == State::Draining)),
            "{id} closed without draining"
        );
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_short_status_null_episode_is_ridden_out_and_a_long_one_replaces() {
    let (market, mem) = sim(16, |c| c.unstable_after = Duration::from_secs(600));
    let (h, rx) = start(&market, &mem, vec![pool(1, 1)]);
    assert!(until_ready(&rx, 1).await);
    let first = market.ledger().active_leases()[0].clone();
    let provider = first.lease.as_ref().unwrap().provider.clone();
    // Fewer than `unreachable_checks` (3 at 1 s) null answers: nothing happens.
    market.null_status(&provider, Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        market.ledger().deployments.len(),
        1,
        "{:#?}",
        market.ledger()
    );
    // Minutes of `status: null`: replaced even though the replica still serves.
    market.null_status(&provider, Duration::from_secs(300));
    assert!(
        wait_until(Duration::from_secs(60), || {
            market
                .ledger()
                .by_dseq(&first.dseq)
                .unwrap()
                .closed_at
                .is_some()
        })
        .await
    );
    assert!(wait_until(Duration::from_secs(30), || rx.borrow().ready().count() == 1).await);
    assert_eq!(market.ledger().active_leases().len(), 1);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn under_provider_chaos_the_pool_keeps_serving_and_leaves_no_orphans() {
    let (market, mem) = sim(17, |c| c.unstable_after = Duration::from_secs(30));
    let (h, rx) = start(&market, &mem, vec![pool(2, 2)]);
    assert!(until_ready(&rx, 2).await);
    // A provider holding a lease dies every 5 s, for 3 minutes.
    let chaos = market.spawn_chaos(Duration::from_secs(5), Duration::from_secs(20));
    let (mut samples, mut serving) = (0u32, 0u32);
    for _ in 0..360 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples += 1;
        let snap = rx.borrow().clone();
        // Serving: some endpoint the gateway may use really answers.
        let mut alive = false;
        for e in snap.ready() {
            use leasegate_controller::launcher::Prober;
            if mem.probe(&e.url, None, "llama-3-8b").await.is_ok() {
                alive = true;
            }
        }
        serving += u32::from(alive);
    }
    chaos.abort();
    let share = f64::from(serving) / f64::from(samples);
    println!(
        "serving in {serving}/{samples} samples ({:.1}%)",
        share * 100.0
    );
    assert!(share > 0.9, "serving only {share}");
    // Once the chaos stops, the pool settles with nothing paid for in vain.
    assert!(
        wait_until(Duration::from_secs(120), || {
            let l = market.ledger();
            l.active_leases().len() == 2 && l.idle_deployments().is_empty()
        })
        .await,
        "{:#?}",
        market.ledger()
    );
    let ledger = market.ledger();
    assert_eq!(ledger.max_leases_per_intent(), 1);
    assert!(
        ledger.deployments.len() > 4,
        "chaos did strike: {ledger:#?}"
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_runs_dry_is_replaced_and_its_deployment_cleaned_up() {
    // $0.05 lasts about a minute; a 1 s threshold means no top-up in time.
    let (market, mem) = sim(18, |c| c.initial_deposit_usd = 0.05);
    let mut p = pool(1, 1);
    p.runway_threshold = Duration::from_millis(1);
    let (h, rx) = start(&market, &mem, vec![p]);
    assert!(until_ready(&rx, 1).await);
    let first = market.ledger().active_leases()[0].dseq.clone();
    assert!(
        wait_until(Duration::from_secs(180), || {
            let l = market.ledger();
            let gone = l.by_dseq(&first).unwrap();
            gone.lease.as_ref().unwrap().state == LeaseState::InsufficientFunds
                && l.active_leases().iter().any(|d| d.dseq != first)
        })
        .await,
        "{:#?}",
        market.ledger()
    );
    let ledger = market.ledger();
    let gone = ledger.by_dseq(&first).unwrap();
    assert_eq!(
        gone.lease.as_ref().unwrap().close_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert!(
        rx.borrow()
            .endpoints
            .iter()
            .all(|e| e.id != format!("lease-{first}"))
    );
    h.shutdown().await;
}
