//! cdrmunch: post-call processing for FreeSWITCH. HTTP intake of raw CDRs, a durable
//! `cdr_queue`, distillery actors that normalize each CDR into `<cdr-normalized>` XML and
//! derive post-call tasks — one supervised ractor runtime per process.

pub mod actors;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
pub mod handlers;
pub mod http;
pub mod logging;
pub mod process;
pub mod sd_notify;
pub mod ship;
pub mod spool;
pub mod storage;
pub mod store;
pub mod telemetry;

/// An error with its causes in one line: transport errors' own text (reqwest's, the AWS
/// SDK's "dispatch failure") rarely says what happened underneath, e.g. "connection refused".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
