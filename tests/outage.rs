//! A real database outage under load: a private mariadbd is killed with SIGKILL and started
//! again on the same datadir while four clients keep posting. With the spool (the default)
//! every POST is answered 200 within the answer timeout and every acknowledged CDR is
//! normalized exactly once afterwards; without it the outage gives 503s and leaves nothing
//! half written.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdrmunch::actors::Hooks;
use cdrmunch::app::App;
use common::mariadb::PrivateMariadb;
use common::*;

/// What the clients saw: (uuid, status, how long the answer took).
type Answers = Arc<Mutex<Vec<(String, u16, Duration)>>>;

fn load(base: String, stop: Arc<AtomicBool>, answers: Answers) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (base, stop, answers) = (base.clone(), stop.clone(), answers.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let uuid = uuid::Uuid::new_v4().to_string();
                    let started = Instant::now();
                    let status = match http.post(format!("{base}/api/v2/cdr")).body(answered_cdr(&uuid)).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    answers.lock().unwrap().push((uuid, status, started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect()
}

async fn outage(spool: bool, down_for: Duration) {
    let mut db = PrivateMariadb::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &db.url("cdrmunch_outage"));
    if !spool {
        settings.request_handler.spool_max_rows = 0;
    }
    let store = cdrmunch::app::open_repository(&settings).await.unwrap();
    let repo: Arc<dyn cdrmunch::store::Repository> = Arc::new(store.clone());
    let app = App::start_with_repository(&settings, Hooks::default(), store.clone(), repo).await.unwrap();
    let base = format!("http://{}", app.addr);
    let (stop, answers): (_, Answers) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let clients = load(base.clone(), stop.clone(), answers.clone());
    let count = |status: u16| answers.lock().unwrap().iter().filter(|a| a.1 == status).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(200) < 20 {
        assert!(Instant::now() < deadline, "no load before the outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.kill();
    let killed_at = answers.lock().unwrap().len();
    tokio::time::sleep(down_for).await; // the outage itself
    let during: Vec<u16> = answers.lock().unwrap()[killed_at..].iter().map(|a| a.1).collect();
    let db = tokio::task::spawn_blocking(move || {
        db.run();
        db
    })
    .await
    .unwrap();
    let after = answers.lock().unwrap().len();
    while answers.lock().unwrap().len() < after + 20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let slowest = answers.iter().map(|a| a.2).max().unwrap();
    let (ok, unavailable) =
        (answers.iter().filter(|a| a.1 == 200).count(), answers.iter().filter(|a| a.1 == 503).count());
    println!(
        "spool {spool}: {} POSTs ({} during the {down_for:?} outage): {ok} × 200, {unavailable} × 503, slowest answer {slowest:?}",
        answers.len(),
        during.len()
    );
    // every POST answered, and in time (the answer timeout is 2 s; the margin is the client's)
    assert!(
        answers.iter().all(|a| a.1 == 200 || a.1 == 503),
        "{:?}",
        answers.iter().find(|a| a.1 != 200 && a.1 != 503)
    );
    assert!(slowest < Duration::from_secs(6), "an answer took {slowest:?}");
    if spool {
        assert_eq!(unavailable, 0, "refusals while the spool had room");
    } else {
        assert!(during.contains(&503), "no 503 during the outage without the spool: {during:?}");
    }
    // every acknowledged CDR normalized exactly once, and nothing else queued
    let acknowledged: HashSet<[u8; 16]> =
        answers.iter().filter(|a| a.1 == 200).map(|a| *uuid::Uuid::parse_str(&a.0).unwrap().as_bytes()).collect();
    let refused: HashSet<[u8; 16]> =
        answers.iter().filter(|a| a.1 == 503).map(|a| *uuid::Uuid::parse_str(&a.0).unwrap().as_bytes()).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let normalized: Vec<[u8; 16]> = normalized_uuids(&store).await;
        let counts = store.queue_counts().await.unwrap();
        if normalized.len() >= acknowledged.len() && counts.pending == 0 {
            let set: HashSet<[u8; 16]> = normalized.iter().copied().collect();
            assert_eq!(set.len(), normalized.len(), "a CDR normalized twice");
            assert!(acknowledged.is_subset(&set), "an acknowledged CDR was not normalized");
            // beyond them only CDRs answered 503 whose row went in after the answer (the
            // switch posts them again and gets a duplicate's 200)
            assert!(set.difference(&acknowledged).all(|u| refused.contains(u)), "a CDR nobody posted");
            if spool {
                assert_eq!(set, acknowledged);
            }
            assert_eq!((counts.done as usize, counts.error), (set.len(), 0));
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {counts:?}, {} of {}", normalized.len(), acknowledged.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // nothing half written: every raw file is a queued CDR
    let raw = files_under(&settings.request_handler.cdr_base_dir);
    let queued = store.queue_counts().await.unwrap().done as usize;
    assert_eq!(raw.len(), queued, "raw files without a row");
    app.shutdown(Duration::from_secs(10)).await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60s_database_outage_under_load_is_answered_200_and_loses_nothing() {
    outage(true, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_spool_an_outage_gives_503s_and_leaves_nothing_half_written() {
    outage(false, Duration::from_secs(15)).await;
}
