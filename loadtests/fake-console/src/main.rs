//! `fake-console`: the fake Akash Console API as a standalone process, for
//! chaos runs against a separately started controller.

use clap::Parser;
use leasegate_fake_console::{FakeConfig, FakeConsole};

#[derive(Parser, Debug)]
#[command(about = "A fake Akash Console API (with /_ledger and /_control)")]
struct Args {
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// A JSON FakeConfig file; defaults apply when absent.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The x-api-key callers must send.
    #[arg(long, env = "FAKE_CONSOLE_API_KEY")]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        return Err("fake-console listens on loopback addresses only".into());
    }
    let mut cfg: FakeConfig = match &args.config {
        Some(p) => serde_json::from_slice(&std::fs::read(p)?)?,
        None => FakeConfig::default(),
    };
    if let Some(k) = args.api_key {
        cfg.api_key = k;
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let fake = FakeConsole::start_on(listener, cfg).await?;
    // The one stdout line: scripts read the URL from it.
    println!("fake-console listening on {}", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
