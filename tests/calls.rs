//! One record per call: legs linked in any arrival order, on SQLite and MariaDB — a call
//! through loopback (A, two loopback halves, B) in all 24 orders, and the corpus's two-leg
//! call posted both ways through the real service, with one call_log row per call and
//! `cdrmunch call` printing it.

mod common;

use std::time::Duration;

use cdrmunch::domain::normalize::{normalize_document, NormalizeContext, NormalizedCdr};
use cdrmunch::store::{NewNormalizedCdr, NormalizedCdrs};
use common::*;

fn xml(uuid: &str, vars: &str, profile: &str) -> Vec<u8> {
    format!(
        "<cdr><variables><uuid>{uuid}</uuid><start_epoch>1700000000</start_epoch>{vars}</variables>\
         <callflow><caller_profile>{profile}</caller_profile></callflow></cdr>"
    )
    .into_bytes()
}

/// The four CDRs of a call from 1001 to 2000 through `loopback/2000`.
fn through_loopback() -> Vec<(String, NormalizedCdr)> {
    let [a, la, lb, b] = [(); 4].map(|_| uuid::Uuid::new_v4().to_string());
    let answered = "<answer_epoch>1700000005</answer_epoch><end_epoch>1700000065</end_epoch>";
    let docs = [
        xml(&a, &format!("<direction>inbound</direction>{answered}<billsec>60</billsec>"), "<caller_id_number>1001</caller_id_number><destination_number>2000</destination_number>"),
        xml(
            &la,
            &format!(
                "<is_loopback>1</is_loopback><loopback_leg>A</loopback_leg><originating_leg_uuid>{a}</originating_leg_uuid>\
                 <other_loopback_leg_uuid>{lb}</other_loopback_leg_uuid><channel_name>loopback/2000-a</channel_name>{answered}<billsec>60</billsec>"
            ),
            "<caller_id_number>1001</caller_id_number><destination_number>2000</destination_number>",
        ),
        xml(
            &lb,
            &format!(
                "<direction>inbound</direction><is_loopback>1</is_loopback><loopback_leg>B</loopback_leg>\
                 <other_loopback_leg_uuid>{la}</other_loopback_leg_uuid><other_loopback_from_uuid>{a}</other_loopback_from_uuid>\
                 <channel_name>loopback/2000-b</channel_name>{answered}<billsec>3</billsec>"
            ),
            "<caller_id_number>1001</caller_id_number><destination_number>2000</destination_number>",
        ),
        xml(
            &b,
            &format!("<direction>outbound</direction><originator>{lb}</originator>{answered}<billsec>58</billsec><hangup_cause>NORMAL_CLEARING</hangup_cause>"),
            "<caller_id_number>1001</caller_id_number><destination_number>2000</destination_number>",
        ),
    ];
    [a, la, lb, b]
        .into_iter()
        .zip(docs)
        .map(|(u, d)| (u, normalize_document(&d, &NormalizeContext::default()).unwrap()))
        .collect()
}

fn row(n: &NormalizedCdr) -> NewNormalizedCdr {
    NewNormalizedCdr {
        uuid: n.uuid_bytes,
        path: format!("/nowhere/{}.xml", n.uuid),
        cdr_path: String::new(),
        table_suffix: n.table_suffix,
        org_id: 0,
        tasks: n.task_rows(),
        links: Some(n.leg_facts()),
    }
}

fn key(u: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(u).unwrap().as_bytes()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_loopback_is_one_call_with_four_legs_in_all_24_arrival_orders() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let store = cdrmunch::app::open_repository(&test_settings(dir.path(), &tdb.url)).await.unwrap();
        let orders = permutations(4);
        assert_eq!(orders.len(), 24);
        for order in orders {
            let legs = through_loopback();
            // one leg per commit: each arrives alone, in this order
            for &i in &order {
                store.commit_normalized(&[(0, row(&legs[i].1))], chrono::Utc::now()).await.unwrap();
            }
            for (u, _) in &legs {
                let call = store.call_of(key(u)).await.unwrap().unwrap_or_else(|| panic!("{db:?} {order:?}: no call"));
                assert_eq!(call.call_id, key(&legs[0].0), "{db:?} {order:?}: the A-leg is the call id");
                let roles: Vec<(&str, &str)> = call
                    .legs
                    .iter()
                    .map(|(k, _, r)| (legs.iter().find(|(u, _)| key(u) == *k).unwrap().0.as_str(), r.as_str()))
                    .collect();
                let want = [
                    (legs[0].0.as_str(), "caller"),
                    (legs[1].0.as_str(), "loopback"),
                    (legs[2].0.as_str(), "loopback"),
                    (legs[3].0.as_str(), "callee"),
                ];
                let mut sorted = roles.clone();
                sorted.sort_by_key(|(u, _)| legs.iter().position(|(l, _)| l == u));
                assert_eq!(sorted, want, "{db:?} {order:?}");
                assert_eq!((call.caller.as_str(), call.callee.as_str(), call.talk_seconds), ("1001", "2000", 60));
            }
            assert_eq!(stored_call(&store, &legs[2].0).await, summed_up(&legs), "{db:?} {order:?}: the calls row");
        }
        let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls").fetch_one(store.pool()).await.unwrap();
        assert_eq!(calls, 24, "{db:?}: one row per call, merged ones deleted");
    }
}

