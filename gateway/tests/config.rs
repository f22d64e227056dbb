//! Config files and the CLI: every example parses, `check-config` names each problem by key path, quick start and `serve` answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;
use std::{path::Path, process::Command};

use leasegate_gateway::{
    cli::unified::{self, Defaults},
    config::Config,
};

fn repo_config_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// `config/akash.toml` is the `[market.akash]` table on its own (its
/// header says so): checked as that table of a whole file.
fn as_market_akash(text: &str) -> String {
    let akash: toml::Table = text.parse().unwrap();
    let mut market = toml::Table::new();
    market.insert("kind".into(), "akash".into());
    market.insert("akash".into(), akash.into());
    let mut file = toml::Table::new();
    file.insert("market".into(), market.into());
    toml::to_string(&file).unwrap()
}

#[test]
fn every_example_config_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // The binary's loader: gateway and controller sections alike.
            let text = std::fs::read_to_string(&path).unwrap();
            let text = if path.ends_with("akash.toml") {
                as_market_akash(&text)
            } else {
                text
            };
            if let Err(e) = unified::parse(&text, Defaults::None) {
                panic!("{}: {e:?}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the example configs in config/");
}

#[test]
fn the_full_example_has_what_it_documents() {
    let c = Config::load(&repo_config_dir().join("leasegate.toml")).unwrap();
    assert_eq!(c.endpoints.len(), 2);
    assert_eq!(c.endpoints[0].region.coords, Some((50.11, 8.68)));
    // A known region code without lat/lon takes the catalogue's coordinates.
    let known = leasegate_fleet::region::lookup("na-us-west").map(|r| (r.lat, r.lon));
    assert!(known.is_some());
    assert_eq!(c.endpoints[1].region.coords, known);
    assert_eq!(c.fallbacks[0].to_fleet().url, "https://api.openai.com");
    assert_eq!(
        c.fallbacks[0].upstream_model("llama-3.1-8b-instruct"),
        Some("gpt-4o-mini")
    );
    assert_eq!(c.limits.max_body_bytes, 32 * 1024 * 1024);
    assert_eq!(c.keys.iter().count(), 2);
}

const BAD: &str = r#"
colour = "red"

[listen]
api = "localhost"

[timeouts]
connect = "soon"
inter_chunk = "0s"

[auth]
client_key_sha256 = ["sk-plaintext-key"]

[[endpoints]]
url = "http://a:1"
models = ["m"]

[[endpoints]]
url = "http://b:1"
models = []

[[endpoints]]
url = "/v1"
models = ["m"]
engine = "llamacpp"
lat = 10.0

[[endpoints]]
url = "http://d:1"
models = ["m"]
urll = "typo"

[[fallbacks]]
url = "https://api.example.com"
models = {}

[geo]
trusted_proxies = ["10.0.0.0/8", "nope"]
"#;

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let problems = Config::parse(BAD).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let expect = [
        "colour: unknown key",
        "listen.api: `localhost` is not an IP:port address",
        "timeouts.connect: `soon` is not a duration",
        "timeouts.inter_chunk: must be greater than zero",
        "auth.client_key_sha256[0]: expected 64 hex characters",
        "endpoints[1].models: at least one model is required",
        "endpoints[2].url: relative URL without a base",
        "endpoints[2].engine: `llamacpp` is not one of vllm, tgi, openai",
        "endpoints[2].lat: lat and lon go together",
        "endpoints[3]: unknown field `urll`",
        "fallbacks[0].models: map at least one client model name",
        "geo.trusted_proxies[1]: `nope` is not an IP or CIDR",
    ];
    for e in expect {
        assert!(
            shown.iter().any(|s| s.starts_with(e)),
            "missing `{e}` in {shown:#?}"
        );
    }
    assert_eq!(shown.len(), expect.len(), "{shown:#?}");
}

