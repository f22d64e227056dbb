//! Tests of the limiter: exactness under concurrency, windows, settlement, budgets and reloads.

use std::{
    num::NonZeroU64,
    sync::atomic::{AtomicU64, Ordering},
};

use super::*;
use crate::policy::keys::{ClientKey, KeyDigest};

fn key(name: &str, rpm: Option<u64>, tpm: Option<u64>, budget: Option<f64>) -> ClientKey {
    let mut k = ClientKey::unlimited(name.into(), KeyDigest::of(name));
    k.limits = KeyLimits {
        requests_per_minute: rpm.and_then(NonZeroU64::new),
        tokens_per_minute: tpm.and_then(NonZeroU64::new),
        budget_usd_per_day: budget,
    };
    k
}

/// 2026-11-21T12:00:00Z
const NOON: u64 = 1_795_262_400_000;

fn limiter(keys: &[&ClientKey]) -> Limiter {
    Limiter::with_clock(
        Clock::anchored(NOON),
        keys.iter().map(|k| k.name.as_str()),
        None,
    )
}

/// 32 clients hammer one key at once, far more often than it allows.
async fn hammer(limiter: Arc<Limiter>, key: Arc<ClientKey>, tokens: u64) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (limiter, key, admitted) = (limiter.clone(), key.clone(), admitted.clone());
            tokio::spawn(async move {
                for _ in 0..40 {
                    if limiter.admit(&key, tokens).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_minute_hold_exactly_under_32_concurrent_clients() {
    let k = Arc::new(key("a", Some(50), None, None));
    let l = Arc::new(limiter(&[&k]));
    // 1,280 attempts within well under a minute: exactly the limit passes.
    assert_eq!(hammer(l.clone(), k.clone(), 1).await, 50);
    assert_eq!(l.usage("a").unwrap().requests_last_minute, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_per_minute_hold_exactly_under_32_concurrent_clients() {
    let k = Arc::new(key("a", None, Some(1000), None));
    let l = Arc::new(limiter(&[&k]));
    // 1000 / 30 = 33 reservations fit, the 34th would pass the limit.
    assert_eq!(hammer(l.clone(), k, 30).await, 33);
    assert_eq!(l.usage("a").unwrap().tokens_last_minute, 990);
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_says_when_to_retry_and_fits_then() {
    let k = key("a", Some(2), None, None);
    let l = limiter(&[&k]);
    l.admit(&k, 1).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let t = l.admit(&k, 1).unwrap();
    assert_eq!(
        t.rates.requests,
        Some(Rate {
            limit: 2,
            remaining: 0,
            // Second 10's request is counted until 71 s.
            reset: Duration::from_secs(71 - 10),
        })
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let e = l.admit(&k, 1).unwrap_err();
    assert_eq!(e.kind, LimitKind::Requests);
    assert_eq!((e.limit, e.remaining), (2, 0));
    // The first request (second 0) stops counting at 61 s.
    assert_eq!(e.retry_after, Duration::from_secs(61 - 15));
    tokio::time::advance(e.retry_after - Duration::from_millis(1)).await;
    assert!(l.admit(&k, 1).is_err());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(l.admit(&k, 1).is_ok());
}

#[tokio::test(start_paused = true)]
async fn settling_gives_back_an_overestimate_and_charges_an_underestimate() {
    let k = key("a", None, Some(1000), None);
    let l = limiter(&[&k]);
    let t = l.admit(&k, 900).unwrap();
    assert!(l.admit(&k, 200).is_err());
    t.settle(Some(100), 0.0);
    assert_eq!(l.usage("a").unwrap().tokens_last_minute, 100);
    let t = l.admit(&k, 200).unwrap();
    t.settle(Some(850), 0.0);
    let e = l.admit(&k, 100).unwrap_err();
    assert_eq!(
        (e.kind, e.remaining, e.requested),
        (LimitKind::Tokens, 50, 100)
    );
    // Unknown usage keeps the estimate.
    tokio::time::advance(Duration::from_secs(61)).await;
    l.admit(&k, 400).unwrap().settle(None, 0.0);
    assert_eq!(l.usage("a").unwrap().tokens_last_minute, 400);
}

#[tokio::test(start_paused = true)]
async fn refusing_on_tokens_does_not_count_the_request() {
    let k = key("a", Some(10), Some(100), None);
    let l = limiter(&[&k]);
    for _ in 0..5 {
        assert_eq!(l.admit(&k, 500).unwrap_err().kind, LimitKind::Tokens);
    }
    assert_eq!(l.usage("a").unwrap().requests_last_minute, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_token_limit_is_refused_as_too_large() {
    let k = key("a", None, Some(100), None);
    let l = limiter(&[&k]);
    let e = l.admit(&k, 101).unwrap_err();
    assert_eq!(e.kind, LimitKind::Tokens);
    assert!(e.to_string().contains("too large"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_refuses_until_the_utc_day_rolls_over() {
    let k = key("a", Some(1000), None, Some(1.0));
    let l = limiter(&[&k]);
    l.admit(&k, 10).unwrap().settle(Some(10), 0.6);
    // 0.6 < 1.0: still admitted, and this one takes it past the budget.
    l.admit(&k, 10).unwrap().settle(Some(10), 0.6);
    let e = l.admit(&k, 10).unwrap_err();
    assert_eq!(e.kind, LimitKind::Budget);
    assert_eq!((e.limit, e.remaining), (100, 0));
    // Noon: twelve hours to midnight UTC.
    assert_eq!(e.retry_after, Duration::from_secs(12 * 3600));
    assert_eq!(e.reset, e.retry_after);
    // The rate headers still ride along on the budget refusal.
    assert_eq!(e.rates.requests.map(|r| r.remaining), Some(998));
    assert!(e.to_string().contains("$1.00"), "{e}");
    tokio::time::advance(e.retry_after - Duration::from_secs(1)).await;
    assert_eq!(l.admit(&k, 10).unwrap_err().kind, LimitKind::Budget);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(l.admit(&k, 10).is_ok());
    assert_eq!(l.usage("a").unwrap().spent_usd_today, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_reload_carries_counters_of_persisting_keys_and_applies_new_limits() {
    let a = key("a", Some(3), None, None);
    let b = key("b", Some(3), None, None);
    let old = limiter(&[&a, &b]);
    for _ in 0..3 {
        old.admit(&a, 1).unwrap();
        old.admit(&b, 1).unwrap();
    }
    // "b" is removed, then re-added: it starts fresh. "a" keeps its count,
    // and its raised limit applies to it at once.
    let a2 = key("a", Some(5), None, None);
    let mid = Limiter::new(["a"], Some(&old));
    let new = Limiter::new(["a", "b"], Some(&mid));
    assert_eq!(new.usage("a").unwrap().requests_last_minute, 3);
    assert_eq!(new.usage("b").unwrap().requests_last_minute, 0);
    assert!(new.admit(&a2, 1).is_ok());
    assert!(new.admit(&a2, 1).is_ok());
    assert!(new.admit(&a2, 1).is_err());
    // The old table shares the state: in-flight requests settle into it.
    assert_eq!(old.usage("a").unwrap().requests_last_minute, 5);
}

#[tokio::test(start_paused = true)]
async fn keys_without_limits_are_always_admitted_but_still_counted() {
    let k = key("free", None, None, None);
    let l = limiter(&[&k]);
    for _ in 0..1000 {
        let t = l.admit(&k, 5).unwrap();
        assert_eq!(t.rates, Rates::default());
    }
    assert_eq!(l.usage("free").unwrap().requests_last_minute, 1000);
}

#[test]
fn the_estimate_is_a_quarter_of_the_body_plus_the_completion_budget() {
    assert_eq!(estimate_tokens(400, Some(50)), 150);
    assert_eq!(estimate_tokens(401, Some(0)), 101);
    assert_eq!(estimate_tokens(0, None), DEFAULT_MAX_TOKENS);
}

#[tokio::test(start_paused = true)]
async fn refusals_are_counted_by_limit_and_survive_a_reload() {
    let rpm = key("rpm", Some(2), None, None);
    let tpm = key("tpm", None, Some(50), None);
    let budget = key("budget", None, None, Some(0.01));
    let l = limiter(&[&rpm, &tpm, &budget]);
    for _ in 0..5 {
        let _ = l.admit(&rpm, 1);
    }
    assert!(l.admit(&tpm, 40).is_ok());
    assert_eq!(l.admit(&tpm, 40).unwrap_err().kind, LimitKind::Tokens);
    assert_eq!(l.admit(&tpm, 60).unwrap_err().kind, LimitKind::Tokens);
    l.admit(&budget, 1).unwrap().settle(Some(1), 0.02);
    assert_eq!(l.admit(&budget, 1).unwrap_err().kind, LimitKind::Budget);
    assert!(l.admit(&rpm, 1).is_err());
    let t = l.admit(&tpm, 1).unwrap();
    t.count_spend_cap();

    let hits = |l: &Limiter, n: &str| l.hits(n).unwrap();
    assert_eq!(
        hits(&l, "rpm"),
        LimitHits {
            requests_per_minute: 4,
            ..LimitHits::default()
        }
    );
    assert_eq!(hits(&l, "tpm").tokens_per_minute, 2);
    assert_eq!(hits(&l, "tpm").spend_cap, 1);
    assert_eq!(hits(&l, "budget").budget_per_day, 1);
    assert_eq!(hits(&l, "budget").total(), 1);
    let reloaded = Limiter::new(["rpm"], Some(&l));
    assert_eq!(hits(&reloaded, "rpm").requests_per_minute, 4);
    assert_eq!(reloaded.hits("tpm"), None);
}
