//! `leasegate status` end to end: spend, the saving against hyperscaler-only and limits hit, read by the binary from a running gateway.
//!
//! Metrics and spend are per gateway, and each test uses its own model names.

use std::process::{Command, Output};

use crate::support::*;
use http::Method;
use leasegate_gateway::auth::hash_key;
use leasegate_replica_sim::{Behavior, Replica};
use serde_json::Value;

/// Set by cargo for every test run (see the admin tests): the admin token.
const TOKEN_ENV: &str = "CARGO_PKG_DESCRIPTION";
/// What the child `status` process reads the token from.
const CHILD_TOKEN_ENV: &str = "LG_STATUS_TEST_TOKEN";
const KEY_A: &str = "lg-status-test-key-a-Rt55";
const KEY_B: &str = "lg-status-test-key-b-Vw17";
const KEY_C: &str = "lg-status-test-key-c-Hq02";
const MODEL: &str = "st-model";
/// The fallback's list prices, per 1M input and output tokens.
const INPUT: f64 = 3.0;
const OUTPUT: f64 = 15.0;
const LEASE_PER_HOUR: f64 = 3.6;

fn token() -> String {
    std::env::var(TOKEN_ENV).unwrap()
}

fn config(cloud: &Replica) -> String {
    format!(
        "{FAST}\n[admin]\ntoken_env = \"{TOKEN_ENV}\"\n\
         [[fallbacks]]\nid = \"cloud\"\nurl = \"{}/v1\"\nmodels = {{ \"{MODEL}\" = \"{MODEL}\" }}\n\
         price_per_1m_input_usd = {INPUT}\nprice_per_1m_output_usd = {OUTPUT}\n\
         [[keys]]\nname = \"tenant-a\"\nsha256 = \"{}\"\nrequests_per_minute = 5\n\
         [[keys]]\nname = \"tenant-b\"\nsha256 = \"{}\"\ntokens_per_minute = 20\n\
         [[keys]]\nname = \"tenant-c\"\nsha256 = \"{}\"\nbudget_usd_per_day = 0.000001\n",
        cloud.url(),
        hash_key(KEY_A),
        hash_key(KEY_B),
        hash_key(KEY_C),
    )
}

fn body(max_tokens: u32) -> String {
    format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"how much did that cost"}}],"max_tokens":{max_tokens}}}"#
    )
}

async fn call(gw: &leasegate_gateway::Running, key: &str, max_tokens: u32) -> Reply {
    let auth = format!("Bearer {key}");
    send(
        &url(gw.api_addr),
        Method::POST,
        "/v1/chat/completions",
        body(max_tokens),
        &[("authorization", auth.as_str())],
    )
    .await
}

/// Prompt and completion tokens as the replica reported them.
fn usage(r: &Reply) -> (f64, f64) {
    assert_eq!(r.status, 200, "{}", r.text());
    let u = &r.json()["usage"];
    (
        u["prompt_tokens"].as_f64().unwrap(),
        u["completion_tokens"].as_f64().unwrap(),
    )
}

