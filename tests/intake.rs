//! Intake behaviour over real HTTP on both databases: duplicates, bad input, size limits,
//! Basic auth, database outage, paging/PCAP streaming, health. After every refusal nothing is
//! half written: no raw file, no temp file, no queue row.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdrmunch::actors::Hooks;
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::store::Repository;
use common::*;

fn sample() -> Vec<u8> {
    std::fs::read(corpus_dir().join("xml/zhouhailin_a_6a7ccd66_inbound.cdr.xml")).unwrap()
}

async fn assert_nothing_stored(app: &TestApp) {
    assert!(files_under(&app.settings.request_handler.cdr_base_dir).is_empty(), "raw files left behind");
    assert_eq!(app.store().queue_counts().await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_post_gives_200_and_one_row() {
    for db in BOTH {
        let app = TestApp::start(db).await;
        let (ct, body) = encode_body(&sample(), SubmitEncoding::Urlencoded);
        for _ in 0..3 {
            let (status, text) = app.post_cdr(body.clone(), "?uuid=a_6a7ccd66-6d2f-46c4-abd9-07cf37fc161e", ct).await;
            assert_eq!(status, 200, "{db:?}: {text}");
        }
        // the same CDR in another encoding is still the same call
        let (ct, body) = encode_body(&sample(), SubmitEncoding::Base64);
        assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
        let counts = app.wait_settled(1, Duration::from_secs(20)).await;
        assert_eq!((counts.done, counts.pending, counts.error), (1, 0, 0), "{db:?}");
        assert_eq!(app.store().normalized_counts().await.unwrap().0, 1);
        assert_eq!(files_under(&app.settings.request_handler.cdr_base_dir).len(), 1);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_with_a_message_and_leave_nothing() {
    for db in BOTH {
        let app = TestApp::start(db).await;
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (Vec::new(), "", "empty"),
            (b"cdr=".to_vec(), "", "empty"),
            (b"<cdr><variables><uuid>x".to_vec(), "", "well-formed"),
            (b"{\"variables\": {\"uuid\": ".to_vec(), "", "JSON invalid"),
            (b"hello world".to_vec(), "", "neither XML, JSON nor a cdr= form"),
            (b"<cdr><variables><hangup_cause>X</hangup_cause></variables></cdr>".to_vec(), "", "no call uuid"),
            (b"<cdr><variables><uuid>not-a-uuid</uuid></variables></cdr>".to_vec(), "", "not a UUID"),
            (sample(), "?uuid=11111111-2222-3333-4444-555555555555", "does not match"),
        ];
        for (body, query, needle) in cases {
            let (status, text) = app.post_cdr(body.clone(), query, "application/x-www-form-urlencoded").await;
            assert_eq!(status, 400, "{db:?} {:?}: {text}", String::from_utf8_lossy(&body));
            let msg = serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].as_str().unwrap().to_string();
            assert!(msg.contains(needle) && !msg.is_empty(), "{needle:?} not in {msg:?}");
        }
        assert_nothing_stored(&app).await;
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413() {
    let app = TestApp::start_with(Db::Sqlite, |s| s.server.max_content_length = 4096, Hooks::default(), None).await;
    let (ct, body) = encode_body(&sample(), SubmitEncoding::TextXml);
    assert!(body.len() > 4096);
    let (status, text) = app.post_cdr(body, "", ct).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("4096"), "{text}");
    // chunked upload without Content-Length is cut off while streaming
    let chunks = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])));
    let r = app.http.post(app.url("/api/v2/pcap")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(files_under(&app.settings.request_handler.pcap_base_dir).is_empty(), "no partial or temp file");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_the_api_but_not_health() {
    let app = TestApp::start_with(
        Db::Sqlite,
        |s| s.server.basic_auth = Some(cdrmunch::config::BasicAuth { user: "fs".into(), password: "s3cret".into() }),
        Hooks::default(),
        None,
    )
    .await;
    let (ct, body) = encode_body(&sample(), SubmitEncoding::Raw);
    for cred in [None, Some(("fs", "wrong")), Some(("other", "s3cret"))] {
        let mut req = app.http.post(app.url("/api/v2/cdr")).header("Content-Type", ct).body(body.clone());
        if let Some((u, p)) = cred {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{cred:?}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
    assert_nothing_stored(&app).await;
    let r = app
        .http
        .post(app.url("/api/v2/cdr"))
        .header("Content-Type", ct)
        .basic_auth("fs", Some("s3cret"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(app.http.get(app.url("/health")).send().await.unwrap().status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_without_the_spool_gives_503_with_retry_after_then_recovers() {
    for db in BOTH {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let wrap = move |inner: Arc<dyn Repository>| -> Arc<dyn Repository> {
            Arc::new(SwitchableRepository { inner, down: d.clone() })
        };
        let no_spool = |s: &mut cdrmunch::config::Settings| s.request_handler.spool_max_rows = 0;
        let app = TestApp::start_with(db, no_spool, Hooks::default(), Some(&wrap)).await;
        down.store(true, Ordering::SeqCst);
        let (ct, body) = encode_body(&sample(), SubmitEncoding::Urlencoded);
        let r =
            app.http.post(app.url("/api/v2/cdr")).header("Content-Type", ct).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{db:?}");
        assert_eq!(r.headers().get("retry-after").unwrap(), "5");
        // liveness stays up (a restart would not bring the database back); readiness says why not
        let h = app.http.get(app.url("/health")).send().await.unwrap();
        assert_eq!(h.status().as_u16(), 200);
        let r = app.http.get(app.url("/ready")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let ready: serde_json::Value = r.json().await.unwrap();
        assert_eq!(ready["status"], "unavailable");
        assert!(ready["database"].as_str().unwrap().contains("database unavailable"), "{ready}");
        assert_eq!(ready["raw_storage"], "ok", "{ready}");
        assert_eq!(ready["actors"], "ok", "{ready}");
        assert_eq!(app.store().queue_counts().await.unwrap(), Default::default(), "no row while down");
        // FreeSWITCH retries; the database is back: stored exactly once.
        down.store(false, Ordering::SeqCst);
        assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
        let counts = app.wait_settled(1, Duration::from_secs(20)).await;
        assert_eq!(counts.done, 1);
        app.stop().await;
    }
}

/// With the spool (the default), an outage costs nothing: the POST is answered 200, its row
/// waits on local disk, `/ready` says degraded, and the backfill queues it once the
/// database answers; a spool that is full gives 503 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_with_the_spool_answers_200_and_backfills() {
    for db in BOTH {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let wrap = move |inner: Arc<dyn Repository>| -> Arc<dyn Repository> {
            Arc::new(SwitchableRepository { inner, down: d.clone() })
        };
        let small = |s: &mut cdrmunch::config::Settings| s.request_handler.spool_max_rows = 2;
        let app = TestApp::start_with(db, small, Hooks::default(), Some(&wrap)).await;
        down.store(true, Ordering::SeqCst);
        let uuids: Vec<String> = (0..3).map(|i| format!("6a7ccd66-0000-4000-8000-0000000050{i:02}")).collect();
        for u in &uuids[..2] {
            let (status, text) = app.post_cdr(answered_cdr(u), "", "text/xml").await;
            assert_eq!(status, 200, "{db:?}: {text}");
        }
        // the spool is full: refused, and nothing of it left behind
        let (status, text) = app.post_cdr(answered_cdr(&uuids[2]), "", "text/xml").await;
        assert_eq!(status, 503, "{db:?}: {text}");
        assert!(text.contains("spool is full"), "{text}");
        let r = app.http.get(app.url("/ready")).send().await.unwrap();
        let ready: serde_json::Value = r.json().await.unwrap();
        assert_eq!((ready["status"].as_str(), ready["spool_rows"].as_u64()), (Some("unavailable"), Some(2)), "{ready}");
        assert_eq!(app.store().queue_counts().await.unwrap(), Default::default(), "no row while down");
        let raw = files_under(&app.settings.request_handler.cdr_base_dir);
        assert_eq!(raw.len(), 2, "{raw:?}");
        // the database is back: the backfill queues both, each distilled once
        down.store(false, Ordering::SeqCst);
        let counts = app.wait_settled(2, Duration::from_secs(30)).await;
        assert_eq!((counts.done, counts.error), (2, 0), "{db:?}");
        let r = app.http.get(app.url("/ready")).send().await.unwrap();
        let ready: serde_json::Value = r.json().await.unwrap();
        assert_eq!((ready["status"].as_str(), ready["spool_rows"].as_u64()), (Some("ok"), Some(0)), "{ready}");
        assert!(files_under(&app.settings.request_handler.spool_dir).is_empty());
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_and_pcap_are_streamed_to_disk_whole() {
    let app = TestApp::start(Db::Sqlite).await;
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let uuid = "0e5f3c2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = app
        .http
        .post(app.url(&format!("/api/v2/pcap?uuid={uuid}")))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["bytes"], big.len() as u64);
    let path = std::path::PathBuf::from(v["path"].as_str().unwrap());
    assert!(path.starts_with(&app.settings.request_handler.pcap_base_dir));
    assert!(path.to_string_lossy().ends_with(&format!("{uuid}.pcap")));
    assert!(std::fs::read(&path).unwrap() == big, "bytes differ");
    let r = app
        .http
        .post(app.url("/api/v2/paging"))
        .header("Content-Type", "application/json")
        .body("{\"to\":\"+441234\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["path"].as_str().unwrap().ends_with(".json"));
    assert_eq!(files_under(&app.settings.request_handler.paging_base_dir).len(), 1);
    let bad = app.http.post(app.url("/api/v2/pcap?uuid=../../etc")).body("x").send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    app.stop().await;
}

/// Intake inserts, claims and batch commits contend on `cdr_queue`'s indexes; InnoDB picks
/// deadlock victims under this load. They must be restarted, never surface as a 503 or
/// send CDRs into retry backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_concurrent_posting_on_mariadb_gets_only_200s() {
    use cdrmunch::cli::gen::{GenFormat, Generator};
    use futures::StreamExt;
    const N: usize = 3000;
    let app = TestApp::start_with(Db::Mysql, |s| s.distiller.number_of_distilleries = 32, Hooks::default(), None).await;
    let mut g = Generator::new(5, GenFormat::Xml);
    let docs: Vec<Vec<u8>> = (0..N).map(|_| g.next_cdr().document.into_bytes()).collect();
    let url = app.url("/api/v2/cdr");
    let statuses: Vec<(u16, String)> = futures::stream::iter(docs)
        .map(|doc| {
            let (http, url) = (app.http.clone(), url.clone());
            async move {
                let (ct, body) = encode_body(&doc, SubmitEncoding::Urlencoded);
                let r = http.post(&url).header("Content-Type", ct).body(body).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).take(3).collect();
    assert!(refused.is_empty(), "{refused:?}");
    let counts = app.wait_settled(N as u64, Duration::from_secs(120)).await;
    assert_eq!((counts.done, counts.error), (N as u64, 0));
    let errors = app.store().queue_errors().await.unwrap();
    assert!(errors.is_empty(), "no CDR went through a retry: {:?}", errors.first());
    app.stop().await;
}
