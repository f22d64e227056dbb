//! N concurrent SSE streams: each worker keeps one keep-alive connection and opens stream after
//! stream until the duration ends, so N streams are in flight once the ramp is over.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::Target;
use crate::sse;
use crate::stats::{self, Counts};

#[derive(Debug)]
pub struct Config {
    pub streams: usize,
    pub duration: Duration,
    pub ramp: Duration,
}

#[derive(Default)]
struct Out {
    ttft: Vec<u32>,
    gaps: Vec<u32>,
    chunks: u64,
    incomplete: u64,
    counts: Counts,
}

/// A single stream may not outlive this, whatever the server does.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

async fn worker(target: Target, body: Bytes, delay: Duration, deadline: Instant) -> Out {
    let mut out = Out::default();
    tokio::time::sleep(delay).await;
    let mut sender = None;
    while Instant::now() < deadline {
        if sender.is_none() {
            match target.connect().await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    out.counts.errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let sent = Instant::now();
        let one = async {
            s.ready().await.map_err(|_| None)?;
            let resp = s
                .send_request(target.request(&body))
                .await
                .map_err(|_| None)?;
            let status = resp.status();
            let trace = sse::read(resp.into_body()).await.map_err(Some)?;
            Ok::<_, Option<sse::StreamTrace>>((status, trace))
        };
        match tokio::time::timeout(STREAM_TIMEOUT, one).await {
            Ok(Ok((status, trace))) if status.is_success() => {
                out.counts.ok += 1;
                if let Some(first) = trace.first {
                    out.ttft.push(stats::micros(first - sent));
                }
                if !trace.done {
                    out.incomplete += 1;
                }
                out.chunks += trace.chunks;
                out.gaps.extend(trace.gaps);
            }
            Ok(Ok(_)) => out.counts.non_2xx += 1,
            Ok(Err(partial)) => {
                out.counts.errors += 1;
                if let Some(t) = partial {
                    out.chunks += t.chunks;
                }
                sender = None;
            }
            Err(_) => {
                out.counts.errors += 1;
                sender = None;
            }
        }
    }
    out
}

pub async fn run(target: Target, body: Bytes, cfg: Config) -> String {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let n = cfg.streams;
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let delay = cfg.ramp.mul_f64(i as f64 / n as f64);
            tokio::spawn(worker(target.clone(), body.clone(), delay, deadline))
        })
        .collect();
    let mut out = Out::default();
    for w in workers {
        if let Ok(o) = w.await {
            out.ttft.extend(o.ttft);
            out.gaps.extend(o.gaps);
            out.chunks += o.chunks;
            out.incomplete += o.incomplete;
            out.counts.add(o.counts);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    format!(
        "{{\"mode\":\"stream\",\"streams\":{n},{},\"incomplete\":{},\"chunks\":{},\"elapsed_secs\":{elapsed:.3},\"chunks_per_sec\":{:.1},\"ttft\":{},\"gap\":{}}}",
        out.counts.json(),
        out.incomplete,
        out.chunks,
        out.chunks as f64 / elapsed.max(1e-9),
        stats::summary(out.ttft),
        stats::summary(out.gaps),
    )
}
