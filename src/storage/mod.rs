//! Where raw and normalized CDRs live. One interface per store; the local filesystem now,
//! S3 beside it later. A location is what the database records (`cdr_queue.path`,
//! `normalized_cdrs.path`): for the local store, the absolute file path.

pub mod local;

use async_trait::async_trait;

pub use local::LocalStore;

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
}

impl StorageError {
    /// A missing object will not appear by waiting; a key we built wrongly will not either.
    /// Every other I/O error (disk full, EIO, NFS hiccup) may clear.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StorageError::Io { .. })
    }

    pub(crate) fn io(location: impl Into<String>, source: std::io::Error) -> Self {
        metrics::counter!(crate::telemetry::STORAGE_ERRORS).increment(1);
        if source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(location.into())
        } else {
            StorageError::Io { location: location.into(), source }
        }
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
    /// Makes earlier `put_unsynced` objects durable.
    async fn sync(&self, locations: &[String]) -> Result<(), StorageError>;
    /// Reads an object by the location `put` returned.
    async fn get(&self, location: &str) -> Result<Vec<u8>, StorageError>;
}
