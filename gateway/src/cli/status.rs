//! `status`: asks a running process's admin listener for its pools and
//! leases (controller), endpoints, spend and limits hit (gateway), and
//! prints them as tables or as one JSON document.
//!
//! Each part says plainly when the process has no such part: a `leasegate
//! gateway` has no controller, a `leasegate controller` no gateway.

use std::{fmt::Write as _, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use leasegate_controller::status::{ControllerStatus, table};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::CliResult;
use crate::usage::report::{KeyReport, SpendReport, UsageReport};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// The admin listener of the running process.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Everything as one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The variable holding the admin token, sent as a bearer token to `/admin/*`.
    #[arg(long, value_name = "NAME", default_value = "LEASEGATE_ADMIN_TOKEN")]
    pub token_env: String,
}

/// The `--json` document: every part, `null` where the process has none
/// or it could not be read (`notes` says which and why).
#[derive(Debug, Serialize)]
struct Report {
    admin: String,
    controller: Option<ControllerStatus>,
    endpoints: Option<Value>,
    usage: Option<UsageReport>,
    notes: Vec<String>,
}

/// One part as read: present, absent from this process, switched off
/// there (a state, not an error), or unreadable.
enum Part<T> {
    Read(T),
    Absent,
    Off(String),
    Failed(String),
}

struct Admin {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// `Authorization` value; `None` when the variable is unset.
    bearer: Option<HeaderValue>,
    token_env: String,
}

