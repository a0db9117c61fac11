//! emailer: a templated mail through SMTP (lettre). The Message-ID is derived from the task,
//! so a repeated attempt produces the same message identity for the receiving side.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{HandlerError, Job, TaskHandler};
use crate::config::EmailerSettings;
use crate::domain::ncdr::render;

pub struct Emailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    default_to: Option<String>,
    subject: String,
    body: String,
    host: String,
}

impl Emailer {
    pub fn new(s: &EmailerSettings) -> Result<Emailer, String> {
        let host = s.smtp_host.clone().ok_or("emailer.smtp_host is not set")?;
        let from: Mailbox = s
            .from
            .as_deref()
            .ok_or("emailer.from is not set")?
            .parse()
            .map_err(|e| format!("emailer.from is not an address: {e}"))?;
        let builder = match s.tls.as_str() {
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(|e| e.to_string())?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(|e| e.to_string())?,
        };
        let mut builder = builder.port(s.smtp_port).timeout(Some(Duration::from_secs(s.timeout_seconds)));
        if let (Some(user), Some(pass)) = (&s.username, &s.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Emailer {
            transport: builder.build(),
            from,
            default_to: s.to.clone(),
            subject: s.subject.clone(),
            body: s.body.clone(),
            host: format!("{host}:{}", s.smtp_port),
        })
    }

    /// The message for a job; a bad recipient is permanent (it will not parse next time).
    pub fn message(&self, job: &Job) -> Result<Message, HandlerError> {
        let to = job.node.param("to").map(str::to_string).or_else(|| self.default_to.clone());
        let to = to.ok_or_else(|| {
            HandlerError::Permanent("no recipient: task has no <to> and emailer.to is not set".into())
        })?;
        let lookup = |k: &str| job.field(k);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(render(&self.subject, lookup).replace(['\r', '\n'], " "))
            .message_id(Some(format!("<{}@cdrmunch>", job.idempotency_key())))
            .header(ContentType::TEXT_PLAIN);
        for addr in to.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let mb: Mailbox = addr
                .parse()
                .map_err(|e| HandlerError::Permanent(format!("recipient '{addr}' is not an address: {e}")))?;
            b = b.to(mb);
        }
        b.body(render(&self.body, lookup)).map_err(|e| HandlerError::Permanent(format!("building the message: {e}")))
    }
}

/// SMTP's own split: a 5xx reply is permanent, a 4xx reply, a timeout or a lost connection
/// is worth another try.
fn smtp_error(host: &str, e: lettre::transport::smtp::Error) -> HandlerError {
    let msg = format!("SMTP {host}: {e}");
    if e.is_permanent() {
        HandlerError::Permanent(msg)
    } else {
        HandlerError::Retriable(msg)
    }
}

#[async_trait]
impl TaskHandler for Emailer {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let message = self.message(job)?;
        self.transport.send(message).await.map_err(|e| smtp_error(&self.host, e))?;
        Ok(())
    }
}
