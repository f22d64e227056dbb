//! Every answer the fake gives is checked against the Console OpenAPI spec's
//! response schema for that path, method and status, so the fake cannot
//! drift from the real API. Skips when the reference spec is absent.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use leasegate_fake_console::{Control, FakeConfig, FakeConsole, FakeProvider, OWNER, schema};
use serde_json::{Value, json};

const KEY: &str = "spec-test-key";

const SDL: &str = r#"
version: "2.0"
services:
  replica:
    image: vllm/vllm-openai:v0.10.1
    args: ["--model", "m", "--api-key", "replica-key-0123456789"]
    expose:
      - port: 8000
        as: 80
        to:
          - global: true
profiles:
  compute:
    replica:
      resources:
        cpu: {units: 8}
        memory: {size: 64Gi}
        storage: [{size: 100Gi}]
        gpu:
          units: 1
          attributes:
            vendor:
              nvidia: [{model: h100, ram: 80Gi}]
  placement:
    lg-1-c-i:
      attributes: {location-region: eu-central}
      pricing:
        replica: {denom: uact, amount: 5000}
deployment:
  replica:
    lg-1-c-i: {profile: replica, count: 1}
"#;

struct Checker {
    spec: Value,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    base: String,
    errors: Vec<String>,
    checked: Vec<String>,
}

impl Checker {
    #[allow(clippy::unwrap_used, reason = "test helper")]
    /// Calls the fake and validates the answer against `template`'s schema.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("x-api-key", KEY);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(bytes))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16().to_string();
        let value: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let op = &self.spec["paths"][template][method.to_ascii_lowercase()];
        let sch = &op["responses"][&status]["content"]["application/json"]["schema"];
        if sch.is_null() {
            self.errors.push(format!(
                "{method} {template}: status {status} is not in the spec: {value}"
            ));
        } else {
            for e in schema::validate(&self.spec, sch, &value) {
                self.errors
                    .push(format!("{method} {template} {status}: {e}"));
            }
        }
        self.checked.push(format!("{method} {template} {status}"));
        value
    }
}

