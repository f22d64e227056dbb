//! The gateway → controller feed: demand per model and region, queue
//! pressure, overflow, and each lease endpoint's in-flight count and health
//! (drains close once in-flight reaches 0). In one process it writes the
//! controller's `Signals`; across processes it is `POST /demand` on the
//! controller's admin listener.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use leasegate_controller::demand::{Demand, EndpointReport, Signals};
use leasegate_fleet::{Kind, Secret};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::{
    demand::{DemandMeter, queue_pressure},
    fleet::FleetView,
    upstream::HttpClient,
};

/// One round of reports, as sent over HTTP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub demand: Vec<DemandLine>,
    pub endpoints: Vec<EndpointLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemandLine {
    pub model: String,
    pub region: String,
    pub requests_per_sec: f64,
    pub queue_pressure: f64,
    pub overflow_per_sec: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointLine {
    pub id: String,
    pub in_flight: u32,
    pub healthy: Option<bool>,
}

impl Report {
    /// Hands the report to the controller's signals.
    pub fn apply(&self, signals: &Signals) {
        for d in &self.demand {
            signals.report_demand(
                &d.model,
                &d.region,
                Demand {
                    requests_per_sec: d.requests_per_sec,
                    queue_pressure: d.queue_pressure,
                    overflow_per_sec: d.overflow_per_sec,
                },
            );
        }
        for e in &self.endpoints {
            signals.report_endpoint(
                &e.id,
                EndpointReport {
                    in_flight: e.in_flight,
                    healthy: e.healthy,
                },
            );
        }
    }
}

/// Where reports go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// The controller in this process.
    Local(Signals),
    /// `POST {base_url}/demand` with the admin token.
    Remote(Box<Remote>),
}

/// A controller in another process.
#[derive(Clone, Debug)]
pub struct Remote {
    pub client: HttpClient,
    pub base_url: String,
    pub token: Option<Secret>,
}

/// Reports every `every` until aborted.
pub fn spawn(
    meter: Arc<DemandMeter>,
    fleet: FleetView,
    sink: Sink,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reported = BTreeSet::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let report = collect(&meter, &fleet, &mut reported);
            match &sink {
                Sink::Local(signals) => report.apply(signals),
                Sink::Remote(r) => {
                    if let Err(e) =
                        post(&r.client, &r.base_url, r.token.as_ref(), &report, every).await
                    {
                        tracing::debug!(error = %e, "demand report not delivered");
                    }
                }
            }
        }
    })
}

/// One round. `reported` remembers the (model, region) keys sent before:
/// a key quiet in this window is reported at zero, so stale demand does
/// not hold a pool up.
pub fn collect(
    meter: &DemandMeter,
    fleet: &FleetView,
    reported: &mut BTreeSet<(String, String)>,
) -> Report {
    let state = fleet.current();
    let sample = meter.take();
    let mut out = Report::default();
    let mut now_seen = BTreeSet::new();
    for d in sample.demand {
        now_seen.insert((d.model.clone(), d.region.clone()));
        out.demand.push(DemandLine {
            queue_pressure: queue_pressure(&state, &d.model),
            model: d.model,
            region: d.region,
            requests_per_sec: d.requests_per_sec,
            overflow_per_sec: d.overflow_per_sec,
        });
    }
    for (model, region) in reported.difference(&now_seen) {
        out.demand.push(DemandLine {
            model: model.clone(),
            region: region.clone(),
            requests_per_sec: 0.0,
            queue_pressure: queue_pressure(&state, model),
            overflow_per_sec: 0.0,
        });
    }
    reported.extend(now_seen);
    out.endpoints = state
        .endpoints()
        .iter()
        .filter(|e| e.spec.kind == Kind::Lease)
        .map(|e| EndpointLine {
            id: e.spec.id.clone(),
            in_flight: e.in_flight(),
            healthy: Some(e.is_available()),
        })
        .collect();
    out
}

async fn post(
    client: &HttpClient,
    base_url: &str,
    token: Option<&Secret>,
    report: &Report,
    timeout: Duration,
) -> Result<(), String> {
    let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    let mut req = http::Request::post(format!("{}/demand", base_url.trim_end_matches('/')))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", t.expose()),
        );
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}
