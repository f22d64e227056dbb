//! The `leasegate` binary: parses the CLI, sets up logging and runs the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use leasegate_gateway::cli::{self, Cli};

// mimalloc unless built with `--no-default-features`. Measured on release
// builds of the same code (session 5, `b8f58de`): saturation throughput (wrk,
// one core, three back-to-back pairs) 21.0k-21.8k req/s against 18.3k-20.3k
// with glibc, whose malloc/free took ~11% of the gateway's CPU (perf); held
// streams (`loadtests/bench/hold_rss.sh` at 5,000) 15.7 KiB each against
// 16.9 KiB with glibc, once transparent huge pages are off. With them on,
// mimalloc's arenas are advised as huge pages and a held stream costs
// 23.7 KiB (idle RSS 20 against 13 MiB), hence the `prctl` below.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // A per-process flag; it also covers the mappings made before `main`.
    // Failing (an old kernel) costs memory, not correctness.
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    cli::init_tracing(cli.log_format);
    cli::run(cli).await
}
