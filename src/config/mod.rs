//! cdrmunch configuration: `key = value` files with `key@ENV` overrides, `@require`
//! includes and `${NAME}` environment references ([`RawConfig`]), checked against one
//! key registry ([`describe_keys`]) into typed [`Settings`].
//!
//! Bad values are errors (a service must not start half-configured); unknown
//! or unused keys are returned as [`ConfigWarning`]s for the caller to log,
//! because this module does no logging itself.

mod cluster_keys;
mod keys;
mod raw;
mod sections;
mod ship_keys;
#[cfg(test)]
mod tests;
mod vars;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use keys::{describe_keys, ENCODINGS, ROLES, TASK_TYPES};
use keys::{FromParsed, Usage};
pub use raw::RawConfig;
pub use sections::*;

/// A line of a config file, so every message can point at it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why a config could not be loaded. Every variant but `Io` names the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config error at {location}: {message}")]
    Syntax { location: Location, message: String },
    #[error("config error at {location}: @require = '{target}': {reason}")]
    Require { location: Location, target: String, reason: String },
    #[error("config error at {location}: {key} = '{value}': expected {expected}")]
    Value { location: Location, key: String, value: String, expected: String },
    #[error(
        "config error at {location}: {key} uses the environment variable {name}, which is not set \
         (set it, or give a default: ${{{name}:-default}})"
    )]
    UnsetVar { location: Location, key: String, name: String },
}

impl ConfigError {
    /// The offending line, if the error has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { location, .. }
            | ConfigError::Require { location, .. }
            | ConfigError::Value { location, .. }
            | ConfigError::UnsetVar { location, .. } => Some(location),
        }
    }
}

/// Something worth telling the operator that does not stop the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// The service's directories, from the environment so packages and tests can
/// relocate them without a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Dirs {
    /// `CDRMUNCH_{CONFIG,DATA,LOG,RUN}_DIR`; unset or empty takes the default.
    pub fn from_env() -> Dirs {
        Self::from_vars(|name| std::env::var_os(name))
    }

    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Dirs {
        let dir = |name: &str, default: &str| {
            var(name).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Dirs {
            config_dir: dir("CDRMUNCH_CONFIG_DIR", "/etc/cdrmunch"),
            data_dir: dir("CDRMUNCH_DATA_DIR", "/data/CDRMunch"),
            log_dir: dir("CDRMUNCH_LOG_DIR", "/var/log/cdrmunch"),
            run_dir: dir("CDRMUNCH_RUN_DIR", "/var/run/cdrmunch"),
        }
    }
}

/// What `cdrmunch serve` runs with when given no config: a self-contained
/// layout under one data directory, reachable only from this host.
const EMBEDDED: &[(&str, &str)] = &[
    ("server.address", "127.0.0.1"),
    ("server.port", "8080"),
    ("cdrdb.url", "sqlite://{data_dir}/cdrmunch.db"),
    ("billingdb.url", "sqlite://{data_dir}/billing.db"),
    ("cdr_base_dir", "{data_dir}/cdr"),
    ("request_handler.cdr_base_dir", "{data_dir}/cdr"),
    ("request_handler.paging_base_dir", "{data_dir}/paging"),
    ("request_handler.pcap_base_dir", "{data_dir}/pcap"),
    ("request_handler.spool_dir", "{data_dir}/spool"),
    ("normalized_cdr_base_dir", "{data_dir}/ncdr"),
    ("log.level", "4"),
    // Each distillery waits for its group commit, so the pool size is also the largest
    // commit batch: 16 keeps an embedded box's disk busy without a config file.
    ("distiller.number_of_distilleries", "16"),
];

