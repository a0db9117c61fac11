//! Local filesystem store: temp file in the same directory, fsync, rename, fsync the
//! directory — so a 200 or a `done='y'` never points at a file a crash could take back.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{BlobStore, ObjectInfo, StorageError};

pub struct LocalStore {
    root: PathBuf,
    /// Directories known to exist (and be durable), so a write to an existing hour or day
    /// directory costs no stat call.
    known_dirs: Arc<Mutex<HashSet<PathBuf>>>,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), known_dirs: Arc::default() }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(key);
        let clean = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !clean {
            return Err(StorageError::BadKey(key.to_string()));
        }
        Ok(self.root.join(rel))
    }
}

impl LocalStore {
    /// Writes `bytes` under `key` (not synced); with `only_new`, nothing when a file is there.
    async fn write(&self, key: &str, bytes: bytes::Bytes, only_new: bool) -> Result<Option<String>, StorageError> {
        let path = self.path_of(key)?;
        let loc = path.display().to_string();
        let known = self.known_dirs.clone();
        let written = tokio::task::spawn_blocking(move || {
            if only_new && std::fs::symlink_metadata(&path).is_ok() {
                return Ok(false);
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let is_known = known.lock().map(|k| k.contains(dir)).unwrap_or(false);
            if !is_known {
                create_dir_durable(dir)?;
                remember(&known, dir);
            }
            let mut file = match DurableFile::create(&path) {
                // the directory was removed while we thought it was there (a cleanup job, an
                // operator): make it again rather than fail every CDR of that day
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_known => {
                    if let Ok(mut k) = known.lock() {
                        k.remove(dir);
                    }
                    create_dir_durable(dir)?;
                    remember(&known, dir);
                    DurableFile::create(&path)?
                }
                other => other?,
            };
            file.write(&bytes)?;
            file.commit(false).map(|()| true)
        })
        .await
        .map_err(|e| StorageError::write_io(&loc, std::io::Error::other(e)))?
        .map_err(|e| StorageError::write_io(&loc, e))?;
        Ok(written.then_some(loc))
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn put_unsynced(&self, key: &str, bytes: &[u8]) -> Result<String, StorageError> {
        self.put_owned_unsynced(key, bytes::Bytes::copy_from_slice(bytes)).await
    }

    async fn put_owned_unsynced(&self, key: &str, bytes: bytes::Bytes) -> Result<String, StorageError> {
        self.write(key, bytes, false).await.map(|written| written.expect("overwrite always writes"))
    }

    /// The existence check on the blocking pool with the write: one hop per CDR, not two.
    async fn put_new_unsynced(&self, key: &str, bytes: bytes::Bytes) -> Result<Option<String>, StorageError> {
        self.write(key, bytes, true).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path_of(key)?;
        match tokio::fs::symlink_metadata(&path).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io(path.display().to_string(), e)),
        }
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<String, StorageError> {
        let path = self.path_of(key)?;
        let loc = path.display().to_string();
        let source = source.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let (mut from, _) = open_regular(&source)?;
            create_dir_durable(path.parent().unwrap_or(Path::new(".")))?;
            let mut file = DurableFile::create(&path)?;
            file.copy_from(&mut from)?;
            file.commit(true)
        })
        .await
        .map_err(|e| StorageError::io(&loc, std::io::Error::other(e)))?
        .map_err(|e| StorageError::io(&loc, e))?;
        Ok(loc)
    }

    /// The files themselves were fsynced before their rename; what remains is the directory
    /// entries, once per distinct directory of the batch.
    async fn sync(&self, locations: &[String]) -> Result<(), StorageError> {
        let mut dirs: Vec<PathBuf> =
            locations.iter().filter_map(|l| Path::new(l).parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        tokio::task::spawn_blocking(move || {
            for d in &dirs {
                sync_dir(d).map_err(|e| StorageError::write_io(d.display().to_string(), e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::io("sync", std::io::Error::other(e)))?
    }

    async fn get(&self, location: &str) -> Result<Vec<u8>, StorageError> {
        tokio::fs::read(location).await.map_err(|e| StorageError::io(location, e))
    }

    async fn delete(&self, location: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(location).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(location, e)),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        let probe = self.root.join(format!(".ready-{}", std::process::id()));
        let loc = self.root.display().to_string();
        tokio::fs::write(&probe, b"").await.map_err(|e| StorageError::io(&loc, e))?;
        tokio::fs::remove_file(&probe).await.map_err(|e| StorageError::io(&loc, e))
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path_of(key)?;
        let location = path.display().to_string();
        match md5_file(&path).await {
            Ok((size, md5)) => Ok(Some(ObjectInfo { location, size, md5: Some(md5) })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(location, e)),
        }
    }
}

fn remember(known: &Mutex<HashSet<PathBuf>>, dir: &Path) {
    if let Ok(mut k) = known.lock() {
        if k.len() > 10_000 {
            k.clear(); // hour directories accumulate; forgetting costs one stat each
        }
        k.insert(dir.to_path_buf());
    }
}

/// Opens `path` for reading only if it is a regular file: a device (`/dev/zero`) would
/// never end, a FIFO would block. Non-blocking, so opening a FIFO does not wait for a
/// writer; not through a symlink in the last component. The error says what it is.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a directory" } else { "not a regular file" };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is {what}", path.display())));
    }
    Ok((file, meta))
}

/// Size and hex MD5 of a regular file, read in chunks on the blocking pool.
pub async fn md5_file(path: &Path) -> std::io::Result<(u64, String)> {
    use md5::Digest;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (mut file, _) = open_regular(&path)?;
        let (mut hash, mut size) = (md5::Md5::new(), 0u64);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hash.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, hex::encode(hash.finalize())))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Creates `dir` and every missing parent, fsyncing each parent whose entry list changed,
