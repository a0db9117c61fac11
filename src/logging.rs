//! The seed's log levels (1 critical … 6 debug) onto tracing. The service logs to stdout, to a file
//! (`log.file`, reopened on SIGHUP so logrotate can move it) or to syslog (`log.facility`,
//! RFC 3164 datagrams to `log.syslog_socket`). `RUST_LOG` overrides the level.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

pub fn filter_for(level: u8) -> &'static str {
    match level {
        0..=2 => "cdrmunch=error,warn",
        3 => "cdrmunch=warn,warn",
        4 => "cdrmunch=info,warn",
        5 => "cdrmunch=debug,warn",
        _ => "cdrmunch=trace,info",
    }
}

fn filter(level: u8) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(level)))
}

/// Logs of the other commands go to stderr (stdout is for their output, e.g. `normalize`).
/// Colour only on a terminal: a file or a pipe gets plain lines.
pub fn init(level: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Where the service logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    /// Facility code (e.g. 3 = daemon, 16..23 = local0..local7) and the socket.
    Syslog {
        facility: u8,
        socket: PathBuf,
    },
}

/// Syslog facility names to codes.
pub fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)).map(|p| p as u8)
}

/// Reopens the log file (SIGHUP); a no-op for stderr and syslog.
#[derive(Clone, Default)]
pub struct Reopen(Option<Arc<ReopenableFile>>);

impl Reopen {
    pub fn reopen(&self) -> io::Result<()> {
        match &self.0 {
            Some(f) => f.reopen(),
            None => Ok(()),
        }
    }
}

/// Installs the service's logger. Errors name what could not be opened.
pub fn init_service(level: u8, target: &Target) -> Result<Reopen, String> {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(level)).with_target(false);
    match target {
        Target::Stdout => {
            // colour codes only on a terminal: a pipe or a file (systemd, docker, `> log`) gets plain lines
            let _ = builder.with_ansi(io::stdout().is_terminal()).with_writer(io::stdout).try_init();
            Ok(Reopen(None))
        }
        Target::File(path) => {
            let f = Arc::new(ReopenableFile::open(path).map_err(|e| format!("log.file {}: {e}", path.display()))?);
            let _ = builder.with_ansi(false).with_writer(f.clone()).try_init();
            Ok(Reopen(Some(f)))
        }
        Target::Syslog { facility, socket } => {
            let sock = UnixDatagram::unbound().map_err(|e| format!("syslog: {e}"))?;
            sock.connect(socket).map_err(|e| format!("syslog socket {}: {e}", socket.display()))?;
            let writer = Syslog { sock: Arc::new(sock), facility: *facility };
            let _ = builder.with_ansi(false).without_time().with_level(false).with_writer(writer).try_init();
            Ok(Reopen(None))
        }
    }
}

/// An append-mode log file that can be reopened under the same name.
pub struct ReopenableFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl ReopenableFile {
    fn open(path: &Path) -> io::Result<ReopenableFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ReopenableFile { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    fn reopen(&self) -> io::Result<()> {
        let fresh = OpenOptions::new().create(true).append(true).open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// `Arc<ReopenableFile>` is the subscriber's writer: tracing-subscriber writes through `&W`.
impl Write for &ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// One datagram per event: `<PRI>cdrmunch[pid]: message`.
#[derive(Clone)]
struct Syslog {
    sock: Arc<UnixDatagram>,
    facility: u8,
}

pub struct SyslogEvent {
    sock: Arc<UnixDatagram>,
    pri: u8,
    buf: Vec<u8>,
}

impl Write for SyslogEvent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogEvent {
    fn drop(&mut self) {
        let msg = String::from_utf8_lossy(&self.buf);
        let line = format!("<{}>cdrmunch[{}]: {}", self.pri, std::process::id(), msg.trim_end());
        // a full or absent syslog must never stop the service
        let _ = self.sock.send(line.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogEvent;
    fn make_writer(&'a self) -> SyslogEvent {
        SyslogEvent { sock: self.sock.clone(), pri: self.facility * 8 + 6, buf: Vec::new() }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogEvent {
        let severity = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        SyslogEvent { sock: self.sock.clone(), pri: self.facility * 8 + severity, buf: Vec::new() }
    }
}
