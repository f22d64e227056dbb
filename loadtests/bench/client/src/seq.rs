//! Sequential requests on one keep-alive connection: latency without queueing (large bodies).

use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::conn::Target;
use crate::stats::{self, Counts};

#[derive(Debug)]
pub struct Config {
    pub count: usize,
    pub warmup: usize,
}

pub async fn run(target: Target, body: Bytes, cfg: Config) -> String {
    let mut counts = Counts::default();
    let mut lat = Vec::with_capacity(cfg.count);
    let mut sender = None;
    let mut resp_bytes = 0usize;
    for i in 0..cfg.warmup + cfg.count {
        if sender.is_none() {
            sender = target.connect().await.ok();
        }
        let Some(s) = sender.as_mut() else {
            counts.errors += 1;
            continue;
        };
        let sent = Instant::now();
        let one = async {
            s.ready().await.map_err(|e| e.to_string())?;
            let resp = s
                .send_request(target.request(&body))
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let b = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, b.to_bytes().len()))
        };
        let res = tokio::time::timeout(std::time::Duration::from_secs(30), one).await;
        let measured = i >= cfg.warmup;
        match res {
            Ok(Ok((status, n))) => {
                resp_bytes = n;
                if !measured {
                    continue;
                }
                lat.push(stats::micros(sent.elapsed()));
                if status.is_success() {
                    counts.ok += 1;
                } else {
                    counts.non_2xx += 1;
                }
            }
            _ => {
                sender = None;
                if measured {
                    counts.errors += 1;
                }
            }
        }
    }
    format!(
        "{{\"mode\":\"seq\",\"body_bytes\":{},\"response_bytes\":{resp_bytes},{},\"latency\":{}}}",
        body.len(),
        counts.json(),
        stats::summary(lat)
    )
}
