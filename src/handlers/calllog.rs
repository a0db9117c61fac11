//! calllog: one `call_log` row per call in the CDR database, keyed by the call id (its first
//! A-leg's uuid) and written from the call's summary, so it is rewritten when a late leg
//! joins the call (the commit makes the call's calllog tasks due again).

use async_trait::async_trait;

use super::{HandlerError, Job, TaskHandler};
use crate::domain::calls::CallSummary;
use crate::store::{CallLogEntry, Store};

pub struct CallLog {
    pub store: Store,
}

/// The call log row of a call: its summary, with the org, partition, direction and recording
/// of the leg whose task runs.
pub fn call_entry(job: &Job, call: &CallSummary) -> CallLogEntry {
    let leg = entry(job);
    let duration = if call.start > 0 && call.end >= call.start { call.end - call.start } else { leg.duration };
    CallLogEntry {
        uuid: call.call_id,
        caller_id_number: call.caller.clone(),
        destination_number: call.callee.clone(),
        start_epoch: call.start,
        answer_epoch: call.answer,
        end_epoch: call.end,
        duration,
        billsec: call.talk_seconds,
        hangup_cause: call.hangup_cause.clone(),
        ..leg
    }
}

/// The call log row of one leg (a leg no call knows: normalized before calls were linked);
/// a field that is missing or not a number is 0/empty, as the distillery always writes the
/// headline fields.
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
        let call = self.store.call_of(job.task.uuid).await.map_err(|e| HandlerError::failed("reading the call", &e))?;
        let (row, others) = match &call {
            Some(call) => {
                (call_entry(job, call), call.legs.iter().map(|l| l.0).filter(|u| *u != call.call_id).collect())
            }
            None => (entry(job), Vec::new()),
        };
        self.store.upsert_call_log(&row, &others).await.map_err(|e| HandlerError::failed("writing call_log", &e))?;
        Ok(())
    }
}