impl Settings {
    /// Settings from a config file: every key not set takes its seed default.
    /// Errors on the first bad value; unknown and unused keys become warnings.
    pub fn from_raw(raw: &RawConfig, dirs: &Dirs) -> Result<(Settings, Vec<ConfigWarning>), ConfigError> {
        let mut warnings = Vec::new();
        let mut warn =
            |location: &Location, message: String| warnings.push(ConfigWarning { location: location.clone(), message });
        for (key, at) in &raw.inactive {
            let base = key.split('@').next().unwrap_or(key);
            if keys::lookup(base).is_none() {
                warn(at, format!("unknown key '{key}' (ignored)"));
            }
        }
        // In file order, so the first error reported is the first one written.
        let mut entries: Vec<_> = raw.entries.iter().collect();
        entries.sort_by(|(_, (_, a)), (_, (_, b))| a.cmp(b));
        for (key, (value, at)) in entries {
            let Some((spec, suffix)) = keys::lookup(key) else {
                warn(at, format!("unknown key '{key}' (ignored)"));
                continue;
            };
            spec.check(suffix, value).map_err(|expected| ConfigError::Value {
                location: at.clone(),
                key: key.clone(),
                value: value.clone(),
                expected,
            })?;
            if raw.cut.contains(at) && spec.kind.may_hold_hash() {
                warn(
                    at,
                    format!(
                        "the value of '{key}' ends where ' #' starts a comment; if the '#' and what follows \
                         belong to the value, quote it: {key} = \"…\""
                    ),
                );
            }
            if spec.usage == Usage::Accepted {
                warn(at, format!("key '{key}' is accepted for compatibility but not used (ignored)"));
            }
        }
        warnings.sort_by(|a, b| a.location.cmp(&b.location));

        let set = raw.entries.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        let settings = Settings::build(set, dirs);
        check_billing_columns(&settings.billing_feeder, raw)?;
        check_claims(raw)?;
        let mut settings = settings;
        if let Some((_, at)) = raw.get("billing-feeder.field_types") {
            settings.billing_feeder.field_types_at = at.to_string();
        }
        Ok((settings, warnings))
    }

    /// The embedded default used when `cdrmunch serve` gets no `--config`:
    /// everything under `data_dir`, listening on 127.0.0.1:8080, no pid file.
    pub fn embedded_default(data_dir: &Path) -> Settings {
        let dirs = Dirs {
            config_dir: data_dir.into(),
            data_dir: data_dir.into(),
            log_dir: data_dir.join("log"),
            run_dir: data_dir.into(),
        };
        let set = EMBEDDED.iter().map(|(k, v)| (k.to_string(), keys::expand(v, &dirs))).collect();
        Settings::build(set, &dirs)
    }

