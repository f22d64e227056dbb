//! One routing decision over 100 endpoints in 10 regions, with live load and latency data.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
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

/// This thread's on-CPU nanoseconds from Linux schedstat, if readable.
fn on_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Time `f` by on-CPU time, falling back to wall-clock time.
fn on_cpu(f: impl FnOnce()) -> Duration {
    let (cpu0, wall0) = (on_cpu_ns(), Instant::now());
    f();
    match (cpu0, on_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
        _ => wall0.elapsed(),
    }
}

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
        b.iter(|| black_box(scored.order(black_box(&req), &candidates)))
    });
    c.bench_function("route/p2c_100", |b| {
        b.iter(|| black_box(PowerOfTwo.order(black_box(&req), &candidates)))
    });
    // The same decision timed by on-CPU time: on a shared build machine
    // wall-clock figures mostly measure the other tenants.
    c.bench_function("route/score_100_cpu", |b| {
        b.iter_custom(|iters| {
            on_cpu(|| {
                for _ in 0..iters {
                    black_box(scored.order(black_box(&req), &candidates));
                }
            })
        })
    });
    drop(guards);
}

criterion_group!(benches, bench);
criterion_main!(benches);
