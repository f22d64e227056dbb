//! Maps Console wire shapes into the `Market` types.
//!
//! Unknown states never fail a call: an unknown bid state drops the bid, an
//! unknown lease state reads as closed (so the controller replaces it), and
//! an unknown deployment state reads as active (so cleanup still closes it).

use std::time::Duration;

use super::wire;
use crate::market::{
    BLOCK_SECONDS, Bid, BidId, BidState, DeploymentState, DeploymentStatus, Dseq, Escrow,
    LeaseState, LeaseStatus, Price, ProviderInfo, ServiceAddress,
};

/// The runway reported when no lease is drawing on the escrow.
pub(crate) const IDLE_RUNWAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub(crate) fn price(coin: Option<&wire::Coin>) -> Price {
    Price {
        denom: coin.and_then(|c| c.denom.clone()).unwrap_or_default(),
        amount_per_block: coin.and_then(|c| c.amount.0).unwrap_or(0.0),
    }
}

pub(crate) fn bid_id(id: &wire::BidIdWire, fallback_dseq: &Dseq) -> Option<BidId> {
    Some(BidId {
        dseq: id
            .dseq
            .clone()
            .map(Dseq)
            .unwrap_or_else(|| fallback_dseq.clone()),
        gseq: id.gseq.u32()?,
        oseq: id.oseq.u32()?,
        provider: id.provider.clone().filter(|p| !p.is_empty())?,
        bseq: id.bseq.u32().unwrap_or(0),
    })
}

/// GPU models from attribute keys such as `vendor/nvidia/model/h100` or
/// `vendor/nvidia/model/a100/ram/80Gi`, lower-case and without repeats.
pub(crate) fn gpu_models(offers: &[wire::ResourceOffer]) -> Vec<String> {
    let mut models: Vec<String> = offers
        .iter()
        .filter_map(|o| o.resources.as_ref()?.gpu.as_ref())
        .flat_map(|g| g.attributes.iter())
        .filter_map(|a| {
            let key = a.key.as_deref()?;
            let mut parts = key.split('/');
            while let Some(p) = parts.next() {
                if p == "model" {
                    return parts.next().map(str::to_ascii_lowercase);
                }
            }
            None
        })
        .filter(|m| !m.is_empty())
        .collect();
    models.sort();
    models.dedup();
    models
}

pub(crate) fn bid(item: &wire::BidItem, dseq: &Dseq) -> Option<Bid> {
    let b = item.bid.as_ref()?;
    let state = match b.state.as_deref()? {
        "open" => BidState::Open,
        "active" => BidState::Active,
        "lost" => BidState::Lost,
        "closed" => BidState::Closed,
        _ => return None,
    };
    Some(Bid {
        id: bid_id(b.id.as_ref()?, dseq)?,
        state,
        price: price(b.price.as_ref()),
        gpu_models: gpu_models(&b.resources_offer),
    })
}

/// Chain reasons come as `lease_closed_reason_unstable` or plain `unstable`.
pub(crate) fn close_reason(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    let trimmed = lower
        .strip_prefix("lease_closed_reason_")
        .or_else(|| lower.strip_prefix("lease_closed_"))
        .unwrap_or(&lower);
    trimmed.to_owned()
}

/// Reachable addresses: ingress URIs first (`http://host`), then forwarded
/// ports (`http://host:externalPort`).
fn addresses(status: &wire::LeaseStatusWire) -> Vec<ServiceAddress> {
    let mut out = Vec::new();
    for svc in status.services.iter().flat_map(|m| m.values()) {
        for uri in svc.uris.iter().flatten() {
            let uri = uri.trim();
            if uri.is_empty() {
                continue;
            }
            let url = if uri.starts_with("http://") || uri.starts_with("https://") {
                uri.to_owned()
            } else {
                format!("http://{uri}")
            };
            out.push(ServiceAddress { url });
        }
    }
    for ports in status.forwarded_ports.iter().flat_map(|m| m.values()) {
        for p in ports {
            if let (Some(host), Some(ext)) = (p.host.as_deref(), p.external_port.u32())
                && !host.is_empty()
                && ext > 0
            {
                out.push(ServiceAddress {
                    url: format!("http://{host}:{ext}"),
                });
            }
        }
    }
    out
}

