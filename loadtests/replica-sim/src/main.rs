//! The `replica-sim` binary: one simulated OpenAI-compatible replica on a port.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use leasegate_replica_sim::{Behavior, Engine, Replica};

#[derive(Debug, Parser)]
#[command(name = "replica-sim", about = "An OpenAI-compatible replica simulator")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// A model to serve (repeatable); defaults to `sim-model`.
    #[arg(long = "model")]
    models: Vec<String>,
    #[arg(long, value_enum, default_value_t = EngineArg::Vllm)]
    engine: EngineArg,
    /// Time to first token, e.g. `50ms`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    ttft: Duration,
    /// Inter-token delay, e.g. `10ms`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    itl: Duration,
    /// Output tokens per completion.
    #[arg(long, default_value_t = 16)]
    tokens: u32,
    /// Length of embedding vectors.
    #[arg(long, default_value_t = 8)]
    embedding_dim: usize,
    /// Fraction of inference requests answered with --error-status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Streams stop after this many events and stay open.
    #[arg(long)]
    stall_after: Option<u32>,
    /// Streams drop the connection after this many events.
    #[arg(long)]
    disconnect_after: Option<u32>,
    /// Accept connections and never answer.
    #[arg(long)]
    blackhole: bool,
    #[arg(long, default_value_t = 256)]
    max_concurrency: u32,
    /// Name of the environment variable holding the API key to require.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Runtime worker threads; 1 runs everything on the current thread, the
    /// cheapest setup per request, and leaves other cores to the system under test.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the error draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineArg {
    Vllm,
    Tgi,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let behavior = match behavior(&args) {
        Ok(b) => b,
        Err(msg) => {
            eprintln!("replica-sim: {msg}");
            return ExitCode::from(2);
        }
    };
    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replica-sim: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args.listen, behavior))
}

fn behavior(args: &Args) -> Result<Behavior, String> {
    let api_key = match &args.api_key_env {
        // The key itself is never printed, only the variable's name.
        Some(name) => match std::env::var(name) {
            Ok(k) if !k.is_empty() => Some(k),
            _ => return Err(format!("environment variable {name} is unset or empty")),
        },
        None => None,
    };
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err("--error-rate must be between 0 and 1".into());
    }
    let models = if args.models.is_empty() {
        Behavior::default().models
    } else {
        args.models.clone()
    };
    Ok(Behavior {
        models,
        engine: match args.engine {
            EngineArg::Vllm => Engine::Vllm,
            EngineArg::Tgi => Engine::Tgi,
        },
        ttft: args.ttft,
        inter_token: args.itl,
        tokens: args.tokens,
        embedding_dim: args.embedding_dim,
        error_rate: args.error_rate,
        error_status: args.error_status,
        stall_after: args.stall_after,
        disconnect_after: args.disconnect_after,
        blackhole: args.blackhole,
        max_concurrency: args.max_concurrency,
        api_key,
        seed: args.seed,
    })
}

async fn run(listen: SocketAddr, behavior: Behavior) -> ExitCode {
    // Handlers go in before the ready line, so a SIGTERM right after it is graceful.
    let stop = match shutdown_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("replica-sim: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let replica = match Replica::start_on(listen, behavior).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("replica-sim: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(behavior = ?replica.behavior(), "started");
    // Scripts wait for this exact line.
    println!("replica-sim listening on {}", replica.url());
    stop.await;
    tracing::info!("shutting down");
    replica.shutdown().await;
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or ctrl-c; both are registered before this returns.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