/// Runs the `leasegate status` binary against `admin` with `args`.
async fn status(admin: std::net::SocketAddr, token: Option<String>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasegate"));
    cmd.args([
        "status",
        "--admin",
        &url(admin),
        "--token-env",
        CHILD_TOKEN_ENV,
    ])
    .args(args)
    .env_remove(CHILD_TOKEN_ENV);
    if let Some(t) = token {
        cmd.env(CHILD_TOKEN_ENV, t);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[tokio::test]
async fn status_shows_spend_the_saving_against_hyperscaler_only_and_limits_hit_by_key_name() {
    let lease = replica(&[MODEL]).await;
    let cloud = replica(&[MODEL]).await;
    let mut ep = endpoint("st-lease", &lease.url(), &[MODEL], None);
    ep.price_per_hour_usd = LEASE_PER_HOUR;
    let gw = gateway(&config(&cloud), vec![ep]).await;

    // On the lease: within its first minute the estimator charges
    // $3.6/h × 1 min spread over the tokens served so far.
    let (mut lease_tokens, mut lease_usd, mut all_list_usd) = (0.0, 0.0, 0.0);
    for max_tokens in [3, 7, 11] {
        let (p, c) = usage(&call(&gw, KEY_A, max_tokens).await);
        assert_eq!(
            c,
            f64::from(max_tokens),
            "the replica writes max_tokens tokens"
        );
        lease_tokens += p + c;
        lease_usd += LEASE_PER_HOUR / 60.0 * (p + c) / lease_tokens;
        all_list_usd += (p * INPUT + c * OUTPUT) / 1e6;
    }
    assert_eq!(lease.stats().requests_by_path["/v1/chat/completions"], 3);

    // The lease fails: requests overflow to the fallback.
    lease.set_behavior(Behavior {
        models: vec![MODEL.into()],
        error_rate: 1.0,
        error_status: 503,
        ..Behavior::default()
    });
    let (mut fb_tokens, mut fb_usd) = (0.0, 0.0);
    for (key, max_tokens) in [(KEY_A, 5), (KEY_A, 9), (KEY_C, 4)] {
        let (p, c) = usage(&call(&gw, key, max_tokens).await);
        fb_tokens += p + c;
        fb_usd += (p * INPUT + c * OUTPUT) / 1e6;
    }
    all_list_usd += fb_usd;
    assert_eq!(cloud.stats().requests_by_path["/v1/chat/completions"], 3);

    // Refusals: tenant-a is at 5 requests/min, tenant-b's estimate exceeds
    // its 20 tokens/min, tenant-c spent its day's budget on one request.
    for (key, code, n) in [
        (KEY_A, "rate_limit_exceeded", 2),
        (KEY_B, "rate_limit_exceeded", 1),
        (KEY_C, "insufficient_quota", 1),
    ] {
        for _ in 0..n {
            let e = call(&gw, key, 5).await.openai_error(429);
            assert_eq!(e["code"], code);
        }
    }

    let out = status(gw.admin_addr, Some(token()), &["--json"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let spend = &doc["usage"]["spend"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    assert_eq!(f(&spend["tokens"]), lease_tokens + fb_tokens, "{spend}");
    assert!(
        close(f(&spend["lease_usd"]), lease_usd),
        "{lease_usd} {spend}"
    );
    assert!(close(f(&spend["fallback_usd"]), fb_usd), "{fb_usd} {spend}");
    let total = lease_usd + fb_usd;
    assert!(close(f(&spend["total_usd"]), total), "{spend}");
    assert!(
        close(f(&spend["hyperscaler_only_usd"]), all_list_usd),
        "{all_list_usd} {spend}"
    );
    let saving = all_list_usd - total;
    assert!(close(f(&spend["saving_usd"]), saving), "{saving} {spend}");
    assert!(
        close(
            f(&spend["usd_per_1m_tokens"]),
            total / (lease_tokens + fb_tokens) * 1e6
        ),
        "{spend}"
    );
    let rows = spend["by_model"].as_array().unwrap();
    let row = |path: &str| {
        rows.iter()
            .find(|r| r["model"] == MODEL && r["path"] == path)
            .unwrap_or_else(|| panic!("no {path} row in {spend}"))
    };
    assert_eq!(f(&row("lease")["tokens"]), lease_tokens);
    assert_eq!(f(&row("fallback")["tokens"]), fb_tokens);
    assert!(close(f(&row("fallback")["hyperscaler_only_usd"]), fb_usd));
    assert_eq!(spend["spend_cap_refusals"], 0);

    let limits = doc["usage"]["limits"].as_array().unwrap();
    let hits = |name: &str| {
        let k = limits.iter().find(|k| k["name"] == name).unwrap();
        let h = &k["hits"];
        [
            &h["requests_per_minute"],
            &h["tokens_per_minute"],
            &h["budget_per_day"],
            &h["spend_cap"],
        ]
        .map(|v| v.as_u64().unwrap())
    };
    assert_eq!(hits("tenant-a"), [2, 0, 0, 0]);
    assert_eq!(hits("tenant-b"), [0, 1, 0, 0]);
    assert_eq!(hits("tenant-c"), [0, 0, 1, 0]);
    // A gateway alone: no controller, said so; endpoints with their health.
    assert!(doc["controller"].is_null());
    assert!(doc["notes"].to_string().contains("no controller"), "{doc}");
    let ids: Vec<&str> = doc["endpoints"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"st-lease") && ids.contains(&"cloud"),
        "{ids:?}"
    );

    // The table: keys by name, never a key, its hash or the admin token.
    let out = status(gw.admin_addr, Some(token()), &[]).await;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{table}");
    println!("{table}");
    for want in [
        "tenant-a",
        "tenant-b",
        "429 RPM",
        "saving against hyperscaler-only",
        "st-lease",
        "no controller",
    ] {
        assert!(table.contains(want), "`{want}` missing from:\n{table}");
    }
    let secrets = [
        KEY_A.to_owned(),
        KEY_B.to_owned(),
        KEY_C.to_owned(),
        hash_key(KEY_A),
        hash_key(KEY_B),
        hash_key(KEY_C),
        token(),
    ];
    for s in &secrets {
        assert!(!table.contains(s.as_str()), "a secret in the table");
        assert!(!stdout.contains(s.as_str()), "a secret in the JSON");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_usage_endpoint_and_status_refuse_without_the_admin_token() {
    let cloud = replica(&["st-refuse"]).await;
    let gw = gateway(&config(&cloud), vec![]).await;
    let base = url(gw.admin_addr);
    let none = send(&base, Method::GET, "/admin/usage", "", &[]).await;
    none.openai_error(401);
    let wrong = send(
        &base,
        Method::GET,
        "/admin/usage",
        "",
        &[("authorization", "Bearer not-the-token")],
    )
    .await;
    wrong.openai_error(401);
    let auth = format!("Bearer {}", token());
    let right = send(
        &base,
        Method::GET,
        "/admin/usage",
        "",
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(right.status, 200, "{}", right.text());
    assert_eq!(right.json()["spend"]["tokens"], 0);
    // Every field served is described in the OpenAPI document.
    let doc = include_str!("../admin-openapi.yaml");
    let section = doc
        .split("\n  /admin/usage:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  /").next())
        .expect("/admin/usage is described");
    let mut fields = Vec::new();
    collect_fields(&right.json(), &mut fields);
    for f in fields {
        assert!(
            section.contains(&format!(" {f}:")),
            "`{f}` is not described"
        );
    }

    // The CLI names the variable it needs and fails; it never echoes a token.
    let out = status(gw.admin_addr, None, &[]).await;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(CHILD_TOKEN_ENV), "{all}");
    let out = status(gw.admin_addr, Some("not-the-token".into()), &["--json"]).await;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("refused the token"), "{all}");
    assert!(!all.contains("not-the-token"), "{all}");
    gw.shutdown().await;
}

fn collect_fields(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                collect_fields(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_fields(v, out)),
        _ => {}
    }
}