/// so a newly made directory survives a crash together with the file put in it.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_durable(parent)?;
        }
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    std::fs::File::open(dir)?.sync_all()
}

/// The one durable write: bytes go to a temp file beside `path` (a unique name, so the
/// final rename stays within one filesystem); `commit` fsyncs it, renames it over `path`
/// and, when asked, fsyncs the directory. Dropped before `commit` (an error, a client gone
/// mid-upload) it removes the temp file, so nothing half written is ever left or seen.
pub struct DurableFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
}

impl DurableFile {
    /// Starts the file; `path`'s directory must exist (see [`create_dir_durable`]).
    pub fn create(path: &Path) -> std::io::Result<DurableFile> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&tmp)?;
        Ok(DurableFile { path: path.to_path_buf(), tmp, file: Some(file) })
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.as_mut().expect("open until commit").write_all(bytes)
    }

    /// Copies everything `from` holds into the file, a buffer at a time.
    pub fn copy_from(&mut self, from: &mut impl Read) -> std::io::Result<u64> {
        std::io::copy(from, self.file.as_mut().expect("open until commit"))
    }

    /// Makes the file durable under its name. Without `sync_dir` the directory entry is left
    /// for a group commit to sync with the rest of its batch.
    pub fn commit(mut self, sync_dir_too: bool) -> std::io::Result<()> {
        let file = self.file.take().expect("open until commit");
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        self.tmp = PathBuf::new();
        match (sync_dir_too, self.path.parent()) {
            (true, Some(dir)) => sync_dir(dir),
            _ => Ok(()),
        }
    }
}

impl Drop for DurableFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_and_overwrite_are_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("a"));
        let loc = store.put("host/2024-01-01/x.xml", b"one").await.unwrap();
        assert_eq!(store.get(&loc).await.unwrap(), b"one");
        store.put("host/2024-01-01/x.xml", b"two!").await.unwrap();
        assert_eq!(store.get(&loc).await.unwrap(), b"two!");
        // no temp files left behind
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("a/host/2024-01-01")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn rejects_keys_that_escape_the_root_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        for bad in ["../etc/passwd", "/abs", "", "a/../../b"] {
            assert!(matches!(store.put(bad, b"x").await, Err(StorageError::BadKey(_))), "{bad}");
        }
        let missing = dir.path().join("nope.xml").display().to_string();
        let err = store.get(&missing).await.unwrap_err();
        assert!(matches!(err, StorageError::NotFound(_)));
        assert!(!crate::domain::outcome::Classify::is_retriable(&err));
    }

    #[tokio::test]
    async fn a_directory_removed_while_running_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.put("h/2024-01-01/a.xml", b"one").await.unwrap();
        std::fs::remove_dir_all(dir.path().join("h")).unwrap();
        let loc = store.put("h/2024-01-01/b.xml", b"two").await.unwrap();
        assert_eq!(store.get(&loc).await.unwrap(), b"two");
        // and a write that still fails is retriable, never "not found"
        std::fs::remove_dir_all(dir.path().join("h")).unwrap();
        std::fs::write(dir.path().join("h"), b"a file where the directory was").unwrap();
        let err = store.put("h/2024-01-01/c.xml", b"x").await.unwrap_err();
        assert!(crate::domain::outcome::Classify::is_retriable(&err), "{err}");
    }
}
