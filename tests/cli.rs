//! The `cdrmunch` binary as an operator uses it: exit codes and messages.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn cdrmunch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdrmunch"))
        .args(args)
        .env_remove("CDRMUNCH_CONFIG")
        .output()
        .expect("run cdrmunch")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn normalize_prints_xml_or_the_permanent_failure() {
    let good = corpus_dir().join("xml/ccm_openbts_2015_bleg_local_call_answered.xml");
    let out = cdrmunch(&["normalize", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.starts_with("<?xml") && xml.contains("<cdr-normalized>"), "{xml}");
    assert!(xml.contains("<uuid record=\"true\">2605af5c-f1e8-47a5-a9ce-833f051c40c5</uuid>"), "{xml}");
    assert!(xml.contains("<leg>B</leg>"));

    let bad = corpus_dir().join("xml/summitrabz_2015_inbound_answered_playback_moh.xml");
    let out = cdrmunch(&["normalize", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("permanent failure") && err.contains("not well-formed at byte 6268"), "{err}");

    let out = cdrmunch(&["normalize", "/nonexistent.xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent.xml"));
}

#[test]
fn a_bad_config_value_stops_startup_with_file_line_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "# comment\nserver.port = 8080\ncdr_queue_poll_max_batch_size = lots\n").unwrap();
    let out = cdrmunch(&["serve", "--config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:3", conf.display())), "{err}");
    assert!(
        err.contains("cdr_queue_poll_max_batch_size") && err.contains("'lots'") && err.contains("expected"),
        "{err}"
    );
}

#[test]
fn shipped_sample_configs_load_cleanly_in_dev_and_prod() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cdrmunch.conf");
    let dev = cdrmunch(&["config", "--config", conf]);
    assert!(dev.status.success(), "{}", text(&dev.stderr));
    assert!(!text(&dev.stderr).contains("WARN"), "samples produce no warnings: {}", text(&dev.stderr));
    let out = text(&dev.stdout);
    assert!(out.contains("server.port = 8080") && out.contains("cdrdb.url = sqlite://"), "{out}");
    let prod = cdrmunch(&["config", "--config", conf, "--env", "prod"]);
    let out = text(&prod.stdout);
    assert!(
        out.contains("server.port = 80\n") && out.contains("normalized_cdr_base_dir = /data/CDRMunch/ncdr"),
        "{out}"
    );
    assert!(out.contains("# database: mysql://cdrmunch:***@127.0.0.1:3306/CDR"), "password redacted: {out}");
    let keys = text(&cdrmunch(&["config", "--keys"]).stdout);
    assert!(keys.contains("distiller.number_of_distilleries") && keys.contains("default: 10"), "{keys}");
}

#[test]
fn help_explains_the_embedded_default() {
    let out = text(&cdrmunch(&["--help"]).stdout);
    assert!(out.contains("embedded default") && out.contains("127.0.0.1:8080"), "{out}");
    for sub in ["serve", "migrate", "normalize", "submit", "gen"] {
        assert!(out.contains(sub), "{sub} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_posts_files_and_names_the_ones_refused() {
    let app = TestApp::start(Db::Sqlite).await;
    let url = app.url("/api/v2/cdr");
    let gen_dir = app.dir.path().join("gen");
    let out = cdrmunch(&["gen", "-n", "25", "-o", gen_dir.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success());
    let url2 = url.clone();
    let g = gen_dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        cdrmunch(&["submit", "--url", &url2, "--quiet", "--encode", "base64", g.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    app.wait_settled(25, Duration::from_secs(30)).await;

    let corpus = corpus_dir();
    let out = tokio::task::spawn_blocking(move || cdrmunch(&["submit", "--url", &url, corpus.to_str().unwrap()]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "one corpus file is refused");
    let err = text(&out.stderr);
    assert!(err.contains("200: 15") && err.contains("400: 1"), "{err}");
    assert!(err.contains("summitrabz_2015_inbound_answered_playback_moh.xml (400): not a well-formed CDR"), "{err}");
    app.wait_settled(40, Duration::from_secs(30)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_on_sqlite_and_a_new_mariadb_database() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let conf = dir.path().join("db.conf");
        std::fs::write(&conf, format!("cdrdb.url = {}\n", tdb.url)).unwrap();
        let c = conf.clone();
        let out =
            tokio::task::spawn_blocking(move || cdrmunch(&["migrate", "--config", c.to_str().unwrap()])).await.unwrap();
        assert!(out.status.success(), "{db:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("is up to date"));
        let repo = cdrmunch::store::connect(&tdb.url, 1).await.unwrap();
        assert_eq!(repo.queue_counts().await.unwrap(), Default::default(), "tables exist");
        // idempotent
        let out = tokio::task::spawn_blocking(move || cdrmunch(&["migrate", "--config", conf.to_str().unwrap()]))
            .await
            .unwrap();
        assert!(out.status.success());
    }
}
