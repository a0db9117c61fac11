//! Request handlers for CDR, paging and PCAP submissions.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;

use super::{ApiError, HttpState};
use crate::actors::{cpu_bound, group_commit};
use crate::domain::intake::{canonical_uuid, parse_uuid_param};
use crate::domain::outcome::Classify;
use crate::domain::submission::{self, Submission};
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
    let bytes = read_limited(&headers, body, limit).await?;
    let received = chrono::Utc::now().timestamp();
    let query = uri.query().map(str::to_string);
    let peer_ip = peer.ip().to_string();
    let sub: Submission =
        cpu_bound(bytes.len(), move || submission::prepare(&bytes, query.as_deref(), &peer_ip, received))
            .await
            .map_err(|p| {
                ApiError::unavailable(format!(
                    "intake worker failed: {}",
                    crate::actors::pool::panic_message(p.as_ref())
                ))
            })?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let storage_err = |e| ApiError::unavailable(format!("could not store the CDR: {e}"));
    let path = if st.cfg.cdr_queue_enabled {
        // The intake group commit syncs the directory together with the rest of its batch.
        let path = st.raw_store.put_unsynced(&sub.key, &sub.document).await.map_err(storage_err)?;
        let row = NewQueuedCdr {
            uuid: sub.uuid_bytes,
            freeswitch_host: sub.host.clone(),
            path: path.clone(),
            create_time: received,
        };
        group_commit::submit(&st.intake_commit, row, st.cfg.commit_timeout).await.map_err(|e| {
            // a row the database refuses will be refused again: FreeSWITCH must not retry it
            let message = format!("could not queue the CDR: {e}");
            if e.is_retriable() {
                ApiError::unavailable(message)
            } else {
                ApiError::bad_request(message)
            }
        })?;
        path
    } else {
        st.raw_store.put(&sub.key, &sub.document).await.map_err(storage_err)?
    };
    let leg = if sub.a_leg { "A" } else { "B" };
    Ok(Json(serde_json::json!({ "uuid": sub.uuid, "leg": leg, "path": path })).into_response())
}

/// Reads a whole body, refusing it with 413 as soon as it passes `limit`.
async fn read_limited(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    if content_length(headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut buf = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
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
    store_stream(dir, ext, &uri, &headers, body, st.cfg.max_content_length).await
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
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
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
