//! recordingDelivery and bufferedRecording: a recording copied to the delivery target (a
//! directory or S3) under a deterministic key, then verified by size and MD5. A repeated
//! attempt finds the object already there and verified, and does nothing more.
//!
//! A CDR names its recording's path, and whoever can post a CDR can name any path: a
//! recording is read only when it is a regular file below `recordings.source_dirs` (the
//! buffer directory for buffered recordings) once symlinks and `..` are resolved. It is
//! hashed and copied a buffer at a time, never held in memory whole.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{HandlerError, Job, TaskHandler};
use crate::config::Settings;
use crate::storage::{self, BlobStore};

/// The recording store shared by delivery, buffered recordings and transcription.
pub struct Recordings {
    pub base_dir: PathBuf,
    /// `recordings.source_dirs`: the only directories a CDR's recording is read from.
    pub source_dirs: Vec<PathBuf>,
    pub buffer_dir: Option<PathBuf>,
    pub target: Arc<dyn BlobStore>,
    pub target_is_s3: bool,
}

/// A recording that may be read: a regular file at `path` (its real path), with the size
/// and MD5 its delivered copy must have.
pub struct Source {
    pub path: PathBuf,
    pub size: u64,
    pub md5: String,
}

impl Recordings {
    pub async fn open(s: &Settings) -> Result<Recordings, String> {
        let target = s.recordings.delivery_target.clone().ok_or("recordings.delivery_target is not set")?;
        let store = storage::open(&target, &s.s3).await.map_err(|e| format!("recordings.delivery_target: {e}"))?;
        Ok(Recordings {
            base_dir: s.recordings.base_dir.clone(),
            source_dirs: s.recordings.source_dirs.clone(),
            buffer_dir: s.recordings.buffer_dir.clone(),
            target: store,
            target_is_s3: target.starts_with("s3://"),
        })
    }

    /// `YYYY/MM/DD/{uuid}.{ext}`, by the call's start date (UTC): the same call always lands
    /// on the same key, so a retry overwrites nothing new and transcription can find it.
    pub fn key_for(job: &Job, source_name: &str) -> String {
        let suffix = job.doc.field("TableSuffix").unwrap_or_default();
        let date = if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_digit()) {
            format!("{}/{}/{}", &suffix[..4], &suffix[4..6], &suffix[6..])
        } else {
            "undated".to_string()
        };
        let ext = Path::new(source_name)
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("wav")
            .to_ascii_lowercase();
        format!("{date}/{}.{ext}", job.uuid)
    }

    /// Where a CDR's recording path points on this host.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Copies `source` to `key` unless an identical object is already there, then checks the
    /// stored size and MD5 against the source.
    pub async fn deliver(&self, key: &str, source: &Source) -> Result<String, HandlerError> {
        let stat = |doing: &'static str| {
            let target = self.target.clone();
            let key = key.to_string();
            async move { target.stat(&key).await.map_err(|e| HandlerError::failed(doing, &e)) }
        };
        let same = |o: &storage::ObjectInfo| o.size == source.size && o.md5.as_ref().is_none_or(|m| *m == source.md5);
        if let Some(existing) = stat("checking delivered recording").await? {
            if same(&existing) {
                return Ok(existing.location);
            }
        }
        self.target.put_file(key, &source.path).await.map_err(|e| HandlerError::failed("delivering recording", &e))?;
        match stat("verifying delivered recording").await? {
            Some(o) if same(&o) => Ok(o.location),
            Some(o) => Err(HandlerError::Retriable(format!(
                "delivered recording {} does not match its source: {} bytes, md5 {:?}; expected {} bytes, md5 {}",
                o.location, o.size, o.md5, source.size, source.md5
            ))),
            None => Err(HandlerError::Retriable(format!("delivered recording '{key}' is not in the target store"))),
        }
    }
}

