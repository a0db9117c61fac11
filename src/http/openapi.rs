//! `GET /openapi.json`: `deploy/openapi.yaml`, converted to JSON by `build.rs`, so a
//! malformed document fails the build instead of a request, and the binary carries no YAML
//! parser.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI 3.1 document of every listener's routes, as served.
pub const DOCUMENT: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

pub(super) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
