//! The key registry. Every config key is declared once, in [`KEYS`], with its
//! type, seed default and help text; validation, seed defaults and
//! `cdrmunch config --keys` all read that table, so they cannot drift apart.

use std::path::PathBuf;
use std::time::Duration;

use super::{BasicAuth, Dirs};

/// Task types of the distiller and tasksd. `disabled_tasks` and
/// `tasksd.handler.<type>` must name one of these, with this exact case,
/// because the names are matched against task rows verbatim.
pub const TASK_TYPES: [&str; 9] = [
    "bufferedRecording",
    "CDR2SF",
    "SMSSend",
    "billing",
    "emailer",
    "calllog",
    "CDR2SFAPI",
    "recordingDelivery",
    "transcription",
];

/// The parts of the seed's deployment one process can run (`app.roles`, `serve --roles`).
pub const ROLES: [&str; 3] = ["intake", "distiller", "tasks"];

/// The body forms of `cdrmunch ship` / `submit`, as the `--encode` flag spells them.
pub const ENCODINGS: [&str; 5] = ["raw", "urlencoded", "base64", "textxml", "json"];

/// How a value is checked and what it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Host,
    Port,
    /// Whole number >= 1, capped at `u32::MAX` so it fits every integer field.
    Count,
    /// Whole number >= 0, same cap.
    Number,
    Level,
    /// Bytes, optionally with a 1024-based K/M/G suffix.
    Bytes,
    Bool,
    /// Seconds > 0, fractions allowed, stored as a `Duration`.
    Seconds,
    /// Non-empty string.
    Text,
    /// String; empty means "not set".
    OptText,
    Path,
    /// Path; empty means "not set".
    OptPath,
    DbUrl,
    /// `user:pass`; empty means "no auth".
    Auth,
    TaskList,
    NameList,
    /// Comma list of directories.
    PathList,
    /// Comma list of `s` / `d` (billing feeder column types).
    TypeList,
    /// `none`, `starttls` or `tls`.
    Tls,
    /// `http://` or `https://` URL; empty means "not set".
    OptUrl,
    /// A directory or `s3://bucket/prefix`; empty means "not set".
    OptStore,
    /// Comma list of intake, distiller, tasks; at least one.
    Roles,
    /// A task rule: `a_leg and not answered`.
    Rule,
    /// Comma list of `http://` / `https://` URLs.
    UrlList,
    /// A body form: raw, urlencoded, base64, textxml or json (`cdrmunch ship`).
    Encode,
    /// `auto`, `none` or `OFFSET/INCREMENT` (`distiller.shard`).
    Shard,
}

/// What cdrmunch does with a known key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    /// Feeds a typed field of `Settings`.
    Used,
    /// Kept so old configs load, but has no effect: a warning says so.
    Accepted,
    /// Validated and kept in `Settings::raw` for code that reads it directly.
    RawOnly,
}

/// One registry row. A name containing `<...>` is a pattern: the part before
/// `<` is a prefix and the rest of the key is free (`tasksd.handler.<type>`).
#[derive(Debug)]
pub(crate) struct KeySpec {
    pub name: &'static str,
    pub kind: Kind,
    /// Seed default; `{data_dir}`, `{run_dir}`, `{log_dir}` and `{config_dir}`
    /// are replaced from [`Dirs`]. For pattern keys: `suffix=value` pairs.
    pub default: &'static str,
    pub help: &'static str,
    pub usage: Usage,
}

pub(super) const fn key(name: &'static str, kind: Kind, default: &'static str, help: &'static str) -> KeySpec {
    KeySpec { name, kind, default, help, usage: Usage::Used }
}

impl KeySpec {
    const fn accepted(self) -> Self {
        KeySpec { usage: Usage::Accepted, ..self }
    }
    const fn raw_only(self) -> Self {
        KeySpec { usage: Usage::RawOnly, ..self }
    }

    /// Validates `value` for this key; `suffix` is the free part of a pattern key.
    /// The error is the "expected ..." text of a `ConfigError::Value`.
    pub(crate) fn check(&self, suffix: &str, value: &str) -> Result<Parsed, String> {
        if self.name.ends_with("<type>") && !TASK_TYPES.contains(&suffix) {
            return Err(format!("a key {} with <type> one of {}", self.name, TASK_TYPES.join(", ")));
        }
        self.kind.parse(value)
    }

