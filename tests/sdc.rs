//! The seed's two-SDC setup: two MariaDB servers on loopback in master-master replication
//! (`auto_increment_increment = 2`, offsets 1 and 2), one cdrmunch per "SDC" on its own
//! server, both with `distiller.shard = auto`. CDRs are posted to both sides; each side
//! claims only the rows its own server numbered; one side's cdrmunch is `kill -9`ed mid-load
//! and what its clients could not deliver goes to the other side (FreeSWITCH's next URL).
//! Every acknowledged CDR is normalized exactly once across the pair, replication never
//! stops on a conflict, the survivor takes over the dead side's backlog after the takeover
//! delay, and nothing is left stuck.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cdrmunch::cli::gen::{GenFormat, Generator};
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use common::cluster::{shared_config, Node};
use common::mariadb::PrivateMariadb;
use common::*;

const N: usize = 800;

fn sdc_server(id: u32) -> PrivateMariadb {
    PrivateMariadb::start_with(&[
        &format!("--server-id={id}"),
        "--log-bin=mysql-bin",
        "--binlog-format=ROW",
        "--auto-increment-increment=2",
        &format!("--auto-increment-offset={id}"),
    ])
}

/// `SHOW MASTER STATUS`: binlog file and position.
fn master_position(db: &PrivateMariadb) -> (String, u64) {
    let out = db.sql("SHOW MASTER STATUS");
    let cols: Vec<&str> = out.split('\t').collect();
    (cols[0].to_string(), cols[1].trim().parse().unwrap())
}

/// Makes `replica` replicate everything `source` writes from now on.
fn replicate(replica: &PrivateMariadb, source: &PrivateMariadb) {
    let (file, pos) = master_position(source);
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='cdrmunch', \
         MASTER_PASSWORD='cdrmunch', MASTER_LOG_FILE='{file}', MASTER_LOG_POS={pos}, MASTER_CONNECT_RETRY=1; START SLAVE",
        source.port
    ));
}

/// `SHOW SLAVE STATUS` as name → value.
fn slave_status(db: &PrivateMariadb) -> std::collections::HashMap<String, String> {
    db.row("SHOW SLAVE STATUS")
}

