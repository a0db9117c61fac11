//! Outbound HTTP for the SMS gateway, Salesforce and the transcription service: one client,
//! one classification of failures.

use std::time::Duration;

use super::HandlerError;

/// Timeouts keep a stuck peer from holding an executor thread until the job timeout.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("cdrmunch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// No answer (refused, reset, timeout, DNS) may clear; so may 5xx, 429 and 408. Any other
/// 4xx means the request itself is wrong and repeating it cannot help.
pub fn is_retriable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

pub fn transport_error(peer: &str, e: reqwest::Error) -> HandlerError {
    let mut msg = format!("{peer}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_builder() {
        HandlerError::Permanent(msg)
    } else {
        HandlerError::Retriable(msg)
    }
}

pub fn status_error(peer: &str, status: u16, body: &str) -> HandlerError {
    let body: String = body.chars().take(300).collect();
    let msg = format!("{peer} answered HTTP {status}: {}", body.trim());
    if is_retriable_status(status) {
        HandlerError::Retriable(msg)
    } else {
        HandlerError::Permanent(msg)
    }
}

/// Sends a request and accepts any 2xx; everything else is classified above.
pub async fn send(peer: &str, req: reqwest::RequestBuilder) -> Result<String, HandlerError> {
    let resp = req.send().await.map_err(|e| transport_error(peer, e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(status_error(peer, status, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_retriable_and_permanent() {
        for s in [500, 502, 503, 429, 408] {
            assert!(is_retriable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!is_retriable_status(s), "{s}");
        }
        assert!(!status_error("sms", 400, "bad number").is_retriable());
        assert_eq!(status_error("sms", 503, " busy ").to_string(), "sms answered HTTP 503: busy");
    }
}
