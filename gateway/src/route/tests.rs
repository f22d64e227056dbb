//! Selector tests: ordering rules and property tests.

use std::sync::Arc;

use leasegate_fleet::Kind;
use tokio::time::Instant;

use super::*;
use crate::fleet::testing::{ep, view_with};

fn ids(order: &[Arc<EndpointHandle>]) -> Vec<String> {
    order.iter().map(|e| e.spec.id.clone()).collect()
}

#[test]
fn p2c_orders_primary_by_load_then_fallbacks_in_config_order() {
    let view = view_with(vec![
        ep("f2", Kind::Fallback, &["m"]),
        ep("a", Kind::Lease, &["m"]),
        ep("b", Kind::Lease, &["m"]),
        ep("f1", Kind::Fallback, &["m"]),
    ]);
    let state = view.current();
    let b = state.endpoint("b").unwrap();
    let _g = b.begin();
    let order = PowerOfTwo.order(&RouteRequest::new("m"), &state.candidates("m"));
    assert_eq!(ids(&order), ["a", "b", "f2", "f1"]);
}

const REGIONS: [(&str, f64, f64); 4] = [
    ("na-us-west", 37.4, -122.1),
    ("eu-central", 50.1, 8.7),
    ("as-east", 35.7, 139.7),
    // Odd coordinates a broken snapshot could carry.
    ("nowhere", f64::NAN, 1e9),
];

/// One generated endpoint: how it is described and what live state it has.
#[derive(Clone, Debug)]
struct Gen {
    kind: Kind,
    draining: bool,
    serves_m: bool,
    max_concurrency: u32,
    in_flight: usize,
    ejected: bool,
    probe_ok: bool,
    region: usize,
    ttfb_ms: Option<u64>,
    errors: usize,
    queue: Option<u32>,
}

fn gen_endpoint() -> impl proptest::strategy::Strategy<Value = Gen> {
    use proptest::prelude::*;
    let spec = (
        prop_oneof![Just(Kind::Lease), Just(Kind::Static), Just(Kind::Fallback)],
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.8),
        0u32..5,
        0usize..6,
    );
    let live = (
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.9),
        0usize..REGIONS.len(),
        proptest::option::of(0u64..5000),
        0usize..4,
        proptest::option::of(0u32..50),
    );
    (spec, live).prop_map(
        |(
            (kind, draining, serves_m, max_concurrency, in_flight),
            (ejected, probe_ok, region, ttfb_ms, errors, queue),
        )| Gen {
            kind,
            draining,
            serves_m,
            max_concurrency,
            in_flight,
            ejected,
            probe_ok,
            region,
            ttfb_ms,
            errors,
            queue,
        },
    )
}

/// Builds the fleet, applies the live state, and keeps the guards alive.
fn build(gens: &[Gen]) -> (crate::fleet::FleetView, Vec<crate::fleet::InFlight>) {
    use crate::fleet::{FailureReason, Outcome};
    let specs = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let models: &[&str] = if g.serves_m { &["m", "n"] } else { &["n"] };
            let (code, lat, lon) = REGIONS[g.region];
            let mut e =
                crate::fleet::testing::at(ep(&format!("e{i}"), g.kind, models), code, lat, lon);
            e.max_concurrency = g.max_concurrency;
            if g.draining {
                e.state = leasegate_fleet::State::Draining;
            }
            e
        })
        .collect();
    let view = view_with(specs);
    let state = view.current();
    let mut guards = Vec::new();
    let fail = Outcome::Failure {
        reason: FailureReason::Connect,
    };
    for (h, g) in state.endpoints().iter().zip(gens) {
        guards.extend((0..g.in_flight).map(|_| h.begin()));
        if let Some(ms) = g.ttfb_ms {
            h.report(Outcome::Success {
                ttfb: std::time::Duration::from_millis(ms),
            });
        }
        let failures = if g.ejected {
            view.health_config().consecutive_failures as usize
        } else {
            g.errors
                .min(view.health_config().consecutive_failures as usize - 1)
        };
        (0..failures).for_each(|_| h.report(fail));
        h.set_probe_ok(g.probe_ok);
        h.set_queue_depth(g.queue);
    }
    (view, guards)
}

fn eligible(h: &EndpointHandle, req: &RouteRequest<'_>, now: Instant) -> bool {
    h.spec.state == leasegate_fleet::State::Ready
        && h.spec.serves("m")
        && h.is_available_at(now)
        && permitted(req, h)
}

/// Checks the invariants every selector's order must keep.
fn check_order(
    state: &crate::fleet::FleetState,
    req: &RouteRequest<'_>,
    now: Instant,
    order: &[Arc<EndpointHandle>],
) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut got = ids(order);
    got.sort();
    let mut want: Vec<String> = state
        .endpoints()
        .iter()
        .filter(|h| eligible(h, req, now))
        .map(|h| h.spec.id.clone())
        .collect();
    want.sort();
    proptest::prop_assert_eq!(
        got,
        want,
        "every eligible endpoint exactly once, nothing else"
    );
    if let Some(i) = order.iter().position(|e| e.spec.kind == Kind::Fallback) {
        proptest::prop_assert!(order[i..].iter().all(|e| e.spec.kind == Kind::Fallback));
    }
    Ok(())
}

