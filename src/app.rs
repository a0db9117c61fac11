//! One running cdrmunch: database, stores, the supervision tree and the HTTP listener.
//! `main` and the integration tests start it the same way (tests on port 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

use crate::actors::distillery::DistilleryContext;
use crate::actors::task_executor::{TaskContext, TasksConfig};
use crate::actors::{DistillerConfig, Hooks};
use crate::config::Settings;
use crate::domain::mapping::FieldMap;
use crate::domain::normalize::NormalizeContext;
use crate::domain::orgs::OrgDirectory;
use crate::domain::rating::RateDeck;
use crate::domain::tasks::{RetryPolicy, TaskType};
use crate::http::probe::Probes;
use crate::http::{HttpConfig, HttpState};
use crate::storage::BlobStore;
use crate::store::{self, Repository, StoreError};
use crate::supervisors::root::{RootArgs, RootMsg, RootSupervisor};

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
    pub repo: Arc<dyn Repository>,
    pub instance: String,
    root: ActorRef<RootMsg>,
    root_done: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_http: Option<oneshot::Sender<()>>,
    metrics_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Opens (and migrates) the CDR database named by the settings.
pub async fn open_repository(settings: &Settings) -> Result<Arc<dyn Repository>, StoreError> {
    let repo = store::connect(&settings.database.cdrdb_url, settings.database.cdrdb_max_connections).await?;
    repo.migrate().await?;
    Ok(repo)
}

/// The normalizer's configuration, read once at start: task rules, the rate deck
/// (`rating.deck`), the field map (`normalize.field_map`, else the shipped one) and the org
/// directory (`normalize.org_directory`). A bad line in any file stops the start, naming it.
pub fn normalize_context(s: &Settings) -> Result<NormalizeContext, AppError> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| AppError::Normalizer(format!("{what} {}: {e}", path.display())))
    };
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        AppError::Normalizer(format!("{what} {}: {e}", path.display()))
    };
    let rates = match &s.rating.deck {
        Some(path) => {
            let deck = RateDeck::parse(&read("rating.deck", path)?).map_err(|e| bad("rating.deck", path, &e))?;
            tracing::info!("rate deck {}: {} prefixes", path.display(), deck.len());
            Some(Arc::new(deck))
        }
        None => None,
    };
    let field_map = match &s.normalize.field_map {
        Some(path) => Some(Arc::new(
            FieldMap::parse(&read("normalize.field_map", path)?).map_err(|e| bad("normalize.field_map", path, &e))?,
        )),
        None => None,
    };
    let orgs = match &s.normalize.org_directory {
        Some(path) => {
            let dir = OrgDirectory::parse(&read("normalize.org_directory", path)?)
                .map_err(|e| bad("normalize.org_directory", path, &e))?;
            tracing::info!("org directory {}: {} entries", path.display(), dir.len());
            Some(Arc::new(dir))
        }
        None => None,
    };
    Ok(NormalizeContext {
        rules: crate::handlers::task_rules(s),
        rates,
        default_country_code: s.rating.default_country_code.clone(),
        field_map,
        orgs,
        ..Default::default()
    })
}

pub fn distiller_config(s: &Settings) -> DistillerConfig {
    let d = &s.distiller;
    DistillerConfig {
        distilleries: d.number_of_distilleries,
        poll_interval: d.poll_interval,
        max_batch: d.poll_max_batch_size,
        lease: Duration::from_secs(d.lease_seconds),
        job_timeout: Duration::from_secs(d.job_timeout_seconds),
        retry_backoff_base: d.retry_backoff_seconds,
        retry_backoff_max: d.retry_backoff_max_seconds,
        poison_threshold: d.poison_threshold,
        prefetch: d.prefetch,
        // the files are read by `normalize_context` at start; this is the same without them
        normalize: NormalizeContext { rules: crate::handlers::task_rules(s), ..Default::default() },
    }
}

