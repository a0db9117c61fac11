//! CDR2SFAPI: Salesforce REST. An OAuth token (password grant when a user is configured,
//! client_credentials otherwise), cached until Salesforce refuses it, then an upsert of the
//! configured sObject by external id = call uuid, which is idempotent by construction.

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{http, HandlerError, Job, TaskHandler};
use crate::config::SalesforceSettings;

#[derive(Clone)]
struct Token {
    access_token: String,
    instance_url: String,
}

pub struct Salesforce {
    s: SalesforceSettings,
    client: reqwest::Client,
    /// A tokio mutex: no poisoning if a task panics while holding it.
    token: Mutex<Option<Token>>,
}

impl Salesforce {
    pub fn new(s: &SalesforceSettings, client: reqwest::Client) -> Salesforce {
        Salesforce { s: s.clone(), client, token: Mutex::new(None) }
    }

    async fn token(&self) -> Result<Token, HandlerError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let url = format!("{}/services/oauth2/token", self.s.login_url.as_deref().unwrap_or("").trim_end_matches('/'));
        let mut form = vec![
            ("client_id", self.s.client_id.clone().unwrap_or_default()),
            ("client_secret", self.s.client_secret.clone().unwrap_or_default()),
        ];
        match (&self.s.username, &self.s.password) {
            (Some(u), Some(p)) => {
                form.extend([("grant_type", "password".into()), ("username", u.clone()), ("password", p.clone())])
            }
            _ => form.push(("grant_type", "client_credentials".into())),
        }
        let body = http::send("Salesforce OAuth", self.client.post(&url).form(&form)).await?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| HandlerError::Retriable(format!("Salesforce OAuth answered non-JSON: {e}")))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let token = match (field("access_token"), field("instance_url")) {
            (Some(access_token), Some(instance_url)) => Token { access_token, instance_url },
            _ => return Err(HandlerError::Retriable("Salesforce OAuth answer lacks access_token/instance_url".into())),
        };
        *cached = Some(token.clone());
        Ok(token)
    }

    /// The sObject's fields from `salesforce.field_map` (`SfField=cdr_field`).
    pub fn record(&self, job: &Job) -> serde_json::Map<String, serde_json::Value> {
        let mut rec = serde_json::Map::new();
        for pair in &self.s.field_map {
            if let Some((sf, cdr)) = pair.split_once('=') {
                let v = job.field(cdr.trim()).filter(|v| !v.is_empty());
                rec.insert(sf.trim().to_string(), v.map_or(serde_json::Value::Null, serde_json::Value::String));
            }
        }
        if let Some(org) = job.node.param("sf_org_id") {
            rec.entry("Org_Id__c").or_insert(serde_json::Value::String(org.to_string()));
        }
        rec
    }

    async fn upsert(&self, token: &Token, job: &Job) -> Result<reqwest::Response, HandlerError> {
        let url = format!(
            "{}/services/data/{}/sobjects/{}/{}/{}",
            token.instance_url.trim_end_matches('/'),
            self.s.api_version,
            self.s.sobject,
            self.s.external_id_field,
            job.uuid
        );
        self.client
            .patch(&url)
            .bearer_auth(&token.access_token)
            .header("Idempotency-Key", job.idempotency_key())
            .json(&self.record(job))
            .send()
            .await
            .map_err(|e| http::HttpFailure::transport("Salesforce", e))
    }
}

#[async_trait]
impl TaskHandler for Salesforce {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let mut token = self.token().await?;
        let mut resp = self.upsert(&token, job).await?;
        if resp.status().as_u16() == 401 {
            // expired session: one fresh token, one more try
            *self.token.lock().await = None;
            token = self.token().await?;
            resp = self.upsert(&token, job).await?;
        }
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(http::HttpFailure::status("Salesforce upsert", status, body))
    }
}
