//! One running cdrmunch: database, stores, the supervision tree and the HTTP listener.
//! `main` and the integration tests start it the same way (tests on port 0).

mod context;
pub mod sweep;
pub mod tree;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

pub use context::{
    check_billing_types, distiller_config, instance_id, normalize_context, standalone_distillery, tasks_config,
};

use crate::actors::distillery::DistillerConfig;
use crate::actors::mailbox::Mailbox;
use crate::actors::supervisor::{Supervisor, SupervisorMsg};
use crate::actors::task_executor::TaskContext;
use crate::actors::Hooks;
use crate::config::Settings;
use crate::domain::cdr::ParseLimits;
use crate::domain::tasks::TaskType;
use crate::http::probe::Probes;
use crate::http::server::{default_max_connections, raise_nofile_limit, ServerLimits};
use crate::http::{HttpConfig, HttpState};
use crate::storage::BlobStore;
use crate::store::{Claimant, Repository, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot use directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("actor system failed to start: {0}")]
    Spawn(String),
    #[error("{0}")]
    Handler(#[from] crate::handlers::SetupError),
    #[error("{0}")]
    Privileges(String),
    #[error("{0}")]
    Normalizer(String),
}

pub struct App {
    pub addr: SocketAddr,
    /// Where `/metrics` is served; None with `metrics.enabled = false`.
    pub metrics_addr: Option<SocketAddr>,
    /// The database as the pipeline sees it (a test may have put a fault injector in front).
    pub repo: Arc<dyn Repository>,
    /// The database itself, for inspection.
    pub store: Store,
    root: ActorRef<SupervisorMsg>,
    root_done: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_http: Option<oneshot::Sender<()>>,
    metrics_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Opens (and migrates) the CDR database named by the settings; its claims are made as
/// this instance (`app.instance_id`) in a fresh boot.
pub async fn open_repository(settings: &Settings) -> Result<Store, StoreError> {
    let store = Store::connect(&settings.database.cdrdb_url, settings.database.cdrdb_max_connections).await?;
    store.migrate().await?;
    let shard = store.resolve_shard(settings.distiller.shard).await?;
    Ok(store.claiming_as(Claimant::new(&instance_id(settings))).sharded(shard))
}

/// The heartbeat of a process that claims work: every sixth of the takeover delay (0.5 to
/// 5 s), and a sharded process claims its own rows only after two beats and a second, by
/// when a process that took them over while it was away has seen it back.
fn heartbeat_plan(settings: &Settings, store: &Store) -> tree::HeartbeatPlan {
    let takeover = settings.distiller.takeover_seconds;
    let interval = match takeover {
        0 => Duration::from_secs(5),
        t => Duration::from_secs(t).div_f64(6.0).clamp(Duration::from_millis(500), Duration::from_secs(5)),
    };
    let roles: Vec<&str> = settings.app.roles.iter().map(String::as_str).collect();
    if let Some(shard) = store.shard_filter().shard() {
        tracing::info!(
            %shard,
            "claims sharded: this process claims ids with id % {} = {}; silent shards taken over after {}",
            shard.increment,
            shard.residue,
            if takeover == 0 { "never".to_string() } else { format!("{takeover} s") }
        );
    }
    tree::HeartbeatPlan {
        roles: roles.join(","),
        interval,
        takeover: (takeover > 0).then(|| Duration::from_secs(takeover)),
        settle: interval * 2 + Duration::from_secs(1),
        instance: store.claimant().instance.clone(),
    }
}

/// Says once, at start, which task types are off and why: one line for the unconfigured
/// handlers (a warning), one for the types turned off on purpose.
fn log_off_types(s: &Settings) {
    let (on_purpose, unconfigured): (Vec<_>, Vec<_>) =
        crate::handlers::off_types(s).into_iter().partition(|(_, why)| why.on_purpose());
    let list = |v: &[(TaskType, crate::handlers::Off)]| {
        v.iter().map(|(t, why)| format!("{t} ({why})")).collect::<Vec<_>>().join(", ")
    };
    if !unconfigured.is_empty() {
        tracing::warn!(
            "task types off, their handlers are not configured (no such tasks are created): {}",
            list(&unconfigured)
        );
    }
    if !on_purpose.is_empty() {
        tracing::info!("task types off: {}", list(&on_purpose));
    }
}

/// The roles of `app.roles` / `serve --roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub intake: bool,
    pub distiller: bool,
    pub tasks: bool,
}

impl Roles {
    pub fn of(names: &[String]) -> Roles {
        let has = |r: &str| names.iter().any(|n| n == r);
        Roles { intake: has("intake"), distiller: has("distiller"), tasks: has("tasks") }
    }
}

/// The sockets a process listens on, bound before anything else so a low port can be taken
/// as root before the privileges are dropped.
pub struct Listeners {
    pub http: tokio::net::TcpListener,
    pub metrics: Option<tokio::net::TcpListener>,
}