    /// The prefix of a pattern key, `None` for a plain key.
    pub(crate) fn prefix(&self) -> Option<&'static str> {
        self.name.split_once('<').map(|(prefix, _)| prefix)
    }
}

use Kind as K;

const FIELD_NAMES: &str = "uuid,quantity,rmOriginatorOrgId,rmOriginatorUserId,retailConnectCharge,retailRate,\
retailRateType,retailCountryCode,retailCountry,retailPrimaryBandType,retailSubBandType,retailChargeBand,\
rmOriginatedExternal,sip_to_user,answer_epoch,answer_stamp,end_epoch,end_stamp,originator_username,\
lcr_carrier,lcr_rate,billingEventType";
const FIELD_TYPES: &str = "s,d,d,d,d,d,s,s,s,s,s,s,s,s,d,s,d,s,s,s,d,s";

#[rustfmt::skip]
pub(crate) static KEYS: &[KeySpec] = &[
    key("server.address", K::Host, "0.0.0.0", "address the CDR intake HTTP server listens on"),
    key("server.port", K::Port, "80", "port the CDR intake HTTP server listens on"),
    key("server.threads", K::Count, "4", "accepted for compatibility; not used (the server sizes its own thread pool)").accepted(),
    key("server.max_content_length", K::Bytes, "2147483648", "largest request body accepted (K/M/G suffixes are 1024-based)"),
    key("server.basic_auth", K::Auth, "", "user:pass required on intake requests; empty disables authentication"),
    key("server.header_read_timeout", K::Seconds, "10", "a request's headers must arrive within this (also bounds an idle kept-alive connection)"),
    key("server.body_idle_timeout", K::Seconds, "30", "longest pause between two pieces of a request body before it is answered 408 and dropped"),
    key("server.keepalive_timeout", K::Seconds, "15", "a connection with no request in progress is closed after this"),
    key("server.max_connections", K::Number, "0", "open connections at most; at the cap the longest-idle one is closed for a new one; 0: three quarters of the open-file limit"),
    key("server.answer_timeout_ms", K::Count, "2000", "a CDR POST is answered within this many milliseconds whatever the database does (503 when it could not be made safe in time)"),
    key("server.http2", K::Bool, "false", "also serve HTTP/2 (prior knowledge); FreeSWITCH posts HTTP/1.1"),
    key("request_handler.cdr_queue_enabled", K::Bool, "true", "queue received CDRs for the distiller"),
    key("request_handler.cdr_base_dir", K::Path, "/data/PBX_Archive/CDR", "where received CDR files are stored"),
    key("request_handler.paging_base_dir", K::Path, "/data/PBX_Archive/SMS", "where received paging/SMS records are stored"),
    key("request_handler.pcap_base_dir", K::Path, "/data/PBX_Archive/PCAP", "where received packet captures are stored"),
    key("request_handler.max_cdr_size", K::Bytes, "16M", "largest CDR body accepted; a CDR is held in memory, so it has its own cap"),
    key("request_handler.max_cdr_elements", K::Count, "100000", "most XML elements (or JSON values) in one CDR; more is a 413 naming this key"),
    key("request_handler.max_cdr_variables", K::Count, "20000", "most channel variables in one CDR"),
    key("request_handler.max_cdr_callflows", K::Count, "1000", "most callflows (caller profiles) in one CDR"),
    key("request_handler.spool_dir", K::Path, "{data_dir}/spool", "local journal of queue rows the database could not take (always on local disk, also with raw storage on S3)"),
    key("request_handler.spool_max_rows", K::Number, "1000000", "rows the spool may hold before intake answers 503; 0 disables the spool"),
    key("request_handler.parse_memory", K::Bytes, "64M", "CDR body bytes all POSTs may hold at once, from reading to parsed; more wait, then get a 503"),
    key("request_handler.group_commit_max", K::Count, "500", "most queue rows written in one database transaction"),
    key("distiller.number_of_distilleries", K::Count, "10", "CDRs distilled in parallel"),
    key("cdr_queue_poll_interval_seconds", K::Seconds, "1", "how often the distiller polls cdr_queue (seconds, fractions allowed)"),
    key("cdr_queue_poll_max_batch_size", K::Count, "1000", "most cdr_queue rows claimed per poll"),
    key("cdr_base_dir", K::Path, "/data/PBX_Archive/CDR", "where the distiller reads CDR files"),
    key("normalized_cdr_base_dir", K::Path, "/data/CDRMunch/ncdr", "where the distiller writes normalized CDRs"),
    key("disabled_tasks", K::TaskList, "", "comma list of task types not to create"),
    key("distiller.lease_seconds", K::Count, "30", "how long a claimed cdr_queue row is leased, renewed every third of it while the CDR is in work; another process takes a crashed one's claims after it (a restarted process takes back its own at once); at least 2"),
    key("distiller.job_timeout_seconds", K::Count, "60", "a distillery busy longer than this on one CDR is considered hung"),
    key("distiller.retry_backoff_seconds", K::Count, "10", "base of the exponential backoff for retriable failures"),
    key("distiller.retry_backoff_max_seconds", K::Number, "3600", "cap of the retry backoff"),
    key("distiller.poison_threshold", K::Count, "3", "internal failures of one CDR before it is marked critical"),
    key("distiller.prefetch", K::Count, "2", "CDRs queued per distillery"),
    key("cdrdb.url", K::DbUrl, "sqlite://{data_dir}/cdrmunch.db", "CDR database (sqlite:, mysql: or mariadb: URL)"),
    key("cdrdb.max_connections", K::Count, "10", "size of the CDR database connection pool"),
    key("billingdb.url", K::DbUrl, "sqlite://{data_dir}/billing.db", "billing database (sqlite:, mysql: or mariadb: URL)"),
    key("executor.threads", K::Count, "2", "tasksd worker threads"),
    key("tasksd.poll_interval_seconds", K::Seconds, "1", "how often tasksd polls for tasks"),
    key("tasksd.poll_batch_size", K::Count, "100", "most tasks claimed per poll"),
    key("tasksd.max_retries", K::Number, "5", "retries of a failed task before it is given up"),
    key("tasksd.retry_backoff_seconds", K::Number, "60", "delay before retrying a failed task"),
    key("tasksd.exponential_backoff", K::Bool, "true", "double the retry delay on each failure"),
    key("tasksd.handler.<type>", K::Text, "", "handler for one task type"),
    key("tasksd.lease_seconds", K::Count, "30", "how long a claimed task is leased, renewed every third of it while the attempt runs (however long, up to tasksd.job_timeout_seconds); another process takes a crashed one's claims after it (a restarted process takes back its own at once); at least 2"),
    key("tasksd.job_timeout_seconds", K::Count, "300", "a handler running longer than this is stopped and the task retried"),
    key("tasksd.prefetch", K::Count, "2", "tasks claimed ahead per executor thread"),
    key("billing-feeder.table", K::Text, "billing_feed", "billing database table the billing task writes (created if missing)"),
    key("emailer.smtp_host", K::OptText, "", "SMTP server; empty leaves the emailer task type off"),
    key("emailer.smtp_port", K::Port, "25", "SMTP port (587 for submission, 465 for implicit TLS)"),
    key("emailer.tls", K::Tls, "starttls", "none, starttls (required) or tls (implicit, port 465)"),
    key("emailer.username", K::OptText, "", "SMTP user; empty sends without AUTH"),
    key("emailer.password", K::OptText, "", "SMTP password"),
    key("emailer.from", K::OptText, "", "From address; required for the emailer"),
    key("emailer.to", K::OptText, "", "default recipients (comma list) when the CDR names none (variable notify_email)"),
    key("emailer.subject", K::Text, "Missed call from {caller_id_number} to {destination_number}", "subject template; {field} is a normalized CDR field"),
    key("emailer.body", K::Text, "Missed call\\nFrom: {caller_id_number}\\nTo: {destination_number}\\nAt: {start_stamp}\\nCall: {uuid}\\n", "body template; {field} is a normalized CDR field, \\n a line break"),
    key("emailer.timeout_seconds", K::Count, "30", "SMTP timeout"),
    key("sms.url", K::OptUrl, "", "SMS gateway endpoint (JSON POST); empty leaves SMSSend off"),
    key("sms.auth_token", K::OptText, "", "bearer token sent to the SMS gateway"),
    key("sms.from", K::OptText, "", "sender id"),
    key("sms.to", K::OptText, "", "default recipient when the CDR names none (variable notify_sms)"),
    key("sms.text", K::Text, "Missed call from {caller_id_number} at {start_stamp}", "message template"),
    key("salesforce.login_url", K::OptUrl, "https://login.salesforce.com", "OAuth token endpoint host"),
    key("salesforce.client_id", K::OptText, "", "connected app consumer key; empty leaves CDR2SFAPI off"),
    key("salesforce.client_secret", K::OptText, "", "connected app consumer secret"),
    key("salesforce.username", K::OptText, "", "integration user (password grant); empty uses client_credentials"),
    key("salesforce.password", K::OptText, "", "integration user's password + security token"),
    key("salesforce.api_version", K::Text, "v59.0", "REST API version"),
    key("salesforce.sobject", K::Text, "Call_Record__c", "sObject upserted per call"),
    key("salesforce.external_id_field", K::Text, "CDR_UUID__c", "external id field holding the call uuid"),
    key("salesforce.field_map", K::NameList, "Direction__c=direction,Caller__c=caller_id_number,Destination__c=destination_number,Start__c=start_epoch,Billsec__c=billsec,Hangup_Cause__c=hangup_cause", "sObject field = normalized CDR field, comma list"),
    key("recordings.base_dir", K::Path, "{data_dir}/recordings", "where relative recording paths of CDRs are found"),
    key("recordings.source_dirs", K::PathList, "", "the only directories recordings are read from (symlinks and .. resolved first; a recording elsewhere, or not a regular file, is a permanent task failure); empty: recordings.base_dir and /var/lib/freeswitch/recordings"),
    key("recordings.delivery_target", K::OptStore, "", "where recordingDelivery copies recordings: a directory or s3://bucket/prefix; empty leaves it off"),
    key("recordings.buffer_dir", K::OptPath, "", "where buffered recordings wait; empty leaves bufferedRecording off"),
    key("transcription.url", K::OptUrl, "", "transcription service job endpoint; empty leaves transcription off"),
    key("transcription.auth_token", K::OptText, "", "bearer token sent to the transcription service"),
    key("transcription.presign_seconds", K::Count, "3600", "lifetime of the presigned S3 URL given to the service"),
    key("normalize.field_map", K::OptPath, "", "field map file (see config/field-map.conf); empty: the shipped map"),
    key("normalize.org_directory", K::OptPath, "", "org directory CSV (key,org_id,sf_org_id,notify_email,notify_sms,transcription); empty: none"),
    key("task_rules.<type>", K::Rule, "", "when a CDR gets this task: predicates joined by 'and', each optionally 'not' (see README)"),
    key("rating.deck", K::OptPath, "", "rate deck CSV (prefix,country_code,...; see config/rates.csv); empty: only retail values the CDRs carry"),
    key("rating.default_country_code", K::OptText, "", "country code for national numbers (0...) when rating, e.g. 44"),
    key("s3.endpoint", K::OptUrl, "", "S3 endpoint for S3-compatible servers; empty uses AWS"),
    key("s3.region", K::Text, "us-east-1", "S3 region"),
    key("s3.path_style", K::Bool, "false", "path-style bucket addressing (most S3-compatible servers)"),
    key("s3.access_key_id", K::OptText, "", "S3 access key; empty uses the AWS environment/profile chain"),
    key("s3.secret_access_key", K::OptText, "", "S3 secret key"),
    key("task-executor.workers", K::Count, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.poll_interval", K::Seconds, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.queue_table", K::Text, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.status_field", K::Text, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.type_field", K::Text, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.max_retries", K::Number, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.retry_delay_seconds", K::Number, "", "legacy task executor setting (kept raw)").raw_only(),
    key("task-executor.exponential_backoff", K::Bool, "", "legacy task executor setting (kept raw)").raw_only(),
    key("billing-feeder.field_names", K::NameList, FIELD_NAMES, "billing record columns, in order"),
    key("billing-feeder.field_types", K::TypeList, FIELD_TYPES, "type of each billing column: s or d, one per field name"),
    key("billing-feeder.node_name_map__<name>", K::Text, "billsec=quantity", "CDR variable <name> fills this billing field (adds to the defaults)"),
    key("log.level", K::Level, "4", "1 critical, 2 error, 3 warning, 4 message, 5 verbose, 6 debug"),
    key("log.facility", K::OptText, "", "syslog facility (daemon, local0 .. local7, ...); empty logs to stdout or log.file"),
    key("log.file", K::OptPath, "", "log file, reopened on SIGHUP; empty logs to stdout"),
    key("log.syslog_socket", K::Path, "/dev/log", "the syslog daemon's socket"),
    key("app.instance_id", K::OptText, "", "names this process in the claims it makes; the same after a restart, so a restarted process takes back its previous run's claims at once; must differ between processes sharing a database; at most 100 characters; empty: the host name plus a hash of the data dir, cdrdb.url, server address and port, and roles"),
    key("app.pid_file", K::OptPath, "", "pid file; empty (the default) for none, so instances with different configs never share one"),
    key("app.memory_limit", K::Bytes, "", "accepted for compatibility; not used").accepted(),
    key("app.run_as_user", K::OptText, "", "user to switch to after binding the listeners (when started as root)"),
    key("app.roles", K::Roles, "intake,distiller,tasks", "what this process runs: intake (HTTP CDR intake), distiller, tasks (tasksd); `serve --roles` overrides"),
    key("app.run_as_group", K::OptText, "", "group to switch to after start"),
    key("metrics.enabled", K::Bool, "true", "serve Prometheus metrics"),
    key("metrics.address", K::Host, "127.0.0.1", "address the metrics endpoint listens on"),
    key("metrics.port", K::Port, "9464", "port of the Prometheus /metrics listener (not 9090: that is Prometheus itself)"),
];

