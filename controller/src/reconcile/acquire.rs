//! Acquisition steps: deployment, bids, lease, readiness.
//!
//! Each step saves the intent before the market call it guards, so a crash
//! anywhere leaves a record that the next run (or startup recovery) can
//! finish or undo.

use std::collections::HashMap;
use std::time::Duration;

use leasegate_fleet::Secret;

use super::{Context, Error, Failpoint, Flow};
use crate::market::{Dseq, LeaseState, MarketError, Tag};
use crate::pool::Pool;
use crate::store::{Intent, LeaseRecord, Step};

/// Tries of `create_lease` on one bid before giving up on it.
const LEASE_ATTEMPTS: u32 = 3;

fn tag(ctx: &Context, intent: &Intent) -> Tag {
    Tag {
        controller_id: ctx.controller_id.clone(),
        intent_id: intent.id.clone(),
    }
}

/// Our deployment for this intent, if the market has one.
pub(super) async fn find_tagged(ctx: &Context, intent_id: &str) -> Result<Option<Dseq>, Error> {
    let list = ctx.market.list_deployments().await?;
    Ok(list.into_iter().find_map(|d| {
        let t = d.tag?;
        (t.controller_id == ctx.controller_id && t.intent_id == intent_id).then_some(d.dseq)
    }))
}

fn give_up(ctx: &Context, intent: &mut Intent, reason: String) -> Result<(), Error> {
    tracing::warn!(pool = %intent.pool, intent = %intent.id, %reason, "acquisition abandoned");
    metrics::counter!("leasegate_controller_failures_total", "reason" => failure_kind(&reason))
        .increment(1);
    intent.reason = Some(reason);
    intent.advance(Step::Closing, ctx.now_ms());
    ctx.store.save_intent(intent)?;
    Ok(())
}

/// A bounded label for metrics out of a free-text reason.
pub(super) fn failure_kind(reason: &str) -> &'static str {
    const KINDS: &[&str] = &[
        "no eligible bids",
        "lease rejected",
        "not ready",
        "unreachable",
        "unhealthy",
        "insufficient_funds",
        "unstable",
        "lease gone",
        "no manifest",
    ];
    KINDS
        .iter()
        .find(|k| reason.contains(*k))
        .copied()
        .unwrap_or("other")
}

/// `Pending`: create the deployment (after checking that an earlier attempt
/// did not already create one).
pub(super) async fn create(pool: &Pool, ctx: &Context, intent: &mut Intent) -> Result<Flow, Error> {
    if intent.attempts > 0
        && let Some(dseq) = find_tagged(ctx, &intent.id).await?
    {
        // The earlier call went through but its answer was lost, and with it
        // the manifest the lease needs: undo rather than guess.
        intent.dseq = Some(dseq);
        give_up(ctx, intent, "no manifest for an adopted deployment".into())?;
        return Ok(Flow::Continue);
    }
    let Some(key) = intent.replica_key.clone() else {
        give_up(ctx, intent, "intent has no replica key".into())?;
        return Ok(Flow::Continue);
    };
    intent.attempts += 1;
    intent.updated_ms = ctx.now_ms();
    ctx.store.save_intent(intent)?;
    ctx.fail(Failpoint::AfterIntent)?;
    let input = crate::sdl::RenderInput {
        replica_key: &key,
        region: intent.region.as_deref(),
    };
    let sdl = match (ctx.render)(pool, &input) {
        Ok(sdl) => sdl,
        Err(e) => {
            let why = format!("sdl: {e}");
            ctx.acquire_failed(&pool.name, &Error::Acquire(why.clone()));
            give_up(ctx, intent, why)?;
            return Ok(Flow::Continue);
        }
    };
    let created = ctx
        .market
        .create_deployment(&sdl, &tag(ctx, intent))
        .await?;
    ctx.fail(Failpoint::AfterCreate)?;
    tracing::info!(pool = %pool.name, intent = %intent.id, dseq = %created.dseq, "deployment created");
    intent.dseq = Some(created.dseq);
    intent.manifest = Some(Secret::new(created.manifest));
    intent.advance(Step::Created, ctx.now_ms());
    ctx.store.save_intent(intent)?;
    Ok(Flow::Continue)
}

