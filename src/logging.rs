//! The seed's log levels (1 critical … 6 debug) onto tracing. `RUST_LOG` overrides.

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

/// Logs to stderr (stdout stays for command output such as `normalize`).
pub fn init(level: u8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(level)));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
