//! Fault injection at the distillery boundary (panic, hang, poison pill) through the real
//! actor tree, and the distillery's outcomes driven one claim → distill step at a time.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cdrmunch::actors::distillery::Distillery;
use cdrmunch::actors::{Fault, Hooks};
use cdrmunch::cli::gen::{GenFormat, Generator};
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::outcome::Outcome;
use cdrmunch::storage::{BlobStore, LocalStore, StorageError};
use cdrmunch::store::{NewQueuedCdr, QueuedCdr, Repository, Store};
use common::*;

/// Posts `n` generated CDRs; returns their uuids in order.
async fn post_generated(app: &TestApp, n: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut g = Generator::new(seed, GenFormat::Xml);
    let mut uuids = Vec::new();
    for _ in 0..n {
        let c = g.next_cdr();
        let (ct, body) = encode_body(c.document.as_bytes(), SubmitEncoding::Urlencoded);
        let (status, text) = app.post_cdr(body, "", ct).await;
        assert_eq!(status, 200, "{text}");
        uuids.push(*uuid::Uuid::parse_str(&c.uuid).unwrap().as_bytes());
    }
    uuids
}

/// A hook that injects `fault` for `target` on its first `times` attempts.
fn fault_for(target: Arc<Mutex<Option<[u8; 16]>>>, fault: Fault, times: u32, seen: Arc<AtomicU32>) -> Hooks {
    Hooks {
        distillery_fault: Some(Arc::new(move |job: &QueuedCdr| {
            if Some(job.uuid) == *target.lock().unwrap() && seen.fetch_add(1, Ordering::SeqCst) < times {
                Some(fault)
            } else {
                None
            }
        })),
        ..Hooks::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distillery_panic_restarts_it_and_the_cdr_is_retried() {
    for db in BOTH {
        let target = Arc::new(Mutex::new(None));
        let seen = Arc::new(AtomicU32::new(0));
        let hooks = fault_for(target.clone(), Fault::Panic, 1, seen.clone());
        // Keep the target out of the queue until the hook knows it.
        let app = TestApp::start_with(db, |_| {}, hooks, None).await;
        let mut g = Generator::new(11, GenFormat::Xml);
        let first = g.next_cdr();
        *target.lock().unwrap() = Some(*uuid::Uuid::parse_str(&first.uuid).unwrap().as_bytes());
        let (ct, body) = encode_body(first.document.as_bytes(), SubmitEncoding::Raw);
        assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
        post_generated(&app, 30, 12).await;
        let counts = app.wait_settled(31, Duration::from_secs(30)).await;
        assert_eq!((counts.done, counts.error), (31, 0), "{db:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 2, "tried twice: the panic, then the retry");
        let errors = app.store().queue_errors().await.unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(Some(e.uuid), *target.lock().unwrap());
        assert_eq!((e.done.as_str(), e.critical), ("y", false));
        assert!(
            e.description.contains("internal_failure") && e.description.contains("injected distillery fault"),
            "{}",
            e.description
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_cdr_ends_critical_while_the_rest_flow() {
    for db in BOTH {
        let target = Arc::new(Mutex::new(None));
        let seen = Arc::new(AtomicU32::new(0));
        let hooks = fault_for(target.clone(), Fault::Panic, u32::MAX, seen.clone());
        let app = TestApp::start_with(db, |_| {}, hooks, None).await;
        let mut g = Generator::new(21, GenFormat::Json);
        let poison = g.next_cdr();
        *target.lock().unwrap() = Some(*uuid::Uuid::parse_str(&poison.uuid).unwrap().as_bytes());
        let (ct, body) = encode_body(poison.document.as_bytes(), SubmitEncoding::Json);
        assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
        post_generated(&app, 40, 22).await;
        let counts = app.wait_settled(40, Duration::from_secs(60)).await;
        assert_eq!((counts.done, counts.error), (40, 1), "{db:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 3, "poison threshold is 3");
        let errors = app.store().queue_errors().await.unwrap();
        let e = errors.iter().find(|e| Some(e.uuid) == *target.lock().unwrap()).expect("poison recorded");
        assert_eq!((e.done.as_str(), e.critical), ("error", true));
        assert!(e.description.contains("poison pill") && e.description.contains("3 times"), "{}", e.description);
        // the pool is whole again: more CDRs still flow after three crashes
        post_generated(&app, 10, 23).await;
        app.wait_settled(50, Duration::from_secs(30)).await;
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_distillery_is_killed_and_its_cdr_retried() {
    let target = Arc::new(Mutex::new(None));
    let seen = Arc::new(AtomicU32::new(0));
    let hooks = fault_for(target.clone(), Fault::Hang, 1, seen.clone());
    let app = TestApp::start_with(Db::Sqlite, |s| s.distiller.job_timeout_seconds = 1, hooks, None).await;
    let mut g = Generator::new(31, GenFormat::Xml);
    let c = g.next_cdr();
    *target.lock().unwrap() = Some(*uuid::Uuid::parse_str(&c.uuid).unwrap().as_bytes());
    let (ct, body) = encode_body(c.document.as_bytes(), SubmitEncoding::TextXml);
    assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
    post_generated(&app, 10, 32).await;
    let counts = app.wait_settled(11, Duration::from_secs(30)).await;
    assert_eq!((counts.done, counts.error), (11, 0));
    let errors = app.store().queue_errors().await.unwrap();
    assert!(errors[0].description.contains("hung for more than 1s"), "{}", errors[0].description);
    app.stop().await;
}

/// A generated XML CDR grown past `bytes` with a variable of filler: parsed on the blocking
/// pool instead of inline.
fn padded(doc: &str, bytes: usize) -> String {
    doc.replacen("<variables>", &format!("<variables><padding>{}</padding>", "x".repeat(bytes)), 1)
}

fn key(uuid: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(uuid).unwrap().as_bytes()
}

/// Panics injected per call uuid: the first `times[uuid]` attempts of each panic.
fn panics_for(times: Vec<([u8; 16], u32)>, seen: Arc<Mutex<HashMap<[u8; 16], u32>>>) -> Hooks {
    Hooks {
        distillery_fault: Some(Arc::new(move |job: &QueuedCdr| {
            let limit = times.iter().find(|(u, _)| *u == job.uuid)?.1;
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(job.uuid).or_insert(0);
            *n += 1;
            (*n <= limit).then_some(Fault::Panic)
        })),
        ..Hooks::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_the_same_internal_failure_whatever_the_cdr_size() {
    for db in BOTH {
        let mut g = Generator::new(51, GenFormat::Xml);
        let (small, large, poison) = (g.next_cdr(), g.next_cdr(), g.next_cdr());
        let large_doc = padded(&large.document, 100 * 1024);
        let poison_doc = padded(&poison.document, 100 * 1024);
        assert!(large_doc.len() > 100 * 1024 && small.document.len() < 32 * 1024);
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let times = vec![(key(&small.uuid), 1), (key(&large.uuid), 1), (key(&poison.uuid), u32::MAX)];
        let app = TestApp::start_with(db, |_| {}, panics_for(times, seen.clone()), None).await;
        for doc in [&small.document, &large_doc, &poison_doc] {
            let (ct, body) = encode_body(doc.as_bytes(), SubmitEncoding::TextXml);
            assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
        }
        let counts = app.wait_settled(2, Duration::from_secs(60)).await;
        assert_eq!((counts.done, counts.error), (2, 1), "{db:?}");
        let errors = app.store().queue_errors().await.unwrap();
        let of = |u: &str| errors.iter().find(|e| e.uuid == key(u)).unwrap_or_else(|| panic!("{u}: {errors:?}"));
        // the same path whatever the size: one crash recorded with the row, retried, done
        let described =
            |e: &cdrmunch::store::QueueError| e.description.replace(&format!("cdr_queue.id {}", e.id_cdr_queue), "ID");
        for e in [of(&small.uuid), of(&large.uuid)] {
            assert_eq!((e.done.as_str(), e.critical, e.crashes), ("y", false, 1), "{db:?}: {e:?}");
        }
        assert_eq!(described(of(&small.uuid)), described(of(&large.uuid)), "{db:?}");
        assert!(
            described(of(&large.uuid)).starts_with("internal_failure: distillery panicked: injected distillery fault")
        );
        // a large poison pill is no longer claimed again forever: critical after three crashes
        let p = of(&poison.uuid);
        assert_eq!((p.done.as_str(), p.critical, p.crashes), ("error", true, 3), "{db:?}: {p:?}");
        assert_eq!(seen.lock().unwrap()[&key(&poison.uuid)], 3);
        // and each crash restarted the distillery that ran it, where an operator looks
        let metrics = app.http.get(format!("http://{}/metrics", app.app().metrics_addr.unwrap())).send().await;
        let metrics = metrics.unwrap().text().await.unwrap();
        let restarts = metrics.lines().find(|l| l.starts_with("cdrmunch_actor_restarts_total{actor=\"distillery\"}"));
        let n: f64 = restarts.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0);
        assert!(n >= 5.0, "{db:?}: five crashes, five restarts: {restarts:?}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_count_survives_a_restart() {
    for db in BOTH {
        let poison = Generator::new(61, GenFormat::Xml).next_cdr();
        let always = vec![(key(&poison.uuid), u32::MAX)];
        // first process: the CDR crashes a distillery (its own threshold is out of reach)
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mut app =
            TestApp::start_with(db, |s| s.distiller.poison_threshold = 100, panics_for(always.clone(), seen), None)
                .await;
        let (ct, body) = encode_body(poison.document.as_bytes(), SubmitEncoding::TextXml);
        assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while app.store().queue_errors().await.unwrap().first().is_none_or(|e| e.crashes == 0) {
            assert!(std::time::Instant::now() < deadline, "{db:?}: no crash recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let store = app.store().clone();
        app.halt().await;
        let before = store.queue_errors().await.unwrap()[0].crashes;
        assert!((1..3).contains(&before), "{db:?}: {before}");
        // the process is restarted: the count goes on from the row, it is not forgiven
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mut settings = app.settings.clone();
        settings.distiller.poison_threshold = 3;
        let repo: Arc<dyn Repository> = Arc::new(store.clone());
        let hooks = panics_for(always.clone(), seen.clone());
        let again = cdrmunch::app::App::start_with_repository(&settings, hooks, store.clone(), repo).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let e = loop {
            let e = store.queue_errors().await.unwrap().remove(0);
            if e.critical {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "{db:?}: not marked critical: {e:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let after = seen.lock().unwrap()[&key(&poison.uuid)];
        assert_eq!((e.done.as_str(), e.crashes, after), ("error", 3, 3 - before), "{db:?}: {e:?}");
        again.shutdown(Duration::from_secs(10)).await;
    }
}

/// A raw store that fails reads with an I/O error (a flaky NFS mount, say).
struct FailingStore;

#[async_trait]
impl BlobStore for FailingStore {
    async fn put_unsynced(&self, _: &str, _: &[u8]) -> Result<String, StorageError> {
        unreachable!("the raw store is only read by distilleries")
    }
    async fn put_file(&self, _: &str, _: &std::path::Path) -> Result<String, StorageError> {
        unreachable!("the raw store is only read by distilleries")
    }
    async fn sync(&self, _: &[String]) -> Result<(), StorageError> {
        Ok(())
    }
    async fn get(&self, location: &str) -> Result<Vec<u8>, StorageError> {
        Err(StorageError::Io { location: location.into(), source: std::io::Error::other("EIO") })
    }
    async fn delete(&self, _: &str) -> Result<(), StorageError> {
        unreachable!("the raw store is only read by distilleries")
    }
    async fn check(&self) -> Result<(), StorageError> {
        Err(StorageError::Io { location: "raw".into(), source: std::io::Error::other("EIO") })
    }
    async fn stat(&self, _: &str) -> Result<Option<cdrmunch::storage::ObjectInfo>, StorageError> {
        unreachable!("the raw store is only read by distilleries")
    }
}

async fn step_context(db: Db, dir: &std::path::Path, raw: Arc<dyn BlobStore>) -> (Distillery, Store, TestDb) {
    let tdb = TestDb::new(db, dir);
    let settings = test_settings(dir, &tdb.url);
    let store = cdrmunch::app::open_repository(&settings).await.unwrap();
    let ctx = Distillery {
        repo: Arc::new(store.clone()),
        raw_store: raw,
        ncdr_store: Arc::new(LocalStore::new(dir.join("ncdr"))),
        config: cdrmunch::app::distiller_config(&settings),
        hooks: Hooks::default(),
        committer: None,
    };
    (ctx, store, tdb)
}

async fn enqueue_file(repo: &dyn Repository, path: &std::path::Path, uuid: [u8; 16]) {
    let row = NewQueuedCdr {
        uuid,
        freeswitch_host: "fs1".into(),
        path: path.display().to_string(),
        create_time: 1_700_000_000,
    };
    assert_eq!(repo.enqueue_cdrs(&[row]).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_outcomes_permanent_retriable_duplicate() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, store, _tdb) = step_context(db, dir.path(), Arc::new(LocalStore::new(dir.path()))).await;
        let repo = ctx.repo.clone();
        let now = chrono::Utc::now();
        let later = now + chrono::Duration::seconds(600);

        // permanent: the stored raw CDR is damaged (truncated mid-element)
        let bad = dir.path().join("bad.cdr.xml");
        std::fs::write(&bad, b"<cdr><variables><uuid>0e5f3c2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a</uuid><x>").unwrap();
        enqueue_file(&*repo, &bad, [1; 16]).await;
        // permanent: the raw file is gone
        enqueue_file(&*repo, &dir.path().join("missing.xml"), [2; 16]).await;
        // a good one, claimed twice (its first lease expired while it ran): one effect
        let good = dir.path().join("good.xml");
        let mut g = Generator::new(41, GenFormat::Xml);
        let c = g.next_cdr();
        std::fs::write(&good, &c.document).unwrap();
        let good_uuid = *uuid::Uuid::parse_str(&c.uuid).unwrap().as_bytes();
        enqueue_file(&*repo, &good, good_uuid).await;

        let jobs = repo.claim_cdrs(now, now + chrono::Duration::seconds(2), 10).await.unwrap();
        assert_eq!(jobs.len(), 3);
        assert!(repo.claim_cdrs(now, now, 10).await.unwrap().is_empty(), "leased rows are not claimable");
        let again = repo.claim_cdrs(now + chrono::Duration::seconds(3), later, 10).await.unwrap();
        assert_eq!(again.len(), 3, "an expired lease makes rows claimable again");

        let mut outcomes = HashMap::new();
        for job in &jobs {
            outcomes.insert(job.uuid, ctx.distill(job).await);
        }
        match &outcomes[&[1; 16]] {
            Outcome::PermanentFailure(d) => {
                assert!(d.contains("not well-formed") && d.contains("byte"), "{d}")
            }
            o => panic!("{o:?}"),
        }
        match &outcomes[&[2; 16]] {
            Outcome::PermanentFailure(d) => assert!(d.contains("not found"), "{d}"),
            o => panic!("{o:?}"),
        }
        assert_eq!(outcomes[&good_uuid], Outcome::Successful);
        let second = again.iter().find(|j| j.uuid == good_uuid).unwrap();
        assert_eq!(ctx.distill(second).await, Outcome::SuccessfulDuplicate);
        let counts = store.queue_counts().await.unwrap();
        assert_eq!((counts.done, counts.error, counts.pending), (1, 2, 0), "{db:?}");
        assert_eq!(store.normalized_counts().await.unwrap().0, 1);
        let expected_tasks = tasks_of(&store, good_uuid).await;
        assert_eq!(store.normalized_counts().await.unwrap().1, expected_tasks.len() as u64, "tasks not doubled");
        // a distillery that dies after its commit completed: the done CDR gets no error, no count
        let later_crash = repo.record_crash(second.id, "hung", 1, later, later).await.unwrap();
        assert_eq!((later_crash.count, later_crash.poison), (0, false), "{db:?}");
        let errors = store.queue_errors().await.unwrap();
        assert_eq!(errors.len(), 2, "{db:?}: only the two failed CDRs have an error row: {errors:?}");
        assert!(errors.iter().all(|e| e.done == "error" && !e.critical));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_retriable_failure_backs_off() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, store, _tdb) = step_context(db, dir.path(), Arc::new(FailingStore)).await;
        let repo = ctx.repo.clone();
        enqueue_file(&*repo, &dir.path().join("x.xml"), [7; 16]).await;
        let now = chrono::Utc::now();
        let job = repo.claim_cdrs(now, now + chrono::Duration::seconds(300), 10).await.unwrap().remove(0);
        match ctx.distill(&job).await {
            Outcome::RetriableFailure(d) => assert!(d.contains("EIO"), "{d}"),
            o => panic!("{o:?}"),
        }
        // backoff base 10 s: not due 5 s from now, due 11 s from now, with retry = 1
        assert!(repo.claim_cdrs(now + chrono::Duration::seconds(5), now, 10).await.unwrap().is_empty());
        let later = now + chrono::Duration::seconds(12);
        let retried = repo.claim_cdrs(later, later, 10).await.unwrap();
        assert_eq!(retried.len(), 1, "{db:?}");
        assert_eq!(retried[0].retry, 1);
        let errors = store.queue_errors().await.unwrap();
        assert_eq!((errors[0].done.as_str(), errors[0].critical), ("n", false));
        assert!(errors[0].description.contains("retriable_failure") || errors[0].description.contains("EIO"));
    }
}