#[test]
fn check_config_exits_non_zero_and_prints_every_problem() {
    let dir = std::env::temp_dir().join(format!("leasegate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, BAD).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("endpoints[2].url: relative URL without a base"),
        "{stdout}"
    );
    assert!(stdout.contains("12 problem(s)"), "{stdout}");

    let good = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("check-config")
        .arg(repo_config_dir().join("leasegate.toml"))
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_akash_market_is_built_from_its_section_and_wants_its_key() {
    let dir = std::env::temp_dir().join(format!("leasegate-akash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let akash = std::fs::read_to_string(repo_config_dir().join("akash.toml")).unwrap();
    let mut text = as_market_akash(&akash);
    text.push_str(&format!(
        "\n[controller]\nstate_file = {:?}\nadmin = \"127.0.0.1:0\"\n",
        dir.join("state.sqlite").display().to_string()
    ));
    let cfg = dir.join("akash.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["controller", "--config"])
        .arg(&cfg)
        .env_remove("AKASH_CONSOLE_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("akash market") && stderr.contains("AKASH_CONSOLE_API_KEY"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `leasegate gateway --endpoint SPEC` on loopback ports of its own.
async fn quick_start(spec: String) -> support::Child {
    tokio::task::spawn_blocking(move || {
        support::spawn_leasegate(&[
            "gateway",
            "--endpoint",
            &spec,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn quick_start_discovers_each_endpoints_models() {
    let r = support::replica(&["m1", "m2"]).await;
    let spec = format!("{},region=eu-central,max_concurrency=4", r.url());
    let child = quick_start(spec).await;
    let models = support::get(child.1, "/v1/models").await.json();
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    let reply = support::post(child.1, "/v1/chat/completions", support::chat("m2", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// mimalloc advises its arenas for transparent huge pages, which cost each
/// held stream half again in RSS; the binary turns them off for itself.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[tokio::test]
async fn the_binary_runs_with_transparent_huge_pages_off() {
    let r = support::replica(&["m"]).await;
    let spec = r.url();
    let child = quick_start(spec).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("skipped: this kernel's /proc/PID/status has no THP_enabled line");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// Starts the real binary and reads both announced addresses (API, admin).
fn spawn_with_admin(args: &[&str]) -> (support::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = |prefix: &str| -> std::net::SocketAddr {
        let line = lines.next().expect("a line on stdout").unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected line: {line}"))
            .parse()
            .unwrap()
    };
    let api = addr("leasegate listening on http://");
    let admin = addr("leasegate admin on http://");
    (support::Child(child, api), admin)
}

/// Polls `/v1/models` until `model` is listed (the controller leases the
/// fleet first); bounded.
async fn until_served(api: std::net::SocketAddr, model: &str) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while std::time::Instant::now() < end {
        if support::get(api, "/v1/models").await.text().contains(model) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{model} not served within 90s");
}

#[tokio::test]
async fn serve_answers_from_the_demo_fleet() {
    let dir = std::env::temp_dir().join(format!("leasegate-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("serve.toml");
    let state = dir.join("state.sqlite");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\napi = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[controller]\nstate_file = {:?}\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    let cfg_arg = cfg.display().to_string();
    let (child, admin) =
        tokio::task::spawn_blocking(move || spawn_with_admin(&["serve", "--config", &cfg_arg]))
            .await
            .unwrap();
    until_served(child.1, "llama-3.1-8b-instruct").await;
    let reply = support::post(
        child.1,
        "/v1/chat/completions",
        support::chat("llama-3.1-8b-instruct", true),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().ends_with("data: [DONE]\n\n"));

    // `status` asks the admin listener and prints pools, leases and spend.
    let admin_url = format!("http://{admin}");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["status", "--admin", &admin_url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    println!("{table}");
    for want in ["POOL", "llama", "PROVIDER", "RUNWAY", "spend: $"] {
        assert!(table.contains(want), "`{want}` missing from:\n{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains("akash1sim-") && l.contains("ready")),
        "no ready lease in:\n{table}"
    );
    drop(child);
    std::fs::remove_dir_all(&dir).ok();
}
