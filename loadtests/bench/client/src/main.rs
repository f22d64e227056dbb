//! `lgbench`: the load client of the leasegate benchmark harness (one JSON line per run on stdout).
//!
//! Modes (all bounded in count and time, loopback targets only):
//! - `rate`:   open loop at a fixed request rate; latency runs from the moment a request is
//!   released by the schedule, so a slow server is charged for the queue it causes.
//! - `stream`: N concurrent SSE streams, each worker re-opening a stream until the duration ends;
//!   TTFT and inter-chunk gaps.
//! - `hold`:   open N streams, keep them all open for a while and sample a process's RSS.
//! - `seq`:    sequential requests on one keep-alive connection (large-body latency).

mod conn;
mod hold;
mod rate;
mod seq;
mod sse;
mod stats;
mod stream;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

const USAGE: &str =
    "usage: lgbench <rate|stream|hold|seq> --url http://127.0.0.1:PORT/PATH --body FILE [options]
  rate:   --rate RPS --duration SECS [--connections 64]
  stream: --streams N --duration SECS [--ramp SECS]
  hold:   --streams N --hold SECS [--open-rate PER_SEC] [--open-timeout SECS] [--pid PID]
  seq:    --count N [--warmup N]";

/// Parsed `--key value` options.
struct Args {
    map: HashMap<String, String>,
}

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {k:?}"))?;
            let val = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), val.clone());
        }
        Ok(Self { map })
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{key}"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String> {
        match self.map.get(key) {
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad number {v:?}")),
            None => default.ok_or_else(|| format!("missing --{key}")),
        }
    }

    fn secs(&self, key: &str, default: Option<f64>) -> Result<Duration, String> {
        let s: f64 = self.num(key, default)?;
        if !(0.0..=3600.0).contains(&s) {
            return Err(format!("--{key} must be within 0..=3600 seconds"));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

fn run(argv: Vec<String>) -> Result<String, String> {
    let mode = argv.first().ok_or_else(|| USAGE.to_string())?.clone();
    let args = Args::parse(&argv[1..])?;
    let target = conn::Target::parse(args.str("url")?)?;
    let body = Bytes::from(std::fs::read(args.str("body")?).map_err(|e| format!("--body: {e}"))?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    match mode.as_str() {
        "rate" => {
            let rate: f64 = args.num("rate", None)?;
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                return Err("--rate must be within (0, 1e6]".into());
            }
            let cfg = rate::Config {
                rate,
                duration: args.secs("duration", None)?,
                connections: args.num("connections", Some(64usize))?.clamp(1, 4096),
            };
            Ok(rt.block_on(rate::run(target, body, cfg)))
        }
        "stream" => {
            let cfg = stream::Config {
                streams: args.num("streams", None::<usize>)?.clamp(1, 20_000),
                duration: args.secs("duration", None)?,
                ramp: args.secs("ramp", Some(1.0))?,
            };
            Ok(rt.block_on(stream::run(target, body, cfg)))
        }
        "hold" => {
            let cfg = hold::Config {
                streams: args.num("streams", None::<usize>)?.clamp(1, 50_000),
                hold: args.secs("hold", None)?,
                open_rate: args
                    .num("open-rate", Some(2000.0f64))?
                    .clamp(1.0, 100_000.0),
                open_timeout: args.secs("open-timeout", Some(60.0))?,
                pid: args.map.get("pid").and_then(|p| p.parse().ok()),
            };
            Ok(rt.block_on(hold::run(target, body, cfg)))
        }
        "seq" => {
            let cfg = seq::Config {
                count: args.num("count", None::<usize>)?.clamp(1, 1_000_000),
                warmup: args.num("warmup", Some(5usize))?,
            };
            Ok(rt.block_on(seq::run(target, body, cfg)))
        }
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(argv) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("lgbench: {e}");
            std::process::exit(2);
        }
    }
}
