//! Post-call task types (the seed's `task_type_t`) and the rules that decide which
//! `<task>` nodes a normalized CDR carries.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskType {
    BufferedRecording,
    Cdr2Sf,
    SmsSend,
    Billing,
    Emailer,
    Calllog,
    Cdr2SfApi,
    RecordingDelivery,
    Transcription,
}

impl TaskType {
    pub const ALL: [TaskType; 9] = [
        TaskType::BufferedRecording,
        TaskType::Cdr2Sf,
        TaskType::SmsSend,
        TaskType::Billing,
        TaskType::Emailer,
        TaskType::Calllog,
        TaskType::Cdr2SfApi,
        TaskType::RecordingDelivery,
        TaskType::Transcription,
    ];

    /// The name stored in `tasks.task_type` and used in config, exactly as the seed spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::BufferedRecording => "bufferedRecording",
            TaskType::Cdr2Sf => "CDR2SF",
            TaskType::SmsSend => "SMSSend",
            TaskType::Billing => "billing",
            TaskType::Emailer => "emailer",
            TaskType::Calllog => "calllog",
            TaskType::Cdr2SfApi => "CDR2SFAPI",
            TaskType::RecordingDelivery => "recordingDelivery",
            TaskType::Transcription => "transcription",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let valid: Vec<_> = TaskType::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown task type '{s}' (valid: {})", valid.join(", "))
        })
    }
}

/// One `<task type="…">` node: its type and child elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNode {
    pub task_type: TaskType,
    pub params: Vec<(String, String)>,
}

/// The seed's placeholder, replaced by the normalized CDR's path when a task runs.
pub const CDR_FILE_PATH_PLACEHOLDER: &str = "__CDRFilePath__";

/// Facts about a call that task rules look at.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    pub a_leg: bool,
    pub inbound: bool,
    pub answered: bool,
    pub billsec: i64,
    /// Billed seconds after rating increments (billsec when unrated).
    pub quantity: i64,
    pub recording_path: Option<String>,
    /// Per-call notification targets (variables `notify_email`, `notify_sms`).
    pub notify_email: Option<String>,
    pub notify_sms: Option<String>,
    /// A recording parked in the buffer directory (variable `buffered_recording`).
    pub buffered_recording: Option<String>,
    /// The org's Salesforce org id when the CDR carries one (variable `sf_org_id`).
    pub sf_org_id: Option<String>,
}

/// What the rules need from configuration.
#[derive(Debug, Clone, Default)]
pub struct TaskRules {
    /// `disabled_tasks` plus every type whose handler is not configured.
    pub disabled: Vec<TaskType>,
    /// A default recipient is configured (`emailer.to`, `sms.to`), so a missed call
    /// notifies even when the CDR names nobody.
    pub email_default: bool,
    pub sms_default: bool,
}

/// The task rules, in `<task>` order:
/// - billing: answered A-leg with billable seconds;
/// - calllog: every A-leg;
/// - CDR2SFAPI: every A-leg (CDR2SF, deprecated, is never generated);
/// - recordingDelivery, then transcription: a finished recording exists;
/// - bufferedRecording: a buffered recording is flagged;
/// - emailer, SMSSend: a missed call (inbound A-leg never answered) with a recipient.
///
/// Disabled types are dropped, so positions (`node_index`) count only written nodes.
pub fn derive_tasks(facts: &CallFacts, rules: &TaskRules) -> Vec<TaskNode> {
    let node = |task_type, params: Vec<(&str, String)>| TaskNode {
        task_type,
        params: params.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    let mut nodes = Vec::new();
    if facts.a_leg && facts.answered && facts.billsec > 0 {
        let quantity = if facts.quantity > 0 { facts.quantity } else { facts.billsec };
        nodes.push(node(TaskType::Billing, vec![("quantity", quantity.to_string())]));
    }
    if facts.a_leg {
        nodes.push(node(TaskType::Calllog, vec![]));
        let sf = facts.sf_org_id.iter().map(|id| ("sf_org_id", id.clone())).collect();
        nodes.push(node(TaskType::Cdr2SfApi, sf));
    }
    if let Some(path) = &facts.recording_path {
        let params = vec![("recording_path", path.clone()), ("CDRFilePath", CDR_FILE_PATH_PLACEHOLDER.into())];
        nodes.push(node(TaskType::RecordingDelivery, params.clone()));
        nodes.push(node(TaskType::Transcription, params));
    }
    if let Some(name) = &facts.buffered_recording {
        nodes.push(node(TaskType::BufferedRecording, vec![("buffered_recording", name.clone())]));
    }
    let missed = facts.a_leg && facts.inbound && !facts.answered;
    if missed && (facts.notify_email.is_some() || rules.email_default) {
        nodes.push(node(TaskType::Emailer, facts.notify_email.iter().map(|to| ("to", to.clone())).collect()));
    }
    if missed && (facts.notify_sms.is_some() || rules.sms_default) {
        nodes.push(node(TaskType::SmsSend, facts.notify_sms.iter().map(|to| ("to", to.clone())).collect()));
    }
    nodes.retain(|n| !rules.disabled.contains(&n.task_type));
    nodes
}

/// tasksd's retry settings (`tasksd.max_retries`, `retry_backoff_seconds`, `exponential_backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff_seconds: u64,
    pub exponential: bool,
}

