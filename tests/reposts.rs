//! Re-posts of one call leg, on both databases: identical bytes are a duplicate; other bytes
//! never overwrite the queued first version nor leave a file no row points at — the first
//! stays the billing truth and the other is kept beside it as evidence, listed — except after
//! a permanent failure, when the re-post replaces it and is processed again. And `cdrmunch
//! why` tells the whole story of a leg.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdrmunch::actors::{Fault, Hooks};
use common::*;

const UUID: &str = "6a7ccd66-0000-4000-8000-00000000c001";

fn cdr(cause: &str, switchname: &str) -> Vec<u8> {
    String::from_utf8(answered_cdr(UUID))
        .unwrap()
        .replace("NORMAL_CLEARING", cause)
        .replacen("<cdr>", &format!("<cdr switchname=\"{switchname}\">"), 1)
        .into_bytes()
}

fn key() -> [u8; 16] {
    *uuid::Uuid::parse_str(UUID).unwrap().as_bytes()
}

fn raw_files(app: &TestApp) -> Vec<PathBuf> {
    let mut f = files_under(&app.settings.request_handler.cdr_base_dir);
    f.sort();
    f
}

async fn post(app: &TestApp, body: Vec<u8>) -> String {
    let (status, text) = app.post_cdr(body, "", "text/xml").await;
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["path"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repost_matrix() {
    for db in BOTH {
        let app = TestApp::start(db).await;
        let first = cdr("NORMAL_CLEARING", "fs1");
        let path = post(&app, first.clone()).await;
        app.wait_settled(1, Duration::from_secs(30)).await;
        // identical: a duplicate, nothing new
        assert_eq!(post(&app, first.clone()).await, path);
        assert_eq!(raw_files(&app), [PathBuf::from(&path)], "{db:?}");
        assert!(app.store().recent_conflicts(10).await.unwrap().is_empty());

        // other bytes, same name, after success: the first stays, the other is evidence
        let second = cdr("USER_BUSY", "fs1");
        assert_eq!(post(&app, second.clone()).await, path, "{db:?}: answered with the first's path");
        assert_eq!(std::fs::read(&path).unwrap(), first, "{db:?}: the queued first was overwritten");
        let evidence = path.replace(".cdr.xml", ".v2.cdr.xml");
        assert_eq!(std::fs::read(&evidence).unwrap(), second, "{db:?}");
        let conflicts = app.store().recent_conflicts(10).await.unwrap();
        assert_eq!((conflicts.len(), conflicts[0].kind.as_str()), (1, "kept_first"), "{db:?}");
        assert_eq!(
            (conflicts[0].first_path.as_str(), conflicts[0].other_path.as_str()),
            (path.as_str(), evidence.as_str())
        );

        // other bytes under another name (another host): no orphan, evidence beside it
        let third = cdr("CALL_REJECTED", "fs2");
        assert_eq!(post(&app, third.clone()).await, path, "{db:?}");
        let files = raw_files(&app);
        assert_eq!(files.len(), 3, "{db:?}: {files:?}");
        let other = files.iter().find(|f| f.to_string_lossy().contains("/fs2/")).unwrap();
        assert!(other.to_string_lossy().ends_with(".v2.cdr.xml"), "{db:?}: an orphan under another name: {other:?}");
        assert_eq!(std::fs::read(other).unwrap(), third);
        assert_eq!(app.store().recent_conflicts(10).await.unwrap().len(), 2);
        // billing saw one call, from the first version, processed once
        let counts = app.store().queue_counts().await.unwrap();
        assert_eq!((counts.done, counts.pending, counts.error), (1, 0, 0), "{db:?}");
        let (_, ncdr) = app.store().normalized_of(key()).await.unwrap().unwrap();
        let normalized = std::fs::read_to_string(&ncdr).unwrap();
        assert!(normalized.contains("NORMAL_CLEARING") && !normalized.contains("USER_BUSY"), "{normalized}");

        app.stop().await;
    }
}

/// A first version that failed for good (here: it crashed its distillery, a poison pill) is
/// replaced by a differing re-post, which is processed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repost_after_a_permanent_failure_replaces_it_and_is_processed_again() {
    for db in BOTH {
        let poison = Arc::new(AtomicBool::new(true));
        let p = poison.clone();
        let hooks = Hooks {
            distillery_fault: Some(Arc::new(move |_| p.load(Ordering::SeqCst).then_some(Fault::Panic))),
            ..Hooks::default()
        };
        let app = TestApp::start_with(db, |s| s.distiller.poison_threshold = 1, hooks, None).await;
        let path = post(&app, cdr("NORMAL_CLEARING", "fs1")).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while app.store().queue_counts().await.unwrap().error == 0 {
            assert!(std::time::Instant::now() < deadline, "{db:?}: the first version did not fail");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        poison.store(false, Ordering::SeqCst);
        let second = cdr("NO_ANSWER", "fs1");
        assert_eq!(post(&app, second.clone()).await, path, "{db:?}");
        assert_eq!(std::fs::read(&path).unwrap(), second, "{db:?}: the failed first was not replaced");
        let counts = app.wait_settled(1, Duration::from_secs(30)).await;
        assert_eq!((counts.done, counts.error), (1, 0), "{db:?}");
        let (_, ncdr) = app.store().normalized_of(key()).await.unwrap().unwrap();
        assert!(std::fs::read_to_string(&ncdr).unwrap().contains("NO_ANSWER"));
        let conflicts = app.store().recent_conflicts(10).await.unwrap();
        assert_eq!((conflicts.len(), conflicts[0].kind.as_str()), (1, "replaced"), "{db:?}");
        assert_eq!(raw_files(&app), [PathBuf::from(&path)], "{db:?}: no evidence file for a replacement");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_tells_the_story_of_a_leg() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, base) = serve_config(dir.path(), "");
    let server = start_server(&conf);
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    for body in [cdr("NORMAL_CLEARING", "fs1"), cdr("USER_BUSY", "fs1")] {
        let r = http.post(format!("{base}/api/v2/cdr")).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let why = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
            .args(["why", "--config"])
            .arg(&conf)
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let story = loop {
        let out = why(&[UUID, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let story: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if story["queue"]["done"] == "y" {
            break story;
        }
        assert!(std::time::Instant::now() < deadline, "{story}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(story["raw"]["bytes"].as_u64().unwrap() > 0, "{story}");
    assert!(story["normalized"]["path"].as_str().unwrap().ends_with(&format!("{UUID}.xml")), "{story}");
    assert_eq!(story["conflicts"][0]["kind"], "kept_first", "{story}");
    let text = String::from_utf8(why(&[UUID]).stdout).unwrap();
    assert!(text.contains("queue:") && text.contains("done=y") && text.contains("re-post:"), "{text}");
    let unknown = why(&["6a7ccd66-0000-4000-8000-00000000c999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("no cdr_queue row"));
    drop(server);
}
