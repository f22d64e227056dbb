//! Operator actions: cordon a provider, force-replace a lease.
//!
//! Both only write durable state and wake the reconcile loops; the market
//! work is done by reconcile, on the paths it already takes for unhealthy
//! leases (make-before-break) and bid choice, so a crash mid-action is
//! recovered like any other.

use serde::Serialize;

use crate::market::Dseq;
use crate::reconcile::{Context, endpoint_id};
use crate::store::{Cordon, IntentKind, Step, StoreError};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no open lease `{0}`")]
    UnknownLease(String),
    /// The lease exists but is not in a state that can be replaced.
    #[error("lease `{lease}` is {state}: {why}")]
    NotReplaceable {
        lease: String,
        state: &'static str,
        why: &'static str,
    },
    #[error("a provider id must be 1 to 128 printable characters")]
    BadProvider,
}

/// What a force-replace did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Replacement {
    pub pool: String,
    /// The fleet's endpoint id of the lease being replaced (`lease-DSEQ`).
    pub endpoint_id: String,
    pub dseq: String,
    /// `replacing`: it serves until its replacement is ready, then drains.
    pub state: &'static str,
    /// The lease was already being replaced; nothing new was asked.
    pub already: bool,
}

fn check_provider(provider: &str) -> Result<(), OpsError> {
    let ok = !provider.is_empty()
        && provider.len() <= 128
        && provider.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(OpsError::BadProvider)
    }
}

/// Cordons `provider`: from the next bid choice on, no new lease goes to
/// it. Its current leases are left alone.
pub fn cordon(ctx: &Context, provider: &str, reason: Option<String>) -> Result<Cordon, OpsError> {
    check_provider(provider)?;
    let c = Cordon {
        provider: provider.to_owned(),
        reason,
        since_ms: ctx.now_ms(),
    };
    ctx.store.cordon(&c)?;
    tracing::info!(provider, "provider cordoned");
    metrics::counter!("leasegate_controller_operator_actions_total", "action" => "cordon")
        .increment(1);
    // What the store kept (a repeat keeps the first `since`).
    let kept = ctx
        .store
        .cordons()?
        .into_iter()
        .find(|k| k.provider == provider);
    Ok(kept.unwrap_or(c))
}

/// Lifts a cordon; whether there was one.
pub fn uncordon(ctx: &Context, provider: &str) -> Result<bool, OpsError> {
    check_provider(provider)?;
    let was = ctx.store.uncordon(provider)?;
    if was {
        tracing::info!(provider, "provider uncordoned");
        metrics::counter!("leasegate_controller_operator_actions_total", "action" => "uncordon")
            .increment(1);
        // A pool held back for want of eligible bids may find some now.
        ctx.kick();
    }
    Ok(was)
}

/// Asks for a ready lease (by dseq or endpoint id `lease-DSEQ`) to be
/// replaced: the lease is marked `replacing` in the store, which is the
/// durable intent; reconcile then acquires one replacement (on another
/// provider) and drains and closes the old lease only once that is ready.
/// Asking again while that is under way changes nothing.
pub fn replace(ctx: &Context, lease: &str) -> Result<Replacement, OpsError> {
    let dseq = lease.strip_prefix("lease-").unwrap_or(lease);
    let found =
        ctx.store.intents(false)?.into_iter().find(|i| {
            i.kind == IntentKind::Acquire && i.dseq.as_ref().is_some_and(|d| d.0 == dseq)
        });
    let Some(mut intent) = found else {
        return Err(OpsError::UnknownLease(lease.to_owned()));
    };
    let refuse = |why| OpsError::NotReplaceable {
        lease: lease.to_owned(),
        state: intent.step.as_str(),
        why,
    };
    let already = match intent.step {
        Step::Ready => false,
        Step::Replacing => true,
        Step::Draining | Step::Closing | Step::Done | Step::Failed => {
            return Err(refuse("it is already on its way out"));
        }
        Step::Pending | Step::Created | Step::BidChosen | Step::Leased => {
            return Err(refuse("it is not ready yet; replace it once it serves"));
        }
    };
    if !already {
        intent.reason = Some("replacement requested by the operator".into());
        intent.advance(Step::Replacing, ctx.now_ms());
        ctx.store.save_intent(&intent)?;
        tracing::info!(pool = %intent.pool, dseq, "lease replacement requested");
        metrics::counter!("leasegate_controller_operator_actions_total", "action" => "replace")
            .increment(1);
        ctx.kick();
    }
    let dseq = Dseq(dseq.to_owned());
    Ok(Replacement {
        pool: intent.pool,
        endpoint_id: endpoint_id(&dseq),
        dseq: dseq.0,
        state: Step::Replacing.as_str(),
        already,
    })
}
