//! The `leasegate` binary: parses the CLI, sets up logging and runs the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use leasegate_gateway::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(cli.log_format);
    cli::run(cli).await
}
