//! calllog: one `call_log` row per A-leg in the CDR database, keyed by the call uuid.

use async_trait::async_trait;

use super::{HandlerError, Job, TaskHandler};
use crate::store::{CallLogEntry, Store};

pub struct CallLog {
    pub store: Store,
}

/// The call log row of a normalized CDR; a field that is missing or not a number is 0/empty,
/// as the distillery always writes the headline fields.
pub fn entry(job: &Job) -> CallLogEntry {
    let int = |k: &str| job.doc.field(k).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
    let text = |k: &str| job.doc.field(k).unwrap_or_default();
    CallLogEntry {
        uuid: job.task.uuid,
        org_id: int("rmOrgID"),
        table_suffix: int("TableSuffix"),
        direction: text("direction"),
        caller_id_number: text("caller_id_number"),
        destination_number: text("destination_number"),
        start_epoch: int("start_epoch"),
        answer_epoch: int("answer_epoch"),
        end_epoch: int("end_epoch"),
        duration: int("duration"),
        billsec: int("billsec"),
        hangup_cause: text("hangup_cause"),
        recording_path: job.doc.field("recording_path").filter(|p| !p.is_empty()),
    }
}

#[async_trait]
impl TaskHandler for CallLog {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        self.store.insert_call_log(&entry(job)).await.map_err(|e| HandlerError::failed("writing call_log", &e))?;
        Ok(())
    }
}
