//! Hold N streams open at once and sample a process's resident memory meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::conn::Target;
use crate::sse;

#[derive(Debug)]
pub struct Config {
    pub streams: usize,
    pub hold: Duration,
    pub open_rate: f64,
    pub open_timeout: Duration,
    pub pid: Option<u32>,
}

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    failed: AtomicU64,
    ended_early: AtomicU64,
}

/// `(VmRSS, VmHWM)` in KiB from /proc/PID/status.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn one(target: Target, body: Bytes, tally: Arc<Tally>, mut stop: watch::Receiver<bool>) {
    let open = async {
        let mut s = target.connect().await.ok()?;
        s.ready().await.ok()?;
        let resp = s.send_request(target.request(&body)).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let mut b = resp.into_body();
        sse::first_chunk(&mut b).await?;
        Some((s, b))
    };
    let Some((_sender, mut b)) = open.await else {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tally.opened.fetch_add(1, Ordering::Relaxed);
    // Keep draining so the stream stays live, until told to stop.
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            f = b.frame() => match f {
                Some(Ok(_)) => {}
                _ => {
                    tally.ended_early.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

pub async fn run(target: Target, body: Bytes, cfg: Config) -> String {
    let tally = Arc::new(Tally::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let rss_before = cfg.pid.and_then(rss_kib);
    let mut tasks = Vec::with_capacity(cfg.streams);
    for i in 0..cfg.streams {
        let at = start + Duration::from_secs_f64(i as f64 / cfg.open_rate);
        tokio::time::sleep_until(at.into()).await;
        tasks.push(tokio::spawn(one(
            target.clone(),
            body.clone(),
            tally.clone(),
            stop_rx.clone(),
        )));
    }
    let n = cfg.streams as u64;
    let open_deadline = start + cfg.open_timeout;
    while tally.opened.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < n
        && Instant::now() < open_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_secs = start.elapsed().as_secs_f64();
    let opened_at_hold = tally.opened.load(Ordering::Relaxed);

    let mut peak_rss = 0u64;
    let mut samples = 0u64;
    let hold_end = Instant::now() + cfg.hold;
    loop {
        if let Some((rss, _)) = cfg.pid.and_then(rss_kib) {
            peak_rss = peak_rss.max(rss);
            samples += 1;
        }
        if Instant::now() >= hold_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live_at_end =
        tally.opened.load(Ordering::Relaxed) - tally.ended_early.load(Ordering::Relaxed);
    let hwm = cfg.pid.and_then(rss_kib).map_or(0, |(_, h)| h);
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    format!(
        "{{\"mode\":\"hold\",\"streams\":{n},\"opened\":{opened_at_hold},\"failed\":{},\"ended_early\":{},\"live_at_end\":{live_at_end},\"open_secs\":{open_secs:.3},\"hold_secs\":{:.3},\"pid\":{},\"rss_before_kib\":{},\"peak_rss_kib\":{peak_rss},\"vm_hwm_kib\":{hwm},\"rss_samples\":{samples}}}",
        tally.failed.load(Ordering::Relaxed),
        tally.ended_early.load(Ordering::Relaxed),
        cfg.hold.as_secs_f64(),
        cfg.pid.map_or("null".to_string(), |p| p.to_string()),
        rss_before.map_or("null".to_string(), |(r, _)| r.to_string()),
    )
}
