//! Steady state of a lease: renew, detect replacement triggers, drain, close.

use std::time::Duration;

use tokio::time::Instant;

use super::{Context, Error, Flow};
use crate::market::{DeploymentState, Dseq, LeaseState, MarketError};
use crate::pool::Pool;
use crate::store::{Intent, IntentKind, Step};

/// The endpoint id the fleet uses for a lease.
pub fn endpoint_id(dseq: &Dseq) -> String {
    format!("lease-{dseq}")
}

/// `Ready` / `Replacing`: check the lease, its replica and its escrow.
pub(super) async fn check(pool: &Pool, ctx: &Context, intent: &mut Intent) -> Result<Flow, Error> {
    let Some(dseq) = intent.dseq.clone() else {
        return to_closing(ctx, intent, "lease gone: no dseq".into());
    };
    let status = match ctx.market.status(&dseq).await {
        Err(MarketError::NotFound(_)) => None,
        other => Some(other?),
    };
    let lease = status.as_ref().and_then(|s| s.leases.first());
    let deployment_open = status
        .as_ref()
        .is_some_and(|s| s.state == DeploymentState::Active);
    if !deployment_open || lease.is_none_or(|l| l.state != LeaseState::Active) {
        // Nothing left to drain: the replacement (already counted as
        // missing) is on its way; close what remains.
        let why = lease
            .and_then(|l| l.close_reason.clone())
            .unwrap_or_else(|| "lease gone".into());
        if let Some(b) = &intent.bid {
            ctx.store
                .record_provider(&b.provider, false, ctx.now_ms())?;
        }
        return to_closing(ctx, intent, why);
    }
    let id = intent.id.clone();
    let now = Instant::now();
    let reachable = lease.and_then(|l| l.services.as_ref()).is_some();
    let unreachable = ctx.with_pool(&pool.name, |rt| {
        let n = rt.unreachable.entry(id.clone()).or_default();
        *n = if reachable { 0 } else { *n + 1 };
        *n
    });
    let url = lease
        .and_then(|l| l.services.as_ref())
        .and_then(|s| s.first())
        .map(|s| s.url.clone());
    let mut healthy = match &url {
        Some(u) => ctx
            .prober
            .probe(u, intent.replica_key.as_ref(), &pool.model)
            .await
            .is_ok(),
        // `status: null` is counted above; the replica may still serve.
        None => reachable,
    };
    if ctx
        .signals
        .endpoint(&endpoint_id(&dseq))
        .is_some_and(|r| r.healthy == Some(false))
    {
        healthy = false;
    }
    let unhealthy_for = ctx.with_pool(&pool.name, |rt| {
        if healthy {
            rt.unhealthy_since.remove(&id);
            Duration::ZERO
        } else {
            now.saturating_duration_since(*rt.unhealthy_since.entry(id.clone()).or_insert(now))
        }
    });
    if intent.step == Step::Ready {
        let trigger = if unreachable >= pool.unreachable_checks {
            Some(format!("unreachable for {unreachable} checks"))
        } else if !healthy && unhealthy_for >= pool.unhealthy_after {
            Some(format!("unhealthy for {unhealthy_for:?}"))
        } else {
            None
        };
        if let Some(why) = trigger {
            tracing::warn!(pool = %pool.name, dseq = %dseq, reason = %why, "replacing lease");
            metrics::counter!("leasegate_controller_failures_total",
                "reason" => super::acquire::failure_kind(&why))
            .increment(1);
            if let Some(b) = &intent.bid {
                ctx.store
                    .record_provider(&b.provider, false, ctx.now_ms())?;
            }
            intent.reason = Some(why);
            intent.advance(Step::Replacing, ctx.now_ms());
            ctx.store.save_intent(intent)?;
        }
    }
    let escrow = status.as_ref().and_then(|s| s.escrow.as_ref());
    if let Some(e) = escrow {
        ctx.with_pool(&pool.name, |rt| rt.runway.insert(id.clone(), e.runway));
    }
    if let Some(escrow) = escrow
        && escrow.runway < pool.runway_threshold
    {
        let price = lease.and_then(|l| l.price.usd_per_hour()).unwrap_or(0.0);
        let usd = price * pool.topup.as_secs_f64() / 3600.0;
        if usd > 0.0 {
            deposit(ctx, intent, &dseq, usd).await?;
        }
    }
    Ok(Flow::Wait(pool.check_interval))
}

