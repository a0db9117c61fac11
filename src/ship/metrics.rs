//! The shipper's own Prometheus `/metrics` (names in `telemetry`, values from the `Ship*`
//! events), on a small listener of its own: the host runs no cdrmunch service to add them to.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;

/// Binds `addr` and serves `/metrics` until the task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], handle.render()) }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics listener stopped: {e}");
        }
    });
    Ok((bound, task))
}
