//! Reload under external load: wrk drives the `leasegate` binary while weights change, an endpoint comes, one goes, and broken configs are refused.
//!
//! `admin.rs` reloads under load from in-process clients; this test does what
//! an operator does instead: a real load generator over real sockets against
//! the real binary, with all three triggers (file watch, SIGHUP, `POST
//! /admin/reload`). It skips, saying why, when `wrk` is not installed.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use http::Method;
use leasegate_gateway::reload::RELOADS;
use leasegate_replica_sim::{Behavior, Replica};
use serde_json::Value;

use crate::support::{Child, Reply, chat, get, post, replica_with, send, url};

const TOKEN_ENV: &str = "LEASEGATE_RELOAD_LOAD_TOKEN";
const TOKEN: &str = "reload-load-test-admin-token-4c1e";
const CHAT: &str = "/v1/chat/completions";
/// Upper bound on wrk's run. The test stops it with SIGINT (on which wrk
/// prints its summary) as soon as the reloads are done.
const WRK_MAX: &str = "60s";
/// How long one reload may take to show in the admin API.
const WAIT: Duration = Duration::from_secs(10);
/// Lets requests routed by the previous generation reach their replica.
const SETTLE: Duration = Duration::from_secs(1);
/// `limits.max_body_bytes` of step 0; step `n` adds `n`, so the admin API
/// shows which file is running.
const MARKER_BASE: u64 = 32 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
enum Trigger {
    Watch,
    Sighup,
    Admin,
}

#[derive(Clone, Copy, Debug)]
enum Broken {
    /// An unclosed table header.
    Syntax,
    /// A typo'd weight name.
    UnknownKey,
    /// A negative weight.
    BadValue,
}

impl Broken {
    /// The problem path the rejection must name; `None` for a parse error (no path).
    fn path(self) -> Option<&'static str> {
        match self {
            Self::Syntax => None,
            Self::UnknownKey => Some("routing"),
            Self::BadValue => Some("routing.load_ms"),
        }
    }
}

/// One good config: endpoints as (replica index, price) and two routing weights.
#[derive(Clone, Debug)]
struct Good {
    endpoints: Vec<(usize, f64)>,
    price_weight: f64,
    load_ms: f64,
}

#[derive(Clone, Debug)]
enum Change {
    Good(Good),
    Broken(Broken, Good),
}

/// The config file for step `marker` of `good`, broken as asked.
fn config_text(replicas: &[Replica], marker: u64, good: &Good, broken: Option<Broken>) -> String {
    let key = match broken {
        Some(Broken::UnknownKey) => "price_ms_per_usd_hr",
        _ => "price_ms_per_usd_hour",
    };
    let load_ms = match broken {
        Some(Broken::BadValue) => -5.0,
        _ => good.load_ms,
    };
    let mut routing = format!("{key} = {:.1}\nload_ms = {load_ms:.1}\n", good.price_weight);
    if let Some(Broken::Syntax) = broken {
        routing += "[routing.pools\n";
    }
    let mut t = format!(
        r#"[listen]
api = "127.0.0.1:0"
admin = "127.0.0.1:0"

# Generous: this test looks for failures caused by reloads, not by a busy machine.
[timeouts]
connect = "2s"
headers = "10s"
first_token = "10s"
inter_chunk = "5s"
total = "30s"
drain = "2s"

[health]
probe_interval = "60s"

[admin]
token_env = "{TOKEN_ENV}"

[limits]
max_body_bytes = {}

[routing]
{routing}
"#,
        MARKER_BASE + marker
    );
    for (i, price) in &good.endpoints {
        t += &format!(
            "\n[[endpoints]]\nid = \"r{i}\"\nurl = \"{}\"\nmodels = [\"m\"]\nregion = \"eu-central\"\nlat = 50.1\nlon = 8.7\nprice_per_hour_usd = {price:.1}\n",
            replicas[*i].url()
        );
    }
    t
}

