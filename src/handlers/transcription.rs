//! transcription: a job posted to the transcription service with where to fetch the
//! recording: a presigned S3 URL when recordings are delivered to S3, else the stored path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::recording::Recordings;
use super::{http, HandlerError, Job, TaskHandler};
use crate::config::TranscriptionSettings;

pub struct Transcription {
    url: String,
    token: Option<String>,
    presign: Duration,
    recordings: Arc<Recordings>,
    client: reqwest::Client,
}

impl Transcription {
    pub fn new(s: &TranscriptionSettings, recordings: Arc<Recordings>, client: reqwest::Client) -> Transcription {
        Transcription {
            url: s.url.clone().unwrap_or_default(),
            token: s.auth_token.clone(),
            presign: Duration::from_secs(s.presign_seconds),
            recordings,
            client,
        }
    }
}

#[async_trait]
impl TaskHandler for Transcription {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let path = job.field("recording_path").filter(|p| !p.is_empty());
        let path = path.ok_or_else(|| HandlerError::Permanent("task has no recording_path".into()))?;
        let key = Recordings::key_for(job, &path);
        // recordingDelivery runs beside this task: until it has delivered, wait for it.
        let stored =
            self.recordings.target.stat(&key).await.map_err(|e| HandlerError::failed("finding recording", &e))?;
        let stored = stored.ok_or_else(|| HandlerError::Retriable(format!("recording '{key}' not delivered yet")))?;
        let url = if self.recordings.target_is_s3 {
            Some(
                self.recordings
                    .target
                    .presign_get(&key, self.presign)
                    .await
                    .map_err(|e| HandlerError::failed("presigning recording URL", &e))?,
            )
        } else {
            None
        };
        let body = serde_json::json!({
            "uuid": job.uuid,
            "recording_url": url,
            "recording_location": stored.location,
            "recording_bytes": stored.size,
            "language": job.field("transcription_language"),
        });
        let mut req = self.client.post(&self.url).header("Idempotency-Key", job.idempotency_key()).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        http::send("transcription service", req).await.map(|_| ())
    }
}