/// Waits (bounded) until `replica` has applied everything `source` has logged so far, and
/// asserts its replication threads are healthy.
async fn caught_up(replica: &PrivateMariadb, source: &PrivateMariadb) {
    let (file, pos) = master_position(source);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = slave_status(replica);
        assert_eq!(s.get("Last_SQL_Errno").map(String::as_str), Some("0"), "replication stopped: {s:?}");
        assert_eq!(s.get("Last_IO_Errno").map(String::as_str), Some("0"), "replication stopped: {s:?}");
        let applied = s.get("Relay_Master_Log_File") == Some(&file)
            && s.get("Exec_Master_Log_Pos").and_then(|p| p.parse::<u64>().ok()).is_some_and(|p| p >= pos);
        if applied {
            return;
        }
        assert!(Instant::now() < deadline, "replica not caught up with {file}:{pos}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(db: &PrivateMariadb, sql: &str) -> u64 {
    db.sql(sql).trim().parse().unwrap_or_else(|_| panic!("{sql}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sdcs_master_master_each_claims_its_own_rows_and_the_survivor_takes_over() {
    let (a, b) = (sdc_server(1), sdc_server(2));
    replicate(&a, &b);
    replicate(&b, &a);
    // the schema is made once, on one side, and reaches the other by replication
    let store_a = cdrmunch::store::connect(&a.url("sdc"), 4).await.unwrap();
    store_a.migrate().await.unwrap();
    caught_up(&b, &a).await;
    assert_eq!(count(&b, "SELECT COUNT(*) FROM sdc.cdrmunch_nodes"), 0, "schema replicated");

    // One shared directory stands for the store both sides reach (S3 in the seed's AWS
    // target): the survivor must read the raw CDRs of the side it takes over.
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let fast = "distiller.shard = auto\ndistiller.takeover_seconds = 3\ndistiller.lease_seconds = 4\n\
                tasksd.lease_seconds = 4\n";
    let billing = |db: &PrivateMariadb| db.url("sdc_billing");
    let node_a = Node::start(dir.path(), "sdc-a", &shared_config(dir.path(), &a.url("sdc"), &billing(&a)), fast);
    node_a.healthy(&http).await;
    // side B starts once side A's billing table has reached its server
    caught_up(&b, &a).await;
    let mut node_b = Node::start(dir.path(), "sdc-b", &shared_config(dir.path(), &b.url("sdc"), &billing(&b)), fast);
    node_b.healthy(&http).await;
    for (n, own) in [(&node_a, "id % 2 = 1"), (&node_b, "id % 2 = 0")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !n.log_text().contains(&format!("cdr_queue: claiming {own}")) {
            assert!(Instant::now() < deadline, "{} never said it claims {own}:\n{}", n.name, n.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut g = Generator::new(77, GenFormat::Xml);
    let cdrs: Vec<(String, Vec<u8>)> =
        (0..N).map(|_| g.next_cdr()).map(|c| (c.uuid, c.document.into_bytes())).collect();
    let rules = cdrmunch::handlers::task_rules(&cdrmunch::config::Settings::embedded_default(dir.path()));
    let nctx = NormalizeContext { rules, ..Default::default() };
    let billable = cdrs
        .iter()
        .flat_map(|(_, d)| normalize_document(d, &nctx).unwrap().tasks)
        .filter(|t| t.task_type.as_str() == "billing")
        .count();
    let post = |base: String, doc: Vec<u8>| {
        let http = http.clone();
        async move {
            let (ct, body) = encode_body(&doc, SubmitEncoding::Urlencoded);
            let r = http.post(format!("{base}/api/v2/cdr")).header("Content-Type", ct).body(body).send().await;
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    // Even CDRs to side A, odd ones to side B, 8 clients each; B is killed once it has
    // acknowledged a quarter of its share.
    let acked_b = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (pid_b, acked, port_a, log_a) = (node_b.server.0.id(), acked_b.clone(), a.port, node_a.log.clone());
    // Returns, read the moment B is killed (a takeover needs 3 s of silence): how many of B's
    // rows side A had claimed, and how far A's log had got.
    let killer = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.load(std::sync::atomic::Ordering::SeqCst) < N / 8 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = std::process::Command::new("kill").args(["-9", &pid_b.to_string()]).status();
        let sql = "SELECT COUNT(*) FROM sdc.cdr_queue WHERE claimed_by = 'sdc-a' AND id % 2 = 0";
        let out = std::process::Command::new("mariadb")
            .args(["--protocol=TCP", "-h", "127.0.0.1", "-P", &port_a.to_string(), "-u", "cdrmunch", "-pcdrmunch"])
            .args(["-N", "-B", "-e", sql])
            .output()
            .unwrap();
        let early: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("count of A's claims of B's rows");
        (early, std::fs::read_to_string(log_a).unwrap_or_default().len())
    });
    let results: Vec<(usize, u16)> = {
        use futures::StreamExt;
        futures::stream::iter(cdrs.iter().enumerate())
            .map(|(i, (_, doc))| {
                let base = if i % 2 == 0 { node_a.base.clone() } else { node_b.base.clone() };
                let (fut, acked) = (post(base, doc.clone()), acked_b.clone());
                async move {
                    let s = fut.await;
                    if i % 2 == 1 && s == 200 {
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    (i, s)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await
    };
    let (early, log_at_kill) = killer.await.unwrap();
    let _ = node_b.server.0.wait();
    caught_up(&a, &b).await;
    let b_rows = count(&a, "SELECT COUNT(*) FROM sdc.cdr_queue WHERE id % 2 = 0");
    // What B could not take goes to A, as FreeSWITCH moves on to its next URL.
    let mut acked: HashSet<String> = HashSet::new();
    for (i, status) in results {
        if status != 200 {
            assert!(i % 2 == 1, "side A refused CDR {i}: {status}");
            assert_eq!(post(node_a.base.clone(), cdrs[i].1.clone()).await, 200, "CDR {i} re-posted to side A");
        }
        acked.insert(cdrs[i].0.clone());
    }
    let acked_by_b = b_rows as usize;
    assert!(acked_by_b >= N / 8, "B took {acked_by_b} before the kill");
    assert_eq!(early, 0, "side A claimed side B's rows while B was alive");

    // Every CDR normalized once, on both servers; every task done; replication healthy.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (n, t) = store_a.normalized_counts().await.unwrap();
        let q = store_a.queue_counts().await.unwrap();
        let open = count(&a, "SELECT COUNT(*) FROM sdc.tasks WHERE done <> 'y'");
        if n as usize == N && q.pending == 0 && open == 0 && t > 0 {
            assert_eq!((q.done, q.error), (N as u64, 0));
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {n} of {N} normalized, {q:?}, {open} tasks open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caught_up(&b, &a).await;
    let uuids: HashSet<[u8; 16]> = normalized_uuids(&store_a).await.into_iter().collect();
    assert_eq!(uuids.len(), N, "one normalized row per CDR");
    for u in &acked {
        assert!(uuids.contains(uuid::Uuid::parse_str(u).unwrap().as_bytes()), "{u} acknowledged but lost");
    }
    for db in [&a, &b] {
        assert_eq!(count(db, "SELECT COUNT(*) FROM sdc.normalized_cdrs"), N as u64);
        assert_eq!(count(db, "SELECT COUNT(DISTINCT uuid) FROM sdc.normalized_cdrs"), N as u64);
        assert_eq!(count(db, "SELECT COUNT(*) FROM sdc.cdr_queue WHERE done <> 'y'"), 0);
    }
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM sdc.cdr_queue WHERE claimed_by = 'sdc-b' AND id % 2 = 1"),
        0,
        "side B claimed side A's rows"
    );
    let taken = count(&a, "SELECT COUNT(*) FROM sdc.cdr_queue WHERE claimed_by = 'sdc-a' AND id % 2 = 0");
    assert!(taken > 0, "side A took over none of B's {acked_by_b} rows (B's backlog at the kill)");
    let since_kill = node_a.log_text()[log_at_kill..].to_string();
    assert!(since_kill.contains("taking over a silent shard, claiming id % 2 = 0, id % 2 = 1"), "{since_kill}");
    let billed = count(&a, "SELECT COUNT(*) FROM sdc_billing.billing_feed");
    let distinct = count(&a, "SELECT COUNT(DISTINCT uuid) FROM sdc_billing.billing_feed");
    assert_eq!((billed, distinct), (billable as u64, billable as u64), "one billing row per billable call");
    eprintln!(
        "two SDCs: {N} CDRs, {acked_by_b} taken by side B before its kill -9, {taken} of them finished by side A \
         after the takeover; {billed} billing rows, one per billable call"
    );

    // Side B comes back: A gives B's rows back, and B claims what its server numbers again.
    let gave_back = |log: &str| log.matches("cdr_queue: claiming id % 2 = 1").count();
    let before = gave_back(&node_a.log_text());
    let node_b = Node::start(dir.path(), "sdc-b", &shared_config(dir.path(), &b.url("sdc"), &billing(&b)), fast);
    node_b.healthy(&http).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gave_back(&node_a.log_text()) == before || !node_b.log_text().contains("cdr_queue: claiming id % 2 = 0") {
        assert!(Instant::now() < deadline, "no hand-back:\n{}\n{}", node_a.log_text(), node_b.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let more: Vec<(String, Vec<u8>)> =
        (0..40).map(|_| g.next_cdr()).map(|c| (c.uuid, c.document.into_bytes())).collect();
    for (_, doc) in &more {
        assert_eq!(post(node_b.base.clone(), doc.clone()).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while store_a.normalized_counts().await.unwrap().0 as usize != N + more.len() {
        assert!(Instant::now() < deadline, "CDRs posted to the returned side B not normalized");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caught_up(&a, &b).await;
    caught_up(&b, &a).await;
    let last = format!(
        "SELECT COUNT(*) FROM sdc.cdr_queue WHERE claimed_by = 'sdc-b' AND id > {}",
        count(&a, "SELECT MAX(id) FROM sdc.cdr_queue WHERE id % 2 = 1")
    );
    assert_eq!(count(&a, &last), more.len() as u64, "side B distilled what it took after its return");
    drop((node_a, node_b));
}
