//! Request handlers for CDR, paging and PCAP submissions.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{ApiError, HttpState};
use crate::actors::cpu_bound;
use crate::actors::group_commit;
use crate::domain::intake::{canonical_uuid, parse_uuid_param};
use crate::domain::outcome::Classify;
use crate::domain::submission::{self, Submission, SubmissionError};
use crate::storage::local::{create_dir_durable, DurableFile};
use crate::store::NewQueuedCdr;

pub async fn post_cdr(
    State(st): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.cfg.max_content_length.min(st.cfg.max_cdr_size);
    // held until the CDR is parsed and handed on: bounds the bytes all POSTs hold at once
    let (bytes, _budget) = read_limited(&st, &headers, body, limit).await?;
    let received = chrono::Utc::now().timestamp();
    let query = uri.query().map(str::to_string);
    let peer_ip = peer.ip().to_string();
    let limits = st.cfg.parse_limits;
    let sub: Submission =
        cpu_bound(bytes.len(), move || submission::prepare(&bytes, query.as_deref(), &peer_ip, received, &limits))
            .await
            .map_err(|p| {
                ApiError::unavailable(format!(
                    "intake worker failed: {}",
                    crate::actors::pool::panic_message(p.as_ref())
                ))
            })?
            .map_err(|e| match e {
                SubmissionError::TooBig(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
                e => ApiError::bad_request(e.to_string()),
            })?;
    let (uuid, leg) = (sub.uuid.clone(), if sub.a_leg { "A" } else { "B" });
    // Storing and queueing run on their own task: a client that hangs up (or a POST that
    // times out) does not cut them short, and whatever they leave is either queued or removed.
    let work = tokio::spawn(store_and_queue(st.clone(), sub, received));
    let path = match tokio::time::timeout(st.cfg.answer_timeout, work).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => return Err(ApiError::unavailable(format!("storing the CDR failed: {join}"))),
        Err(_) => {
            let secs = st.cfg.answer_timeout.as_secs_f64();
            return Err(ApiError::unavailable(format!("the CDR was not queued within {secs}s; try again")));
        }
    };
    Ok(Json(serde_json::json!({ "uuid": uuid, "leg": leg, "path": path })).into_response())
}

/// How long the detached store-and-queue work waits for its group commit: far past any
/// answer, so it learns whether the row went in before it decides about the file.
const QUEUE_OUTCOME_WAIT: Duration = Duration::from_secs(600);

async fn store_and_queue(st: Arc<HttpState>, sub: Submission, received: i64) -> Result<String, ApiError> {
    let storage_err = |e| ApiError::unavailable(format!("could not store the CDR: {e}"));
    if !st.cfg.cdr_queue_enabled {
        let path = st.raw_store.put_owned_unsynced(&sub.key, sub.document).await.map_err(storage_err)?;
        st.raw_store.sync(std::slice::from_ref(&path)).await.map_err(storage_err)?;
        return Ok(path);
    }
    // A file already there (a re-post of a queued CDR) is never overwritten here, nor removed
    // on failure. The intake group commit syncs the directory with the rest of its batch.
    let Some(path) = st.raw_store.put_new_unsynced(&sub.key, sub.document.clone()).await.map_err(storage_err)? else {
        return repost(&st, sub, received).await;
    };
    match queue(&st, &sub, &path, received).await {
        Ok(None) => Ok(path),
        // the uuid was queued before under another file: ours must not stay an orphan
        Ok(Some(first)) => settle_other_name(&st, &sub, &path, &first, received).await,
        Err(e) => {
            // no row points at the file: remove it, unless the outcome is unknown (the
            // start-up sweep settles those)
            if !e.outcome_unknown() {
                if let Err(del) = st.raw_store.delete(&path).await {
                    tracing::warn!(path, error = %del, "could not remove a CDR file whose queue row failed");
                }
            }
            Err(queue_error(e))
        }
    }
}

/// Queues the row for `path`; `Some(first)` when the uuid was already queued for another file.
async fn queue(
    st: &HttpState,
    sub: &Submission,
    path: &str,
    received: i64,
) -> Result<Option<String>, group_commit::CommitError> {
    let row = NewQueuedCdr {
        uuid: sub.uuid_bytes,
        freeswitch_host: sub.host.clone(),
        path: path.to_string(),
        create_time: received,
    };
    group_commit::submit(&st.intake_commit, row, QUEUE_OUTCOME_WAIT).await
}

