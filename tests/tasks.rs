//! Task execution end to end: a CDR posted to intake is distilled, its tasks are claimed
//! by the TaskPoller and run by their executors against real sinks on loopback (SQLite and
//! MariaDB, aiosmtpd, moto_server) or a recording HTTP server where the real peer is a
//! third-party API (SMS gateway, Salesforce, transcription).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::sinks::{mails, moto, smtpd, HttpRecorder};
use common::*;

use cdrmunch::actors::{Fault, Hooks};
use cdrmunch::config::Settings;
use cdrmunch::store::ClaimedTask;
use sqlx::Row;

const WAIT: Duration = Duration::from_secs(30);

/// A mod_xml_cdr document: an A-leg from 1001 to 2000, answered for 42 s unless `answered`
/// is false, with extra channel variables.
fn cdr(uuid: &str, answered: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let answer = if answered { "1700000003" } else { "0" };
    let billsec = if answered { "42" } else { "0" };
    let mut vars = format!(
        "<uuid>{uuid}</uuid><direction>inbound</direction><start_epoch>1700000000</start_epoch>\
         <answer_epoch>{answer}</answer_epoch><end_epoch>1700000045</end_epoch><duration>45</duration>\
         <billsec>{billsec}</billsec><hangup_cause>NORMAL_CLEARING</hangup_cause><rmOrgID>77</rmOrgID>"
    );
    for (k, v) in extra {
        vars.push_str(&format!("<{k}>{v}</{k}>"));
    }
    format!(
        "<?xml version=\"1.0\"?>\n<cdr core-uuid=\"c0\" switchname=\"fs1\"><variables>{vars}</variables>\
         <callflow><caller_profile><caller_id_number>1001</caller_id_number>\
         <destination_number>2000</destination_number><uuid>{uuid}</uuid></caller_profile></callflow></cdr>"
    )
    .into_bytes()
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn post(app: &TestApp, doc: Vec<u8>) {
    let (status, body) = app.post_cdr(doc, "", "text/xml").await;
    assert_eq!(status, 200, "{body}");
}

fn state<'a>(tasks: &'a [cdrmunch::store::TaskState], ty: &str) -> &'a cdrmunch::store::TaskState {
    tasks.iter().find(|t| t.task_type == ty).unwrap_or_else(|| panic!("no {ty} task in {tasks:?}"))
}

