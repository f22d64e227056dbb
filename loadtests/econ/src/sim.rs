//! The run loop of one strategy: step paused time, let the controller
//! reconcile, route each request of the step through the gateway code,
//! model its service, report demand back, and account for every dollar.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use leasegate_controller::demand::Signals;
use leasegate_controller::launcher::{MemReplicas, Prober};
use leasegate_controller::market::LeaseState;
use leasegate_controller::market::sim::{Ledger, SimMarket};
use leasegate_controller::store::{SqliteStore, Store};
use leasegate_controller::{Controller, ControllerConfig, ControllerHandle, Deps};
use leasegate_fleet::{Endpoint, Engine, Kind, Region, Snapshot, State};
use leasegate_gateway::cli::feed;
use leasegate_gateway::demand::DemandMeter;
use leasegate_gateway::fleet::{EndpointHandle, FleetView, InFlight, Outcome};
use leasegate_gateway::health::HealthConfig;
use leasegate_gateway::route::haversine_km;
use leasegate_gateway::usage::Mode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalogue::{FallbackModel, MODEL};
use crate::chaos::Chaos;
use crate::replica::Replica;
use crate::report::{Bucket, RegionBucket, StrategyReport, TtftHistogram};
use crate::route::{Gateway, OverflowSettings, Target, gateway_config};
use crate::trace::{Request, Trace};
use crate::{EconConfig, Strategy};

/// A fallback decodes at about this many tokens per second per request.
const FALLBACK_TOKENS_PER_S: f64 = 60.0;

/// Round trip from a client region to an endpoint: light in fibre on a
/// path 1.5x the great circle, plus 10 ms of last-mile and TLS overhead.
fn rtt_s(from: (f64, f64), to: (f64, f64)) -> f64 {
    0.010 + haversine_km(from, to) * 1.5 / 100_000.0
}

fn us(t: f64) -> u64 {
    (t.max(0.0) * 1e6) as u64
}

/// Something due at a simulated instant.
enum Due {
    FirstToken(Arc<EndpointHandle>, Duration),
    Done(InFlight),
}

struct Event {
    at: u64,
    seq: u64,
    due: Due,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct Events {
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
}

impl Events {
    fn push(&mut self, at: f64, due: Due) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            at: us(at),
            seq: self.seq,
            due,
        }));
    }

    /// Reports first tokens and ends requests due by `t`.
    fn run_until(&mut self, t: f64) {
        let limit = us(t);
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= limit) {
            if let Some(Reverse(e)) = self.heap.pop() {
                match e.due {
                    Due::FirstToken(h, ttfb) => h.report(Outcome::Success { ttfb }),
                    Due::Done(guard) => drop(guard),
                }
            }
        }
    }
}

fn fallback_id(f: &FallbackModel) -> String {
    format!("fallback-{}", f.name)
}

/// The fallback as the fleet lists it; `max_concurrency` 0 is unbounded.
fn fallback_endpoint(f: &FallbackModel, max_concurrency: u32) -> Endpoint {
    Endpoint {
        id: fallback_id(f),
        url: "https://fallback.invalid".into(),
        kind: Kind::Fallback,
        engine: Engine::Openai,
        models: vec![MODEL.into()],
        region: Region {
            code: f.region.clone(),
            country: None,
            lat: f.lat,
            lon: f.lon,
        },
        provider: None,
        price_per_hour_usd: 0.0,
        max_concurrency,
        state: State::Ready,
        credential: None,
    }
}

/// The controller side of a run with leases.
struct Fleet {
    market: Arc<SimMarket>,
    mem: MemReplicas,
    store: Arc<dyn Store>,
    handle: ControllerHandle,
    rx: watch::Receiver<Arc<Snapshot>>,
    signals: Signals,
}