pub(crate) fn lease(l: &wire::Lease, dseq: &Dseq) -> Option<LeaseStatus> {
    let raw_state = l.state.as_deref().unwrap_or("");
    let reason = l
        .reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(close_reason);
    let (state, reason) = match raw_state {
        "active" => (LeaseState::Active, reason),
        "insufficient_funds" => (
            LeaseState::InsufficientFunds,
            reason.or_else(|| Some("insufficient_funds".into())),
        ),
        "closed" => (LeaseState::Closed, reason),
        other => (
            LeaseState::Closed,
            reason.or_else(|| Some(format!("unknown lease state {other:?}"))),
        ),
    };
    Some(LeaseStatus {
        bid: bid_id(l.id.as_ref()?, dseq)?,
        state,
        close_reason: reason,
        price: price(l.price.as_ref()),
        services: l.status.as_ref().map(addresses),
    })
}

pub(crate) fn deployment_state(raw: Option<&str>) -> DeploymentState {
    match raw {
        Some("closed") => DeploymentState::Closed,
        _ => DeploymentState::Active,
    }
}

/// Escrow funds and runway, with `blocks_remaining = (funds − Σprice ×
/// (height − settled_at)) / Σprice` over active leases in the funds' denom.
/// `None` when the funds are not in a USD-pegged denomination.
pub(crate) fn escrow(
    account: Option<&wire::EscrowAccount>,
    leases: &[LeaseStatus],
    height: Option<f64>,
) -> Option<Escrow> {
    let state = account?.state.as_ref()?;
    let fund = state
        .funds
        .iter()
        .find(|c| matches!(c.denom.as_deref(), Some("uact" | "uusdc")))?;
    let denom = fund.denom.as_deref()?;
    let funds = fund.amount.0?;
    let per_block: f64 = leases
        .iter()
        .filter(|l| l.state == LeaseState::Active && l.price.denom == denom)
        .map(|l| l.price.amount_per_block)
        .sum();
    let settled = state.settled_at.0.unwrap_or(0.0);
    // Without a current height, assume nothing accrued since settlement:
    // an upper bound, corrected on the next call that learns the height.
    let elapsed = height.map_or(0.0, |h| (h - settled).max(0.0));
    let left = (funds - per_block * elapsed).max(0.0);
    let runway = if per_block > 0.0 {
        Duration::from_secs_f64((left / per_block * BLOCK_SECONDS).min(IDLE_RUNWAY.as_secs_f64()))
    } else {
        IDLE_RUNWAY
    };
    Some(Escrow {
        funds_usd: left / 1e6,
        runway,
    })
}

pub(crate) fn status(
    info: &wire::DeploymentInfo,
    dseq: &Dseq,
    height: Option<f64>,
) -> DeploymentStatus {
    let leases: Vec<LeaseStatus> = info.leases.iter().filter_map(|l| lease(l, dseq)).collect();
    DeploymentStatus {
        dseq: dseq.clone(),
        state: deployment_state(info.deployment.as_ref().and_then(|d| d.state.as_deref())),
        escrow: escrow(info.escrow_account.as_ref(), &leases, height),
        leases,
    }
}

