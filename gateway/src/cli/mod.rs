//! The `leasegate` command line: subcommands, quick-start discovery and the demo fleet.

mod demo;
mod spec;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use leasegate_fleet::Snapshot;
use tokio::sync::watch;

pub use spec::{EndpointArg, FallbackArg, GeoArgs};

use crate::{
    Gateway, Running,
    config::{Config, ConfigError},
    upstream,
};

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
    /// Gateway over a demo fleet of simulated replicas (no GPU, no account). The default.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Data plane only, over the endpoints given here and/or in a config file.
    Gateway(GatewayArgs),
    /// Validate a config file; prints every problem with its key path.
    CheckConfig { file: PathBuf },
}

#[derive(Debug, clap::Args)]
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
    let result = match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Serve { config } => serve(config).await,
        Command::Gateway(args) => gateway(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leasegate: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} endpoint(s), {} fallback(s))",
                file.display(),
                c.endpoints.len(),
                c.fallbacks.len()
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

fn load_or_default(path: Option<&std::path::Path>) -> Result<Config, Box<dyn std::error::Error>> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Config::parse("").map_err(|_| "built-in defaults do not parse".into()),
    }
}

async fn serve(config: Option<PathBuf>) -> CliResult {
    let config = load_or_default(config.as_deref())?;
    let demo = demo::DemoFleet::start().await?;
    let running = Gateway::start(config, demo.fleet()).await?;
    announce(&running);
    running.run_until_signal().await;
    demo.shutdown().await;
    Ok(())
}

async fn gateway(args: GatewayArgs) -> CliResult {
    let mut config = load_or_default(args.config.as_deref())?;
    if let Some(addr) = args.listen {
        config.listen.api = addr;
    }
    if let Some(addr) = args.admin_listen {
        config.listen.admin = addr;
    }
    args.geo.apply(&mut config.geo);
    if args.endpoints.is_empty() && config.endpoints.is_empty() {
        return Err(
            "no endpoints: give --endpoint URL (repeatable) or a --config with [[endpoints]]"
                .into(),
        );
    }
    let client = upstream::build_client(config.timeouts.connect)?;
    let base = config.endpoints.len();
    let mut all_models = Vec::new();
    for (i, arg) in args.endpoints.into_iter().enumerate() {
        let models = discover_models(&client, &arg).await?;
        tracing::info!(endpoint = %arg.url, ?models, "discovered models");
        all_models.extend(models.iter().cloned());
        config.endpoints.push(arg.into_spec(base + i, models));
    }
    all_models.extend(
        config
            .endpoints
            .iter()
            .flat_map(|e| e.models.iter().cloned()),
    );
    all_models.sort();
    all_models.dedup();
    let base = config.fallbacks.len();
    for (i, arg) in args.fallbacks.into_iter().enumerate() {
        config.fallbacks.push(arg.into_spec(base + i, &all_models));
    }
    // Quick start has no controller: the fleet is the config's own endpoints.
    let (_fleet_tx, fleet_rx) = watch::channel(Arc::new(Snapshot {
        version: 1,
        ..Snapshot::default()
    }));
    let running = Gateway::start(config, fleet_rx).await?;
    announce(&running);
    running.run_until_signal().await;
    Ok(())
}

/// Scripts read the bound addresses from stdout (useful with port 0).
fn announce(running: &Running) {
    println!("leasegate listening on http://{}", running.api_addr);
    println!("leasegate admin on http://{}", running.admin_addr);
}

/// Asks an endpoint which models it serves, like vllm-router's `--worker-urls`.
async fn discover_models(
    client: &upstream::HttpClient,
    arg: &EndpointArg,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let base = crate::config::base_url(&arg.url);
    let mut req = Request::get(format!("{base}/v1/models")).body(Full::new(Bytes::new()))?;
    if let Some(var) = &arg.key_env {
        let key = std::env::var(var)
            .map_err(|_| format!("{}: environment variable {var} is not set", arg.url))?;
        req.headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {key}").parse()?);
    }
    let fail = |why: String| format!("cannot discover the models of {}: {why}", arg.url);
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| fail("no answer within 10s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("status {}", resp.status())).into());
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let list: ModelList =
        serde_json::from_slice(&body.to_bytes()).map_err(|e| fail(e.to_string()))?;
    let models: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
    if models.is_empty() {
        return Err(fail("it lists no models".into()).into());
    }
    Ok(models)
}

#[derive(serde::Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(serde::Deserialize)]
struct ModelEntry {
    id: String,
}
