//! leasegate's economics simulation: a seeded 24 h demand trace served by the
//! real controller (on the sim market) and the real routing code, on paused
//! tokio time, priced per lease-hour and per fallback token.
//!
//! Real code: `Controller` with its reconcile loop, scaling and placement;
//! `SimMarket` with `MemReplicas` and its ledger; the gateway's `FleetView`,
//! `ScoreSelector`, passive health (ejection) and the overflow decision of
//! `leasegate_gateway::usage::overflow`. Modelled here: replica service
//! time (`replica`), the fallback's latency, network round trips, the
//! demand trace, and the forwarder's attempt loop (`route`).

pub mod catalogue;
pub mod chaos;
pub mod replica;
pub mod report;
pub mod route;
pub mod sim;
pub mod trace;

use std::time::Duration;

use leasegate_controller::market::sim::SimConfig;
use leasegate_controller::pool::Pool;
use serde::Serialize;

pub use report::{Report, StrategyReport};

use crate::catalogue::{FallbackModel, ServiceModel};
use crate::trace::TraceConfig;

/// How traffic is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Strategy {
    /// Every request to the hyperscaler; no leases.
    HyperscalerOnly,
    /// Leases only; requests queue on the replicas when they are full.
    LeasesOnly,
    /// Leases first, overflow to the hyperscaler on saturation or SLO breach;
    /// the controller scales on demand plus overflow.
    Hybrid,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [
        Strategy::HyperscalerOnly,
        Strategy::LeasesOnly,
        Strategy::Hybrid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::HyperscalerOnly => "hyperscaler-only",
            Strategy::LeasesOnly => "leases-only",
            Strategy::Hybrid => "hybrid",
        }
    }

    fn uses_leases(self) -> bool {
        self != Strategy::HyperscalerOnly
    }

    fn uses_fallback(self) -> bool {
        self != Strategy::LeasesOnly
    }
}

/// Everything one run depends on. Same config, same report.
#[derive(Clone, Debug)]
pub struct EconConfig {
    pub seed: u64,
    /// Measured hours, after the warm-up.
    pub hours: f64,
    /// Run before measuring, so the day starts with a fleet (a gateway that
    /// has been running, not a cold start). Not counted in any figure.
    pub warmup_hours: f64,
    /// Simulation step; requests keep their exact arrival times inside it.
    pub step: Duration,
    pub trace: TraceConfig,
    pub service: ServiceModel,
    pub fallback: FallbackModel,
    pub pool: Pool,
    pub market: SimConfig,
    /// The SLO reported on: TTFT at or under this.
    pub slo_ttft: Duration,
    /// The SLO the overflow decision acts on: tighter than the reported one,
    /// since the prediction ignores network time and prefill variance.
    pub decide_slo_ttft: Duration,
    /// A connect attempt on a vanished replica costs this before failover.
    pub connect_timeout: Duration,
    pub provider_failures_per_day: f64,
    pub status_null_per_day: f64,
    /// How often the gateway reports demand to the controller.
    pub demand_every: Duration,
    /// Width of the time-series buckets in the report.
    pub bucket: Duration,
}

impl EconConfig {
    /// The full-scale run: three regions, 24 h (plus 2 h warm-up).
    pub fn full(seed: u64, hours: f64) -> Self {
        let service = ServiceModel::default();
        Self {
            seed,
            hours,
            warmup_hours: 2.0,
            step: Duration::from_secs(1),
            trace: TraceConfig::three_regions(seed),
            pool: catalogue::pool(&service, 3, 40),
            service,
            fallback: FallbackModel::default(),
            market: catalogue::market(seed),
            slo_ttft: Duration::from_secs(2),
            decide_slo_ttft: Duration::from_millis(1500),
            connect_timeout: Duration::from_secs(1),
            provider_failures_per_day: 3.0,
            status_null_per_day: 4.0,
            demand_every: Duration::from_secs(15),
            bucket: Duration::from_secs(900),
        }
    }

    /// The CI smoke scale: flat demand (4, 3 and 2 rps), no random bursts
    /// or failures, and one hand-placed burst: Europe at 6x from minute 60
    /// to 120, so the overflow feedback can be watched. 30 min warm-up, then
    /// 1.5 h measured (the run ends with the burst).
    pub fn smoke(seed: u64) -> Self {
        let mut cfg = Self::full(seed, 1.5);
        cfg.warmup_hours = 0.5;
        cfg.trace.trough_share = 1.0;
        cfg.trace.bursts_per_region_day = 0.0;
        for (r, peak) in cfg.trace.regions.iter_mut().zip([4.0, 3.0, 2.0]) {
            r.peak_rps = peak;
        }
        cfg.trace.bursts = vec![trace::Burst {
            region: 1,
            start_s: 3600.0,
            duration_s: 3600.0,
            factor: 6.0,
        }];
        cfg.pool.max_replicas = 12;
        cfg.provider_failures_per_day = 0.0;
        cfg.status_null_per_day = 0.0;
        cfg.bucket = Duration::from_secs(300);
        cfg
    }

    fn warmup_s(&self) -> f64 {
        self.warmup_hours * 3600.0
    }

    fn end_s(&self) -> f64 {
        (self.warmup_hours + self.hours) * 3600.0
    }
}

/// Runs every strategy on the same trace, one after the other, each on its
/// own paused-time runtime.
pub fn run(cfg: &EconConfig) -> std::io::Result<Report> {
    let mut strategies = Vec::new();
    for s in Strategy::ALL {
        strategies.push(run_one(cfg, s)?);
    }
    let cost = |name: &str| {
        strategies
            .iter()
            .find(|r| r.strategy == name)
            .map(|r| r.usd_per_1m_tokens)
    };
    let hybrid_cost_ratio = match (cost("hybrid"), cost("hyperscaler-only")) {
        (Some(h), Some(f)) if f > 0.0 => Some(h / f),
        _ => None,
    };
    Ok(Report {
        seed: cfg.seed,
        hours: cfg.hours,
        warmup_hours: cfg.warmup_hours,
        service: cfg.service,
        fallback: cfg.fallback.clone(),
        regions: cfg.trace.regions.iter().map(|r| r.name.clone()).collect(),
        strategies,
        hybrid_cost_ratio,
    })
}

/// One strategy on a fresh paused runtime: nothing but tokio's clock moves
/// time, so the result depends on the config alone.
pub fn run_one(cfg: &EconConfig, strategy: Strategy) -> std::io::Result<StrategyReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    rt.block_on(sim::run(cfg, strategy))
        .map_err(|e| std::io::Error::other(format!("{}: {e}", strategy.as_str())))
}
