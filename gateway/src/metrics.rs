//! Prometheus metrics: one process-wide recorder and the names every stage records under.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashMapExt};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "leasegate_requests_total";
pub const ATTEMPTS: &str = "leasegate_upstream_attempts_total";
pub const FAILOVERS: &str = "leasegate_failovers_total";
pub const TTFT: &str = "leasegate_ttft_seconds";
pub const DURATION: &str = "leasegate_request_duration_seconds";
pub const IN_FLIGHT: &str = "leasegate_requests_in_flight";
pub const ENDPOINT_UP: &str = "leasegate_endpoint_available";

/// Label sets kept per map level; past this, recording looks the series up
/// in the registry each time, so a client inventing model names cannot grow
/// the cache without bound.
const MAX_CACHED: usize = 1024;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Filled once the recorder is installed: a handle taken before that would
/// stay a no-op forever.
static CACHE: OnceLock<Cache> = OnceLock::new();

/// Installs the recorder on first call and returns the handle to render it.
///
/// The `metrics` facade has one global recorder per process; several
/// gateways in one process (tests) share it.
pub fn install() -> PrometheusHandle {
    let handle = HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone();
    CACHE.get_or_init(Cache::new);
    handle
}

/// Registered handles for the per-request series.
///
/// Building a label set and finding it in the recorder's registry cost
/// thousands of instructions per request. A handle is an `Arc` to the
/// series' atomics, so each label set is looked up once and kept. The maps
/// are copied on the rare insert, so recording takes no lock.
struct Cache {
    in_flight: Gauge,
    /// Model, then endpoint.
    series: ArcSwap<HashMap<Box<str>, ByEndpoint>>,
    /// Endpoint, then attempt outcome.
    attempts: ArcSwap<HashMap<Box<str>, Arc<Labelled<&'static str>>>>,
}

type ByEndpoint = HashMap<Box<str>, Arc<Series>>;

/// The series of one model/endpoint pair, registered on first use so that
/// none appears in the exposition before it has a sample.
#[derive(Default)]
struct Series {
    duration: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    requests: Labelled<u16>,
}

/// Counters told apart by one small label (a status code, an outcome); a
/// pair sees few distinct values, so a list beats a map.
struct Labelled<L>(ArcSwap<Vec<(L, Counter)>>);

impl<L> Default for Labelled<L> {
    fn default() -> Self {
        Self(ArcSwap::from_pointee(Vec::new()))
    }
}

impl<L: Copy + PartialEq> Labelled<L> {
    fn increment(&self, label: L, register: impl FnOnce() -> Counter) {
        if let Some((_, c)) = self.0.load().iter().find(|(l, _)| *l == label) {
            c.increment(1);
            return;
        }
        let counter = register();
        counter.increment(1);
        self.0.rcu(|list| {
            let mut list = Vec::clone(list);
            if list.len() < MAX_CACHED && !list.iter().any(|(l, _)| *l == label) {
                list.push((label, counter.clone()));
            }
            list
        });
    }
}