pub fn tasks_config(s: &Settings) -> TasksConfig {
    let t = &s.tasksd;
    TasksConfig {
        threads: t.executor_threads.max(1),
        poll_interval: t.poll_interval,
        batch: t.poll_batch_size,
        // an attempt still running must never be claimed again
        lease: Duration::from_secs(t.lease_seconds.max(t.job_timeout_seconds + 5)),
        job_timeout: Duration::from_secs(t.job_timeout_seconds),
        prefetch: t.prefetch,
        retry: RetryPolicy {
            max_retries: t.max_retries,
            backoff_seconds: t.retry_backoff_seconds,
            exponential: t.exponential_backoff,
        },
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
        let repo = open_repository(settings).await?;
        Self::start_on(settings, hooks, repo, listeners).await
    }

    /// Starts on an already opened repository (tests wrap it to inject faults).
    pub async fn start_with_repository(
        settings: &Settings,
        hooks: Hooks,
        repo: Arc<dyn Repository>,
    ) -> Result<App, AppError> {
        let listeners = bind(settings).await?;
        Self::start_on(settings, hooks, repo, listeners).await
    }

    async fn start_on(
        settings: &Settings,
        hooks: Hooks,
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
        let instance = uuid::Uuid::new_v4().simple().to_string();
        if roles.distiller || roles.tasks {
            log_off_types(settings);
        }
        // only a tasks process connects to the sinks (the billing database among them)
        let handlers = match roles.tasks {
            true => crate::handlers::build(settings, repo.clone()).await?,
            false => Default::default(),
        };
        let tasks = Arc::new(TaskContext {
            instance: instance.clone(),
            repo: repo.clone(),
            ncdr_store: ncdr_store.clone(),
            handlers,
            config: tasks_config(settings),
            hooks: hooks.clone(),
            draining: Default::default(),
        });

        let ctx = Arc::new(DistilleryContext {
            instance: instance.clone(),
            repo: repo.clone(),
            raw_store: raw_store.clone(),
            ncdr_store: ncdr_store.clone(),
            config: DistillerConfig { normalize: normalize_context(settings)?, ..distiller_config(settings) },
            hooks,
        });
        let root_args = RootArgs {
            repo: repo.clone(),
            raw_store: raw_store.clone(),
            instance: instance.clone(),
            intake_batch: rh.group_commit_max,
            intake: roles.intake,
            distillery: roles.distiller.then_some(ctx),
            tasks: roles.tasks.then_some(tasks),
        };
        let (root, root_handle) =
            Actor::spawn(None, RootSupervisor, root_args).await.map_err(|e| AppError::Spawn(e.to_string()))?;
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
        });

        let listener = listeners.http;
        let addr = listener.local_addr().map_err(|source| AppError::Bind { addr: "http".into(), source })?;
        let http = Arc::new(HttpState {
            instance: instance.clone(),
            repo: repo.clone(),
            raw_store,
            cfg: HttpConfig {
                basic_auth: settings.server.basic_auth.as_ref().map(|b| (b.user.clone(), b.password.clone())),
                max_content_length: settings.server.max_content_length,
                max_cdr_size: rh.max_cdr_size,
                cdr_queue_enabled: rh.cdr_queue_enabled,
                paging_dir: rh.paging_base_dir.clone(),
                pcap_dir: rh.pcap_base_dir.clone(),
                commit_timeout: Duration::from_secs(30),
            },
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
                let server = tokio::spawn(crate::http::serve_metrics(listener, handle, probes, std::future::pending()));
                (Some(addr), Some(server))
            }
            None => (None, None),
        };
        Ok(App {
            addr,
            metrics_addr,
            repo,
            instance,
            root,
            root_done,
            server,
            stop_http: Some(stop_http),
            metrics_server,
        })
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
            let _ = self.root.call(|r| RootMsg::Shutdown(drain, r), Some(drain + Duration::from_secs(20))).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.root_done).await;
        if let Some(m) = self.metrics_server.take() {
            m.abort();
        }
    }
}
