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
pub mod ship;
pub mod spool;
pub mod storage;
pub mod store;
pub mod telemetry;
