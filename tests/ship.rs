//! `cdrmunch ship` end to end: the real binary shipping to the real `cdrmunch serve` (or to a
//! scripted recorder), through every body form, a receiver killed and restarted, the shipper
//! itself `kill -9`ed, a 4xx, a dead first URL, `--once` exit codes and its /metrics.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sinks::HttpRecorder;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_cdrmunch");

/// Fast settle, rescan and backoff, so the tests wait for events and not for defaults.
fn tuning(dir: &Path) -> PathBuf {
    let conf = dir.join("ship.conf");
    std::fs::write(
        &conf,
        "ship.settle_seconds = 0.2\nship.rescan_seconds = 0.5\nship.retry_backoff_seconds = 0.05\n\
         ship.retry_backoff_max_seconds = 0.5\nship.timeout_seconds = 10\nship.drain_seconds = 10\n\
         ship.once_rounds = 2\n",
    )
    .unwrap();
    conf
}

/// `cdrmunch ship --config <tuning> args…`, its log in `dir/ship-N.log`.
fn ship(dir: &Path, args: &[&str]) -> (Server, PathBuf) {
    ship_with(dir, "", args)
}

/// [`ship`] with more config lines after the tuning.
fn ship_with(dir: &Path, extra_conf: &str, args: &[&str]) -> (Server, PathBuf) {
    let n = std::fs::read_dir(dir).unwrap().count();
    let log = dir.join(format!("ship-{n}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let conf = tuning(dir);
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(extra_conf);
    std::fs::write(&conf, text).unwrap();
    let child = Command::new(BIN)
        .arg("ship")
        .arg("--config")
        .arg(conf)
        .args(args)
        .env("RUST_LOG", "cdrmunch=debug")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn cdrmunch ship");
    (Server(child), log)
}

/// Runs `cdrmunch ship --once …` to its end (bounded); its exit code and stderr.
async fn ship_once(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let (mut s, log) = ship(dir, &[&["--once"], args].concat());
    let status = wait_exit(&mut s, Duration::from_secs(120)).await;
    (status.code(), std::fs::read_to_string(log).unwrap())
}

/// A receiver: the real `cdrmunch serve` (intake only) on SQLite under `dir`.
async fn receiver(dir: &Path) -> (Server, PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let (conf, base) = serve_config(dir, "");
    let server = start_server_with(&conf, &["--roles", "intake"], Some("cdrmunch=warn"));
    wait_healthy(&reqwest::Client::new(), &base).await;
    (server, conf, format!("{base}/api/v2/cdr"))
}

/// Every `cdr_queue` uuid (hyphenless lower hex) with its row count.
async fn queued(dir: &Path) -> BTreeMap<String, usize> {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}/cdrmunch.db", dir.display())).await.unwrap();
    let rows = sqlx::query("SELECT lower(hex(uuid)) FROM cdr_queue").fetch_all(&pool).await.unwrap();
    pool.close().await;
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.get::<String, _>(0)).or_insert(0) += 1;
    }
    out
}

fn hexed(uuids: &BTreeSet<String>) -> BTreeSet<String> {
    uuids.iter().map(|u| u.replace('-', "")).collect()
}

/// Waits (bounded) until `cond` holds, re-evaluating it every 50 ms.
async fn wait_for<F: AsyncFnMut() -> bool>(what: &str, within: Duration, mut cond: F) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The CDR files (not folders) directly in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Writes `n` answered A-leg CDRs named as mod_xml_cdr names them; returns their uuids.
fn write_cdrs(dir: &Path, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let u = uuid::Uuid::new_v4().to_string();
            std::fs::write(dir.join(format!("a_{u}.cdr.xml")), answered_cdr(&u)).unwrap();
            u
        })
        .collect()
}

