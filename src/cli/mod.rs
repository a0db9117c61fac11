//! The command line: `serve`, and the tools beside it (normalize, submit, gen, the operator
//! commands). `main` only parses and hands over; each command is a function here.

mod args;
mod commands;
pub mod gen;
pub mod ops;
pub mod rerate;
mod serve;
mod ship;
pub mod submit;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use args::{Cli, Command, ConfigArgs, ShipArgs};

use crate::config::{Dirs, RawConfig, Settings};

/// Runs one parsed command line; the exit code is the command's verdict.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { cfg, drain_seconds, roles } => {
            serve::serve(cfg, Duration::from_secs(drain_seconds), roles).await
        }
        Command::Migrate { cfg } => commands::migrate(cfg).await,
        Command::Normalize { file, cfg, disabled_tasks, rates, country_code } => {
            commands::normalize(file, cfg, &disabled_tasks, rates, country_code)
        }
        Command::Submit { paths, url, encode, concurrency, basic_auth, generate, format, seed, timings, quiet } => {
            let opts = submit::SubmitOptions { url, encode, concurrency, basic_auth, timings, quiet };
            commands::submit(paths, generate, format, seed, opts).await
        }
        Command::Ship(args) => ship::ship(args).await,
        Command::Gen { count, out, format, seed } => commands::gen(count, out, format, seed),
        Command::Status { cfg, json, limit } => commands::status(cfg, json, limit).await,
        Command::Retry { cfg, cdr, task, errors, task_type, json } => {
            commands::retry(cfg, cdr, task, errors, task_type, json).await
        }
        Command::Purge { cfg, older_than, archive_to, dry_run, json } => {
            commands::purge(cfg, &older_than, archive_to, dry_run, json).await
        }
        Command::Replay { cfg, from, to, json } => commands::replay(cfg, &from, &to, json).await,
        Command::Config { cfg, keys } => commands::config(cfg, keys),
        Command::Call { uuid, cfg, json } => commands::call(&uuid, cfg, json).await,
        Command::Why { uuid, cfg, json } => why::why(&uuid, cfg, json).await,
        Command::Rerate { cfg, deck, from, to, org, apply, json } => {
            commands::rerate(cfg, &deck, (&from, &to), org, apply, json).await
        }
    }
}

fn load_settings(cfg: &ConfigArgs) -> anyhow::Result<(Settings, String)> {
    let (settings, source, warnings) = load_settings_quietly(cfg)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok((settings, source))
}

/// The settings and the config's warnings, for `serve` to log once its logger is set up.
fn load_settings_quietly(cfg: &ConfigArgs) -> anyhow::Result<(Settings, String, Vec<String>)> {
    let dirs = Dirs::from_env();
    match &cfg.config {
        None => {
            let data =
                std::env::var_os("CDRMUNCH_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"));
            let source = format!("embedded default (data under {})", data.display());
            Ok((Settings::embedded_default(&data), source, Vec::new()))
        }
        Some(path) => {
            let raw = RawConfig::load(path, cfg.env.as_deref(), &dirs.config_dir)?;
            let (settings, warnings) = Settings::from_raw(&raw, &dirs)?;
            Ok((settings, path.display().to_string(), warnings.iter().map(|w| w.to_string()).collect()))
        }
    }
}

/// A counter on stderr for long operator commands; hidden for --json and when not a terminal.
fn progress_bar(json: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {pos} CDRs {elapsed}").expect("template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
