//! Captures every log line and error text during acquisitions against the
//! fake Console (by the market alone, then by the whole controller) and
//! finds neither the API key nor any replica key in them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

mod support;

#[path = "akash/support.rs"]
mod akash_support;

use akash_support::*;
use leasegate_controller::akash::sdl::Expose;
use leasegate_controller::akash::{AkashMarket, sdl};
use leasegate_controller::market::Market;
use leasegate_fake_console::Fault;
use leasegate_fleet::{Engine, Secret};

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
    let mut secrets = vec![
        API_KEY.to_owned(),
        REPLICA_KEY.to_owned(),
        "wrong-key-zzzzzzzz".to_owned(),
    ];
    controller_acquisition(&fake, &mut errors, &mut secrets).await;
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("lease created"), "logs were captured: {logs}");
    assert!(logs.contains("replica ready"), "controller logs captured");
    for text in errors.iter().chain(std::iter::once(&logs)) {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked in: {text}"
            );
        }
    }
}

/// The whole controller acquires a replica through server errors that echo
/// the SDL and the manifest; returns (in `errors`) the status it reports,
/// and (in `secrets`) every replica key it generated.
async fn controller_acquisition(
    fake: &leasegate_fake_console::FakeConsole,
    errors: &mut Vec<String>,
    secrets: &mut Vec<String>,
) {
    use leasegate_controller::Controller;
    use std::time::Duration;
    for (method, path, status) in [
        ("POST", "/v1/deployments", 400),
        ("POST", "/v1/leases", 400),
        ("GET", "/v1/deployments/", 500),
    ] {
        fake.inject(Fault {
            method: Some(method.into()),
            path_prefix: path.into(),
            status,
            times: 1,
            retry_after: None,
            echo_request: true,
        });
    }
    let path = store_path("secrets");
    let store = open_store(&path);
    let (h, rx) = Controller::start_with(
        controller_config(vec![controller_pool(1, 1)]),
        akash_deps(fake, store.clone()),
    );
    let mut last_errors = Vec::new();
    let ready = wait_real(Duration::from_secs(30), || {
        if let Ok(st) = h.status() {
            last_errors.extend(st.pools.iter().filter_map(|p| p.last_error.clone()));
            errors.push(serde_json::to_string(&st).unwrap());
        }
        rx.borrow().ready().count() == 1
    })
    .await;
    assert!(ready, "{:#?}", fake.ledger());
    assert!(
        !last_errors.is_empty(),
        "the injected errors reached the status: the test can fail"
    );
    // The lease error echoes the manifest: its key position must read
    // `[redacted]` (the SDL echo is truncated before the key).
    assert!(
        last_errors
            .iter()
            .any(|e| e.contains("lease rejected") && e.contains("redacted")),
        "{last_errors:?}"
    );
    errors.extend(last_errors);
    errors.push(format!("{:?}", rx.borrow()));
    h.shutdown().await;
    for i in store.intents(true).unwrap() {
        secrets.extend(i.replica_key.map(|k| k.expose().to_owned()));
    }
    assert!(
        secrets.len() >= 5,
        "replica keys of every intent: {}",
        secrets.len()
    );
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}