impl Fleet {
    fn start(cfg: &EconConfig) -> Result<Self, String> {
        let mem = MemReplicas::new();
        let market = Arc::new(SimMarket::new(cfg.market.clone(), Arc::new(mem.clone())));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().map_err(|e| e.to_string())?);
        let config = ControllerConfig {
            controller_id: "econ".into(),
            pools: vec![cfg.pool.clone()],
            backoff: Default::default(),
        };
        config.validate()?;
        let deps = Deps::new(market.clone(), store.clone(), Arc::new(mem.clone()));
        let (handle, rx) = Controller::start_with(config, deps);
        let signals = handle.signals();
        Ok(Self {
            market,
            mem,
            store,
            handle,
            rx,
            signals,
        })
    }

    /// Active leases the controller does not track: a lease whose tag
    /// names no live intent holding that deployment.
    fn orphans(&self, ledger: &Ledger) -> usize {
        let Ok(live) = self.store.intents(false) else {
            return 0;
        };
        let owned: HashSet<(String, String)> = live
            .iter()
            .filter_map(|i| Some((i.id.clone(), i.dseq.as_ref()?.0.clone())))
            .collect();
        ledger
            .active_leases()
            .iter()
            .filter(|d| {
                d.intent()
                    .is_none_or(|i| !owned.contains(&(i.to_string(), d.dseq.clone())))
            })
            .count()
    }
}

