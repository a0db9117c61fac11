//! Claims know who holds them: a restarted process takes back its killed run's claims at
//! once and leaves other processes' claims alone, and a job longer than its lease keeps its
//! claim because the lease is renewed while it runs. (The `kill -9` of the real binary
//! under load, timed with the default leases, is in `kill.rs`.)

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdrmunch::actors::{Fault, Hooks};
use cdrmunch::app::App;
use cdrmunch::config::Settings;
use cdrmunch::store::{CdrQueue, Repository, Store, TaskQueue};
use common::*;

/// `(claimed_by, claim_boot, done)` of the `cdr_queue` row of `uuid`.
async fn cdr_claim(store: &Store, uuid: &str) -> (Option<String>, Option<String>, String) {
    use sqlx::Row;
    let key = uuid::Uuid::parse_str(uuid).unwrap().as_bytes().to_vec();
    let r = sqlx::query(
        "SELECT CAST(claimed_by AS CHAR), CAST(claim_boot AS CHAR), CAST(done AS CHAR) FROM cdr_queue WHERE uuid = ?",
    )
    .bind(key)
    .fetch_one(store.pool())
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// `(claimed_by, done)` of the task of `task_type` of the call `uuid`, once it exists.
async fn task_claim(store: &Store, uuid: &str, task_type: &str) -> Option<(Option<String>, String)> {
    use sqlx::Row;
    let key = uuid::Uuid::parse_str(uuid).unwrap().as_bytes().to_vec();
    let r = sqlx::query(
        "SELECT CAST(t.claimed_by AS CHAR), CAST(t.done AS CHAR) FROM tasks t \
         JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs WHERE n.uuid = ? AND t.task_type = ?",
    )
    .bind(key)
    .bind(task_type.to_string())
    .fetch_optional(store.pool())
    .await
    .unwrap();
    r.map(|r| (r.get(0), r.get(1)))
}

/// Waits (bounded) until `ok` holds.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut ok: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(settings: &Settings, hooks: Hooks) -> App {
    let store = cdrmunch::app::open_repository(settings).await.unwrap();
    let repo: Arc<dyn Repository> = Arc::new(store.clone());
    App::start_with_repository(settings, hooks, store, repo).await.expect("app starts")
}

