//! The reconcile loop, shaped like kube-rs: `reconcile(pool, ctx)` is
//! idempotent and says when to run again; `error_policy` backs off.
//!
//! Every run reads the intents from the store, moves each one step by step
//! as far as it can without waiting, then compares the pool with what it
//! should be (size, replacements) and writes new intents for the difference.

mod acquire;
mod context;
mod maintain;
mod recover;
pub mod score;

use std::time::Duration;

use leasegate_fleet::Secret;

pub use context::{Context, Failpoint, PoolRuntime};
pub use maintain::endpoint_id;
pub use recover::{Recovery, recover};

use crate::demand::{desired_replicas, place};
use crate::market::MarketError;
use crate::pool::{Backoff, Pool};
use crate::store::{Intent, IntentKind, Step, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no eligible bids for pool {pool} ({received} bids received)")]
    NoBids { pool: String, received: usize },
    /// An acquisition was abandoned (lease refused, replica never ready).
    #[error("acquisition failed: {0}")]
    Acquire(String),
    /// A test failpoint fired: the controller behaves as if it died here.
    #[error("simulated crash at {0:?}")]
    Crashed(Failpoint),
}

/// When to reconcile a pool again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    pub requeue_after: Option<Duration>,
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Self {
            requeue_after: Some(after),
        }
    }

    /// Nothing to do until something changes (or the controller restarts).
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }
}

/// What one intent step wants next.
#[derive(Debug)]
pub(crate) enum Flow {
    /// Progress was made; run the next step now.
    Continue,
    /// Come back after this.
    Wait(Duration),
    /// The acquisition found no bids and is being undone.
    NoBids(usize),
}

/// Backoff after `attempts` consecutive failures (1 = the first): base
/// doubled each time, capped; a rate limit waits at least as asked. Pure:
/// the jitter, when on, is drawn from the attempt count.
pub fn error_policy(err: &Error, attempts: u32, backoff: &Backoff) -> Action {
    if let Error::Crashed(_) = err {
        return Action::await_change();
    }
    let exp = attempts.saturating_sub(1).min(20);
    let mut wait = backoff.base.saturating_mul(1u32 << exp).min(backoff.max);
    if backoff.jitter {
        // A deterministic spread in ±20% keeps the policy pure and testable.
        let f = 0.8 + 0.4 * fastrand::Rng::with_seed(u64::from(attempts)).f64();
        wait = wait.mul_f64(f);
    }
    if let Error::Market(MarketError::RateLimited {
        retry_after: Some(r),
    }) = err
    {
        wait = wait.max(*r);
    }
    Action::requeue(wait)
}

fn new_replica_key() -> Secret {
    let mut rng = fastrand::Rng::new();
    let hex: String = (0..32)
        .map(|_| char::from_digit(rng.u32(..16), 16).unwrap_or('0'))
        .collect();
    Secret::new(format!("sk-lg-{hex}"))
}

/// Drives one intent as far as it goes without waiting.
async fn drive(pool: &Pool, ctx: &Context, intent: &mut Intent) -> Result<Flow, Error> {
    let mut no_bids = None;
    // Bounded: each step either advances the intent or returns.
    for _ in 0..12 {
        let flow = match (intent.kind, intent.step) {
            (IntentKind::Deposit, _) => {
                maintain::finish_deposit(ctx, intent).await?;
                Flow::Wait(pool.check_interval)
            }
            (_, Step::Done | Step::Failed) => break,
            (IntentKind::Close, _) | (_, Step::Closing) => maintain::close(ctx, intent).await?,
            (_, Step::Pending) => acquire::create(pool, ctx, intent).await?,
            (_, Step::Created) => acquire::choose_bid(pool, ctx, intent).await?,
            (_, Step::BidChosen) => acquire::lease(pool, ctx, intent).await?,
            (_, Step::Leased) => acquire::await_ready(pool, ctx, intent).await?,
            (_, Step::Ready | Step::Replacing) => maintain::check(pool, ctx, intent).await?,
            (_, Step::Draining) => maintain::drain(pool, ctx, intent)?,
        };
        match flow {
            Flow::Continue => {}
            Flow::NoBids(n) => no_bids = Some(n),
            Flow::Wait(d) => {
                return Ok(match no_bids {
                    Some(n) => Flow::NoBids(n),
                    None => Flow::Wait(d),
                });
            }
        }
    }
    Ok(match no_bids {
        Some(n) => Flow::NoBids(n),
        None => Flow::Continue,
    })
}

