//! S3 (or any S3-compatible server) as a store: `s3://bucket/prefix` in config. A PUT is
//! durable when S3 answers, so `put_unsynced` is a plain put and `sync` has nothing to do.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{BlobStore, ObjectInfo, StorageError};
use crate::config::S3Settings;

/// `s3://bucket/prefix`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing '/'; may be empty.
    pub prefix: String,
}

impl S3Location {
    /// Bucket names follow S3's rules (3–63 lowercase letters, digits, '.', '-').
    pub fn parse(url: &str) -> Option<S3Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        ok.then(|| S3Location { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() })
    }
}

/// Builds the S3 client once per process from `s3.*` (static keys when given, otherwise the
/// usual AWS environment / profile / instance-role chain).
pub async fn client(s: &S3Settings) -> Client {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(s.region.clone()));
    if let Some(endpoint) = &s.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) {
        let creds = aws_sdk_s3::config::Credentials::new(id, secret, None, None, "cdrmunch-config");
        loader = loader.credentials_provider(creds);
    }
    let shared = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&shared).force_path_style(s.path_style).build();
    Client::from_conf(conf)
}

pub struct S3Store {
    client: Client,
    at: S3Location,
}

impl S3Store {
    pub fn new(client: Client, at: S3Location) -> Self {
        Self { client, at }
    }

    fn object_key(&self, key: &str) -> Result<String, StorageError> {
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p.is_empty() || p == "..") {
            return Err(StorageError::BadKey(key.to_string()));
        }
        Ok(if self.at.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.at.prefix) })
    }

    fn location(&self, object_key: &str) -> String {
        format!("s3://{}/{object_key}", self.at.bucket)
    }

    /// The object key of a location this store returned (or of a key relative to it).
    fn key_of_location(&self, location: &str) -> Result<String, StorageError> {
        let head = format!("s3://{}/", self.at.bucket);
        location.strip_prefix(&head).map(str::to_string).ok_or_else(|| StorageError::BadKey(location.to_string()))
    }
}

/// One place that decides what an S3 failure means: no answer, throttling and 5xx may clear,
/// a 404 is `NotFound`, anything else (403, 400: credentials, bucket, request) needs an operator.
fn s3_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    location: &str,
    e: SdkError<E>,
) -> StorageError {
    crate::events::StorageError.emit();
    let status = e.raw_response().map(|r| r.status().as_u16());
    let message = match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!("{} {}", err.code().unwrap_or("error"), err.message().unwrap_or(""))
        }
        other => crate::error_chain(other),
    };
    match status {
        Some(404) => StorageError::NotFound(location.to_string()),
        Some(s) if s >= 500 || s == 429 || s == 408 => {
            StorageError::Remote { location: location.into(), message: format!("HTTP {s}: {message}"), retriable: true }
        }
        Some(s) => StorageError::Remote {
            location: location.into(),
            message: format!("HTTP {s}: {message}"),
            retriable: false,
        },
        // no response at all: timeout, connection refused, DNS
        None => StorageError::Remote { location: location.into(), message, retriable: true },
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put_unsynced(&self, key: &str, bytes: &[u8]) -> Result<String, StorageError> {
        let object_key = self.object_key(key)?;
        let location = self.location(&object_key);
        self.client
            .put_object()
            .bucket(&self.at.bucket)
            .key(&object_key)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| s3_error(&location, e))?;
        Ok(location)
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<String, StorageError> {
        let object_key = self.object_key(key)?;
        let location = self.location(&object_key);
        let unreadable = |e: std::io::Error| StorageError::io(source.display().to_string(), e);
        // checked here; the SDK then reads the file in chunks (and again on a retry)
        super::open_regular(source).map_err(unreadable)?;
        let body = ByteStream::from_path(source).await.map_err(|e| unreadable(std::io::Error::other(e)))?;
        self.client
            .put_object()
            .bucket(&self.at.bucket)
            .key(&object_key)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error(&location, e))?;
        Ok(location)
    }

    async fn sync(&self, _locations: &[String]) -> Result<(), StorageError> {
        Ok(())
    }

    async fn get(&self, location: &str) -> Result<Vec<u8>, StorageError> {
        let object_key = self.key_of_location(location)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.at.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(|e| s3_error(location, e))?;
        let body = out.body.collect().await.map_err(|e| StorageError::Remote {
            location: location.into(),
            message: format!("reading body: {e}"),
            retriable: true,
        })?;
        Ok(body.into_bytes().to_vec())
    }

    async fn delete(&self, location: &str) -> Result<(), StorageError> {
        let object_key = self.key_of_location(location)?;
        self.client
            .delete_object()
            .bucket(&self.at.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(|e| s3_error(location, e))?;
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        let location = format!("s3://{}", self.at.bucket);
        self.client.head_bucket().bucket(&self.at.bucket).send().await.map_err(|e| s3_error(&location, e))?;
        Ok(())
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let object_key = self.object_key(key)?;
        let location = self.location(&object_key);
        match self.client.head_object().bucket(&self.at.bucket).key(&object_key).send().await {
            Ok(head) => Ok(Some(ObjectInfo {
                size: head.content_length().unwrap_or(0).max(0) as u64,
                // a single-part upload's ETag is the MD5 of its bytes
                md5: head.e_tag().map(|t| t.trim_matches('"').to_string()).filter(|t| !t.contains('-')),
                location,
            })),
            Err(e) => match s3_error(&location, e) {
                StorageError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
        let object_key = self.object_key(key)?;
        let location = self.location(&object_key);
        let cfg = PresigningConfig::expires_in(ttl).map_err(|e| StorageError::Remote {
            location: location.clone(),
            message: format!("presigning: {e}"),
            retriable: false,
        })?;
        let req = self
            .client
            .get_object()
            .bucket(&self.at.bucket)
            .key(&object_key)
            .presigned(cfg)
            .await
            .map_err(|e| s3_error(&location, e))?;
        Ok(req.uri().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_by_s3_rules() {
        let l = S3Location::parse("s3://cdr-archive/eu/ncdr/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("cdr-archive", "eu/ncdr"));
        assert_eq!(S3Location::parse("s3://bkt").unwrap().prefix, "");
        assert!(S3Location::parse("s3://ab/x").is_none(), "bucket too short");
        assert!(S3Location::parse("s3://Upper/x").is_none());
        assert!(S3Location::parse("/data/ncdr").is_none());
    }
}