/// A row the database refuses will be refused again: FreeSWITCH must not retry it.
fn queue_error(e: group_commit::CommitError) -> ApiError {
    let message = format!("could not queue the CDR: {e}");
    if e.is_retriable() {
        ApiError::unavailable(message)
    } else {
        ApiError::bad_request(message)
    }
}

/// A POST whose file already exists. FreeSWITCH re-posts identical bytes: nothing to write.
/// Other bytes are a correction or a mistake: the first stays the billing truth and the new
/// body is kept beside it as evidence, unless the first failed for good, in which case the
/// new one replaces it and is processed again.
async fn repost(st: &HttpState, sub: Submission, received: i64) -> Result<String, ApiError> {
    let storage_err = |e| ApiError::unavailable(format!("could not store the CDR: {e}"));
    let first = st.raw_store.stat(&sub.key).await.map_err(storage_err)?;
    let ours = crate::storage::md5_hex(&sub.document);
    let Some(first) = first else {
        // gone since we looked: an ordinary first post
        let path = st.raw_store.put_owned_unsynced(&sub.key, sub.document.clone()).await.map_err(storage_err)?;
        return queue(st, &sub, &path, received).await.map(|_| path).map_err(queue_error);
    };
    if first.md5.as_deref() == Some(ours.as_str()) {
        queue(st, &sub, &first.location, received).await.map_err(queue_error)?;
        return Ok(first.location);
    }
    let failed = match st.store.queued_row(sub.uuid_bytes).await {
        Ok(Some(row)) if row.done == crate::store::RowState::Error.as_str() => Some(row),
        _ => None,
    };
    if let Some(row) = failed {
        let path = st.raw_store.put_owned_unsynced(&sub.key, sub.document.clone()).await.map_err(storage_err)?;
        st.raw_store.sync(std::slice::from_ref(&path)).await.map_err(storage_err)?;
        let requeued = st
            .store
            .requeue_failed(row.id, &path)
            .await
            .map_err(|e| queue_error(group_commit::CommitError::database("requeueing the CDR", e)))?;
        // due at once: the next poll takes it
        if requeued {
            conflict(st, &sub, "replaced", &row.path, &path, received).await;
        }
        return Ok(path);
    }
    let evidence = write_evidence(st, &sub.key, sub.document.clone()).await?;
    conflict(st, &sub, "kept_first", &first.location, &evidence, received).await;
    queue(st, &sub, &first.location, received).await.map_err(queue_error)?;
    Ok(first.location)
}

/// Our file landed under another name than the uuid's queued one (another host, date,
/// format or leg label): identical bytes are a plain duplicate and ours goes; other bytes
/// become evidence beside ours, and the queued first stays.
async fn settle_other_name(
    st: &HttpState,
    sub: &Submission,
    ours: &str,
    first: &str,
    received: i64,
) -> Result<String, ApiError> {
    let same = st.raw_store.get(first).await.map(|b| b == sub.document.as_ref()).unwrap_or(false);
    if !same {
        let evidence = write_evidence(st, &sub.key, sub.document.clone()).await?;
        conflict(st, sub, "kept_first", first, &evidence, received).await;
    }
    if let Err(e) = st.raw_store.delete(ours).await {
        tracing::warn!(path = ours, error = %e, "could not remove a re-posted CDR file");
    }
    Ok(first.to_string())
}

/// `{name}.v{N}.cdr.{ext}` beside `key`, N from 2 up: written durably, never over anything.
async fn write_evidence(st: &HttpState, key: &str, body: Bytes) -> Result<String, ApiError> {
    let storage_err = |e| ApiError::unavailable(format!("could not store the CDR: {e}"));
    let (stem, ext) = key.rsplit_once(".cdr.").unwrap_or((key, "xml"));
    for n in 2..1000 {
        let candidate = format!("{stem}.v{n}.cdr.{ext}");
        if !st.raw_store.exists(&candidate).await.map_err(storage_err)? {
            let path = st.raw_store.put_owned_unsynced(&candidate, body).await.map_err(storage_err)?;
            st.raw_store.sync(std::slice::from_ref(&path)).await.map_err(storage_err)?;
            return Ok(path);
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, format!("{key}: a thousand differing versions; not keeping more")))
}

/// Counts and lists a differing re-post (the list is best effort: the count and the log
/// line are not).
async fn conflict(st: &HttpState, sub: &Submission, kind: &'static str, first: &str, other: &str, received: i64) {
    crate::events::IntakeConflicted { uuid: &sub.uuid, kind, first, other }.emit();
    let entry = crate::store::IntakeConflict {
        uuid: sub.uuid.clone(),
        kind: kind.into(),
        first_path: first.into(),
        other_path: other.into(),
        create_time: received,
    };
    if let Err(e) = st.store.record_conflict(sub.uuid_bytes, &entry).await {
        tracing::warn!(uuid = sub.uuid, error = %e, "could not list an intake conflict");
    }
}

