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
}

fn gen_endpoint() -> impl proptest::strategy::Strategy<Value = Gen> {
    use proptest::prelude::*;
    (
        prop_oneof![Just(Kind::Lease), Just(Kind::Static), Just(Kind::Fallback)],
        any::<bool>(),
        any::<bool>(),
        0u32..5,
        0usize..6,
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.9),
    )
        .prop_map(
            |(kind, draining, serves_m, max_concurrency, in_flight, ejected, probe_ok)| Gen {
                kind,
                draining,
                serves_m,
                max_concurrency,
                in_flight,
                ejected,
                probe_ok,
            },
        )
}

/// Builds the fleet, applies the live state, and keeps the guards alive.
fn build(gens: &[Gen]) -> (crate::fleet::FleetView, Vec<crate::fleet::InFlight>) {
    let specs = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut e = ep(
                &format!("e{i}"),
                g.kind,
                if g.serves_m { &["m", "n"] } else { &["n"] },
            );
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
    for (h, g) in state.endpoints().iter().zip(gens) {
        guards.extend((0..g.in_flight).map(|_| h.begin()));
        if g.ejected {
            for _ in 0..view.health_config().consecutive_failures {
                h.report(crate::fleet::Outcome::Failure {
                    reason: crate::fleet::FailureReason::Connect,
                });
            }
        }
        h.set_probe_ok(g.probe_ok);
    }
    (view, guards)
}

fn eligible(h: &EndpointHandle, now: Instant) -> bool {
    h.spec.state == leasegate_fleet::State::Ready && h.spec.serves("m") && h.is_available_at(now)
}

proptest::proptest! {
    #[test]
    fn p2c_returns_exactly_the_eligible_endpoints_fallbacks_last(
        gens in proptest::collection::vec(gen_endpoint(), 0..12),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let (view, _guards) = build(&gens);
        let state = view.current();
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(seed);
        let order = PowerOfTwo.order_with(&mut rng, now, &state.candidates("m"));
        let got = ids(&order);
        let mut want: Vec<String> = state
            .endpoints()
            .iter()
            .filter(|h| eligible(h, now))
            .map(|h| h.spec.id.clone())
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        want.sort();
        proptest::prop_assert_eq!(sorted, want, "every eligible endpoint exactly once");
        let first_fallback = order.iter().position(|e| e.spec.kind == Kind::Fallback);
        if let Some(i) = first_fallback {
            proptest::prop_assert!(order[i..].iter().all(|e| e.spec.kind == Kind::Fallback));
        }
        let primary = &order[..first_fallback.unwrap_or(order.len())];
        for w in primary.windows(2).skip(1) {
            proptest::prop_assert!(w[0].load() <= w[1].load(), "the rest is ordered by load");
        }
        if let Some(head) = primary.first() {
            // The head won a duel, so it is never the uniquely most loaded of several.
            let max = primary.iter().map(|e| e.load()).fold(0.0, f64::max);
            let strictly_max = primary.iter().filter(|e| e.load() == max).count() == 1;
            proptest::prop_assert!(primary.len() < 2 || !(strictly_max && head.load() == max));
        }
        // Unknown models and empty fleets never panic and give nothing.
        proptest::prop_assert!(PowerOfTwo.order(&RouteRequest::new("zz"), &state.candidates("zz")).is_empty());
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
        let order = PowerOfTwo.order_with(&mut rng, now, &c);
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
        .map(|_| PowerOfTwo.order_with(&mut rng, now, &c)[0].begin())
        .collect();
    let loads: Vec<u32> = c.primary.iter().map(|e| e.in_flight()).collect();
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    // With two choices the gap to the mean stays O(log log n) whatever the
    // number of requests; random single choice would drift by ~sqrt(200) ≈ 14.
    assert!(max - min <= 4, "{loads:?}");
    drop(guards);
    assert!(c.primary.iter().all(|e| e.in_flight() == 0));
}