fn sigterm(s: &Server) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(s.0.id() as i32, libc::SIGTERM) };
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The corpus in mod_xml_cdr naming: `[a_]<uuid>.cdr.{xml,json}` for what intake can take (the
/// uuid and leg by intake's own rules), the broken files under their own names. Returns the
/// expected uuids and the broken names.
fn corpus_dir_as_logged(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    use cdrmunch::domain::{cdr::ParseLimits, submission};
    std::fs::create_dir_all(dir).unwrap();
    let (mut good, mut broken) = (BTreeSet::new(), BTreeSet::new());
    for path in corpus_files() {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match submission::prepare(&bytes::Bytes::from(bytes.clone()), None, "t", 0, &ParseLimits::UNLIMITED) {
            Ok(s) => {
                let ext = if name.ends_with(".json") { "json" } else { "xml" };
                std::fs::write(dir.join(format!("{}{}.cdr.{ext}", if s.a_leg { "a_" } else { "" }, s.uuid)), &bytes)
                    .unwrap();
                good.insert(s.uuid);
            }
            Err(_) => {
                std::fs::write(dir.join(&name), &bytes).unwrap();
                broken.insert(name);
            }
        }
    }
    (good, broken)
}

#[tokio::test]
async fn every_corpus_cdr_arrives_once_in_every_body_form_and_the_broken_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["raw", "urlencoded", "base64", "textxml", "json"] {
        let run = tmp.path().join(mode);
        let watched = run.join("xml_cdr");
        let (good, broken) = corpus_dir_as_logged(&watched);
        // broken: what intake's own rules refuse (the corpus's damaged files), by prepare()
        assert!(good.len() >= 14 && !broken.is_empty(), "{good:?} {broken:?}");
        let good_files = files_in(&watched).len() - broken.len();
        let (_server, _, url) = receiver(&run.join("receiver")).await;
        let (code, log) =
            ship_once(&run, &["--dir", watched.to_str().unwrap(), "--url", &url, "--encode", mode, "--delete"]).await;
        assert_eq!(code, Some(1), "{mode}: broken files make --once fail: {log}");
        let summary = format!("{good_files} accepted, {} rejected, 0 not delivered", broken.len());
        assert!(log.contains(&summary), "{mode}: {log}");
        assert_eq!(files_in(&watched), Vec::<String>::new(), "{mode}: only rejected/ stays");
        let rejected = watched.join("rejected");
        let mut want: Vec<String> = broken.iter().flat_map(|n| [n.clone(), format!("{n}.reason")]).collect();
        want.sort();
        assert_eq!(files_in(&rejected), want, "{mode}");
        for n in &broken {
            let reason = std::fs::read_to_string(rejected.join(format!("{n}.reason"))).unwrap();
            assert!(reason.starts_with(&format!("HTTP 400 from {url}\n")) && reason.contains("error"), "{reason}");
        }
        let q = queued(&run.join("receiver")).await;
        assert_eq!(q.keys().cloned().collect::<BTreeSet<_>>(), hexed(&good), "{mode}");
        assert!(q.values().all(|n| *n == 1), "{mode}: {q:?}");
    }
}

#[tokio::test]
async fn a_receiver_killed_and_restarted_mid_run_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (watched, done) = (tmp.path().join("xml_cdr"), tmp.path().join("done"));
    std::fs::create_dir_all(&watched).unwrap();
    let rdir = tmp.path().join("receiver");
    let (server, conf, url) = receiver(&rdir).await;
    let metrics_port = free_port();
    let (shipper, log) = ship(
        tmp.path(),
        &[
            "--dir",
            watched.to_str().unwrap(),
            "--url",
            &url,
            "--done-dir",
            done.to_str().unwrap(),
            "--metrics-port",
            &metrics_port.to_string(),
        ],
    );
    let mut all = write_cdrs(&watched, 60);
    wait_for("some files shipped", Duration::from_secs(60), async || done.exists() && files_in(&done).len() >= 20)
        .await;
    drop(server); // SIGKILL, mid-run
    all.extend(write_cdrs(&watched, 60));
    let http = reqwest::Client::new();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_for("the shipper retrying", Duration::from_secs(60), async || {
        scrape(&http, &metrics, "cdrmunch_ship_retries_total").await.unwrap_or(0.0) >= 1.0
    })
    .await;
    let _server = start_server_with(&conf, &["--roles", "intake"], Some("cdrmunch=warn"));
    all.extend(write_cdrs(&watched, 30));
    wait_for("every file shipped", Duration::from_secs(120), async || files_in(&watched).is_empty()).await;
    assert_eq!(files_in(&done).len(), all.len(), "{}", log_of(&log));
    let q = queued(&rdir).await;
    assert_eq!(q.keys().cloned().collect::<BTreeSet<_>>(), hexed(&all));
    // SIGTERM: a clean stop
    let mut shipper = shipper;
    sigterm(&shipper);
    let status = wait_exit(&mut shipper, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", log_of(&log));
}

