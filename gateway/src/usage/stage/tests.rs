//! Stage tests: the plan under the spend caps, on paused time.

use std::time::Duration;

use leasegate_fleet::Kind;

use super::*;
use crate::{
    fleet::{FleetView, InFlight, testing},
    route::{PowerOfTwo, RouteRequest, Selector},
};

fn setup(spend: &str) -> (Accounting, FleetView) {
    let toml = format!(
        "[spend]\n{spend}\n[[fallbacks]]\nid = \"fb\"\nurl = \"http://127.0.0.1:1\"\nmodels = {{ m = \"m\" }}\nprice_per_1m_input_usd = 1.0\n"
    );
    let config = Config::parse(&toml).unwrap();
    let view = testing::view_with(vec![
        testing::ep("lease", Kind::Lease, &["m"]),
        testing::ep("fb", Kind::Fallback, &["m"]),
    ]);
    (Accounting::new(&config, Vec::new()), view)
}

fn order(view: &FleetView) -> Vec<Arc<EndpointHandle>> {
    PowerOfTwo
        .order(&RouteRequest::new("m"), &view.current().candidates("m"))
        .to_vec()
}

/// Fills the lease (max_concurrency 4 in the test fleet).
fn fill(view: &FleetView) -> Vec<InFlight> {
    let lease = Arc::clone(view.current().endpoint("lease").unwrap());
    (0..4).map(|_| lease.begin()).collect()
}

async fn plan(acc: &Accounting, view: &FleetView) -> Result<Plan, ApiError> {
    let mut reason = None;
    acc.plan("m", order(view), None, || order(view), &mut reason)
        .await
}

#[tokio::test(start_paused = true)]
async fn lease_traffic_holds_no_cap_room_so_real_overflow_still_fits() {
    let (acc, view) = setup("fallback_hourly_usd = 1.0");
    acc.caps().add(0.4); // the average fallback request now costs $0.4
    let mut on_leases = Vec::new();
    for _ in 0..10 {
        let p = plan(&acc, &view).await.unwrap();
        assert_eq!(p.decision.first, Tier::Leases);
        assert_eq!(p.order[0].spec.id, "lease");
        on_leases.push(p);
    }
    let _full = fill(&view);
    let p = plan(&acc, &view).await.unwrap();
    assert_eq!(
        (p.decision.first, p.decision.reason),
        (Tier::Fallback, Reason::AtCapacity)
    );
    assert_eq!(p.order[0].spec.id, "fb");
    // Its reservation ($0.4 on $0.4 spent) leaves no room for a third $0.4.
    let next = plan(&acc, &view).await;
    assert!(
        matches!(next, Err(ApiError::SpendCapReached { .. })),
        "{next:?}"
    );
    assert_eq!(acc.caps().refusals(), 1, "one 429 at the cap");
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_takes_the_lease_that_frees_up() {
    let (acc, view) =
        setup("fallback_hourly_usd = 0.5\non_cap = \"queue\"\nmax_queue_wait = \"2s\"");
    acc.caps().add(1.0);
    let full = fill(&view);
    let start = tokio::time::Instant::now();
    let (p, ()) = tokio::join!(plan(&acc, &view), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(full);
    });
    let p = p.unwrap();
    assert_eq!(
        (p.decision.first, p.decision.reason),
        (Tier::Leases, Reason::WithinSlo)
    );
    assert!(p.capped && !p.decision.fallback_allowed);
    assert_eq!(
        p.order
            .iter()
            .map(|e| e.spec.id.as_str())
            .collect::<Vec<_>>(),
        ["lease"]
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        acc.caps().refusals(),
        0,
        "a queued request that got a lease"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_spend_record_and_the_cap_refusals() {
    let (acc, view) = setup("fallback_hourly_usd = 1.0");
    let fb = Arc::clone(view.current().endpoint("fb").unwrap());
    acc.recorder().record(&Charge {
        model: "m",
        endpoint: &fb.spec,
        key: Some("tenant"),
        usage: Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 0,
            total_tokens: 1_000_000,
        },
    });
    acc.caps().count_refusal();
    let config = Config::parse("[spend]\nfallback_hourly_usd = 2.0\n").unwrap();
    let next = acc.reloaded(&config);
    let s = next.summary();
    assert_eq!(s.tokens, 1_000_000);
    assert!((s.fallback_usd - 1.0).abs() < 1e-12, "{s:?}");
    assert_eq!(next.caps().refusals(), 1);
    assert_eq!(next.recorder().by_model().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_gets_429_when_no_lease_frees_up_in_time() {
    let (acc, view) = setup(
        "fallback_hourly_usd = 0.5\non_cap = \"queue\"\nmax_queue_wait = \"2s\"\nretry_after = \"3s\"",
    );
    acc.caps().add(1.0);
    let _full = fill(&view);
    let start = tokio::time::Instant::now();
    let err = plan(&acc, &view).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::SpendCapReached {
                retry_after_secs: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}
