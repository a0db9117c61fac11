//! Where raw CDRs, normalized CDRs and recordings live. One interface, two stores: the local
//! filesystem and S3. A location is what the database records (`cdr_queue.path`,
//! `normalized_cdrs.path`): the absolute file path, or `s3://bucket/key`.

pub mod local;
pub mod s3;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use local::{md5_file, open_regular, LocalStore};
pub use s3::{S3Location, S3Store};

use crate::config::S3Settings;
use crate::domain::outcome::{Classify, Retry};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("storage I/O error on {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid storage key '{0}'")]
    BadKey(String),
    #[error("storage error on {location}: {message}")]
    Remote { location: String, message: String, retriable: bool },
    #[error("{0}")]
    Unsupported(String),
}

/// Storage's one classification: a missing object will not appear by waiting, a key we
/// built wrongly will not either; every other I/O error (disk full, EIO, NFS hiccup, an S3
/// 5xx) may clear.
impl Classify for StorageError {
    fn retry(&self) -> Retry {
        match self {
            StorageError::Io { .. } | StorageError::Remote { retriable: true, .. } => Retry::Later,
            _ => Retry::Never,
        }
    }
}

impl StorageError {
    pub(crate) fn io(location: impl Into<String>, source: std::io::Error) -> Self {
        crate::events::StorageError.emit();
        if source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(location.into())
        } else {
            StorageError::Io { location: location.into(), source }
        }
    }

    /// An error while writing: even "not found" (a directory removed under us) may clear, so
    /// it stays a retriable I/O error and never becomes a permanent failure.
    pub(crate) fn write_io(location: impl Into<String>, source: std::io::Error) -> Self {
        crate::events::StorageError.emit();
        StorageError::Io { location: location.into(), source }
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Writes `bytes` under `key` (a relative path with '/' separators) durably and
    /// atomically: a reader sees the old object or the whole new one, never a part.
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<String, StorageError> {
        let location = self.put_unsynced(key, bytes).await?;
        self.sync(std::slice::from_ref(&location)).await?;
        Ok(location)
    }
    /// Like `put`, but the object is only certain to survive a crash after `sync` of its
    /// location: group commits sync a whole batch at once instead of once per object.
    async fn put_unsynced(&self, key: &str, bytes: &[u8]) -> Result<String, StorageError>;
    /// `put_unsynced` of bytes the caller hands over, so a store that writes on another
    /// thread need not copy them first.
    async fn put_owned_unsynced(&self, key: &str, bytes: bytes::Bytes) -> Result<String, StorageError> {
        self.put_unsynced(key, &bytes).await
    }
    /// `put_owned_unsynced` only when nothing is stored under `key` yet: `None` (nothing
    /// written) when something is. Intake's first step: a re-post must not overwrite.
    async fn put_new_unsynced(&self, key: &str, bytes: bytes::Bytes) -> Result<Option<String>, StorageError> {
        if self.exists(key).await? {
            return Ok(None);
        }
        self.put_owned_unsynced(key, bytes).await.map(Some)
    }
    /// Whether an object is stored under `key` (intake removes only what it created itself).
    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.stat(key).await?.is_some())
    }
    /// Writes the regular file at `source` under `key` as `put` does, streamed: a recording
    /// can be hours long, so it is never held in memory whole.
    async fn put_file(&self, key: &str, source: &Path) -> Result<String, StorageError>;
    /// Makes earlier `put_unsynced` objects durable.
    async fn sync(&self, locations: &[String]) -> Result<(), StorageError>;
    /// Reads an object by the location `put` returned.
    async fn get(&self, location: &str) -> Result<Vec<u8>, StorageError>;
    /// Size and MD5 of the object under `key`, `None` if there is none (delivery checks).
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError>;
    /// Removes an object by its location; one already gone is fine (purge resumes).
    async fn delete(&self, location: &str) -> Result<(), StorageError>;
    /// Whether the store can be written now (`/ready`): cheap, no object left behind.
    async fn check(&self) -> Result<(), StorageError>;
    /// A URL a third party can fetch the object from for `ttl` (S3 only).
    async fn presign_get(&self, key: &str, _ttl: Duration) -> Result<String, StorageError> {
        Err(StorageError::Unsupported(format!("'{key}' is on local disk: a presigned URL needs an s3:// store")))
    }
}

/// An object as a store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub location: String,
    pub size: u64,
    /// Hex MD5 of the bytes when the store knows it without reading them back.
    pub md5: Option<String>,
}

/// The store a config value names: `s3://bucket/prefix` or a directory.
pub async fn open(target: &str, s3: &S3Settings) -> Result<Arc<dyn BlobStore>, StorageError> {
    if target.starts_with("s3://") {
        let at = S3Location::parse(target).ok_or_else(|| StorageError::BadKey(target.to_string()))?;
        Ok(Arc::new(S3Store::new(s3::client(s3).await, at)))
    } else {
        std::fs::create_dir_all(target).map_err(|e| StorageError::io(target, e))?;
        Ok(Arc::new(LocalStore::new(target)))
    }
}

/// Hex MD5 of some bytes (delivery verification).
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}
