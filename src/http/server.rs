//! The intake's own accept loop over hyper, instead of `axum::serve`, because FreeSWITCH
//! hosts and whatever else can reach the port must not be able to hold the server:
//!
//! - headers must arrive within `server.header_read_timeout` (hyper's timer, which also
//!   runs while a kept-alive connection waits for its next request);
//! - a connection with no request in progress is closed after `server.keepalive_timeout`;
//! - at most `server.max_connections` are open, below the file-descriptor limit; when a new
//!   connection arrives at the cap, the connection idle the longest (no request in progress:
//!   waiting for headers or kept alive) is closed to make room, so a flood of slow or idle
//!   connections cannot lock out `/health` and real POSTs. When every connection is busy the
//!   newcomer gets a 503 and is closed;
//! - HTTP/1 only unless `server.http2 = true` (a dependency turns hyper's HTTP/2 on);
//! - framing ambiguity (Content-Length and Transfer-Encoding together) is caught below hyper
//!   ([`super::framing`]) and refused with a 400.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tower::ServiceExt;

use super::framing::FramingGuard;

/// How the listener treats connections (`server.*`).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
    pub http2: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(15),
            max_connections: 768,
            http2: false,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a default 1024 is too few for a busy
/// intake) and returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// `server.max_connections = 0`: three quarters of the descriptor limit, leaving the rest
/// for database connections, files being written and the metrics listener.
pub fn default_max_connections(nofile: u64) -> usize {
    (nofile.saturating_mul(3) / 4).clamp(16, 65_536) as usize
}

/// One open connection, as the eviction policy sees it.
struct Conn {
    /// Requests in progress on this connection.
    busy: AtomicU32,
    /// Milliseconds since the server started, when the last request ended (or it connected).
    last_active: AtomicU64,
    /// Set to ask the connection to close.
    close: watch::Sender<bool>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

/// Marks a request in progress; dropped (answered, or the connection gone) it stamps the
/// connection's activity, so keep-alive is counted from the end of the last request.
struct BusyGuard {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.conn.last_active.store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.conn.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; open requests finish first (the
/// caller bounds how long it waits).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let epoch = Instant::now();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: the connections already open are served; back off
                    // briefly instead of spinning on the error
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let Some((id, conn)) = admit(&registry, &limits, epoch) else {
            tasks.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, registry, stop_rx) = (app.clone(), limits.clone(), registry.clone(), stop_rx.clone());
        tasks.spawn(async move {
            serve_connection(stream, peer, app, &limits, conn, epoch, stop_rx).await;
            registry.lock().expect("registry").conns.remove(&id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Registers a new connection, closing the longest-idle one first when at the cap; `None`
/// when every open connection has a request in progress.
fn admit(registry: &Mutex<Registry>, limits: &ServerLimits, epoch: Instant) -> Option<(u64, Arc<Conn>)> {
    let mut reg = registry.lock().expect("registry");
    if reg.conns.len() >= limits.max_connections {
        let idle = reg
            .conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::SeqCst) == 0 && !*c.close.borrow())
            .min_by_key(|(_, c)| c.last_active.load(Ordering::SeqCst))
            .map(|(id, c)| (*id, c.clone()));
        let (victim_id, victim) = idle?;
        let _ = victim.close.send(true);
        // its task removes it when it ends; it no longer counts against the cap
        reg.conns.remove(&victim_id);
        crate::events::ConnectionEvicted.emit();
    }
    reg.next_id += 1;
    let id = reg.next_id;
    let now = epoch.elapsed().as_millis() as u64;
    let (close, _) = watch::channel(false);
    let conn = Arc::new(Conn { busy: AtomicU32::new(0), last_active: AtomicU64::new(now), close });
    reg.conns.insert(id, conn.clone());
    Some((id, conn))
}

/// Every connection is busy with a request: a short 503 (FreeSWITCH retries) and close.
async fn refuse(mut stream: tokio::net::TcpStream) {
    crate::events::ConnectionRefused.emit();
    let body = r#"{"error":"too many connections in progress; try again shortly"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(resp.as_bytes())).await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &ServerLimits,
    conn: Arc<Conn>,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut evicted = conn.close.subscribe();
    let io = TokioIo::new(FramingGuard::new(stream));
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        svc_conn.busy.fetch_add(1, Ordering::SeqCst);
        let guard = BusyGuard { conn: svc_conn.clone(), epoch };
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(guard);
            Ok::<_, Infallible>(resp.unwrap_or_else(|e| match e {}))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(256 * 1024);
    let builder = if limits.http2 { builder } else { builder.http1_only() };
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let keepalive = limits.keepalive_timeout;
    let mut closing = false;
    // while a request runs past the idle deadline, look again a keep-alive later rather than
    // wake at once on a deadline already passed
    let mut busy_until = tokio::time::Instant::now();
    loop {
        let idle_deadline = {
            let last = Duration::from_millis(conn.last_active.load(Ordering::SeqCst));
            tokio::time::Instant::from_std(epoch + last + keepalive).max(busy_until)
        };
        tokio::select! {
            _ = served.as_mut() => return,
            _ = stop.changed(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            _ = evicted.changed(), if !closing => {
                // nothing in progress: close now rather than wait for the peer
                if conn.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_deadline), if !closing => {
                let idle_for = epoch.elapsed().saturating_sub(Duration::from_millis(conn.last_active.load(Ordering::SeqCst)));
                if conn.busy.load(Ordering::SeqCst) == 0 && idle_for >= keepalive {
                    return;
                }
                if conn.busy.load(Ordering::SeqCst) > 0 {
                    busy_until = tokio::time::Instant::now() + keepalive;
                }
            }
        }
    }
}
