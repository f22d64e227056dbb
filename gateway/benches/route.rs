//! One routing decision over 100 endpoints in 10 regions, with live load and latency data.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use leasegate_fleet::{Endpoint, Engine, Kind, Region, Snapshot, State};
use leasegate_gateway::fleet::{FleetView, Outcome};
use leasegate_gateway::health::HealthConfig;
use leasegate_gateway::route::{PowerOfTwo, RouteRequest, ScoreSelector, Selector};

fn fleet() -> FleetView {
    let endpoints = (0..100u32)
        .map(|i| {
            let region = i % 10;
            Endpoint {
                id: format!("ep-{i}"),
                url: format!("http://10.0.{region}.{i}:8000"),
                kind: if i >= 98 { Kind::Fallback } else { Kind::Lease },
                engine: Engine::Vllm,
                models: vec!["m".into()],
                region: Region {
                    code: format!("r{region}"),
                    country: None,
                    lat: -60.0 + 12.0 * f64::from(region),
                    lon: -170.0 + 34.0 * f64::from(region),
                },
                provider: None,
                price_per_hour_usd: 1.0 + f64::from(i % 7) / 10.0,
                max_concurrency: 16,
                state: State::Ready,
                credential: None,
            }
        })
        .collect();
    let view = FleetView::new(HealthConfig::default());
    view.publish(Arc::new(Snapshot {
        version: 1,
        generated_at_ms: 0,
        endpoints,
    }));
    view
}

/// Routing decisions made, printed at exit: with `perf stat -e cycles:u`
/// around a `--profile-time` run it gives cycles per decision, a figure the
/// other tenants of a shared build machine cannot inflate.
static DECISIONS: AtomicU64 = AtomicU64::new(0);

fn bench(c: &mut Criterion) {
    let view = fleet();
    let state = view.current();
    // Live data as in steady state: measured latency, some load, a few errors.
    let mut guards = Vec::new();
    for (i, h) in state.endpoints().iter().enumerate() {
        h.report(Outcome::Success {
            ttfb: Duration::from_millis(100 + (i as u64 % 13) * 10),
        });
        guards.extend((0..i % 5).map(|_| h.begin()));
    }
    let candidates = state.candidates("m");
    let req = RouteRequest {
        client_location: Some((50.1, 8.7)),
        ..RouteRequest::new("m")
    };
    let scored = ScoreSelector::default();
    c.bench_function("route/score_100", |b| {
        b.iter(|| {
            DECISIONS.fetch_add(1, Ordering::Relaxed);
            black_box(scored.order(black_box(&req), &candidates))
        })
    });
    // What the gateway does: the order is cut to the attempt limit plus spares.
    let bounded = RouteRequest {
        limit: Some(6),
        ..req
    };
    c.bench_function("route/bounded_score_100", |b| {
        b.iter(|| {
            DECISIONS.fetch_add(1, Ordering::Relaxed);
            black_box(scored.order(black_box(&bounded), &candidates))
        })
    });
    c.bench_function("route/p2c_100", |b| {
        b.iter(|| {
            DECISIONS.fetch_add(1, Ordering::Relaxed);
            black_box(PowerOfTwo.order(black_box(&req), &candidates))
        })
    });
    drop(guards);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    eprintln!("routing decisions: {}", DECISIONS.load(Ordering::Relaxed));
}
