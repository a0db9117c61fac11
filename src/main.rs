//! The `cdrmunch` command: parses the command line and hands it to `cdrmunch::cli`.

use std::process::ExitCode;

use clap::Parser;

use cdrmunch::cli::{Cli, Command};

/// glibc malloc showed up at ~8% of the server's CPU under load; mimalloc halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { .. } => {}
        // a daemon: say what it ships and what it refused (RUST_LOG overrides)
        Command::Ship(_) => cdrmunch::logging::init(4),
        _ => cdrmunch::logging::init(3),
    }
    match cdrmunch::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cdrmunch: {e:#}");
            ExitCode::from(2)
        }
    }
}
