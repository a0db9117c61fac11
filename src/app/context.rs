//! Settings turned into what the runtime runs with, in one place each: the normalizer's
//! context (the same for `serve`, `normalize` and `replay`, so the CLI never prints
//! something the service would not), the distiller's and tasksd's configs, and the
//! distillery `replay` prepares with.

use std::sync::Arc;
use std::time::Duration;

use super::AppError;
use crate::actors::distillery::{DistillerConfig, Distillery};
use crate::actors::task_executor::TasksConfig;
use crate::actors::Hooks;
use crate::config::Settings;
use crate::domain::mapping::FieldMap;
use crate::domain::normalize::NormalizeContext;
use crate::domain::orgs::OrgDirectory;
use crate::domain::outcome::{Backoff, RetryPolicy};
use crate::domain::rating::RateDeck;
use crate::storage::BlobStore;
use crate::store::Repository;

/// No task retry waits longer than a day, whatever the exponent says.
const MAX_TASK_BACKOFF: Duration = Duration::from_secs(86_400);

/// The normalizer's configuration, read once: task rules, the rate deck (`rating.deck`),
/// the field map (`normalize.field_map`, else the shipped one) and the org directory
/// (`normalize.org_directory`). A bad line in any file stops the start, naming it.
pub fn normalize_context(s: &Settings) -> Result<NormalizeContext, AppError> {
    /// Reads and parses the file a key names, if it names one; a failure names both.
    fn load<T, E: std::fmt::Display>(
        key: &str,
        path: Option<&std::path::Path>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<Arc<T>>, AppError> {
        let Some(path) = path else { return Ok(None) };
        let fail = |e: &dyn std::fmt::Display| AppError::Normalizer(format!("{key} {}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| fail(&e))?;
        parse(&text).map(|v| Some(Arc::new(v))).map_err(|e| fail(&e))
    }
    let rates = load("rating.deck", s.rating.deck.as_deref(), RateDeck::parse)?;
    let field_map = load("normalize.field_map", s.normalize.field_map.as_deref(), FieldMap::parse)?;
    let orgs = load("normalize.org_directory", s.normalize.org_directory.as_deref(), OrgDirectory::parse)?;
    if let (Some(deck), Some(path)) = (&rates, &s.rating.deck) {
        tracing::info!("rate deck {}: {} prefixes", path.display(), deck.len());
    }
    if let (Some(dir), Some(path)) = (&orgs, &s.normalize.org_directory) {
        tracing::info!("org directory {}: {} entries", path.display(), dir.len());
    }
    Ok(NormalizeContext {
        rules: crate::handlers::task_rules(s),
        rates,
        default_country_code: s.rating.default_country_code.clone(),
        field_map,
        orgs,
        ..Default::default()
    })
}

/// The billing feed's decimal columns must be fed by numeric fields: checked against the
/// field map at start, so a mismatch stops the service naming both lines.
pub fn check_billing_types(s: &Settings) -> Result<(), AppError> {
    let bf = &s.billing_feeder;
    let layout = crate::domain::billing::BillingLayout::new(&bf.field_names, &bf.field_types, bf.node_name_map.clone())
        .map_err(|e| AppError::Normalizer(e.to_string()))?;
    let (map, map_at) = match &s.normalize.field_map {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AppError::Normalizer(format!("normalize.field_map {}: {e}", path.display())))?;
            let map = FieldMap::parse(&text)
                .map_err(|e| AppError::Normalizer(format!("normalize.field_map {}: {e}", path.display())))?;
            (map, path.display().to_string())
        }
        None => (FieldMap::default_map(), "the shipped field map (config/field-map.conf)".to_string()),
    };
    layout.check_types(&map, &bf.field_types_at, &map_at).map_err(AppError::Normalizer)
}

/// The distiller's settings; `normalize` is the rules alone (the files are read by
/// [`normalize_context`] where a process needs them).
pub fn distiller_config(s: &Settings) -> DistillerConfig {
    let d = &s.distiller;
    DistillerConfig {
        distilleries: d.number_of_distilleries.max(1),
        poll_interval: d.poll_interval,
        max_batch: d.poll_max_batch_size,
        lease: Duration::from_secs(d.lease_seconds),
        job_timeout: Duration::from_secs(d.job_timeout_seconds),
        backoff: Backoff::exponential(
            Duration::from_secs(d.retry_backoff_seconds),
            Duration::from_secs(d.retry_backoff_max_seconds),
        ),
        poison_threshold: d.poison_threshold,
        prefetch: d.prefetch,
        normalize: NormalizeContext { rules: crate::handlers::task_rules(s), ..Default::default() },
    }
}

pub fn tasks_config(s: &Settings) -> TasksConfig {
    let t = &s.tasksd;
    TasksConfig {
        threads: t.executor_threads.max(1),
        poll_interval: t.poll_interval,
        batch: t.poll_batch_size,
        // renewed while an attempt runs, so it need not outlast tasksd.job_timeout_seconds
        lease: Duration::from_secs(t.lease_seconds),
        job_timeout: Duration::from_secs(t.job_timeout_seconds),
        prefetch: t.prefetch,
        retry: RetryPolicy {
            max_retries: t.max_retries,
            backoff: Backoff {
                base: Duration::from_secs(t.retry_backoff_seconds),
                max: MAX_TASK_BACKOFF,
                exponential: t.exponential_backoff,
            },
        },
    }
}

/// The instance id this process's claims record: `app.instance_id`, else the host name and
/// a hash of what tells two processes on one host apart and stays the same across a restart
/// (data dir, database, listen address, roles), so a restart finds its own claims.
pub fn instance_id(s: &Settings) -> String {
    if let Some(id) = &s.app.instance_id {
        return id.clone();
    }
    use md5::{Digest, Md5};
    let data_dir = crate::config::Dirs::from_env().data_dir;
    let what = format!(
        "{}\n{}\n{}:{}\n{}",
        data_dir.display(),
        s.database.cdrdb_url,
        s.server.address,
        s.server.port,
        s.app.roles.join(",")
    );
    let digest = Md5::digest(what.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let host: String = host_name().chars().take(80).collect();
    format!("{host}/{hash}")
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match rc {
        0 if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "localhost".into(),
    }
}

/// A distillery with the full normalizer context and no group commit: what `replay`
/// prepares CDRs with, exactly as the service would.
pub fn standalone_distillery(
    s: &Settings,
    repo: Arc<dyn Repository>,
    raw_store: Arc<dyn BlobStore>,
    ncdr_store: Arc<dyn BlobStore>,
) -> Result<Distillery, AppError> {
    let config = DistillerConfig { normalize: normalize_context(s)?, ..distiller_config(s) };
    Ok(Distillery { repo, raw_store, ncdr_store, config, hooks: Hooks::default(), committer: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_field_map_fits_the_seeds_billing_layout() {
        let s = Settings::embedded_default(std::path::Path::new("/tmp/cdrmunch-never-written"));
        check_billing_types(&s).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("map.conf");
        std::fs::write(&map, "# mine\nlcr_rate = text: var:lcr_rate\n").unwrap();
        let mut s = s;
        s.normalize.field_map = Some(map.clone());
        s.billing_feeder.field_types_at = "billing-feeder.conf:5".into();
        let err = check_billing_types(&s).unwrap_err().to_string();
        assert!(err.contains("billing-feeder.conf:5") && err.contains(&format!("{}:2", map.display())), "{err}");
    }
}
