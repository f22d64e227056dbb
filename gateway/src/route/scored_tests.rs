//! Scenario tests of the scoring selector: geography, slowdowns, overload, errors, residency.

use std::sync::Arc;
use std::time::Duration;

use leasegate_fleet::Kind;
use tokio::time::Instant;

use super::*;
use crate::fleet::testing::{at, ep, view_with};
use crate::fleet::{FailureReason, FleetView, Outcome};

const FRANKFURT: (f64, f64) = (50.11, 8.68);
const SAN_FRANCISCO: (f64, f64) = (37.77, -122.42);
const TOKYO: (f64, f64) = (35.68, 139.69);

/// Two replicas per region in na-us-west, eu-central and as-east, plus a
/// US fallback and an EU fallback.
fn world() -> FleetView {
    let mut specs = Vec::new();
    for (code, lat, lon) in [
        ("na-us-west", 37.4, -122.1),
        ("eu-central", 50.1, 8.7),
        ("as-east", 35.7, 139.7),
    ] {
        for i in 0..2 {
            specs.push(at(
                ep(&format!("{code}-{i}"), Kind::Lease, &["m"]),
                code,
                lat,
                lon,
            ));
        }
    }
    specs.push(at(
        ep("fb-us", Kind::Fallback, &["m"]),
        "us-east-1",
        39.0,
        -77.5,
    ));
    specs.push(at(
        ep("fb-eu", Kind::Fallback, &["m"]),
        "eu-central",
        50.1,
        8.7,
    ));
    view_with(specs)
}

fn region_of_head(sel: &ScoreSelector, view: &FleetView, req: &RouteRequest<'_>) -> String {
    let state = view.current();
    sel.order(req, &state.candidates("m"))[0]
        .spec
        .region
        .code
        .clone()
}

fn from_frankfurt(sel: &ScoreSelector, view: &FleetView) -> String {
    region_of_head(sel, view, &client(FRANKFURT))
}

fn client(loc: (f64, f64)) -> RouteRequest<'static> {
    RouteRequest {
        client_location: Some(loc),
        ..RouteRequest::new("m")
    }
}

fn report_all(view: &FleetView, prefix: &str, outcome: Outcome, times: usize) {
    for h in view.current().endpoints() {
        if h.spec.id.starts_with(prefix) {
            for _ in 0..times {
                h.report(outcome);
            }
        }
    }
}

fn ttfb(ms: u64) -> Outcome {
    Outcome::Success {
        ttfb: Duration::from_millis(ms),
    }
}

#[test]
fn clients_from_each_continent_land_in_their_own_region() {
    let view = world();
    let sel = ScoreSelector::default();
    for _ in 0..50 {
        assert_eq!(from_frankfurt(&sel, &view), "eu-central");
        assert_eq!(
            region_of_head(&sel, &view, &client(SAN_FRANCISCO)),
            "na-us-west"
        );
        assert_eq!(region_of_head(&sel, &view, &client(TOKYO)), "as-east");
    }
    let state = view.current();
    let order = sel.order(&client(FRANKFURT), &state.candidates("m"));
    let regions: Vec<&str> = order.iter().map(|e| e.spec.region.code.as_str()).collect();
    assert_eq!(&regions[..2], ["eu-central", "eu-central"]);
    let ids: Vec<&str> = order.iter().map(|e| e.spec.id.as_str()).collect();
    assert_eq!(
        &ids[6..],
        ["fb-us", "fb-eu"],
        "fallbacks last, in config order"
    );
}

#[tokio::test(start_paused = true)]
async fn traffic_leaves_a_slowed_region_and_comes_back_when_it_recovers() {
    let view = world();
    let sel = ScoreSelector::default();
    report_all(&view, "", ttfb(200), 5);
    assert_eq!(from_frankfurt(&sel, &view), "eu-central");
    report_all(&view, "eu-central", ttfb(2000), 20);
    let away = from_frankfurt(&sel, &view);
    assert_ne!(away, "eu-central");
    // The EU replicas get no traffic now, so their measurement ages; the
    // others keep being measured at 200 ms.
    for _ in 0..12 {
        tokio::time::advance(Duration::from_secs(10)).await;
        report_all(&view, "na-us-west", ttfb(200), 1);
        report_all(&view, "as-east", ttfb(200), 1);
    }
    assert_eq!(from_frankfurt(&sel, &view), "eu-central");
    // A recovered answer restores the preference at once.
    report_all(&view, "eu-central", ttfb(200), 20);
    assert_eq!(from_frankfurt(&sel, &view), "eu-central");
}

