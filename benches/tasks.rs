//! Tasks/s per task type with local sinks: N normalized CDRs, each with one task of the type,
//! are committed up front; then the service starts and the time until every task is done is
//! measured. Sinks: the billing/CDR database itself (billing, calllog), a local directory
//! (recordingDelivery), a local HTTP server answering 200 (SMSSend, CDR2SFAPI, transcription)
//! and aiosmtpd (emailer) when the test venv is there.
//!
//!     cargo bench --bench tasks -- [--count N] [--threads T] [--db sqlite|mysql|both] [--dir DIR]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdrmunch::actors::Hooks;
use cdrmunch::app::App;
use cdrmunch::config::Settings;
use cdrmunch::store::{NewNormalizedCdr, NormalizedCdrs, Repository};

struct Args {
    count: usize,
    threads: usize,
    dbs: Vec<&'static str>,
    dir: PathBuf,
}

fn args() -> Args {
    let mut a = Args { count: 2000, threads: 5, dbs: vec!["sqlite", "mysql"], dir: std::env::temp_dir() };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--count" => a.count = next.parse().expect("--count N"),
            "--threads" => a.threads = next.parse().expect("--threads T"),
            "--db" => {
                a.dbs = match next.as_str() {
                    "sqlite" => vec!["sqlite"],
                    "mysql" => vec!["mysql"],
                    _ => vec!["sqlite", "mysql"],
                }
            }
            "--dir" => a.dir = PathBuf::from(next),
            "--bench" => {
                i += 1;
                continue;
            }
            _ => {}
        }
        i += 2;
    }
    a
}

/// The same normalized document for every call but its uuid: a missed inbound call with a
/// recording, so every handler finds what it needs.
fn ncdr(uuid: &str, task: &str, recording: &Path) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<cdr-normalized>\n  <data>\n\
         <uuid record=\"true\">{uuid}</uuid><TableSuffix record=\"true\">20231114</TableSuffix>\
         <rmOrgID record=\"true\">77</rmOrgID><leg>A</leg><direction>inbound</direction>\
         <caller_id_number>1001</caller_id_number><destination_number>2000</destination_number>\
         <start_epoch>1700000000</start_epoch><answer_epoch>1700000003</answer_epoch>\
         <end_epoch>1700000045</end_epoch><duration>45</duration><billsec>42</billsec>\
         <hangup_cause>NORMAL_CLEARING</hangup_cause><recording_path>{}</recording_path>\n  </data>\n\
         <tasks><task type=\"{task}\"><quantity>42</quantity><to>ops@example.com</to></task></tasks>\n</cdr-normalized>\n",
        recording.display()
    )
}

