//! `cdrmunch ship`: the flags over the `ship.*` keys, the checks that must pass before a file
//! is touched, the signals, and the exit status. The shipping itself is `crate::ship`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::ValueEnum;
use tokio::signal::unix::{signal, SignalKind};

use super::load_settings;
use super::submit::Encode;
use super::ShipArgs;
use crate::config::{BasicAuth, ShipSettings};
use crate::domain::outcome::Backoff;
use crate::ship::{post::Poster, AfterSent, ShipOptions};

pub(super) async fn ship(args: ShipArgs) -> anyhow::Result<ExitCode> {
    // caught before anything else, so a stop during start-up is a clean one
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (settings, _source) = load_settings(&args.cfg)?;
    let s = merge(settings.ship, &args)?;
    let encode = Encode::from_str(&s.encode, true).map_err(anyhow::Error::msg)?;
    let after_sent = match (&s.done_dir, s.delete) {
        (Some(_), true) => bail!("ship.done_dir and ship.delete are both set: keep accepted files, or delete them"),
        (None, false) => bail!(
            "say what happens to a file intake accepted: --done-dir DIR (ship.done_dir) keeps it, --delete \
             (ship.delete = true) removes it"
        ),
        (Some(dir), false) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating done directory {}", dir.display()))?;
            AfterSent::MoveTo(dir.clone())
        }
        (None, true) => AfterSent::Delete,
    };
    if s.dirs.is_empty() {
        bail!("no directory to ship from: --dir DIR or ship.dirs");
    }
    for dir in &s.dirs {
        if !dir.is_dir() {
            bail!("{}: not a directory", dir.display());
        }
        if let AfterSent::MoveTo(done) = &after_sent {
            if same_dir(dir, done) {
                bail!("the done directory {} is also shipped from: accepted files would be sent again", done.display());
            }
        }
    }
    if s.urls.is_empty() {
        bail!("no intake URL: --url URL or ship.urls");
    }
    let poster = Poster::new(s.urls.clone(), encode, s.basic_auth.clone(), s.timeout, s.concurrency)
        .context("building the HTTP client")?;
    let _metrics = match s.metrics_port {
        0 => None,
        port => {
            let addr: SocketAddr = format!("{}:{port}", s.metrics_address)
                .parse()
                .with_context(|| format!("ship.metrics_address {}: not an IP address", s.metrics_address))?;
            let (bound, task) = crate::ship::metrics::serve(addr, crate::telemetry::install())
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            tracing::info!("metrics on http://{bound}/metrics");
            Some(AbortOnDrop(task))
        }
    };
    let once = args.once;
    let opts = ShipOptions {
        dirs: s.dirs.clone(),
        after_sent,
        concurrency: s.concurrency,
        rescan: s.rescan,
        settle: s.settle,
        backoff: Backoff::exponential(s.retry_backoff, s.retry_backoff_max),
        once_rounds: once.then_some(s.once_rounds),
        drain: s.drain,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        crate::sd_notify::notify(crate::sd_notify::STOPPING);
        let _ = stop_tx.send(true);
    });
    let bar = if once && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    tracing::info!(
        "shipping {} to {} ({} bodies, {} at once{})",
        s.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        s.urls.join(" then "),
        s.encode,
        s.concurrency,
        if once { ", once" } else { "" }
    );
    let started = Instant::now();
    let summary = crate::ship::run(opts, poster, stop_rx, bar.clone()).await?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let done = summary.sent + summary.rejected.len() + summary.undelivered.len();
    eprintln!(
        "shipped {done} files in {elapsed:.2}s ({:.0}/s): {} accepted, {} rejected, {} not delivered",
        done as f64 / elapsed.max(1e-9),
        summary.sent,
        summary.rejected.len(),
        summary.undelivered.len()
    );
    for path in summary.rejected.iter().take(20) {
        eprintln!("  rejected {} (reason in {}.reason)", path.display(), rejected_path(path).display());
    }
    for (path, why) in summary.undelivered.iter().take(20) {
        eprintln!("  not delivered {}: {why}", path.display());
    }
    let left = (summary.rejected.len() + summary.undelivered.len()).saturating_sub(40);
    if left > 0 {
        eprintln!("  … and {left} more");
    }
    Ok(if once && (!summary.rejected.is_empty() || !summary.undelivered.is_empty()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The config's `ship.*`, with the flags given on the command line on top.
fn merge(mut s: ShipSettings, a: &ShipArgs) -> anyhow::Result<ShipSettings> {
    s.dirs.extend(a.dirs.iter().cloned());
    if !a.urls.is_empty() {
        s.urls = a.urls.clone();
    }
    if let Some(u) = s.urls.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
        bail!("--url {u}: an http:// or https:// URL");
    }
    if let Some(e) = a.encode {
        s.encode = e.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
    }
    if let Some(cred) = &a.basic_auth {
        let (user, password) = cred.split_once(':').unwrap_or((cred.as_str(), ""));
        s.basic_auth = Some(BasicAuth { user: user.into(), password: password.into() });
    }
    if let Some(dir) = &a.done_dir {
        s.done_dir = Some(dir.clone());
        s.delete = false;
    }
    if a.delete {
        s.delete = true;
        s.done_dir = None;
    }
    if let Some(n) = a.concurrency {
        if n == 0 {
            bail!("--concurrency: at least 1");
        }
        s.concurrency = n;
    }
    if let Some(p) = a.metrics_port {
        s.metrics_port = p;
    }
    Ok(s)
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn rejected_path(path: &std::path::Path) -> PathBuf {
    path.parent().unwrap_or(path).join(crate::ship::files::REJECTED_DIR).join(path.file_name().unwrap_or_default())
}

/// Stops the metrics listener with the command.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