/// Every registry row: the service's, the shipper's (`ship.*`) and the multi-process ones.
pub(crate) fn all() -> impl Iterator<Item = &'static KeySpec> {
    KEYS.iter().chain(super::ship_keys::SHIP_KEYS.iter()).chain(super::cluster_keys::CLUSTER_KEYS.iter())
}

/// `(key, type, seed default, help)` for every key, for `cdrmunch config --keys`.
pub fn describe_keys() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    all().map(|k| (k.name, k.kind.type_name(), k.default, k.help)).collect()
}

/// The registry row for a key as written in a config, with the free part of a
/// pattern key (empty for plain keys). `None` means unknown.
pub(crate) fn lookup(key: &str) -> Option<(&'static KeySpec, &str)> {
    all().find_map(|spec| match spec.prefix() {
        None => (spec.name == key).then_some((spec, "")),
        Some(prefix) => key.strip_prefix(prefix).filter(|rest| !rest.is_empty()).map(|rest| (spec, rest)),
    })
}

/// The registry row named exactly `name` (patterns by their `<...>` name).
/// Only called with names from this crate's code, so absence is a bug.
pub(crate) fn spec(name: &str) -> &'static KeySpec {
    all().find(|k| k.name == name).unwrap_or_else(|| panic!("'{name}' is not in the key registry"))
}