#[test]
fn an_overloaded_region_spills_to_the_next() {
    let view = world();
    let sel = ScoreSelector::default();
    let state = view.current();
    let mut guards = Vec::new();
    for h in state
        .endpoints()
        .iter()
        .filter(|h| h.spec.id.starts_with("eu-central"))
    {
        guards.extend((0..h.spec.max_concurrency * 2).map(|_| h.begin()));
    }
    assert_ne!(from_frankfurt(&sel, &view), "eu-central");
    drop(guards);
    assert_eq!(from_frankfurt(&sel, &view), "eu-central");
}

#[test]
fn a_scraped_queue_counts_like_load() {
    let view = world();
    let sel = ScoreSelector::default();
    for h in view.current().endpoints() {
        if h.spec.id.starts_with("eu-central") {
            h.set_queue_depth(Some(8));
        }
    }
    assert_ne!(from_frankfurt(&sel, &view), "eu-central");
}

#[test]
fn a_replica_failing_half_its_requests_loses_most_of_its_traffic() {
    let view = world();
    let sel = ScoreSelector::default();
    let state = view.current();
    let bad = state.endpoint("eu-central-0").unwrap();
    for i in 0..20 {
        bad.report(if i % 2 == 0 {
            ttfb(100)
        } else {
            Outcome::Failure {
                reason: FailureReason::Status(500),
            }
        });
    }
    assert!(bad.is_available(), "alternating failures never eject");
    let mut rng = fastrand::Rng::with_seed(3);
    let now = Instant::now();
    let picks = (0..1000)
        .filter(|_| {
            sel.order_with(&mut rng, now, &client(FRANKFURT), &state.candidates("m"))[0]
                .spec
                .id
                == "eu-central-0"
        })
        .count();
    assert!(picks < 100, "the failing replica still got {picks} of 1000");
}

#[test]
fn an_eu_pinned_request_never_leaves_the_eu() {
    let view = world();
    let sel = ScoreSelector::default();
    let eu = ["eu-central".to_string()];
    let pinned = RouteRequest {
        allowed_regions: Some(&eu),
        ..client(TOKYO)
    };
    let state = view.current();
    let order = sel.order(&pinned, &state.candidates("m"));
    let ids: Vec<&str> = order.iter().map(|e| e.spec.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "fb-eu");
    for h in state
        .endpoints()
        .iter()
        .filter(|h| h.spec.region.code == "eu-central")
    {
        for _ in 0..view.health_config().consecutive_failures {
            h.report(Outcome::Failure {
                reason: FailureReason::Connect,
            });
        }
    }
    assert!(sel.order(&pinned, &state.candidates("m")).is_empty());
    assert_eq!(PowerOfTwo.order(&pinned, &state.candidates("m")).len(), 0);
}

#[test]
fn without_a_location_every_region_is_near() {
    let view = world();
    let sel = ScoreSelector::default();
    let state = view.current();
    let rows = sel.explain(
        Instant::now(),
        &RouteRequest::new("m"),
        &state.candidates("m"),
    );
    assert!(
        rows.iter()
            .take(6)
            .all(|r| r.tier == Tier::Near && r.terms.rtt_ms == 0.0)
    );
}

