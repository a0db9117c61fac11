//! `cdrmunch serve`: logging, pid file, the app, and the signals that stop it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};

use super::{load_settings_quietly, ConfigArgs};
use crate::actors::Hooks;
use crate::app::App;

pub(super) async fn serve(cfg: ConfigArgs, drain: Duration, roles: Option<Vec<String>>) -> anyhow::Result<ExitCode> {
    // First, before any listener is bound: a signal's default action kills the process, so
    // a SIGTERM the moment /health answers (an orchestrator's quick stop) would exit 143
    // without draining. Caught from here on, one arriving during start-up stops it cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (mut settings, source, warnings) = load_settings_quietly(&cfg)?;
    if let Some(roles) = roles {
        if let Some(bad) = roles.iter().find(|r| !crate::config::ROLES.contains(&r.as_str())) {
            bail!("--roles: unknown role '{bad}' (roles: intake, distiller, tasks)");
        }
        if roles.is_empty() {
            bail!("--roles: name at least one of intake, distiller, tasks");
        }
        settings.app.roles = roles;
    }
    let target = match (&settings.log.facility, &settings.log.file) {
        (Some(f), _) => crate::logging::Target::Syslog {
            facility: crate::logging::facility_code(f).with_context(|| {
                format!("log.facility '{f}' is not a syslog facility (daemon, local0 .. local7, ...)")
            })?,
            socket: settings.log.syslog_socket.clone(),
        },
        (None, Some(file)) => crate::logging::Target::File(file.clone()),
        (None, None) => crate::logging::Target::Stdout,
    };
    let reopen = crate::logging::init_service(settings.log.level, &target).map_err(anyhow::Error::msg)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let _pid_file = match &settings.app.pid_file {
        Some(path) => Some(crate::process::PidFile::acquire(path)?),
        None => None,
    };
    tracing::info!(
        "cdrmunch {} starting with {source}{}; roles {}",
        env!("CARGO_PKG_VERSION"),
        cfg.env.as_deref().map(|e| format!(", env {e}")).unwrap_or_default(),
        settings.app.roles.join(",")
    );
    tracing::info!(
        "database {}; raw CDRs in {}; normalized CDRs in {}; {} distilleries",
        crate::store::redact_url(&settings.database.cdrdb_url),
        settings.request_handler.cdr_base_dir.display(),
        settings.distiller.normalized_cdr_base_dir.display(),
        settings.distiller.number_of_distilleries
    );
    let mut app = App::start(&settings, Hooks::default()).await?;
    tracing::info!(
        "listening on http://{} (POST /api/v2/cdr, /api/v2/paging, /api/v2/pcap; GET /health, /ready)",
        app.addr
    );
    if let Some(m) = app.metrics_addr {
        tracing::info!("Prometheus metrics on http://{m}/metrics");
    }
    // Listeners bound, database open, actors started: a Type=notify unit is up now.
    crate::sd_notify::notify(crate::sd_notify::READY);
    let fatal = loop {
        tokio::select! {
            _ = int.recv() => break false,
            _ = term.recv() => break false,
            _ = app.tree_stopped() => break true,
            _ = hup.recv() => match reopen.reopen() {
                Ok(()) => tracing::info!("SIGHUP: log file reopened"),
                Err(e) => eprintln!("cdrmunch: SIGHUP: cannot reopen the log file: {e}"),
            },
        }
    };
    crate::sd_notify::notify(crate::sd_notify::STOPPING);
    if fatal {
        tracing::error!("supervision tree stopped after repeated failures; exiting");
        app.shutdown(drain).await;
        return Ok(ExitCode::from(1));
    }
    tracing::info!("stopping: no new requests; finishing in-flight CDRs (up to {}s)", drain.as_secs());
    app.shutdown(drain).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
