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
    pub answered: bool,
    pub billsec: i64,
    pub recording_path: Option<String>,
}

/// Default rules: billing for answered A-legs with billable seconds, a call log entry for
/// every A-leg, recording delivery when a recording exists. Disabled types are dropped, so
/// positions (`node_index`) count only the nodes that are written.
pub fn derive_tasks(facts: &CallFacts, disabled: &[TaskType]) -> Vec<TaskNode> {
    let mut nodes = Vec::new();
    if facts.a_leg && facts.answered && facts.billsec > 0 {
        nodes.push(TaskNode {
            task_type: TaskType::Billing,
            params: vec![("quantity".into(), facts.billsec.to_string())],
        });
    }
    if facts.a_leg {
        nodes.push(TaskNode { task_type: TaskType::Calllog, params: vec![] });
    }
    if let Some(path) = &facts.recording_path {
        nodes.push(TaskNode {
            task_type: TaskType::RecordingDelivery,
            params: vec![
                ("recording_path".into(), path.clone()),
                ("CDRFilePath".into(), CDR_FILE_PATH_PLACEHOLDER.into()),
            ],
        });
    }
    nodes.retain(|n| !disabled.contains(&n.task_type));
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

    #[test]
    fn rules_follow_leg_answer_and_disabled() {
        let answered_a = CallFacts { a_leg: true, answered: true, billsec: 30, recording_path: None };
        let types = |n: Vec<TaskNode>| n.into_iter().map(|t| t.task_type).collect::<Vec<_>>();
        assert_eq!(types(derive_tasks(&answered_a, &[])), [TaskType::Billing, TaskType::Calllog]);
        assert_eq!(types(derive_tasks(&answered_a, &[TaskType::Billing])), [TaskType::Calllog]);
        let zero = CallFacts { billsec: 0, ..answered_a.clone() };
        assert_eq!(types(derive_tasks(&zero, &[])), [TaskType::Calllog]);
        let b_leg = CallFacts { a_leg: false, ..answered_a.clone() };
        assert!(derive_tasks(&b_leg, &[]).is_empty());
        let rec = CallFacts { recording_path: Some("/r/x.wav".into()), ..answered_a };
        assert_eq!(types(derive_tasks(&rec, &[])), [TaskType::Billing, TaskType::Calllog, TaskType::RecordingDelivery]);
    }
}