/// Three phases: r0+r1, then r2 added, then r0 removed. Within a phase the
/// weights and the cheapest endpoint rotate, the trigger rotates, and one
/// step (two in the last phase) writes a broken file.
fn schedule() -> Vec<(Trigger, Change)> {
    const WEIGHTS: [(f64, f64); 3] = [(0.0, 100.0), (2000.0, 50.0), (200.0, 400.0)];
    let phases: [(&[usize], usize); 3] = [(&[0, 1], 7), (&[0, 1, 2], 8), (&[1, 2], 9)];
    let broken = [
        (0, 3, Broken::Syntax, Trigger::Watch),
        (1, 3, Broken::UnknownKey, Trigger::Admin),
        (2, 3, Broken::BadValue, Trigger::Sighup),
        (2, 6, Broken::Syntax, Trigger::Admin),
    ];
    let triggers = [Trigger::Watch, Trigger::Sighup, Trigger::Admin];
    let mut steps = Vec::new();
    for (phase, (present, n)) in phases.into_iter().enumerate() {
        for k in 0..n {
            let cheap = present[k % present.len()];
            let mut dearer = [1.5, 2.5].into_iter();
            let endpoints = present
                .iter()
                .map(|&i| {
                    (
                        i,
                        if i == cheap {
                            0.5
                        } else {
                            dearer.next().unwrap()
                        },
                    )
                })
                .collect();
            let (price_weight, load_ms) = WEIGHTS[k % WEIGHTS.len()];
            let good = Good {
                endpoints,
                price_weight,
                load_ms,
            };
            let bad = broken.iter().find(|b| b.0 == phase && b.1 == k);
            steps.push(match bad {
                Some(&(_, _, kind, trigger)) => (trigger, Change::Broken(kind, good)),
                None => (triggers[steps.len() % 3], Change::Good(good)),
            });
        }
    }
    steps
}

