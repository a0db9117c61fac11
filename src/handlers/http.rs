//! Outbound HTTP for the SMS gateway, Salesforce and the transcription service: one client,
//! and HTTP's one classification of failures.

use std::time::Duration;

use super::HandlerError;
use crate::domain::outcome::{Classify, Retry};

/// Timeouts keep a stuck peer from holding an executor thread until the job timeout.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("cdrmunch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// What went wrong talking to an HTTP peer.
#[derive(Debug)]
pub struct HttpFailure {
    pub peer: String,
    pub kind: HttpFailureKind,
}

#[derive(Debug)]
pub enum HttpFailureKind {
    /// No answer: refused, reset, timeout, DNS — or a request we could not even build.
    Transport(reqwest::Error),
    /// An answer other than 2xx.
    Status { status: u16, body: String },
}

impl HttpFailure {
    pub fn transport(peer: &str, e: reqwest::Error) -> HandlerError {
        HandlerError::of(&HttpFailure { peer: peer.into(), kind: HttpFailureKind::Transport(e) })
    }

    pub fn status(peer: &str, status: u16, body: String) -> HandlerError {
        HandlerError::of(&HttpFailure { peer: peer.into(), kind: HttpFailureKind::Status { status, body } })
    }
}

/// No answer may clear; so may 5xx, 429 and 408. Any other 4xx means the request itself is
/// wrong and repeating it cannot help; nor can a request that could not be built.
impl Classify for HttpFailure {
    fn retry(&self) -> Retry {
        match &self.kind {
            HttpFailureKind::Transport(e) if e.is_builder() => Retry::Never,
            HttpFailureKind::Transport(_) => Retry::Later,
            HttpFailureKind::Status { status, .. } if *status >= 500 || *status == 429 || *status == 408 => {
                Retry::Later
            }
            HttpFailureKind::Status { .. } => Retry::Never,
        }
    }
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            HttpFailureKind::Transport(e) => {
                write!(f, "{}: {e}", self.peer)?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            HttpFailureKind::Status { status, body } => {
                let body: String = body.chars().take(300).collect();
                write!(f, "{} answered HTTP {status}: {}", self.peer, body.trim())
            }
        }
    }
}

/// Sends a request and accepts any 2xx; everything else is classified above.
pub async fn send(peer: &str, req: reqwest::RequestBuilder) -> Result<String, HandlerError> {
    let resp = req.send().await.map_err(|e| HttpFailure::transport(peer, e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(HttpFailure::status(peer, status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16, body: &str) -> HttpFailure {
        HttpFailure { peer: "sms".into(), kind: HttpFailureKind::Status { status: s, body: body.into() } }
    }

    #[test]
    fn statuses_split_into_retriable_and_permanent() {
        for s in [500, 502, 503, 429, 408] {
            assert!(status(s, "").is_retriable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!status(s, "").is_retriable(), "{s}");
        }
        assert!(!HttpFailure::status("sms", 400, "bad number".into()).is_retriable());
        assert_eq!(HttpFailure::status("sms", 503, " busy ".into()).to_string(), "sms answered HTTP 503: busy");
    }
}
