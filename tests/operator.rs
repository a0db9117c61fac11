//! The operator CLI (`status`, `retry`, `purge`, `replay`) run as the real binary against a
//! database seeded with done, pending, stuck and error rows: the numbers match, and each
//! command changes exactly what it says.

mod common;

use std::process::Command;
use std::time::Duration;

use cdrmunch::store::{NewQueuedCdr, RetryTasks, TaskFinish};
use common::*;
use serde_json::Value;

fn cli(conf: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
        .args(args)
        .arg("--config")
        .arg(conf)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out.status.code().unwrap_or(-1), o, e)
}

fn json(conf: &std::path::Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = cli(conf, &a);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

async fn exec(url: &str, db: Db, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db {
        Db::Sqlite => sqlx::query(sql).execute(&sqlx::SqlitePool::connect(url).await.unwrap()).await.map(|_| ()),
        Db::Mysql => sqlx::query(sql).execute(&sqlx::MySqlPool::connect(url).await.unwrap()).await.map(|_| ()),
    }
    .unwrap();
}

async fn operator_commands(db: Db) {
    let mut app = TestApp::start(db).await;
    let uuids: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for u in &uuids {
        assert_eq!(app.post_cdr(answered_cdr(u), "", "text/xml").await.0, 200);
    }
    for u in &uuids {
        app.wait_tasks_finished(u, Duration::from_secs(30)).await;
    }
    let repo = app.repo();
    let store = app.store().clone();
    let s = app.settings.clone();
    let d = app.dir.path().to_path_buf();
    let conf = d.join("ops.conf");
    let write_conf = |extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "cdrdb.url = {}\nbillingdb.url = {}\ncdr_base_dir = {}\nnormalized_cdr_base_dir = {}\n{extra}\n",
                s.database.cdrdb_url,
                s.database.billingdb_url,
                s.distiller.cdr_base_dir.display(),
                s.distiller.normalized_cdr_base_dir.display()
            ),
        )
        .unwrap()
    };
    write_conf("");
    app.halt().await; // the rest is the operator's: no service touching the rows

    // seed: a CDR stuck for two hours, a CDR in error, a failed task
    let now = chrono::Utc::now();
    let row = |n: u8, age: i64| NewQueuedCdr {
        uuid: [n; 16],
        freeswitch_host: "fs9".into(),
        path: format!("{}/missing-{n}.xml", d.display()),
        create_time: now.timestamp() - age,
    };
    repo.enqueue_cdrs(&[row(0xA1, 7200), row(0xA2, 60)]).await.unwrap();
    let errored = repo.claim_cdrs(now, now, 10).await.unwrap().into_iter().find(|c| c.uuid == [0xA2; 16]).unwrap();
    repo.mark_error(errored.id, "XML parse error at byte 17: unexpected end", now).await.unwrap();
    repo.release_claims(&[]).await.unwrap();
    exec(&s.database.cdrdb_url, db, "UPDATE cdr_queue SET next_attempt = NULL WHERE done = 'n'").await;
    let key0 = *uuid::Uuid::parse_str(&uuids[0]).unwrap().as_bytes();
    let billing0 = store.task_states(key0).await.unwrap().into_iter().find(|t| t.task_type == "billing").unwrap();
    let ops = &store;
    ops.retry_tasks(&RetryTasks::One(billing0.id), now).await.unwrap();
    let failed = TaskFinish::Error { error: "billing database: Duplicate column".into() };
    // retry made it due `now`: an attempt claims it and fails
    let claimed = repo.claim_tasks("billing".parse().unwrap(), now, now, 100).await.unwrap();
    let attempt = claimed.iter().find(|t| t.id == billing0.id).expect("due again after retry");
    assert!(repo.finish_task(billing0.id, attempt.claim, &failed).await.unwrap());

    // status: the seed's health checks
    let st = json(&conf, &["status"]);
    assert_eq!(st["cdr_queue"], serde_json::json!({"pending": 1, "done": 4, "error": 1}), "{db:?} {st}");
    assert_eq!(st["stuck_over_1h"], 1, "{db:?}");
    let billing = st["tasks"].as_array().unwrap().iter().find(|t| t["task_type"] == "billing").unwrap();
    assert_eq!(
        (billing["done"].as_u64(), billing["error"].as_u64(), billing["pending"].as_u64()),
        (Some(3), Some(1), Some(0))
    );
    assert_eq!(st["recent_errors"][0]["id_cdr_queue"], errored.id, "{st}");
    assert_eq!(st["recent_errors"][0]["description"], "XML parse error at byte 17: unexpected end");
    assert_eq!(st["recent_task_errors"][0]["error_message"], "billing database: Duplicate column");
    assert_eq!(st["recent_task_errors"][0]["uuid"], uuids[0].as_str());
    let (code, human, _) = cli(&conf, &["status"]);
    assert_eq!(code, 0);
    assert!(human.contains("cdr_queue: 1 pending, 4 done, 1 error; 1 stuck over 1 hour"), "{human}");
    assert!(human.contains("XML parse error at byte 17"), "{human}");

    // retry: exactly the rows named
    assert_eq!(json(&conf, &["retry", "--errors", "--type", "billing"])["requeued"], 1);
    assert_eq!(json(&conf, &["retry", "--errors", "--type", "billing"])["requeued"], 0, "nothing left in error");
    let t = store.task_states(key0).await.unwrap().into_iter().find(|t| t.id == billing0.id).unwrap();
    assert_eq!((t.done.as_str(), t.retry), ("n", 0));
    let (code, out, _) = cli(&conf, &["retry", "--errors"]);
    assert_eq!((code, out.trim()), (0, "1 CDR put back to done='n', retry=0"));
    assert_eq!(json(&conf, &["retry", "--cdr", &errored.id.to_string()])["requeued"], 1);
    let (code, _, err) = cli(&conf, &["retry", "--errors", "--type", "Billing"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown task type 'Billing'"), "{err}");
    let st = json(&conf, &["status"]);
    assert_eq!(st["cdr_queue"]["error"], 0);
    assert_eq!(st["cdr_queue"]["pending"], 2);

    // purge: two CDRs made old; the one with a pending task (uuids[0]) is not touched
    let old = "2020-01-01 00:00:00";
    for u in &uuids[..3] {
        let hex: String = uuid::Uuid::parse_str(u).unwrap().simple().to_string();
        let lit = match db {
            Db::Sqlite => format!("X'{hex}'"),
            Db::Mysql => format!("UNHEX('{hex}')"),
        };
        exec(&s.database.cdrdb_url, db, &format!("UPDATE normalized_cdrs SET created_at = '{old}' WHERE uuid = {lit}"))
            .await;
    }
    let paths: Vec<String> = {
        let mut v = Vec::new();
        for u in &uuids {
            let k = *uuid::Uuid::parse_str(u).unwrap().as_bytes();
            v.push(ops.normalized_of(k).await.unwrap().unwrap().1);
        }
        v
    };
    let dry = json(&conf, &["purge", "--older-than", "30d", "--dry-run"]);
    assert_eq!((dry["normalized_cdrs"].as_u64(), dry["files"].as_u64()), (Some(2), Some(2)), "{dry}");
    assert!(paths.iter().all(|p| std::path::Path::new(p).exists()), "a dry run deletes nothing");
    let archive = d.join("archive");
    let purged = json(&conf, &["purge", "--older-than", "30d", "--archive-to", archive.to_str().unwrap()]);
    assert_eq!((purged["normalized_cdrs"].as_u64(), purged["archived"].as_u64()), (Some(2), Some(2)), "{purged}");
    for (i, p) in paths.iter().enumerate() {
        let gone = i == 1 || i == 2;
        assert_eq!(!std::path::Path::new(p).exists(), gone, "{p}");
        let hour_file: Vec<&str> = p.rsplit('/').take(2).collect();
        let archived = archive.join(hour_file[1]).join(hour_file[0]);
        assert_eq!(archived.exists(), gone, "{}", archived.display());
    }
    let (n, _) = store.normalized_counts().await.unwrap();
    assert_eq!(n, 2, "{db:?}: rows of the purged CDRs are gone");
    let k1 = *uuid::Uuid::parse_str(&uuids[1]).unwrap().as_bytes();
    assert!(store.task_states(k1).await.unwrap().is_empty(), "their task rows too");
    assert_eq!(store.call_of(k1).await.unwrap(), None, "{db:?}: and their calls");
    let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls").fetch_one(store.pool()).await.unwrap();
    assert_eq!(calls, 2, "{db:?}: the two calls not purged stay");
    assert_eq!(store.queue_counts().await.unwrap().done, 4, "cdr_queue rows stay for intake's duplicate check");
    assert_eq!(json(&conf, &["purge", "--older-than", "30d"])["normalized_cdrs"], 0, "done: a rerun finds nothing");

    // replay after a rules change: Salesforce configured and every A-leg to be synced, so
    // each remaining A-leg gains a CDR2SFAPI task; a second replay changes nothing
    write_conf("salesforce.client_id = cid\nsalesforce.client_secret = secret\ntask_rules.CDR2SFAPI = a_leg");
    let r = json(&conf, &["replay", "--from", "2000-01-01", "--to", "2100-01-01"]);
    assert_eq!((r["renormalized"].as_u64(), r["tasks_added"].as_u64()), (Some(2), Some(2)), "{db:?} {r}");
    assert_eq!(r["not_normalized"], 2, "the purged ones have no normalized row to replay: {r}");
    let k3 = *uuid::Uuid::parse_str(&uuids[3]).unwrap().as_bytes();
    let tasks: Vec<(String, u32)> = tasks_of(&store, k3).await;
    assert_eq!(tasks, vec![("billing".into(), 0), ("calllog".into(), 1), ("CDR2SFAPI".into(), 2)]);
    let xml = std::fs::read_to_string(&paths[3]).unwrap();
    assert!(xml.contains("<task type=\"CDR2SFAPI\""), "{xml}");
    let again = json(&conf, &["replay", "--from", "2000-01-01", "--to", "2100-01-01"]);
    assert_eq!((again["tasks_added"].as_u64(), again["tasks_dropped"].as_u64()), (Some(0), Some(0)), "{again}");
    let done_before: Vec<_> = store.task_states(k3).await.unwrap();
    assert_eq!(done_before.iter().filter(|t| t.done == "y").count(), 2, "tasks that ran are kept as they were");
    let (code, _, err) = cli(&conf, &["replay", "--from", "2026-11-02", "--to", "2026-11-01"]);
    assert_eq!(code, 2);
    assert!(err.contains("--to must be after --from"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_sqlite() {
    operator_commands(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_mariadb() {
    operator_commands(Db::Mysql).await;
}
