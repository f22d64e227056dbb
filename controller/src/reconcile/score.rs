//! Bid scoring: which open bid to accept for a pool.

use std::collections::HashMap;

use crate::market::{Bid, BidState, ProviderInfo};
use crate::pool::Pool;
use crate::store::ProviderHistory;

/// Weights of the score terms; each term is in 0..=1.
const W_PRICE: f64 = 0.4;
const W_REGION: f64 = 0.25;
const W_UPTIME: f64 = 0.15;
const W_HISTORY: f64 = 0.15;
const W_AUDITED: f64 = 0.05;
/// Subtracted per lease the pool already has with the provider: one
/// provider going down should take as few of a pool's replicas as possible,
/// though not at the price of leaving the region demand asks for.
const W_SPREAD: f64 = 0.2;

/// Why a bid was not eligible, for the "no eligible bids" message.
fn eligible(pool: &Pool, bid: &Bid, provider: Option<&ProviderInfo>) -> bool {
    let price_ok = bid
        .price
        .usd_per_hour()
        .is_some_and(|p| p <= pool.max_price_per_hour);
    let gpu_ok = bid.gpu_models.is_empty()
        || bid
            .gpu_models
            .iter()
            .any(|g| pool.gpu_models.iter().any(|w| w.eq_ignore_ascii_case(g)));
    let region_ok = pool.regions.is_empty()
        || provider
            .and_then(|p| p.region.as_deref())
            .is_some_and(|r| pool.region_weight(r).is_some());
    let audited_ok = !pool.audited_only || provider.is_some_and(|p| p.audited);
    bid.state == BidState::Open
        && price_ok
        && gpu_ok
        && region_ok
        && audited_ok
        && pool.allows_provider(&bid.id.provider)
}

/// Scores one eligible bid; higher is better.
pub fn score(
    pool: &Pool,
    bid: &Bid,
    provider: Option<&ProviderInfo>,
    history: Option<&ProviderHistory>,
    target_region: Option<&str>,
) -> f64 {
    let price = bid.price.usd_per_hour().unwrap_or(f64::INFINITY);
    let price_term = (1.0 - price / pool.max_price_per_hour).clamp(0.0, 1.0);
    let region = provider.and_then(|p| p.region.as_deref());
    let region_term = match (target_region, region) {
        (Some(t), Some(r)) if t == r => 1.0,
        (None, _) => 0.5,
        (Some(_), Some(r)) if pool.region_weight(r).is_some() => 0.3,
        _ => 0.0,
    };
    let uptime = provider.map_or(0.0, |p| p.uptime_7d.clamp(0.0, 1.0));
    let hist = history.copied().unwrap_or_default().score();
    let audited = if provider.is_some_and(|p| p.audited) {
        1.0
    } else {
        0.0
    };
    W_PRICE * price_term
        + W_REGION * region_term
        + W_UPTIME * uptime
        + W_HISTORY * hist
        + W_AUDITED * audited
}

/// The best eligible bid, if any. `busy` counts the pool's leases per
/// provider. Ties go to the lower provider id, so the choice is
/// deterministic.
pub fn choose<'a>(
    pool: &Pool,
    bids: &'a [Bid],
    providers: &[ProviderInfo],
    history: &HashMap<String, ProviderHistory>,
    busy: &HashMap<String, u32>,
    target_region: Option<&str>,
) -> Option<&'a Bid> {
    let info = |owner: &str| providers.iter().find(|p| p.owner == owner);
    bids.iter()
        .filter(|b| eligible(pool, b, info(&b.id.provider)))
        .map(|b| {
            let p = info(&b.id.provider);
            let s = score(pool, b, p, history.get(&b.id.provider), target_region)
                - W_SPREAD * f64::from(busy.get(&b.id.provider).copied().unwrap_or(0));
            (b, s)
        })
        .max_by(|(a, sa), (b, sb)| {
            sa.total_cmp(sb)
                .then_with(|| b.id.provider.cmp(&a.id.provider))
        })
        .map(|(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{BidId, Dseq, Price};

    fn bid(provider: &str, uact: f64, gpu: &str) -> Bid {
        Bid {
            id: BidId {
                dseq: Dseq("1".into()),
                gseq: 1,
                oseq: 1,
                provider: provider.into(),
                bseq: 1,
            },
            state: BidState::Open,
            price: Price {
                denom: "uact".into(),
                amount_per_block: uact,
            },
            gpu_models: vec![gpu.into()],
        }
    }

    fn info(owner: &str, region: &str, audited: bool) -> ProviderInfo {
        ProviderInfo {
            owner: owner.into(),
            host_uri: String::new(),
            online: true,
            audited,
            uptime_7d: 0.99,
            gpu_models: vec![],
            region: Some(region.into()),
            country: None,
            city: None,
            lat: None,
            lon: None,
        }
    }

    fn pool() -> Pool {
        toml::from_str(
            "name=\"p\"\nmodel=\"m\"\nengine=\"vllm\"\ngpu_models=[\"h100\"]\nmin_replicas=1\nmax_replicas=2\nmax_price_per_hour=3.0\nregions=[{code=\"eu-central\"},{code=\"na-us-west\"}]\nprovider_deny=[\"bad\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn filters_policy_then_prefers_the_target_region() {
        let p = pool();
        let bids = [
            bid("cheap-a100", 2800.0, "a100"),
            bid("bad", 4000.0, "h100"),
            bid("too-dear", 6000.0, "h100"),
            bid("asia", 4000.0, "h100"),
            bid("eu", 4500.0, "h100"),
            bid("us", 4400.0, "h100"),
        ];
        let infos = [
            info("cheap-a100", "eu-central", true),
            info("bad", "eu-central", true),
            info("too-dear", "eu-central", true),
            info("asia", "as-east", true),
            info("eu", "eu-central", true),
            info("us", "na-us-west", true),
        ];
        let h = HashMap::new();
        let none = HashMap::new();
        let pick = |t| choose(&p, &bids, &infos, &h, &none, t).map(|b| b.id.provider.clone());
        assert_eq!(pick(Some("eu-central")).as_deref(), Some("eu"));
        assert_eq!(pick(Some("na-us-west")).as_deref(), Some("us"));
        // Our history with a provider moves the choice.
        let mut h = HashMap::new();
        h.insert(
            "us".to_string(),
            ProviderHistory {
                successes: 0,
                failures: 9,
            },
        );
        let picked = choose(&p, &bids, &infos, &h, &none, None).map(|b| b.id.provider.clone());
        assert_eq!(picked.as_deref(), Some("eu"));
        // Spread: a provider already holding our lease loses to the next best.
        let busy = HashMap::from([("eu".to_string(), 1)]);
        let picked = choose(&p, &bids, &infos, &h, &busy, None).map(|b| b.id.provider.clone());
        assert_eq!(picked.as_deref(), Some("us"));
    }
}
