//! The `leasegate status` view and the controller's gauges.
//!
//! Holds no secret: replica keys stay out of this view on purpose.

use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::reconcile::{Context, endpoint_id};
use crate::store::{Cordon, IntentKind, Step, StoreError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub pools: Vec<PoolStatus>,
    pub leases: Vec<LeaseView>,
    /// What the open leases cost together.
    pub spend_usd_per_hour: f64,
    /// Providers the operator cordoned (no new leases).
    #[serde(default)]
    pub cordoned: Vec<Cordon>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub model: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub desired: u32,
    pub ready: u32,
    /// Acquisitions under way (deployment, bids, lease, readiness).
    pub acquiring: u32,
    pub draining: u32,
    /// `ok`, `scaling`, or `backing_off`.
    pub phase: String,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Seconds until the next attempt while backing off.
    pub retry_in_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseView {
    pub pool: String,
    pub endpoint_id: String,
    pub dseq: String,
    pub provider: String,
    pub region: String,
    pub usd_per_hour: f64,
    /// `leased`, `ready`, `replacing`, `draining`, `closing`.
    pub state: String,
    pub age_s: f64,
    /// Escrow runway at the last check.
    pub runway_s: Option<f64>,
    /// Last reason recorded for this lease (why it is being replaced...).
    pub note: Option<String>,
    /// `healthy`, `unhealthy`, `unreachable`, `unknown`.
    pub health: String,
    /// Its provider is cordoned: the lease stays, its replacement will not.
    #[serde(default)]
    pub cordoned: bool,
}

/// Builds the view from the store and the pools' runtime memory, and sets
/// the gauges from it.
pub fn build(ctx: &Context, pools: &[Pool]) -> Result<ControllerStatus, StoreError> {
    let now_ms = ctx.now_ms();
    let now = tokio::time::Instant::now();
    let intents = ctx.store.intents(false)?;
    let leases = ctx.store.leases(false)?;
    let mut out = ControllerStatus {
        cordoned: ctx.store.cordons()?,
        ..ControllerStatus::default()
    };
    for pool in pools {
        let mine: Vec<_> = intents
            .iter()
            .filter(|i| i.pool == pool.name && i.kind == IntentKind::Acquire)
            .collect();
        let count = |f: &dyn Fn(Step) -> bool| mine.iter().filter(|i| f(i.step)).count() as u32;
        let ready = count(&|s| s == Step::Ready);
        let acquiring = count(&|s| s.is_live()) - ready;
        let draining = count(&|s| matches!(s, Step::Draining | Step::Closing));
        let mut ps = ctx.with_pool(&pool.name, |rt| PoolStatus {
            desired: rt.desired.max(pool.min_replicas),
            consecutive_failures: rt.consecutive_failures.max(rt.acquire_failures),
            last_error: rt.last_error.clone(),
            retry_in_s: rt
                .next_attempt
                .or(rt.acquire_after)
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            ..PoolStatus::default()
        });
        ps.name = pool.name.clone();
        ps.model = pool.model.clone();
        ps.min_replicas = pool.min_replicas;
        ps.max_replicas = pool.max_replicas;
        ps.ready = ready;
        ps.acquiring = acquiring;
        ps.draining = draining;
        ps.phase = if ps.consecutive_failures > 0 {
            "backing_off"
        } else if ready != ps.desired || acquiring > 0 {
            "scaling"
        } else {
            "ok"
        }
        .into();
        for i in &mine {
            let Some(l) = i
                .dseq
                .as_ref()
                .and_then(|d| leases.iter().find(|l| &l.dseq == d))
            else {
                continue;
            };
            let health = ctx.with_pool(&pool.name, |rt| {
                if rt.unreachable.get(&i.id).copied().unwrap_or(0) > 0 {
                    "unreachable"
                } else if rt.unhealthy_since.contains_key(&i.id) {
                    "unhealthy"
                } else if l.ready_ms.is_some() {
                    "healthy"
                } else {
                    "unknown"
                }
            });
            let runway_s = ctx.with_pool(&pool.name, |rt| {
                rt.runway.get(&i.id).map(|d| d.as_secs_f64())
            });
            out.spend_usd_per_hour += l.price_usd_per_hour;
            out.leases.push(LeaseView {
                pool: pool.name.clone(),
                endpoint_id: endpoint_id(&l.dseq),
                dseq: l.dseq.0.clone(),
                provider: l.provider.clone(),
                region: l.region.clone(),
                usd_per_hour: l.price_usd_per_hour,
                state: i.step.as_str().into(),
                age_s: now_ms.saturating_sub(l.created_ms) as f64 / 1000.0,
                runway_s,
                note: i.reason.clone(),
                health: health.into(),
                cordoned: out.cordoned.iter().any(|c| c.provider == l.provider),
            });
        }
        out.pools.push(ps);
    }
    for state in ["leased", "ready", "replacing", "draining", "closing"] {
        let n = out.leases.iter().filter(|l| l.state == state).count();
        metrics::gauge!("leasegate_controller_leases", "state" => state).set(n as f64);
    }
    metrics::gauge!("leasegate_controller_spend_usd_per_hour").set(out.spend_usd_per_hour);
    Ok(out)
}

fn dur(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The status as a plain-text table, for `leasegate status`.
pub fn table(st: &ControllerStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<24} {:>5} {:>7} {:>9} {:>8}  {:<12} NOTE",
        "POOL", "MODEL", "READY", "DESIRED", "ACQUIRING", "DRAINING", "PHASE"
    );
    for p in &st.pools {
        let note = match (&p.last_error, p.retry_in_s) {
            (Some(e), Some(r)) => format!("{e} (retry in {})", dur(r)),
            (Some(e), None) => e.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>5} {:>7} {:>9} {:>8}  {:<12} {note}",
            p.name, p.model, p.ready, p.desired, p.acquiring, p.draining, p.phase
        );
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<10} {:<22} {:<14} {:>7} {:<10} {:>7} {:>8} {:<11}",
        "LEASE", "POOL", "PROVIDER", "REGION", "$/H", "STATE", "AGE", "RUNWAY", "HEALTH"
    );
    for l in &st.leases {
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:<22} {:<14} {:>7.2} {:<10} {:>7} {:>8} {:<11}",
            l.dseq,
            l.pool,
            l.provider,
            l.region,
            l.usd_per_hour,
            l.state,
            dur(l.age_s),
            l.runway_s.map_or_else(|| "-".into(), dur),
            l.health
        );
    }
    let _ = writeln!(out, "\nspend: ${:.2}/h", st.spend_usd_per_hour);
    if !st.cordoned.is_empty() {
        let names: Vec<&str> = st.cordoned.iter().map(|c| c.provider.as_str()).collect();
        let _ = writeln!(out, "cordoned: {}", names.join(", "));
    }
    out
}
