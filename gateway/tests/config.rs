//! Config files: every example parses, and `check-config` names each problem by its key path.

use std::{path::Path, process::Command};

use leasegate_gateway::config::Config;

fn repo_config_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
fn every_example_config_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the example configs in config/");
}

#[test]
fn the_full_example_has_what_it_documents() {
    let c = Config::load(&repo_config_dir().join("leasegate.toml")).unwrap();
    assert_eq!(c.endpoints.len(), 2);
    assert_eq!(c.endpoints[0].region.coords, Some((50.11, 8.68)));
    assert_eq!(c.endpoints[1].region.coords, None);
    assert_eq!(c.fallbacks[0].to_fleet().url, "https://api.openai.com");
    assert_eq!(
        c.fallbacks[0].upstream_model("llama-3.1-8b-instruct"),
        Some("gpt-4o-mini")
    );
    assert_eq!(c.limits.max_body_bytes, 32 * 1024 * 1024);
    assert_eq!(c.client_keys.0.len(), 1);
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
    assert!(stdout.contains("11 problem(s)"), "{stdout}");

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
