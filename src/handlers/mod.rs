//! The side effect of each task type, one module per dependency. A handler gets a [`Job`]
//! (the normalized CDR and its `<task>` node) and answers Ok, or an error it has classified
//! as retriable or permanent in one place (its dependency's `Classify`).
//! The executor turns that into `done`, a retry with backoff, or `done='error'`.

pub mod billing;
pub mod calllog;
pub mod emailer;
pub mod http;
pub mod recording;
pub mod salesforce;
pub mod sms;
pub mod transcription;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Settings;
use crate::domain::ncdr::{NormalizedDoc, TaskDoc};
use crate::domain::outcome::{Classify, Outcome, Retry};
use crate::domain::tasks::{TaskRules, TaskType};
use crate::store::{ClaimedTask, Store};

/// One task attempt's input.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: ClaimedTask,
    /// The call uuid, canonical text form.
    pub uuid: String,
    pub doc: NormalizedDoc,
    pub node: TaskDoc,
}

impl Job {
    /// Sent with every outbound request so a sink that saw an attempt before can drop the
    /// repeat: stable across retries of the same task, distinct between tasks.
    pub fn idempotency_key(&self) -> String {
        format!("cdrmunch-{}-{}-{}", self.uuid, self.task.task_type, self.task.node_index)
    }

    /// A normalized field, the task's own child element winning.
    pub fn field(&self, name: &str) -> Option<String> {
        self.node.param(name).map(str::to_string).or_else(|| self.doc.field(name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (sink down, timeout, throttled, 5xx): retried with backoff.
    #[error("{0}")]
    Retriable(String),
    /// Will never succeed as is (rejected request, bad data, missing credentials): done='error'.
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    /// A dependency's error as it classifies it, its message as it is.
    pub fn of(e: &impl Classify) -> Self {
        match e.retry() {
            Retry::Later => HandlerError::Retriable(e.to_string()),
            Retry::Never => HandlerError::Permanent(e.to_string()),
        }
    }

    /// A failure of `doing` as its dependency classifies it.
    pub fn failed(doing: impl std::fmt::Display, e: &impl Classify) -> Self {
        match e.retry() {
            Retry::Later => HandlerError::Retriable(format!("{doing}: {e}")),
            Retry::Never => HandlerError::Permanent(format!("{doing}: {e}")),
        }
    }
}

impl Classify for HandlerError {
    fn retry(&self) -> Retry {
        match self {
            HandlerError::Retriable(_) => Retry::Later,
            HandlerError::Permanent(_) => Retry::Never,
        }
    }
}

impl From<HandlerError> for Outcome {
    fn from(e: HandlerError) -> Outcome {
        match e {
            HandlerError::Retriable(m) => Outcome::RetriableFailure(m),
            HandlerError::Permanent(m) => Outcome::PermanentFailure(m),
        }
    }
}

#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<(), HandlerError>;
}

/// Why a handler could not be set up at start (bad config, unreachable billing database).
#[derive(Debug, thiserror::Error)]
#[error("task handler '{handler}' for {task_type}: {message}")]
pub struct SetupError {
    pub task_type: TaskType,
    pub handler: String,
    pub message: String,
}

/// The handler names `tasksd.handler.<type>` may choose; `none` turns a type off.
fn default_handler(t: TaskType) -> &'static str {
    match t {
        TaskType::Billing => "billing-feeder",
        TaskType::Calllog => "calllog",
        TaskType::Emailer => "emailer",
        TaskType::SmsSend => "sms",
        // CDR2SF (deprecated) tasks still found in a database are sent through the API
        // handler: the same effect, by the supported route.
        TaskType::Cdr2SfApi | TaskType::Cdr2Sf => "cdr2sfapi",
        TaskType::RecordingDelivery => "recording-delivery",
        TaskType::BufferedRecording => "buffered-recording",
        TaskType::Transcription => "transcription",
    }
}

const HANDLER_NAMES: [&str; 8] = [
    "billing-feeder",
    "calllog",
    "emailer",
    "sms",
    "cdr2sfapi",
    "recording-delivery",
    "buffered-recording",
    "transcription",
];

/// Why a task type is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    /// Listed in `disabled_tasks`.
    Disabled,
    /// `tasksd.handler.<type> = none`.
    HandlerNone(TaskType),
    /// The handler's section lacks a key (named here).
    NotConfigured(String),
    /// `tasksd.handler.<type>` names no handler: a config mistake that stops the start.
    UnknownHandler(String),
}

