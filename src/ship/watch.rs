//! inotify (through `notify`) on the watched directories: a fast path that tells the shipper
//! a file appeared or was closed. It is only a hint: the periodic rescan is what makes sure
//! nothing is missed (after a restart, an event-queue overflow, a watch that failed).

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::domain::ship::CdrFileName;

/// What the watcher saw.
#[derive(Debug)]
pub enum Seen {
    /// A CDR file appeared or changed; `closed` when its writer is done with it (closed after
    /// writing, or renamed into the directory whole).
    File { path: PathBuf, name: CdrFileName, closed: bool },
    /// Events were lost (queue overflow) or the watch failed: list the directories again.
    Rescan,
}

/// Watches `dirs` (not recursively: `rejected/` stays out) until the watcher is dropped.
pub fn watch(dirs: &[PathBuf], tx: UnboundedSender<Seen>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            if event.need_rescan() {
                let _ = tx.send(Seen::Rescan);
            }
            let closed = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => true,
                EventKind::Create(CreateKind::File | CreateKind::Any) | EventKind::Modify(ModifyKind::Data(_)) => false,
                EventKind::Modify(ModifyKind::Any) => false,
                _ => return,
            };
            // a rename within the directory names the old path first
            let path = match event.kind {
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.last(),
                _ => event.paths.first(),
            };
            if let Some(path) = path {
                if let Some(name) = cdr_name(path) {
                    let _ = tx.send(Seen::File { path: path.clone(), name, closed });
                }
            }
        }
        Err(e) => {
            tracing::warn!("directory watch: {e}; rescanning");
            let _ = tx.send(Seen::Rescan);
        }
    })?;
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn cdr_name(path: &Path) -> Option<CdrFileName> {
    path.file_name()?.to_str().and_then(CdrFileName::parse)
}