#[tokio::test]
async fn a_shipper_killed_mid_run_and_restarted_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("xml_cdr");
    std::fs::create_dir_all(&watched).unwrap();
    let rdir = tmp.path().join("receiver");
    let (_server, _, url) = receiver(&rdir).await;
    let all = write_cdrs(&watched, 400);
    let args = ["--dir", watched.to_str().unwrap(), "--url", &url, "--delete", "--concurrency", "4"];
    let (mut first, log) = ship(tmp.path(), &args);
    wait_for("a part shipped", Duration::from_secs(60), async || files_in(&watched).len() <= 300).await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let left = files_in(&watched).len();
    assert!(left > 0, "the kill came after everything was shipped: {}", log_of(&log));
    let (mut second, log2) = ship(tmp.path(), &args);
    wait_for("the rest shipped", Duration::from_secs(120), async || files_in(&watched).is_empty()).await;
    let q = queued(&rdir).await;
    assert_eq!(q.keys().cloned().collect::<BTreeSet<_>>(), hexed(&all), "{}", log_of(&log2));
    // no temp file or stray folder left behind in the watched directory
    assert_eq!(std::fs::read_dir(&watched).unwrap().count(), 0);
    sigterm(&second);
    assert_eq!(wait_exit(&mut second, Duration::from_secs(30)).await.code(), Some(0));
}

#[tokio::test]
async fn a_refused_file_goes_to_rejected_with_its_reason_and_is_not_posted_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (watched, done) = (tmp.path().join("xml_cdr"), tmp.path().join("done"));
    std::fs::create_dir_all(&watched).unwrap();
    let recorder = HttpRecorder::start().await;
    recorder.script("/api/v2/cdr", &[(400, "{\"error\":\"not a CDR we like\"}")]);
    let first = write_cdrs(&watched, 1).into_iter().next().unwrap();
    let url = format!("{}/api/v2/cdr", recorder.url);
    let (mut shipper, log) =
        ship(tmp.path(), &["--dir", watched.to_str().unwrap(), "--url", &url, "--done-dir", done.to_str().unwrap()]);
    let name = format!("a_{first}.cdr.xml");
    let rejected = watched.join("rejected");
    wait_for("the refused file in rejected/", Duration::from_secs(30), async || {
        rejected.join(&name).exists() && rejected.join(format!("{name}.reason")).exists()
    })
    .await;
    let reason = std::fs::read_to_string(rejected.join(format!("{name}.reason"))).unwrap();
    assert!(reason.starts_with(&format!("HTTP 400 from {url}\n")) && reason.contains("not a CDR we like"), "{reason}");
    // a later file goes through (the recorder answers 200 now), and several rescans pass
    let second = write_cdrs(&watched, 1).into_iter().next().unwrap();
    wait_for("the second file shipped", Duration::from_secs(30), async || {
        done.join(format!("a_{second}.cdr.xml")).exists()
    })
    .await;
    let rescans = |log: &Path| log_of(log).matches("rescanned").count();
    let before = rescans(&log);
    wait_for("three more rescans", Duration::from_secs(30), async || rescans(&log) >= before + 3).await;
    let posts_of = |u: &str| recorder.requests().iter().filter(|r| r.body.contains(u)).count();
    assert_eq!(posts_of(&first), 1, "the refused file was posted again: {}", log_of(&log));
    assert_eq!(posts_of(&second), 1);
    assert!(!done.join(&name).exists() && rejected.join(&name).exists(), "kept, not deleted");
    assert_eq!(files_in(&watched), Vec::<String>::new());
    sigterm(&shipper);
    assert_eq!(wait_exit(&mut shipper, Duration::from_secs(30)).await.code(), Some(0));
}