#[test]
fn affinity_sticks_within_the_near_tier_until_the_target_is_overloaded() {
    let view = world();
    let sel = ScoreSelector::default().with_affinity(1.0);
    let state = view.current();
    let c = state.candidates("m");
    for key in ["conversation-42", "user-7", "abc"] {
        let req = RouteRequest {
            affinity_key: Some(key),
            ..client(FRANKFURT)
        };
        // The key's endpoint: its first ring node in the client's near region.
        let target = Arc::clone(
            c.affinity_walk(key)
                .find(|e| e.spec.region.code == "eu-central")
                .unwrap(),
        );
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&sel.order(&req, &c)[0], &target), "{key}");
        }
        let full: Vec<_> = (0..target.spec.max_concurrency)
            .map(|_| target.begin())
            .collect();
        let head = Arc::clone(&sel.order(&req, &c)[0]);
        assert!(!Arc::ptr_eq(&head, &target), "overloaded: scoring decides");
        assert_eq!(head.spec.region.code, "eu-central");
        drop(full);
    }
}

#[test]
fn an_ejected_affinity_target_hands_its_keys_to_its_ring_successor() {
    let specs = (0..6)
        .map(|i| {
            at(
                ep(&format!("eu-{i}"), Kind::Lease, &["m"]),
                "eu-central",
                50.1,
                8.7,
            )
        })
        .collect();
    let view = view_with(specs);
    let sel = ScoreSelector::default().with_affinity(1.0);
    let state = view.current();
    let c = state.candidates("m");
    let req = RouteRequest {
        affinity_key: Some("conversation-9"),
        ..client(FRANKFURT)
    };
    let owner = Arc::clone(c.affinity_target("conversation-9").unwrap());
    assert!(Arc::ptr_eq(&sel.order(&req, &c)[0], &owner));
    for _ in 0..view.health_config().consecutive_failures {
        owner.report(Outcome::Failure {
            reason: FailureReason::Connect,
        });
    }
    let successor = Arc::clone(
        c.affinity_walk("conversation-9")
            .find(|e| !Arc::ptr_eq(e, &owner))
            .unwrap(),
    );
    // Scoring alone would spread these over five equal replicas.
    for _ in 0..20 {
        assert!(Arc::ptr_eq(&sel.order(&req, &c)[0], &successor));
    }
}

#[test]
fn explain_lists_every_candidate_with_terms_and_reasons() {
    let view = world();
    let sel = ScoreSelector::default();
    let state = view.current();
    let ejected = state.endpoint("as-east-1").unwrap();
    for _ in 0..view.health_config().consecutive_failures {
        ejected.report(Outcome::Failure {
            reason: FailureReason::Timeout,
        });
    }
    let rows = sel.explain(Instant::now(), &client(FRANKFURT), &state.candidates("m"));
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0].region, "eu-central");
    assert_eq!(rows[0].tier, Tier::Near);
    assert!(
        rows[2].tier == Tier::Far && rows[2].terms.rtt_ms > 100.0,
        "{:?}",
        rows[2]
    );
    let tiers: Vec<Tier> = rows.iter().map(|r| r.tier).collect();
    assert!(tiers.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(rows[5].endpoint, "fb-us");
    assert_eq!(rows[6].endpoint, "fb-eu");
    assert_eq!(rows[7].endpoint, "as-east-1");
    assert_eq!(rows[7].excluded, Some("ejected"));
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert!(json["terms"]["rtt_ms"].is_number() && json["score_ms"].is_number());
}

#[test]
fn bad_coordinates_never_poison_the_ranking() {
    let mut specs = vec![
        at(ep("nan", Kind::Lease, &["m"]), "x", f64::NAN, 8.0),
        at(ep("inf", Kind::Lease, &["m"]), "y", 10.0, f64::INFINITY),
        at(ep("ok", Kind::Lease, &["m"]), "eu-central", 50.1, 8.7),
    ];
    specs[0].price_per_hour_usd = f64::NAN;
    specs[1].max_concurrency = 0;
    let view = view_with(specs);
    let state = view.current();
    let sel = ScoreSelector::default();
    let req = client((f64::NAN, 500.0));
    assert_eq!(sel.order(&req, &state.candidates("m")).len(), 3);
    let rows = sel.explain(Instant::now(), &client(FRANKFURT), &state.candidates("m"));
    assert!(rows.iter().all(|r| r.score_ms.is_finite()), "{rows:?}");
}
