//! Operations: readiness and liveness probes, roles split over processes, the pid file,
//! privilege drop, log file with SIGHUP and syslog.

mod common;

use std::time::{Duration, Instant};

use cdrmunch::actors::Hooks;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_store_that_fails_while_health_stays_up() {
    let closed = free_port();
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            s.s3.endpoint = Some(format!("http://127.0.0.1:{closed}"));
            s.s3.path_style = true;
            s.s3.access_key_id = Some("k".into());
            s.s3.secret_access_key = Some("s".into());
            s.distiller.normalized_cdr_base_dir = "s3://ncdr-bucket/ncdr".into();
        },
        Hooks::default(),
        None,
    )
    .await;
    let metrics = format!("http://{}", app.app().metrics_addr.unwrap());
    for base in [app.url(""), metrics] {
        let h = app.http.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(h.status().as_u16(), 200, "{base}");
        let body: serde_json::Value = h.json().await.unwrap();
        assert_eq!((body["status"].as_str(), body["actors"].as_str()), (Some("ok"), Some("up")));
        let r = app.http.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{base}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["database"], "ok", "{body}");
        assert_eq!(body["raw_storage"], "ok", "{body}");
        let why = body["normalized_storage"].as_str().unwrap();
        assert!(why.contains("s3://ncdr-bucket"), "{body}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_split_intake_from_distiller_and_tasks() {
    // one process with the intake role only: CDRs are accepted and wait in cdr_queue
    let intake = TestApp::start_with(Db::Sqlite, |s| s.app.roles = vec!["intake".into()], Hooks::default(), None).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    let (status, body) = intake.post_cdr(answered_cdr(&uuid), "", "text/xml").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(intake.store().queue_counts().await.unwrap().pending, 1, "no distiller in this process");

    // a second process on the same database and directories, distiller + tasks
    let mut s = intake.settings.clone();
    s.app.roles = vec!["distiller".into(), "tasks".into()];
    let store = cdrmunch::app::open_repository(&s).await.unwrap();
    let repo = std::sync::Arc::new(store.clone());
    let worker = cdrmunch::app::App::start_with_repository(&s, Hooks::default(), store, repo).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = intake.store().task_states(*uuid::Uuid::parse_str(&uuid).unwrap().as_bytes()).await.unwrap();
        if !states.is_empty() && states.iter().all(|t| t.done == "y") {
            break;
        }
        assert!(Instant::now() < deadline, "not distilled and executed by the worker: {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the worker's HTTP listener has probes but no intake
    let r =
        intake.http.post(format!("http://{}/api/v2/cdr", worker.addr)).body(answered_cdr(&uuid)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let msg = r.text().await.unwrap();
    assert!(msg.contains("runs the roles distiller,tasks; CDR intake is not one of them"), "{msg}");
    let h: serde_json::Value =
        intake.http.get(format!("http://{}/health", worker.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["roles"], "distiller,tasks");
    worker.shutdown(Duration::from_secs(5)).await;
    intake.stop().await;
}

fn signal(server: &Server, sig: &str) {
    std::process::Command::new("kill").args([sig, &server.0.id().to_string()]).status().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pid_file_refuses_a_second_start() {
    let dir = tempfile::tempdir().unwrap();
    let pid = format!("app.pid_file = {}/run/cdrmunch.pid", dir.path().display());
    let (conf, base) = serve_config(dir.path(), &pid);
    let http = reqwest::Client::new();
    let mut first = start_server(&conf);
    wait_healthy(&http, &base).await;
    let pid_file = dir.path().join("run/cdrmunch.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), first.0.id().to_string());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
        .args(["serve", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "2: could not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("is held by running process {}", first.0.id())), "{err}");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), first.0.id().to_string(), "left alone");

    signal(&first, "-TERM");
    assert!(wait_exit(&mut first, Duration::from_secs(30)).await.success());
    assert!(!pid_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_file_is_reopened_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log/cdrmunch.log");
    let (conf, base) = serve_config(dir.path(), &format!("log.file = {}\nlog.level = 4", log.display()));
    let http = reqwest::Client::new();
    let mut server = start_server_with(&conf, &[], None);
    wait_healthy(&http, &base).await;
    // the log is written by a background writer: wait for the lines, bounded
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let first = std::fs::read_to_string(&log).unwrap_or_default();
        if first.contains("starting with") && first.contains("listening on") {
            break;
        }
        assert!(Instant::now() < deadline, "start-up lines not in the log file: {first}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // logrotate: move the file away, then SIGHUP
    let rotated = dir.path().join("log/cdrmunch.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&server, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("SIGHUP: log file reopened") {
        assert!(Instant::now() < deadline, "no new log file after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&server, "-TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(30)).await.success());
    assert!(std::fs::read_to_string(&log).unwrap().contains("stopped"), "the new file gets the rest");
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_gets_one_datagram_per_event_with_facility_and_severity() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (conf, base) =
        serve_config(dir.path(), &format!("log.facility = local3\nlog.syslog_socket = {}", sock_path.display()));
    let http = reqwest::Client::new();
    let mut server = start_server_with(&conf, &[], None);
    wait_healthy(&http, &base).await;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // local3 = 19, info = 6: <158>
    assert!(line.starts_with(&format!("<158>cdrmunch[{}]: ", server.0.id())), "{line}");
    assert!(line.contains("starting with"), "{line}");
    signal(&server, "-TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_root_it_runs_as_the_configured_user() {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: privilege drop cannot be exercised here (it is in CI, which runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (conf, base) = serve_config(dir.path(), "app.run_as_user = nobody\napp.pid_file =");
    let http = reqwest::Client::new();
    let mut server = start_server(&conf);
    wait_healthy(&http, &base).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert!(uids.iter().all(|u| *u == "65534"), "real, effective, saved and fs uid are nobody's: {uid_line}");
    // and it still works: the database and files it made are its own
    let uuid = uuid::Uuid::new_v4().to_string();
    let r = http.post(format!("{base}/api/v2/cdr")).body(answered_cdr(&uuid)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dir.path().join("cdrmunch.db")).unwrap().uid(), 65534);
    signal(&server, "-TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(30)).await.success());
}
