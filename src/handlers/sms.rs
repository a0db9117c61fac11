//! SMSSend: a JSON POST to the configured SMS gateway.

use async_trait::async_trait;

use super::{http, HandlerError, Job, TaskHandler};
use crate::config::SmsSettings;
use crate::domain::ncdr::render;

pub struct Sms {
    url: String,
    token: Option<String>,
    from: Option<String>,
    default_to: Option<String>,
    text: String,
    client: reqwest::Client,
}

impl Sms {
    pub fn new(s: &SmsSettings, client: reqwest::Client) -> Sms {
        Sms {
            url: s.url.clone().unwrap_or_default(),
            token: s.auth_token.clone(),
            from: s.from.clone(),
            default_to: s.to.clone(),
            text: s.text.clone(),
            client,
        }
    }
}

#[async_trait]
impl TaskHandler for Sms {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let to = job.node.param("to").map(str::to_string).or_else(|| self.default_to.clone());
        let to =
            to.ok_or_else(|| HandlerError::Permanent("no recipient: task has no <to> and sms.to is not set".into()))?;
        let body = serde_json::json!({
            "to": to,
            "from": self.from,
            "text": render(&self.text, |k| job.field(k)),
            "reference": job.uuid,
        });
        let mut req = self.client.post(&self.url).header("Idempotency-Key", job.idempotency_key()).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        http::send("SMS gateway", req).await.map(|_| ())
    }
}
