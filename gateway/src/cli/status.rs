//! `status`: asks a running process's admin listener for the controller's
//! status and prints it as a table (or the JSON as served).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use leasegate_controller::status::{ControllerStatus, table};

use super::CliResult;

pub async fn status(admin: &str, json: bool) -> CliResult {
    let url = format!("{}/status", admin.trim_end_matches('/'));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(&url).body(Empty::new())?;
    let fail = |why: String| format!("cannot read {url}: {why}");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| fail("no answer within 10s".into()))?
        .map_err(|e| {
            fail(format!(
                "{e} (is `leasegate serve` or `leasegate controller` running?)"
            ))
        })?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    if status == http::StatusCode::NOT_FOUND {
        return Err(fail("this process runs no controller (a `gateway`?)".into()).into());
    }
    if !status.is_success() {
        return Err(fail(format!("status {status}")).into());
    }
    let st: ControllerStatus = serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", table(&st));
    }
    Ok(())
}
