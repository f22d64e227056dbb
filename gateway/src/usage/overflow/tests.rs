//! Overflow decision tests: each trigger, each mode, the cap and the policy.

use super::*;

const SLO: PoolSlo = PoolSlo {
    mode: Mode::LeasesFirst,
    slo_ttft: Duration::from_secs(2),
    time_per_output_token: Duration::from_millis(100),
};

fn lease(in_flight: u32, queue: u32, ttft_ms: u64) -> LeaseLoad {
    LeaseLoad {
        in_flight,
        max_concurrency: 4,
        queue_depth: queue,
        ttft_ewma: Some(Duration::from_millis(ttft_ms)),
    }
}

const FB: FallbackLoad = FallbackLoad {
    in_flight: 0,
    max_concurrency: 2,
    ttft_ewma: None,
};

fn decide_with(
    mode: Mode,
    leases: &[LeaseLoad],
    fallbacks: &[FallbackLoad],
    spend_ok: bool,
) -> Decision {
    let pool = PoolSlo { mode, ..SLO };
    decide(&Inputs {
        pool: &pool,
        leases,
        fallbacks,
        policy: None,
        spend_ok,
    })
}

#[test]
fn leases_first_stays_on_a_lease_within_the_slo() {
    let d = decide_with(Mode::LeasesFirst, &[lease(1, 5, 500)], &[FB], true);
    // 5 × 100 ms + 500 ms = 1 s ≤ 2 s.
    assert_eq!(
        (d.first, d.reason, d.fallback_allowed),
        (Tier::Leases, Reason::WithinSlo, true)
    );
    assert!(!d.is_overflow());
}

#[test]
fn leases_first_spills_on_each_trigger() {
    let cases = [
        (vec![], Reason::NoReplicaReady),
        (vec![lease(4, 0, 100), lease(5, 0, 100)], Reason::AtCapacity),
        // 16 × 100 ms + 500 ms = 2.1 s > 2 s on the best lease.
        (
            vec![lease(1, 16, 500), lease(1, 30, 100)],
            Reason::SloBreach,
        ),
    ];
    for (leases, reason) in cases {
        let d = decide_with(Mode::LeasesFirst, &leases, &[FB], true);
        assert_eq!((d.first, d.reason), (Tier::Fallback, reason), "{leases:?}");
        assert!(d.is_overflow() && !d.capped);
    }
}

#[test]
fn the_best_lease_decides_not_the_worst() {
    let d = decide_with(
        Mode::LeasesFirst,
        &[lease(4, 0, 0), lease(1, 40, 0), lease(0, 1, 1950)],
        &[FB],
        true,
    );
    assert_eq!(d.reason, Reason::SloBreach);
    let d = decide_with(
        Mode::LeasesFirst,
        &[lease(4, 0, 0), lease(0, 1, 1800)],
        &[FB],
        true,
    );
    assert_eq!(d.reason, Reason::WithinSlo);
}

#[test]
fn at_the_cap_overflow_stops_and_only_an_unservable_request_is_blocked() {
    let d = decide_with(Mode::LeasesFirst, &[lease(1, 30, 0)], &[FB], false);
    assert_eq!(
        (d.first, d.reason, d.capped, d.fallback_allowed),
        (Tier::Leases, Reason::SloBreach, true, false)
    );
    assert!(!d.blocked(), "a slow lease still serves");
    let d = decide_with(Mode::LeasesFirst, &[lease(4, 0, 0)], &[FB], false);
    assert!(d.blocked() && d.reason == Reason::AtCapacity);
    assert!(decide_with(Mode::LeasesFirst, &[], &[FB], false).blocked());
}