#[tokio::test]
async fn every_fake_answer_matches_the_console_spec() {
    // `../shared` beside the checkout; LEASEGATE_SHARED overrides it (worktrees).
    let shared = std::env::var_os("LEASEGATE_SHARED").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        std::path::PathBuf::from,
    );
    let path = shared.join("reference/akash/console-api-openapi.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("SKIP: {} is absent", path.display());
        return;
    };
    let spec: Value = serde_json::from_str(&text).unwrap();
    let fake = FakeConsole::start(FakeConfig {
        api_key: KEY.into(),
        providers: vec![
            FakeProvider {
                owner: "akash1p1".into(),
                bid_delay: Duration::ZERO,
                ..FakeProvider::default()
            },
            FakeProvider {
                owner: "akash1p2".into(),
                bid_delay: Duration::ZERO,
                price_uact: 4000.0,
                ..FakeProvider::default()
            },
        ],
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut c = Checker {
        spec,
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
        base: fake.url(),
        errors: Vec::new(),
        checked: Vec::new(),
    };
    let created = c
        .call(
            "POST",
            "/v1/deployments",
            "/v1/deployments",
            Some(json!({"data": {"sdl": SDL}})),
        )
        .await;
    let dseq = created["data"]["dseq"].as_str().unwrap().to_owned();
    let manifest = created["data"]["manifest"].as_str().unwrap().to_owned();
    let second = c
        .call(
            "POST",
            "/v1/deployments",
            "/v1/deployments",
            Some(json!({"data": {"sdl": SDL}})),
        )
        .await;
    let dseq2 = second["data"]["dseq"].as_str().unwrap().to_owned();
    let bids = c
        .call("GET", "/v1/bids", &format!("/v1/bids?dseq={dseq}"), None)
        .await;
    assert_eq!(bids["data"].as_array().unwrap().len(), 2);
    let lease = json!({"manifest": manifest, "leases": [{"dseq": dseq, "gseq": 1, "oseq": 1, "provider": "akash1p1"}]});
    c.call("POST", "/v1/leases", "/v1/leases", Some(lease.clone()))
        .await;
    c.call("POST", "/v1/leases", "/v1/leases", Some(lease))
        .await;
    let live = c
        .call(
            "GET",
            "/v1/deployments/{dseq}",
            &format!("/v1/deployments/{dseq}"),
            None,
        )
        .await;
    assert!(
        live["data"]["leases"][0]["status"]["services"]["replica"]["uris"][0].is_string(),
        "{live}"
    );
    c.call("GET", "/v1/bids", &format!("/v1/bids?dseq={dseq}"), None)
        .await;
    fake.control(Control::Unreachable {
        dseq: dseq.clone(),
        on: true,
    })
    .unwrap();
    let null = c
        .call(
            "GET",
            "/v1/deployments/{dseq}",
            &format!("/v1/deployments/{dseq}"),
            None,
        )
        .await;
    assert!(null["data"]["leases"][0]["status"].is_null());
    c.call(
        "POST",
        "/v1/deposit-deployment",
        "/v1/deposit-deployment",
        Some(json!({"data": {"dseq": dseq, "deposit": 2.5}})),
    )
    .await;
    c.call(
        "GET",
        "/v2/deployment-settings/{dseq}",
        &format!("/v2/deployment-settings/{dseq}"),
        None,
    )
    .await;
    c.call(
        "PATCH",
        "/v2/deployment-settings/{dseq}",
        &format!("/v2/deployment-settings/{dseq}"),
        Some(json!({"data": {"autoTopUpEnabled": false}})),
    )
    .await;
    c.call(
        "GET",
        "/v2/deployment-settings/{dseq}",
        "/v2/deployment-settings/42",
        None,
    )
    .await;
    let page = c
        .call(
            "GET",
            "/v1/deployments",
            "/v1/deployments?skip=1&limit=1",
            None,
        )
        .await;
    assert_eq!(page["data"]["pagination"]["hasMore"], false);
    assert_eq!(
        page["data"]["deployments"][0]["deployment"]["id"]["dseq"],
        dseq2.as_str()
    );
    let detail = c
        .call(
            "GET",
            "/v1/deployment/{owner}/{dseq}",
            &format!("/v1/deployment/{OWNER}/{dseq}"),
            None,
        )
        .await;
    assert_eq!(
        detail["other"]["groups"][0]["group_spec"]["name"],
        "lg-1-c-i"
    );
    c.call("GET", "/v1/providers", "/v1/providers", None).await;
    c.call("GET", "/v1/blocks", "/v1/blocks?limit=1", None)
        .await;
    {
        let reason = "unstable";
        fake.control(Control::CloseLease {
            dseq: dseq.clone(),
            reason: reason.into(),
        })
        .unwrap();
    }
    let closed = c
        .call(
            "GET",
            "/v1/deployments/{dseq}",
            &format!("/v1/deployments/{dseq}"),
            None,
        )
        .await;
    assert_eq!(closed["data"]["leases"][0]["reason"], "unstable");
    c.call(
        "DELETE",
        "/v1/deployments/{dseq}",
        &format!("/v1/deployments/{dseq}"),
        None,
    )
    .await;
    c.call("GET", "/v1/deployments", "/v1/deployments", None)
        .await;
    assert!(
        c.errors.is_empty(),
        "the fake drifted from the spec:\n{}",
        c.errors.join("\n")
    );
    assert!(c.checked.len() >= 18, "{:?}", c.checked);

    // The check can fail: a real answer with a field removed is caught.
    let mut broken = closed.clone();
    broken["data"]["leases"][0]
        .as_object_mut()
        .unwrap()
        .remove("price");
    let sch = &c.spec["paths"]["/v1/deployments/{dseq}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert!(!schema::validate(&c.spec, sch, &broken).is_empty());
}

#[tokio::test]
async fn the_api_key_is_required_where_the_spec_says() {
    let fake = FakeConsole::start(FakeConfig {
        api_key: KEY.into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for (path, want) in [
        ("/v1/deployments", 401),
        ("/v1/bids?dseq=1", 401),
        ("/v1/providers", 200),
        ("/v1/blocks?limit=1", 200),
    ] {
        let req = http::Request::get(format!("{}{path}", fake.url()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(
            client.request(req).await.unwrap().status().as_u16(),
            want,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_binary_serves_the_ledger_and_control_knobs() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-console"))
        .args(["--listen", "127.0.0.1:0", "--api-key", KEY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let send = |req: http::Request<Full<Bytes>>| client.request(req);
    let create = http::Request::post(format!("{url}/v1/deployments"))
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::from(
            json!({"data": {"sdl": SDL}}).to_string(),
        )))
        .unwrap();
    assert_eq!(send(create).await.unwrap().status().as_u16(), 201);
    let ledger = send(
        http::Request::get(format!("{url}/_ledger"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    let ledger: leasegate_fake_console::Ledger =
        serde_json::from_slice(&ledger.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(ledger.deployments.len(), 1);
    assert_eq!(ledger.deployments[0].group_name, "lg-1-c-i");
    let fault = json!({"op": "inject", "fault": {"method": "GET", "path_prefix": "/v1/deployments", "status": 500, "times": 1, "retry_after": null}});
    let ctl = http::Request::post(format!("{url}/_control"))
        .body(Full::new(Bytes::from(fault.to_string())))
        .unwrap();
    assert_eq!(send(ctl).await.unwrap().status().as_u16(), 200);
    let list = || {
        http::Request::get(format!("{url}/v1/deployments"))
            .header("x-api-key", KEY)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(list()).await.unwrap().status().as_u16(), 500);
    assert_eq!(send(list()).await.unwrap().status().as_u16(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