impl Cache {
    fn new() -> Self {
        Self {
            in_flight: metrics::gauge!(IN_FLIGHT),
            series: ArcSwap::from_pointee(HashMap::new()),
            attempts: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// The pair's series; `None` when the cache is full.
    fn series(&self, model: &str, endpoint: &str) -> Option<Arc<Series>> {
        if let Some(s) = self.series.load().get(model).and_then(|e| e.get(endpoint)) {
            return Some(Arc::clone(s));
        }
        let fresh = Arc::new(Series::default());
        self.series.rcu(|map| {
            let mut map = HashMap::clone(map);
            let full = map.len() >= MAX_CACHED && !map.contains_key(model);
            if !full {
                let endpoints = map.entry(Box::from(model)).or_default();
                if endpoints.len() < MAX_CACHED {
                    endpoints
                        .entry(Box::from(endpoint))
                        .or_insert_with(|| Arc::clone(&fresh));
                }
            }
            map
        });
        // `rcu` returns the map it replaced; read the one now published.
        self.series.load().get(model)?.get(endpoint).cloned()
    }

    fn attempts(&self, endpoint: &str) -> Option<Arc<Labelled<&'static str>>> {
        if let Some(a) = self.attempts.load().get(endpoint) {
            return Some(Arc::clone(a));
        }
        let fresh = Arc::new(Labelled::default());
        self.attempts.rcu(|map| {
            let mut map = HashMap::clone(map);
            if map.len() < MAX_CACHED {
                map.entry(Box::from(endpoint))
                    .or_insert_with(|| Arc::clone(&fresh));
            }
            map
        });
        self.attempts.load().get(endpoint).cloned()
    }
}

fn series(model: &str, endpoint: &str) -> Option<Arc<Series>> {
    CACHE.get()?.series(model, endpoint)
}

/// One finished request, as the access log sees it.
pub fn record_request(model: &str, endpoint: &str, status: u16, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let register = || requests_counter(model, endpoint, status);
    match series(model, endpoint) {
        Some(s) => {
            s.requests.increment(status, register);
            s.duration
                .get_or_init(|| duration_histogram(model))
                .record(secs);
        }
        None => {
            register().increment(1);
            duration_histogram(model).record(secs);
        }
    }
}

fn requests_counter(model: &str, endpoint: &str, status: u16) -> Counter {
    metrics::counter!(REQUESTS, "model" => model.to_owned(), "endpoint" => endpoint.to_owned(), "status" => status.to_string())
}

fn duration_histogram(model: &str) -> Histogram {
    metrics::histogram!(DURATION, "model" => model.to_owned())
}

/// One upstream attempt and how it ended (`ok` or a failure reason).
pub fn record_attempt(endpoint: &str, outcome: &'static str) {
    let register =
        || metrics::counter!(ATTEMPTS, "endpoint" => endpoint.to_owned(), "outcome" => outcome);
    match CACHE.get().and_then(|c| c.attempts(endpoint)) {
        Some(a) => a.increment(outcome, register),
        None => register().increment(1),
    }
}

/// A move to the next candidate, labelled with why the last one failed.
pub fn record_failover(reason: &'static str) {
    metrics::counter!(FAILOVERS, "reason" => reason).increment(1);
}

pub fn record_ttft(model: &str, endpoint: &str, ttft: Duration) {
    let register = || metrics::histogram!(TTFT, "model" => model.to_owned(), "endpoint" => endpoint.to_owned());
    match series(model, endpoint) {
        Some(s) => s.ttft.get_or_init(register).record(ttft.as_secs_f64()),
        None => register().record(ttft.as_secs_f64()),
    }
}

pub fn in_flight(delta: f64) {
    match CACHE.get() {
        Some(c) => c.in_flight.increment(delta),
        None => metrics::gauge!(IN_FLIGHT).increment(delta),
    }
}

pub fn endpoint_available(endpoint: &str, up: bool) {
    metrics::gauge!(ENDPOINT_UP, "endpoint" => endpoint.to_owned()).set(if up { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_every_request_under_its_own_labels() {
        let handle = install();
        for status in [200, 200, 503] {
            record_request("cache-model", "cache-ep", status, Duration::from_millis(5));
        }
        record_ttft("cache-model", "cache-ep", Duration::from_millis(2));
        record_ttft("cache-model", "cache-ep", Duration::from_millis(3));
        record_attempt("cache-ep", "ok");
        record_attempt("cache-ep", "ok");
        record_attempt("cache-ep", "connect");
        let text = handle.render();
        let value = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        let req = |status| {
            format!("{REQUESTS}{{model=\"cache-model\",endpoint=\"cache-ep\",status=\"{status}\"}}")
        };
        assert_eq!(value(&req(200)).as_deref(), Some("2"), "{text}");
        assert_eq!(value(&req(503)).as_deref(), Some("1"), "{text}");
        let ttft = format!("{TTFT}_count{{model=\"cache-model\",endpoint=\"cache-ep\"}}");
        assert_eq!(value(&ttft).as_deref(), Some("2"), "{text}");
        let dur = format!("{DURATION}_count{{model=\"cache-model\"}}");
        assert_eq!(value(&dur).as_deref(), Some("3"), "{text}");
        let ok = format!("{ATTEMPTS}{{endpoint=\"cache-ep\",outcome=\"ok\"}}");
        assert_eq!(value(&ok).as_deref(), Some("2"), "{text}");
        let connect = format!("{ATTEMPTS}{{endpoint=\"cache-ep\",outcome=\"connect\"}}");
        assert_eq!(value(&connect).as_deref(), Some("1"), "{text}");
    }
}
