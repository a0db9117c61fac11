//! N processes on one MariaDB, as the seed's AWS target runs them: three `serve` processes
//! with every role, then the split deployment (intake ×2, distiller ×2, tasks ×1). Under
//! load, no CDR is distilled twice and no task runs twice (the processes' own counters add up
//! to exactly the rows), every process does its share, and nothing is left behind. The
//! throughput of the three beside one process's is printed, not asserted (benchmarks, not
//! timed tests).

mod common;

use std::time::{Duration, Instant};

use cdrmunch::cli::gen::{GenFormat, Generator};
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use common::cluster::{shared_config, Node};
use common::*;

const N: usize = 900;

struct Load {
    cdrs: Vec<(String, Vec<u8>)>,
    tasks: usize,
}

fn load(seed: u64) -> Load {
    let mut g = Generator::new(seed, GenFormat::Xml);
    let cdrs: Vec<(String, Vec<u8>)> =
        (0..N).map(|_| g.next_cdr()).map(|c| (c.uuid, c.document.into_bytes())).collect();
    let dir = tempfile::tempdir().unwrap();
    let rules = cdrmunch::handlers::task_rules(&cdrmunch::config::Settings::embedded_default(dir.path()));
    let nctx = NormalizeContext { rules, ..Default::default() };
    let tasks = cdrs.iter().map(|(_, d)| normalize_document(d, &nctx).unwrap().tasks.len()).sum();
    Load { cdrs, tasks }
}

