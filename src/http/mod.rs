//! HTTP endpoints of the Hurler: `/api/v2/cdr`, `/api/v2/paging`, `/api/v2/pcap`, and the
//! probes `/health` and `/ready`.
//!
//! FreeSWITCH treats any 2xx as "stored" and anything else as "try again later", so a 200
//! is sent only when the raw CDR is fsynced and its `cdr_queue` row committed; input that
//! can never succeed gets a 4xx with a message, trouble on our side a 503 + Retry-After.

mod intake;
pub mod probe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;

use crate::actors::intake::IntakeMsg;
use crate::actors::mailbox::Mailbox;
use crate::storage::BlobStore;

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub basic_auth: Option<(String, String)>,
    pub max_content_length: u64,
    pub max_cdr_size: u64,
    pub cdr_queue_enabled: bool,
    pub paging_dir: PathBuf,
    pub pcap_dir: PathBuf,
    /// How long a POST waits for its group commit before answering 503.
    pub commit_timeout: Duration,
}

pub struct HttpState {
    /// The intake group commit the POSTs queue their rows through.
    pub intake_commit: Mailbox<IntakeMsg>,
    pub raw_store: Arc<dyn BlobStore>,
    pub cfg: HttpConfig,
    pub probes: Arc<probe::Probes>,
    /// False when this process does not run the intake role: the API answers 404 saying so.
    pub intake: bool,
}

pub fn router(state: Arc<HttpState>) -> Router {
    let api = if state.intake {
        Router::new()
            .route("/api/v2/cdr", post(intake::post_cdr))
            .route("/api/v2/paging", post(intake::post_upload))
            .route("/api/v2/pcap", post(intake::post_upload))
            .layer(middleware::from_fn_with_state(state.clone(), basic_auth))
    } else {
        Router::new().route("/api/v2/{*endpoint}", post(not_intake))
    };
    Router::new()
        .merge(probe::routes(state.probes.clone()))
        .merge(api)
        // outermost, so refusals by auth and limits are counted too
        .layer(middleware::from_fn(count_requests))
        // Limits are enforced per endpoint while reading, so a PCAP can stream to disk.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A 4xx/5xx with a JSON body `{"error": "..."}`; 503s carry Retry-After.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    pub fn too_large(limit: u64) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body exceeds the limit of {limit} bytes"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"cdrmunch\""));
        }
        resp
    }
}

/// `server.basic_auth = user:pass` guards the API (mod_xml_cdr's `cred=`); health stays open.
async fn basic_auth(State(st): State<Arc<HttpState>>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let Some((user, pass)) = &st.cfg.basic_auth else {
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!("{user}:{pass}");
    if given.as_deref().is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong HTTP Basic credentials").into_response()
    }
}

/// `cdrmunch_intake_requests_total{endpoint, status}`; unknown paths share one label so a
/// scanner cannot blow up the series count.
async fn count_requests(req: Request, next: Next) -> Response {
    let endpoint = match req.uri().path() {
        "/api/v2/cdr" => "/api/v2/cdr",
        "/api/v2/paging" => "/api/v2/paging",
        "/api/v2/pcap" => "/api/v2/pcap",
        "/health" => "/health",
        "/ready" => "/ready",
        _ => "other",
    };
    let resp = next.run(req).await;
    crate::events::IntakeAnswered { endpoint, status: resp.status().as_u16() }.emit();
    resp
}

/// Serves `GET /metrics` (Prometheus text format) and the probes until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    probes: Arc<probe::Probes>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }
            }),
        )
        .merge(probe::routes(probes));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A CDR sent to a process that does not run the intake role: FreeSWITCH will retry it, and
/// the message says where the mistake is.
async fn not_intake(State(st): State<Arc<HttpState>>) -> Response {
    let msg = format!("this cdrmunch runs the roles {}; CDR intake is not one of them", st.probes.roles);
    ApiError::new(StatusCode::NOT_FOUND, msg).into_response()
}

/// Serves until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
