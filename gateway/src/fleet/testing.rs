//! Snapshot builders shared by the fleet, route and health unit tests.

use std::sync::Arc;

use leasegate_fleet::{Endpoint, Engine, Kind, Region, Snapshot, State};

use crate::fleet::FleetView;
use crate::health::HealthConfig;

pub(crate) fn ep(id: &str, kind: Kind, models: &[&str]) -> Endpoint {
    Endpoint {
        id: id.into(),
        url: format!("http://127.0.0.1:1/{id}"),
        kind,
        engine: Engine::Vllm,
        models: models.iter().map(|m| (*m).to_string()).collect(),
        region: Region {
            code: "eu-central".into(),
            country: Some("DE".into()),
            lat: 50.1,
            lon: 8.7,
        },
        provider: None,
        price_per_hour_usd: 1.0,
        max_concurrency: 4,
        state: State::Ready,
        credential: None,
    }
}

/// Moves `e` to region `code` at (lat, lon).
pub(crate) fn at(mut e: Endpoint, code: &str, lat: f64, lon: f64) -> Endpoint {
    e.region = Region {
        code: code.into(),
        country: None,
        lat,
        lon,
    };
    e
}

pub(crate) fn snap(version: u64, endpoints: Vec<Endpoint>) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        version,
        generated_at_ms: 0,
        endpoints,
    })
}

pub(crate) fn view_with(endpoints: Vec<Endpoint>) -> FleetView {
    let view = FleetView::new(HealthConfig::default());
    view.publish(snap(1, endpoints));
    view
}
