//! The gateway → controller feed inside one process: demand per model and
//! region, queue pressure, overflow, and each lease endpoint's in-flight
//! count and health (drains close once in-flight reaches 0).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use leasegate_controller::demand::{Demand, EndpointReport, Signals};
use leasegate_fleet::Kind;
use tokio::task::JoinHandle;

use crate::{
    demand::{DemandMeter, queue_pressure},
    fleet::FleetView,
};

/// Reports every `every` until aborted.
pub fn spawn(
    meter: Arc<DemandMeter>,
    fleet: FleetView,
    signals: Signals,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reported = BTreeSet::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            report_once(&meter, &fleet, &signals, &mut reported);
        }
    })
}

/// One round. `reported` remembers the (model, region) keys sent before:
/// a key quiet in this window is reported at zero, so stale demand does
/// not hold a pool up.
pub fn report_once(
    meter: &DemandMeter,
    fleet: &FleetView,
    signals: &Signals,
    reported: &mut BTreeSet<(String, String)>,
) {
    let state = fleet.current();
    let sample = meter.take();
    let mut now_seen = BTreeSet::new();
    for d in &sample.demand {
        signals.report_demand(
            &d.model,
            &d.region,
            Demand {
                requests_per_sec: d.requests_per_sec,
                queue_pressure: queue_pressure(&state, &d.model),
                overflow_per_sec: d.overflow_per_sec,
            },
        );
        now_seen.insert((d.model.clone(), d.region.clone()));
    }
    for (model, region) in reported.difference(&now_seen) {
        signals.report_demand(
            model,
            region,
            Demand {
                queue_pressure: queue_pressure(&state, model),
                ..Demand::default()
            },
        );
    }
    reported.extend(now_seen);
    for e in state.endpoints() {
        if e.spec.kind == Kind::Lease {
            signals.report_endpoint(
                &e.spec.id,
                EndpointReport {
                    in_flight: e.in_flight(),
                    healthy: Some(e.is_available()),
                },
            );
        }
    }
}