#[test]
fn fallback_first_carries_the_baseline_and_bursts_onto_leases() {
    let d = decide_with(Mode::FallbackFirst, &[lease(0, 0, 0)], &[FB], true);
    assert_eq!((d.first, d.reason), (Tier::Fallback, Reason::Baseline));
    let full = FallbackLoad { in_flight: 2, ..FB };
    let d = decide_with(Mode::FallbackFirst, &[lease(0, 0, 0)], &[full], true);
    assert_eq!(
        (d.first, d.reason, d.fallback_allowed),
        (Tier::Leases, Reason::Burst, true)
    );
    let slow = FallbackLoad {
        ttft_ewma: Some(Duration::from_secs(3)),
        ..FB
    };
    assert_eq!(
        decide_with(Mode::FallbackFirst, &[lease(0, 0, 0)], &[slow], true).reason,
        Reason::Burst
    );
    let d = decide_with(Mode::FallbackFirst, &[lease(0, 0, 0)], &[FB], false);
    assert_eq!((d.first, d.capped), (Tier::Leases, true));
}

#[test]
fn cheapest_within_slo_pays_for_a_fallback_only_when_it_helps() {
    let d = decide_with(Mode::CheapestWithinSlo, &[lease(1, 0, 100)], &[FB], true);
    assert_eq!((d.first, d.reason), (Tier::Leases, Reason::WithinSlo));
    let d = decide_with(Mode::CheapestWithinSlo, &[lease(1, 30, 100)], &[FB], true);
    assert_eq!((d.first, d.reason), (Tier::Fallback, Reason::SloBreach));
    let slow = FallbackLoad {
        ttft_ewma: Some(Duration::from_secs(5)),
        ..FB
    };
    let d = decide_with(Mode::CheapestWithinSlo, &[lease(1, 30, 100)], &[slow], true);
    assert_eq!((d.first, d.reason), (Tier::Leases, Reason::SloBreach));
    let d = decide_with(Mode::CheapestWithinSlo, &[], &[slow], true);
    assert_eq!(
        (d.first, d.reason),
        (Tier::Fallback, Reason::NoReplicaReady)
    );
}

#[test]
fn policy_rules_win_over_the_mode() {
    let pool = SLO;
    let mut i = Inputs {
        pool: &pool,
        leases: &[lease(0, 0, 0)],
        fallbacks: &[FB],
        policy: Some(PolicyRule::PreferFallback),
        spend_ok: true,
    };
    assert_eq!(decide(&i).reason, Reason::Policy);
    assert_eq!(decide(&i).first, Tier::Fallback);
    i.policy = Some(PolicyRule::NoFallback);
    i.leases = &[];
    let d = decide(&i);
    assert_eq!(
        (d.first, d.fallback_allowed, d.reason),
        (Tier::Leases, false, Reason::NoReplicaReady)
    );
}

#[test]
fn no_fallback_configured_means_leases_whatever_the_load() {
    let d = decide_with(Mode::LeasesFirst, &[lease(4, 0, 0)], &[], true);
    assert_eq!(
        (d.first, d.reason, d.capped),
        (Tier::Leases, Reason::AtCapacity, false)
    );
    assert!(!d.blocked());
}

#[test]
fn arrange_follows_the_decision() {
    let order = vec!["l1", "l2", "f-dear", "f-cheap"];
    let is_fb = |s: &&str| s.starts_with('f');
    let price = |s: &&str| if s.ends_with("cheap") { 1.0 } else { 9.0 };
    let spill = Decision {
        first: Tier::Fallback,
        fallback_allowed: true,
        reason: Reason::SloBreach,
        capped: false,
    };
    assert_eq!(
        arrange(order.clone(), &spill, Mode::LeasesFirst, is_fb, price),
        ["f-dear", "f-cheap", "l1", "l2"]
    );
    assert_eq!(
        arrange(order.clone(), &spill, Mode::CheapestWithinSlo, is_fb, price),
        ["f-cheap", "f-dear", "l1", "l2"]
    );
    let capped = Decision {
        first: Tier::Leases,
        fallback_allowed: false,
        reason: Reason::SloBreach,
        capped: true,
    };
    assert_eq!(
        arrange(order.clone(), &capped, Mode::LeasesFirst, is_fb, price),
        ["l1", "l2"]
    );
    let normal = Decision {
        first: Tier::Leases,
        fallback_allowed: true,
        reason: Reason::WithinSlo,
        capped: false,
    };
    assert_eq!(
        arrange(order, &normal, Mode::LeasesFirst, is_fb, price),
        ["l1", "l2", "f-dear", "f-cheap"]
    );
}