async fn bind_one(address: &str, port: u16) -> Result<tokio::net::TcpListener, AppError> {
    let addr = format!("{address}:{port}");
    tokio::net::TcpListener::bind(&addr).await.map_err(|source| AppError::Bind { addr, source })
}

pub async fn bind(settings: &Settings) -> Result<Listeners, AppError> {
    let http = bind_one(&settings.server.address, settings.server.port).await?;
    let metrics = match settings.metrics.enabled {
        true => Some(bind_one(&settings.metrics.address, settings.metrics.port).await?),
        false => None,
    };
    Ok(Listeners { http, metrics })
}

impl App {
    /// Binds, drops privileges (`app.run_as_user`/`run_as_group`), opens the database, starts.
    pub async fn start(settings: &Settings, hooks: Hooks) -> Result<App, AppError> {
        let listeners = bind(settings).await?;
        crate::process::drop_privileges(settings.app.run_as_user.as_deref(), settings.app.run_as_group.as_deref())
            .map_err(AppError::Privileges)?;
        let store = open_repository(settings).await?;
        let repo: Arc<dyn Repository> = Arc::new(store.clone());
        Self::start_on(settings, hooks, store, repo, listeners).await
    }

    /// Starts on an opened database, the pipeline going through `repo` (tests put a
    /// fault-injecting repository in front of the store).
    pub async fn start_with_repository(
        settings: &Settings,
        hooks: Hooks,
        store: Store,
        repo: Arc<dyn Repository>,
    ) -> Result<App, AppError> {
        let listeners = bind(settings).await?;
        Self::start_on(settings, hooks, store, repo, listeners).await
    }