/// Writes aside, then renames over: a watch must never see half a file.
fn write_config(path: &Path, text: &str) {
    let aside = path.with_extension("toml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("reload-load")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `leasegate gateway --config FILE`; returns the child (killed on drop,
/// holding the API address) and the admin address.
fn start_gateway(dir: &Path, config: &Path) -> (Child, SocketAddr) {
    let log = std::fs::File::create(dir.join("leasegate.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("gateway")
        .arg("--config")
        .arg(config)
        .env(TOKEN_ENV, TOKEN)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads on after the addresses, so a later line never meets a closed pipe.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut child = Child(child, SocketAddr::from(([127, 0, 0, 1], 0)));
    let addr = |prefix: &str| -> SocketAddr {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no `{prefix}` line ({e}); log:\n{}", log_tail(dir)));
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected line: {line}"))
            .parse()
            .unwrap()
    };
    child.1 = addr("leasegate listening on http://");
    let admin = addr("leasegate admin on http://");
    (child, admin)
}

/// The gateway's warnings and errors, last ones first cut, for failure messages.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("leasegate.log")).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn admin(addr: SocketAddr, method: Method, path: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    send(
        &url(addr),
        method,
        path,
        "",
        &[("authorization", auth.as_str())],
    )
    .await
}

/// `GET /admin/config` polled until `done` holds, at most [`WAIT`].
async fn wait_config(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view = admin(addr, Method::GET, "/admin/config").await.json();
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {WAIT:?}; last view: {}",
            view["status"]
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn marker_of(view: &Value) -> u64 {
    view["config"]["limits"]["max_body_bytes"].as_u64().unwrap() - MARKER_BASE
}

fn generation_of(view: &Value) -> u64 {
    view["status"]["generation"].as_u64().unwrap()
}

/// `leasegate_config_reload_total{result=...}` from the admin listener's `/metrics`.
async fn reloads(addr: SocketAddr, result: &str) -> u64 {
    let text = get(addr, "/metrics").await.text();
    let prefix = format!("{RELOADS}{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap()) as u64
}

fn chat_requests(r: &Replica) -> u64 {
    r.stats().requests_by_path.get(CHAT).copied().unwrap_or(0)
}

fn send_signal(signal: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The router's own ranking must show the new endpoints and weights: the
/// price term of each candidate is its price times the price weight.
async fn assert_routing(addr: SocketAddr, good: &Good) {
    let explain = admin(addr, Method::GET, "/admin/explain?model=m").await;
    assert_eq!(explain.status, 200, "{}", explain.text());
    let rows = explain.json()["candidates"].as_array().unwrap().clone();
    let mut seen: Vec<String> = rows
        .iter()
        .map(|r| r["endpoint"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let want: Vec<String> = good
        .endpoints
        .iter()
        .map(|(i, _)| format!("r{i}"))
        .collect();
    assert_eq!(seen, want, "explain lists the running endpoints");
    for (i, price) in &good.endpoints {
        let row = rows
            .iter()
            .find(|r| r["endpoint"] == format!("r{i}"))
            .unwrap();
        let price_ms = row["terms"]["price_ms"].as_f64().unwrap();
        assert!(
            (price_ms - price * good.price_weight).abs() < 1e-6,
            "r{i}: price term {price_ms}, want {price} x {}",
            good.price_weight
        );
    }
}

/// wrk's own summary line, written by the Lua `done` hook.
#[derive(Debug, Default)]
struct WrkSummary {
    requests: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    /// Answers the script judged not a whole success (status, body or stream end).
    bad: u64,
}

fn parse_wrk(out: &str) -> WrkSummary {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("LEASEGATE_WRK "))
        .unwrap_or_else(|| panic!("no summary line in wrk's output:\n{out}"));
    let mut s = WrkSummary::default();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=').unwrap();
        let v: u64 = v.parse().unwrap();
        match k {
            "requests" => s.requests = v,
            "connect" => s.connect = v,
            "read" => s.read = v,
            "write" => s.write = v,
            "status" => s.status = v,
            "timeout" => s.timeout = v,
            "bad" => s.bad = v,
            other => panic!("unknown wrk summary field {other}"),
        }
    }
    s
}

/// Chat completions, every fourth streamed. `response` checks each answer
/// (status 200, a whole completion or a stream that reached `[DONE]`), and
/// `done` sums every thread's count into one line the test parses.
fn lua_script() -> String {
    let plain = chat("m", false);
    let streamed = chat("m", true);
    format!(
        r#"-- Written by the reload_load test.
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  bad = 0
  first_bad = ""
  n = 0
  local h = {{["Content-Type"] = "application/json"}}
  plain = wrk.format("POST", "{CHAT}", h, '{plain}')
  streamed = wrk.format("POST", "{CHAT}", h, '{streamed}')
end
function request()
  n = n + 1
  if n % 4 == 0 then return streamed end
  return plain
end
function response(status, headers, body)
  local whole = body:find('"chat.completion"', 1, true) or body:find("[DONE]", 1, true)
  if status ~= 200 or not whole or body:find("event: error", 1, true) then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. body:sub(1, 300):gsub("\n", " ") end
  end
end
function done(summary, latency, requests)
  local total, first = 0, ""
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
    local f = t:get("first_bad")
    if first == "" and f then first = f end
  end
  local e = summary.errors
  io.write(string.format("LEASEGATE_WRK requests=%d connect=%d read=%d write=%d status=%d timeout=%d bad=%d\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout, total))
  if first ~= "" then io.write("LEASEGATE_WRK_FIRST_BAD " .. first .. "\n") end
end
"#
    )
}

fn wrk_installed() -> bool {
    // `wrk --version` exits 1 after printing its usage; only a missing binary fails to spawn.
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_load_sees_no_failure_across_reloads_by_watch_sighup_and_admin() {
    let _heavy = crate::support::heavy().await;
    if !wrk_installed() {
        eprintln!("SKIP reload_load: `wrk` is not on PATH (apt-get install wrk)");
        return;
    }
    let sim = Behavior {
        models: vec!["m".into()],
        // Keeps wrk from saturating a small machine; the test counts failures, not speed.
        ttft: Duration::from_millis(2),
        // Streams last long enough that many are in flight across each swap.
        inter_token: Duration::from_millis(3),
        tokens: 8,
        ..Behavior::default()
    };
    let replicas = [
        replica_with(sim.clone()).await,
        replica_with(sim.clone()).await,
        replica_with(sim).await,
    ];
    let dir = scratch_dir();
    let path = dir.join("leasegate.toml");
    let steps = schedule();
    let first = Good {
        endpoints: vec![(0, 0.5), (1, 1.5)],
        price_weight: 0.0,
        load_ms: 100.0,
    };
    write_config(&path, &config_text(&replicas, 0, &first, None));
    let (gateway, admin_addr) = start_gateway(&dir, &path);
    let pid = gateway.0.id();
    let api = gateway.1;
    assert_eq!(post(api, CHAT, chat("m", false)).await.status, 200);

    let script = dir.join("chat.lua");
    std::fs::write(&script, lua_script()).unwrap();
    let wrk_out = dir.join("wrk.out");
    let wrk = Command::new("wrk")
        .args(["-t1", "-c16", "-d", WRK_MAX, "--timeout", "10s", "-s"])
        .arg(&script)
        .arg(url(api))
        .stdout(std::fs::File::create(&wrk_out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut wrk = Child(wrk, api);
    // Let wrk connect and load before the first reload.
    tokio::time::sleep(SETTLE).await;

    let mut removed_at = None;
    let mut added_before = None;
    let mut rejected = 0;
    let mut bare_sighups = 0;
    for (step, (trigger, change)) in steps.iter().enumerate() {
        let marker = step as u64 + 1;
        let (good, broken) = match change {
            Change::Good(g) => (g, None),
            Change::Broken(kind, g) => (g, Some(*kind)),
        };
        let before = admin(admin_addr, Method::GET, "/admin/config").await.json();
        if broken.is_none() && good.endpoints.iter().any(|e| e.0 == 2) && added_before.is_none() {
            // r2 has had no route so far.
            added_before = Some(chat_requests(&replicas[2]));
        }
        write_config(&path, &config_text(&replicas, marker, good, broken));
        match trigger {
            Trigger::Watch => {}
            Trigger::Sighup => send_signal("-HUP", pid),
            Trigger::Admin => {
                let reply = admin(admin_addr, Method::POST, "/admin/reload").await;
                let want = if broken.is_some() { 422 } else { 200 };
                assert_eq!(reply.status, want, "step {step}: {}", reply.text());
            }
        }
        let Some(kind) = broken else {
            wait_config(admin_addr, &format!("step {step} ({trigger:?})"), |v| {
                marker_of(v) == marker && v["status"]["last_result"] == "ok"
            })
            .await;
            assert_routing(admin_addr, good).await;
            if matches!(trigger, Trigger::Sighup) {
                // A signal alone reloads: wait out triggers still settling,
                // then HUP with the file unchanged.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let g =
                    generation_of(&admin(admin_addr, Method::GET, "/admin/config").await.json());
                send_signal("-HUP", pid);
                wait_config(admin_addr, "a bare SIGHUP", |v| generation_of(v) > g).await;
                bare_sighups += 1;
            }
            if removed_at.is_none() && !good.endpoints.iter().any(|e| e.0 == 0) {
                tokio::time::sleep(SETTLE).await;
                removed_at = Some(chat_requests(&replicas[0]));
            }
            continue;
        };
        let view = wait_config(admin_addr, &format!("step {step} rejects {kind:?}"), |v| {
            v["status"]["last_result"] == "rejected"
        })
        .await;
        let problems = view["status"]["problems"].as_array().unwrap();
        match kind.path() {
            None => assert!(
                problems
                    .iter()
                    .any(|p| p["reason"].as_str().unwrap().contains("TOML parse error")),
                "{problems:?}"
            ),
            Some(at) => assert!(problems.iter().any(|p| p["path"] == at), "{problems:?}"),
        }
        // The running config stays, and serves.
        assert_eq!(marker_of(&view), marker_of(&before), "step {step}");
        assert_eq!(post(api, CHAT, chat("m", false)).await.status, 200);
        rejected += 1;
    }
    // Traffic after the last reload, then stop wrk so it reports.
    tokio::time::sleep(SETTLE).await;
    assert!(
        wrk.0.try_wait().unwrap().is_none(),
        "wrk ended before the reloads were done; raise WRK_MAX"
    );
    send_signal("-INT", wrk.0.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while wrk.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "wrk did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = std::fs::read_to_string(&wrk_out).unwrap();
    println!("wrk against the gateway during the reloads:\n{out}");

    let s = parse_wrk(&out);
    let ok_reloads = reloads(admin_addr, "ok").await;
    let rejected_reloads = reloads(admin_addr, "rejected").await;
    println!(
        "{} steps, {ok_reloads} reloads applied ({bare_sighups} by a bare SIGHUP), \
         {rejected_reloads} rejected ({rejected} broken files)",
        steps.len()
    );
    let failures = s.connect + s.read + s.write + s.timeout + s.status + s.bad;
    assert!(
        failures == 0 && !out.contains("Non-2xx") && !out.contains("Socket errors"),
        "{s:?}\ngateway warnings and errors:\n{}",
        log_tail(&dir)
    );
    assert!(s.requests >= 1000, "too little load to mean much: {s:?}");
    assert!(ok_reloads >= 20, "{ok_reloads} reloads applied");
    assert!(
        rejected >= 4 && rejected_reloads >= 4,
        "{rejected_reloads} rejected"
    );

    // Each replica in a config served; r2 only once added, r0 not after its removal.
    let counts: Vec<u64> = replicas.iter().map(chat_requests).collect();
    println!("chat requests per replica: {counts:?}");
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert_eq!(added_before, Some(0), "r2 served before it was added");
    let removed_at = removed_at.unwrap();
    assert!(removed_at > 0);
    assert_eq!(
        counts[0], removed_at,
        "r0 received requests after its removal"
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
