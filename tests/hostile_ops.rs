//! The hardening issue's hostile operations: each test is named after the row it covers
//! (observed → must be) and fails on the behaviour the row observed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sinks::HttpRecorder;
use common::*;

use cdrmunch::actors::Hooks;

const WAIT: Duration = Duration::from_secs(30);

/// A mod_xml_cdr A-leg from 1001 to 2000 (answered for 42 s unless `answered` is false),
/// with extra channel variables.
fn cdr(uuid: &str, answered: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let (answer, billsec) = if answered { ("1700000003", "42") } else { ("0", "0") };
    let mut vars = format!(
        "<uuid>{uuid}</uuid><direction>inbound</direction><start_epoch>1700000000</start_epoch>\
         <answer_epoch>{answer}</answer_epoch><end_epoch>1700000045</end_epoch><duration>45</duration>\
         <billsec>{billsec}</billsec><hangup_cause>NORMAL_CLEARING</hangup_cause>"
    );
    for (k, v) in extra {
        vars.push_str(&format!("<{k}>{v}</{k}>"));
    }
    format!(
        "<?xml version=\"1.0\"?>\n<cdr switchname=\"fs1\"><variables>{vars}</variables>\
         <callflow><caller_profile><caller_id_number>1001</caller_id_number>\
         <destination_number>2000</destination_number><uuid>{uuid}</uuid></caller_profile></callflow></cdr>"
    )
    .into_bytes()
}

async fn post(app: &TestApp, doc: Vec<u8>) {
    let (status, body) = app.post_cdr(doc, "", "text/xml").await;
    assert_eq!(status, 200, "{body}");
}

fn task<'a>(tasks: &'a [cdrmunch::store::TaskState], ty: &str) -> &'a cdrmunch::store::TaskState {
    tasks.iter().find(|t| t.task_type == ty).unwrap_or_else(|| panic!("no {ty} task in {tasks:?}"))
}

/// Runs one statement with one bound id, as an operator would from the mysql/sqlite shell.
async fn operator_sql(db: Db, url: &str, sql: &'static str, id: u64) -> u64 {
    match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).bind(id as i64).execute(&pool).await.unwrap().rows_affected()
        }
        Db::Mysql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            sqlx::query(sql).bind(id as i64).execute(&pool).await.unwrap().rows_affected()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_8_recordings_are_read_only_as_regular_files_below_recordings_source_dirs() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (root, delivered) = (dir.path().join("fs-recordings"), dir.path().join("delivered"));
        std::fs::create_dir_all(&root).unwrap();
        let audio: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(root.join("call.wav"), &audio).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("escape.wav")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.wav")).unwrap();
        let fifo = std::ffi::CString::new(root.join("pipe.wav").display().to_string()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        let (r, d) = (root.clone(), delivered.display().to_string());
        let app = TestApp::start_with(
            db,
            |s| {
                s.recordings.source_dirs = vec![r];
                s.recordings.delivery_target = Some(d);
                s.tasksd.retry_backoff_seconds = 0;
                s.tasksd.max_retries = 1;
            },
            Hooks::default(),
            None,
        )
        .await;
        let rule = format!("is outside recordings.source_dirs ({})", root.display());
        let real_etc = std::fs::canonicalize("/etc/hostname").unwrap();
        let etc_really = match real_etc == Path::new("/etc/hostname") {
            true => "hostname ".to_string(),
            false => format!("hostname (really {}) ", real_etc.display()),
        };
        let refused = [
            (
                "/etc".to_string(),
                "hostname",
                format!("recording /etc/hostname {rule}").replace("hostname ", &etc_really),
            ),
            (root.display().to_string(), "escape.wav", format!("(really {}) {rule}", real_etc.display())),
            (
                format!("{}/../../../../../../../..", root.display()),
                "etc/hostname",
                format!("(really {}) {rule}", real_etc.display()),
            ),
            (root.display().to_string(), "zero.wav", format!("(really /dev/zero) {rule}")),
            (root.display().to_string(), "pipe.wav", "is not a regular file".to_string()),
        ];
        for (path, name, want) in &refused {
            let uuid = uuid::Uuid::new_v4().to_string();
            post(&app, cdr(&uuid, true, &[("record_path", path), ("record_name", name)])).await;
            let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
            let t = task(&tasks, "recordingDelivery");
            let msg = t.error_message.clone().unwrap_or_default();
            assert_eq!((t.done.as_str(), t.retry), ("error", 0), "{db:?} {path}/{name}: permanent at once: {t:?}");
            assert!(msg.contains(want.as_str()), "{db:?} {path}/{name}: '{msg}' does not say '{want}'");
        }
        assert!(files_under(&delivered).is_empty(), "{db:?}: nothing delivered: {:?}", files_under(&delivered));

        // a recording inside the root is still delivered, byte for byte
        let uuid = uuid::Uuid::new_v4().to_string();
        let rec = root.display().to_string();
        post(&app, cdr(&uuid, true, &[("record_path", &rec), ("record_name", "call.wav")])).await;
        let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
        assert_eq!(task(&tasks, "recordingDelivery").done, "y", "{db:?}: {tasks:?}");
        let copy = delivered.join(format!("2023/11/14/{uuid}.wav"));
        assert_eq!(std::fs::read(&copy).unwrap(), audio, "{db:?}");
        assert_eq!(files_under(&delivered), [copy], "{db:?}");
        app.stop().await;
    }
}

