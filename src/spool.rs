//! The intake spool: `cdr_queue` rows the database could not take, journaled on local disk
//! so intake can keep answering 200 through a database outage. FreeSWITCH never re-posts
//! what it gave up on, so a refusal during an outage would cost the CDR; a spooled row only
//! waits. The raw CDR itself is already durable in its store; the spool holds only its row.
//!
//! One file per group-commit batch, `{seq:020}.rows`, written as every durable file is (temp
//! file, fsync, rename, directory fsync), one JSON row per line. The backfill actor inserts
//! the oldest file's rows (idempotent on uuid) and removes the file. Files are named in
//! order, so a restart backfills oldest first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::storage::local::{sync_dir, DurableFile};
use crate::store::NewQueuedCdr;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the intake spool is full ({rows} rows, request_handler.spool_max_rows)")]
    Full { rows: u64 },
    #[error("intake spool {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Spooled batches read back: their files, and their rows in order.
pub type Spooled = (Vec<PathBuf>, Vec<NewQueuedCdr>);

pub struct Spool {
    dir: PathBuf,
    max_rows: u64,
    rows: AtomicU64,
    /// The next file's number; under a lock so two appends never share one.
    next: Mutex<u64>,
}

impl Spool {
    /// Opens (creating) the spool directory and counts what an earlier run left in it.
    pub fn open(dir: &Path, max_rows: u64) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io { dir: dir.display().to_string(), source };
        crate::storage::local::create_dir_durable(dir).map_err(io)?;
        let mut rows = 0;
        let mut last = 0;
        for file in std::fs::read_dir(dir).map_err(io)?.flatten().map(|e| e.path()) {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&file); // a write a crash cut short: never acknowledged
            } else if let Some(seq) = seq_of(&file) {
                rows += read_rows(&file).map_err(io)?.len() as u64;
                last = last.max(seq);
            }
        }
        let spool = Spool { dir: dir.to_path_buf(), max_rows, rows: AtomicU64::new(rows), next: Mutex::new(last + 1) };
        crate::events::SpoolDepth { rows }.emit();
        Ok(spool)
    }

    /// Rows waiting for the database.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::SeqCst)
    }

    pub fn max_rows(&self) -> u64 {
        self.max_rows
    }

    /// The raw files the spooled rows point at (the start-up sweep must not take them for
    /// orphans). Blocking I/O; unreadable files count as holding nothing.
    pub fn paths(&self) -> std::collections::HashSet<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Default::default() };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| seq_of(p).is_some())
            .filter_map(|p| read_rows(&p).ok())
            .flatten()
            .map(|r| r.path)
            .collect()
    }

    /// Journals `rows` durably, or refuses when they would pass `max_rows`. Blocking I/O.
    pub fn append(&self, rows: &[NewQueuedCdr]) -> Result<(), SpoolError> {
        let mut next = self.next.lock().expect("spool lock");
        let now = self.rows.load(Ordering::SeqCst);
        if now + rows.len() as u64 > self.max_rows {
            return Err(SpoolError::Full { rows: now });
        }
        let path = self.dir.join(format!("{:020}.rows", *next));
        let io = |source| SpoolError::Io { dir: self.dir.display().to_string(), source };
        let mut body = String::new();
        for r in rows {
            let line = serde_json::json!({
                "uuid": hex::encode(r.uuid),
                "host": r.freeswitch_host,
                "path": r.path,
                "create_time": r.create_time,
            });
            body.push_str(&line.to_string());
            body.push('\n');
        }
        let mut file = DurableFile::create(&path).map_err(io)?;
        file.write(body.as_bytes()).map_err(io)?;
        file.commit(true).map_err(io)?;
        *next += 1;
        self.rows.fetch_add(rows.len() as u64, Ordering::SeqCst);
        crate::events::SpoolDepth { rows: self.rows() }.emit();
        Ok(())
    }

    /// The oldest spooled batches, as many whole files as fit in about `max_rows` (at least
    /// one): the backfill drains faster than intake fills. Blocking I/O.
    pub fn oldest(&self, max_rows: usize) -> Result<Option<Spooled>, SpoolError> {
        let io = |source| SpoolError::Io { dir: self.dir.display().to_string(), source };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| seq_of(p).is_some())
            .collect();
        files.sort();
        let (mut taken, mut rows) = (Vec::new(), Vec::new());
        for file in files {
            let more = read_rows(&file).map_err(io)?;
            if !taken.is_empty() && rows.len() + more.len() > max_rows {
                break;
            }
            rows.extend(more);
            taken.push(file);
        }
        Ok((!taken.is_empty()).then_some((taken, rows)))
    }

    /// Batches the database has taken. Blocking I/O.
    pub fn remove(&self, files: &[PathBuf], rows: usize) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io { dir: self.dir.display().to_string(), source };
        for file in files {
            std::fs::remove_file(file).map_err(io)?;
        }
        sync_dir(&self.dir).map_err(io)?;
        self.rows.fetch_sub(rows as u64, Ordering::SeqCst);
        crate::events::SpoolDepth { rows: self.rows() }.emit();
        Ok(())
    }
}

fn seq_of(file: &Path) -> Option<u64> {
    let name = file.file_name()?.to_str()?;
    name.strip_suffix(".rows")?.parse().ok()
}

fn read_rows(file: &Path) -> std::io::Result<Vec<NewQueuedCdr>> {
    let text = std::fs::read_to_string(file)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", file.display()));
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let uuid = v["uuid"].as_str().and_then(|u| hex::decode(u).ok()).and_then(|b| <[u8; 16]>::try_from(b).ok());
        let (Some(uuid), Some(host), Some(path), Some(create_time)) =
            (uuid, v["host"].as_str(), v["path"].as_str(), v["create_time"].as_i64())
        else {
            return Err(bad("a row without uuid, host, path or create_time"));
        };
        rows.push(NewQueuedCdr { uuid, freeswitch_host: host.into(), path: path.into(), create_time });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u8) -> NewQueuedCdr {
        NewQueuedCdr {
            uuid: [n; 16],
            freeswitch_host: "fs1".into(),
            path: format!("/d/{n}.xml"),
            create_time: n as i64,
        }
    }

    #[test]
    fn rows_survive_a_reopen_oldest_first_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 3).unwrap();
        spool.append(&[row(1), row(2)]).unwrap();
        spool.append(&[row(3)]).unwrap();
        assert!(matches!(spool.append(&[row(4)]), Err(SpoolError::Full { rows: 3 })));
        std::fs::write(dir.path().join(".x.tmp"), b"half").unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 3).unwrap();
        assert_eq!(spool.rows(), 3);
        assert!(spool.paths().contains("/d/3.xml") && spool.paths().len() == 3);
        let (files, rows) = spool.oldest(2).unwrap().unwrap();
        assert_eq!(rows, vec![row(1), row(2)]);
        spool.remove(&files, rows.len()).unwrap();
        spool.append(&[row(5)]).unwrap();
        let (_, rows) = spool.oldest(1).unwrap().unwrap();
        assert_eq!(rows, vec![row(3)], "the newer file comes after");
        let (files, rows) = spool.oldest(10).unwrap().unwrap();
        assert_eq!((files.len(), rows), (2, vec![row(3), row(5)]));
        assert!(!dir.path().join(".x.tmp").exists());
    }
}