/// The recording at `path` if it may be read: below one of `roots` (named by `rule` in the
/// refusal) after symlinks and `..` are resolved, and a regular file — else a permanent
/// failure. A missing file is `missing`'s to judge (it may still be on its way).
pub async fn source(
    path: &Path,
    roots: &[PathBuf],
    rule: &str,
    missing: impl FnOnce(String) -> HandlerError,
) -> Result<Source, HandlerError> {
    let real = confine(path, roots, rule)?;
    let shown = path.display();
    let not_regular =
        || HandlerError::Permanent(format!("recording {shown} is not a regular file (only regular files are read)"));
    // a stat first, so a device or FIFO is never even opened
    match tokio::fs::symlink_metadata(&real).await {
        Ok(m) if !m.is_file() => return Err(not_regular()),
        _ => {}
    }
    match storage::md5_file(&real).await {
        Ok((size, md5)) => Ok(Source { path: real, size, md5 }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(format!("recording {shown} not found"))),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(not_regular()),
        Err(e) => Err(HandlerError::Retriable(format!("reading recording {shown}: {e}"))),
    }
}

/// `path` with every symlink and `..` resolved, if that lies below one of `roots`. A path
/// that does not exist (yet) is resolved as far as it exists; a `..` in the part that does
/// not is refused, since what it will mean is unknown.
fn confine(path: &Path, roots: &[PathBuf], rule: &str) -> Result<PathBuf, HandlerError> {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => resolve_missing(path),
        Err(e) => return Err(HandlerError::Retriable(format!("resolving recording {}: {e}", path.display()))),
    };
    let inside = |p: &Path| roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|r| p.starts_with(r));
    match real {
        Some(real) if inside(&real) => Ok(real),
        real => {
            let really = match &real {
                Some(r) if r != path => format!(" (really {})", r.display()),
                _ => String::new(),
            };
            let roots: Vec<_> = roots.iter().map(|r| r.display().to_string()).collect();
            Err(HandlerError::Permanent(format!(
                "recording {}{really} is outside {rule} ({})",
                path.display(),
                roots.join(", ")
            )))
        }
    }
}

/// The real path of the deepest existing ancestor of `path` joined with the rest of it;
/// `None` when the rest holds a `..`.
fn resolve_missing(path: &Path) -> Option<PathBuf> {
    let real_of = |a: &Path| std::fs::canonicalize(if a.as_os_str().is_empty() { Path::new(".") } else { a });
    let (base, real) = path.ancestors().skip(1).find_map(|a| Some((a, real_of(a).ok()?)))?;
    let rest = path.strip_prefix(base).ok()?;
    rest.components().try_fold(real, |acc, c| match c {
        Component::Normal(n) => Some(acc.join(n)),
        Component::CurDir => Some(acc),
        _ => None,
    })
}

pub struct Delivery(pub Arc<Recordings>);

#[async_trait]
impl TaskHandler for Delivery {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let path = job.field("recording_path").filter(|p| !p.is_empty());
        let path = path.ok_or_else(|| HandlerError::Permanent("task has no recording_path".into()))?;
        let at = self.0.resolve(&path);
        // The recording may still be on its way from the media server: retried, and given
        // up after tasksd.max_retries.
        let source = source(&at, &self.0.source_dirs, "recordings.source_dirs", HandlerError::Retriable).await?;
        let location = self.0.deliver(&Recordings::key_for(job, &path), &source).await?;
        tracing::debug!(uuid = %job.uuid, %location, "recording delivered");
        Ok(())
    }
}

pub struct Buffered(pub Arc<Recordings>);

#[async_trait]
impl TaskHandler for Buffered {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let name = job.node.param("buffered_recording").unwrap_or("");
        if name.is_empty() || name.contains('/') || name.contains("..") {
            return Err(HandlerError::Permanent(format!("buffered_recording '{name}' is not a file name")));
        }
        let dir = self
            .0
            .buffer_dir
            .as_ref()
            .ok_or_else(|| HandlerError::Permanent("recordings.buffer_dir is not set".into()))?;
        let path = dir.join(name);
        let key = Recordings::key_for(job, name);
        let roots = std::slice::from_ref(dir);
        let source = match source(&path, roots, "recordings.buffer_dir", HandlerError::Permanent).await {
            Ok(s) => s,
            // moved by an earlier attempt that died before recording done='y'
            Err(e) => match self.0.target.stat(&key).await {
                Ok(Some(_)) => return Ok(()),
                _ => return Err(e),
            },
        };
        self.0.deliver(&key, &source).await?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HandlerError::Retriable(format!("removing buffered recording {}: {e}", path.display()))),
        }
    }
}