/// Writes a deposit intent, deposits, marks it done.
async fn deposit(ctx: &Context, owner: &Intent, dseq: &Dseq, usd: f64) -> Result<(), Error> {
    let now = ctx.now_ms();
    let mut d = Intent::new(
        format!("{}-deposit-{now}", owner.id),
        &owner.pool,
        IntentKind::Deposit,
        now,
    );
    d.dseq = Some(dseq.clone());
    d.amount_usd = Some(usd);
    ctx.store.save_intent(&d)?;
    finish_deposit(ctx, &mut d).await
}

/// Runs an open deposit intent. A deposit whose outcome was lost in a crash
/// is not repeated: the escrow check that caused it runs again and deposits
/// anew only if the runway is still short, and a surplus stays refundable
/// in escrow.
pub(super) async fn finish_deposit(ctx: &Context, d: &mut Intent) -> Result<(), Error> {
    let (Some(dseq), Some(usd)) = (d.dseq.clone(), d.amount_usd) else {
        d.advance(Step::Failed, ctx.now_ms());
        ctx.store.save_intent(d)?;
        return Ok(());
    };
    if d.attempts == 0 {
        d.attempts += 1;
        ctx.store.save_intent(d)?;
        match ctx.market.deposit(&dseq, usd).await {
            Ok(()) => {
                tracing::info!(dseq = %dseq, usd, "escrow topped up");
                metrics::counter!("leasegate_controller_deposits_total").increment(1);
            }
            Err(e) if e.is_transient() => {
                // Not sent, as far as we know: retry on the next check.
                d.advance(Step::Failed, ctx.now_ms());
                d.reason = Some(e.to_string());
                ctx.store.save_intent(d)?;
                return Err(e.into());
            }
            Err(e) => d.reason = Some(e.to_string()),
        }
    }
    d.advance(Step::Done, ctx.now_ms());
    ctx.store.save_intent(d)?;
    Ok(())
}

fn to_closing(ctx: &Context, intent: &mut Intent, why: String) -> Result<Flow, Error> {
    tracing::info!(pool = %intent.pool, intent = %intent.id, reason = %why, "closing lease");
    intent.reason = Some(why);
    intent.advance(Step::Closing, ctx.now_ms());
    ctx.store.save_intent(intent)?;
    Ok(Flow::Continue)
}

/// `Draining`: close once the gateway reports nothing in flight, or after
/// the drain timeout.
pub(super) fn drain(pool: &Pool, ctx: &Context, intent: &mut Intent) -> Result<Flow, Error> {
    let elapsed = Duration::from_millis(ctx.now_ms().saturating_sub(intent.step_ms));
    let idle = intent
        .dseq
        .as_ref()
        .and_then(|d| ctx.signals.endpoint(&endpoint_id(d)))
        .is_some_and(|r| r.in_flight == 0);
    if idle || elapsed >= pool.drain_timeout {
        let why = intent.reason.clone().unwrap_or_else(|| "drained".into());
        return to_closing(ctx, intent, why);
    }
    Ok(Flow::Wait(
        (pool.drain_timeout - elapsed).min(pool.probe_interval),
    ))
}

/// `Closing`: close the deployment (a lease already gone is fine).
pub(super) async fn close(ctx: &Context, intent: &mut Intent) -> Result<Flow, Error> {
    if let Some(dseq) = intent.dseq.clone() {
        intent.attempts += 1;
        ctx.store.save_intent(intent)?;
        match ctx.market.close(&dseq).await {
            Ok(()) | Err(MarketError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let now = ctx.now_ms();
        if let Some(mut rec) = ctx.store.lease(&dseq)?
            && rec.closed_ms.is_none()
        {
            rec.state = "closed".into();
            rec.closed_ms = Some(now);
            rec.close_reason = intent.reason.clone();
            ctx.store.save_lease(&rec)?;
        }
        tracing::info!(pool = %intent.pool, dseq = %dseq, "deployment closed");
    }
    // An acquisition that never became ready failed; anything else is done.
    let served = intent.bid.is_some()
        && intent
            .dseq
            .as_ref()
            .and_then(|d| ctx.store.lease(d).ok().flatten())
            .is_some_and(|l| l.ready_ms.is_some());
    let end = if served || intent.kind != IntentKind::Acquire {
        Step::Done
    } else {
        Step::Failed
    };
    intent.advance(end, ctx.now_ms());
    ctx.store.save_intent(intent)?;
    Ok(Flow::Continue)
}
