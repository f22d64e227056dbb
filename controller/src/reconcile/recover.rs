//! Startup recovery: adopt what the market has under our tag, close the rest.

use super::{Context, Error, maintain};
use crate::pool::Pool;
use crate::store::{Intent, IntentKind, Step};

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Deployments matched to a live intent.
    pub adopted: Vec<String>,
    /// Deployments closed: orphans, duplicates, or unusable.
    pub closed: Vec<String>,
}

/// Matches the market's deployments carrying our controller id with the
/// store's intents. A deployment whose intent is live is adopted (or, if
/// the intent never learnt its dseq and so lacks the manifest, undone);
/// any other deployment of ours is closed behind a durable close intent.
/// Intents of pools no longer configured are closed too.
pub async fn recover(ctx: &Context, pools: &[Pool]) -> Result<Recovery, Error> {
    let mut out = Recovery::default();
    // Close intents left open by a crash: finish them first.
    for mut i in ctx.store.intents(false)? {
        let orphaned_pool = !pools.iter().any(|p| p.name == i.pool);
        if i.kind == IntentKind::Close || (orphaned_pool && i.kind == IntentKind::Acquire) {
            if i.kind == IntentKind::Acquire {
                i.reason = Some("pool no longer configured".into());
                i.advance(Step::Closing, ctx.now_ms());
                ctx.store.save_intent(&i)?;
            }
            maintain::close(ctx, &mut i).await?;
            out.closed.extend(i.dseq.as_ref().map(|d| d.0.clone()));
        }
    }
    let open: Vec<Intent> = ctx.store.intents(false)?;
    let deployments = ctx.market.list_deployments().await?;
    for d in deployments {
        let Some(tag) = d.tag else { continue };
        if tag.controller_id != ctx.controller_id {
            continue;
        }
        let owner = open
            .iter()
            .find(|i| i.id == tag.intent_id && i.kind == IntentKind::Acquire);
        match owner {
            Some(i) if i.dseq.as_ref() == Some(&d.dseq) => {
                out.adopted.push(d.dseq.0.clone());
            }
            Some(i) if i.dseq.is_none() => {
                // Created, but the crash lost the answer (and the manifest).
                let mut i = i.clone();
                i.dseq = Some(d.dseq.clone());
                i.reason = Some("no manifest for an adopted deployment".into());
                i.advance(Step::Closing, ctx.now_ms());
                ctx.store.save_intent(&i)?;
                maintain::close(ctx, &mut i).await?;
                out.closed.push(d.dseq.0.clone());
            }
            _ => {
                let now = ctx.now_ms();
                let mut c = Intent::new(
                    format!("close-{}-{now}", d.dseq),
                    owner.map_or("", |i| i.pool.as_str()),
                    IntentKind::Close,
                    now,
                );
                c.dseq = Some(d.dseq.clone());
                c.reason = Some(format!("orphan of intent {}", tag.intent_id));
                ctx.store.save_intent(&c)?;
                tracing::warn!(dseq = %d.dseq, intent = %tag.intent_id, "closing orphaned deployment");
                maintain::close(ctx, &mut c).await?;
                out.closed.push(d.dseq.0.clone());
            }
        }
    }
    Ok(out)
}