/// `Created`: wait out the bid window, then choose.
pub(super) async fn choose_bid(
    pool: &Pool,
    ctx: &Context,
    intent: &mut Intent,
) -> Result<Flow, Error> {
    let Some(dseq) = intent.dseq.clone() else {
        give_up(ctx, intent, "lease gone: no dseq".into())?;
        return Ok(Flow::Continue);
    };
    let window_ms = pool.bid_window.as_millis() as u64;
    let now = ctx.now_ms();
    if now < intent.step_ms + window_ms {
        return Ok(Flow::Wait(Duration::from_millis(
            intent.step_ms + window_ms - now,
        )));
    }
    let bids = match ctx.market.bids(&dseq).await {
        Err(MarketError::NotFound(_)) => Vec::new(),
        other => other?,
    };
    let providers = ctx.providers().await?;
    let history = ctx.store.provider_history()?;
    // A replacement must not land on the provider it replaces, no new
    // lease goes to a cordoned provider, and the pool's replicas spread
    // across providers.
    let mut avoid: Vec<String> = ctx
        .store
        .cordons()?
        .into_iter()
        .map(|c| c.provider)
        .collect();
    let mut busy: HashMap<String, u32> = HashMap::new();
    for i in ctx.store.intents(false)? {
        let Some(b) = i.bid.filter(|_| i.pool == pool.name && i.id != intent.id) else {
            continue;
        };
        if i.step == Step::Replacing {
            avoid.push(b.provider);
        } else if i.step.is_live() {
            *busy.entry(b.provider).or_default() += 1;
        }
    }
    let open: Vec<_> = bids
        .iter()
        .filter(|b| !avoid.contains(&b.id.provider))
        .cloned()
        .collect();
    let target = intent.region.as_deref();
    let picked = super::score::choose(pool, &open, &providers, &history, &busy, target);
    let Some(bid) = picked else {
        give_up(
            ctx,
            intent,
            format!(
                "no eligible bids ({} received in {:?})",
                bids.len(),
                pool.bid_window
            ),
        )?;
        return Ok(Flow::NoBids(bids.len()));
    };
    tracing::info!(pool = %pool.name, dseq = %dseq, provider = %bid.id.provider,
        usd_per_hour = bid.price.usd_per_hour().unwrap_or(0.0), "bid chosen");
    intent.bid = Some(bid.id.clone());
    intent.advance(Step::BidChosen, ctx.now_ms());
    ctx.store.save_intent(intent)?;
    ctx.fail(Failpoint::AfterBids)?;
    Ok(Flow::Continue)
}

/// `BidChosen`: create the lease (idempotent at the market) and record it.
pub(super) async fn lease(pool: &Pool, ctx: &Context, intent: &mut Intent) -> Result<Flow, Error> {
    let (Some(bid), Some(manifest), Some(dseq)) = (
        intent.bid.clone(),
        intent.manifest.clone(),
        intent.dseq.clone(),
    ) else {
        give_up(ctx, intent, "no manifest or bid for the lease".into())?;
        return Ok(Flow::Continue);
    };
    intent.attempts += 1;
    intent.updated_ms = ctx.now_ms();
    ctx.store.save_intent(intent)?;
    match ctx.market.create_lease(&bid, manifest.expose()).await {
        Ok(()) => {}
        // Retried (the call is idempotent), but not forever: a provider
        // that cannot take the manifest is given up on while other bids
        // may still be fresh enough for the next acquisition.
        Err(e) if e.is_transient() && intent.attempts < LEASE_ATTEMPTS => return Err(e.into()),
        Err(e) => {
            ctx.store
                .record_provider(&bid.provider, false, ctx.now_ms())?;
            ctx.acquire_failed(&pool.name, &Error::Acquire(format!("lease rejected: {e}")));
            give_up(ctx, intent, format!("lease rejected: {e}"))?;
            return Ok(Flow::Continue);
        }
    }
    ctx.fail(Failpoint::AfterLease)?;
    let providers = ctx.providers().await?;
    let info = providers.iter().find(|p| p.owner == bid.provider);
    let status = ctx.market.status(&dseq).await?;
    let price = status
        .leases
        .first()
        .and_then(|l| l.price.usd_per_hour())
        .unwrap_or(0.0);
    let now = ctx.now_ms();
    ctx.store.save_lease(&LeaseRecord {
        dseq: dseq.clone(),
        intent_id: intent.id.clone(),
        pool: pool.name.clone(),
        provider: bid.provider.clone(),
        region: info
            .and_then(|p| p.region.clone())
            .unwrap_or_else(|| "unknown".into()),
        country: info.and_then(|p| p.country.clone()),
        lat: info.and_then(|p| p.lat).unwrap_or(0.0),
        lon: info.and_then(|p| p.lon).unwrap_or(0.0),
        audited: info.is_some_and(|p| p.audited),
        uptime: info.map_or(0.0, |p| p.uptime_7d),
        price_usd_per_hour: price,
        url: None,
        replica_key: intent.replica_key.clone(),
        state: "active".into(),
        created_ms: now,
        ready_ms: None,
        closed_ms: None,
        close_reason: None,
    })?;
    metrics::counter!("leasegate_controller_acquisitions_total", "pool" => pool.name.clone())
        .increment(1);
    tracing::info!(pool = %pool.name, dseq = %dseq, provider = %bid.provider, "lease created");
    intent.advance(Step::Leased, now);
    ctx.store.save_intent(intent)?;
    Ok(Flow::Continue)
}