/// Fills the `{..._dir}` placeholders of a seed default.
pub(crate) fn expand(default: &str, dirs: &Dirs) -> String {
    let dir = |p: &std::path::Path| p.to_string_lossy().trim_end_matches('/').to_string();
    default
        .replace("{data_dir}", &dir(&dirs.data_dir))
        .replace("{run_dir}", &dir(&dirs.run_dir))
        .replace("{log_dir}", &dir(&dirs.log_dir))
        .replace("{config_dir}", &dir(&dirs.config_dir))
}

/// A validated value, before it is narrowed to its field's type.
#[derive(Debug)]
pub(crate) enum Parsed {
    Int(u64),
    Bool(bool),
    Secs(Duration),
    Text(String),
    Opt(Option<String>),
    List(Vec<String>),
    Auth(Option<BasicAuth>),
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            K::Host => "host",
            K::Port => "port",
            K::Count => "integer >= 1",
            K::Number => "integer >= 0",
            K::Level => "integer 1-6",
            K::Bytes => "size (bytes, K/M/G)",
            K::Bool => "bool",
            K::Seconds => "seconds",
            K::Text => "string",
            K::OptText => "string (optional)",
            K::Path => "path",
            K::OptPath => "path (optional)",
            K::DbUrl => "database URL",
            K::Auth => "user:pass (optional)",
            K::TaskList => "list of task types",
            K::NameList => "list of names",
            K::PathList => "list of directories",
            K::TypeList => "list of s|d",
            K::Tls => "none|starttls|tls",
            K::OptUrl => "URL (optional)",
            K::OptStore => "directory or s3://bucket/prefix (optional)",
            K::Roles => "list of intake|distiller|tasks",
            K::Rule => "task rule",
            K::UrlList => "list of URLs",
            K::Encode => "raw|urlencoded|base64|textxml|json",
            K::Shard => "auto|none|OFFSET/INCREMENT",
        }
    }

    /// Whether a valid value can hold a `#`: only then is a value cut at ` #` worth a
    /// warning (`port = 80  # http` is a plain comment).
    pub(crate) fn may_hold_hash(self) -> bool {
        matches!(
            self,
            K::Text
                | K::OptText
                | K::Path
                | K::OptPath
                | K::DbUrl
                | K::Auth
                | K::NameList
                | K::PathList
                | K::OptUrl
                | K::OptStore
                | K::UrlList
        )
    }

    /// Checks and converts a trimmed value; the error says what was expected.
    pub(crate) fn parse(self, v: &str) -> Result<Parsed, String> {
        let text = |ok: bool, expected: &str| {
            if ok {
                Ok(Parsed::Text(v.to_string()))
            } else {
                Err(expected.to_string())
            }
        };
        match self {
            K::Host => text(!v.is_empty() && !v.contains(char::is_whitespace), "a host name or IP address"),
            K::Port => int(v, 0, u16::MAX.into()).map_err(|_| "a port number from 0 to 65535".into()),
            K::Count => int(v, 1, u32::MAX.into()),
            K::Number => int(v, 0, u32::MAX.into()),
            K::Level => int(v, 1, 6).map_err(|_| "a log level from 1 (critical) to 6 (debug)".into()),
            K::Bytes => bytes(v)
                .map(Parsed::Int)
                .ok_or_else(|| "a size in bytes >= 1, optionally with a K, M or G suffix (e.g. 16M)".into()),
            K::Bool => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Parsed::Bool(true)),
                "false" | "no" | "off" | "0" => Ok(Parsed::Bool(false)),
                _ => Err("true or false (or yes/no, on/off, 1/0)".into()),
            },
            K::Seconds => v
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map(Parsed::Secs)
                .ok_or_else(|| "a number of seconds > 0 (e.g. 1 or 0.5)".into()),
            K::Text => text(!v.is_empty(), "a non-empty value"),
            K::Path => text(!v.is_empty(), "a path"),
            K::OptText | K::OptPath => Ok(Parsed::Opt((!v.is_empty()).then(|| v.to_string()))),
            K::DbUrl => text(
                ["sqlite:", "mysql:", "mariadb:"].iter().any(|p| v.starts_with(p)),
                "a database URL starting with sqlite:, mysql: or mariadb:",
            ),
            K::Auth => match v.split_once(':') {
                _ if v.is_empty() => Ok(Parsed::Auth(None)),
                Some((user, password)) if !user.is_empty() => {
                    Ok(Parsed::Auth(Some(BasicAuth { user: user.into(), password: password.into() })))
                }
                _ => Err("user:password with a non-empty user (or nothing, to disable)".into()),
            },
            K::TaskList => list(v, |t| TASK_TYPES.contains(&t), &format!("task types ({})", TASK_TYPES.join(", "))),
            K::NameList => list(v, |_| true, "names"),
            K::PathList => list(v, |_| true, "directories"),
            K::TypeList => list(v, |t| t == "s" || t == "d", "column types s or d"),
            K::Tls => text(["none", "starttls", "tls"].contains(&v), "none, starttls or tls"),
            K::OptUrl => match v {
                "" => Ok(Parsed::Opt(None)),
                _ if (v.starts_with("http://") || v.starts_with("https://")) && v.len() > 8 => {
                    Ok(Parsed::Opt(Some(v.to_string())))
                }
                _ => Err("an http:// or https:// URL (or nothing)".into()),
            },
            K::UrlList => {
                list(v, |u| u.starts_with("http://") || u.starts_with("https://"), "http:// or https:// URLs")
            }
            K::Encode => text(ENCODINGS.contains(&v), "raw, urlencoded, base64, textxml or json"),
            K::Shard => v.parse::<crate::domain::shard::ShardSetting>().map(|_| Parsed::Text(v.to_string())),
            K::Rule => crate::domain::tasks::Condition::parse(v).map(|_| Parsed::Text(v.to_string())),
            K::Roles => match list(v, |r| ROLES.contains(&r), "roles (intake, distiller, tasks)")? {
                Parsed::List(l) if l.is_empty() => Err("at least one of intake, distiller, tasks".into()),
                other => Ok(other),
            },
            K::OptStore => match v {
                "" => Ok(Parsed::Opt(None)),
                _ if crate::storage::S3Location::parse(v).is_some() || !v.contains("://") => {
                    Ok(Parsed::Opt(Some(v.into())))
                }
                _ => Err("a directory or s3://bucket/prefix (bucket of 3-63 characters)".into()),
            },
        }
    }
}