/// The `calls` row a leg's call has: call id, caller, callee, talk seconds, legs.
async fn stored_call(store: &cdrmunch::store::Store, leg: &str) -> (Vec<u8>, String, String, i64, i64) {
    sqlx::query_as(
        "SELECT c.call_id, c.caller, c.callee, CAST(c.talk_seconds AS SIGNED), CAST(c.legs AS SIGNED) \
         FROM calls c JOIN call_legs l ON l.call_key = c.call_key WHERE l.uuid = ?",
    )
    .bind(key(leg).to_vec())
    .fetch_one(store.pool())
    .await
    .unwrap()
}

fn summed_up(legs: &[(String, NormalizedCdr)]) -> (Vec<u8>, String, String, i64, i64) {
    (key(&legs[0].0).to_vec(), "1001".into(), "2000".into(), 60, legs.len() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legs_committed_together_or_again_make_the_same_call() {
    // one commit of all four; two pairs that meet only through the second; a late leg whose
    // call exists; a leg sent twice in one batch and again later
    let batchings: [&[&[usize]]; 4] =
        [&[&[0, 1, 2, 3]], &[&[0, 3], &[1, 2]], &[&[3, 2, 1], &[0]], &[&[1, 1, 0], &[3, 2], &[1]]];
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let store = cdrmunch::app::open_repository(&test_settings(dir.path(), &tdb.url)).await.unwrap();
        for batches in batchings {
            let legs = through_loopback();
            for batch in batches {
                let rows: Vec<(u64, NewNormalizedCdr)> = batch.iter().map(|&i| (0, row(&legs[i].1))).collect();
                store.commit_normalized(&rows, chrono::Utc::now()).await.unwrap();
            }
            assert_eq!(stored_call(&store, &legs[3].0).await, summed_up(&legs), "{db:?} {batches:?}");
            let call = store.call_of(key(&legs[1].0)).await.unwrap().unwrap();
            assert_eq!((call.call_id, call.legs.len()), (key(&legs[0].0), 4), "{db:?} {batches:?}");
        }
        let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls").fetch_one(store.pool()).await.unwrap();
        assert_eq!(calls, batchings.len() as i64, "{db:?}");
    }
}

/// Posts the corpus files named, in order, each after the previous is normalized.
async fn post_in_order(app: &TestApp, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let doc = std::fs::read(corpus_dir().join("json").join(name)).unwrap();
        let (status, body) = app.post_cdr(doc, "", "application/json").await;
        assert_eq!(status, 200, "{name}: {body}");
        app.wait_settled(i as u64 + 1, Duration::from_secs(30)).await;
    }
}

