//! At start, intake clears what an earlier crash (or a failed request) may have left in its
//! local directories: temp files of writes that never finished, and raw CDR files no
//! `cdr_queue` row points at (stored, then the row failed, then the process died before it
//! could remove the file; the switch never got a 2xx, so it still has the CDR).
//!
//! Only recent directories are read (by their modification time), so a start costs a few
//! directory listings however large the archive is. Files younger than [`SETTLE`] are left
//! alone: another intake process on the same directories may be writing them right now.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::store::Store;

/// How far back the sweep looks.
const WINDOW: Duration = Duration::from_secs(48 * 3600);
/// How old a file must be before it can be stale.
pub const SETTLE: Duration = Duration::from_secs(600);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub temp_files: u64,
    pub orphans: u64,
}

/// Sweeps the raw CDR store (`{root}/{host}/{day}/`) and the upload directories (`{dir}/{day}/`).
pub async fn sweep(
    store: &Store,
    raw_root: &Path,
    upload_dirs: &[PathBuf],
    spooled: &std::collections::HashSet<String>,
    settle: Duration,
) -> Swept {
    let mut swept = Swept::default();
    let now = SystemTime::now();
    let recent = |p: &Path| modified_within(p, now, WINDOW);
    let hosts = subdirs(raw_root);
    let day_dirs: Vec<PathBuf> = hosts
        .iter()
        .flat_map(|h| subdirs(h))
        .chain(upload_dirs.iter().flat_map(|d| subdirs(d)))
        .filter(|d| recent(d))
        .collect();
    for dir in day_dirs {
        let in_raw = dir.starts_with(raw_root);
        for file in files(&dir) {
            let Ok(age) = file.metadata().and_then(|m| m.modified()).map(|m| now.duration_since(m).unwrap_or_default())
            else {
                continue;
            };
            if age < settle || age > WINDOW {
                continue;
            }
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') && name.ends_with(".tmp") {
                if std::fs::remove_file(&file).is_ok() {
                    swept.temp_files += 1;
                }
            } else if in_raw && !spooled.contains(&file.display().to_string()) && is_orphan(store, &file, &name).await {
                match std::fs::remove_file(&file) {
                    Ok(()) => swept.orphans += 1,
                    Err(e) => tracing::warn!(file = %file.display(), error = %e, "could not remove an orphan CDR file"),
                }
            }
        }
    }
    if swept != Swept::default() {
        tracing::info!(temp_files = swept.temp_files, orphans = swept.orphans, "start-up sweep removed stale files");
    }
    swept
}

/// A `[a_]<uuid>.cdr.{xml,json}` file with no `cdr_queue` row for its uuid. A database error
/// keeps the file: only a known absence removes anything.
async fn is_orphan(store: &Store, file: &Path, name: &str) -> bool {
    let stem = name.strip_prefix("a_").unwrap_or(name);
    let Some(uuid) = stem.strip_suffix(".cdr.xml").or_else(|| stem.strip_suffix(".cdr.json")) else { return false };
    let Some(bytes) = crate::domain::intake::canonical_uuid(uuid) else { return false };
    match store.queued_row(bytes).await {
        Ok(None) => true,
        Ok(Some(_)) => false,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "start-up sweep could not check a CDR file");
            false
        }
    }
}

fn modified_within(p: &Path, now: SystemTime, window: Duration) -> bool {
    p.metadata()
        .and_then(|m| m.modified())
        .map(|m| now.duration_since(m).unwrap_or_default() <= window)
        .unwrap_or(false)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    entries(dir).filter(|p| p.is_dir()).collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    entries(dir).filter(|p| p.is_file()).collect()
}

fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path())
}