fn serve_command(conf: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrmunch"));
    cmd.args(["serve", "--config"]).arg(conf).env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn send(server: &Server, sig: libc::c_int) {
    // SAFETY: kill only sends a signal to our own child.
    assert_eq!(unsafe { libc::kill(server.0.id() as libc::pid_t, sig) }, 0);
}

fn is_root() -> bool {
    // SAFETY: a plain getter.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_11_sigterm_the_moment_health_first_answers_is_a_clean_exit() {
    use std::os::unix::process::ExitStatusExt;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        // as tests/ops.rs does: started as root, it drops to nobody once its listeners are bound
        let extra = if is_root() {
            std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
            "app.run_as_user = nobody"
        } else {
            ""
        };
        let (conf, base) = serve_config(dir.path(), extra);
        let mut server = Server(serve_command(&conf).stdout(Stdio::null()).spawn().unwrap());
        let deadline = Instant::now() + WAIT;
        loop {
            if http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
                send(&server, libc::SIGTERM);
                break;
            }
            if let Some(s) = server.0.try_wait().unwrap() {
                panic!("round {round}: exited before /health answered: {s}");
            }
            assert!(Instant::now() < deadline, "round {round}: /health never answered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let status = wait_exit(&mut server, WAIT).await;
        assert_eq!(
            (status.code(), status.signal()),
            (Some(0), None),
            "round {round}: SIGTERM right after /health answered must drain and exit 0, not die of it (143)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_12_two_instances_without_app_pid_file_both_start() {
    let (a, b, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let http = reqwest::Client::new();
    let mut servers = Vec::new();
    for dir in [&a, &b] {
        let (conf, base) = serve_config(dir.path(), "");
        // one run directory for both: where a defaulted pid file would make them collide
        let mut cmd = serve_command(&conf);
        cmd.env("CDRMUNCH_RUN_DIR", run.path()).stdout(Stdio::null());
        servers.push((Server(cmd.spawn().unwrap()), base));
    }
    for (server, base) in &mut servers {
        let deadline = Instant::now() + WAIT;
        loop {
            if http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if let Some(s) = server.0.try_wait().unwrap() {
                panic!("{base}: exited ({s}) instead of starting beside the other instance");
            }
            assert!(Instant::now() < deadline, "{base}: /health never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(files_under(run.path()).is_empty(), "no pid file unless configured: {:?}", files_under(run.path()));
    for (server, _) in &mut servers {
        send(server, libc::SIGTERM);
        assert!(wait_exit(server, WAIT).await.success());
    }
}

/// The log file's text once `want` is in it (a background writer writes it), bounded.
async fn log_with(log: &Path, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(want) {
            return text;
        }
        assert!(Instant::now() < deadline, "'{want}' not in the log: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_13_a_quoted_basic_auth_password_with_space_hash_works() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cdrmunch.log");
    let password = "s3cret #1 \"q\\";
    let extra = format!(
        "server.basic_auth = \"cdr:s3cret #1 \\\"q\\\\\"   # quoted: the ' #' is the password's\n\
         emailer.from = ops@example.com #team\nlog.file = {}\nlog.level = 4",
        log.display()
    );
    let (conf, base) = serve_config(dir.path(), &extra);
    let mut server = Server(serve_command(&conf).stdout(Stdio::null()).spawn().unwrap());
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let post = |user: &str, pass: &str| {
        let uuid = uuid::Uuid::new_v4().to_string();
        http.post(format!("{base}/api/v2/cdr")).basic_auth(user, Some(pass)).body(answered_cdr(&uuid)).send()
    };
    assert_eq!(post("cdr", password).await.unwrap().status().as_u16(), 200, "the whole quoted password");
    assert_eq!(post("cdr", "s3cret").await.unwrap().status().as_u16(), 401, "not the part before ' #'");
    // an unquoted value a comment cut short is warned about, with where it is
    let text = log_with(&log, "ends where ' #' starts a comment").await;
    let warning = text.lines().find(|l| l.contains("ends where ' #'")).unwrap();
    assert!(warning.contains("WARN") && warning.contains("emailer.from"), "{warning}");
    assert!(warning.contains(&format!("{}:", conf.display())), "names the file and line: {warning}");
    assert!(!text.contains("s3cret"), "the password is never logged");
    send(&server, libc::SIGTERM);
    assert!(wait_exit(&mut server, WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_14_logs_to_a_pipe_or_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, base) = serve_config(dir.path(), "log.level = 4\nno.such.key = 1");
    let mut cmd = serve_command(&conf);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut server = Server(child);
    let (mut out, mut err) = (server.0.stdout.take().unwrap(), server.0.stderr.take().unwrap());
    let read = |r: &mut dyn std::io::Read| {
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        s
    };
    let stdout = std::thread::spawn(move || read(&mut out));
    let stderr = std::thread::spawn(move || read(&mut err));
    wait_healthy(&reqwest::Client::new(), &base).await;
    send(&server, libc::SIGTERM);
    assert!(wait_exit(&mut server, WAIT).await.success());
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    for want in ["starting with", "unknown key 'no.such.key'", "stopped"] {
        assert!(stdout.contains(want), "'{want}' not logged: {stdout}");
    }
    assert!(!stdout.contains("\x1b["), "colour codes in piped logs: {stdout:?}");
    assert!(!stderr.contains("\x1b["), "colour codes in piped logs: {stderr:?}");
    // the other commands log to stderr: plain there too
    let out = Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
        .args(["config", "--config"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key 'no.such.key'"), "{err}");
    assert!(!err.contains("\x1b["), "colour codes in piped logs: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_17_the_runbook_update_runs_a_failed_task_and_a_cdr_again_at_the_next_poll() {
    for db in BOTH {
        let sms = HttpRecorder::start().await;
        sms.script("/", &[(422, "{\"error\":\"invalid number\"}")]);
        let url = sms.url.clone();
        // the default leases: a claim holds a task and a CDR 30 s (renewed while in work)
        let app = TestApp::start_with(db, |s| s.sms.url = Some(url), Hooks::default(), None).await;
        assert_eq!((app.settings.tasksd.lease_seconds, app.settings.distiller.lease_seconds), (30, 30));
        let uuid = uuid::Uuid::new_v4().to_string();
        post(&app, cdr(&uuid, false, &[("notify_sms", "12")])).await;
        let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
        let failed = task(&tasks, "SMSSend").clone();
        assert_eq!(failed.done, "error", "{db:?}: {failed:?}");

        // the seed's runbook, as written
        let url = &app.settings.database.cdrdb_url;
        let n = operator_sql(db, url, "UPDATE tasks SET done='n', retry=0 WHERE id=?", failed.id).await;
        assert_eq!(n, 1, "{db:?}");
        let started = Instant::now();
        let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
        let again = task(&tasks, "SMSSend");
        assert_eq!(again.done, "y", "{db:?}: run again and the gateway now answers 200: {again:?}");
        assert_eq!(sms.requests().len(), 2, "{db:?}");
        assert!(started.elapsed() < WAIT, "{db:?}");

        // the CDR queue's row: done, then put back by hand, is distilled again at once
        let id: i64 =
            sqlx::query_scalar("SELECT CAST(id AS SIGNED) FROM cdr_queue").fetch_one(app.store().pool()).await.unwrap();
        let set = operator_sql(db, url, "UPDATE cdr_queue SET done='n' WHERE id=?", id as u64).await;
        assert_eq!(set, 1, "{db:?}");
        let deadline = Instant::now() + WAIT;
        while app.store().queue_counts().await.unwrap().done != 1 {
            assert!(Instant::now() < deadline, "{db:?}: the CDR put back by hand was not distilled again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
}