async fn http_sink() -> String {
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        if uri.path().ends_with("/token") {
            // Salesforce OAuth; instance_url is filled by the caller's base (same server)
            (axum::http::StatusCode::OK, "TOKEN".to_string())
        } else {
            (axum::http::StatusCode::OK, "{}".to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let base = url.clone();
    let app = app.layer(axum::middleware::map_response(move |r: axum::response::Response| {
        let base = base.clone();
        async move {
            let (parts, body) = r.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let text =
                if text == "TOKEN" { format!("{{\"access_token\":\"t\",\"instance_url\":\"{base}\"}}") } else { text };
            axum::response::Response::from_parts(parts, axum::body::Body::from(text))
        }
    }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

struct Smtpd(std::process::Child, u16);

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn smtpd(dir: &Path) -> Option<Smtpd> {
    let venv = std::env::var_os("CDRMUNCH_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cdrmunch/test-venv")
    });
    let bin = venv.join("bin/aiosmtpd");
    if !bin.exists() {
        return None;
    }
    let maildir = dir.join("mail");
    for s in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(s)).ok()?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new(bin)
        .args(["-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Smtpd(child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

async fn run_one(db: &str, task: &str, a: &Args, sink: &str, smtp: Option<u16>) -> Option<String> {
    let dir = tempfile::tempdir_in(&a.dir).unwrap();
    let d = dir.path();
    let mut s = Settings::embedded_default(d);
    s.server.port = 0;
    s.metrics.enabled = false;
    s.log.level = 2;
    s.tasksd.executor_threads = a.threads;
    s.tasksd.poll_interval = Duration::from_millis(200);
    let mysql_db = format!("cdrmunch_taskbench_{}", std::process::id());
    if db == "mysql" {
        let base = std::env::var("CDRMUNCH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        s.database.cdrdb_url = format!("{base}/{mysql_db}");
        s.database.billingdb_url = s.database.cdrdb_url.clone();
    }
    let recording = d.join("rec.wav");
    std::fs::write(&recording, vec![7u8; 64 * 1024]).unwrap();
    match task {
        "recordingDelivery" | "transcription" => {
            s.recordings.delivery_target = Some(d.join("delivered").display().to_string());
            s.recordings.source_dirs = vec![d.to_path_buf()];
        }
        _ => {}
    }
    match task {
        "SMSSend" => s.sms.url = Some(format!("{sink}/sms")),
        "transcription" => s.transcription.url = Some(format!("{sink}/jobs")),
        "CDR2SFAPI" => {
            s.salesforce.login_url = Some(sink.to_string());
            s.salesforce.client_id = Some("c".into());
            s.salesforce.client_secret = Some("s".into());
        }
        "emailer" => {
            s.emailer.smtp_host = Some("127.0.0.1".into());
            s.emailer.smtp_port = smtp?;
            s.emailer.tls = "none".into();
            s.emailer.from = Some("pcp@example.com".into());
        }
        _ => {}
    }
    let store = match cdrmunch::app::open_repository(&s).await {
        Ok(r) => r,
        Err(e) => return Some(format!("{db:6} {task:18} skipped: {e}")),
    };
    // transcription needs the recording delivered first: deliver it for every call up front
    let ncdr_dir = d.join("ncdr-bench");
    std::fs::create_dir_all(&ncdr_dir).unwrap();
    let mut batch = Vec::new();
    for i in 0..a.count {
        let uuid = uuid::Uuid::new_v4();
        let path = ncdr_dir.join(format!("{uuid}.xml"));
        std::fs::write(&path, ncdr(&uuid.to_string(), task, &recording)).unwrap();
        if task == "transcription" {
            let key = d.join(format!("delivered/2023/11/14/{uuid}.wav"));
            std::fs::create_dir_all(key.parent().unwrap()).unwrap();
            std::fs::write(&key, vec![7u8; 64 * 1024]).unwrap();
        }
        let row = NewNormalizedCdr {
            uuid: *uuid.as_bytes(),
            path: path.display().to_string(),
            cdr_path: String::new(),
            table_suffix: 20231114,
            org_id: 77,
            tasks: vec![(task.parse().unwrap(), 0)],
            links: None,
        };
        batch.push((i as u64 + 1, row));
        if batch.len() == 500 || i + 1 == a.count {
            store.commit_normalized(&batch, chrono::Utc::now()).await.unwrap();
            batch.clear();
        }
    }
    let started = Instant::now();
    let repo: Arc<dyn Repository> = Arc::new(store.clone());
    let app = App::start_with_repository(&s, Hooks::default(), store.clone(), repo).await.unwrap();
    let deadline = started + Duration::from_secs(600);
    let (done, errors) = loop {
        let counts = store.task_counts().await.unwrap();
        let n = |state: &str| counts.iter().filter(|(t, d, _)| *t == task && *d == state).map(|c| c.2).sum::<u64>();
        if n("y") + n("error") >= a.count as u64 || Instant::now() > deadline {
            break (n("y"), n("error"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    app.shutdown(Duration::from_secs(5)).await;
    if db == "mysql" {
        use sqlx::Connection;
        let base = std::env::var("CDRMUNCH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        if let Ok(mut c) = sqlx::MySqlConnection::connect(&base).await {
            let _ =
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{mysql_db}`"))).execute(&mut c).await;
        }
    }
    Some(format!(
        "{db:6} {task:18} threads={} {done:>6} done {errors:>3} errors in {secs:6.2}s: {:>8.0} tasks/s",
        a.threads,
        done as f64 / secs
    ))
}

#[tokio::main]
async fn main() {
    let a = args();
    let sink = http_sink().await;
    let mail_dir = tempfile::tempdir_in(&a.dir).unwrap();
    let smtp = smtpd(mail_dir.path());
    if smtp.is_none() {
        println!("(aiosmtpd not found: emailer skipped; scripts/test.sh installs it)");
    }
    for db in &a.dbs {
        for task in ["billing", "calllog", "recordingDelivery", "transcription", "SMSSend", "CDR2SFAPI", "emailer"] {
            if let Some(line) = run_one(db, task, &a, &sink, smtp.as_ref().map(|s| s.1)).await {
                println!("{line}");
            }
        }
    }
}