    /// Builds settings from already validated values plus seed defaults.
    fn build(set: BTreeMap<String, String>, dirs: &Dirs) -> Settings {
        let v = Values { set, dirs };
        Settings {
            server: ServerSettings {
                address: v.get("server.address"),
                port: v.get("server.port"),
                max_content_length: v.get("server.max_content_length"),
                basic_auth: v.get("server.basic_auth"),
                header_read_timeout: v.get("server.header_read_timeout"),
                body_idle_timeout: v.get("server.body_idle_timeout"),
                keepalive_timeout: v.get("server.keepalive_timeout"),
                answer_timeout: Duration::from_millis(v.get::<u64>("server.answer_timeout_ms")),
                max_connections: v.get("server.max_connections"),
                http2: v.get("server.http2"),
            },
            request_handler: RequestHandlerSettings {
                cdr_queue_enabled: v.get("request_handler.cdr_queue_enabled"),
                cdr_base_dir: v.get("request_handler.cdr_base_dir"),
                paging_base_dir: v.get("request_handler.paging_base_dir"),
                pcap_base_dir: v.get("request_handler.pcap_base_dir"),
                max_cdr_size: v.get("request_handler.max_cdr_size"),
                group_commit_max: v.get("request_handler.group_commit_max"),
                max_cdr_elements: v.get("request_handler.max_cdr_elements"),
                max_cdr_variables: v.get("request_handler.max_cdr_variables"),
                max_cdr_callflows: v.get("request_handler.max_cdr_callflows"),
                parse_memory: v.get("request_handler.parse_memory"),
                spool_dir: v.get("request_handler.spool_dir"),
                spool_max_rows: v.get("request_handler.spool_max_rows"),
            },
            distiller: DistillerSettings {
                number_of_distilleries: v.get("distiller.number_of_distilleries"),
                poll_interval: v.get("cdr_queue_poll_interval_seconds"),
                poll_max_batch_size: v.get("cdr_queue_poll_max_batch_size"),
                cdr_base_dir: v.get("cdr_base_dir"),
                normalized_cdr_base_dir: v.get("normalized_cdr_base_dir"),
                disabled_tasks: v.get("disabled_tasks"),
                lease_seconds: v.get("distiller.lease_seconds"),
                job_timeout_seconds: v.get("distiller.job_timeout_seconds"),
                retry_backoff_seconds: v.get("distiller.retry_backoff_seconds"),
                retry_backoff_max_seconds: v.get("distiller.retry_backoff_max_seconds"),
                poison_threshold: v.get("distiller.poison_threshold"),
                prefetch: v.get("distiller.prefetch"),
                shard: v.get("distiller.shard"),
                takeover_seconds: v.get("distiller.takeover_seconds"),
            },
            database: DatabaseSettings {
                cdrdb_url: v.get("cdrdb.url"),
                cdrdb_max_connections: v.get("cdrdb.max_connections"),
                billingdb_url: v.get("billingdb.url"),
            },
            tasksd: TasksdSettings {
                executor_threads: v.get("executor.threads"),
                poll_interval: v.get("tasksd.poll_interval_seconds"),
                poll_batch_size: v.get("tasksd.poll_batch_size"),
                max_retries: v.get("tasksd.max_retries"),
                retry_backoff_seconds: v.get("tasksd.retry_backoff_seconds"),
                exponential_backoff: v.get("tasksd.exponential_backoff"),
                handlers: v.map("tasksd.handler.<type>"),
                lease_seconds: v.get("tasksd.lease_seconds"),
                job_timeout_seconds: v.get("tasksd.job_timeout_seconds"),
                prefetch: v.get("tasksd.prefetch"),
            },
            billing_feeder: BillingFeederSettings {
                field_names: v.get("billing-feeder.field_names"),
                field_types: v.get("billing-feeder.field_types"),
                node_name_map: v.map("billing-feeder.node_name_map__<name>"),
                table: v.get("billing-feeder.table"),
                field_types_at: "the seed's default".into(),
            },
            emailer: EmailerSettings {
                smtp_host: v.get("emailer.smtp_host"),
                smtp_port: v.get("emailer.smtp_port"),
                tls: v.get("emailer.tls"),
                username: v.get("emailer.username"),
                password: v.get("emailer.password"),
                from: v.get("emailer.from"),
                to: v.get("emailer.to"),
                subject: v.get("emailer.subject"),
                body: v.get("emailer.body"),
                timeout_seconds: v.get("emailer.timeout_seconds"),
            },
            sms: SmsSettings {
                url: v.get("sms.url"),
                auth_token: v.get("sms.auth_token"),
                from: v.get("sms.from"),
                to: v.get("sms.to"),
                text: v.get("sms.text"),
            },
            salesforce: SalesforceSettings {
                login_url: v.get("salesforce.login_url"),
                client_id: v.get("salesforce.client_id"),
                client_secret: v.get("salesforce.client_secret"),
                username: v.get("salesforce.username"),
                password: v.get("salesforce.password"),
                api_version: v.get("salesforce.api_version"),
                sobject: v.get("salesforce.sobject"),
                external_id_field: v.get("salesforce.external_id_field"),
                field_map: v.get("salesforce.field_map"),
            },
            recordings: RecordingSettings {
                source_dirs: source_dirs(v.get("recordings.source_dirs"), v.get("recordings.base_dir")),
                base_dir: v.get("recordings.base_dir"),
                delivery_target: v.get("recordings.delivery_target"),
                buffer_dir: v.get("recordings.buffer_dir"),
            },
            transcription: TranscriptionSettings {
                url: v.get("transcription.url"),
                auth_token: v.get("transcription.auth_token"),
                presign_seconds: v.get("transcription.presign_seconds"),
            },
            normalize: NormalizeSettings {
                field_map: v.get("normalize.field_map"),
                org_directory: v.get("normalize.org_directory"),
            },
            task_rules: v.map("task_rules.<type>"),
            rating: RatingSettings {
                deck: v.get("rating.deck"),
                default_country_code: v.get("rating.default_country_code"),
            },
            s3: S3Settings {
                endpoint: v.get("s3.endpoint"),
                region: v.get("s3.region"),
                path_style: v.get("s3.path_style"),
                access_key_id: v.get("s3.access_key_id"),
                secret_access_key: v.get("s3.secret_access_key"),
            },
            log: LogSettings {
                level: v.get("log.level"),
                facility: v.get("log.facility"),
                file: v.get("log.file"),
                syslog_socket: v.get("log.syslog_socket"),
            },
            app: AppSettings {
                instance_id: v.get("app.instance_id"),
                pid_file: v.get("app.pid_file"),
                run_as_user: v.get("app.run_as_user"),
                run_as_group: v.get("app.run_as_group"),
                roles: v.get("app.roles"),
            },
            metrics: MetricsSettings {
                enabled: v.get("metrics.enabled"),
                address: v.get("metrics.address"),
                port: v.get("metrics.port"),
            },
            ship: ShipSettings {
                dirs: v.get::<Vec<String>>("ship.dirs").into_iter().map(PathBuf::from).collect(),
                urls: v.get("ship.urls"),
                encode: v.get("ship.encode"),
                basic_auth: v.get("ship.basic_auth"),
                done_dir: v.get("ship.done_dir"),
                delete: v.get("ship.delete"),
                concurrency: v.get("ship.concurrency"),
                rescan: v.get("ship.rescan_seconds"),
                settle: v.get("ship.settle_seconds"),
                retry_backoff: v.get("ship.retry_backoff_seconds"),
                retry_backoff_max: v.get("ship.retry_backoff_max_seconds"),
                timeout: v.get("ship.timeout_seconds"),
                drain: v.get("ship.drain_seconds"),
                once_rounds: v.get("ship.once_rounds"),
                metrics_address: v.get("ship.metrics_address"),
                metrics_port: v.get("ship.metrics_port"),
            },
            raw: v.set,
        }
    }
}