/// Client location, allowed regions and affinity key of a generated request.
type GenRequest = (Option<(f64, f64)>, Option<Vec<String>>, Option<String>);

fn gen_request() -> impl proptest::strategy::Strategy<Value = GenRequest> {
    use proptest::prelude::*;
    let location = proptest::option::of(prop_oneof![
        (-90.0f64..90.0, -180.0f64..180.0),
        Just((f64::NAN, 0.0)),
        Just((1e300, -1e300)),
    ]);
    let allowed = proptest::option::of(proptest::sample::subsequence(
        REGIONS.iter().map(|r| r.0.to_string()).collect::<Vec<_>>(),
        0..=REGIONS.len(),
    ));
    let key = proptest::option::of("[a-z]{0,8}");
    (location, allowed, key)
}

proptest::proptest! {
    #[test]
    fn selectors_return_exactly_the_eligible_endpoints_fallbacks_last(
        gens in proptest::collection::vec(gen_endpoint(), 0..14),
        (location, allowed, key) in gen_request(),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let (view, _guards) = build(&gens);
        let state = view.current();
        let now = Instant::now();
        let req = RouteRequest {
            client_location: location,
            allowed_regions: allowed.as_deref(),
            affinity_key: key.as_deref(),
            ..RouteRequest::new("m")
        };
        let c = state.candidates("m");
        let mut rng = fastrand::Rng::with_seed(seed);

        let p2c = PowerOfTwo.order_with(&mut rng, now, &req, &c);
        check_order(&state, &req, now, &p2c)?;
        let primary = &p2c[..p2c.iter().position(|e| e.spec.kind == Kind::Fallback).unwrap_or(p2c.len())];
        for w in primary.windows(2).skip(1) {
            proptest::prop_assert!(w[0].load() <= w[1].load(), "the rest is ordered by load");
        }
        if let Some(head) = primary.first() {
            // The head won a duel, so it is never the uniquely most loaded of several.
            let max = primary.iter().map(|e| e.load()).fold(0.0, f64::max);
            let strictly_max = primary.iter().filter(|e| e.load() == max).count() == 1;
            proptest::prop_assert!(primary.len() < 2 || !(strictly_max && head.load() == max));
        }

        let scored = ScoreSelector::default().with_affinity(0.8);
        check_order(&state, &req, now, &scored.order_with(&mut rng, now, &req, &c))?;
        let rows = scored.explain(now, &req, &c);
        proptest::prop_assert_eq!(rows.len(), c.primary.len() + c.fallback.len());
        proptest::prop_assert!(rows.iter().all(|r| r.score_ms.is_finite() && r.score_ms >= 0.0));
        proptest::prop_assert!(rows.windows(2).all(|w| w[0].tier <= w[1].tier));

        // Unknown models never panic and give nothing.
        let none = state.candidates("zz");
        proptest::prop_assert!(PowerOfTwo.order(&RouteRequest::new("zz"), &none).is_empty());
        proptest::prop_assert!(scored.order(&RouteRequest::new("zz"), &none).is_empty());
    }
}

#[test]
fn p2c_first_pick_is_uniform_among_equal_candidates() {
    const N: usize = 10;
    const PICKS: usize = 100_000;
    let view = view_with(
        (0..N)
            .map(|i| ep(&format!("e{i}"), Kind::Lease, &["m"]))
            .collect(),
    );
    let state = view.current();
    let c = state.candidates("m");
    let mut rng = fastrand::Rng::with_seed(7);
    let now = Instant::now();
    let mut counts = [0usize; N];
    for _ in 0..PICKS {
        let order = PowerOfTwo.order_with(&mut rng, now, &RouteRequest::new("m"), &c);
        let i: usize = order[0].spec.id[1..].parse().unwrap();
        counts[i] += 1;
    }
    // Each count is Binomial(100000, 0.1): sd ≈ 95. A ±5% band is over five
    // sd wide, loose enough for any seed yet far below a skew worth having.
    for (i, &n) in counts.iter().enumerate() {
        assert!(
            (9_500..=10_500).contains(&n),
            "endpoint {i} got {n}: {counts:?}"
        );
    }
}

#[test]
fn p2c_keeps_held_load_balanced_among_equal_candidates() {
    const N: usize = 10;
    let mut specs: Vec<_> = (0..N)
        .map(|i| ep(&format!("e{i}"), Kind::Lease, &["m"]))
        .collect();
    for e in &mut specs {
        e.max_concurrency = 1000;
    }
    let view = view_with(specs);
    let state = view.current();
    let c = state.candidates("m");
    let mut rng = fastrand::Rng::with_seed(11);
    let now = Instant::now();
    let guards: Vec<_> = (0..2000)
        .map(|_| PowerOfTwo.order_with(&mut rng, now, &RouteRequest::new("m"), &c)[0].begin())
        .collect();
    let loads: Vec<u32> = c.primary.iter().map(|e| e.in_flight()).collect();
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    // With two choices the gap to the mean stays O(log log n) whatever the
    // number of requests; random single choice would drift by ~sqrt(200) ≈ 14.
    assert!(max - min <= 4, "{loads:?}");
    drop(guards);
    assert!(c.primary.iter().all(|e| e.in_flight() == 0));
}
