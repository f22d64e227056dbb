//! The `leasegate` binary: parses the CLI, sets up logging and runs the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use leasegate_gateway::cli::{self, Cli};

// The system allocator unless built with `--features mimalloc`. Measured
// (loadtests/bench/hold_rss.sh at 2,000 and 5,000 held streams, release
// builds of one commit): glibc 37.7 KiB per stream and 11.7 MiB idle, mimalloc
// 52.8 KiB and 22 MiB. mimalloc runs fewer instructions per request (callgrind:
// ~5k against glibc's ~11.9k for malloc/free), but saturation throughput in
// the harness was within run-to-run noise of glibc's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(cli.log_format);
    cli::run(cli).await
}
