//! The typed sections of [`Settings`](super::Settings), one struct per config prefix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Credentials for intake requests. `Debug` hides the password so settings
/// can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("user", &self.user).field("password", &"***").finish()
    }
}

/// CDR intake HTTP server (`server.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub address: String,
    pub port: u16,
    pub max_content_length: u64,
    pub basic_auth: Option<BasicAuth>,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub answer_timeout: Duration,
    /// 0: derived from the open-file limit at start.
    pub max_connections: u64,
    pub http2: bool,
}

/// Where intake stores what it receives (`request_handler.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHandlerSettings {
    pub cdr_queue_enabled: bool,
    pub cdr_base_dir: PathBuf,
    pub paging_base_dir: PathBuf,
    pub pcap_base_dir: PathBuf,
    pub max_cdr_size: u64,
    pub group_commit_max: usize,
    pub max_cdr_elements: usize,
    pub max_cdr_variables: usize,
    pub max_cdr_callflows: usize,
    pub parse_memory: u64,
    pub spool_dir: PathBuf,
    /// 0: no spool.
    pub spool_max_rows: u64,
}

/// The distiller (`distiller.*` and the historical top-level keys).
#[derive(Debug, Clone, PartialEq)]
pub struct DistillerSettings {
    pub number_of_distilleries: usize,
    pub poll_interval: Duration,
    pub poll_max_batch_size: usize,
    pub cdr_base_dir: PathBuf,
    pub normalized_cdr_base_dir: PathBuf,
    pub disabled_tasks: Vec<String>,
    pub lease_seconds: u64,
    pub job_timeout_seconds: u64,
    pub retry_backoff_seconds: u64,
    pub retry_backoff_max_seconds: u64,
    pub poison_threshold: u32,
    pub prefetch: usize,
    /// Which ids this process claims (the two-SDC setup).
    pub shard: crate::domain::shard::ShardSetting,
    /// 0: never take over a silent shard.
    pub takeover_seconds: u64,
}

/// Database connections (`cdrdb.*`, `billingdb.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSettings {
    pub cdrdb_url: String,
    pub cdrdb_max_connections: u32,
    pub billingdb_url: String,
}

/// The task daemon (`executor.threads`, `tasksd.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct TasksdSettings {
    pub executor_threads: usize,
    pub poll_interval: Duration,
    pub poll_batch_size: usize,
    pub max_retries: u32,
    pub retry_backoff_seconds: u64,
    pub exponential_backoff: bool,
    /// Task type -> handler, from `tasksd.handler.<type>`.
    pub handlers: BTreeMap<String, String>,
    pub lease_seconds: u64,
    pub job_timeout_seconds: u64,
    pub prefetch: usize,
}

/// SMTP for the emailer task (`emailer.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct EmailerSettings {
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: String,
    pub body: String,
    pub timeout_seconds: u64,
}

/// SMS gateway for SMSSend (`sms.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct SmsSettings {
    pub url: Option<String>,
    pub auth_token: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub text: String,
}

/// Salesforce REST for CDR2SFAPI (`salesforce.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceSettings {
    pub login_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_version: String,
    pub sobject: String,
    pub external_id_field: String,
    /// `SfField=cdr_field` pairs.
    pub field_map: Vec<String>,
}

/// Recordings (`recordings.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSettings {
    /// The only directories recordings are read from (checked after resolving symlinks
    /// and `..`): a CDR names its recording's path, so it must not name any file.
    pub source_dirs: Vec<PathBuf>,
    pub base_dir: PathBuf,
    pub delivery_target: Option<String>,
    pub buffer_dir: Option<PathBuf>,
}

/// Transcription service (`transcription.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionSettings {
    pub url: Option<String>,
    pub auth_token: Option<String>,
    pub presign_seconds: u64,
}

/// The normalizer's data files (`normalize.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizeSettings {
    pub field_map: Option<PathBuf>,
    pub org_directory: Option<PathBuf>,
}

/// Rating (`rating.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RatingSettings {
    pub deck: Option<PathBuf>,
    pub default_country_code: Option<String>,
}

/// S3 client for every store given as `s3://bucket/prefix` (`s3.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Billing record layout (`billing-feeder.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct BillingFeederSettings {
    pub field_names: Vec<String>,
    /// `s` or `d`, one per field name.
    pub field_types: Vec<String>,
    /// CDR variable -> billing field, from `billing-feeder.node_name_map__<name>`
    /// added to the default `billsec -> quantity`.
    pub node_name_map: BTreeMap<String, String>,
    pub table: String,
    /// Where `field_types` was set (`file:line`), or "the seed's default": for messages.
    pub field_types_at: String,
}

/// Logging (`log.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// 1 critical .. 6 debug.
    pub level: u8,
    /// Syslog facility; `None` logs to stdout.
    pub facility: Option<String>,
    pub file: Option<PathBuf>,
    pub syslog_socket: PathBuf,
}

/// Process settings (`app.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct AppSettings {
    /// `app.instance_id`; None derives one (see `app::instance_id`).
    pub instance_id: Option<String>,
    pub pid_file: Option<PathBuf>,
    pub run_as_user: Option<String>,
    pub run_as_group: Option<String>,
    /// Subset of intake, distiller, tasks.
    pub roles: Vec<String>,
}

/// Prometheus endpoint (`metrics.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    pub enabled: bool,
    pub address: String,
    pub port: u16,
}

/// The typed configuration of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: ServerSettings,
    pub request_handler: RequestHandlerSettings,
    pub distiller: DistillerSettings,
    pub database: DatabaseSettings,
    pub tasksd: TasksdSettings,
    pub billing_feeder: BillingFeederSettings,
    pub emailer: EmailerSettings,
    pub sms: SmsSettings,
    pub salesforce: SalesforceSettings,
    pub recordings: RecordingSettings,
    pub transcription: TranscriptionSettings,
    pub s3: S3Settings,
    pub rating: RatingSettings,
    pub normalize: NormalizeSettings,
    /// Task type -> rule, from `task_rules.<type>`.
    pub task_rules: BTreeMap<String, String>,
    pub log: LogSettings,
    pub app: AppSettings,
    pub metrics: MetricsSettings,
    pub ship: ShipSettings,
    /// Every resolved key as written (known or not), for code that reads keys
    /// without a typed field.
    pub raw: BTreeMap<String, String>,
}

/// The shipper on a FreeSWITCH host (`ship.*`, `cdrmunch ship`); its flags override these.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipSettings {
    pub dirs: Vec<PathBuf>,
    pub urls: Vec<String>,
    /// One of [`ENCODINGS`](super::ENCODINGS).
    pub encode: String,
    pub basic_auth: Option<BasicAuth>,
    pub done_dir: Option<PathBuf>,
    pub delete: bool,
    pub concurrency: usize,
    pub rescan: Duration,
    pub settle: Duration,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub timeout: Duration,
    pub drain: Duration,
    pub once_rounds: u32,
    pub metrics_address: String,
    /// 0: no /metrics listener.
    pub metrics_port: u16,
}
