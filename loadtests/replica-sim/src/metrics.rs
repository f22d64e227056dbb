//! `/metrics` in Prometheus text format, named like the engine being simulated.

use std::fmt::Write;

use bytes::Bytes;

use crate::behavior::{Behavior, Engine};
use crate::state::Shared;

/// Renders the gauges a router reads to judge load: queued and running requests.
pub(crate) fn render(shared: &Shared, behavior: &Behavior) -> Bytes {
    let stats = shared.stats();
    let (waiting_name, running_name) = match behavior.engine {
        Engine::Vllm => ("vllm:num_requests_waiting", "vllm:num_requests_running"),
        Engine::Tgi => ("tgi_queue_size", "tgi_batch_current_size"),
    };
    let mut out = String::with_capacity(512);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        waiting_name,
        "gauge",
        "Requests waiting for a slot.",
        shared.waiting(),
    );
    metric(
        running_name,
        "gauge",
        "Requests being generated.",
        shared.running(),
    );
    metric(
        "replica_sim_requests_total",
        "counter",
        "Requests received.",
        stats.requests,
    );
    metric(
        "replica_sim_in_flight",
        "gauge",
        "Requests being served.",
        stats.in_flight,
    );
    metric(
        "replica_sim_errors_injected_total",
        "counter",
        "Injected errors.",
        stats.errors_injected,
    );
    Bytes::from(out)
}
