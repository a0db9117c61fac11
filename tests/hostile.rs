//! Hostile and odd input, one test per row of the hardening issue's table (`rowNN_…`): each
//! reproduces the input against a real `serve` (in-process on port 0, or the real binary
//! where a process-wide limit is the point) and asserts what must happen instead. Stalls use
//! short configured timeouts, so the suite runs in seconds.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdrmunch::actors::Hooks;
use cdrmunch::config::Settings;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UUID: &str = "6a7ccd66-0000-4000-8000-00000000a001";

async fn start_sqlite(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::start_with(Db::Sqlite, tweak, Hooks::default(), None).await
}

/// Reads until the peer closes (or `bound` passes: then `None`); what was read.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + bound;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn wait_for(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect()
}

fn cdr_with(uuid: &str, extra_vars: &str, switchname: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<cdr switchname=\"{switchname}\"><variables><uuid>{uuid}</uuid>\
         <start_epoch>1700000000</start_epoch><answer_epoch>1700000003</answer_epoch><end_epoch>1700000045</end_epoch>\
         <billsec>42</billsec><hangup_cause>NORMAL_CLEARING</hangup_cause>{extra_vars}</variables>\
         <callflow><caller_profile><caller_id_number>1001</caller_id_number>\
         <destination_number>2000</destination_number></caller_profile></callflow></cdr>"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row01_idle_partial_and_stalled_connections_are_closed_and_leave_no_temp_file() {
    let app = start_sqlite(|s| {
        s.server.header_read_timeout = Duration::from_secs(1);
        s.server.body_idle_timeout = Duration::from_secs(1);
        s.server.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.app().addr;
    let connect = || TcpStream::connect(addr);
    let mut idle = connect().await.unwrap();
    let mut partial_line = connect().await.unwrap();
    partial_line.write_all(b"POST /api/v2/cdr HT").await.unwrap();
    let mut partial_body = connect().await.unwrap();
    partial_body
        .write_all(b"POST /api/v2/cdr HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n<cdr><variables>")
        .await
        .unwrap();
    let mut pcap = connect().await.unwrap();
    let head = format!("POST /api/v2/pcap?uuid={UUID} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
    pcap.write_all(head.as_bytes()).await.unwrap();
    pcap.write_all(&[0u8; 8192]).await.unwrap();
    let pcap_dir = app.settings.request_handler.pcap_base_dir.clone();
    wait_for("the stalled upload's temp file appears", Duration::from_secs(10), || !tmp_files(&pcap_dir).is_empty())
        .await;
    let mut kept_alive = connect().await.unwrap();
    kept_alive.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    kept_alive.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let bound = Duration::from_secs(15);
    assert!(read_until_closed(&mut idle, bound).await.is_some(), "an idle connection stays open");
    assert!(read_until_closed(&mut partial_line, bound).await.is_some(), "a partial request line stays open");
    let answer = read_until_closed(&mut partial_body, bound).await.expect("a partial body stays open");
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("body_idle_timeout"), "{answer}");
    let answer = read_until_closed(&mut pcap, bound).await.expect("a stalled upload stays open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(read_until_closed(&mut kept_alive, bound).await.is_some(), "a kept-alive connection stays open");
    wait_for("the stalled upload's temp file is removed", Duration::from_secs(10), || tmp_files(&pcap_dir).is_empty())
        .await;
    assert!(files_under(&pcap_dir).is_empty(), "{:?}", files_under(&pcap_dir));
    // and the server still serves
    assert_eq!(app.http.get(app.url("/health")).send().await.unwrap().status(), 200);
    app.stop().await;
}

/// The real binary under a 1024 open-file limit (soft and hard, so it cannot raise it), with
/// header timeouts long enough that only the connection cap can save it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row02_a_connection_flood_under_a_1024_fd_limit_does_not_lock_out_health_and_posts() {
    raise_own_fd_limit(4096);
    let dir = tempfile::tempdir().unwrap();
    let (conf, base) = serve_config(dir.path(), "server.header_read_timeout = 120\nserver.keepalive_timeout = 120\n");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdrmunch"));
    cmd.args(["serve", "--config"]).arg(&conf).env("RUST_LOG", "cdrmunch=error");
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server(cmd.stdout(std::process::Stdio::null()).spawn().unwrap());
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    wait_healthy(&http, &base).await;
    let addr = base.trim_start_matches("http://").to_string();

    // 1,100 slow clients, each sending one header line per second and never finishing
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut slow = Vec::new();
    for i in 0..1100 {
        let (addr, stop) = (addr.clone(), stop.clone());
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(&addr).await else { return };
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n").await.is_err() {
                return;
            }
            for n in 0..60 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
                if s.write_all(format!("X-{i}-{n}: slow\r\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        }));
    }
    // give the flood time to reach the server (bounded: until the server holds most of them)
    let pid = server.0.id();
    let open_fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    wait_for("the flood reaches the server", Duration::from_secs(30), || open_fds() > 700).await;
    for round in 0..3 {
        let health = tokio::time::timeout(Duration::from_secs(10), http.get(format!("{base}/health")).send())
            .await
            .unwrap_or_else(|_| panic!("round {round}: /health did not answer within 10 s"))
            .unwrap();
        assert_eq!(health.status(), 200, "round {round}");
        let uuid = uuid::Uuid::new_v4().to_string();
        let post = tokio::time::timeout(
            Duration::from_secs(10),
            http.post(format!("{base}/api/v2/cdr")).body(answered_cdr(&uuid)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: a POST did not answer within 10 s"))
        .unwrap();
        assert_eq!(post.status(), 200, "round {round}: {}", post.text().await.unwrap());
        println!("round {round}: /health and a POST answered with {} fds open in the server", open_fds());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in slow {
        t.abort();
    }
    drop(server);
}

/// Eight 15.7 MB bodies of `<a/>` at once (and a 14 MB JSON array) against the real binary:
/// each is refused naming the limit, and the process's peak RSS stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row03_parse_bombs_are_refused_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, base) = serve_config(dir.path(), "");
    let server = start_server(&conf);
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let xml: bytes::Bytes = format!("<cdr>{}</cdr>", "<a/>".repeat((15_700_000 - 11) / 4)).into();
    let mut posts = Vec::new();
    for _ in 0..8 {
        let (http, base, body) = (http.clone(), base.clone(), xml.clone());
        posts.push(tokio::spawn(async move {
            // as FreeSWITCH would: a 503 (intake at its parse budget) is tried again
            for _ in 0..20 {
                let r = http.post(format!("{base}/api/v2/cdr?uuid={UUID}")).body(body.clone()).send().await.unwrap();
                let answer = (r.status().as_u16(), r.text().await.unwrap());
                if answer.0 != 503 {
                    return answer;
                }
                assert!(answer.1.contains("parse_memory"), "{}", answer.1);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            panic!("still 503 after 20 tries");
        }));
    }
    for p in posts {
        let (status, text) = p.await.unwrap();
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("max_cdr_elements"), "{text}");
    }
    let json = format!("{{\"variables\":{{\"uuid\":\"{UUID}\"}},\"a\":[{}0]}}", "0,".repeat(7_000_000));
    let r = http.post(format!("{base}/api/v2/cdr")).body(json).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    println!("peak RSS with 8 parse bombs in flight: {} MiB", peak_kb / 1024);
    assert!(peak_kb < 300 * 1024, "peak RSS {} MiB", peak_kb / 1024);
    assert!(files_under(&dir.path().join("cdr")).is_empty());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row04_overlong_host_names_get_a_short_collision_free_directory() {
    let app = start_sqlite(|_| {}).await;
    let mut dirs = Vec::new();
    for (i, tail) in ["a", "b"].iter().enumerate() {
        let uuid = format!("6a7ccd66-0000-4000-8000-00000000a10{i}");
        let host = format!("{}{tail}", "h".repeat(300));
        let (status, text) = app.post_cdr(cdr_with(&uuid, "", &host), "", "text/xml").await;
        assert_eq!(status, 200, "{text}");
        let path: serde_json::Value = serde_json::from_str(&text).unwrap();
        let path = PathBuf::from(path["path"].as_str().unwrap());
        assert!(path.is_file(), "{}", path.display());
        let host_dir = path.parent().unwrap().parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(host_dir.len() <= 100, "{host_dir}");
        dirs.push(host_dir);
    }
    assert_ne!(dirs[0], dirs[1]);
    app.wait_settled(2, Duration::from_secs(30)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row05_a_directory_removed_while_running_is_made_again() {
    for db in BOTH {
        let app = TestApp::start(db).await;
        let (status, text) = app.post_cdr(answered_cdr("6a7ccd66-0000-4000-8000-00000000a050"), "", "text/xml").await;
        assert_eq!(status, 200, "{text}");
        app.wait_settled(1, Duration::from_secs(30)).await;
        // the day's raw directory and the hour's normalized directory go away under it
        for root in [&app.settings.request_handler.cdr_base_dir, &app.settings.distiller.normalized_cdr_base_dir] {
            for entry in std::fs::read_dir(root).unwrap() {
                std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
            }
        }
        let (status, text) = app.post_cdr(answered_cdr("6a7ccd66-0000-4000-8000-00000000a051"), "", "text/xml").await;
        assert_eq!(status, 200, "{db:?}: {text}");
        let counts = app.wait_settled(2, Duration::from_secs(30)).await;
        assert_eq!(counts.error, 0, "{db:?}: a storage error became a failure");
        let (_, ncdr_path) =
            app.store().normalized_of(uuid_bytes("6a7ccd66-0000-4000-8000-00000000a051")).await.unwrap().unwrap();
        assert!(Path::new(&ncdr_path).is_file(), "{ncdr_path}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row06_a_body_without_a_call_uuid_is_a_400_even_with_a_query_uuid() {
    let app = start_sqlite(|_| {}).await;
    let doc = "<cdr><variables><hangup_cause>NORMAL_CLEARING</hangup_cause></variables></cdr>";
    let (status, text) = app.post_cdr(doc.into(), &format!("?uuid={UUID}"), "text/xml").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no call uuid"), "{text}");
    assert!(files_under(&app.settings.request_handler.cdr_base_dir).is_empty());
    assert_eq!(app.store().queue_counts().await.unwrap(), Default::default());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row07_no_orphan_file_after_a_refused_row_and_ready_sees_a_database_that_cannot_write() {
    for db in BOTH {
        // without the spool: a row the database refuses is refused to the client
        let no_spool = |s: &mut Settings| s.request_handler.spool_max_rows = 0;
        let app = TestApp::start_with(db, no_spool, Hooks::default(), None).await;
        // the database refuses every queue row
        let trigger = match db {
            Db::Sqlite => "CREATE TRIGGER refuse BEFORE INSERT ON cdr_queue BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            Db::Mysql => "CREATE TRIGGER refuse BEFORE INSERT ON cdr_queue FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'",
        };
        execute(db, &app.db.url, trigger).await;
        let (status, text) = app.post_cdr(answered_cdr(UUID), "", "text/xml").await;
        assert!(status >= 400, "{db:?}: {status} {text}");
        assert!(files_under(&app.settings.request_handler.cdr_base_dir).is_empty(), "{db:?}: orphan raw file");
        execute(db, &app.db.url, "DROP TRIGGER refuse").await;
        let (status, text) = app.post_cdr(answered_cdr(UUID), "", "text/xml").await;
        assert_eq!(status, 200, "{db:?}: {text}");
        app.stop().await;
    }
    // SQLite held write-locked by another process: /ready says so, and recovers. With the
    // spool intake still takes CDRs (ready, degraded); without it, not ready.
    for spool_rows in [1_000_000, 0] {
        let app = start_sqlite(|s| s.request_handler.spool_max_rows = spool_rows).await;
        assert_eq!(app.http.get(app.url("/ready")).send().await.unwrap().status(), 200);
        use sqlx::Connection;
        let mut lock = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();
        let r = app.http.get(app.url("/ready")).send().await.unwrap();
        let (status, body) = (r.status(), r.text().await.unwrap());
        assert!(body.contains("\"database\":\"did not answer"), "{body}");
        match spool_rows {
            0 => assert_eq!((status.as_u16(), body.contains("\"status\":\"unavailable\"")), (503, true), "{body}"),
            _ => assert_eq!((status.as_u16(), body.contains("\"status\":\"degraded\"")), (200, true), "{body}"),
        }
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        drop(lock);
        let ready = || async {
            app.http.get(app.url("/ready")).send().await.unwrap().text().await.unwrap().contains("\"status\":\"ok\"")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready().await {
            assert!(Instant::now() < deadline, "/ready did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row07_stale_temp_and_orphan_files_are_swept_at_start() {
    let (mut stale, mut young) = (Vec::new(), Vec::new());
    let app = start_sqlite(|s| {
        let day = s.request_handler.cdr_base_dir.join("fs1/2023-11-14");
        std::fs::create_dir_all(&day).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(1200);
        for name in [format!("a_{UUID}.cdr.xml"), ".x.cdr.xml.0123.tmp".into()] {
            let f = std::fs::File::create(day.join(&name)).unwrap();
            f.set_modified(old).unwrap();
            stale.push(day.join(name));
        }
        // a file just written may be another intake's POST in progress: left alone
        let fresh = day.join("a_6a7ccd66-0000-4000-8000-00000000a071.cdr.xml");
        std::fs::write(&fresh, b"<cdr/>").unwrap();
        young.push(fresh);
    })
    .await;
    wait_for("stale files swept", Duration::from_secs(30), || stale.iter().all(|p| !p.exists())).await;
    assert!(young.iter().all(|p| p.exists()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row09_content_length_with_transfer_encoding_is_a_400() {
    let app = start_sqlite(|_| {}).await;
    for order in
        ["Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"]
    {
        let mut s = TcpStream::connect(app.app().addr).await.unwrap();
        let body = "5\r\n<cdr/\r\n0\r\n\r\n";
        s.write_all(format!("POST /api/v2/cdr HTTP/1.1\r\nHost: t\r\n{order}\r\n{body}").as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut s, Duration::from_secs(10)).await.expect("connection closed after a 400");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Transfer-Encoding"), "{answer}");
    }
    // a plain chunked POST still works
    let mut s = TcpStream::connect(app.app().addr).await.unwrap();
    let doc = String::from_utf8(answered_cdr(UUID)).unwrap();
    let req = format!(
        "POST /api/v2/cdr HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{doc}\r\n0\r\n\r\n",
        doc.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_http2_only_when_configured() {
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let app = start_sqlite(|_| {}).await;
    assert!(h2.get(app.url("/health")).send().await.is_err(), "HTTP/2 served though server.http2 is off");
    assert_eq!(app.http.get(app.url("/health")).send().await.unwrap().status(), 200);
    app.stop().await;
    let app = start_sqlite(|s| s.server.http2 = true).await;
    let r = h2.get(app.url("/health")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row15_nil_uuid_is_a_400_and_the_leg_comes_from_the_document() {
    let app = start_sqlite(|_| {}).await;
    let nil = "00000000-0000-0000-0000-000000000000";
    let (status, text) = app.post_cdr(answered_cdr(nil), "", "text/xml").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("nil"), "{text}");
    let b_uuid = "6a7ccd66-0000-4000-8000-00000000a151";
    let b_leg = format!(
        "<cdr switchname=\"fs1\"><variables><uuid>{b_uuid}</uuid><start_epoch>1700000000</start_epoch>\
         <end_epoch>1700000045</end_epoch><hangup_cause>NORMAL_CLEARING</hangup_cause></variables>\
         <callflow><caller_profile><caller_id_number>1001</caller_id_number><destination_number>2000</destination_number>\
         <originator><originator_caller_profile><uuid>6a7ccd66-0000-4000-8000-00000000a152</uuid>\
         </originator_caller_profile></originator></caller_profile></callflow></cdr>"
    );
    let (status, text) = app.post_cdr(b_leg.clone().into(), &format!("?uuid=a_{b_uuid}"), "text/xml").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("B-leg"), "{text}");
    let (status, text) = app.post_cdr(b_leg.into(), &format!("?uuid={b_uuid}"), "text/xml").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"leg\":\"B\""), "{text}");
    let files = files_under(&app.settings.request_handler.cdr_base_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!files[0].file_name().unwrap().to_string_lossy().starts_with("a_"), "{files:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row16_refused_posts_are_logged_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cdrmunch.log");
    let (conf, base) = serve_config(dir.path(), &format!("log.file = {}\nlog.level = 4\n", log.display()));
    let server = start_server_with(&conf, &[], None);
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let r = http.post(format!("{base}/api/v2/cdr?uuid={UUID}")).body("not a cdr").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let refused = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("request refused"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_for("the refusal is logged", Duration::from_secs(10), || !refused().is_empty()).await;
    let line = refused().remove(0);
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1") && line.contains(UUID) && line.contains("status=400"),
        "{line}"
    );
    assert!(line.contains("neither XML, JSON"), "{line}");
    // a burst is counted, not written line by line
    let started = Instant::now();
    for _ in 0..200 {
        http.post(format!("{base}/api/v2/cdr")).body("junk").send().await.unwrap();
    }
    let secs = started.elapsed().as_secs() + 2;
    tokio::time::sleep(Duration::from_millis(300)).await; // the log writer is asynchronous
    let lines = refused().len();
    assert!(lines <= 1 + 10 * secs as usize, "{lines} lines for 200 refusals in {secs}s");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row18_a_form_with_the_cdr_field_not_first_is_read_as_a_form() {
    let app = start_sqlite(|_| {}).await;
    let doc = answered_cdr(UUID);
    let encoded: String = url_form(&doc);
    let body = format!("uuid=a_{UUID}&cdr={encoded}");
    let (status, text) = app.post_cdr(body.into(), "", "application/x-www-form-urlencoded").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"leg\":\"A\""), "{text}");
    app.wait_settled(1, Duration::from_secs(30)).await;
    // the raw form (encode=false) is still sniffed as before
    let (status, text) = app.post_cdr([&b"cdr="[..], &doc].concat(), "", "application/x-www-form-plaintext").await;
    assert_eq!(status, 200, "{text}");
    app.stop().await;
}

/// `application/x-www-form-urlencoded` as a form encoder writes it: `+` for spaces.
fn url_form(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b' ' => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b"-_.".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn uuid_bytes(s: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(s).unwrap().as_bytes()
}

async fn execute(db: Db, url: &str, sql: &'static str) {
    match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
        Db::Mysql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
    }
}

fn raise_own_fd_limit(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
