//! `/metrics` of a running server after traffic: the seed's queue gauges and the counters
//! hold the numbers the traffic implies, and `promtool check metrics` finds nothing to say.
//! (One test in this binary: the metrics registry is process-wide.)

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdrmunch::cli::gen::{GenFormat, Generator};
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_hold_the_numbers_and_pass_promtool() {
    const N: usize = 20;
    let app = TestApp::start(Db::Sqlite).await;
    let mut g = Generator::new(3, GenFormat::Xml);
    let mut billing = 0;
    for _ in 0..N {
        let c = g.next_cdr();
        let n = normalize_document(c.document.as_bytes(), &NormalizeContext::default()).unwrap();
        billing += n.tasks.iter().filter(|t| t.task_type.as_str() == "billing").count();
        let (ct, body) = encode_body(c.document.as_bytes(), SubmitEncoding::Urlencoded);
        assert_eq!(app.post_cdr(body, "", ct).await.0, 200);
    }
    // one more, carrying a rate that is not a decimal: a warning, and billed all the same
    let odd = String::from_utf8(answered_cdr(&uuid::Uuid::new_v4().to_string()))
        .unwrap()
        .replace("<billsec>", "<lcr_rate>0.01%20USD</lcr_rate><billsec>");
    let n = normalize_document(odd.as_bytes(), &NormalizeContext::default()).unwrap();
    assert!(n.tasks.iter().any(|t| t.task_type.as_str() == "billing"), "an answered A-leg is billed");
    billing += 1;
    assert_eq!(app.post_cdr(odd.into_bytes(), "", "text/xml").await.0, 200);
    assert_eq!(app.post_cdr(b"hello".to_vec(), "", "text/plain").await.0, 400);
    assert_eq!(app.http.get(app.url("/nope")).send().await.unwrap().status().as_u16(), 404);
    app.wait_settled(N as u64 + 1, Duration::from_secs(30)).await;

    let url = format!("http://{}/metrics", app.app().metrics_addr.expect("metrics enabled"));
    let expect = [
        format!("cdrmunch_distillery_outcomes_total{{outcome=\"successful\"}} {}", N + 1),
        format!("cdrmunch_intake_requests_total{{endpoint=\"/api/v2/cdr\",status=\"200\"}} {}", N + 1),
        "cdrmunch_field_warnings_total{field=\"lcr_rate\"} 1".to_string(),
        "cdrmunch_intake_requests_total{endpoint=\"/api/v2/cdr\",status=\"400\"} 1".to_string(),
        "cdrmunch_intake_requests_total{endpoint=\"other\",status=\"404\"} 1".to_string(),
        "cdr_queue_pending 0".to_string(),
        "cdr_queue_errors 0".to_string(),
        // the executors run billing and calllog out of the box
        "tasks_pending{task_type=\"billing\"} 0".to_string(),
        format!("cdrmunch_task_outcomes_total{{task_type=\"billing\",outcome=\"done\"}} {billing}"),
        format!("cdrmunch_task_latency_seconds_bucket{{task_type=\"billing\",le=\"21600\"}} {billing}"),
        format!("cdrmunch_task_latency_seconds_count{{task_type=\"billing\"}} {billing}"),
        "cdrmunch_inflight_tasks{task_type=\"billing\"} 0".to_string(),
        "tasks_errors{task_type=\"calllog\"} 0".to_string(),
        "cdrmunch_inflight_cdrs 0".to_string(),
    ];
    // the queue gauges refresh every few seconds: wait (bounded) for the refresh after the traffic
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = app.http.get(&url).send().await.unwrap().text().await.unwrap();
        if expect.iter().all(|e| body.lines().any(|l| l == e)) {
            break body;
        }
        let missing: Vec<_> = expect.iter().filter(|e| !body.lines().any(|l| l == e.as_str())).collect();
        assert!(Instant::now() < deadline, "missing {missing:?} in\n{body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for name in ["cdr_queue_pending", "tasks_pending", "distiller_throughput", "cdrmunch_group_commit_duration_seconds"]
    {
        assert!(body.contains(&format!("# HELP {name} ")), "HELP for {name}");
    }
    assert!(body.contains("# TYPE cdrmunch_group_commit_duration_seconds histogram"), "{body}");
    assert!(body.contains("cdrmunch_group_commit_batch_size_bucket{role=\"committer\",le=\"1\"}"), "{body}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: scripts/test.sh installs it (Debian's prometheus package)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{body}");
    app.stop().await;
}
