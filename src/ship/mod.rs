//! `cdrmunch ship`: the seed's ArchiveD, a small daemon for each FreeSWITCH host. It sends the
//! CDR files mod_xml_cdr / mod_json_cdr leave in their log-dir / err-log-dir to intake, exactly
//! as the modules would post them, and takes each file away only once intake answered.
//!
//! The file is the state: nothing is kept elsewhere, so a restart (or `kill -9`) finds the work
//! where it was, and at worst posts a file a second time (intake answers a duplicate 200).

pub mod files;
pub mod metrics;
pub mod post;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::domain::outcome::{Backoff, Classify};
use crate::domain::ship::{is_settled, reason_text, retry_delay, CdrFileName};
use crate::events::{ShipBacklog, ShipRejected, ShipRetrying, ShipSent};
pub use files::AfterSent;
use post::{PostError, Poster};
use watch::Seen;

/// How one run ships.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    pub dirs: Vec<PathBuf>,
    pub after_sent: AfterSent,
    pub concurrency: usize,
    pub rescan: Duration,
    pub settle: Duration,
    pub backoff: Backoff,
    /// `--once`: ship what is there now, each file at most this many rounds over the URLs.
    /// `None`: run as a daemon until stopped, retrying for ever.
    pub once_rounds: Option<u32>,
    /// After a stop: how long POSTs in flight may finish.
    pub drain: Duration,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub sent: usize,
    pub rejected: Vec<PathBuf>,
    /// `--once` only: files still in place, with the last failure.
    pub undelivered: Vec<(PathBuf, String)>,
    /// POSTs abandoned when the drain time ran out (their files stay in place).
    pub abandoned: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("watching the directories: {0}")]
    Watch(#[from] notify::Error),
    #[error("reading directory {dir}: {source}")]
    Scan { dir: String, source: std::io::Error },
}

/// One file the shipper knows about.
struct Entry {
    name: CdrFileName,
    /// Consecutive retriable failures.
    failures: u32,
    due: Instant,
    in_flight: bool,
    /// Its writer closed it (inotify said so).
    closed: bool,
    modified: SystemTime,
}

/// How one attempt at a file ended.
enum Attempt {
    Sent {
        status: u16,
    },
    Rejected {
        status: u16,
        body: String,
    },
    Retry(String),
    /// The file went away before it was read (someone else took it).
    Gone,
}

