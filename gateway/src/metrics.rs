//! Prometheus metrics: one process-wide recorder and the names every stage records under.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "leasegate_requests_total";
pub const ATTEMPTS: &str = "leasegate_upstream_attempts_total";
pub const FAILOVERS: &str = "leasegate_failovers_total";
pub const TTFT: &str = "leasegate_ttft_seconds";
pub const DURATION: &str = "leasegate_request_duration_seconds";
pub const IN_FLIGHT: &str = "leasegate_requests_in_flight";
pub const ENDPOINT_UP: &str = "leasegate_endpoint_available";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call and returns the handle to render it.
///
/// The `metrics` facade has one global recorder per process; several
/// gateways in one process (tests) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// One finished request, as the access log sees it.
pub fn record_request(model: &str, endpoint: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    metrics::counter!(REQUESTS, "model" => model.to_owned(), "endpoint" => endpoint.to_owned(), "status" => status)
        .increment(1);
    metrics::histogram!(DURATION, "model" => model.to_owned()).record(elapsed.as_secs_f64());
}

/// One upstream attempt and how it ended (`ok` or a failure reason).
pub fn record_attempt(endpoint: &str, outcome: &'static str) {
    metrics::counter!(ATTEMPTS, "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// A move to the next candidate, labelled with why the last one failed.
pub fn record_failover(reason: &'static str) {
    metrics::counter!(FAILOVERS, "reason" => reason).increment(1);
}

pub fn record_ttft(model: &str, endpoint: &str, ttft: Duration) {
    metrics::histogram!(TTFT, "model" => model.to_owned(), "endpoint" => endpoint.to_owned())
        .record(ttft.as_secs_f64());
}

pub fn in_flight(delta: f64) {
    metrics::gauge!(IN_FLIGHT).increment(delta);
}

pub fn endpoint_available(endpoint: &str, up: bool) {
    metrics::gauge!(ENDPOINT_UP, "endpoint" => endpoint.to_owned()).set(if up { 1.0 } else { 0.0 });
}
