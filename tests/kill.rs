//! `kill -9` of a real `cdrmunch serve` while 2,000 CDRs are being posted, then a restart:
//! every CDR that got a 200 is normalized exactly once, nothing that got a 200 is lost, and
//! FreeSWITCH-style retries of the ones that did not get a 200 are absorbed; with the
//! default leases, all of it is done within seconds of the restart. Then SIGTERM stops the
//! server with exit code 0.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdrmunch::cli::gen::{GenFormat, Generator};
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use common::*;

/// Generous beside the 10 s goal, short of the 30 s a claim of the killed run would wait
/// for its lease.
const RECOVERY_BOUND: Duration = Duration::from_secs(25);

/// How long after `since` every CDR of `acked` was normalized and had all its tasks done
/// (tasks are committed with their normalized CDR). Polls until then (bounded).
async fn acknowledged_work_done(url: String, acked: HashSet<[u8; 16]>, since: Instant) -> Duration {
    use sqlx::Row;
    let repo = cdrmunch::store::connect(&url, 1).await.unwrap();
    let deadline = since + Duration::from_secs(120);
    loop {
        let normalized: HashSet<[u8; 16]> = normalized_uuids(&repo).await.into_iter().collect();
        if acked.is_subset(&normalized) {
            let open = sqlx::query(
                "SELECT n.uuid FROM tasks t JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs WHERE t.done <> 'y'",
            )
            .fetch_all(repo.pool())
            .await
            .unwrap();
            let open: Vec<Vec<u8>> = open.iter().map(|r| r.get(0)).collect();
            if !open.iter().any(|u| u.as_slice().try_into().is_ok_and(|k: [u8; 16]| acked.contains(&k))) {
                return since.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "acknowledged CDRs not all done 120 s after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kill_during_posting(db: Db) {
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::new(db, dir.path());
    let port = free_port();
    let d = dir.path().display();
    let config = dir.path().join("cdrmunch.conf");
    std::fs::write(
        &config,
        format!(
            "server.address = 127.0.0.1\nserver.port = {port}\ncdrdb.url = {}\n\
             request_handler.cdr_base_dir = {d}/cdr\nrequest_handler.paging_base_dir = {d}/paging\n\
             request_handler.pcap_base_dir = {d}/pcap\ncdr_base_dir = {d}/cdr\nnormalized_cdr_base_dir = {d}/ncdr\n\
             distiller.number_of_distilleries = 4\ncdr_queue_poll_interval_seconds = 0.2\n\
             log.level = 3\nmetrics.port = 0\n\
             billingdb.url = sqlite://{d}/billing.db\ntasksd.poll_interval_seconds = 0.2\n\
             app.pid_file = {d}/cdrmunch.pid\n",
            tdb.url
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/api/v2/cdr");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let mut g = Generator::new(99, GenFormat::Xml);
    let cdrs: Vec<(String, Vec<u8>)> =
        (0..N).map(|_| g.next_cdr()).map(|c| (c.uuid, c.document.into_bytes())).collect();
    // the server's rules: billing and calllog, the handlers that run without configuration
    let rules = cdrmunch::handlers::task_rules(&cdrmunch::config::Settings::embedded_default(dir.path()));
    let nctx = NormalizeContext { rules, ..Default::default() };
    let normalized: Vec<_> = cdrs.iter().map(|(_, doc)| normalize_document(doc, &nctx).unwrap()).collect();
    let expected_tasks: usize = normalized.iter().map(|n| n.tasks.len()).sum();
    let count_type = |ty: &str| normalized.iter().flat_map(|n| &n.tasks).filter(|t| t.task_type.as_str() == ty).count();
    let (expected_billing, expected_calllog) = (count_type("billing"), count_type("calllog"));

    let mut server = start_server(&config);
    wait_healthy(&http, &base).await;

    // Post from 16 clients; SIGKILL the server once 600 have been acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let killer = {
        let acked = acked.clone();
        let pid = server.0.id();
        tokio::spawn(async move {
            while acked.load(Ordering::SeqCst) < 600 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        })
    };
    let statuses: HashMap<String, u16> = {
        use futures::StreamExt;
        futures::stream::iter(cdrs.iter().cloned())
            .map(|(uuid, doc)| {
                let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
                async move {
                    let (ct, body) = encode_body(&doc, SubmitEncoding::Urlencoded);
                    let status = match http.post(&url).header("Content-Type", ct).body(body).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    if status == 200 {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    (uuid, status)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await
    };
    killer.await.unwrap();
    let _ = server.0.wait();
    let ok_before: HashSet<&String> = statuses.iter().filter(|(_, s)| **s == 200).map(|(u, _)| u).collect();
    let acked_before = ok_before.len();
    assert!(
        ok_before.len() >= 600 && ok_before.len() < N,
        "{db:?}: the kill landed mid-stream ({} acked)",
        ok_before.len()
    );

    // Restart; FreeSWITCH retries everything that did not get a 2xx.
    // the pid file of the killed server is stale and must not block the restart
    let pid_file = dir.path().join("cdrmunch.pid");
    assert!(pid_file.exists(), "kill -9 leaves the pid file behind");
    // the default leases (30 s): the restarted process takes its killed run's claims back
    let restarted = Instant::now();
    server = start_server(&config);
    let acked: HashSet<[u8; 16]> = ok_before.iter().map(|u| *uuid::Uuid::parse_str(u).unwrap().as_bytes()).collect();
    let recovered = tokio::spawn(acknowledged_work_done(tdb.url.clone(), acked, restarted));
    wait_healthy(&http, &base).await;
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), server.0.id().to_string());
    for (uuid, doc) in cdrs.iter().filter(|(u, _)| !ok_before.contains(u)) {
        let (ct, body) = encode_body(doc, SubmitEncoding::Urlencoded);
        let r = http.post(&url).header("Content-Type", ct).body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{uuid}");
    }

    // Every CDR normalized exactly once, tasks not doubled.
    let repo = cdrmunch::store::connect(&tdb.url, 2).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, _) = repo.normalized_counts().await.unwrap();
        let c = repo.queue_counts().await.unwrap();
        if n as usize >= N && c.pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{db:?}: only {n} of {N} normalized, {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uuids = normalized_uuids(&repo).await;
    let distinct: HashSet<[u8; 16]> = uuids.iter().copied().collect();
    assert_eq!(uuids.len(), N, "{db:?}: one normalized row per CDR");
    assert_eq!(distinct.len(), N);
    for uuid in ok_before {
        assert!(distinct.contains(uuid::Uuid::parse_str(uuid).unwrap().as_bytes()), "{uuid} got 200 but was lost");
    }
    let c = repo.queue_counts().await.unwrap();
    assert_eq!((c.done, c.error), (N as u64, 0), "{db:?}");
    assert_eq!(repo.normalized_counts().await.unwrap().1 as usize, expected_tasks, "{db:?}: task rows");
    let ncdr_files = files_under(&dir.path().join("ncdr"));
    assert_eq!(ncdr_files.iter().filter(|p| p.extension().is_some_and(|e| e == "xml")).count(), N);

    // Every task done, each effect once: tasks cut off by the kill ran again at once (the
    // restarted process took their claims back), and the billing and call_log rows are
    // keyed by call uuid.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = repo.task_counts().await.unwrap();
        let done: u64 = counts.iter().filter(|(_, d, _)| *d == "y").map(|c| c.2).sum();
        if done as usize == expected_tasks {
            break;
        }
        assert!(Instant::now() < deadline, "{db:?}: tasks not all done: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_done = restarted.elapsed();
    let recovery = recovered.await.unwrap();
    eprintln!(
        "{db:?}: restart to the {acked_before} CDRs acknowledged before the kill and their tasks all done: \
         {:.1} s (goal: 10 s; leases 30 s); to all {N} CDRs (the rest re-posted one by one after the \
         restart) and {expected_tasks} tasks done: {:.1} s",
        recovery.as_secs_f64(),
        all_done.as_secs_f64()
    );
    // Waiting for the killed run's leases would take 30 s from the kill, more than this.
    assert!(recovery < RECOVERY_BOUND, "{db:?}: acknowledged work done {recovery:?} after the restart");
    let billing = sqlx::SqlitePool::connect(&format!("sqlite://{d}/billing.db")).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM billing_feed").fetch_one(&billing).await.unwrap();
    assert_eq!(rows as usize, expected_billing, "{db:?}: one billing row per billable call");
    let log_rows = match db {
        Db::Sqlite => {
            let p = sqlx::SqlitePool::connect(&tdb.url).await.unwrap();
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM call_log").fetch_one(&p).await.unwrap()
        }
        Db::Mysql => {
            let p = sqlx::MySqlPool::connect(&tdb.url).await.unwrap();
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM call_log").fetch_one(&p).await.unwrap()
        }
    };
    assert_eq!(log_rows as usize, expected_calllog, "{db:?}: one call_log row per A-leg");

    // Graceful stop: SIGTERM → exit 0.
    let pid = server.0.id();
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(!pid_file.exists(), "removed on a clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_posting_loses_nothing_sqlite() {
    kill_during_posting(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_posting_loses_nothing_mariadb() {
    kill_during_posting(Db::Mysql).await;
}