/// Runs one strategy to the end of the horizon. Fails only when the
/// controller cannot start (a bad pool or store).
pub async fn run(cfg: &EconConfig, strategy: Strategy) -> Result<StrategyReport, String> {
    let mut out = StrategyReport {
        strategy: strategy.as_str().into(),
        slo_ttft_s: cfg.slo_ttft.as_secs_f64(),
        ..StrategyReport::default()
    };
    let mut fleet = if strategy.uses_leases() {
        Some(Fleet::start(cfg)?)
    } else {
        None
    };
    let (warmup, end) = (cfg.warmup_s(), cfg.end_s());
    let dt = cfg.step.as_secs_f64();
    let origin = Instant::now();
    let view = FleetView::new(HealthConfig::default());
    let mode = strategy.mode();
    // fallback-first's baseline rides on a quota at the hyperscaler; in the
    // other modes the fallback takes whatever comes.
    let quota = if mode == Mode::FallbackFirst {
        cfg.fallback_baseline_concurrency
    } else {
        0
    };
    let fallback = strategy
        .uses_fallback()
        .then(|| fallback_endpoint(&cfg.fallback, quota));
    let compose = |base: &Snapshot| {
        let mut s = base.clone();
        s.endpoints.extend(fallback.clone());
        Arc::new(s)
    };
    view.publish(compose(&Snapshot::default()));
    let overflow = OverflowSettings {
        mode,
        slo_ttft: cfg.decide_slo_ttft,
        time_per_output_token: Duration::from_secs_f64(cfg.service.time_per_output_token_s),
    };
    let config = gateway_config(MODEL, &fallback_id(&cfg.fallback), &cfg.fallback, overflow)?;
    let mut gw = Gateway::new(view.clone(), &config, mode, cfg.seed ^ 0x6A7E);
    // The production feed: requests counted per model and nearest pool
    // region by the gateway's meter, reported by the binary's feed task.
    let meter = Arc::new(DemandMeter::new(&region_codes(cfg)));
    let feed_task = fleet.as_ref().map(|f| {
        feed::spawn(
            meter.clone(),
            view.clone(),
            feed::Sink::Local(f.signals.clone()),
            cfg.demand_every,
        )
    });
    let mut trace = Trace::new(cfg.trace.clone(), end);
    let mut chaos = Chaos::new(
        cfg.seed,
        cfg.provider_failures_per_day,
        cfg.status_null_per_day,
        warmup,
        end,
    );
    let mut tail_rng = fastrand::Rng::with_seed(cfg.seed ^ 0x7A11);
    let regions = cfg.trace.regions.clone();
    let mut hist = TtftHistogram::default();
    let mut events = Events::default();
    // Ordered, so sums over it come out the same every run.
    let mut replicas: BTreeMap<String, (Replica, f64)> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut busy_slot_s = 0.0;
    let mut orphan_lease_s = 0.0;
    let mut alive: HashSet<String> = HashSet::new();
    let mut requests: Vec<Request> = Vec::new();
    let bucket_s = cfg.bucket.as_secs_f64();
    let steps = (end / dt).ceil() as u64;
    for k in 0..steps {
        let t0 = k as f64 * dt;
        // Let the controller run up to here; timers fire in order.
        tokio::time::sleep_until(origin + Duration::from_secs_f64(t0)).await;
        if let Some(f) = &mut fleet {
            if f.rx.has_changed().unwrap_or(false) {
                let snap = f.rx.borrow_and_update().clone();
                view.publish(compose(&snap));
            }
            chaos.apply(&f.market, t0);
            // Which replicas still answer (the gateway finds out by trying).
            alive.clear();
            for e in view.current().endpoints() {
                if e.spec.kind == Kind::Lease && f.mem.probe(&e.spec.url, None, MODEL).await.is_ok()
                {
                    alive.insert(e.spec.id.clone());
                }
            }
            if k % (60.0 / dt).max(1.0) as u64 == 0 && t0 >= warmup {
                let ledger = f.market.ledger();
                orphan_lease_s += 60.0 * f.orphans(&ledger) as f64;
                let ready = ready_leases(&view, None);
                out.peak_ready_leases = out.peak_ready_leases.max(ready);
            }
        }
        let bucket = (t0 / bucket_s) as usize;
        while out.series.len() <= bucket {
            out.series.push(Bucket {
                start_s: out.series.len() as f64 * bucket_s,
                regions: vec![RegionBucket::default(); regions.len()],
            });
        }
        for (i, r) in regions.iter().enumerate() {
            out.series[bucket].regions[i].ready_leases = ready_leases(&view, Some(&r.code));
        }
        requests.clear();
        trace.step(t0, dt, &mut requests);
        let now = Instant::now();
        for req in &requests {
            events.run_until(req.at);
            let client = (regions[req.region].lat, regions[req.region].lon);
            let routed = gw
                .route(MODEL, client, now, |e| alive.contains(&e.spec.id))
                .await;
            meter.record(
                MODEL,
                Some(client),
                matches!(routed.target, Target::Fallback(_)),
            );
            let penalty = f64::from(routed.dead_attempts) * cfg.connect_timeout.as_secs_f64();
            let (p, o) = (req.prompt_tokens, req.output_tokens);
            let counted = req.at >= warmup;
            let ttft = match &routed.target {
                Target::Lease(e) => {
                    let svc = cfg.service.service_s(p, o);
                    let (rep, _) = replicas.entry(e.spec.id.clone()).or_insert_with(|| {
                        (
                            Replica::new(cfg.service.batch_slots, warmup),
                            e.spec.price_per_hour_usd,
                        )
                    });
                    let adm = rep.admit(req.at + penalty, svc);
                    let to = (e.spec.region.lat, e.spec.region.lon);
                    let ttfb = adm.wait_s + cfg.service.prefill_s(p) + rtt_s(client, to);
                    events.push(
                        req.at + penalty + ttfb,
                        Due::FirstToken(e.clone(), secs(ttfb)),
                    );
                    events.push(adm.done_at, Due::Done(e.begin()));
                    if counted {
                        busy_slot_s += svc;
                    }
                    Some(penalty + ttfb)
                }
                Target::Fallback(e) => {
                    let f = &cfg.fallback;
                    let to = (f.lat, f.lon);
                    let ttfb =
                        f.base_ttft_s + f64::from(p) / f.prefill_tokens_per_s + rtt_s(client, to)
                            - f.tail_mean_s * (1.0 - tail_rng.f64()).ln();
                    let done = req.at + penalty + ttfb + f64::from(o) / FALLBACK_TOKENS_PER_S;
                    events.push(
                        req.at + penalty + ttfb,
                        Due::FirstToken(e.clone(), secs(ttfb)),
                    );
                    events.push(done, Due::Done(e.begin()));
                    if counted {
                        out.fallback_spend_usd += f.cost_usd(p, o);
                        *reasons.entry(routed.reason.as_str().into()).or_default() += 1;
                    }
                    Some(penalty + ttfb)
                }
                Target::Nothing => None,
            };
            let rb = &mut out.series[bucket].regions[req.region];
            rb.requests += 1;
            rb.overflow += u64::from(matches!(routed.target, Target::Fallback(_)));
            rb.slo_misses += u64::from(ttft.is_none_or(|t| t > cfg.slo_ttft.as_secs_f64()));
            if !counted {
                continue;
            }
            out.requests += 1;
            hist.record(ttft);
            if ttft.is_some() {
                out.served += 1;
                out.prompt_tokens += u64::from(p);
                out.output_tokens += u64::from(o);
            }
        }
    }
    // Settle the books at the end of the horizon.
    tokio::time::sleep_until(origin + Duration::from_secs_f64(end)).await;
    events.run_until(end);
    if let Some(t) = feed_task {
        t.abort();
    }
    if let Some(f) = fleet {
        let ledger = f.market.ledger();
        orphan_lease_s += 60.0 * f.orphans(&ledger) as f64;
        lease_books(&mut out, &ledger, warmup, end);
        out.idle_deployments_at_end = ledger.idle_deployments().len();
        let busy_usd: f64 = replicas
            .values()
            .map(|(r, price)| r.busy_seconds(end) / 3600.0 * price)
            .sum();
        if out.lease_spend_usd > 0.0 {
            out.idle_lease_spend_share = (1.0 - busy_usd / out.lease_spend_usd).max(0.0);
            let paid_slot_s = out.lease_hours * 3600.0 * f64::from(cfg.service.batch_slots);
            out.lease_slot_utilization = busy_slot_s / paid_slot_s;
        }
        f.handle.shutdown().await;
    }
    out.orphaned_lease_hours = orphan_lease_s / 3600.0;
    out.provider_failures = chaos.failures;
    out.status_null_episodes = chaos.null_episodes;
    out.total_spend_usd = out.lease_spend_usd + out.fallback_spend_usd;
    let tokens = (out.prompt_tokens + out.output_tokens) as f64;
    out.usd_per_1m_tokens = if tokens > 0.0 {
        out.total_spend_usd / tokens * 1e6
    } else {
        0.0
    };
    out.slo_attainment = hist.share_within(cfg.slo_ttft.as_secs_f64());
    out.ttft_p50_s = hist.quantile(0.50);
    out.ttft_p95_s = hist.quantile(0.95);
    out.ttft_p99_s = hist.quantile(0.99);
    let fallback_served: u64 = reasons.values().sum();
    out.overflow_share = if out.served > 0 {
        fallback_served as f64 / out.served as f64
    } else {
        0.0
    };
    out.reasons = reasons;
    Ok(out)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Ready lease endpoints, in one region or all.
fn ready_leases(view: &FleetView, region: Option<&str>) -> u32 {
    let state = view.current();
    let c = state.candidates(MODEL);
    c.primary
        .iter()
        .filter(|e| region.is_none_or(|r| e.spec.region.code == r))
        .count() as u32
}

/// The regions demand is attributed to, as the binary derives them from
/// the controller's pools.
fn region_codes(cfg: &EconConfig) -> Vec<String> {
    let mut codes: Vec<String> = cfg.pool.regions.iter().map(|r| r.code.clone()).collect();
    codes.sort();
    codes.dedup();
    codes
}

/// Lease spend and hours inside the measured window, from the market's own
/// ledger (not the controller's view of itself).
fn lease_books(out: &mut StrategyReport, ledger: &Ledger, from: f64, to: f64) {
    for d in &ledger.deployments {
        let Some(l) = &d.lease else { continue };
        let start = l.created_at.as_secs_f64().max(from);
        let stop = l.closed_at.map_or(to, |c| c.as_secs_f64()).min(to);
        let hours = (stop - start).max(0.0) / 3600.0;
        out.lease_hours += hours;
        out.lease_spend_usd += hours * l.price_usd_per_hour;
        out.leases_created += 1;
        if l.close_reason.is_some() && l.state != LeaseState::Active {
            out.leases_closed_by_provider += 1;
        }
    }
}
