//! Cost tests: fallback list prices, the lease estimator over simulated hours, metric labels.

use std::time::Duration;

use leasegate_fleet::{Engine, Region, State as EpState};
use metrics_exporter_prometheus::PrometheusBuilder;

use std::collections::BTreeMap;

use super::*;

fn endpoint(id: &str, kind: Kind, price_per_hour_usd: f64) -> Endpoint {
    Endpoint {
        id: id.into(),
        url: "http://127.0.0.1:1".into(),
        kind,
        engine: Engine::Vllm,
        models: vec!["m".into()],
        region: Region {
            code: "x".into(),
            country: None,
            lat: 0.0,
            lon: 0.0,
        },
        provider: None,
        price_per_hour_usd,
        max_concurrency: 8,
        state: EpState::Ready,
        credential: None,
    }
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
}

fn prices() -> HashMap<String, FallbackPrice> {
    HashMap::from_iter([(
        "fb".to_owned(),
        FallbackPrice {
            input_per_1m_usd: 2.0,
            output_per_1m_usd: 8.0,
        },
    )])
}

#[derive(Debug, Default)]
struct Tally(Mutex<Vec<(Option<String>, f64)>>);

impl SpendSink for Tally {
    fn spent(&self, key: Option<&str>, _model: &str, spend: &Spend) {
        self.0.lock().push((key.map(str::to_owned), spend.usd));
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_is_billed_per_million_input_and_output_tokens() {
    let tally = Arc::new(Tally::default());
    let rec = CostRecorder::new(prices(), None).with_sink(tally.clone());
    let fb = endpoint("fb", Kind::Fallback, 0.0);
    let s = rec.record(&Charge {
        model: "m",
        endpoint: &fb,
        key: Some("team-a"),
        usage: usage(1000, 500),
    });
    assert_eq!(s.path, Path::Fallback);
    assert!((s.usd - 0.006).abs() < 1e-12, "{s:?}");
    assert_eq!(*tally.0.lock(), [(Some("team-a".to_owned()), s.usd)]);
}

#[tokio::test(start_paused = true)]
async fn a_steady_lease_hour_adds_up_to_its_hourly_price() {
    let rec = CostRecorder::new(HashMap::new(), None);
    let lease = endpoint("l1", Kind::Lease, 3.6);
    let charge = Charge {
        model: "m",
        endpoint: &lease,
        key: None,
        usage: usage(600, 400),
    };
    // The first request pays for the first minute of the lease.
    let first = rec.record(&charge).usd;
    assert!((first - 3.6 / 60.0).abs() < 1e-9, "{first}");
    for _ in 0..59 {
        tokio::time::advance(Duration::from_secs(60)).await;
        rec.record(&charge);
    }
    let mut second_hour = 0.0;
    for _ in 0..60 {
        tokio::time::advance(Duration::from_secs(60)).await;
        second_hour += rec.record(&charge).usd;
    }
    assert!((second_hour - 3.6).abs() < 1e-9, "{second_hour}");
    // 60k tokens an hour at $3.6/h is $60 per 1M.
    let per_1m = rec.usd_per_1m(&lease).unwrap();
    assert!((per_1m - 60.0).abs() < 1e-6, "{per_1m}");
}

#[tokio::test(start_paused = true)]
async fn a_busier_lease_is_cheaper_per_token() {
    let rec = CostRecorder::new(HashMap::new(), None);
    let lease = endpoint("l1", Kind::Static, 2.0);
    let charge = |n| Charge {
        model: "m",
        endpoint: &lease,
        key: None,
        usage: usage(n, 0),
    };
    tokio::time::advance(Duration::from_secs(600)).await;
    let quiet = rec.record(&charge(100)).usd / 100.0;
    let busy = rec.record(&charge(10_000)).usd / 10_000.0;
    assert!(busy < quiet);
}

#[test]
fn metrics_carry_model_path_and_key_name_and_cost_per_million() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _g = rt.enter();
        let rec = CostRecorder::new(prices(), None);
        let fb = endpoint("fb", Kind::Fallback, 0.0);
        for key in [Some("team-a"), Some("team-a"), None] {
            rec.record(&Charge {
                model: "m",
                endpoint: &fb,
                key,
                usage: usage(1000, 500),
            });
        }
    });
    let text = handle.render();
    assert!(
        text.contains(r#"leasegate_tokens_total{model="m",path="fallback",key="team-a"} 3000"#),
        "{text}"
    );
    assert!(text.contains(r#"leasegate_tokens_total{model="m",path="fallback",key="-"} 1500"#));
    assert!(
        text.contains(r#"leasegate_cost_usd_total{model="m",path="fallback",key="team-a"} 0.012"#)
    );
    // (1000 × 2 + 500 × 8) / 1500 tokens = $4 per 1M.
    assert!(
        text.contains(r#"leasegate_cost_per_1m_tokens_usd{model="m",path="fallback"} 4"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_summary_compares_with_sending_everything_to_the_fallback() {
    let list = prices();
    let rec = CostRecorder::new(prices(), None).with_list_prices(
        HashMap::from_iter([("m".to_owned(), list["fb"])]),
        BTreeMap::from([("alias".to_owned(), "m".to_owned())]),
    );
    let lease = endpoint("l1", Kind::Lease, 0.6);
    let fb = endpoint("fb", Kind::Fallback, 0.0);
    tokio::time::advance(Duration::from_secs(3600)).await;
    let on_lease = rec.record(&Charge {
        model: "alias",
        endpoint: &lease,
        key: None,
        usage: usage(100_000, 50_000),
    });
    let on_fb = rec.record(&Charge {
        model: "m",
        endpoint: &fb,
        key: None,
        usage: usage(1000, 500),
    });
    let s = rec.summary();
    assert_eq!(s.tokens, 151_500);
    // $0.6/h lease for its first minute, against 100k in × $2 + 50k out × $8 per 1M.
    assert!((s.lease_usd - on_lease.usd).abs() < 1e-12 && (on_lease.usd - 0.01).abs() < 1e-9);
    assert!((s.fallback_usd - on_fb.usd).abs() < 1e-12);
    assert!((s.hyperscaler_usd - (0.6 + 0.006)).abs() < 1e-9, "{s:?}");
    assert!((s.saving_usd() - (0.606 - 0.01 - 0.006)).abs() < 1e-9);
    let rows = rec.by_model();
    let row = |model: &str, path: Path| {
        rows.iter()
            .find(|r| r.model == model && r.path == path)
            .map(|r| r.spend)
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    let alias = row("alias", Path::Lease).unwrap();
    assert_eq!(alias.tokens, 150_000);
    assert!((alias.usd - 0.01).abs() < 1e-9 && (alias.hyperscaler_usd - 0.6).abs() < 1e-9);
    let m = row("m", Path::Fallback).unwrap();
    assert_eq!(m.tokens, 1500);
    assert!((m.usd - m.hyperscaler_usd).abs() < 1e-12 && (m.usd - 0.006).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_recorder_of_a_reloaded_config_keeps_counting_from_where_the_last_stopped() {
    let old = CostRecorder::new(prices(), None);
    let fb = endpoint("fb", Kind::Fallback, 0.0);
    let charge = Charge {
        model: "m",
        endpoint: &fb,
        key: None,
        usage: usage(1000, 500),
    };
    old.record(&charge);
    tokio::time::advance(Duration::from_secs(10)).await;
    let new = CostRecorder::new(prices(), None).carrying(&old);
    assert_eq!(new.since(), old.since());
    assert_eq!(new.summary().tokens, 1500);
    new.record(&charge);
    assert_eq!(new.summary().tokens, 3000);
    assert_eq!(old.summary(), new.summary());
    assert_eq!(new.by_model()[0].spend.tokens, 3000);
}