    async fn start_on(
        settings: &Settings,
        hooks: Hooks,
        store: Store,
        repo: Arc<dyn Repository>,
        listeners: Listeners,
    ) -> Result<App, AppError> {
        let roles = Roles::of(&settings.app.roles);
        let rh = &settings.request_handler;
        for dir in [&rh.paging_base_dir, &rh.pcap_base_dir] {
            std::fs::create_dir_all(dir).map_err(|source| AppError::Dir { dir: dir.display().to_string(), source })?;
        }
        // Either may be s3://bucket/prefix; S3 objects are durable on PUT.
        let open = |target: &std::path::Path| {
            let target = target.to_string_lossy().into_owned();
            async move {
                crate::storage::open(&target, &settings.s3)
                    .await
                    .map_err(|e| AppError::Dir { dir: target.clone(), source: std::io::Error::other(e.to_string()) })
            }
        };
        let raw_store: Arc<dyn BlobStore> = open(&rh.cdr_base_dir).await?;
        let ncdr_store: Arc<dyn BlobStore> = open(&settings.distiller.normalized_cdr_base_dir).await?;
        if roles.distiller || roles.tasks {
            check_billing_types(settings)?;
            log_off_types(settings);
        }
        // only a tasks process connects to the sinks (the billing database among them)
        let tasks = match roles.tasks {
            true => Some(Arc::new(TaskContext {
                repo: repo.clone(),
                ncdr_store: ncdr_store.clone(),
                handlers: crate::handlers::build(settings, &store).await?,
                config: tasks_config(settings),
                hooks: hooks.clone(),
            })),
            false => None,
        };
        let distiller = match roles.distiller {
            true => Some(DistillerConfig { normalize: normalize_context(settings)?, ..distiller_config(settings) }),
            false => None,
        };
        // killed before: what this instance held is due now, not when its leases end
        if roles.distiller || roles.tasks {
            let taken = store.take_back_claims(roles.distiller, roles.tasks, chrono::Utc::now()).await?;
            let c = store.claimant();
            tracing::info!(instance = %c.instance, boot = %c.boot, "took back {} cdr_queue and {} task claims of this instance's previous run", taken.cdrs, taken.tasks);
        }
        // the spool is local whatever the raw store is: it must work when nothing else does
        let spool = match roles.intake && rh.spool_max_rows > 0 {
            true => Some(Arc::new(crate::spool::Spool::open(&rh.spool_dir, rh.spool_max_rows).map_err(|e| {
                AppError::Dir { dir: rh.spool_dir.display().to_string(), source: std::io::Error::other(e) }
            })?)),
            false => None,
        };
        if roles.intake && !rh.cdr_base_dir.to_string_lossy().starts_with("s3://") {
            let (store, root) = (store.clone(), rh.cdr_base_dir.clone());
            let uploads = vec![rh.paging_base_dir.clone(), rh.pcap_base_dir.clone()];
            // a file whose row waits in the spool is not an orphan
            let spooled = spool.as_ref().map(|s| s.paths()).unwrap_or_default();
            tokio::spawn(async move { sweep::sweep(&store, &root, &uploads, &spooled, sweep::SETTLE).await });
        }
        let heartbeat = (roles.distiller || roles.tasks).then(|| heartbeat_plan(settings, &store));
        let intake_commit = Mailbox::new("intake");
        let spec = tree::root(tree::Parts {
            store: store.clone(),
            repo: repo.clone(),
            raw_store: raw_store.clone(),
            ncdr_store: ncdr_store.clone(),
            intake_batch: rh.group_commit_max,
            spool: spool.clone(),
            intake_db_timeout: settings.server.answer_timeout / 2,
            intake: roles.intake.then(|| intake_commit.clone()),
            distiller,
            tasks,
            heartbeat,
            hooks,
        });
        let (root, root_handle) =
            Actor::spawn(None, Supervisor, Arc::new(spec)).await.map_err(|e| AppError::Spawn(e.to_string()))?;
        let tree_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let alive = tree_alive.clone();
        let root_done = tokio::spawn(async move {
            let _ = root_handle.await;
            alive.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        let probes = Arc::new(Probes {
            tree_alive,
            roles: settings.app.roles.join(","),
            repo: repo.clone(),
            stores: vec![
                ("raw_storage", rh.cdr_base_dir.display().to_string(), raw_store.clone()),
                ("normalized_storage", settings.distiller.normalized_cdr_base_dir.display().to_string(), ncdr_store),
            ],
            spool: spool.clone(),
        });

        let listener = listeners.http;
        let addr = listener.local_addr().map_err(|source| AppError::Bind { addr: "http".into(), source })?;
        let srv = &settings.server;
        let limits = ServerLimits {
            header_read_timeout: srv.header_read_timeout,
            keepalive_timeout: srv.keepalive_timeout,
            max_connections: match srv.max_connections {
                0 => default_max_connections(raise_nofile_limit()),
                n => n as usize,
            },
            http2: srv.http2,
        };
        let cfg = HttpConfig {
            basic_auth: settings.server.basic_auth.as_ref().map(|b| (b.user.clone(), b.password.clone())),
            max_content_length: settings.server.max_content_length,
            max_cdr_size: rh.max_cdr_size,
            cdr_queue_enabled: rh.cdr_queue_enabled,
            paging_dir: rh.paging_base_dir.clone(),
            pcap_dir: rh.pcap_base_dir.clone(),
            answer_timeout: settings.server.answer_timeout,
            body_idle_timeout: srv.body_idle_timeout,
            parse_limits: ParseLimits {
                max_elements: rh.max_cdr_elements,
                max_variables: rh.max_cdr_variables,
                max_callflows: rh.max_cdr_callflows,
            },
            parse_memory: rh.parse_memory,
            limits: limits.clone(),
        };
        let http = Arc::new(HttpState {
            intake_commit,
            raw_store,
            parse_budget: HttpState::parse_budget(&cfg),
            store: store.clone(),
            cfg,
            probes: probes.clone(),
            intake: roles.intake,
        });
        let (stop_http, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::serve(listener, http, async move {
            let _ = stopped.await;
        }));
        let (metrics_addr, metrics_server) = match listeners.metrics {
            Some(listener) => {
                let handle = crate::telemetry::install();
                let addr = listener.local_addr().map_err(|source| AppError::Bind { addr: "metrics".into(), source })?;
                // Lives until the App is dropped or shut down, so scrapes still work while draining.
                let server =
                    tokio::spawn(crate::http::serve_metrics(listener, handle, probes, limits, std::future::pending()));
                (Some(addr), Some(server))
            }
            None => (None, None),
        };
        Ok(App { addr, metrics_addr, repo, store, root, root_done, server, stop_http: Some(stop_http), metrics_server })
    }

    /// Resolves when the supervision tree has stopped on its own (restart intensity exceeded).
    pub async fn tree_stopped(&mut self) {
        let _ = (&mut self.root_done).await;
    }

    pub fn tree_alive(&self) -> bool {
        !self.root_done.is_finished()
    }

    /// Orderly stop: close the listener and let in-flight requests finish, then drain the
    /// distilleries (up to `drain`) and flush intake. Claimed rows not started are released.
    pub async fn shutdown(mut self, drain: Duration) {
        if let Some(tx) = self.stop_http.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(drain + Duration::from_secs(5), &mut self.server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(_) => {
                tracing::warn!("HTTP requests still open after {drain:?}; closing them");
                self.server.abort();
            }
            _ => {}
        }
        if self.tree_alive() {
            let deadline = Instant::now() + drain;
            let _ =
                self.root.call(|r| SupervisorMsg::Shutdown(deadline, r), Some(drain + Duration::from_secs(20))).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.root_done).await;
        if let Some(m) = self.metrics_server.take() {
            m.abort();
        }
    }
}