/// Ships until `stop` turns true (then drains) or, with `--once`, until every file present at
/// the start is accepted, rejected or out of rounds. `progress` counts finished files.
pub async fn run(
    opts: ShipOptions,
    poster: Poster,
    mut stop: tokio::sync::watch::Receiver<bool>,
    progress: indicatif::ProgressBar,
) -> Result<Summary, ShipError> {
    let poster = Arc::new(poster);
    let once = opts.once_rounds.is_some();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    // the watch starts before the first scan, so a file written in between is not missed
    let _watcher = if once { None } else { Some(watch::watch(&opts.dirs, seen_tx)?) };
    let mut pending: HashMap<PathBuf, Entry> = HashMap::new();
    for dir in &opts.dirs {
        let found = files::scan(dir).map_err(|source| ShipError::Scan { dir: dir.display().to_string(), source })?;
        for (path, name) in found {
            note(&mut pending, path, name, false);
        }
    }
    progress.set_length(pending.len() as u64);
    tracing::info!("{} CDR files waiting in {}", pending.len(), list(&opts.dirs));
    if !once {
        // watching and scanned: a Type=notify unit is up now
        crate::sd_notify::notify(crate::sd_notify::READY);
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(PathBuf, Attempt)>();
    let mut in_flight = 0usize;
    let mut rescan = tokio::time::interval_at(Instant::now() + opts.rescan, opts.rescan);
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    let mut drain_until: Option<Instant> = None;
    let mut summary = Summary::default();
    loop {
        let next_due =
            if drain_until.is_none() { dispatch(&opts, &poster, &mut pending, &mut in_flight, &done_tx) } else { None };
        if (once && pending.is_empty()) || (drain_until.is_some() && in_flight == 0) {
            break;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            Some(s) = seen.recv(), if drain_until.is_none() => match s {
                Seen::File { path, name, closed } => note(&mut pending, path, name, closed),
                Seen::Rescan => rescan_dirs(&opts.dirs, &mut pending),
            },
            _ = rescan.tick(), if !once && drain_until.is_none() => rescan_dirs(&opts.dirs, &mut pending),
            Some((path, attempt)) = done_rx.recv() => {
                in_flight -= 1;
                if finish(&opts, &poster, &mut pending, &mut summary, path, attempt) {
                    progress.inc(1);
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or(far)) => {}
            _ = gauges.tick() => backlog(&pending),
            _ = stop.changed(), if drain_until.is_none() => {
                tracing::info!("stopping: no new files; waiting up to {:?} for {in_flight} POSTs in flight", opts.drain);
                drain_until = Some(Instant::now() + opts.drain);
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() => {
                tracing::warn!("{in_flight} POSTs still in flight after {:?}; their files stay and are sent next time", opts.drain);
                summary.abandoned = in_flight;
                break;
            }
        }
    }
    backlog(&pending);
    Ok(summary)
}

/// Starts attempts on every due, settled file while there is room; returns when the next
/// waiting file falls due.
fn dispatch(
    opts: &ShipOptions,
    poster: &Arc<Poster>,
    pending: &mut HashMap<PathBuf, Entry>,
    in_flight: &mut usize,
    done: &mpsc::UnboundedSender<(PathBuf, Attempt)>,
) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut gone = Vec::new();
    for (path, e) in pending.iter_mut().filter(|(_, e)| !e.in_flight) {
        if e.due > now {
            next = Some(next.map_or(e.due, |n| n.min(e.due)));
            continue;
        }
        if *in_flight >= opts.concurrency {
            // a completion wakes the loop
            continue;
        }
        if !is_settled(e.closed, age(e.modified), opts.settle) {
            match std::fs::metadata(path).and_then(|m| m.modified()) {
                Ok(m) => e.modified = m,
                Err(_) => {
                    gone.push(path.clone());
                    continue;
                }
            }
            let since = age(e.modified);
            if !is_settled(false, since, opts.settle) {
                e.due = now + opts.settle.saturating_sub(since).max(Duration::from_millis(10));
                next = Some(next.map_or(e.due, |n| n.min(e.due)));
                continue;
            }
        }
        e.in_flight = true;
        *in_flight += 1;
        let (poster, done, path, name, after) =
            (poster.clone(), done.clone(), path.clone(), e.name.clone(), opts.after_sent.clone());
        tokio::spawn(async move {
            let attempt = attempt(&poster, &path, &name, after).await;
            let _ = done.send((path, attempt));
        });
    }
    for path in gone {
        pending.remove(&path);
    }
    next
}

/// Reads, posts and disposes of one file.
async fn attempt(poster: &Poster, path: &Path, name: &CdrFileName, after: AfterSent) -> Attempt {
    let document = match tokio::fs::read(path).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Attempt::Gone,
        Err(source) => return Attempt::Retry(PostError::Read { path: path.display().to_string(), source }.to_string()),
    };
    match poster.post(path, name, &document).await {
        Ok(accepted) => {
            let p = path.to_path_buf();
            match tokio::task::spawn_blocking(move || files::dispose_sent(&p, &after)).await {
                Ok(Ok(())) => Attempt::Sent { status: accepted.status },
                Ok(Err(e)) => Attempt::Retry(format!("accepted, but taking the file away failed: {e}")),
                Err(e) => Attempt::Retry(format!("accepted, but taking the file away failed: {e}")),
            }
        }
        Err(e) if e.is_retriable() => Attempt::Retry(e.to_string()),
        Err(PostError::Status { url, status, body }) => {
            let (p, reason) = (path.to_path_buf(), reason_text(&url, status, &body));
            match tokio::task::spawn_blocking(move || files::reject(&p, &reason)).await {
                Ok(Ok(_)) => Attempt::Rejected { status, body },
                Ok(Err(e)) => Attempt::Retry(format!("refused ({status}), but moving it to rejected/ failed: {e}")),
                Err(e) => Attempt::Retry(format!("refused ({status}), but moving it to rejected/ failed: {e}")),
            }
        }
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

/// Records how an attempt ended; true when the file is finished with (for the progress bar).
fn finish(
    opts: &ShipOptions,
    poster: &Poster,
    pending: &mut HashMap<PathBuf, Entry>,
    summary: &mut Summary,
    path: PathBuf,
    attempt: Attempt,
) -> bool {
    match attempt {
        Attempt::Sent { status } => {
            ShipSent { file: &path, status }.emit();
            summary.sent += 1;
        }
        Attempt::Rejected { status, body } => {
            ShipRejected { file: &path, status, reason: &body }.emit();
            summary.rejected.push(path.clone());
        }
        Attempt::Gone => {}
        Attempt::Retry(reason) => {
            let Some(e) = pending.get_mut(&path) else { return false };
            e.in_flight = false;
            e.failures += 1;
            let urls = poster.url_count();
            if let Some(rounds) = opts.once_rounds {
                if e.failures >= rounds.saturating_mul(urls as u32) {
                    tracing::warn!(file = %path.display(), "not delivered after {} attempts: {reason}", e.failures);
                    pending.remove(&path);
                    summary.undelivered.push((path, reason));
                    return true;
                }
            }
            let delay = retry_delay(e.failures, urls, &opts.backoff, rand::random::<f64>());
            e.due = Instant::now() + delay;
            ShipRetrying { file: &path, failures: e.failures, reason: &reason, delay }.emit();
            return false;
        }
    }
    pending.remove(&path);
    true
}

/// A file seen by the watcher or a scan: new ones are added, known ones marked closed.
fn note(pending: &mut HashMap<PathBuf, Entry>, path: PathBuf, name: CdrFileName, closed: bool) {
    if let Some(e) = pending.get_mut(&path) {
        if closed && !e.closed {
            e.closed = true;
            if !e.in_flight && e.failures == 0 {
                e.due = Instant::now();
            }
        }
        return;
    }
    // a late event for a file already sent and gone: nothing to do
    let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else { return };
    pending.insert(path, Entry { name, failures: 0, due: Instant::now(), in_flight: false, closed, modified });
}

fn rescan_dirs(dirs: &[PathBuf], pending: &mut HashMap<PathBuf, Entry>) {
    let before = pending.len();
    for dir in dirs {
        match files::scan(dir) {
            Ok(found) => {
                for (path, name) in found {
                    if !pending.contains_key(&path) {
                        note(pending, path, name, false);
                    }
                }
            }
            Err(e) => tracing::warn!("rescanning {}: {e}", dir.display()),
        }
    }
    tracing::debug!("rescanned: {} files the watch had not reported", pending.len() - before);
}

fn backlog(pending: &HashMap<PathBuf, Entry>) {
    let oldest = pending.values().map(|e| age(e.modified)).max().unwrap_or_default();
    ShipBacklog { files: pending.len(), oldest }.emit();
}

fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}
