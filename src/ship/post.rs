//! One POST of one file, exactly as mod_xml_cdr / mod_json_cdr would send it, and the one
//! classification of what intake answered.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cli::submit::Encode;
use crate::config::BasicAuth;
use crate::domain::intake::encode_body;
use crate::domain::outcome::{Classify, Retry};
use crate::domain::ship::CdrFileName;

/// The HTTP side: the client, the URL list and where failover stands.
pub struct Poster {
    client: reqwest::Client,
    urls: Vec<String>,
    encode: Encode,
    auth: Option<BasicAuth>,
    /// The URL new attempts go to: moves on when one fails, and stays where it worked, as
    /// mod_xml_cdr's url index does.
    current: AtomicUsize,
}

/// Why a POST did not end in a 2xx.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("{url}: no answer: {detail}")]
    NoAnswer { url: String, detail: String },
    #[error("{url} answered HTTP {status}: {}", .body.chars().take(300).collect::<String>().trim())]
    Status { url: String, status: u16, body: String },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

/// No answer and 5xx may clear; so may 408 and 429, and the answers that say the shipper's
/// own configuration is wrong (401, 403, 404, 405, 407: the credentials or the URL), which no
/// file deserves to be rejected for. Any other 4xx is about the file: it never will.
/// A file that cannot be read is left in place and tried again (it may be a permission
/// being fixed); one that vanished is handled before this.
impl Classify for PostError {
    fn retry(&self) -> Retry {
        match self {
            PostError::Status { status, .. }
                if (400..500).contains(status) && !matches!(status, 401 | 403 | 404 | 405 | 407 | 408 | 429) =>
            {
                Retry::Never
            }
            _ => Retry::Later,
        }
    }
}

/// A 2xx, with its status.
pub struct Accepted {
    pub status: u16,
}

impl Poster {
    pub fn new(
        urls: Vec<String>,
        encode: Encode,
        auth: Option<BasicAuth>,
        timeout: Duration,
        concurrency: usize,
    ) -> Result<Poster, reqwest::Error> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .user_agent(concat!("cdrmunch-ship/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Poster { client, urls, encode, auth, current: AtomicUsize::new(0) })
    }

    pub fn url_count(&self) -> usize {
        self.urls.len()
    }

    /// Posts `document` (the file at `path`, named `name`) to the current URL; a retriable
    /// failure moves the current URL on for everyone.
    pub async fn post(&self, path: &Path, name: &CdrFileName, document: &[u8]) -> Result<Accepted, PostError> {
        let index = self.current.load(Ordering::Relaxed) % self.urls.len();
        let url = &self.urls[index];
        let result = self.post_to(url, name, document).await;
        if let Err(e) = &result {
            if e.is_retriable() && self.urls.len() > 1 {
                let next = (index + 1) % self.urls.len();
                // only the first of the posts that failed together moves it
                let _ = self.current.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
                tracing::debug!(file = %path.display(), "{url} failed; next URL {}", self.urls[next]);
            }
        }
        result
    }

    async fn post_to(&self, url: &str, name: &CdrFileName, document: &[u8]) -> Result<Accepted, PostError> {
        let (content_type, body) = encode_body(document, self.encode.wire(name.format));
        let mut req =
            self.client.post(format!("{url}{}", name.query_for(url))).header("Content-Type", content_type).body(body);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.user, Some(&a.password));
        }
        let resp =
            req.send().await.map_err(|e| PostError::NoAnswer { url: url.into(), detail: crate::error_chain(&e) })?;
        let status = resp.status().as_u16();
        let body =
            resp.text().await.map_err(|e| PostError::NoAnswer { url: url.into(), detail: crate::error_chain(&e) })?;
        if (200..300).contains(&status) {
            Ok(Accepted { status })
        } else {
            Err(PostError::Status { url: url.into(), status, body })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> PostError {
        PostError::Status { url: "u".into(), status: s, body: String::new() }
    }

    #[test]
    fn only_a_refusal_of_the_file_is_permanent() {
        for s in [400, 409, 413, 415, 422] {
            assert!(!status(s).is_retriable(), "{s}");
        }
        for s in [500, 502, 503, 401, 403, 404, 405, 407, 408, 429, 302] {
            assert!(status(s).is_retriable(), "{s}");
        }
        assert!(PostError::NoAnswer { url: "u".into(), detail: "refused".into() }.is_retriable());
    }
}