/// A whole number in `min..=max`; says "from min to max" only when the value
/// was too big, because the cap is rarely the user's mistake.
fn int(v: &str, min: u64, max: u64) -> Result<Parsed, String> {
    let too_big = match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => return Ok(Parsed::Int(n)),
        Ok(n) => n > max,
        Err(_) => !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
    };
    Err(if too_big { format!("a whole number from {min} to {max}") } else { format!("a whole number >= {min}") })
}

/// `16M` -> 16 MiB. Zero is refused: no size limit of nothing makes sense.
fn bytes(v: &str) -> Option<u64> {
    let shift = match v.chars().last()? {
        'k' | 'K' => 10,
        'm' | 'M' => 20,
        'g' | 'G' => 30,
        _ => 0,
    };
    let digits = if shift == 0 { v } else { v[..v.len() - 1].trim_end() };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift).filter(|n| *n >= 1)
}

/// A comma list; empty value is an empty list, an empty item is an error
/// (it would shift column lists such as `billing-feeder.field_names`).
fn list(v: &str, ok: impl Fn(&str) -> bool, what: &str) -> Result<Parsed, String> {
    if v.is_empty() {
        return Ok(Parsed::List(Vec::new()));
    }
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
    match items.iter().find(|s| s.is_empty() || !ok(s)) {
        None => Ok(Parsed::List(items)),
        Some(bad) if bad.is_empty() => Err(format!("a comma-separated list of {what}; got an empty entry")),
        Some(bad) => Err(format!("a comma-separated list of {what}; got '{bad}'")),
    }
}