/// FreeSWITCH's recordings directory as its packages lay it out (`$${recordings_dir}`).
pub const FREESWITCH_RECORDINGS_DIR: &str = "/var/lib/freeswitch/recordings";

/// `recordings.source_dirs`, or when it is not set the places a CDR's recording can
/// legitimately be: `recordings.base_dir` and FreeSWITCH's recordings directory.
fn source_dirs(set: Vec<String>, base_dir: PathBuf) -> Vec<PathBuf> {
    if !set.is_empty() {
        return set.into_iter().map(PathBuf::from).collect();
    }
    let mut dirs = vec![base_dir];
    if dirs[0] != Path::new(FREESWITCH_RECORDINGS_DIR) {
        dirs.push(FREESWITCH_RECORDINGS_DIR.into());
    }
    dirs
}

/// The billing feeder pairs names with types by position, so the counts must
/// match; blamed on whichever of the two the config set (types first).
fn check_billing_columns(bf: &BillingFeederSettings, raw: &RawConfig) -> Result<(), ConfigError> {
    if bf.field_names.len() == bf.field_types.len() {
        return Ok(());
    }
    let (names, types) = ("billing-feeder.field_names", "billing-feeder.field_types");
    let (key, other, want, got) = match raw.get(types) {
        Some(_) => (types, names, bf.field_names.len(), bf.field_types.len()),
        None => (names, types, bf.field_types.len(), bf.field_names.len()),
    };
    // Seed defaults match, so a mismatch means the config set at least one.
    let (value, at) = raw.get(key).expect("a billing column list is set");
    Err(ConfigError::Value {
        location: at.clone(),
        key: key.into(),
        value: value.into(),
        expected: format!("{want} entries, one per entry of {other} (got {got})"),
    })
}

/// A lease is renewed every third of it and kept in whole seconds, so one second would
/// run out between renewals; an instance id longer than its column would be cut.
fn check_claims(raw: &RawConfig) -> Result<(), ConfigError> {
    let refuse = |key: &str, expected: &str| match raw.get(key) {
        Some((value, at)) => Err(ConfigError::Value {
            location: at.clone(),
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }),
        None => Ok(()),
    };
    for key in ["distiller.lease_seconds", "tasksd.lease_seconds"] {
        if raw.get(key).is_some_and(|(v, _)| v.trim().parse::<u64>().is_ok_and(|n| n < 2)) {
            refuse(key, "at least 2 seconds (the lease is renewed every third of it)")?;
        }
    }
    if raw.get("app.instance_id").is_some_and(|(v, _)| v.chars().count() > 100) {
        refuse("app.instance_id", "at most 100 characters")?;
    }
    Ok(())
}

/// Typed reads for [`Settings::build`]: the config's value, else the seed default.
struct Values<'a> {
    set: BTreeMap<String, String>,
    dirs: &'a Dirs,
}

impl Values<'_> {
    fn get<T: FromParsed>(&self, key: &str) -> T {
        let spec = keys::spec(key);
        let value = self.set.get(key).cloned().unwrap_or_else(|| keys::expand(spec.default, self.dirs));
        // Config values were checked by `from_raw` and seed defaults by the
        // tests, so failing here means the registry kind does not fit the field.
        spec.kind
            .parse(&value)
            .ok()
            .and_then(T::from_parsed)
            .unwrap_or_else(|| panic!("config key '{key}' = '{value}' does not fit its typed field"))
    }

    /// A pattern key's `suffix -> value` map: seed pairs, then the config's keys.
    fn map(&self, pattern: &str) -> BTreeMap<String, String> {
        let spec = keys::spec(pattern);
        let prefix = spec.prefix().expect("a pattern key");
        let seed = spec.default.split(',').filter_map(|pair| pair.split_once('='));
        let seed = seed.map(|(k, v)| (k.to_string(), v.to_string()));
        let set = self.set.iter().filter_map(|(key, value)| {
            let suffix = key.strip_prefix(prefix).filter(|s| !s.is_empty())?;
            Some((suffix.to_string(), value.clone()))
        });
        seed.chain(set).collect()
    }
}
