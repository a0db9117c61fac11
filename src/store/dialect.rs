//! Everything that differs between the two engines, in one place. The queries themselves
//! are written once and run on both through sqlx's `Any` driver; what a query cannot say the
//! same way on both (duplicate handling, row locks, how a write transaction starts, session
//! settings, which errors mean "run the transaction again") comes from here.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default: one file, WAL, `synchronous=FULL`.
    Sqlite,
    /// MySQL ≥ 8.0, MariaDB ≥ 10.6, Aurora MySQL.
    Mysql,
}

/// ER_BAD_DB_ERROR: the database named in the URL does not exist yet.
const ER_BAD_DB: u16 = 1049;
/// ER_LOCK_DEADLOCK and ER_LOCK_WAIT_TIMEOUT: InnoDB rolled the transaction back and asks
/// for it to be restarted.
const ER_RESTART_TRANSACTION: [u16; 2] = [1213, 1205];

impl Dialect {
    /// The engine a `cdrdb.url` / `billingdb.url` names, and the URL the driver takes.
    pub fn of(url: &str) -> Result<(Dialect, String), StoreError> {
        if url.starts_with("sqlite:") {
            // create the file when missing, as the embedded default expects
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = if url.contains("mode=") { url.to_string() } else { format!("{url}{sep}mode=rwc") };
            Ok((Dialect::Sqlite, url))
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Ok((Dialect::Mysql, url.replacen("mariadb:", "mysql:", 1)))
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Mysql => "mysql",
        }
    }

    /// SQLite writers serialise on one lock, and every extra connection keeps a page cache
    /// that each commit elsewhere invalidates: a few connections do more than many.
    pub(crate) fn pool_size(self, wanted: u32) -> u32 {
        match self {
            Dialect::Sqlite => wanted.clamp(2, 4),
            Dialect::Mysql => wanted.max(1),
        }
    }

    /// Run on every new connection.
    pub(crate) fn session_setup(self) -> &'static [&'static str] {
        match self {
            // a commit is on disk before intake answers 200; writers wait for the lock
            Dialect::Sqlite => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA busy_timeout = 30000",
                "PRAGMA foreign_keys = ON",
            ],
            // Under InnoDB's default REPEATABLE READ a claim's FOR UPDATE takes next-key locks
            // on every index record it scans, which blocks intake's inserts and the
            // committer's updates of the same `done='n'` range.
            Dialect::Mysql => &["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"],
        }
    }

    /// SQLite: take the write lock up front, since a deferred transaction that upgrades
    /// can deadlock. InnoDB locks rows as it goes.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Mysql => "BEGIN",
        }
    }

    /// Appended to an `INSERT … VALUES …` so a row whose unique key exists is skipped, and
    /// only that (MySQL's `INSERT IGNORE` would also swallow truncation and bad values).
    /// MySQL then counts a skipped row as affected (sqlx asks for found rows).
    pub fn skip_duplicates(self) -> &'static str {
        match self {
            Dialect::Sqlite => " ON CONFLICT DO NOTHING",
            Dialect::Mysql => " ON DUPLICATE KEY UPDATE id = id",
        }
    }

    /// The sinks' insert verb (billing feed, call log): a repeated row is skipped and not
    /// counted, and (as the seed's feeder did) a value the column cannot hold is stored as
    /// best it can rather than refused.
    pub fn insert_or_ignore(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::Mysql => "INSERT IGNORE",
        }
    }

    /// Appended to an `INSERT` so a row whose `key` exists has `columns` overwritten.
    pub fn upsert(self, key: &str, columns: &[&str]) -> String {
        let set = |f: &dyn Fn(&str) -> String| columns.iter().map(|c| f(c)).collect::<Vec<_>>().join(", ");
        match self {
            Dialect::Sqlite => {
                format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set(&|c| format!("{c} = excluded.{c}")))
            }
            Dialect::Mysql => format!(" ON DUPLICATE KEY UPDATE {}", set(&|c| format!("{c} = VALUES({c})"))),
        }
    }

    /// Appended to a claim's `SELECT`: several processes share one queue on MySQL; SQLite's
    /// `BEGIN IMMEDIATE` already made the transaction the only writer.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Mysql => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Whether another writer's transaction can run beside this one (InnoDB locks rows);
    /// SQLite's `BEGIN IMMEDIATE` makes a writer the only one.
    pub(crate) fn locks_rows(self) -> bool {
        matches!(self, Dialect::Mysql)
    }

    /// Appended to a read whose row the transaction then updates.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Mysql => " FOR UPDATE",
        }
    }

    /// Quotes an identifier taken from configuration (the billing table and its columns).
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Sqlite => format!("\"{ident}\""),
            Dialect::Mysql => format!("`{ident}`"),
        }
    }

    /// The rollback InnoDB prescribes a restart for: a deadlock victim or a lock wait
    /// timeout. Cheaper to run again than to fail a POST or back a batch off.
    pub(crate) fn must_restart(self, e: &sqlx::Error) -> bool {
        self == Dialect::Mysql && mysql_error_number(e).is_some_and(|n| ER_RESTART_TRANSACTION.contains(&n))
    }

    /// What must exist before the pool can connect: SQLite's directory, MySQL's database.
    pub(crate) async fn prepare(self, url: &str) -> Result<(), StoreError> {
        match self {
            Dialect::Sqlite => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                let path = std::path::Path::new(path.split('?').next().unwrap_or_default());
                match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => {
                        std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))
                    }
                    _ => Ok(()),
                }
            }
            Dialect::Mysql => {
                let opts = MySqlConnectOptions::from_str(url).map_err(|_| StoreError::BadUrl(url.to_string()))?;
                match opts.connect().await {
                    Ok(conn) => Ok(conn.close().await?),
                    Err(e) if mysql_error_number(&e) == Some(ER_BAD_DB) => {
                        let db = opts.get_database().unwrap_or_default().replace('`', "``");
                        let mut conn = opts.clone().database("").connect().await?;
                        let create = format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4");
                        sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut conn).await?;
                        Ok(conn.close().await?)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// How long a caller waits for a pooled connection before the database counts as down.
    pub(crate) fn acquire_timeout(self) -> Duration {
        match self {
            Dialect::Sqlite => Duration::from_secs(30),
            Dialect::Mysql => Duration::from_secs(10),
        }
    }
}

fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|m| m.number()),
        _ => None,
    }
}

/// sqlx 0.9.0 stopped setting TCP_NODELAY on its sockets (upstream issue #4335). A write
/// that follows one the server does not answer (a statement-cache eviction's
/// COM_STMT_CLOSE, then the next PREPARE) then waits for the server's delayed ACK: 40–200 ms
/// stalls that measured as 40 ms batch commits. sqlx offers no socket hook, so right after
/// each connect every TCP socket of the process gets TCP_NODELAY — which every latency-
/// sensitive client sets anyway (hyper does for HTTP). Remove once sqlx sets it again.
pub(crate) fn set_tcp_nodelay_on_sockets() {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in fds.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<libc::c_int>().ok()) else { continue };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt only reads the option value we pass; on a socket that is not
        // TCP (unix, UDP) it fails with an error that we ignore.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