/// Fast retries: a failed task is due again at the next poll.
fn fast_retries(s: &mut Settings) {
    s.tasksd.retry_backoff_seconds = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_and_call_log_rows_land_once_on_both_databases() {
    for db in BOTH {
        let app = TestApp::start_with(
            db,
            |s| {
                if db == Db::Mysql {
                    // the billing table in the test's own MariaDB database, dropped with it
                    s.database.billingdb_url = s.database.cdrdb_url.clone();
                }
            },
            Hooks::default(),
            None,
        )
        .await;
        let uuid = new_uuid();
        post(&app, cdr(&uuid, true, &[])).await;
        let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
        let types: Vec<_> = tasks.iter().map(|t| t.task_type.as_str()).collect();
        assert_eq!(types, ["billing", "calllog"], "{db:?}: only configured handlers get tasks");
        assert!(tasks.iter().all(|t| t.done == "y" && t.retry == 0), "{db:?}: {tasks:?}");

        let row = text_row(
            db,
            &app.settings.database.billingdb_url,
            "SELECT CAST(quantity AS CHAR), answer_stamp, CAST((SELECT COUNT(*) FROM billing_feed) AS CHAR) \
             FROM billing_feed WHERE uuid = ?",
            &uuid,
        )
        .await;
        let (quantity, answer_stamp, rows) = (row[0].clone(), row[1].clone(), row[2].parse::<i64>().unwrap());
        assert!(quantity.starts_with("42"), "{db:?}: quantity is billsec: {quantity}");
        assert_eq!(answer_stamp, "2023-11-14 22:13:23", "{db:?}");
        assert_eq!(rows, 1, "{db:?}");

        // calllog: the row, and a second run of the same task adds nothing
        let key = *uuid::Uuid::parse_str(&uuid).unwrap().as_bytes();
        assert_eq!(call_log_count(&app, db, &uuid).await, (1, 42, "1001".to_string(), 77), "{db:?}");
        let entry = cdrmunch::store::CallLogEntry {
            uuid: key,
            org_id: 77,
            direction: "inbound".into(),
            caller_id_number: "1001".into(),
            destination_number: "2000".into(),
            billsec: 42,
            ..Default::default()
        };
        app.store().upsert_call_log(&entry, &[]).await.unwrap();
        let count = call_log_count(&app, db, &uuid).await;
        assert_eq!(count, (1, 42, "1001".to_string(), 77), "{db:?}");
        // a row a leg of the same call was written under goes when the call's row is written
        let other = uuid::Uuid::new_v4();
        let stale = cdrmunch::store::CallLogEntry { uuid: *other.as_bytes(), ..entry.clone() };
        app.store().upsert_call_log(&stale, &[]).await.unwrap();
        assert_eq!(call_log_count(&app, db, &other.to_string()).await.0, 2, "{db:?}");
        app.store().upsert_call_log(&entry, &[*other.as_bytes()]).await.unwrap();
        assert_eq!(call_log_count(&app, db, &uuid).await.0, 1, "{db:?}: the superseded row is gone");
        app.stop().await;
    }
}

async fn call_log_count(app: &TestApp, db: Db, uuid: &str) -> (i64, i64, String, i64) {
    let key = uuid::Uuid::parse_str(uuid).unwrap().as_bytes().to_vec();
    let sql = "SELECT (SELECT COUNT(*) FROM call_log), billsec, caller_id_number, rmOrgID FROM call_log WHERE uuid = ?";
    let url = &app.settings.database.cdrdb_url;
    let r = match db {
        Db::Sqlite => {
            sqlx::query(sql).bind(key).fetch_one(&sqlx::SqlitePool::connect(url).await.unwrap()).await.unwrap()
        }
        Db::Mysql => {
            let r = sqlx::query(sql).bind(key).fetch_one(&sqlx::MySqlPool::connect(url).await.unwrap()).await.unwrap();
            return (r.get(0), r.get::<i32, _>(1) as i64, r.get(2), r.get::<i32, _>(3) as i64);
        }
    };
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_failing_twice_then_answering_gets_exactly_one_successful_request() {
    let sms = HttpRecorder::start().await;
    sms.script("/send", &[(500, "{\"error\":\"busy\"}"), (503, "down")]);
    let url = format!("{}/send", sms.url);
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            fast_retries(s);
            s.sms.url = Some(url);
            s.sms.auth_token = Some("tok".into());
            s.sms.from = Some("cdrmunch".into());
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, false, &[("notify_sms", "%2B447700900123")])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    let t = state(&tasks, "SMSSend");
    assert_eq!((t.done.as_str(), t.retry), ("y", 2), "{t:?}");
    assert!(t.error_message.as_deref().unwrap_or("").contains("HTTP 503"), "last error kept: {t:?}");
    let reqs = sms.requests();
    assert_eq!(reqs.len(), 3, "two failures, one success: {reqs:?}");
    let keys: Vec<_> = reqs.iter().map(|r| r.headers["idempotency-key"].clone()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "one idempotency key for all attempts: {keys:?}");
    assert!(keys[0].contains(&uuid));
    assert_eq!(reqs[2].headers["authorization"], "Bearer tok");
    let body: serde_json::Value = serde_json::from_str(&reqs[2].body).unwrap();
    assert_eq!(body["to"], "+447700900123", "the variable is percent-decoded once");
    assert_eq!(body["text"], "Missed call from 1001 at 2023-11-14 22:13:20");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_down_past_max_retries_is_an_error_with_the_last_message() {
    let closed = common::sinks::free_port();
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            fast_retries(s);
            s.tasksd.max_retries = 2;
            s.sms.url = Some(format!("http://127.0.0.1:{closed}/send"));
            s.sms.to = Some("+15550100".into());
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, false, &[])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    let t = state(&tasks, "SMSSend");
    assert_eq!((t.done.as_str(), t.retry), ("error", 2), "{t:?}");
    let msg = t.error_message.clone().unwrap_or_default();
    assert!(msg.starts_with("gave up after 2 retries: SMS gateway"), "{msg}");
    assert_eq!(state(&tasks, "calllog").done, "y", "other types are unaffected");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_rejection_is_an_error_at_once() {
    let sms = HttpRecorder::start().await;
    sms.script("/", &[(422, "{\"error\":\"invalid number\"}")]);
    let url = sms.url.clone();
    let app = TestApp::start_with(Db::Sqlite, |s| s.sms.url = Some(url), Hooks::default(), None).await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, false, &[("notify_sms", "12")])).await;
    let t = app.wait_tasks_finished(&uuid, WAIT).await;
    let t = state(&t, "SMSSend");
    assert_eq!((t.done.as_str(), t.retry), ("error", 0), "{t:?}");
    assert!(t.error_message.as_deref().unwrap().contains("HTTP 422"), "{t:?}");
    assert_eq!(sms.requests().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_panic_restarts_the_executor_and_the_task_is_retried() {
    let panics = Arc::new(AtomicU32::new(0));
    let p = panics.clone();
    let hooks = Hooks {
        task_fault: Some(Arc::new(move |t: &ClaimedTask| {
            (t.task_type == "calllog" && p.fetch_add(1, Ordering::SeqCst) == 0).then_some(Fault::Panic)
        })),
        ..Hooks::default()
    };
    let app = TestApp::start_with(Db::Sqlite, fast_retries, hooks, None).await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, true, &[])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    let t = state(&tasks, "calllog");
    assert_eq!((t.done.as_str(), t.retry), ("y", 1), "{t:?}");
    assert!(t.error_message.as_deref().unwrap().contains("handler panicked: injected handler fault"), "{t:?}");
    assert_eq!(call_log_count(&app, Db::Sqlite, &uuid).await.0, 1);
    // the restart is visible where an operator looks
    let url = format!("http://{}/metrics", app.app().metrics_addr.unwrap());
    let metrics = app.http.get(url).send().await.unwrap().text().await.unwrap();
    let restarts = metrics
        .lines()
        .find(|l| l.starts_with("cdrmunch_actor_restarts_total{actor=\"executor_calllog\"}"))
        .unwrap_or_else(|| panic!("no executor restart counted:\n{metrics}"));
    assert!(!restarts.ends_with(" 0"), "{restarts}");
    // and the restarted executor keeps working
    let second = new_uuid();
    post(&app, cdr(&second, true, &[])).await;
    let t2 = app.wait_tasks_finished(&second, WAIT).await;
    assert_eq!((state(&t2, "calllog").done.as_str(), state(&t2, "calllog").retry), ("y", 0));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_call_email_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let smtp = smtpd(&maildir);
    let port = smtp.port;
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            s.emailer.smtp_host = Some("127.0.0.1".into());
            s.emailer.smtp_port = port;
            s.emailer.tls = "none".into();
            s.emailer.from = Some("CDRMunch <pcp@example.com>".into());
            s.emailer.to = Some("ops@example.com".into());
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, false, &[])).await;
    // an answered call is not a missed call: no email
    let answered = new_uuid();
    post(&app, cdr(&answered, true, &[])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    assert_eq!(state(&tasks, "emailer").done, "y", "{tasks:?}");
    let other = app.wait_tasks_finished(&answered, WAIT).await;
    assert!(other.iter().all(|t| t.task_type != "emailer"), "{other:?}");
    let mails = mails(&maildir);
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    for header in [
        "From: CDRMunch <pcp@example.com>",
        "To: ops@example.com",
        "Subject: Missed call from 1001 to 2000",
        &format!("Message-ID: <cdrmunch-{uuid}-emailer-"),
        "Content-Type: text/plain",
    ] {
        assert!(m.contains(header), "missing '{header}' in\n{m}");
    }
    assert!(
        m.contains("From: 1001\r\nTo: 2000\r\nAt: 2023-11-14 22:13:20") || m.contains("From: 1001\nTo: 2000"),
        "{m}"
    );
    assert!(m.contains(&format!("Call: {uuid}")), "{m}");
    app.stop().await;
    drop(smtp);
}

