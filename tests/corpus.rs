//! Every real CDR of ../shared/corpus posted in every encoding its format allows, on SQLite
//! and MariaDB: each reaches its outcome — normalized with its tasks, or (the one receiver-
//! damaged XML file) refused with 400 and a description, leaving nothing behind.

mod common;

use std::time::Duration;

use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::submission;
use common::*;

const XML_ENCODINGS: [SubmitEncoding; 4] =
    [SubmitEncoding::Raw, SubmitEncoding::Urlencoded, SubmitEncoding::Base64, SubmitEncoding::TextXml];
const JSON_ENCODINGS: [SubmitEncoding; 4] =
    [SubmitEncoding::Raw, SubmitEncoding::Urlencoded, SubmitEncoding::Base64, SubmitEncoding::Json];

/// The file that is not well-formed XML (values decoded twice by a receiver).
fn is_broken(name: &str) -> bool {
    name.starts_with("summitrabz_")
}

async fn corpus_in_one_encoding(db: Db, index: usize) {
    let app = TestApp::start(db).await;
    let mut expected = Vec::new();
    for path in corpus_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let doc = std::fs::read(&path).unwrap();
        let enc = if name.ends_with(".json") { JSON_ENCODINGS[index] } else { XML_ENCODINGS[index] };
        let (ct, body) = encode_body(&doc, enc);
        // mod_xml_cdr appends ?uuid=[a_]<uuid>; derive it the way the module does.
        let query = submission::prepare(&doc.clone().into(), None, "t", 0, &Default::default())
            .map(|s| format!("?uuid={}{}", if s.a_leg { "a_" } else { "" }, s.uuid))
            .unwrap_or_default();
        let (status, text) = app.post_cdr(body, &query, ct).await;
        if is_broken(&name) {
            assert_eq!(status, 400, "{name} {enc:?}: {text}");
            assert!(text.contains("not well-formed") && text.contains("byte"), "{name}: {text}");
            continue;
        }
        assert_eq!(status, 200, "{name} {enc:?}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        expected.push((name, v["uuid"].as_str().unwrap().to_string(), v["leg"].as_str().unwrap().to_string()));
    }
    assert_eq!(expected.len(), corpus_files().len() - 1);
    let counts = app.wait_settled(expected.len() as u64, Duration::from_secs(30)).await;
    assert_eq!((counts.done, counts.error), (expected.len() as u64, 0), "{db:?} {index}");
    let ncdr = &app.settings.distiller.normalized_cdr_base_dir;
    let files = files_under(ncdr);
    for (name, uuid, leg) in &expected {
        let bytes = *uuid::Uuid::parse_str(uuid).unwrap().as_bytes();
        let tasks: Vec<String> = tasks_of(app.store(), bytes).await.into_iter().map(|(t, _)| t).collect();
        // Every A-leg gets a call log entry; B-legs get no tasks of their own.
        assert_eq!(tasks.contains(&"calllog".to_string()), leg == "A", "{name}: {tasks:?}");
        let file = files.iter().find(|f| f.file_name().unwrap().to_string_lossy() == format!("{uuid}.xml"));
        let xml = std::fs::read_to_string(file.unwrap_or_else(|| panic!("{name}: no normalized file"))).unwrap();
        assert!(xml.contains(&format!("<uuid record=\"true\">{uuid}</uuid>")), "{name}: {xml}");
        assert!(xml.contains(&format!("<leg>{leg}</leg>")), "{name}: {xml}");
    }
    // The refused file left nothing: no raw file named after it, no queue row.
    assert_eq!(files_under(&app.settings.request_handler.cdr_base_dir).len(), expected.len());
    // Billing is on: every billable call has exactly one billing row, none is in error —
    // whatever its CDR carried (the 2008 file's user_name=default among them).
    let mut billed = Vec::new();
    for (name, uuid, _) in &expected {
        let tasks = app.wait_tasks_finished_or_none(uuid, Duration::from_secs(30)).await;
        assert!(tasks.iter().all(|t| t.done == "y"), "{db:?} {name}: {tasks:?}");
        if tasks.iter().any(|t| t.task_type == "billing") {
            billed.push(uuid.clone());
        }
    }
    assert!(billed.len() >= 8, "{db:?}: {billed:?}");
    let billing = sqlx::SqlitePool::connect(&app.settings.database.billingdb_url).await.unwrap();
    for uuid in &billed {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM billing_feed WHERE uuid = ?")
            .bind(uuid)
            .fetch_one(&billing)
            .await
            .unwrap();
        assert_eq!(n, 1, "{db:?} {index}: billing rows of {uuid}");
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM billing_feed").fetch_one(&billing).await.unwrap();
    assert_eq!(total as usize, billed.len(), "{db:?}");
    billing.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_reaches_its_outcome_on_sqlite_in_every_encoding() {
    for i in 0..4 {
        corpus_in_one_encoding(Db::Sqlite, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_reaches_its_outcome_on_mariadb_in_every_encoding() {
    for i in 0..4 {
        corpus_in_one_encoding(Db::Mysql, i).await;
    }
}

/// Headline facts read from the files by hand (see ../shared/corpus/SOURCES.md).
#[test]
fn headline_fields_of_known_calls() {
    use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
    let read = |rel: &str| std::fs::read(corpus_dir().join(rel)).unwrap();
    let field = |doc: &[u8], k: &str| -> String {
        let n = normalize_document(doc, &NormalizeContext::default()).unwrap();
        n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    // B-leg of a local call: answered, 10 s billed, NORMAL_CLEARING.
    let b = read("xml/ccm_openbts_2015_bleg_local_call_answered.xml");
    assert_eq!(field(&b, "leg"), "B");
    assert_eq!(field(&b, "billsec"), "10");
    assert_eq!(field(&b, "hangup_cause"), "NORMAL_CLEARING");
    // Rejected A-leg: never answered.
    let r = read("xml/ccm_openbts_2014_aleg_bridge_call_rejected.xml");
    assert_eq!(
        (field(&r, "leg").as_str(), field(&r, "answer_epoch").as_str(), field(&r, "billsec").as_str()),
        ("A", "0", "0")
    );
    assert_eq!(field(&r, "hangup_cause"), "CALL_REJECTED");
    // 2007 file: no epoch variables at all; timing comes from <times> (~69 s answered).
    let w = read("xml/wikipbx_2007_inbound_unallocated_legacy.xml");
    assert_eq!(field(&w, "hangup_cause"), "UNALLOCATED");
    let billsec: i64 = field(&w, "billsec").parse().unwrap();
    assert!((60..=75).contains(&billsec), "billsec {billsec}");
    // JSON with bare nan (real FreeSWITCH output when no RTP arrived) is accepted.
    let nan = read("json/somleng_2025_outbound_invalid_json_nan_mos.json");
    assert_eq!(field(&nan, "billsec"), "26");
    assert_eq!(field(&nan, "direction"), "outbound");
    // Recorded call: the record_session target is kept.
    let rec = read("xml/zhouhailin_a_6a7ccd66_inbound.cdr.xml");
    assert!(!field(&rec, "recording_path").is_empty());
    assert_eq!(field(&rec, "billsec"), "6");
}
