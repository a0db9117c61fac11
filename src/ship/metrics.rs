//! The shipper's own Prometheus `/metrics` (names in `telemetry`, values from the `Ship*`
//! events), on a small listener of its own: the host runs no cdrmunch service to add them to.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::http::routes::{Endpoint, Listener};

/// Binds `addr` and serves `/metrics` until the task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut app = axum::Router::new();
    for e in Listener::Ship.endpoints() {
        app = match e {
            Endpoint::Metrics => app.route(e.path(), crate::http::metrics_route(handle.clone())),
            other => unreachable!("{other:?} is not served by the shipper"),
        };
    }
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics listener stopped: {e}");
        }
    });
    Ok((bound, task))
}
