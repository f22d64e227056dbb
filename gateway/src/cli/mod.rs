//! The `leasegate` command line: subcommands and the wiring of gateway, controller and market.

pub mod akash;
pub mod control;
pub mod feed;
pub mod gateway;
mod keys;
mod progress;
pub mod serve;
mod spec;
pub mod status;
pub mod unified;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

pub use spec::{EndpointArg, FallbackArg, GeoArgs};
use unified::{Defaults, MarketKind};

use crate::{Running, config::ConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "leasegate",
    version,
    about = "An OpenAI-compatible inference gateway over leased GPU replicas"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Compact)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Compact,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gateway and controller in one process, on the simulated market by
    /// default (no GPU, no account). The default command.
    Serve {
        /// Sections in this file replace the built-in ones (config/serve.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of the simulated market (overrides [market.sim] seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Data plane only: endpoints given here and/or in a config file, or a
    /// controller's fleet followed over HTTP.
    Gateway(GatewayArgs),
    /// Control plane only, with an admin listener serving /fleet, /status and /metrics.
    Controller {
        /// Sections in this file replace the built-in ones (config/serve.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides [market] kind.
        #[arg(long, value_enum)]
        market: Option<MarketKind>,
        #[arg(long)]
        seed: Option<u64>,
        /// Admin listener (default [controller] admin, 127.0.0.1:9091).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        #[command(subcommand)]
        action: Option<ControllerAction>,
    },
    /// Validate a config file; prints every problem with its key path.
    CheckConfig { file: PathBuf },
    /// Print pools, leases, endpoints, spend and limits hit of a running process.
    Status(status::StatusArgs),
    /// Client keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a new client key: prints the key once and the `[[keys]]` entry (its SHA-256) for the config.
    Create {
        /// The key's name in logs, metrics and the admin API.
        #[arg(long, default_value = "new-key")]
        name: String,
    },
}

/// One-off actions of `leasegate controller` instead of running it.
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum ControllerAction {
    /// Close every deployment this controller (`[controller] id`) owns on
    /// the akash market, and only those; safe to repeat.
    CloseAll,
}

#[derive(Clone, Debug, clap::Args)]
pub struct GatewayArgs {
    /// `URL[,key_env=NAME][,region=CODE][,lat=F,lon=F][,max_concurrency=N][,engine=vllm|tgi|openai][,id=ID]`;
    /// its models are discovered from `URL/v1/models`.
    #[arg(long = "endpoint", value_name = "SPEC")]
    pub endpoints: Vec<EndpointArg>,
    /// `URL[,key_env=NAME][,model=UPSTREAM_MODEL][,region=CODE][,id=ID]`: used when every endpoint fails.
    #[arg(long = "fallback", value_name = "SPEC")]
    pub fallbacks: Vec<FallbackArg>,
    /// API listener (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin and metrics listener (default 127.0.0.1:9090).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Follow this controller's fleet (its admin URL, e.g. http://10.0.0.2:9091).
    #[arg(long, value_name = "URL")]
    pub fleet_from: Option<String>,
    /// The variable holding the controller's admin token.
    #[arg(long, value_name = "NAME", default_value = "LEASEGATE_ADMIN_TOKEN")]
    pub fleet_token_env: String,
    /// Where the last fleet snapshot is kept for restarts (default:
    /// fleet-cache.json next to the controller state file).
    #[arg(long, value_name = "FILE")]
    pub fleet_cache: Option<PathBuf>,
    #[command(flatten)]
    pub geo: GeoArgs,
}

/// Sets up logging: `RUST_LOG` filters, default `info`.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Compact => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve {
        config: None,
        seed: None,
    });
    let result = match command {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Keys {
            action: KeysAction::Create { name },
        } => return keys::create(&name),
        Command::Status(args) => status::status(args).await,
        Command::Serve { config, seed } => match load(config.as_deref(), Defaults::Serve) {
            Ok(u) => serve::serve(u, seed).await,
            Err(e) => Err(e),
        },
        Command::Controller {
            config,
            market,
            seed,
            admin_listen,
            action,
        } => match load(config.as_deref(), Defaults::Serve) {
            Ok(mut u) => {
                if let Some(m) = market {
                    u.control.market.kind = m;
                }
                if let Some(ControllerAction::CloseAll) = action {
                    return finish(akash::close_all(&u.control).await);
                }
                let admin = admin_listen.unwrap_or(u.control.controller.admin);
                serve::controller(u, seed, admin).await
            }
            Err(e) => Err(e),
        },
        Command::Gateway(args) => match load(args.config.as_deref(), Defaults::None) {
            Ok(u) => gateway::gateway(args, u).await,
            Err(e) => Err(e),
        },
    };
    finish(result)
}

fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leasegate: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn load(path: Option<&std::path::Path>, defaults: Defaults) -> CliResult<unified::Unified> {
    Ok(unified::load(path, defaults)?)
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match unified::load(Some(file), Defaults::None) {
        Ok(u) => {
            println!(
                "{}: ok ({} endpoint(s), {} fallback(s), {} pool(s))",
                file.display(),
                u.gateway.endpoints.len(),
                u.gateway.fallbacks.len(),
                u.control.pools.len(),
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError { file, problems }) => {
            for p in &problems {
                println!("{file}: {p}");
            }
            println!("{file}: {} problem(s)", problems.len());
            ExitCode::FAILURE
        }
    }
}

/// Scripts read the bound addresses from stdout (useful with port 0).
fn announce(running: &Running) {
    println!("leasegate listening on http://{}", running.api_addr);
    println!("leasegate admin on http://{}", running.admin_addr);
}
