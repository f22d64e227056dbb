//! The official `openai` Python client against the gateway: chat, streaming, models, embeddings, errors.
//!
//! Needs `python3` (CI installs it); the client is pip-installed into a venv
//! under `target/sdk-venv` on first run and reused afterwards.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::support::*;

/// The client version the test is pinned to.
const OPENAI_VERSION: &str = "1.109.1";

fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("sdk-venv")
}

/// Creates the venv with the pinned client unless it is already there.
#[expect(
    clippy::expect_used,
    reason = "a test helper; failing loudly is the point"
)]
fn ensure_venv() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args([
                "-c",
                &format!("import openai, sys; sys.exit(openai.__version__ != '{OPENAI_VERSION}')"),
            ])
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is required for the SDK test (CI installs it)");
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("openai=={OPENAI_VERSION}"))
        .status()
        .expect("pip runs");
    assert!(
        status.success(),
        "pip install openai=={OPENAI_VERSION} failed"
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_works_against_the_gateway() {
    let python = tokio::task::spawn_blocking(ensure_venv).await.unwrap();
    let r = replica(&["chat-m", "embed-m"]).await;
    let key = "sk-sdk-test-4411";
    let toml = format!(
        "{FAST}\n[auth]\nclient_key_sha256 = [\"{}\"]\n",
        leasegate_gateway::auth::hash_key(key)
    );
    let gw = gateway(
        &toml,
        vec![endpoint("a", &r.url(), &["chat-m", "embed-m"], None)],
    )
    .await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_client.py");
    let base = format!("http://{}/v1", gw.api_addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("LEASEGATE_BASE_URL", base)
            .env("LEASEGATE_KEY", key)
            .env("LEASEGATE_CHAT_MODEL", "chat-m")
            .env("LEASEGATE_EMBED_MODEL", "embed-m")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .output()
            .expect("the SDK script runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    gw.shutdown().await;
}