#[tokio::test]
async fn a_file_still_being_written_is_not_sent_until_closed() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let (watched, done) = (tmp.path().join("xml_cdr"), tmp.path().join("done"));
    std::fs::create_dir_all(&watched).unwrap();
    let rdir = tmp.path().join("receiver");
    let (_server, _, url) = receiver(&rdir).await;
    // a long settle: only the writer's close may release the file within the test
    let (mut shipper, log) = ship_with(
        tmp.path(),
        "ship.settle_seconds = 600\n",
        &["--dir", watched.to_str().unwrap(), "--url", &url, "--done-dir", done.to_str().unwrap()],
    );
    // files written before the watch is up would only be found by a scan (and wait the settle)
    wait_for("the shipper watching", Duration::from_secs(30), async || log_of(&log).contains("CDR files waiting in"))
        .await;
    let slow = uuid::Uuid::new_v4().to_string();
    let doc = answered_cdr(&slow);
    let name = format!("a_{slow}.cdr.xml");
    let mut writing = std::fs::File::create(watched.join(&name)).unwrap();
    writing.write_all(&doc[..doc.len() / 2]).unwrap();
    writing.flush().unwrap();
    let other = write_cdrs(&watched, 1).into_iter().next().unwrap();
    wait_for("the finished file shipped", Duration::from_secs(30), async || {
        done.join(format!("a_{other}.cdr.xml")).exists()
    })
    .await;
    assert!(watched.join(&name).exists() && !watched.join("rejected").exists(), "{}", log_of(&log));
    assert!(!queued(&rdir).await.contains_key(&slow.replace('-', "")));
    writing.write_all(&doc[doc.len() / 2..]).unwrap();
    drop(writing); // IN_CLOSE_WRITE
    wait_for("the closed file shipped", Duration::from_secs(30), async || done.join(&name).exists()).await;
    assert!(queued(&rdir).await.contains_key(&slow.replace('-', "")));
    sigterm(&shipper);
    assert_eq!(wait_exit(&mut shipper, Duration::from_secs(30)).await.code(), Some(0));
}

#[tokio::test]
async fn a_dead_first_url_fails_over_to_the_second() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("xml_cdr");
    std::fs::create_dir_all(&watched).unwrap();
    let rdir = tmp.path().join("receiver");
    let (_server, _, url) = receiver(&rdir).await;
    let all = write_cdrs(&watched, 50);
    let dead = format!("http://127.0.0.1:{}/api/v2/cdr", free_port());
    let (code, log) =
        ship_once(tmp.path(), &["--dir", watched.to_str().unwrap(), "--url", &dead, "--url", &url, "--delete"]).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("50 accepted, 0 rejected, 0 not delivered"), "{log}");
    assert!(files_in(&watched).is_empty());
    assert_eq!(queued(&rdir).await.keys().cloned().collect::<BTreeSet<_>>(), hexed(&all));
}

#[tokio::test]
async fn once_exits_0_only_when_every_file_was_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let rdir = tmp.path().join("receiver");
    let (_server, _, url) = receiver(&rdir).await;
    let watched = tmp.path().join("err_log");
    std::fs::create_dir_all(&watched).unwrap();
    let dir = watched.to_str().unwrap();
    // nothing there: nothing to fail
    assert_eq!(ship_once(tmp.path(), &["--dir", dir, "--url", &url, "--delete"]).await.0, Some(0));
    write_cdrs(&watched, 3);
    assert_eq!(ship_once(tmp.path(), &["--dir", dir, "--url", &url, "--delete"]).await.0, Some(0));
    // nobody answers: 1, the file stays where it is
    let kept = write_cdrs(&watched, 1).into_iter().next().unwrap();
    let dead = format!("http://127.0.0.1:{}/api/v2/cdr", free_port());
    let (code, log) = ship_once(tmp.path(), &["--dir", dir, "--url", &dead, "--delete"]).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("0 accepted, 0 rejected, 1 not delivered") && log.contains(&kept), "{log}");
    assert_eq!(files_in(&watched), vec![format!("a_{kept}.cdr.xml")]);
    // a refused file: 1
    std::fs::write(watched.join("not-a-cdr.xml"), "<cdr><variables/></cdr>").unwrap();
    let (code, log) = ship_once(tmp.path(), &["--dir", dir, "--url", &url, "--delete"]).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("1 accepted, 1 rejected, 0 not delivered"), "{log}");
    // cannot start: 2, with the reason
    let (code, log) = ship_once(tmp.path(), &["--dir", dir, "--url", &url]).await;
    assert_eq!(code, Some(2));
    assert!(log.contains("--done-dir") && log.contains("--delete"), "{log}");
    let (code, log) = ship_once(tmp.path(), &["--dir", "/nonexistent/cdrs", "--url", &url, "--delete"]).await;
    assert_eq!(code, Some(2));
    assert!(log.contains("not a directory"), "{log}");
}

