//! The command line's shape: every subcommand, its flags and its `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::gen::GenFormat;
use super::submit::Encode;

#[derive(Parser)]
#[command(
    name = "cdrmunch",
    version,
    about = "Post-call processing for FreeSWITCH: CDR intake, normalization, post-call tasks"
)]
#[command(long_about = "cdrmunch receives FreeSWITCH CDRs over HTTP (mod_xml_cdr / mod_json_cdr), queues them \
durably in MySQL/MariaDB or SQLite, normalizes each into <cdr-normalized> XML with distillery workers and \
derives and executes the post-call tasks (billing feed, call log, email, SMS, Salesforce, recording delivery, \
transcription).\n\nWith no --config, `serve` runs on the embedded default: SQLite and local storage \
under ./data (or $CDRMUNCH_DATA_DIR), HTTP on 127.0.0.1:8080.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct ConfigArgs {
    /// Config file in the seed's format (`key = value`, `@require = file`, `key@ENV = value`).
    /// Without it: the embedded default under ./data.
    #[arg(long, short = 'c', env = "CDRMUNCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Environment whose `key@ENV` overrides apply (e.g. prod).
    #[arg(long, env = "CDRMUNCH_ENV")]
    pub env: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service: HTTP intake, the distilleries and the post-call task executors (all
    /// three unless --roles says otherwise). SIGTERM/SIGINT stop it gracefully (in-flight CDRs
    /// and tasks finish, unstarted claims are released); SIGHUP reopens the log file.
    /// Exit status: 0 stopped cleanly, 1 the supervision tree gave up after repeated
    /// failures, 2 could not start (config, pid file, listener, database).
    Serve {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// How long shutdown waits for in-flight CDRs.
        #[arg(long, default_value_t = 30)]
        drain_seconds: u64,
        /// What this process runs, comma separated: intake (HTTP CDR intake), distiller,
        /// tasks (tasksd). Default: app.roles, which defaults to all three. Split roles over
        /// processes sharing one database to run the seed's hurler, distiller and tasksd apart.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
    },
    /// Create or upgrade the CDR database schema (serve also does this on start).
    Migrate {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Print the normalized XML for one CDR file (bare XML/JSON or a captured cdr= body),
    /// without a server, exactly as the service configured by --config would normalize it
    /// (field map, org directory, rate deck, task rules). Exit 1 with the reason when the CDR
    /// cannot be normalized.
    Normalize {
        file: PathBuf,
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Task types to leave out, comma separated (added to the config's).
        #[arg(long, default_value = "")]
        disabled_tasks: String,
        /// Rate deck CSV to rate the call with (instead of the config's `rating.deck`).
        #[arg(long)]
        rates: Option<PathBuf>,
        /// Country code for national numbers when rating (instead of `rating.default_country_code`).
        #[arg(long)]
        country_code: Option<String>,
    },
    /// Post CDR files or directories to a running cdrmunch as mod_xml_cdr / mod_json_cdr would.
    /// Exit 1 unless every POST got a 2xx.
    Submit {
        /// Files or directories (searched for *.xml and *.json).
        #[arg(required_unless_present = "generate")]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "http://127.0.0.1:8080/api/v2/cdr")]
        url: String,
        #[arg(long, value_enum, default_value_t = Encode::Urlencoded)]
        encode: Encode,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// HTTP Basic credentials, user:pass (mod_xml_cdr's cred=).
        #[arg(long)]
        basic_auth: Option<String>,
        /// Post N generated CDRs instead of files.
        #[arg(long)]
        generate: Option<usize>,
        #[arg(long, value_enum, default_value_t = GenFormat::Xml)]
        format: GenFormat,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write uuid,start_ns,end_ns,status per POST to this CSV.
        #[arg(long)]
        timings: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
    },
    /// Ship CDR files from a FreeSWITCH host to intake (the seed's ArchiveD).
    ///
    /// Watches the directories mod_xml_cdr / mod_json_cdr write ([a_]<uuid>.cdr.xml /
    /// .cdr.json in log-dir, err-log-dir) and posts each finished file as the module would
    /// (?uuid=[a_]<uuid>, the --encode body).
    ///
    /// A file leaves its directory only after intake's 2xx (removed with --delete, or moved to
    /// --done-dir). A 4xx moves it to rejected/ inside its directory with <name>.reason (status
    /// and answer), never retried. No answer or a 5xx: the next --url at once, then backoff with
    /// jitter. kill -9 loses nothing: at worst a file is posted twice (intake answers 200).
    ///
    /// SIGTERM/SIGINT: no new files, POSTs in flight finish (ship.drain_seconds), exit 0.
    /// Exit status: 0 (with --once: every file accepted), 1 --once left files rejected or
    /// not delivered (the summary names them), 2 could not start.
    #[command(after_help = "Flags override the ship.* keys of --config (`cdrmunch config --keys` lists them); \
--dir adds to ship.dirs, --url replaces ship.urls.\n\nExample, after an incident:\n  \
cdrmunch ship --once --dir /var/log/freeswitch/xml_cdr_failed --url http://cdr-box:8080/api/v2/cdr --delete")]
    Ship(ShipArgs),
    /// Generate realistic FreeSWITCH CDRs into a directory (a_<uuid>.cdr.xml / <uuid>.cdr.json).
    Gen {
        #[arg(long, short = 'n', default_value_t = 100)]
        count: usize,
        #[arg(long, short = 'o')]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = GenFormat::Xml)]
        format: GenFormat,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The seed's health checks in one report: cdr_queue by state, CDRs stuck over an hour,
    /// tasks by type and state, recent CDR and task errors with their descriptions.
    Status {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// How many recent errors of each kind to list.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Put failed work back: done='n', retry=0, due now. Prints how many rows changed.
    /// A running cdrmunch picks them up at its next poll.
    Retry {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// One cdr_queue row (not one already done).
        #[arg(long, conflicts_with_all = ["task", "errors"])]
        cdr: Option<u64>,
        /// One task, whatever its state (a done task runs again: a resend).
        #[arg(long, conflicts_with = "errors")]
        task: Option<u64>,
        /// Every CDR in error (without --type), or every failed task (with --type, of that type;
        /// --type all for every type).
        #[arg(long)]
        errors: bool,
        #[arg(long = "type", requires = "errors")]
        task_type: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The seed's purge: normalized CDRs older than DUR whose tasks have all finished are
    /// archived (with --archive-to), their files and rows deleted, in batches; rerun to resume.
    /// cdr_queue rows and raw CDR files stay (intake uses the queue rows to recognise a CDR
    /// posted again).
    Purge {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Age of the normalized CDRs to purge: 90d, 12h, 2w ...
        #[arg(long)]
        older_than: String,
        /// Copy each normalized CDR here first: a directory or s3://bucket/prefix.
        #[arg(long)]
        archive_to: Option<String>,
        /// Count what would go, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-normalize the CDRs received in a time range after a rules change: the normalized XML
    /// is rewritten and task rows reconciled (tasks that ran stay; new task types are added;
    /// pending ones no longer derived are dropped). Running it twice changes nothing more.
    Replay {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Start (inclusive): 2026-11-01, 2026-11-01T10:00:00 (UTC) or epoch seconds.
        #[arg(long)]
        from: String,
        /// End (exclusive), same forms.
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// The whole story of one call leg: raw file(s), its cdr_queue row and error, a row still
    /// in the intake spool, the normalized CDR, every task with its attempts and last error,
    /// and re-posts that differed. The first command to type when a call is asked about.
    /// Exit 1 when nothing knows the uuid.
    Why {
        /// The call leg's uuid.
        uuid: String,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
    /// The call a leg belongs to, as billing and the call log see it: its call id (the first
    /// A-leg), caller, callee, times, talk seconds, the cause that ended it, and every leg
    /// with its role (caller, callee, transfer, loopback). Exit 1 when no call knows the uuid.
    Call {
        /// The uuid of any leg of the call.
        uuid: String,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
    /// Rate the billed calls received in a range again against a new rate deck. Prints, per
    /// org, the calls whose rating changes, their old and new charge and the difference
    /// (exact to a millionth); changes nothing without --apply. With --apply the normalized
    /// CDRs get the new rating and the billing feed one adjustment row per changed call
    /// (billingEventType = rerate, keyed by uuid + rerate id: applying the same deck twice adds
    /// nothing); no other task runs again.
    Rerate {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The new rate deck (CSV like config/rates.csv).
        #[arg(long)]
        deck: PathBuf,
        /// Start (inclusive) of the range of receipt: 2026-11-01, 2026-11-01T10:00:00 (UTC) or epoch seconds.
        #[arg(long)]
        from: String,
        /// End (exclusive), same forms.
        #[arg(long)]
        to: String,
        /// Only this org's calls (rmOrgID).
        #[arg(long)]
        org: Option<i64>,
        /// Write the new rating and the adjustments.
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show configuration: every known key with its type, default and meaning, or the
    /// resolved settings of a config file.
    Config {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// List every known key instead.
        #[arg(long)]
        keys: bool,
    },
}

/// `cdrmunch ship`'s flags; each overrides its `ship.*` key.
#[derive(clap::Args)]
pub struct ShipArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// A directory to ship from (repeatable): mod_xml_cdr's log-dir or err-log-dir.
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Intake URL (repeatable), e.g. http://cdr-box:8080/api/v2/cdr; on failure the next is tried.
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Body form, as mod_xml_cdr's encode= param [default: ship.encode, urlencoded].
    #[arg(long, value_enum)]
    pub encode: Option<Encode>,
    /// HTTP Basic credentials, user:pass (mod_xml_cdr's cred=).
    #[arg(long, value_name = "USER:PASS")]
    pub basic_auth: Option<String>,
    /// Ship what is there now and exit (0 when all were accepted): for sweeping an
    /// err-log-dir by hand. Shows a progress bar on a terminal.
    #[arg(long)]
    pub once: bool,
    /// Keep accepted files here (moved; created if missing).
    #[arg(long, value_name = "DIR", conflicts_with = "delete")]
    pub done_dir: Option<PathBuf>,
    /// Remove accepted files.
    #[arg(long)]
    pub delete: bool,
    /// POSTs in flight at once [default: ship.concurrency, 4].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Serve Prometheus /metrics on this port [default: ship.metrics_port; 0 = none].
    #[arg(long)]
    pub metrics_port: Option<u16>,
}