/// No retry waits longer than a day, whatever the exponent says.
const MAX_TASK_BACKOFF: u64 = 86_400;

impl RetryPolicy {
    /// After a retriable failure of a task that had failed `retry` times before: the delay
    /// before the next attempt, or `None` when the retries are used up (done='error').
    pub fn next_delay(&self, retry: u32) -> Option<u64> {
        if retry >= self.max_retries {
            None
        } else if self.exponential {
            Some(super::outcome::backoff_seconds(retry, self.backoff_seconds, MAX_TASK_BACKOFF))
        } else {
            Some(self.backoff_seconds.min(MAX_TASK_BACKOFF))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_explained() {
        for t in TaskType::ALL {
            assert_eq!(t.as_str().parse::<TaskType>().unwrap(), t);
        }
        let err = "Billing".parse::<TaskType>().unwrap_err();
        assert!(err.contains("valid: bufferedRecording"), "{err}");
    }

    fn types(n: Vec<TaskNode>) -> Vec<TaskType> {
        n.into_iter().map(|t| t.task_type).collect()
    }

    fn off(disabled: &[TaskType]) -> TaskRules {
        TaskRules { disabled: disabled.to_vec(), ..Default::default() }
    }

    #[test]
    fn rules_follow_leg_answer_and_disabled() {
        use TaskType::*;
        let answered_a = CallFacts { a_leg: true, answered: true, billsec: 30, ..Default::default() };
        assert_eq!(types(derive_tasks(&answered_a, &off(&[]))), [Billing, Calllog, Cdr2SfApi]);
        assert_eq!(types(derive_tasks(&answered_a, &off(&[Billing, Cdr2SfApi]))), [Calllog]);
        let zero = CallFacts { billsec: 0, ..answered_a.clone() };
        assert_eq!(types(derive_tasks(&zero, &off(&[Cdr2SfApi]))), [Calllog]);
        let b_leg = CallFacts { a_leg: false, ..answered_a.clone() };
        assert!(derive_tasks(&b_leg, &off(&[])).is_empty());
        let rec = CallFacts { recording_path: Some("/r/x.wav".into()), ..answered_a };
        assert_eq!(types(derive_tasks(&rec, &off(&[Cdr2SfApi]))), [Billing, Calllog, RecordingDelivery, Transcription]);
    }

    #[test]
    fn missed_calls_notify_only_with_a_recipient() {
        use TaskType::*;
        let missed = CallFacts { a_leg: true, inbound: true, ..Default::default() };
        let rules = off(&[Cdr2SfApi]);
        assert_eq!(types(derive_tasks(&missed, &rules)), [Calllog]);
        let with_defaults = TaskRules { email_default: true, sms_default: true, ..rules.clone() };
        assert_eq!(types(derive_tasks(&missed, &with_defaults)), [Calllog, Emailer, SmsSend]);
        let named = CallFacts { notify_email: Some("ops@example.com".into()), ..missed.clone() };
        let nodes = derive_tasks(&named, &rules);
        assert_eq!(nodes.last().unwrap().params, vec![("to".to_string(), "ops@example.com".to_string())]);
        let answered = CallFacts { answered: true, billsec: 5, ..named };
        assert!(!types(derive_tasks(&answered, &with_defaults)).contains(&Emailer));
        let outbound = CallFacts { inbound: false, ..missed };
        assert_eq!(types(derive_tasks(&outbound, &with_defaults)), [Calllog]);
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let p = RetryPolicy { max_retries: 3, backoff_seconds: 60, exponential: true };
        assert_eq!([0, 1, 2].map(|r| p.next_delay(r)), [Some(60), Some(120), Some(240)]);
        assert_eq!(p.next_delay(3), None);
        let fixed = RetryPolicy { exponential: false, ..p };
        assert_eq!(fixed.next_delay(2), Some(60));
        let huge = RetryPolicy { max_retries: 100, backoff_seconds: 60, exponential: true };
        assert_eq!(huge.next_delay(60), Some(86_400));
    }
}