impl Off {
    /// Turned off on purpose, as opposed to left unconfigured.
    pub fn on_purpose(&self) -> bool {
        matches!(self, Off::Disabled | Off::HandlerNone(_))
    }
}

impl std::fmt::Display for Off {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Off::Disabled => f.write_str("listed in disabled_tasks"),
            Off::HandlerNone(t) => write!(f, "tasksd.handler.{t} = none"),
            Off::NotConfigured(key) => write!(f, "{key} is not set"),
            Off::UnknownHandler(name) => {
                write!(f, "unknown handler '{name}' (known: {}, none)", HANDLER_NAMES.join(", "))
            }
        }
    }
}

/// Which handler runs a type, or why the type is off. Pure config reading, so the distiller
/// (which decides what tasks to create) and tasksd (which runs them) agree.
pub fn handler_for(s: &Settings, t: TaskType) -> Result<&str, Off> {
    let name = s.tasksd.handlers.get(t.as_str()).map(String::as_str).unwrap_or(default_handler(t));
    if name == "none" {
        return Err(Off::HandlerNone(t));
    }
    let missing = |what: &str| Err(Off::NotConfigured(what.to_string()));
    match name {
        "billing-feeder" | "calllog" => Ok(name),
        "emailer" if s.emailer.smtp_host.is_none() => missing("emailer.smtp_host"),
        "emailer" if s.emailer.from.is_none() => missing("emailer.from"),
        "sms" if s.sms.url.is_none() => missing("sms.url"),
        "cdr2sfapi" if s.salesforce.client_id.is_none() || s.salesforce.client_secret.is_none() => {
            missing("salesforce.client_id/client_secret")
        }
        "cdr2sfapi" if s.salesforce.login_url.is_none() => missing("salesforce.login_url"),
        "recording-delivery" if s.recordings.delivery_target.is_none() => missing("recordings.delivery_target"),
        "buffered-recording" if s.recordings.buffer_dir.is_none() => missing("recordings.buffer_dir"),
        "buffered-recording" if s.recordings.delivery_target.is_none() => missing("recordings.delivery_target"),
        "transcription" if s.transcription.url.is_none() => missing("transcription.url"),
        "transcription" if s.recordings.delivery_target.is_none() => missing("recordings.delivery_target"),
        n if HANDLER_NAMES.contains(&n) => Ok(n),
        other => Err(Off::UnknownHandler(other.to_string())),
    }
}

/// Types that are off, with the reason: `disabled_tasks` or an unconfigured handler.
pub fn off_types(s: &Settings) -> Vec<(TaskType, Off)> {
    TaskType::ALL
        .into_iter()
        .filter_map(|t| {
            if s.distiller.disabled_tasks.iter().any(|d| d == t.as_str()) {
                Some((t, Off::Disabled))
            } else {
                handler_for(s, t).err().map(|why| (t, why))
            }
        })
        .collect()
}

/// The distiller's task rules: configured types only, so no task is created that nothing
/// would run.
pub fn task_rules(s: &Settings) -> TaskRules {
    let mut conditions = crate::domain::tasks::default_conditions();
    for (ty, rule) in &s.task_rules {
        // validated when the config was loaded
        if let (Ok(t), Ok(c)) = (ty.parse::<TaskType>(), crate::domain::tasks::Condition::parse(rule)) {
            if let Some(slot) = conditions.iter_mut().find(|(x, _)| *x == t) {
                slot.1 = c;
            }
        }
    }
    TaskRules {
        disabled: off_types(s).into_iter().map(|(t, _)| t).collect(),
        email_default: s.emailer.to.is_some(),
        sms_default: s.sms.to.is_some(),
        conditions,
    }
}

