//! Tests of snapshot swaps and live-state carry-over.

use std::sync::Arc;
use std::time::Duration;

use leasegate_fleet::{Kind, State};

use super::testing::{ep, snap, view_with};
use super::*;
use crate::health::BreakerState;

#[test]
fn candidates_split_fallbacks_and_skip_draining() {
    let mut draining = ep("d", Kind::Lease, &["m"]);
    draining.state = State::Draining;
    let view = view_with(vec![
        ep("f", Kind::Fallback, &["m"]),
        ep("a", Kind::Lease, &["m", "n"]),
        draining,
        ep("s", Kind::Static, &["m"]),
    ]);
    let state = view.current();
    let c = state.candidates("m");
    let ids = |s: &[Arc<EndpointHandle>]| s.iter().map(|e| e.spec.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(c.primary), ["a", "s"]);
    assert_eq!(ids(c.fallback), ["f"]);
    assert!(state.candidates("x").is_empty());
    assert_eq!(state.models(), ["m", "n"]);
    assert!(
        state.endpoint("d").is_some(),
        "draining endpoints stay addressable"
    );
    assert_eq!(state.version(), 1);
}

#[test]
fn fallback_only_models_are_not_listed_but_are_served() {
    let view = view_with(vec![ep("f", Kind::Fallback, &["gpt"])]);
    let state = view.current();
    assert!(state.models().is_empty());
    assert!(state.serves("gpt"));
    assert!(state.has_ready());
}

#[tokio::test(start_paused = true)]
async fn live_state_follows_ids_across_swaps_and_old_states_stay_intact() {
    let view = view_with(vec![
        ep("a", Kind::Lease, &["m"]),
        ep("b", Kind::Lease, &["m"]),
    ]);
    let before = view.current();
    let a = Arc::clone(before.endpoint("a").unwrap());
    let guard = a.begin();
    for _ in 0..view.health_config().consecutive_failures {
        a.report(Outcome::Failure {
            reason: FailureReason::Connect,
        });
    }
    view.publish(snap(
        2,
        vec![ep("a", Kind::Lease, &["m"]), ep("c", Kind::Lease, &["m"])],
    ));
    let after = view.current();
    let a2 = after.endpoint("a").unwrap();
    assert_eq!(a2.in_flight(), 1, "in-flight carried over");
    assert!(matches!(a2.breaker_state(), BreakerState::Ejected { .. }));
    assert!(after.endpoint("b").is_none());
    assert_eq!(after.endpoint("c").unwrap().in_flight(), 0);
    // The request that started on version 1 still sees version 1.
    assert_eq!(before.version(), 1);
    assert!(before.endpoint("b").is_some());
    drop(guard);
    assert_eq!(
        a2.in_flight(),
        0,
        "guard from the old state decrements the shared counter"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
}

#[test]
fn older_snapshot_is_ignored() {
    let view = view_with(vec![ep("a", Kind::Lease, &["m"])]);
    view.publish(snap(5, vec![ep("b", Kind::Lease, &["m"])]));
    view.publish(snap(3, vec![ep("c", Kind::Lease, &["m"])]));
    assert_eq!(view.current().version(), 5);
    assert!(view.current().endpoint("b").is_some());
}

#[test]
fn zero_capacity_means_one_and_load_stays_finite() {
    let mut e = ep("a", Kind::Lease, &["m"]);
    e.max_concurrency = 0;
    let view = view_with(vec![e]);
    let h = Arc::clone(view.current().endpoint("a").unwrap());
    assert_eq!(h.load(), 0.0);
    let _g = h.begin();
    assert_eq!(h.load(), 1.0);
}

#[tokio::test]
async fn subscribe_from_follows_the_channel() {
    let view = FleetView::new(crate::health::HealthConfig::default());
    let (tx, rx) = tokio::sync::watch::channel(snap(1, vec![ep("a", Kind::Lease, &["m"])]));
    let task = view.subscribe_from(rx);
    tx.send(snap(2, vec![ep("b", Kind::Lease, &["m"])]))
        .unwrap();
    drop(tx);
    task.await.unwrap();
    assert_eq!(view.current().version(), 2);
    assert!(view.current().endpoint("b").is_some());
}

#[tokio::test(start_paused = true)]
async fn try_begin_admits_one_trial_when_half_open() {
    let view = view_with(vec![ep("a", Kind::Lease, &["m"])]);
    let a = Arc::clone(view.current().endpoint("a").unwrap());
    for _ in 0..view.health_config().consecutive_failures {
        a.report(Outcome::Failure {
            reason: FailureReason::Status(502),
        });
    }
    assert!(a.try_begin().is_none());
    tokio::time::advance(view.health_config().base_ejection_time).await;
    let trial = a.try_begin().unwrap();
    assert!(trial.is_trial());
    assert!(a.try_begin().is_none());
    drop(trial);
    let trial = a.try_begin().unwrap();
    trial.report(Outcome::Success {
        ttfb: Duration::from_millis(3),
    });
    assert!(a.is_available());
    assert!(!a.try_begin().unwrap().is_trial());
}