/// `Leased`: service URI, then `/health`, then `/v1/models`; publish.
pub(super) async fn await_ready(
    pool: &Pool,
    ctx: &Context,
    intent: &mut Intent,
) -> Result<Flow, Error> {
    let Some(dseq) = intent.dseq.clone() else {
        give_up(ctx, intent, "lease gone: no dseq".into())?;
        return Ok(Flow::Continue);
    };
    let provider = intent.bid.as_ref().map(|b| b.provider.clone());
    let status = match ctx.market.status(&dseq).await {
        Err(MarketError::NotFound(_)) => None,
        other => Some(other?),
    };
    let lease = status.as_ref().and_then(|s| s.leases.first());
    if lease.is_none_or(|l| l.state != LeaseState::Active) {
        let why = lease
            .and_then(|l| l.close_reason.clone())
            .unwrap_or_else(|| "closed".into());
        if let Some(p) = &provider {
            ctx.store.record_provider(p, false, ctx.now_ms())?;
        }
        // The provider's failure (recorded above), not the market's: no
        // pool-wide backoff.
        give_up(ctx, intent, format!("lease gone before ready: {why}"))?;
        return Ok(Flow::Continue);
    }
    let url = lease
        .and_then(|l| l.services.as_ref())
        .and_then(|s| s.first())
        .map(|s| s.url.clone());
    if let Some(url) = url {
        match ctx
            .prober
            .probe(&url, intent.replica_key.as_ref(), &pool.model)
            .await
        {
            Ok(()) => {
                ctx.fail(Failpoint::BeforePublish)?;
                return publish(pool, ctx, intent, &dseq, url);
            }
            Err(e) => tracing::debug!(dseq = %dseq, error = %e, "replica not ready yet"),
        }
    }
    let waited = ctx.now_ms().saturating_sub(intent.step_ms);
    if waited >= pool.readiness_timeout.as_millis() as u64 {
        if let Some(p) = &provider {
            ctx.store.record_provider(p, false, ctx.now_ms())?;
        }
        let why = format!("not ready within {:?}", pool.readiness_timeout);
        ctx.acquire_failed(&pool.name, &Error::Acquire(why.clone()));
        give_up(ctx, intent, why)?;
        return Ok(Flow::Continue);
    }
    Ok(Flow::Wait(pool.probe_interval))
}

fn publish(
    pool: &Pool,
    ctx: &Context,
    intent: &mut Intent,
    dseq: &Dseq,
    url: String,
) -> Result<Flow, Error> {
    let now = ctx.now_ms();
    if let Some(mut rec) = ctx.store.lease(dseq)? {
        let took = now.saturating_sub(rec.created_ms) as f64 / 1000.0;
        metrics::histogram!("leasegate_controller_time_to_ready_seconds").record(took);
        rec.url = Some(url);
        rec.ready_ms = Some(now);
        rec.state = "ready".into();
        ctx.store.save_lease(&rec)?;
        ctx.store.record_provider(&rec.provider, true, now)?;
    }
    tracing::info!(pool = %pool.name, dseq = %dseq, "replica ready");
    ctx.acquire_succeeded(&pool.name);
    intent.advance(Step::Ready, now);
    ctx.store.save_intent(intent)?;
    Ok(Flow::Continue)
}
