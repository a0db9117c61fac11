//! The file is the state: it leaves the watched directory only after intake's 2xx (removed,
//! or moved to the done directory) or 4xx (moved to `rejected/` with the reason beside it).
//! Every step is a rename or copy + fsync + remove, so `kill -9` at any instant leaves the
//! file either where it was (posted again: intake answers a duplicate 200) or where it goes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::domain::ship::CdrFileName;

/// The folder beside the files of a watched directory that refused files go to. The watch
/// is not recursive and the scan lists files only, so nothing in it is picked up again.
pub const REJECTED_DIR: &str = "rejected";

/// What happens to a file intake accepted.
#[derive(Debug, Clone)]
pub enum AfterSent {
    Delete,
    MoveTo(PathBuf),
}

/// Removes or moves an accepted file.
pub fn dispose_sent(path: &Path, after: &AfterSent) -> std::io::Result<()> {
    match after {
        AfterSent::Delete => {
            fs::remove_file(path)?;
            sync_parent(path)
        }
        AfterSent::MoveTo(dir) => move_into(path, dir),
    }
}

/// Writes `<name>.reason` in `rejected/`, then moves the file there (a crash in between
/// leaves the file to be posted, and refused, again).
pub fn reject(path: &Path, reason: &str) -> std::io::Result<PathBuf> {
    let parent = path.parent().ok_or_else(|| std::io::Error::other("file has no directory"))?;
    let dir = parent.join(REJECTED_DIR);
    fs::create_dir_all(&dir)?;
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let mut reason_name = name.to_os_string();
    reason_name.push(".reason");
    write_durably(&dir.join(reason_name), reason.as_bytes())?;
    move_into(path, &dir)?;
    Ok(dir.join(name))
}

/// Renames `path` into `dir` (same filesystem), else copies, fsyncs and removes it.
pub fn move_into(path: &Path, dir: &Path) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let target = dir.join(name);
    match fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            write_durably(&target, &fs::read(path)?)?;
            fs::remove_file(path)?;
        }
        Err(e) => return Err(e),
    }
    sync_dir(dir)?;
    sync_parent(path)
}

/// A temp file in the same directory, fsync, rename, fsync the directory.
fn write_durably(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = target.parent().ok_or_else(|| std::io::Error::other("no directory"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, target)?;
    sync_dir(dir)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The CDR files directly in `dir` (not in `rejected/`), with their parsed names.
pub fn scan(dir: &Path) -> std::io::Result<Vec<(PathBuf, CdrFileName)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str().and_then(CdrFileName::parse) {
            out.push((entry.path(), name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_file_moves_with_its_reason_and_the_scan_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a_6a7ccd66-0000-4000-8000-000000000001.cdr.xml");
        fs::write(&f, "<cdr/>").unwrap();
        fs::write(dir.path().join(".hidden.xml"), "x").unwrap();
        assert_eq!(scan(dir.path()).unwrap().len(), 1);
        let moved = reject(&f, "HTTP 400 from u\nbad\n").unwrap();
        assert!(!f.exists() && moved.exists());
        let reason = fs::read_to_string(
            moved.with_file_name(format!("{}.reason", moved.file_name().unwrap().to_string_lossy())),
        )
        .unwrap();
        assert_eq!(reason, "HTTP 400 from u\nbad\n");
        assert!(scan(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_sent_file_is_moved_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        fs::create_dir(&done).unwrap();
        let f = dir.path().join("x.cdr.json");
        fs::write(&f, "{}").unwrap();
        dispose_sent(&f, &AfterSent::MoveTo(done.clone())).unwrap();
        assert!(!f.exists() && done.join("x.cdr.json").exists());
        let g = dir.path().join("y.cdr.json");
        fs::write(&g, "{}").unwrap();
        dispose_sent(&g, &AfterSent::Delete).unwrap();
        assert!(!g.exists());
    }
}
