//! `cdrmunch rerate` on SQLite and MariaDB: a dry run changes nothing, `--apply` writes the
//! new rating and one adjustment row per changed call, applying again adds nothing, and no
//! other task runs again (task rows and the call log stay as they were).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// An answered A-leg to a London number, `billsec` seconds, in org 7.
fn london(uuid: &str, billsec: i64) -> Vec<u8> {
    format!(
        "<cdr><variables><uuid>{uuid}</uuid><direction>inbound</direction><start_epoch>1700000000</start_epoch>\
         <answer_epoch>1700000005</answer_epoch><end_epoch>{}</end_epoch><billsec>{billsec}</billsec>\
         <rmOrgID>7</rmOrgID><hangup_cause>NORMAL_CLEARING</hangup_cause></variables><callflow><caller_profile>\
         <caller_id_number>1001</caller_id_number><destination_number>020 7946 000{}</destination_number>\
         </caller_profile></callflow></cdr>",
        1_700_000_005 + billsec,
        billsec % 10
    )
    .into_bytes()
}

fn cli(conf: &Path, args: &[&str]) -> serde_json::Value {
    let (code, v) = cli_exit(conf, args);
    assert_eq!(code, Some(0), "{args:?}: {v}");
    v
}

/// The exit code and the JSON report.
fn cli_exit(conf: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdrmunch")).args(args).arg("--config").arg(conf).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{args:?}: {e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code(), v)
}

/// `(uuid, rerate_id, billingEventType, retailRate)` of every billing row, sorted.
async fn billing_rows(url: &str) -> Vec<(String, String, String, String)> {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT uuid, rerate_id, COALESCE(billingEventType, ''), CAST(retailRate AS TEXT) FROM billing_feed \
         ORDER BY uuid, rerate_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get::<Option<String>, _>(3).unwrap_or_default())).collect()
}

async fn snapshot(store: &cdrmunch::store::Store, uuids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for u in uuids {
        for t in store.task_states(*uuid::Uuid::parse_str(u).unwrap().as_bytes()).await.unwrap() {
            out.push(format!("{u} {} {} {} {}", t.task_type, t.node_index, t.done, t.retry));
        }
    }
    let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_log").fetch_one(store.pool()).await.unwrap();
    out.push(format!("call_log rows {calls}"));
    out
}