/// An S3 client for the test side of moto (bucket creation, reading back).
async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let s = cdrmunch::config::S3Settings {
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    };
    cdrmunch::storage::s3::client(&s).await
}

fn use_s3(s: &mut Settings, endpoint: &str) {
    s.s3.endpoint = Some(endpoint.to_string());
    s.s3.path_style = true;
    s.s3.access_key_id = Some("test".into());
    s.s3.secret_access_key = Some("test".into());
}

async fn object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let o = client.get_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("{key}: {e:?}"));
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recordings_go_to_s3_and_transcription_gets_a_presigned_url() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = moto(dir.path());
    let client = s3_client(&s3.url()).await;
    client.create_bucket().bucket("recordings").send().await.unwrap();
    let transcriber = HttpRecorder::start().await;
    let rec_dir = dir.path().join("fs-recordings");
    std::fs::create_dir_all(&rec_dir).unwrap();
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(rec_dir.join("call.WAV"), &audio).unwrap();
    let (endpoint, t_url, root) = (s3.url(), format!("{}/jobs", transcriber.url), rec_dir.clone());
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            fast_retries(s);
            s.recordings.source_dirs = vec![root];
            s.tasksd.max_retries = 100; // transcription waits for delivery
            use_s3(s, &endpoint);
            s.recordings.delivery_target = Some("s3://recordings/delivered".into());
            s.transcription.url = Some(t_url);
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    let rec = rec_dir.display().to_string();
    post(&app, cdr(&uuid, true, &[("record_path", &rec), ("record_name", "call.WAV")])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    for ty in ["recordingDelivery", "transcription"] {
        assert_eq!(state(&tasks, ty).done, "y", "{tasks:?}");
    }
    let key = format!("delivered/2023/11/14/{uuid}.wav");
    assert_eq!(object(&client, "recordings", &key).await, audio, "the delivered bytes are the recording's");
    let jobs: Vec<_> = transcriber.requests().into_iter().filter(|r| r.path == "/jobs").collect();
    let last: serde_json::Value = serde_json::from_str(&jobs.last().unwrap().body).unwrap();
    assert_eq!(last["uuid"], uuid.as_str());
    assert_eq!(last["recording_bytes"], audio.len());
    let url = last["recording_url"].as_str().unwrap();
    assert!(url.contains(&key) && url.contains("X-Amz-Signature="), "{url}");
    // the presigned URL really fetches the recording
    let fetched = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert_eq!(fetched.len(), audio.len());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_and_normalized_cdrs_can_live_in_s3() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = moto(dir.path());
    let client = s3_client(&s3.url()).await;
    client.create_bucket().bucket("cdr-archive").send().await.unwrap();
    let endpoint = s3.url();
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            use_s3(s, &endpoint);
            s.request_handler.cdr_base_dir = "s3://cdr-archive/raw".into();
            s.distiller.cdr_base_dir = "s3://cdr-archive/raw".into();
            s.distiller.normalized_cdr_base_dir = "s3://cdr-archive/ncdr".into();
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    let doc = cdr(&uuid, true, &[]);
    post(&app, doc.clone()).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    assert!(tasks.iter().all(|t| t.done == "y"), "tasks read the normalized CDR back from S3: {tasks:?}");
    // named like mod_xml_cdr's log files: host, call date, a_ prefix for an A-leg
    let raw = object(&client, "cdr-archive", &format!("raw/fs1/2023-11-14/a_{uuid}.cdr.xml")).await;
    assert_eq!(raw, doc);
    let ncdr = object(&client, "cdr-archive", &format!("ncdr/20231114T2200/{uuid}.xml")).await;
    assert!(String::from_utf8(ncdr).unwrap().contains(&format!("<uuid record=\"true\">{uuid}</uuid>")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buffered_recordings_move_into_a_local_delivery_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, delivered) = (dir.path().join("buffer"), dir.path().join("delivered"));
    std::fs::create_dir_all(&buffer).unwrap();
    std::fs::write(buffer.join("b-1.mp3"), b"ID3 buffered audio").unwrap();
    let (b, d) = (buffer.clone(), delivered.display().to_string());
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            s.recordings.buffer_dir = Some(b);
            s.recordings.delivery_target = Some(d);
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, true, &[("buffered_recording", "b-1.mp3")])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    assert_eq!(state(&tasks, "bufferedRecording").done, "y", "{tasks:?}");
    let target = delivered.join(format!("2023/11/14/{uuid}.mp3"));
    assert_eq!(std::fs::read(&target).unwrap(), b"ID3 buffered audio");
    assert!(!buffer.join("b-1.mp3").exists(), "moved, not copied");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn salesforce_gets_a_token_then_an_upsert_by_external_id() {
    let sf = HttpRecorder::start().await;
    let token = format!("{{\"access_token\":\"T1\",\"instance_url\":\"{}\"}}", sf.url);
    let token2 = format!("{{\"access_token\":\"T2\",\"instance_url\":\"{}\"}}", sf.url);
    sf.script("/services/oauth2/token", &[(200, &token), (200, &token2)]);
    // the first session has expired: one 401, a fresh token, then the upsert goes through
    sf.script("/services/data/", &[(401, "[{\"errorCode\":\"INVALID_SESSION_ID\"}]"), (201, "{\"id\":\"a01\"}")]);
    let login = sf.url.clone();
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            s.salesforce.login_url = Some(login);
            s.salesforce.client_id = Some("cid".into());
            s.salesforce.client_secret = Some("secret".into());
            s.salesforce.username = Some("int@example.com".into());
            s.salesforce.password = Some("pw".into());
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    post(&app, cdr(&uuid, true, &[("sf_org_id", "00D000000000001")])).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    assert_eq!(state(&tasks, "CDR2SFAPI").done, "y", "{tasks:?}");
    let reqs = sf.requests();
    let seq: Vec<_> = reqs.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    let upsert = format!("PATCH /services/data/v59.0/sobjects/Call_Record__c/CDR_UUID__c/{uuid}");
    assert_eq!(seq, ["POST /services/oauth2/token", upsert.as_str(), "POST /services/oauth2/token", upsert.as_str()]);
    assert!(reqs[0].body.contains("grant_type=password") && reqs[0].body.contains("client_id=cid"), "{}", reqs[0].body);
    assert_eq!(reqs[3].headers["authorization"], "Bearer T2");
    let rec: serde_json::Value = serde_json::from_str(&reqs[3].body).unwrap();
    assert_eq!(rec["Direction__c"], "inbound");
    assert_eq!(rec["Billsec__c"], "42");
    assert_eq!(rec["Org_Id__c"], "00D000000000001");
    app.stop().await;
}

// ---- step functions: one claim / execute cycle at the executor boundary, no actors ----

struct Step {
    ctx: cdrmunch::actors::task_executor::TaskContext,
    store: cdrmunch::store::Store,
    dir: tempfile::TempDir,
    _db: TestDb,
}

async fn step(db: Db, tweak: impl FnOnce(&mut Settings), hooks: Hooks) -> Step {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::new(db, dir.path());
    let mut settings = test_settings(dir.path(), &tdb.url);
    tweak(&mut settings);
    let store = cdrmunch::app::open_repository(&settings).await.unwrap();
    let ctx = cdrmunch::actors::task_executor::TaskContext {
        repo: Arc::new(store.clone()),
        ncdr_store: Arc::new(cdrmunch::storage::LocalStore::new(dir.path().join("ncdr"))),
        handlers: cdrmunch::handlers::build(&settings, &store).await.unwrap(),
        config: cdrmunch::app::tasks_config(&settings),
        hooks,
    };
    Step { ctx, store, dir, _db: tdb }
}

impl Step {
    /// Commits a normalized CDR whose XML is `xml`, with task rows `tasks`; returns its uuid.
    async fn commit(&self, xml: &str, tasks: &[(&str, u32)]) -> [u8; 16] {
        let uuid = *uuid::Uuid::new_v4().as_bytes();
        let path = self.dir.path().join(format!("{}.xml", uuid::Uuid::from_bytes(uuid)));
        std::fs::write(&path, xml.replace("UUID", &uuid::Uuid::from_bytes(uuid).to_string())).unwrap();
        let row = cdrmunch::store::NewNormalizedCdr {
            uuid,
            path: path.display().to_string(),
            cdr_path: String::new(),
            table_suffix: 20231114,
            org_id: 0,
            tasks: tasks.iter().map(|(t, i)| (t.parse().unwrap(), *i)).collect(),
            links: None,
        };
        self.ctx.repo.commit_normalized(&[(0, row)], chrono::Utc::now()).await.unwrap();
        uuid
    }

    async fn claim(&self, ty: &str, at: chrono::DateTime<chrono::Utc>, lease_s: i64) -> Vec<ClaimedTask> {
        self.ctx.repo.claim_tasks(ty.parse().unwrap(), at, at + chrono::Duration::seconds(lease_s), 10).await.unwrap()
    }
}

const NCDR: &str = "<?xml version=\"1.0\"?>\n<cdr-normalized><data><uuid record=\"true\">UUID</uuid>\
    <TableSuffix record=\"true\">20231114</TableSuffix><rmOrgID record=\"true\">0</rmOrgID>\
    <direction>inbound</direction><billsec>5</billsec></data><tasks><task type=\"calllog\"/></tasks></cdr-normalized>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_claims_are_leases_and_a_finished_task_stays_finished() {
    for db in BOTH {
        let s = step(db, |_| {}, Hooks::default()).await;
        let uuid = s.commit(NCDR, &[("calllog", 0)]).await;
        let now = chrono::Utc::now();
        let claimed = s.claim("calllog", now, 60).await;
        assert_eq!(claimed.len(), 1, "{db:?}");
        assert_eq!(claimed[0].uuid, uuid);
        assert!(s.claim("calllog", now, 60).await.is_empty(), "{db:?}: leased to the first claimer");
        assert!(s.claim("billing", now, 60).await.is_empty(), "{db:?}: claims are per type");
        // a crashed process: the lease runs out and the task is claimable again
        let later = s.claim("calllog", now + chrono::Duration::seconds(61), 60).await;
        assert_eq!(later.iter().map(|t| t.id).collect::<Vec<_>>(), vec![claimed[0].id], "{db:?}");

        let (result, finish) = cdrmunch::actors::task_executor::execute(&s.ctx, &later[0]).await;
        assert_eq!(result, cdrmunch::domain::outcome::Outcome::Successful, "{db:?}");
        assert_eq!(finish, cdrmunch::store::TaskFinish::Done);
        // the first claimer finishing late cannot undo or redo anything
        let late = cdrmunch::store::TaskFinish::Error { error: "late".into() };
        assert!(!s.ctx.repo.finish_task(claimed[0].id, claimed[0].claim, &late).await.unwrap(), "{db:?}");
        let states = s.store.task_states(uuid).await.unwrap();
        assert_eq!((states[0].done.as_str(), states[0].error_message.as_deref()), ("y", None), "{db:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_a_task_the_document_does_not_hold_is_a_permanent_error() {
    let s = step(Db::Sqlite, |_| {}, Hooks::default()).await;
    let uuid = s.commit(NCDR, &[("calllog", 0), ("billing", 3)]).await;
    let now = chrono::Utc::now();
    let t = s.claim("billing", now, 60).await.remove(0);
    let (_, finish) = cdrmunch::actors::task_executor::execute(&s.ctx, &t).await;
    let cdrmunch::store::TaskFinish::Error { error } = finish else { panic!("{finish:?}") };
    assert!(error.starts_with("normalized CDR has no <task> at node_index 3 (it has 1)"), "{error}");
    // a normalized CDR that has gone missing will not come back either
    let uuid2 = s.commit(NCDR, &[("calllog", 0)]).await;
    std::fs::remove_file(s.dir.path().join(format!("{}.xml", uuid::Uuid::from_bytes(uuid2)))).unwrap();
    let t2 = s.claim("calllog", now, 60).await;
    let t2 = t2.into_iter().find(|t| t.uuid == uuid2).unwrap();
    let (_, finish) = cdrmunch::actors::task_executor::execute(&s.ctx, &t2).await;
    assert!(
        matches!(&finish, cdrmunch::store::TaskFinish::Error { error } if error.contains("not found")),
        "{finish:?}"
    );
    assert_eq!(s.store.task_states(uuid).await.unwrap()[1].done, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_a_hung_handler_is_cut_off_and_retried_with_backoff() {
    let hooks = Hooks { task_fault: Some(Arc::new(|_: &ClaimedTask| Some(Fault::Hang))), ..Hooks::default() };
    let s = step(Db::Sqlite, |s| s.tasksd.job_timeout_seconds = 1, hooks).await;
    let uuid = s.commit(NCDR, &[("calllog", 0)]).await;
    let before = chrono::Utc::now();
    let t = s.claim("calllog", before, 60).await.remove(0);
    let (result, finish) = cdrmunch::actors::task_executor::execute(&s.ctx, &t).await;
    assert_eq!(result.label(), "retriable_failure");
    let cdrmunch::store::TaskFinish::Retry { next_attempt, error } = finish else { panic!("{finish:?}") };
    assert_eq!(error, "handler did not finish within 1s");
    // tasksd.retry_backoff_seconds = 60 (the seed's), first retry: 60 s
    let wait = (next_attempt - before).num_seconds();
    assert!((60..=62).contains(&wait), "{wait}");
    let st = &s.store.task_states(uuid).await.unwrap()[0];
    assert_eq!((st.done.as_str(), st.retry), ("n", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rated_call_reaches_the_billing_table_with_its_retail_fields() {
    let deck = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rates.csv");
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| {
            s.rating.deck = Some(deck);
            s.rating.default_country_code = Some("44".into());
        },
        Hooks::default(),
        None,
    )
    .await;
    let uuid = new_uuid();
    // to a London number in national format, 42 s: 60/1 increments bill 60 s at 0.008/min
    let doc = String::from_utf8(cdr(&uuid, true, &[])).unwrap().replace(">2000<", ">020 7946 0000<");
    post(&app, doc.into_bytes()).await;
    let tasks = app.wait_tasks_finished(&uuid, WAIT).await;
    assert_eq!(state(&tasks, "billing").done, "y", "{tasks:?}");
    let pool = sqlx::SqlitePool::connect(&app.settings.database.billingdb_url).await.unwrap();
    let r = sqlx::query(
        "SELECT CAST(quantity AS TEXT), CAST(retailRate AS TEXT), retailRateType, retailCountryCode, \
         retailSubBandType, retailChargeBand FROM billing_feed WHERE uuid = ?",
    )
    .bind(&uuid)
    .fetch_one(&pool)
    .await
    .unwrap();
    let row: (String, String, String, String, String, String) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
    assert_eq!(
        row,
        ("60".into(), "0.008".into(), "perMinute".into(), "GB".into(), "London".into(), "UK1".into()),
        "quantity follows the increments"
    );
    app.stop().await;
}
