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

/// So a row's type compares with the seed's spelling directly (`t.task_type == "billing"`).
impl PartialEq<&str> for TaskType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
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
    /// The org's Salesforce org id (variable `sf_org_id`, else the org directory).
    pub sf_org_id: Option<String>,
    /// The org allows transcription (true unless its directory entry says no).
    pub transcription_allowed: bool,
    /// A half of a `loopback/` channel pair (`is_loopback=1`): its talk time repeats the
    /// real legs', so it is neither billed nor logged by default.
    pub loopback: bool,
}

/// One fact a task rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predicate {
    ALeg,
    BLeg,
    Inbound,
    Outbound,
    Answered,
    /// billsec > 0.
    Billable,
    /// An inbound A-leg never answered.
    Missed,
    Recorded,
    Buffered,
    /// The CDR or its org names a Salesforce org.
    Salesforce,
    /// Someone to email: the CDR, its org or `emailer.to`.
    NotifyEmail,
    NotifySms,
    /// The org allows transcription (orgs without a directory entry do).
    Transcription,
    /// A half of a `loopback/` pair.
    Loopback,
    Always,
    Never,
}

const PREDICATES: [(&str, Predicate); 16] = [
    ("a_leg", Predicate::ALeg),
    ("b_leg", Predicate::BLeg),
    ("inbound", Predicate::Inbound),
    ("outbound", Predicate::Outbound),
    ("answered", Predicate::Answered),
    ("billable", Predicate::Billable),
    ("missed", Predicate::Missed),
    ("recorded", Predicate::Recorded),
    ("buffered", Predicate::Buffered),
    ("salesforce", Predicate::Salesforce),
    ("notify_email", Predicate::NotifyEmail),
    ("notify_sms", Predicate::NotifySms),
    ("transcription", Predicate::Transcription),
    ("loopback", Predicate::Loopback),
    ("always", Predicate::Always),
    ("never", Predicate::Never),
];

/// A task rule (`task_rules.<type>`): predicates joined by `and`, each optionally `not`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition(Vec<(bool, Predicate)>);

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let mut terms = Vec::new();
        for term in text.split(" and ") {
            let words: Vec<&str> = term.split_whitespace().collect();
            let (negated, name) = match words.as_slice() {
                ["not", name] => (true, *name),
                [name] => (false, *name),
                _ => return Err(format!("'{}' is not a predicate or 'not predicate'", term.trim())),
            };
            let p = PREDICATES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).ok_or_else(|| {
                let known: Vec<&str> = PREDICATES.iter().map(|(n, _)| *n).collect();
                format!("unknown predicate '{name}' (known: {})", known.join(", "))
            })?;
            terms.push((negated, p));
        }
        Ok(Condition(terms))
    }

    fn holds(&self, f: &CallFacts, rules: &TaskRules) -> bool {
        self.0.iter().all(|(negated, p)| {
            let v = match p {
                Predicate::ALeg => f.a_leg,
                Predicate::BLeg => !f.a_leg,
                Predicate::Inbound => f.inbound,
                Predicate::Outbound => !f.inbound,
                Predicate::Answered => f.answered,
                Predicate::Billable => f.billsec > 0,
                Predicate::Missed => f.a_leg && f.inbound && !f.answered,
                Predicate::Recorded => f.recording_path.is_some(),
                Predicate::Buffered => f.buffered_recording.is_some(),
                Predicate::Salesforce => f.sf_org_id.is_some(),
                Predicate::NotifyEmail => f.notify_email.is_some() || rules.email_default,
                Predicate::NotifySms => f.notify_sms.is_some() || rules.sms_default,
                Predicate::Transcription => f.transcription_allowed,
                Predicate::Loopback => f.loopback,
                Predicate::Always => true,
                Predicate::Never => false,
            };
            v != *negated
        })
    }
}

/// The default rule of each type, in `<task>` order.
pub const DEFAULT_RULES: [(TaskType, &str); 9] = [
    (TaskType::Billing, "a_leg and answered and billable and not loopback"),
    (TaskType::Calllog, "a_leg and not loopback"),
    (TaskType::Cdr2SfApi, "a_leg and salesforce"),
    (TaskType::RecordingDelivery, "recorded"),
    (TaskType::Transcription, "recorded and transcription"),
    (TaskType::BufferedRecording, "buffered"),
    (TaskType::Emailer, "missed and notify_email"),
    (TaskType::SmsSend, "missed and notify_sms"),
    // deprecated: never created, old rows run through the CDR2SFAPI handler
    (TaskType::Cdr2Sf, "never"),
];

