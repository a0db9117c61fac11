//! recordingDelivery and bufferedRecording: a recording copied to the delivery target (a
//! directory or S3) under a deterministic key, then verified by size and MD5. A repeated
//! attempt finds the object already there and verified, and does nothing more.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{HandlerError, Job, TaskHandler};
use crate::config::Settings;
use crate::storage::{self, md5_hex, BlobStore};

/// The recording store shared by delivery, buffered recordings and transcription.
pub struct Recordings {
    pub base_dir: PathBuf,
    pub buffer_dir: Option<PathBuf>,
    pub target: Arc<dyn BlobStore>,
    pub target_is_s3: bool,
}

impl Recordings {
    pub async fn open(s: &Settings) -> Result<Recordings, String> {
        let target = s.recordings.delivery_target.clone().ok_or("recordings.delivery_target is not set")?;
        let store = storage::open(&target, &s.s3).await.map_err(|e| format!("recordings.delivery_target: {e}"))?;
        Ok(Recordings {
            base_dir: s.recordings.base_dir.clone(),
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

    /// Copies `bytes` to `key` unless an identical object is already there, then checks the
    /// stored size and MD5 against the source.
    pub async fn deliver(&self, key: &str, bytes: &[u8]) -> Result<String, HandlerError> {
        let md5 = md5_hex(bytes);
        let stat = |doing: &'static str| {
            let target = self.target.clone();
            let key = key.to_string();
            async move { target.stat(&key).await.map_err(|e| HandlerError::failed(doing, &e)) }
        };
        let same = |o: &storage::ObjectInfo| o.size == bytes.len() as u64 && o.md5.as_ref().is_none_or(|m| *m == md5);
        if let Some(existing) = stat("checking delivered recording").await? {
            if same(&existing) {
                return Ok(existing.location);
            }
        }
        self.target.put(key, bytes).await.map_err(|e| HandlerError::failed("delivering recording", &e))?;
        match stat("verifying delivered recording").await? {
            Some(o) if same(&o) => Ok(o.location),
            Some(o) => Err(HandlerError::Retriable(format!(
                "delivered recording {} does not match its source: {} bytes, md5 {:?}; expected {} bytes, md5 {md5}",
                o.location,
                o.size,
                o.md5,
                bytes.len()
            ))),
            None => Err(HandlerError::Retriable(format!("delivered recording '{key}' is not in the target store"))),
        }
    }
}

async fn read_source(path: &Path, missing: impl FnOnce(String) -> HandlerError) -> Result<Vec<u8>, HandlerError> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(missing(format!("recording {} not found", path.display())))
        }
        Err(e) => Err(HandlerError::Retriable(format!("reading recording {}: {e}", path.display()))),
    }
}

pub struct Delivery(pub Arc<Recordings>);

#[async_trait]
impl TaskHandler for Delivery {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let path = job.field("recording_path").filter(|p| !p.is_empty());
        let path = path.ok_or_else(|| HandlerError::Permanent("task has no recording_path".into()))?;
        let source = self.0.resolve(&path);
        // The recording may still be on its way from the media server: retried, and given
        // up after tasksd.max_retries.
        let bytes = read_source(&source, HandlerError::Retriable).await?;
        let location = self.0.deliver(&Recordings::key_for(job, &path), &bytes).await?;
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
        let source = dir.join(name);
        let key = Recordings::key_for(job, name);
        let bytes = match read_source(&source, HandlerError::Permanent).await {
            Ok(b) => b,
            // moved by an earlier attempt that died before recording done='y'
            Err(e) => match self.0.target.stat(&key).await {
                Ok(Some(_)) => return Ok(()),
                _ => return Err(e),
            },
        };
        self.0.deliver(&key, &bytes).await?;
        match tokio::fs::remove_file(&source).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HandlerError::Retriable(format!("removing buffered recording {}: {e}", source.display()))),
        }
    }
}
