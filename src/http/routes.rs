//! Every route the listeners serve, in one table. The routers are built from it and
//! `tests/openapi.rs` holds `deploy/openapi.yaml` to it, so the document cannot quietly miss
//! a route nor describe one that is gone.

use axum::http::Method;
use axum::routing::MethodFilter;

/// A listening socket and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.address:server.port`: intake, the probes and the API document.
    Intake,
    /// `metrics.address:metrics.port`: Prometheus and the probes.
    Metrics,
    /// `cdrmunch ship`'s `ship.metrics_port`: its Prometheus metrics.
    Ship,
}

/// One path and method; the handler is chosen where the listener's router is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Cdr,
    Paging,
    Pcap,
    Health,
    Ready,
    OpenApi,
    Metrics,
}

impl Endpoint {
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Cdr => "/api/v2/cdr",
            Endpoint::Paging => "/api/v2/paging",
            Endpoint::Pcap => "/api/v2/pcap",
            Endpoint::Health => "/health",
            Endpoint::Ready => "/ready",
            Endpoint::OpenApi => "/openapi.json",
            Endpoint::Metrics => "/metrics",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Endpoint::Cdr | Endpoint::Paging | Endpoint::Pcap => Method::POST,
            Endpoint::Health | Endpoint::Ready | Endpoint::OpenApi | Endpoint::Metrics => Method::GET,
        }
    }

    /// The method as axum's routing takes it.
    pub fn filter(self) -> MethodFilter {
        MethodFilter::try_from(self.method()).expect("GET and POST are standard methods")
    }
}

/// Which listener serves which endpoint. Without the intake role the three API endpoints
/// are still routed, to a 404 saying so (`/api/v2/{*endpoint}`).
pub const ROUTES: &[(Listener, Endpoint)] = &[
    (Listener::Intake, Endpoint::Cdr),
    (Listener::Intake, Endpoint::Paging),
    (Listener::Intake, Endpoint::Pcap),
    (Listener::Intake, Endpoint::Health),
    (Listener::Intake, Endpoint::Ready),
    (Listener::Intake, Endpoint::OpenApi),
    (Listener::Metrics, Endpoint::Metrics),
    (Listener::Metrics, Endpoint::Health),
    (Listener::Metrics, Endpoint::Ready),
    (Listener::Ship, Endpoint::Metrics),
];

impl Listener {
    /// The endpoints this listener serves, in table order.
    pub fn endpoints(self) -> impl Iterator<Item = Endpoint> {
        ROUTES.iter().filter(move |(l, _)| *l == self).map(|(_, e)| *e)
    }
}
