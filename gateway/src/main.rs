//! The `leasegate` binary: parses the CLI, sets up logging and runs the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use leasegate_gateway::cli::{self, Cli};

// The system allocator unless built with `--features mimalloc`. Measured on
// release builds of the same code: held streams (loadtests/bench/hold_rss.sh
// at 2,000 and 5,000) cost 33.0 KiB each with glibc and 52.8 KiB with
// mimalloc (idle RSS 12 against 22 MiB); saturation throughput (wrk, one
// core) was 19.4k-20.2k req/s with glibc against 20.7k with mimalloc, glibc's
// malloc/free taking ~13% of the gateway's CPU there (perf). Long-lived
// streams are the gateway's common case, so memory decides.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(cli.log_format);
    cli::run(cli).await
}