async fn rerate_on(db: Db) {
    let deck = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rates.csv");
    let mut app = TestApp::start_with(
        db,
        |s| {
            s.rating.deck = Some(deck.clone());
            s.rating.default_country_code = Some("44".into());
        },
        cdrmunch::actors::Hooks::default(),
        None,
    )
    .await;
    // 42 s and 125 s to London (0.008/min, 60/1 increments: 60 s and 125 s billed), and an
    // unanswered call, which is not billed
    let uuids: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (u, billsec) in uuids.iter().zip([42, 125]) {
        assert_eq!(app.post_cdr(london(u, billsec), "", "text/xml").await.0, 200);
    }
    let missed = uuid::Uuid::new_v4().to_string();
    let doc = String::from_utf8(london(&missed, 0)).unwrap().replace("<answer_epoch>1700000005</answer_epoch>", "");
    assert_eq!(app.post_cdr(doc.into_bytes(), "", "text/xml").await.0, 200);
    for u in &uuids {
        app.wait_tasks_finished(u, Duration::from_secs(30)).await;
    }
    app.wait_tasks_finished(&missed, Duration::from_secs(30)).await;
    let store = app.store().clone();
    let s = app.settings.clone();
    app.halt().await;
    let conf = app.dir.path().join("rerate.conf");
    std::fs::write(
        &conf,
        format!(
            "cdrdb.url = {}\nbillingdb.url = {}\ncdr_base_dir = {}\nnormalized_cdr_base_dir = {}\n\
             rating.default_country_code = 44\n",
            s.database.cdrdb_url,
            s.database.billingdb_url,
            s.distiller.cdr_base_dir.display(),
            s.distiller.normalized_cdr_base_dir.display()
        ),
    )
    .unwrap();
    // the new deck: London at 0.012/min, per second after the first minute
    let new_deck = app.dir.path().join("new-rates.csv");
    let text = std::fs::read_to_string(&deck).unwrap().replace(
        "4420,GB,United Kingdom,National,London,UK1,0,0.008,perMinute,60,1",
        "4420,GB,United Kingdom,National,London,UK1,0,0.012,perMinute,60,1",
    );
    assert_ne!(text, std::fs::read_to_string(&deck).unwrap());
    std::fs::write(&new_deck, text).unwrap();
    let before_rows = billing_rows(&s.database.billingdb_url).await;
    assert_eq!(before_rows.len(), 2, "{db:?}: one row per billed call: {before_rows:?}");
    let before_tasks = snapshot(&store, &uuids).await;
    let ncdr_files = files_under(&s.distiller.normalized_cdr_base_dir);
    let read_all = || ncdr_files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect::<Vec<_>>();
    let before_docs = read_all();

    let args = ["rerate", "--deck", new_deck.to_str().unwrap(), "--from", "2000-01-01", "--to", "2100-01-01", "--json"];
    let dry = cli(&conf, &args);
    // 60 s at 0.008 = 0.008 -> 0.012; 125 s at 0.008 = 0.016667 -> 0.025
    assert_eq!((dry["calls_checked"].as_u64(), dry["calls_changed"].as_u64()), (Some(2), Some(2)), "{db:?} {dry}");
    assert_eq!(dry["applied"], false);
    assert_eq!(
        dry["orgs"],
        serde_json::json!([{ "org_id": 7, "calls": 2, "old_charge": "0.024667", "new_charge": "0.037", "diff": "0.012333" }]),
        "{db:?} {dry}"
    );
    assert_eq!(dry["total_diff"], "0.012333");
    assert_eq!(billing_rows(&s.database.billingdb_url).await, before_rows, "{db:?}: a dry run writes nothing");
    assert_eq!(read_all(), before_docs, "{db:?}: a dry run rewrites nothing");

    let mut apply = args.to_vec();
    apply.push("--apply");
    let applied = cli(&conf, &apply);
    assert_eq!((applied["calls_changed"].as_u64(), applied["adjustments_written"].as_u64()), (Some(2), Some(2)));
    let rows = billing_rows(&s.database.billingdb_url).await;
    let id = applied["rerate_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("rerate-"), "{id}");
    let adjustments: Vec<_> = rows.iter().filter(|r| r.1.starts_with(&format!("{id}-"))).collect();
    assert_eq!(adjustments.len(), 2, "{db:?}: {rows:?}");
    assert!(adjustments.iter().all(|r| r.2 == "rerate" && r.3.starts_with("0.012")), "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.1.is_empty()).count(), 2, "the original rows stay as they were");
    for (path, doc) in ncdr_files.iter().zip(read_all()) {
        let billed = uuids.iter().any(|u| path.to_string_lossy().contains(u.as_str()));
        let rate = if billed { "<retailRate>0.012</retailRate>" } else { "<retailRate>0.008</retailRate>" };
        assert!(doc.contains(rate), "{db:?}: billed calls carry the new rating, the missed one the old: {doc}");
    }
    assert_eq!(snapshot(&store, &uuids).await, before_tasks, "{db:?}: no task ran again");

    let again = cli(&conf, &apply);
    assert_eq!((again["calls_changed"].as_u64(), again["adjustments_written"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(billing_rows(&s.database.billingdb_url).await, rows, "{db:?}: applying again adds nothing");

    // a deck without the London prefixes: the calls cannot be rated and keep their rating
    let no_london = app.dir.path().join("no-london.csv");
    let text = std::fs::read_to_string(&new_deck).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("44")).collect();
    std::fs::write(&no_london, kept.join("\n")).unwrap();
    let range = ["--from", "2000-01-01", "--to", "2100-01-01", "--json", "--apply"];
    let (code, unrated) = cli_exit(&conf, &[&["rerate", "--deck", no_london.to_str().unwrap()][..], &range].concat());
    assert_eq!(code, Some(1), "{db:?}: calls it could not rate make the run fail: {unrated}");
    assert_eq!(
        (unrated["calls_changed"].as_u64(), unrated["adjustments_written"].as_u64()),
        (Some(0), Some(0)),
        "{unrated}"
    );
    assert_eq!(unrated["failures"].as_array().map(Vec::len), Some(2), "{db:?} {unrated}");
    assert_eq!(billing_rows(&s.database.billingdb_url).await, rows, "{db:?}: nothing rated to nothing");

    // back to the first deck: an adjustment again, though that deck was applied before (at
    // the start, by the service) — and then forth once more
    for (deck, rate) in [(&deck, "0.008"), (&new_deck, "0.012")] {
        let back = cli(
            &conf,
            &[
                "rerate",
                "--deck",
                deck.to_str().unwrap(),
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01",
                "--json",
                "--apply",
            ],
        );
        assert_eq!(
            (back["calls_changed"].as_u64(), back["adjustments_written"].as_u64()),
            (Some(2), Some(2)),
            "{db:?} {back}"
        );
        let latest: Vec<_> = billing_rows(&s.database.billingdb_url).await;
        assert!(latest.iter().filter(|r| r.3.starts_with(rate) && r.2 == "rerate").count() >= 2, "{db:?}: {latest:?}");
    }
    assert_eq!(billing_rows(&s.database.billingdb_url).await.len(), 8, "{db:?}: two calls, three adjustments each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerate_dry_run_apply_and_apply_again_on_sqlite() {
    rerate_on(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerate_dry_run_apply_and_apply_again_on_mariadb() {
    rerate_on(Db::Mysql).await;
}

/// A billing table created before rerates (unique by uuid alone) keeps its rows and gains
/// the rerate key, so adjustments can be added beside a call's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_billing_table_gains_the_rerate_key() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let mut s = test_settings(dir.path(), &tdb.url);
        s.database.billingdb_url = match db {
            Db::Sqlite => format!("sqlite://{}/billing.db", dir.path().display()),
            Db::Mysql => tdb.url.clone(),
        };
        s.billing_feeder.field_names = vec!["uuid".into(), "quantity".into()];
        s.billing_feeder.field_types = vec!["s".into(), "d".into()];
        let store = cdrmunch::store::Store::connect(&s.database.billingdb_url, 2).await.unwrap();
        let old = match db {
            Db::Sqlite => "CREATE TABLE billing_feed (\"id\" INTEGER PRIMARY KEY AUTOINCREMENT, \"uuid\" TEXT NOT NULL, \
                           \"quantity\" NUMERIC, \"fed_at\" TIMESTAMP DEFAULT CURRENT_TIMESTAMP, UNIQUE (\"uuid\"))",
            Db::Mysql => "CREATE TABLE billing_feed (`id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, `uuid` VARCHAR(64) \
                          NOT NULL, `quantity` DECIMAL(24,8) NULL, `fed_at` TIMESTAMP DEFAULT CURRENT_TIMESTAMP, UNIQUE (`uuid`))",
        };
        sqlx::query(old).execute(store.pool()).await.unwrap();
        sqlx::query("INSERT INTO billing_feed (uuid, quantity) VALUES ('u-1', 60)")
            .execute(store.pool())
            .await
            .unwrap();
        let feeder = cdrmunch::handlers::billing::BillingFeeder::connect(&s).await.unwrap();
        let doc = cdrmunch::domain::ncdr::NormalizedDoc {
            data: vec![("uuid".into(), "u-1".into()), ("quantity".into(), "61".into())],
            ..Default::default()
        };
        let node = cdrmunch::domain::ncdr::TaskDoc { task_type: "billing".into(), params: vec![] };
        assert!(!feeder.feed(&doc, &node, None).await.unwrap().0, "{db:?}: the call's row is there already");
        assert!(feeder.feed(&doc, &node, Some("rerate-1")).await.unwrap().0, "{db:?}: an adjustment is added");
        assert!(!feeder.feed(&doc, &node, Some("rerate-1")).await.unwrap().0, "{db:?}: once");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM billing_feed").fetch_one(store.pool()).await.unwrap();
        assert_eq!(rows, 2, "{db:?}: the old row kept, one adjustment");
        drop(feeder);
        // connecting again finds the key in place
        cdrmunch::handlers::billing::BillingFeeder::connect(&s).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_sqlite_billing_table_with_other_columns_is_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = test_settings(dir.path(), &format!("sqlite://{}/cdr.db", dir.path().display()));
    s.database.billingdb_url = format!("sqlite://{}/billing.db", dir.path().display());
    s.billing_feeder.field_names = vec!["uuid".into(), "quantity".into()];
    s.billing_feeder.field_types = vec!["s".into(), "d".into()];
    let store = cdrmunch::store::Store::connect(&s.database.billingdb_url, 2).await.unwrap();
    // a column the config no longer lists: rebuilding the table would lose it
    sqlx::query(
        "CREATE TABLE billing_feed (\"id\" INTEGER PRIMARY KEY AUTOINCREMENT, \"uuid\" TEXT NOT NULL, \
         \"quantity\" NUMERIC, \"carrier\" TEXT, \"fed_at\" TIMESTAMP DEFAULT CURRENT_TIMESTAMP, UNIQUE (\"uuid\"))",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("INSERT INTO billing_feed (uuid, quantity, carrier) VALUES ('u-1', 60, 'acme')")
        .execute(store.pool())
        .await
        .unwrap();
    let err = cdrmunch::handlers::billing::BillingFeeder::connect(&s).await.err().expect("refused");
    assert!(err.contains("carrier") && err.contains("by hand"), "{err}");
    let kept: String = sqlx::query_scalar("SELECT carrier FROM billing_feed").fetch_one(store.pool()).await.unwrap();
    assert_eq!(kept, "acme", "the ledger is as it was");
}
