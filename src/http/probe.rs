//! `/health` (liveness: the actor tree is up; restarting the process is the cure when it is
//! not) and `/ready` (the database and every store answer; send traffic elsewhere while not).
//! Both answer JSON saying what is wrong, on the intake listener and on the metrics listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodRouter};
use axum::Json;
use serde_json::{json, Map, Value};

use super::routes::Endpoint;
use crate::storage::BlobStore;
use crate::store::Repository;

/// A check that takes longer than this counts as failed: a probe must answer quickly.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Probes {
    /// False once the supervision tree has stopped for good.
    pub tree_alive: Arc<AtomicBool>,
    pub roles: String,
    pub repo: Arc<dyn Repository>,
    /// `(name, where, store)` for each store this process writes: raw_storage, normalized_storage.
    pub stores: Vec<(&'static str, String, Arc<dyn BlobStore>)>,
    /// The intake spool: while it has room, a database outage degrades intake, not stops it.
    pub spool: Option<Arc<crate::spool::Spool>>,
}

/// The handler of the probe `endpoint` (`/health` or `/ready`), for either listener.
pub fn route<S: Clone + Send + Sync + 'static>(endpoint: Endpoint, probes: Arc<Probes>) -> MethodRouter<S> {
    match endpoint {
        Endpoint::Health => on(endpoint.filter(), health).with_state(probes),
        Endpoint::Ready => on(endpoint.filter(), ready).with_state(probes),
        other => unreachable!("{other:?} is not a probe"),
    }
}

async fn health(State(p): State<Arc<Probes>>) -> Response {
    if p.tree_alive.load(Ordering::SeqCst) {
        Json(json!({ "status": "ok", "actors": "up", "roles": p.roles })).into_response()
    } else {
        let body =
            json!({ "status": "unavailable", "actors": "the supervision tree has stopped after repeated failures" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn ready(State(p): State<Arc<Probes>>) -> Response {
    let mut checks = Map::new();
    let mut ok = true;
    let mut record = |name: &str, result: Result<(), String>, fatal: bool| {
        ok &= result.is_ok() || !fatal;
        checks.insert(name.to_string(), Value::String(result.err().unwrap_or_else(|| "ok".into())));
    };
    let timed_out = || format!("did not answer within {}s", PROBE_TIMEOUT.as_secs());
    let db = tokio::time::timeout(PROBE_TIMEOUT, p.repo.ping()).await;
    let db = db.map_err(|_| timed_out()).and_then(|r| r.map_err(|e| e.to_string()));
    let spool_room = p.spool.as_ref().is_some_and(|s| s.rows() < s.max_rows());
    let degraded = db.is_err() || p.spool.as_ref().is_some_and(|s| s.rows() > 0);
    // with room in the spool, intake still takes CDRs while the database is away
    record("database", db, !spool_room);
    for (name, at, store) in &p.stores {
        let r = tokio::time::timeout(PROBE_TIMEOUT, store.check()).await;
        let r = r.map_err(|_| format!("{at} {}", timed_out())).and_then(|r| r.map_err(|e| e.to_string()));
        record(name, r, true);
    }
    record("actors", if p.tree_alive.load(Ordering::SeqCst) { Ok(()) } else { Err("stopped".into()) }, true);
    let mut body = Map::new();
    let status = match (ok, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ok",
    };
    body.insert("status".into(), Value::String(status.into()));
    if let Some(spool) = &p.spool {
        body.insert("spool_rows".into(), json!(spool.rows()));
    }
    body.extend(checks);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Value::Object(body))).into_response()
}