/// Reads a whole body, refusing it with 413 as soon as it passes `limit` and with 408 when
/// the client pauses longer than `server.body_idle_timeout`. Every chunk first takes its size
/// from the parse budget; the permits come back when the caller drops them.
async fn read_limited(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let budget = st.parse_budget.clone();
    // the whole declared length at once: bodies that each hold a part and wait for the rest
    // could stall one another until they all time out
    let upfront = declared.unwrap_or(0) as u32;
    let mut held = tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(upfront))
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = next_chunk(&mut stream, st.cfg.body_idle_timeout).await? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
        // a chunked body (no Content-Length) takes its budget as it arrives
        let beyond = buf.len().saturating_sub(held.num_permits()) as u32;
        if beyond > 0 {
            let more = tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(beyond))
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?;
            held.merge(more);
        }
    }
    Ok((Bytes::from(buf), held))
}

/// How long a POST waits for parse budget before it is told to come back.
const BUDGET_WAIT: Duration = Duration::from_secs(10);

fn busy() -> ApiError {
    ApiError::unavailable("intake is holding its limit of request bytes (request_handler.parse_memory); try again")
}

/// The next piece of a body, or a 408 when none arrives within `idle`.
async fn next_chunk(
    stream: &mut (impl futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    idle: Duration,
) -> Result<Option<Bytes>, ApiError> {
    match tokio::time::timeout(idle, stream.next()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("no body bytes for {}s (server.body_idle_timeout)", idle.as_secs_f64()),
        )),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(ApiError::bad_request(format!("reading the body failed: {e}"))),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `POST /api/v2/paging` (named by its Content-Type: json, xml, else dat) and
/// `POST /api/v2/pcap`: streamed to their directories.
pub async fn post_upload(
    State(st): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (dir, ext) = match uri.path() {
        "/api/v2/pcap" => (&st.cfg.pcap_dir, "pcap"),
        _ => match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(ct) if ct.contains("json") => (&st.cfg.paging_dir, "json"),
            Some(ct) if ct.contains("xml") => (&st.cfg.paging_dir, "xml"),
            _ => (&st.cfg.paging_dir, "dat"),
        },
    };
    store_stream(dir, ext, &uri, &headers, body, st.cfg.max_content_length, st.cfg.body_idle_timeout).await
}

/// Streams a body to `{dir}/{YYYY-MM-DD}/{uuid}.{ext}` chunk by chunk (a 2 GB PCAP never sits
/// in memory): temp file, fsync, rename, fsync the directory. The name comes from `?uuid=`
/// when given (a retry overwrites), else a fresh UUID.
async fn store_stream(
    dir: &Path,
    ext: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    body_idle: Duration,
) -> Result<Response, ApiError> {
    if content_length(headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let name = match parse_uuid_param(uri.query()) {
        Some(p) if canonical_uuid(&p.uuid).is_some() => p.uuid.to_ascii_lowercase(),
        Some(p) => return Err(ApiError::bad_request(format!("uuid '{}' is not a UUID", p.uuid))),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = dir.join(day).join(format!("{name}.{ext}"));
    let io = |e: std::io::Error| ApiError::unavailable(format!("could not store the upload: {e}"));
    let joined = |e: tokio::task::JoinError| io(std::io::Error::other(e));
    let at = path.clone();
    let create = move || {
        create_dir_durable(at.parent().expect("dir/day/name"))?;
        DurableFile::create(&at)
    };
    let mut file = tokio::task::spawn_blocking(create).await.map_err(joined)?.map_err(io)?;
    // chunk by chunk on the blocking pool; a request that ends early drops the file, and
    // with it the temp file
    let mut written: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = next_chunk(&mut stream, body_idle).await? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::too_large(limit));
        }
        file = tokio::task::spawn_blocking(move || file.write(&chunk).map(|()| file))
            .await
            .map_err(joined)?
            .map_err(io)?;
    }
    tokio::task::spawn_blocking(move || file.commit(true)).await.map_err(joined)?.map_err(io)?;
    let stored = serde_json::json!({ "path": path.display().to_string(), "bytes": written });
    Ok((StatusCode::OK, Json(stored)).into_response())
}