/// Narrows a [`Parsed`] to a field type; `None` if the registry kind does not
/// fit the field (a bug that the seed-default tests catch).
pub(crate) trait FromParsed: Sized {
    fn from_parsed(p: Parsed) -> Option<Self>;
}

macro_rules! from_parsed {
    ($($t:ty: $pat:pat => $e:expr),* $(,)?) => {
        $(impl FromParsed for $t {
            fn from_parsed(p: Parsed) -> Option<Self> {
                match p { $pat => $e, _ => None }
            }
        })*
    };
}

from_parsed! {
    u8: Parsed::Int(n) => n.try_into().ok(),
    u16: Parsed::Int(n) => n.try_into().ok(),
    u32: Parsed::Int(n) => n.try_into().ok(),
    usize: Parsed::Int(n) => n.try_into().ok(),
    u64: Parsed::Int(n) => Some(n),
    bool: Parsed::Bool(b) => Some(b),
    Duration: Parsed::Secs(d) => Some(d),
    String: Parsed::Text(s) => Some(s),
    PathBuf: Parsed::Text(s) => Some(s.into()),
    Vec<String>: Parsed::List(items) => Some(items),
    Option<String>: Parsed::Opt(s) => Some(s),
    Option<PathBuf>: Parsed::Opt(s) => Some(s.map(PathBuf::from)),
    Option<BasicAuth>: Parsed::Auth(a) => Some(a),
}
