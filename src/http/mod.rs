//! HTTP endpoints of the Hurler: `/api/v2/cdr`, `/api/v2/paging`, `/api/v2/pcap`, the
//! probes `/health` and `/ready`, and `/openapi.json` describing them all ([`routes`] lists
//! them; `deploy/openapi.yaml` documents them).
//!
//! FreeSWITCH treats any 2xx as "stored" and anything else as "try again later", so a 200
//! is sent only when the raw CDR is fsynced and its `cdr_queue` row committed; input that
//! can never succeed gets a 4xx with a message, trouble on our side a 503 + Retry-After.

mod framing;
mod intake;
pub mod openapi;
pub mod probe;
pub mod routes;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, post, MethodRouter};
use axum::{Json, Router};
use base64::Engine as _;

use crate::actors::intake::IntakeMsg;
use crate::actors::mailbox::Mailbox;
use crate::storage::BlobStore;
use routes::{Endpoint, Listener};

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub basic_auth: Option<(String, String)>,
    pub max_content_length: u64,
    pub max_cdr_size: u64,
    pub cdr_queue_enabled: bool,
    pub paging_dir: PathBuf,
    pub pcap_dir: PathBuf,
    /// A CDR POST is answered within this (`server.answer_timeout_ms`): 503 when its CDR
    /// could not be made safe in time.
    pub answer_timeout: Duration,
    /// Longest pause between two pieces of a request body (`server.body_idle_timeout`).
    pub body_idle_timeout: Duration,
    /// Caps on one CDR's shape (`request_handler.max_cdr_*`).
    pub parse_limits: crate::domain::cdr::ParseLimits,
    /// Bytes all CDR POSTs may hold at once, from reading to parsed (`request_handler.parse_memory`).
    pub parse_memory: u64,
    pub limits: server::ServerLimits,
}

pub struct HttpState {
    /// The intake group commit the POSTs queue their rows through.
    pub intake_commit: Mailbox<IntakeMsg>,
    pub raw_store: Arc<dyn BlobStore>,
    pub cfg: HttpConfig,
    pub probes: Arc<probe::Probes>,
    /// False when this process does not run the intake role: the API answers 404 saying so.
    pub intake: bool,
    /// Permits are bytes of CDR bodies held in memory (see `read_limited`).
    pub parse_budget: Arc<tokio::sync::Semaphore>,
    /// The CDR database itself, for settling re-posts that differ.
    pub store: crate::store::Store,
}

impl HttpState {
    /// The budget for `cfg.parse_memory` bytes, never less than one largest CDR.
    pub fn parse_budget(cfg: &HttpConfig) -> Arc<tokio::sync::Semaphore> {
        let permits = cfg.parse_memory.max(cfg.max_cdr_size.min(cfg.max_content_length)).min(1 << 40);
        Arc::new(tokio::sync::Semaphore::new(permits as usize))
    }
}

/// The intake listener's routes, from [`routes::ROUTES`]; the API ones behind Basic auth.
pub fn router(state: Arc<HttpState>) -> Router {
    let (mut open, mut api) = (Router::new(), Router::new());
    for e in Listener::Intake.endpoints() {
        match e {
            Endpoint::Cdr => api = api.route(e.path(), on(e.filter(), intake::post_cdr)),
            Endpoint::Paging | Endpoint::Pcap => api = api.route(e.path(), on(e.filter(), intake::post_upload)),
            Endpoint::Health | Endpoint::Ready => open = open.route(e.path(), probe::route(e, state.probes.clone())),
            Endpoint::OpenApi => open = open.route(e.path(), on(e.filter(), openapi::document)),
            Endpoint::Metrics => unreachable!("/metrics is served on the metrics listener only"),
        }
    }
    let api = if state.intake {
        api.layer(middleware::from_fn_with_state(state.clone(), basic_auth))
    } else {
        Router::new().route("/api/v2/{*endpoint}", post(not_intake))
    };
    open.merge(api)
        .layer(middleware::from_fn(refuse_ambiguous_framing))
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

/// The reason of a refusal, carried on the response for the rejection log line.
#[derive(Clone)]
struct Refusal(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut resp = (self.status, body).into_response();
        resp.extensions_mut().insert(Refusal(self.message));
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
/// scanner cannot blow up the series count. A refusal also gets its (rate-limited) log line.
async fn count_requests(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let endpoint = Listener::Intake.endpoints().map(Endpoint::path).find(|p| *p == path).unwrap_or("other");
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let uuid = crate::domain::intake::parse_uuid_param(req.uri().query()).map(|p| p.uuid);
    let post = req.method() == axum::http::Method::POST;
    let mut resp = next.run(req).await;
    // A refused POST's body may be left unread, and then hyper closes the connection after
    // the answer; saying so keeps the client from sending its next request down it.
    if post && resp.status().as_u16() >= 400 {
        resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    let status = resp.status().as_u16();
    crate::events::IntakeAnswered { endpoint, status }.emit();
    if status >= 400 && endpoint != "/ready" && endpoint != "/health" {
        let reason = resp
            .extensions()
            .get::<Refusal>()
            .map_or_else(|| resp.status().canonical_reason().unwrap_or("refused").to_string(), |r| r.0.clone());
        crate::events::IntakeRejected { peer, endpoint, status, reason: &reason, uuid: uuid.as_deref() }.emit();
    }
    resp
}

/// Content-Length and Transfer-Encoding together (see [`framing`]): 400, connection closed.
async fn refuse_ambiguous_framing(req: Request, next: Next) -> Response {
    if req.headers().contains_key(framing::CONFLICT_HEADER) {
        let mut resp = ApiError::bad_request(
            "Content-Length and Transfer-Encoding together: the body's length is ambiguous (request smuggling)",
        )
        .into_response();
        resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

/// Serves `GET /metrics` (Prometheus text format) and the probes until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    probes: Arc<probe::Probes>,
    limits: server::ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = Router::new();
    for e in Listener::Metrics.endpoints() {
        app = match e {
            Endpoint::Metrics => app.route(e.path(), metrics_route(handle.clone())),
            Endpoint::Health | Endpoint::Ready => app.route(e.path(), probe::route(e, probes.clone())),
            other => unreachable!("{other:?} is not served on the metrics listener"),
        };
    }
    server::serve(listener, app, limits, shutdown).await
}

/// `GET /metrics`: `handle`'s Prometheus text exposition (also `cdrmunch ship`'s).
pub fn metrics_route<S: Clone + Send + Sync + 'static>(
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> MethodRouter<S> {
    on(Endpoint::Metrics.filter(), move || {
        let handle = handle.clone();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }
    })
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
    let limits = state.cfg.limits.clone();
    server::serve(listener, router(state), limits, shutdown).await
}
