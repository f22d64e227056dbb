//! The sim market behaves like the real one (AKASH.md), on paused time.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::launcher::MemReplicas;

const SDL: &str = "args: [\"--served-model-name\", \"m\", \"--api-key\", \"sk-1\"]\n                - model: h100\n";

fn tag(i: &str) -> Tag {
    Tag {
        controller_id: "c".into(),
        intent_id: i.into(),
    }
}

fn market(seed: u64) -> (SimMarket, MemReplicas) {
    let mem = MemReplicas::new();
    let mut cfg = SimConfig::fast(seed);
    for p in &mut cfg.providers {
        p.no_bid_chance = 0.0;
    }
    (SimMarket::new(cfg, Arc::new(mem.clone())), mem)
}

async fn leased(m: &SimMarket) -> (Dseq, Bid) {
    let c = m.create_deployment(SDL, &tag("i1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bids = m.bids(&c.dseq).await.unwrap();
    assert!(bids.iter().all(|b| b.gpu_models == ["h100"]), "{bids:?}");
    let bid = bids.into_iter().next().unwrap();
    m.create_lease(&bid.id, &c.manifest).await.unwrap();
    (c.dseq, bid)
}

#[tokio::test(start_paused = true)]
async fn bids_arrive_after_the_delay_and_only_for_the_gpu_asked() {
    let (m, _) = market(3);
    let c = m.create_deployment(SDL, &tag("i1")).await.unwrap();
    assert!(m.bids(&c.dseq).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bids = m.bids(&c.dseq).await.unwrap();
    let h100 = m
        .cfg
        .providers
        .iter()
        .filter(|p| p.prices.iter().any(|x| x.0 == "h100"));
    assert_eq!(bids.len(), h100.count());
    for b in &bids {
        let usd = b.price.usd_per_hour().unwrap();
        assert!((2.5..2.8).contains(&usd), "{usd}");
    }
    // Bids expire.
    tokio::time::sleep(m.cfg.bid_ttl).await;
    let bids = m.bids(&c.dseq).await.unwrap();
    assert!(bids.iter().all(|b| b.state == BidState::Closed));
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_market() {
    let (a, _) = market(9);
    let (b, _) = market(9);
    let ca = a.create_deployment(SDL, &tag("x")).await.unwrap();
    let cb = b.create_deployment(SDL, &tag("x")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.bids(&ca.dseq).await.unwrap(),
        b.bids(&cb.dseq).await.unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn lease_starts_a_replica_with_the_sdl_key_and_is_idempotent() {
    let (m, mem) = market(1);
    let (dseq, bid) = leased(&m).await;
    assert_eq!(mem.running(), 1);
    // Retrying the same lease creates nothing new.
    m.create_lease(&bid.id, &format!("sim-manifest-{dseq}"))
        .await
        .unwrap();
    assert_eq!(mem.running(), 1);
    let s = m.status(&dseq).await.unwrap();
    assert_eq!(
        s.leases[0].services,
        Some(vec![]),
        "not up before the start delay"
    );
    tokio::time::sleep(m.cfg.replica_start_delay).await;
    let s = m.status(&dseq).await.unwrap();
    let url = s.leases[0].services.as_ref().unwrap()[0].url.clone();
    assert!(url.starts_with("mem://"));
    let listed = m.list_deployments().await.unwrap();
    assert_eq!(listed[0].tag, Some(tag("i1")));
    m.close(&dseq).await.unwrap();
    m.close(&dseq).await.unwrap();
    m.close(&Dseq("999999".into())).await.unwrap();
    assert_eq!(mem.running(), 0);
    assert!(m.list_deployments().await.unwrap().is_empty());
    let l = m.ledger();
    assert!(l.deployments[0].closed_at.is_some());
    assert_eq!(
        l.deployments[0].lease.as_ref().unwrap().state,
        LeaseState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn escrow_drains_at_the_lease_price_and_closes_as_insufficient_funds() {
    let (m, mem) = market(1);
    let (dseq, _) = leased(&m).await;
    let s = m.status(&dseq).await.unwrap();
    let runway = s.escrow.unwrap().runway;
    // $10 at about $2.65/h is a bit under 4 h.
    assert!(runway > Duration::from_secs(3 * 3600) && runway < Duration::from_secs(4 * 3600));
    m.deposit(&dseq, 10.0).await.unwrap();
    let longer = m.status(&dseq).await.unwrap().escrow.unwrap().runway;
    assert!(longer > runway + Duration::from_secs(3 * 3600));
    tokio::time::sleep(longer + Duration::from_secs(60)).await;
    let s = m.status(&dseq).await.unwrap();
    assert_eq!(s.leases[0].state, LeaseState::InsufficientFunds);
    assert_eq!(
        s.leases[0].close_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(mem.running(), 0);
    let lease = m.ledger().deployments[0].lease.clone().unwrap();
    let lived = lease.closed_at.unwrap() - lease.created_at;
    assert!(
        lived.abs_diff(longer) < Duration::from_secs(2),
        "{lived:?} vs {longer:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_provider_goes_null_then_closes_its_leases_as_unstable() {
    let (m, mem) = market(1);
    let (dseq, bid) = leased(&m).await;
    m.kill_provider(&bid.id.provider);
    assert_eq!(mem.running(), 0);
    let s = m.status(&dseq).await.unwrap();
    assert_eq!(s.leases[0].state, LeaseState::Active);
    assert_eq!(s.leases[0].services, None);
    tokio::time::sleep(m.cfg.unstable_after).await;
    let s = m.status(&dseq).await.unwrap();
    assert_eq!(s.leases[0].close_reason.as_deref(), Some("unstable"));
    // The deployment stays open until the tenant closes it.
    assert_eq!(m.ledger().idle_deployments().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn null_status_episodes_end_and_no_bids_means_none() {
    let (m, _) = market(1);
    let (dseq, bid) = leased(&m).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.null_status(&bid.id.provider, Duration::from_secs(5));
    assert_eq!(m.status(&dseq).await.unwrap().leases[0].services, None);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(m.status(&dseq).await.unwrap().leases[0].services.is_some());
    m.set_no_bids(true);
    let c = m.create_deployment(SDL, &tag("i2")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(m.bids(&c.dseq).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn chaos_kills_a_provider_that_holds_a_lease_then_revives_it() {
    let (m, mem) = market(1);
    let m = Arc::new(m);
    let (dseq, bid) = leased(&m).await;
    let chaos = m.spawn_chaos(Duration::from_secs(5), Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(mem.running(), 0);
    assert_eq!(m.status(&dseq).await.unwrap().leases[0].services, None);
    let provider = bid.id.provider.clone();
    let online = || {
        let list = m.cfg.providers.iter().any(|p| p.owner == provider);
        assert!(list);
        m.with_books(|b, _| !b.down.contains_key(&provider))
    };
    assert!(!online());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(online());
    chaos.abort();
}

#[test]
fn gpu_models_are_read_from_block_and_flow_yaml() {
    assert_eq!(super::sdl_gpu_models("  - model: H100\n"), ["h100"]);
    let flow = r#"nvidia: [{"model":"a100","ram":"80Gi"}, {"model": "h100"}]
args: ["--model", "meta/llama"]"#;
    assert_eq!(super::sdl_gpu_models(flow), ["a100", "h100"]);
}

#[tokio::test(start_paused = true)]
async fn a_free_lease_never_runs_dry_and_does_not_panic() {
    let mem = MemReplicas::new();
    let mut cfg = SimConfig::fast(1);
    for p in &mut cfg.providers {
        p.no_bid_chance = 0.0;
        for price in &mut p.prices {
            price.1 = 0.0;
        }
    }
    let m = SimMarket::new(cfg, Arc::new(mem));
    let (dseq, _) = leased(&m).await;
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    let s = m.status(&dseq).await.unwrap();
    assert_eq!(s.leases[0].state, LeaseState::Active);
    assert!(s.escrow.unwrap().runway > Duration::from_secs(365 * 86_400));
}