const LEG_A: &str = "somleng_2021_leg_a_joined_by_leg_b.json";
const LEG_B: &str = "somleng_2021_leg_b.json";
const A: &str = "7bfa8442-8fa2-4daa-bf10-6be79c9a07f6";
const B: &str = "21bc47f2-250c-4d98-a157-0ad756d54027";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_pair_is_one_call_with_one_call_log_row_in_both_orders() {
    for db in BOTH {
        for order in [[LEG_A, LEG_B], [LEG_B, LEG_A]] {
            let app = TestApp::start(db).await;
            post_in_order(&app, &order).await;
            let call = app.store().call_of(key(B)).await.unwrap().expect("a call");
            let legs: Vec<String> = call.legs.iter().map(|(u, _, _)| uuid::Uuid::from_bytes(*u).to_string()).collect();
            assert_eq!(legs.len(), 2, "{db:?} {order:?}: {legs:?}");
            assert!(legs.contains(&A.to_string()) && legs.contains(&B.to_string()));
            assert_eq!(
                app.store().call_of(key(A)).await.unwrap(),
                Some(call.clone()),
                "either leg finds the same call"
            );
            // whichever leg's calllog task ran, and in whatever order: one row for the call
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let call_id = uuid::Uuid::from_bytes(call.call_id).to_string();
            loop {
                let tasks = [key(A), key(B)];
                let mut pending = 0;
                for t in tasks {
                    pending += app.store().task_states(t).await.unwrap().iter().filter(|t| t.done == "n").count();
                }
                let rows: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM call_log").fetch_one(app.store().pool()).await.unwrap();
                if pending == 0 && rows == 1 {
                    let billsec: i64 =
                        sqlx::query_scalar("SELECT CAST(billsec AS SIGNED) FROM call_log WHERE uuid = ?")
                            .bind(call.call_id.to_vec())
                            .fetch_one(app.store().pool())
                            .await
                            .unwrap();
                    assert_eq!(billsec, call.talk_seconds, "{db:?} {order:?}: the row is the call's ({call_id})");
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{db:?} {order:?}: {rows} call_log rows, {pending} pending"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            app.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cgrates_transfer_leg_names_its_partner_and_cdrmunch_call_prints_the_call() {
    let mut app = TestApp::start(Db::Sqlite).await;
    post_in_order(&app, &["cgrates_2018_teo_bridged_hold_transfer.json"]).await;
    let own = "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4";
    let partner = "9c1afb4f-1d4a-4e45-84a3-d25721981bf5";
    let call =
        app.store().call_of(key(partner)).await.unwrap().expect("the partner it bridged to is known to the call");
    assert_eq!(call.call_id, key(own));
    assert_eq!(call.legs.len(), 1, "only legs whose CDR arrived are listed");
    let conf = app.dir.path().join("call.conf");
    std::fs::write(&conf, format!("cdrdb.url = {}\n", app.settings.database.cdrdb_url)).unwrap();
    app.halt().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
        .args(["call", partner, "--json", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["call_id"], own);
    assert_eq!((v["caller"].as_str(), v["callee"].as_str()), (Some("1001"), Some("1002")));
    assert_eq!((v["answered"].as_bool(), v["talk_seconds"].as_i64()), (Some(true), Some(21)));
    assert_eq!(v["legs"], serde_json::json!([{ "uuid": own, "leg": "A", "role": "caller" }]));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
        .args(["call", &uuid::Uuid::new_v4().to_string(), "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no call knows"));
}

/// A leg naming `peers`, as the distillery hands it to the commit.
fn bare_leg(uuid: [u8; 16], peers: &[[u8; 16]], leg: cdrmunch::domain::normalize::Leg) -> NewNormalizedCdr {
    NewNormalizedCdr {
        uuid,
        path: format!("/nowhere/{}.xml", uuid::Uuid::from_bytes(uuid)),
        cdr_path: String::new(),
        table_suffix: 20231114,
        org_id: 0,
        tasks: Vec::new(),
        links: Some(cdrmunch::domain::calls::LegFacts {
            uuid,
            peers: peers.to_vec(),
            leg,
            loopback: false,
            start: 1700000000,
            answer: 1700000002,
            end: 1700000030,
            billsec: 28,
            caller: "1001".into(),
            callee: "2000".into(),
            hangup_cause: "NORMAL_CLEARING".into(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_linking_legs_of_one_call_at_once_make_one_call() {
    use cdrmunch::domain::normalize::Leg;
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let settings = test_settings(dir.path(), &tdb.url);
        // two processes on one database: two stores, each its own pool
        let (one, two) = (
            cdrmunch::app::open_repository(&settings).await.unwrap(),
            cdrmunch::app::open_repository(&settings).await.unwrap(),
        );
        for round in 0..40 {
            // the A-leg and a B-leg each name the bridge's other uuid, which neither has seen
            let [a, b, c] = [(); 3].map(|_| *uuid::Uuid::new_v4().as_bytes());
            let now = chrono::Utc::now();
            let (first, second) = ([(0, bare_leg(a, &[b], Leg::A))], [(0, bare_leg(c, &[b], Leg::B))]);
            let (x, y) = tokio::join!(one.commit_normalized(&first, now), two.commit_normalized(&second, now));
            x.unwrap();
            y.unwrap();
            let call = one.call_of(a).await.unwrap().unwrap();
            assert_eq!(call.legs.len(), 2, "{db:?} round {round}: {call:?}");
            assert_eq!(one.call_of(c).await.unwrap().unwrap().call_id, a, "{db:?} round {round}");
            let stored = stored_call(&one, &uuid::Uuid::from_bytes(c).to_string()).await;
            assert_eq!((stored.0, stored.4), (a.to_vec(), 2), "{db:?} round {round}: the calls row");
        }
        let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls").fetch_one(one.pool()).await.unwrap();
        assert_eq!(calls, 40, "{db:?}");
        one.pool().close().await;
        two.pool().close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_leg_while_the_call_log_is_written_makes_it_written_again() {
    use cdrmunch::store::{TaskFinish, TaskQueue};
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let store = cdrmunch::app::open_repository(&test_settings(dir.path(), &tdb.url)).await.unwrap();
        let legs = through_loopback();
        let now = chrono::Utc::now();
        store.commit_normalized(&[(0, row(&legs[0].1))], now).await.unwrap();
        let calllog = "calllog".parse().unwrap();
        let running = store.claim_tasks(calllog, now, now + chrono::Duration::seconds(60), 10).await.unwrap();
        assert_eq!(running.len(), 1, "{db:?}: the A-leg's calllog task");
        // the loopback leg A bridged to arrives while that task runs: it read the call with one leg
        store.commit_normalized(&[(0, row(&legs[1].1))], now).await.unwrap();
        let finished = store.finish_task(running[0].id, running[0].claim, &TaskFinish::Done).await.unwrap();
        assert!(!finished, "{db:?}: the attempt that read the call before does not close the task");
        let again = store.claim_tasks(calllog, now, now + chrono::Duration::seconds(60), 10).await.unwrap();
        assert_eq!(again.iter().map(|t| t.id).collect::<Vec<_>>(), vec![running[0].id], "{db:?}: it runs again");
        assert!(store.finish_task(again[0].id, again[0].claim, &TaskFinish::Done).await.unwrap(), "{db:?}");
    }
}