pub(crate) fn provider(p: &wire::ProviderWire) -> Option<ProviderInfo> {
    let mut gpu_models: Vec<String> = p
        .gpu_models
        .iter()
        .filter_map(|g| g.model.as_deref())
        .map(str::to_ascii_lowercase)
        .collect();
    gpu_models.sort();
    gpu_models.dedup();
    let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.trim().is_empty());
    Some(ProviderInfo {
        owner: nonempty(&p.owner)?,
        host_uri: p.host_uri.clone().unwrap_or_default(),
        online: p.is_online.unwrap_or(false),
        audited: p.is_audited.unwrap_or(false),
        // Console reports uptime as a fraction; clamp in case it is not.
        uptime_7d: p.uptime7d.0.unwrap_or(0.0).clamp(0.0, 1.0),
        gpu_models,
        region: nonempty(&p.location_region),
        country: nonempty(&p.country).or_else(|| nonempty(&p.ip_country_code)),
        city: nonempty(&p.city),
        lat: p.ip_lat.0.filter(|v| (-90.0..=90.0).contains(v)),
        lon: p.ip_lon.0.filter(|v| (-180.0..=180.0).contains(v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> wire::DeploymentInfo {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn status_null_means_no_services_and_uris_and_ports_become_urls() {
        let d = Dseq("7".into());
        let i = info(
            r#"{"deployment":{"state":"active","unknown":1},"leases":[
              {"id":{"dseq":"7","gseq":1,"oseq":1,"provider":"p1","bseq":1},"state":"active",
               "price":{"denom":"uact","amount":"600.0"},"status":null},
              {"id":{"dseq":"7","gseq":1,"oseq":1,"provider":"p2","bseq":2},"state":"active",
               "price":{"denom":"uact","amount":"600"},"status":{"services":{"replica":{"uris":["abc.ingress.example"]}},
               "forwarded_ports":{"replica":[{"host":"prov.example","port":8000,"externalPort":31234}]},"ips":{}}}],
              "escrow_account":{"state":{"funds":[{"denom":"uact","amount":"1200000"}],"settled_at":"100"}}}"#,
        );
        let s = status(&i, &d, Some(200.0));
        assert_eq!(s.leases[0].services, None);
        let urls: Vec<_> = s.leases[1]
            .services
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| a.url.as_str())
            .collect();
        assert_eq!(
            urls,
            ["http://abc.ingress.example", "http://prov.example:31234"]
        );
        // 1,200,000 − 1,200 × 100 blocks = 1,080,000 left; 900 blocks at 1,200/block.
        let e = s.escrow.unwrap();
        assert!((e.funds_usd - 1.08).abs() < 1e-9);
        assert_eq!(e.runway, Duration::from_secs(900 * 6));
    }

    #[test]
    fn chain_style_close_reasons_are_normalised() {
        assert_eq!(close_reason("lease_closed_reason_unstable"), "unstable");
        assert_eq!(close_reason("manifest_timeout"), "manifest_timeout");
    }

    #[test]
    fn unknown_states_degrade_safely() {
        let d = Dseq("1".into());
        let l: wire::Lease = serde_json::from_str(
            r#"{"id":{"gseq":1,"oseq":1,"provider":"p"},"state":"paused","status":null}"#,
        )
        .unwrap();
        let l = lease(&l, &d).unwrap();
        assert_eq!(l.state, LeaseState::Closed);
        assert!(l.close_reason.unwrap().contains("paused"));
        assert_eq!(deployment_state(Some("weird")), DeploymentState::Active);
        let b: wire::BidItem = serde_json::from_str(r#"{"bid":{"state":"??"}}"#).unwrap();
        assert_eq!(bid(&b, &d), None);
    }

    #[test]
    fn bid_gpu_models_come_from_attribute_keys() {
        let b: wire::BidItem = serde_json::from_str(
            r#"{"bid":{"id":{"dseq":"1","gseq":1,"oseq":1,"provider":"p","bseq":1},"state":"open",
                "price":{"denom":"uact","amount":"4517.000000000000000000"},
                "resources_offer":[{"resources":{"gpu":{"units":{"val":"1"},"attributes":[
                  {"key":"vendor/nvidia/model/H100/ram/80Gi","value":"true"},
                  {"key":"vendor/nvidia/model/h100","value":"true"}]}},"count":1}]}}"#,
        )
        .unwrap();
        let b = bid(&b, &Dseq("1".into())).unwrap();
        assert_eq!(b.gpu_models, ["h100"]);
        assert!((b.price.usd_per_hour().unwrap() - 2.7102).abs() < 1e-3);
    }
}