impl Admin {
    /// GET `path`: the status and body, or why nothing came back.
    async fn get(&self, path: &str, auth: bool) -> Result<(StatusCode, Bytes), String> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::get(&url)
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        if let (true, Some(v)) = (auth, &self.bearer) {
            req.headers_mut().insert(header::AUTHORIZATION, v.clone());
        }
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("{url}: no answer within {}s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| format!("{url}: body not read within {}s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// A JSON part: 404 means this process does not serve it.
    async fn part<T: DeserializeOwned>(&self, path: &str, auth: bool) -> Part<T> {
        match self.get(path, auth).await {
            Ok((status, body)) => self.interpret(path, status, &body),
            Err(e) => Part::Failed(e),
        }
    }

    fn interpret<T: DeserializeOwned>(
        &self,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Part<T> {
        match status {
            StatusCode::NOT_FOUND => Part::Absent,
            StatusCode::UNAUTHORIZED => self.refused(body),
            s if s.is_success() => serde_json::from_slice(body)
                .map_or_else(|e| Part::Failed(format!("{path}: {e}")), Part::Read),
            s => Part::Failed(format!("{path}: status {s}")),
        }
    }

    /// Why the admin API refused; names the variable, never its value.
    fn refused<T>(&self, body: &[u8]) -> Part<T> {
        let code = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        let var = &self.token_env;
        if code.as_deref() == Some("admin_disabled") {
            Part::Off(
                "the gateway's admin API is off (no admin token: `[admin] token_env`, or \
                 under `serve` the variable `[controller] admin_token_env` names, \
                 set to 16+ characters): endpoints, spend and limits need it"
                    .into(),
            )
        } else if self.bearer.is_none() {
            Part::Failed(format!(
                "the admin API needs a token: set {var} (or pass --token-env NAME)"
            ))
        } else {
            Part::Failed(format!("the admin API refused the token in {var}"))
        }
    }
}

pub async fn status(args: StatusArgs) -> CliResult {
    let base = args.admin.trim_end_matches('/').to_owned();
    let bearer = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .and_then(|t| {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
    let admin = Admin {
        base: base.clone(),
        client: Client::builder(TokioExecutor::new()).build_http(),
        bearer,
        token_env: args.token_env.clone(),
    };
    // The first call also tells whether anything listens there at all.
    let controller: Part<ControllerStatus> = match admin.get("/status", false).await {
        Ok((status, body)) => admin.interpret("/status", status, &body),
        Err(e) => {
            return Err(format!(
                "cannot read {e} (is `leasegate serve`, `gateway` or `controller` running?)"
            )
            .into());
        }
    };
    let (usage, endpoints) = tokio::join!(
        admin.part::<UsageReport>("/admin/usage", true),
        admin.part::<Value>("/admin/endpoints", true),
    );
    let mut notes = Vec::new();
    let mut failed = false;
    let controller = take(
        controller,
        "no controller in this process (a `leasegate gateway`?)",
        &mut notes,
        &mut failed,
    );
    let (usage, endpoints) = if matches!((&usage, &endpoints), (Part::Absent, Part::Absent)) {
        notes.push("no gateway in this process (a `leasegate controller`?)".into());
        (None, None)
    } else {
        (
            take(usage, "no /admin/usage", &mut notes, &mut failed),
            take(endpoints, "no /admin/endpoints", &mut notes, &mut failed),
        )
    };
    // Both admin calls fail alike on a bad token; say it once.
    notes.dedup();
    let report = Report {
        admin: base,
        controller,
        endpoints,
        usage,
        notes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if report.controller.is_none() && report.usage.is_none() && report.endpoints.is_none() {
        return Err("nothing to show".into());
    }
    if failed {
        return Err("some parts could not be read (see above)".into());
    }
    Ok(())
}

/// The part's value, or a note saying why there is none.
fn take<T>(part: Part<T>, absent: &str, notes: &mut Vec<String>, failed: &mut bool) -> Option<T> {
    match part {
        Part::Read(v) => Some(v),
        Part::Absent => {
            notes.push(absent.to_owned());
            None
        }
        Part::Off(why) => {
            notes.push(why);
            None
        }
        Part::Failed(e) => {
            *failed = true;
            notes.push(e);
            None
        }
    }
}

/// Aligned columns: `right[i]` right-aligns column `i` (numbers).
fn columns(out: &mut String, head: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(text, "{cell:>w$}  ");
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, &mut head.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

/// Dollars, with more places for the small sums a per-token price makes.
fn usd(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "" };
    let v = v.abs();
    if v != 0.0 && v < 0.01 {
        format!("{sign}${v:.6}")
    } else {
        format!("{sign}${v:.2}")
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    if let Some(c) = &r.controller {
        out.push_str(&table(c));
        out.push('\n');
    }
    if let Some(list) = r.endpoints.as_ref().and_then(|e| e["endpoints"].as_array()) {
        endpoints(&mut out, list);
        out.push('\n');
    }
    if let Some(u) = &r.usage {
        spend(&mut out, &u.spend);
        out.push('\n');
        limits(&mut out, &u.limits);
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn endpoints(out: &mut String, list: &[Value]) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let h = &e["health"];
            let health = if h["drained"].as_bool() == Some(true) {
                "drained"
            } else if h["available"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            };
            let models: Vec<&str> = e["models"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(&e["id"]),
                text(&e["kind"]),
                text(&e["region"]["code"]),
                text(&e["state"]),
                health.into(),
                text(&h["breaker"]["state"]),
                h["in_flight"].as_u64().unwrap_or(0).to_string(),
                opt(h["ttfb_ewma_ms"].as_f64(), |v| format!("{v:.0}ms")),
                opt(h["error_rate"].as_f64(), |v| format!("{:.0}%", v * 100.0)),
                models.join(","),
            ]
        })
        .collect();
    columns(
        out,
        &[
            "ENDPOINT",
            "KIND",
            "REGION",
            "STATE",
            "HEALTH",
            "BREAKER",
            "IN-FLIGHT",
            "TTFB",
            "ERRORS",
            "MODELS",
        ],
        &[false, false, false, false, false, false, true, true, true],
        &rows,
    );
}

fn spend(out: &mut String, s: &SpendReport) {
    let rows: Vec<Vec<String>> = s
        .by_model
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                m.path.clone(),
                m.tokens.to_string(),
                usd(m.usd),
                opt(m.usd_per_1m_tokens, usd),
                usd(m.hyperscaler_only_usd),
            ]
        })
        .chain(std::iter::once(vec![
            "(all)".into(),
            String::new(),
            s.tokens.to_string(),
            usd(s.total_usd),
            opt(s.usd_per_1m_tokens, usd),
            usd(s.hyperscaler_only_usd),
        ]))
        .collect();
    columns(
        out,
        &[
            "MODEL",
            "PATH",
            "TOKENS",
            "SPEND",
            "$/1M",
            "HYPERSCALER-ONLY",
        ],
        &[false, false, true, true, true, true],
        &rows,
    );
    let _ = writeln!(
        out,
        "spend since the gateway started {} ago: lease {}, static {}, fallback {}; total {}",
        since(s.since_s),
        usd(s.lease_usd),
        usd(s.static_usd),
        usd(s.fallback_usd),
        usd(s.total_usd)
    );
    let _ = writeln!(
        out,
        "saving against hyperscaler-only: {} of {}{}",
        usd(s.saving_usd),
        usd(s.hyperscaler_only_usd),
        s.saving_pct.map_or_else(
            || " (no fallback price to compare with)".to_owned(),
            |p| format!(" ({p:.1}%)")
        )
    );
    let w = &s.fallback_window;
    let cap = |c: Option<f64>| c.map_or_else(|| " (no cap)".into(), |c| format!(" of {}", usd(c)));
    let _ = writeln!(
        out,
        "fallback this hour {}{}, today {}{}; 429 at the spend cap: {}",
        usd(w.hour_usd),
        cap(w.hourly_cap_usd),
        usd(w.day_usd),
        cap(w.daily_cap_usd),
        s.spend_cap_refusals
    );
}

/// Whole seconds, as `1h 2m 3s`.
fn since(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
}

fn limits(out: &mut String, keys: &[KeyReport]) {
    if keys.is_empty() {
        let _ = writeln!(out, "no client keys configured (the API is open)");
        return;
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let now = k.now.as_ref();
            vec![
                k.name.clone(),
                opt(k.requests_per_minute, |v| v.to_string()),
                opt(k.tokens_per_minute, |v| v.to_string()),
                opt(k.budget_usd_per_day, usd),
                k.hits.requests_per_minute.to_string(),
                k.hits.tokens_per_minute.to_string(),
                k.hits.budget_per_day.to_string(),
                k.hits.spend_cap.to_string(),
                opt(now, |n| {
                    format!("{}/{}", n.requests_last_minute, n.tokens_last_minute)
                }),
                opt(now, |n| usd(n.spent_usd_today)),
            ]
        })
        .collect();
    columns(
        out,
        &[
            "KEY",
            "RPM",
            "TPM",
            "BUDGET/DAY",
            "429 RPM",
            "429 TPM",
            "429 BUDGET",
            "429 SPEND-CAP",
            "REQ/TOK LAST MIN",
            "SPENT TODAY",
        ],
        &[false, true, true, true, true, true, true, true, true, true],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_keep_small_sums_and_signs_readable() {
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.000495), "$0.000495");
        assert_eq!(usd(-0.11), "-$0.11");
    }

    #[test]
    fn columns_align_on_the_widest_cell_and_numbers_go_right() {
        let mut out = String::new();
        let rows = vec![
            vec!["a-long-name".to_owned(), "5".to_owned()],
            vec!["b".to_owned(), "1234".to_owned()],
        ];
        columns(&mut out, &["KEY", "N"], &[false, true], &rows);
        assert_eq!(
            out,
            "KEY             N\na-long-name     5\nb            1234\n"
        );
    }
}
