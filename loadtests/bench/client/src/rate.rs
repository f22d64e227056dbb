//! Open-loop load at a fixed rate.
//!
//! A dispatcher releases requests on a fixed schedule whatever the server does; a pool of
//! keep-alive connections takes them in order. Latency runs from release to the last body byte,
//! so time a request spends waiting for a free connection (because the server is slow) counts.
//! The dispatcher wakes on tokio's 1 ms timer, so releases come in 1 ms batches; `sched_lag`
//! reports how far releases fell behind the ideal schedule (large values mean the client, not
//! the server, could not keep up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{Barrier, Mutex, mpsc};

use crate::conn::{Sender, Target};
use crate::stats::{self, Counts};

#[derive(Debug)]
pub struct Config {
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
}

#[derive(Default)]
struct Out {
    latency: Vec<u32>,
    service: Vec<u32>,
    counts: Counts,
}

type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>;

async fn send_one(sender: &mut Sender, target: &Target, body: &Bytes) -> Result<bool, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(target.request(body))
        .await
        .map_err(|e| e.to_string())?;
    let ok = resp.status().is_success();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(ok)
}

async fn worker(target: Target, body: Bytes, queue: Queue, start: Arc<Barrier>) -> Out {
    let mut out = Out::default();
    let mut sender = target.connect().await.ok();
    start.wait().await;
    loop {
        let released = {
            let mut q = queue.lock().await;
            q.recv().await
        };
        let Some(released) = released else { break };
        if sender.is_none() {
            sender = target.connect().await.ok();
        }
        let Some(s) = sender.as_mut() else {
            out.counts.errors += 1;
            continue;
        };
        let sent = Instant::now();
        match send_one(s, &target, &body).await {
            Ok(ok) => {
                let end = Instant::now();
                out.latency.push(stats::micros(end - released));
                out.service.push(stats::micros(end - sent));
                if ok {
                    out.counts.ok += 1;
                } else {
                    out.counts.non_2xx += 1;
                }
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
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let queue: Queue = Arc::new(Mutex::new(rx));
    let barrier = Arc::new(Barrier::new(cfg.connections + 1));
    let workers: Vec<_> = (0..cfg.connections)
        .map(|_| {
            tokio::spawn(worker(
                target.clone(),
                body.clone(),
                queue.clone(),
                barrier.clone(),
            ))
        })
        .collect();
    barrier.wait().await;

    let total = (cfg.rate * cfg.duration.as_secs_f64()).round().max(1.0) as u64;
    let start = Instant::now();
    let mut lag = Vec::with_capacity(total as usize);
    let mut released = 0u64;
    while released < total {
        let now = Instant::now();
        let due = (((now - start).as_secs_f64() * cfg.rate) as u64 + 1).min(total);
        while released < due {
            let ideal = start + Duration::from_secs_f64(released as f64 / cfg.rate);
            lag.push(stats::micros(now.saturating_duration_since(ideal)));
            // The receivers live until every worker ends, which is after this loop.
            let _ = tx.send(now);
            released += 1;
        }
        if released < total {
            let next = start + Duration::from_secs_f64(released as f64 / cfg.rate);
            tokio::time::sleep_until(next.into()).await;
        }
    }
    drop(tx);
    let release_secs = start.elapsed().as_secs_f64();

    // Requests still unanswered this long after the last release are counted as errors.
    let grace = Duration::from_secs(10);
    let mut out = Out::default();
    let deadline = tokio::time::Instant::now() + grace;
    for w in workers {
        let abort = w.abort_handle();
        match tokio::time::timeout_at(deadline, w).await {
            Ok(Ok(o)) => {
                out.latency.extend(o.latency);
                out.service.extend(o.service);
                out.counts.add(o.counts);
            }
            _ => abort.abort(),
        }
    }
    let done = out.counts.ok + out.counts.non_2xx + out.counts.errors;
    out.counts.errors += total.saturating_sub(done);
    let elapsed = start.elapsed().as_secs_f64();
    format!(
        "{{\"mode\":\"rate\",\"target_rps\":{},\"connections\":{},\"requests\":{total},{},\"release_secs\":{release_secs:.3},\"elapsed_secs\":{elapsed:.3},\"achieved_rps\":{:.1},\"latency\":{},\"service\":{},\"sched_lag\":{}}}",
        cfg.rate,
        cfg.connections,
        out.counts.json(),
        (out.counts.ok + out.counts.non_2xx) as f64 / release_secs.max(1e-9),
        stats::summary(out.latency),
        stats::summary(out.service),
        stats::summary(lag),
    )
}