/// Reconciles one pool. Idempotent: running it twice in a row changes
/// nothing the first run did not.
pub async fn reconcile(pool: &Pool, ctx: &Context) -> Result<Action, Error> {
    let mut next = pool.check_interval;
    let mut first_err: Option<Error> = None;
    let intents: Vec<Intent> = ctx
        .store
        .intents(false)?
        .into_iter()
        .filter(|i| i.pool == pool.name)
        .collect();
    for mut intent in intents {
        match drive(pool, ctx, &mut intent).await {
            Ok(Flow::Wait(d)) => next = next.min(d),
            Ok(Flow::Continue) => {}
            Ok(Flow::NoBids(received)) => {
                let e = Error::NoBids {
                    pool: pool.name.clone(),
                    received,
                };
                tracing::warn!(pool = %pool.name, error = %e, "acquisition found no bids");
                ctx.acquire_failed(&pool.name, &e);
            }
            Err(e @ Error::Crashed(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(pool = %pool.name, intent = %intent.id, error = %e, "intent step failed");
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(wait) = shape(pool, ctx)? {
        next = next.min(wait);
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            ctx.with_pool(&pool.name, |rt| {
                rt.consecutive_failures = 0;
                rt.next_attempt = None;
                if rt.acquire_failures == 0 {
                    rt.last_error = None;
                }
            });
            Ok(Action::requeue(next))
        }
    }
}

/// Compares the pool with its desired shape and writes intents for the
/// difference: new acquisitions, drains of replaced or surplus leases.
/// Returns how long new acquisitions are held back, if they are.
fn shape(pool: &Pool, ctx: &Context) -> Result<Option<Duration>, Error> {
    let held = ctx.with_pool(&pool.name, |rt| {
        rt.acquire_after
            .map(|t| t.saturating_duration_since(tokio::time::Instant::now()))
            .filter(|d| !d.is_zero())
    });
    let now_ms = ctx.now_ms();
    let mine: Vec<Intent> = ctx
        .store
        .intents(false)?
        .into_iter()
        .filter(|i| i.pool == pool.name && i.kind == IntentKind::Acquire)
        .collect();
    let demand = ctx.signals.demand_for(&pool.model);
    let desired = ctx.with_pool(&pool.name, |rt| {
        let d = desired_replicas(pool, &demand, &mut rt.scale, tokio::time::Instant::now());
        rt.desired = d;
        d
    });
    let live = mine.iter().filter(|i| i.step.is_live()).count() as u32;
    let ready: Vec<&Intent> = mine.iter().filter(|i| i.step == Step::Ready).collect();
    let acquiring = live - ready.len() as u32;
    // Make-before-break: a replaced lease drains only once enough
    // others are ready to take its place.
    if ready.len() as u32 >= desired {
        for old in mine.iter().filter(|i| i.step == Step::Replacing) {
            let mut old = old.clone();
            old.advance(Step::Draining, now_ms);
            ctx.store.save_intent(&old)?;
        }
    }
    if live < desired && held.is_none() {
        let regions: Vec<String> = mine
            .iter()
            .filter(|i| i.step.is_live())
            .filter_map(|i| i.region.clone())
            .collect();
        let mut regions = regions;
        for k in live..desired {
            let region = place(pool, &demand, &regions);
            // The index keeps the store's (created, id) order deterministic;
            // the random tail keeps ids unique across restarts.
            let mut intent = Intent::new(
                format!("{}-{now_ms}-{k:03}-{:08x}", pool.name, fastrand::u32(..)),
                &pool.name,
                IntentKind::Acquire,
                now_ms,
            );
            intent.replica_key = Some(new_replica_key());
            intent.region = region.clone();
            regions.extend(region);
            ctx.store.save_intent(&intent)?;
        }
    } else if acquiring == 0 && ready.len() as u32 > desired {
        // Scale down: the dearest leases go first.
        let mut surplus = ready.clone();
        surplus.sort_by(|a, b| {
            let price = |i: &Intent| {
                i.dseq
                    .as_ref()
                    .and_then(|d| ctx.store.lease(d).ok().flatten())
                    .map_or(0.0, |l| l.price_usd_per_hour)
            };
            price(b).total_cmp(&price(a))
        });
        for old in surplus.into_iter().take(ready.len() - desired as usize) {
            let mut old = old.clone();
            old.reason = Some("scale down".into());
            old.advance(Step::Draining, now_ms);
            ctx.store.save_intent(&old)?;
        }
    }
    Ok(held.filter(|_| live < desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_policy_backs_off_exponentially_to_a_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: false,
        };
        let e = Error::NoBids {
            pool: "p".into(),
            received: 0,
        };
        let waits: Vec<_> = (1..=7)
            .map(|n| error_policy(&e, n, &b).requeue_after.unwrap().as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        let limited = Error::Market(MarketError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        });
        assert_eq!(
            error_policy(&limited, 1, &b).requeue_after,
            Some(Duration::from_secs(60))
        );
        let jittered = Backoff { jitter: true, ..b };
        let w = error_policy(&e, 3, &jittered).requeue_after.unwrap();
        assert!(w >= Duration::from_millis(3200) && w <= Duration::from_millis(4800));
        assert_eq!(
            error_policy(&e, 3, &jittered),
            error_policy(&e, 3, &jittered)
        );
    }
}