/// Posts every CDR, round robin over `intakes`, 24 at a time; all must get a 200.
async fn post_all(http: &reqwest::Client, intakes: &[&Node], cdrs: &[(String, Vec<u8>)]) {
    use futures::StreamExt;
    let bases: Vec<String> = intakes.iter().map(|n| format!("{}/api/v2/cdr", n.base)).collect();
    let statuses: Vec<(String, u16)> = futures::stream::iter(cdrs.iter().enumerate())
        .map(|(i, (uuid, doc))| {
            let (http, url) = (http.clone(), bases[i % bases.len()].clone());
            async move {
                let (ct, body) = encode_body(doc, SubmitEncoding::Urlencoded);
                let s = http.post(&url).header("Content-Type", ct).body(body).send().await.map(|r| r.status().as_u16());
                (uuid.clone(), s.unwrap_or(0))
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let refused: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(refused.is_empty(), "{} POSTs not answered 200: {:?}", refused.len(), &refused[..refused.len().min(5)]);
}

/// Waits (bounded) until every CDR is normalized and every task done; returns when.
async fn settled(store: &cdrmunch::store::Store, tasks: usize, started: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (n, t) = store.normalized_counts().await.unwrap();
        let q = store.queue_counts().await.unwrap();
        let done: u64 = store.task_counts().await.unwrap().iter().filter(|(_, d, _)| *d == "y").map(|c| c.2).sum();
        if n as usize == N && q.pending == 0 && done as usize == tasks {
            assert_eq!(t as usize, tasks, "task rows");
            assert_eq!((q.done, q.error), (N as u64, 0));
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "not settled: {n} of {N} normalized, {q:?}, {done} of {tasks} tasks done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per node: CDRs it distilled (and none a second time), task attempts it finished.
async fn shares(http: &reqwest::Client, nodes: &[&Node]) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for n in nodes {
        let dup = n.metric(http, "cdrmunch_distillery_outcomes_total", &["outcome=\"successful_duplicate\""]).await;
        assert_eq!(dup, 0.0, "{}: a CDR distilled twice", n.name);
        let distilled = n.metric(http, "cdrmunch_distillery_outcomes_total", &["outcome=\"successful\""]).await;
        let tasks = n.metric(http, "cdrmunch_task_outcomes_total", &["outcome=\"done\""]).await;
        out.push((n.name.clone(), distilled, tasks));
    }
    out
}

struct Cluster {
    dir: tempfile::TempDir,
    db: TestDb,
    billing: TestDb,
    store: cdrmunch::store::Store,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let (db, billing) = (TestDb::new(Db::Mysql, dir.path()), TestDb::new(Db::Mysql, dir.path()));
    // migrated once before the processes start, as a deployment's `cdrmunch migrate` step does
    let store = cdrmunch::store::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    Cluster { dir, db, billing, store }
}

async fn one_process_figure(http: &reqwest::Client, l: &Load) -> f64 {
    let c = cluster().await;
    let shared = shared_config(c.dir.path(), &c.db.url, &c.billing.url);
    let mut node = Node::start(c.dir.path(), "solo", &shared, "");
    node.healthy(http).await;
    let started = Instant::now();
    post_all(http, &[&node], &l.cdrs).await;
    let took = settled(&c.store, l.tasks, started).await;
    let _ = node.server.0.kill();
    let _ = node.server.0.wait();
    N as f64 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_mariadb_share_the_work_exactly_once() {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let l = load(31);
    let solo = one_process_figure(&http, &l).await;

    let c = cluster().await;
    let shared = shared_config(c.dir.path(), &c.db.url, &c.billing.url);
    let nodes: Vec<Node> = (1..=3).map(|i| Node::start(c.dir.path(), &format!("node{i}"), &shared, "")).collect();
    for n in &nodes {
        n.healthy(&http).await;
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let started = Instant::now();
    post_all(&http, &refs, &l.cdrs).await;
    let took = settled(&c.store, l.tasks, started).await;
    let got = shares(&http, &refs).await;
    eprintln!(
        "{N} CDRs and {} tasks: one process {solo:.0} CDR/s; three processes {:.0} CDR/s together; shares \
         (CDRs, tasks) {got:?}",
        l.tasks,
        N as f64 / took.as_secs_f64()
    );
    assert_eq!(got.iter().map(|g| g.1).sum::<f64>() as usize, N, "each CDR distilled by exactly one process");
    assert_eq!(got.iter().map(|g| g.2).sum::<f64>() as usize, l.tasks, "each task done by exactly one process");
    for (name, cdrs, tasks) in &got {
        assert!(*cdrs > 0.0 && *tasks > 0.0, "{name} did no work: {got:?}");
    }
    assert_eq!(normalized_uuids(&c.store).await.len(), N);
    drop(nodes);
    drop((c.db, c.billing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_deployment_intake_two_distillers_two_tasks_one() {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let l = load(32);
    let c = cluster().await;
    let shared = shared_config(c.dir.path(), &c.db.url, &c.billing.url);
    let role = |r: &str| format!("app.roles = {r}\n");
    let intakes: Vec<Node> =
        (1..=2).map(|i| Node::start(c.dir.path(), &format!("intake{i}"), &shared, &role("intake"))).collect();
    let distillers: Vec<Node> =
        (1..=2).map(|i| Node::start(c.dir.path(), &format!("distiller{i}"), &shared, &role("distiller"))).collect();
    let tasks = Node::start(c.dir.path(), "tasks1", &shared, &role("tasks"));
    for n in intakes.iter().chain(&distillers).chain([&tasks]) {
        n.healthy(&http).await;
    }
    let started = Instant::now();
    post_all(&http, &intakes.iter().collect::<Vec<_>>(), &l.cdrs).await;
    let took = settled(&c.store, l.tasks, started).await;
    let got = shares(&http, &distillers.iter().chain([&tasks]).collect::<Vec<_>>()).await;
    eprintln!("split deployment: {N} CDRs in {:.1} s; (CDRs, tasks) per process {got:?}", took.as_secs_f64());
    assert_eq!(got[0].1 + got[1].1, N as f64, "each CDR distilled once, by the distillers");
    assert!(got[0].1 > 0.0 && got[1].1 > 0.0, "both distillers worked: {got:?}");
    assert_eq!((got[0].2, got[1].2), (0.0, 0.0), "distillers run no tasks");
    assert_eq!((got[2].1, got[2].2 as usize), (0.0, l.tasks), "the tasks process ran every task, once");
    for i in &intakes {
        let posted =
            i.metric(&http, "cdrmunch_intake_requests_total", &["endpoint=\"/api/v2/cdr\"", "status=\"200\""]).await;
        assert_eq!(posted as usize, N / 2, "{}: its half of the POSTs", i.name);
    }
    drop((intakes, distillers, tasks));
    drop((c.db, c.billing));
}