/// What the rules need from configuration.
#[derive(Debug, Clone)]
pub struct TaskRules {
    /// `disabled_tasks` plus every type whose handler is not configured.
    pub disabled: Vec<TaskType>,
    /// A default recipient is configured (`emailer.to`, `sms.to`), so a missed call
    /// notifies even when the CDR names nobody.
    pub email_default: bool,
    pub sms_default: bool,
    /// `(type, rule)` in `<task>` order: the defaults with `task_rules.<type>` applied.
    pub conditions: Vec<(TaskType, Condition)>,
}

impl Default for TaskRules {
    fn default() -> Self {
        TaskRules { disabled: Vec::new(), email_default: false, sms_default: false, conditions: default_conditions() }
    }
}

pub fn default_conditions() -> Vec<(TaskType, Condition)> {
    DEFAULT_RULES.iter().map(|(t, c)| (*t, Condition::parse(c).expect("default rules parse"))).collect()
}

/// Which `<task>` nodes a CDR gets: each type whose rule holds, in rule order, minus the
/// disabled types (so `node_index` counts only the nodes written). Parameters per type:
/// billing the billed quantity, recording tasks the path and `__CDRFilePath__`, notifications
/// the recipient the CDR or its org names.
pub fn derive_tasks(facts: &CallFacts, rules: &TaskRules) -> Vec<TaskNode> {
    let mut nodes = Vec::new();
    for (task_type, cond) in &rules.conditions {
        if rules.disabled.contains(task_type) || !cond.holds(facts, rules) {
            continue;
        }
        let mut params: Vec<(&str, String)> = Vec::new();
        match task_type {
            TaskType::Billing => {
                let quantity = if facts.quantity > 0 { facts.quantity } else { facts.billsec };
                params.push(("quantity", quantity.to_string()));
            }
            TaskType::Cdr2SfApi | TaskType::Cdr2Sf => {
                params.extend(facts.sf_org_id.iter().map(|id| ("sf_org_id", id.clone())))
            }
            TaskType::RecordingDelivery | TaskType::Transcription => {
                if let Some(path) = &facts.recording_path {
                    params.push(("recording_path", path.clone()));
                    params.push(("CDRFilePath", CDR_FILE_PATH_PLACEHOLDER.into()));
                }
            }
            TaskType::BufferedRecording => {
                params.extend(facts.buffered_recording.iter().map(|n| ("buffered_recording", n.clone())))
            }
            TaskType::Emailer => params.extend(facts.notify_email.iter().map(|to| ("to", to.clone()))),
            TaskType::SmsSend => params.extend(facts.notify_sms.iter().map(|to| ("to", to.clone()))),
            TaskType::Calllog => {}
        }
        nodes.push(TaskNode {
            task_type: *task_type,
            params: params.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }
    nodes
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
        assert_eq!(types(derive_tasks(&answered_a, &off(&[]))), [Billing, Calllog]);
        assert_eq!(types(derive_tasks(&answered_a, &off(&[Billing]))), [Calllog]);
        let zero = CallFacts { billsec: 0, ..answered_a.clone() };
        assert_eq!(types(derive_tasks(&zero, &off(&[]))), [Calllog]);
        let b_leg = CallFacts { a_leg: false, ..answered_a.clone() };
        assert!(derive_tasks(&b_leg, &off(&[])).is_empty());
        let sf = CallFacts { sf_org_id: Some("00D1".into()), ..answered_a.clone() };
        assert_eq!(types(derive_tasks(&sf, &off(&[]))), [Billing, Calllog, Cdr2SfApi]);
        let rec =
            CallFacts { recording_path: Some("/r/x.wav".into()), transcription_allowed: true, ..answered_a.clone() };
        assert_eq!(types(derive_tasks(&rec, &off(&[]))), [Billing, Calllog, RecordingDelivery, Transcription]);
        let no_tx = CallFacts { transcription_allowed: false, ..rec };
        assert_eq!(types(derive_tasks(&no_tx, &off(&[]))), [Billing, Calllog, RecordingDelivery]);
    }

    #[test]
    fn rules_are_configurable_and_checked() {
        use TaskType::*;
        let mut rules = off(&[]);
        rules.conditions.retain(|(t, _)| *t != Calllog);
        rules.conditions.push((Calllog, Condition::parse("inbound and not answered").unwrap()));
        let answered = CallFacts { a_leg: true, inbound: true, answered: true, billsec: 5, ..Default::default() };
        assert_eq!(types(derive_tasks(&answered, &rules)), [Billing]);
        let missed = CallFacts { answered: false, billsec: 0, ..answered };
        assert_eq!(types(derive_tasks(&missed, &rules)), [Calllog]);
        assert!(Condition::parse("a_leg and sunny").unwrap_err().contains("unknown predicate 'sunny'"));
        assert!(Condition::parse("a_leg or b_leg").is_err(), "only 'and' and 'not'");
        for (_, rule) in DEFAULT_RULES {
            Condition::parse(rule).unwrap();
        }
    }
}
