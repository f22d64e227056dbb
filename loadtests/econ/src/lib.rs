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
use leasegate_gateway::cli::unified::ControllerSection;
pub use leasegate_gateway::usage::Mode;
pub use report::{Report, StrategyReport};

use crate::catalogue::{FallbackModel, ServiceModel};
use crate::trace::TraceConfig;

/// How traffic is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every request to the hyperscaler; no leases.
    HyperscalerOnly,
    /// Leases only; requests queue on the replicas when they are full.
    LeasesOnly,
    /// Leases and the hyperscaler, shared by the pool's overflow mode; the
    /// controller scales on the demand the gateway's meter reports.
    Hybrid(Mode),
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::HyperscalerOnly,
        Strategy::LeasesOnly,
        Strategy::Hybrid(Mode::LeasesFirst),
        Strategy::Hybrid(Mode::FallbackFirst),
        Strategy::Hybrid(Mode::CheapestWithinSlo),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::HyperscalerOnly => "hyperscaler-only",
            Strategy::LeasesOnly => "leases-only",
            Strategy::Hybrid(Mode::LeasesFirst) => "hybrid leases-first",
            Strategy::Hybrid(Mode::FallbackFirst) => "hybrid fallback-first",
            Strategy::Hybrid(Mode::CheapestWithinSlo) => "hybrid cheapest-within-slo",
        }
    }

    /// The pool's overflow mode. Without both tiers the mode has nothing to
    /// choose between; the gateway's default stands.
    pub fn mode(self) -> Mode {
        match self {
            Strategy::Hybrid(m) => m,
            Strategy::HyperscalerOnly | Strategy::LeasesOnly => Mode::default(),
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
    /// fallback-first: concurrent requests the hyperscaler quota allows;
    /// beyond it the burst goes to leases.
    pub fallback_baseline_concurrency: u32,
    /// How often the gateway's feed reports demand to the controller.
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
            // About 13 rps at the fallback's ~5 s per answer: the overnight
            // trough of the three regions together.
            fallback_baseline_concurrency: 64,
            // The binary's default `[controller] demand_interval`.
            demand_every: ControllerSection::default().demand_interval,
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

/// Runs every strategy on the same trace, each on its own thread and
/// paused-time runtime: they share nothing, so running them side by side
/// changes no figure.
pub fn run(cfg: &EconConfig) -> std::io::Result<Report> {
    let results: Vec<std::io::Result<StrategyReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = Strategy::ALL
            .iter()
            .map(|&s| scope.spawn(move || run_one(cfg, s)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a strategy's run panicked")))
            })
            .collect()
    });
    let mut strategies = results.into_iter().collect::<std::io::Result<Vec<_>>>()?;
    let baseline = strategies
        .iter()
        .find(|r| r.strategy == Strategy::HyperscalerOnly.as_str())
        .map(|r| r.usd_per_1m_tokens)
        .filter(|c| *c > 0.0);
    for r in &mut strategies {
        r.cost_vs_hyperscaler_only = baseline.map(|b| r.usd_per_1m_tokens / b);
    }
    Ok(Report {
        seed: cfg.seed,
        hours: cfg.hours,
        warmup_hours: cfg.warmup_hours,
        service: cfg.service,
        fallback: cfg.fallback.clone(),
        regions: cfg.trace.regions.iter().map(|r| r.name.clone()).collect(),
        strategies,
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
