//! `econ`: runs the economics simulation and writes `report.md` and `report.json`.

use std::path::PathBuf;

use clap::Parser;
use leasegate_econ::EconConfig;

#[derive(Debug, Parser)]
#[command(about = "leasegate economics simulation (simulated time, seeded)")]
struct Args {
    /// Measured hours of simulated time (after a 2 h warm-up).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for report.md and report.json.
    #[arg(long, default_value = "target/econ")]
    out: PathBuf,
    /// Fallback price per 1M input tokens (USD).
    #[arg(long)]
    fallback_input: Option<f64>,
    /// Fallback price per 1M output tokens (USD).
    #[arg(long)]
    fallback_output: Option<f64>,
    /// Seconds between the gateway feed's demand reports (the binary's
    /// `[controller] demand_interval`; default: its default).
    #[arg(long)]
    demand_interval: Option<f64>,
    /// The CI smoke scale instead (2 simulated hours; ignores --hours).
    #[arg(long)]
    smoke: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = if args.smoke {
        EconConfig::smoke(args.seed)
    } else {
        EconConfig::full(args.seed, args.hours)
    };
    if let Some(s) = args.demand_interval {
        cfg.demand_every = std::time::Duration::try_from_secs_f64(s)?;
    }
    if let Some(p) = args.fallback_input {
        cfg.fallback.usd_per_1m_input = p;
    }
    if let Some(p) = args.fallback_output {
        cfg.fallback.usd_per_1m_output = p;
    }
    let report = leasegate_econ::run(&cfg)?;
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("report.json"), report.json())?;
    let md = report.markdown();
    std::fs::write(args.out.join("report.md"), &md)?;
    println!("{md}");
    Ok(())
}