async fn post(http: &reqwest::Client, app: &App, uuid: &str) {
    let r = http.post(format!("http://{}/api/v2/cdr", app.addr)).body(answered_cdr(uuid)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{uuid}");
}

/// Process B holds claims on two slow CDRs; process A's previous run (killed) held claims on
/// three others. A, restarted, runs its three at once — well inside the 30 s lease — and
/// never touches B's two, which B finishes itself.
async fn restart_takes_back_only_its_own(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::new(db, dir.path());
    let http = reqwest::Client::new();
    let settings = |instance: &str| {
        let mut s = test_settings(dir.path(), &tdb.url);
        s.app.instance_id = Some(instance.to_string());
        (s.distiller.number_of_distilleries, s.distiller.prefetch) = (2, 1);
        assert_eq!((s.distiller.lease_seconds, s.tasksd.lease_seconds), (30, 30), "the default leases");
        s
    };
    let slow: HashSet<[u8; 16]> = (0..2).map(|_| *uuid::Uuid::new_v4().as_bytes()).collect();
    let slow_runs = Arc::new(AtomicUsize::new(0));
    let hooks = {
        let (slow, runs) = (slow.clone(), slow_runs.clone());
        Hooks {
            distillery_fault: Some(Arc::new(move |cdr| {
                if !slow.contains(&cdr.uuid) {
                    return None;
                }
                runs.fetch_add(1, Ordering::SeqCst);
                Some(Fault::Sleep(Duration::from_secs(8)))
            })),
            ..Hooks::default()
        }
    };
    let b_settings = settings("b");
    let b = start(&b_settings, hooks).await;
    let b_boot = b.store.claimant().boot.clone();
    let slow: Vec<String> = slow.iter().map(|u| uuid::Uuid::from_bytes(*u).to_string()).collect();
    for u in &slow {
        post(&http, &b, u).await;
    }
    for u in &slow {
        wait_until("B claims its slow CDRs", Duration::from_secs(10), || async {
            cdr_claim(&b.store, u).await.0.as_deref() == Some("b")
        })
        .await;
    }
    // B's two distilleries are busy: these wait for a claimer
    let mine: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for u in &mine {
        post(&http, &b, u).await;
    }
    // A's previous run claimed them, then was killed
    let mut a_settings = settings("a");
    a_settings.app.roles = vec!["distiller".into(), "tasks".into()];
    let killed = cdrmunch::app::open_repository(&a_settings).await.unwrap();
    let now = chrono::Utc::now();
    let held = killed.claim_cdrs(now, now + chrono::Duration::seconds(30), 10).await.unwrap();
    assert_eq!(held.len(), mine.len(), "{db:?}: the killed run held exactly A's CDRs");

    let restarted = Instant::now();
    let a = start(&a_settings, Hooks::default()).await;
    let a_boot = a.store.claimant().boot.clone();
    assert_ne!(a_boot, killed.claimant().boot);
    for u in &mine {
        wait_until("A's restart runs its killed run's CDRs", Duration::from_secs(20), || async {
            cdr_claim(&a.store, u).await.2 == "y"
        })
        .await;
    }
    let took = restarted.elapsed();
    eprintln!(
        "{db:?}: restarted A ran its killed run's claims {:.1} s after its start (lease 30 s)",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(20), "{db:?}: {took:?}: A waited for its old leases");
    for u in &mine {
        let (by, boot, _) = cdr_claim(&a.store, u).await;
        assert_eq!((by.as_deref(), boot.as_deref()), (Some("a"), Some(a_boot.as_str())), "{db:?}: {u}");
    }
    // B still sleeps on its two: they are still B's
    for u in &slow {
        let (by, boot, done) = cdr_claim(&a.store, u).await;
        assert_eq!((by.as_deref(), boot.as_deref(), done.as_str()), (Some("b"), Some(b_boot.as_str()), "n"), "{db:?}");
    }
    for u in &slow {
        wait_until("B finishes its slow CDRs", Duration::from_secs(30), || async {
            cdr_claim(&a.store, u).await.2 == "y"
        })
        .await;
        let (by, boot, _) = cdr_claim(&a.store, u).await;
        assert_eq!((by.as_deref(), boot.as_deref()), (Some("b"), Some(b_boot.as_str())), "{db:?}: B finished it");
    }
    assert_eq!(slow_runs.load(Ordering::SeqCst), 2, "{db:?}: each slow CDR distilled once, by B");
    a.shutdown(Duration::from_secs(10)).await;
    b.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_takes_back_its_own_claims_at_once_and_not_another_process_s_sqlite() {
    restart_takes_back_only_its_own(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_takes_back_its_own_claims_at_once_and_not_another_process_s_mariadb() {
    restart_takes_back_only_its_own(Db::Mysql).await;
}

/// With 2 s leases, a CDR and a billing task that each take 5 s keep their claims: a rival
/// process polling all along never gets them, and each runs once.
async fn long_jobs_keep_their_claims(db: Db) {
    const SLOW: Duration = Duration::from_secs(5);
    let uuid = uuid::Uuid::new_v4().to_string();
    let key = *uuid::Uuid::parse_str(&uuid).unwrap().as_bytes();
    let (cdr_runs, task_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hooks = {
        let (cdr_runs, task_runs) = (cdr_runs.clone(), task_runs.clone());
        Hooks {
            distillery_fault: Some(Arc::new(move |cdr| {
                (cdr.uuid == key).then(|| cdr_runs.fetch_add(1, Ordering::SeqCst)).map(|_| Fault::Sleep(SLOW))
            })),
            task_fault: Some(Arc::new(move |task| {
                (task.uuid == key && task.task_type.as_str() == "billing")
                    .then(|| task_runs.fetch_add(1, Ordering::SeqCst))
                    .map(|_| Fault::Sleep(SLOW))
            })),
        }
    };
    let lease = |s: &mut Settings| (s.distiller.lease_seconds, s.tasksd.lease_seconds) = (2, 2);
    let app = TestApp::start_with(db, lease, hooks, None).await;
    let mut rival_settings = app.settings.clone();
    rival_settings.app.instance_id = Some("rival".into());
    let rival = cdrmunch::app::open_repository(&rival_settings).await.unwrap();
    let mine = Some(cdrmunch::app::instance_id(&app.settings));
    assert_ne!(mine.as_deref(), Some("rival"));

    assert_eq!(app.post_cdr(answered_cdr(&uuid), "", "text/xml").await.0, 200);
    wait_until("the CDR is claimed", Duration::from_secs(10), || async {
        cdr_claim(app.store(), &uuid).await.0 == mine
    })
    .await;
    let started = Instant::now();
    wait_until("the CDR is distilled", SLOW + Duration::from_secs(20), || async {
        let now = chrono::Utc::now();
        let stolen = rival.claim_cdrs(now, now + chrono::Duration::seconds(60), 10).await.unwrap();
        assert!(stolen.is_empty(), "{db:?}: the rival claimed {stolen:?} after {:?}", started.elapsed());
        cdr_claim(app.store(), &uuid).await.2 == "y"
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(4), "{db:?}: the job outlasted its 2 s lease");

    let billing = "billing".parse().unwrap();
    wait_until("the billing task is claimed", Duration::from_secs(10), || async {
        task_claim(app.store(), &uuid, "billing").await.is_some_and(|(by, _)| by == mine)
    })
    .await;
    let started = Instant::now();
    wait_until("the billing task is done", SLOW + Duration::from_secs(20), || async {
        let now = chrono::Utc::now();
        let stolen = rival.claim_tasks(billing, now, now + chrono::Duration::seconds(60), 10).await.unwrap();
        assert!(stolen.is_empty(), "{db:?}: the rival claimed {stolen:?} after {:?}", started.elapsed());
        task_claim(app.store(), &uuid, "billing").await.is_some_and(|(_, done)| done == "y")
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(4), "{db:?}: the attempt outlasted its 2 s lease");
    assert_eq!((cdr_runs.load(Ordering::SeqCst), task_runs.load(Ordering::SeqCst)), (1, 1), "{db:?}: each ran once");
    let tasks = app.wait_tasks_finished(&uuid, Duration::from_secs(20)).await;
    assert!(tasks.iter().all(|t| t.done == "y" && t.retry == 0), "{db:?}: {tasks:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_longer_than_its_lease_is_not_claimed_twice_sqlite() {
    long_jobs_keep_their_claims(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_longer_than_its_lease_is_not_claimed_twice_mariadb() {
    long_jobs_keep_their_claims(Db::Mysql).await;
}
