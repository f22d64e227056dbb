//! Captures every log line and error text during acquisitions against the
//! fake Console and finds neither the API key nor the replica key in them.

use std::io::Write;
use std::sync::{Arc, Mutex};

#[path = "akash/support.rs"]
mod support;

use leasegate_controller::akash::sdl::Expose;
use leasegate_controller::akash::{AkashMarket, sdl};
use leasegate_controller::market::Market;
use leasegate_fake_console::Fault;
use leasegate_fleet::{Engine, Secret};
use support::*;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_api_key_or_replica_key_in_logs_or_errors_during_an_acquisition() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, in a binary of its own: a scoped subscriber misses callsites
    // whose interest other threads cached first.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (fake, m) = setup().await;
    let mut errors = Vec::new();
    // Careless server errors that echo the request (SDL and manifest).
    fake.inject(Fault {
        method: Some("POST".into()),
        path_prefix: "/v1/deployments".into(),
        status: 400,
        times: 1,
        retry_after: None,
        echo_request: true,
    });
    let p = params(Engine::Vllm, Expose::Port);
    let err = m
        .create_deployment(&sdl::render(&p).unwrap(), &tag("s"))
        .await
        .unwrap_err();
    errors.push(format!("{err} {err:?}"));
    assert!(
        errors[0].contains("injected failure"),
        "the body is kept: {}",
        errors[0]
    );
    fake.inject(Fault {
        method: Some("POST".into()),
        path_prefix: "/v1/leases".into(),
        status: 400,
        times: 1,
        retry_after: None,
        echo_request: true,
    });
    let created = m
        .create_deployment(&sdl::render(&p).unwrap(), &tag("s"))
        .await
        .unwrap();
    let bid = m.bids(&created.dseq).await.unwrap().remove(0);
    let err = m
        .create_lease(&bid.id, &created.manifest)
        .await
        .unwrap_err();
    errors.push(format!("{err} {err:?}"));
    assert!(
        created.manifest.contains(REPLICA_KEY),
        "the test must be able to fail"
    );
    // A wrong API key is refused without showing the key it was given.
    let wrong = AkashMarket::new(&fake.url(), Secret::new("wrong-key-zzzzzzzz"), policy()).unwrap();
    let err = wrong.bids(&created.dseq).await.unwrap_err();
    errors.push(format!("{err} {err:?} {wrong:?}"));
    let (dseq, _) = acquire(&m, &p, &tag("s2")).await;
    m.close(&dseq).await.unwrap();
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("lease created"), "logs were captured: {logs}");
    for text in errors.iter().chain(std::iter::once(&logs)) {
        for secret in [API_KEY, REPLICA_KEY, "wrong-key-zzzzzzzz"] {
            assert!(!text.contains(secret), "{secret} leaked in: {text}");
        }
    }
}