/// Builds every configured handler (connecting the billing database, the S3 client …).
/// A type listed in `disabled_tasks` keeps its handler: rows created before it was disabled
/// still run.
/// An unknown handler name is an error; an unconfigured one is left out (and logged by
/// the caller from [`off_types`]).
pub async fn build(s: &Settings, store: &Store) -> Result<HashMap<TaskType, Arc<dyn TaskHandler>>, SetupError> {
    let mut out: HashMap<TaskType, Arc<dyn TaskHandler>> = HashMap::new();
    let http = http::client().map_err(|message| SetupError {
        task_type: TaskType::SmsSend,
        handler: "http".into(),
        message,
    })?;
    let mut recordings: Option<Arc<recording::Recordings>> = None;
    for t in TaskType::ALL {
        let name = match handler_for(s, t) {
            Ok(n) => n.to_string(),
            Err(Off::UnknownHandler(handler)) => {
                let message = Off::UnknownHandler(handler.clone()).to_string();
                return Err(SetupError { task_type: t, handler, message });
            }
            Err(_) => continue,
        };
        let err = |message: String| SetupError { task_type: t, handler: name.clone(), message };
        let handler: Arc<dyn TaskHandler> = match name.as_str() {
            "billing-feeder" => Arc::new(billing::BillingFeeder::connect(s).await.map_err(err)?),
            "calllog" => Arc::new(calllog::CallLog { store: store.clone() }),
            "emailer" => Arc::new(emailer::Emailer::new(&s.emailer).map_err(err)?),
            "sms" => Arc::new(sms::Sms::new(&s.sms, http.clone())),
            "cdr2sfapi" => Arc::new(salesforce::Salesforce::new(&s.salesforce, http.clone())),
            "recording-delivery" | "buffered-recording" | "transcription" => {
                let rec = match &recordings {
                    Some(r) => r.clone(),
                    None => {
                        let r = Arc::new(recording::Recordings::open(s).await.map_err(err)?);
                        recordings = Some(r.clone());
                        r
                    }
                };
                match name.as_str() {
                    "recording-delivery" => Arc::new(recording::Delivery(rec)),
                    "buffered-recording" => Arc::new(recording::Buffered(rec)),
                    _ => Arc::new(transcription::Transcription::new(&s.transcription, rec, http.clone())),
                }
            }
            other => return Err(err(format!("unknown handler '{other}'"))),
        };
        out.insert(t, handler);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfigured_handlers_turn_their_type_off_with_the_reason() {
        let mut s = Settings::embedded_default(std::path::Path::new("/tmp/x"));
        let off: Vec<(TaskType, Off)> = off_types(&s);
        let off_names: Vec<_> = off.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            off_names,
            ["bufferedRecording", "CDR2SF", "SMSSend", "emailer", "CDR2SFAPI", "recordingDelivery", "transcription"],
            "billing and calllog run out of the box"
        );
        assert!(off
            .iter()
            .any(|(t, why)| *t == TaskType::Emailer && why.to_string() == "emailer.smtp_host is not set"));
        s.emailer.smtp_host = Some("mx".into());
        assert_eq!(handler_for(&s, TaskType::Emailer).unwrap_err().to_string(), "emailer.from is not set");
        s.emailer.from = Some("a@b.c".into());
        assert_eq!(handler_for(&s, TaskType::Emailer), Ok("emailer"));
        s.tasksd.handlers.insert("billing".into(), "none".into());
        s.distiller.disabled_tasks = vec!["calllog".into()];
        let rules = task_rules(&s);
        assert!(rules.disabled.contains(&TaskType::Billing) && rules.disabled.contains(&TaskType::Calllog));
        assert!(!rules.disabled.contains(&TaskType::Emailer));
        s.tasksd.handlers.insert("sms".into(), "carrier-pigeon".into());
        s.tasksd.handlers.insert("SMSSend".into(), "carrier-pigeon".into());
        assert!(handler_for(&s, TaskType::SmsSend)
            .unwrap_err()
            .to_string()
            .starts_with("unknown handler 'carrier-pigeon'"));
    }
}