/// The value of an unlabelled metric on a /metrics page.
async fn scrape(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_shippers_metrics_count_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("xml_cdr");
    std::fs::create_dir_all(&watched).unwrap();
    let (_server, _, url) = receiver(&tmp.path().join("receiver")).await;
    let dead = format!("http://127.0.0.1:{}/api/v2/cdr", free_port());
    write_cdrs(&watched, 3);
    std::fs::write(watched.join("not-a-cdr.xml"), "<cdr><variables/></cdr>").unwrap();
    let port = free_port();
    let (mut shipper, log) = ship(
        tmp.path(),
        &[
            "--dir",
            watched.to_str().unwrap(),
            "--url",
            &dead,
            "--url",
            &url,
            "--delete",
            "--metrics-port",
            &port.to_string(),
        ],
    );
    let (http, metrics) = (reqwest::Client::new(), format!("http://127.0.0.1:{port}/metrics"));
    wait_for("sent 3, rejected 1, nothing pending", Duration::from_secs(30), async || {
        scrape(&http, &metrics, "cdrmunch_ship_sent_total").await == Some(3.0)
            && scrape(&http, &metrics, "cdrmunch_ship_rejected_total").await == Some(1.0)
            && scrape(&http, &metrics, "cdrmunch_ship_files_pending").await == Some(0.0)
    })
    .await;
    assert!(scrape(&http, &metrics, "cdrmunch_ship_retries_total").await.unwrap() >= 1.0, "the dead URL");
    assert_eq!(scrape(&http, &metrics, "cdrmunch_ship_oldest_pending_age_seconds").await, Some(0.0));
    let page = http.get(&metrics).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("# HELP cdrmunch_ship_files_pending"), "{page}");
    sigterm(&shipper);
    assert_eq!(wait_exit(&mut shipper, Duration::from_secs(30)).await.code(), Some(0), "{}", log_of(&log));
}

/// Prints a throughput figure (no timing assertion): 2,000 small CDRs, --once, to a local intake.
#[tokio::test]
async fn throughput_of_2000_small_cdrs_with_once() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("xml_cdr");
    std::fs::create_dir_all(&watched).unwrap();
    let rdir = tmp.path().join("receiver");
    let (_server, _, url) = receiver(&rdir).await;
    let all = write_cdrs(&watched, 2000);
    let started = Instant::now();
    let (code, log) =
        ship_once(tmp.path(), &["--dir", watched.to_str().unwrap(), "--url", &url, "--delete", "--concurrency", "8"])
            .await;
    let elapsed = started.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(queued(&rdir).await.len(), all.len());
    println!(
        "ship --once: 2000 CDRs in {:.2}s = {:.0} files/s (process start to exit, 8 in flight, SQLite intake)",
        elapsed.as_secs_f64(),
        2000.0 / elapsed.as_secs_f64()
    );
}

#[test]
fn the_sample_ship_config_loads_in_both_environments() {
    use cdrmunch::config::{Dirs, RawConfig, Settings};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ship.conf");
    for env in [None, Some("prod")] {
        let raw = RawConfig::load(&path, env, Path::new("/nonexistent")).unwrap();
        let (s, warnings) = Settings::from_raw(&raw, &Dirs::from_env()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(s.ship.dirs.len(), 2);
        assert!(s.ship.done_dir.is_some() && !s.ship.delete && s.ship.encode == "urlencoded");
        assert_eq!(s.ship.urls.len(), if env.is_some() { 2 } else { 1 });
        assert_eq!(s.ship.metrics_port, if env.is_some() { 9465 } else { 0 });
    }
    let bad = RawConfig::parse_str("ship.encode = gzip\n", &path, None, Path::new("/nonexistent")).unwrap();
    let err = Settings::from_raw(&bad, &Dirs::from_env()).unwrap_err().to_string();
    assert!(err.contains("ship.encode") && err.contains("raw, urlencoded, base64, textxml or json"), "{err}");
}
