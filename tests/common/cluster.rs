//! Several real `cdrmunch serve` processes on one database (or on two replicating ones):
//! each with its own ports, instance id and log, sharing the raw and normalized CDR
//! directories as processes on one host do. Killed on drop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{free_port, Server};

pub struct Node {
    pub name: String,
    pub base: String,
    pub metrics: String,
    pub server: Server,
    pub log: PathBuf,
}

/// The keys every node of a test shares: its database, directories and fast polling.
pub fn shared_config(dir: &Path, db_url: &str, billing_url: &str) -> String {
    let d = dir.display();
    format!(
        "server.address = 127.0.0.1\ncdrdb.url = {db_url}\nbillingdb.url = {billing_url}\n\
         request_handler.cdr_base_dir = {d}/cdr\ncdr_base_dir = {d}/cdr\nnormalized_cdr_base_dir = {d}/ncdr\n\
         request_handler.paging_base_dir = {d}/paging\nrequest_handler.pcap_base_dir = {d}/pcap\n\
         distiller.number_of_distilleries = 8\ncdr_queue_poll_interval_seconds = 0.2\n\
         tasksd.poll_interval_seconds = 0.2\nlog.level = 4\nmetrics.address = 127.0.0.1\n"
    )
}

impl Node {
    /// Starts `cdrmunch serve` as `name` with `shared` plus `extra` config lines.
    pub fn start(dir: &Path, name: &str, shared: &str, extra: &str) -> Node {
        let (port, metrics_port) = (free_port(), free_port());
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "{shared}server.port = {port}\nmetrics.port = {metrics_port}\napp.instance_id = {name}\n\
                 request_handler.spool_dir = {}/spool-{name}\n{extra}\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        // CDRMUNCH_BIN: the release build, for figures (see deploy/README.md's capacity plan)
        let bin = std::env::var("CDRMUNCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cdrmunch").to_string());
        let child = std::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(&conf)
            .env_remove("RUST_LOG")
            .env("CDRMUNCH_DATA_DIR", dir.join(format!("data-{name}")))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn cdrmunch serve");
        Node {
            name: name.into(),
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            server: Server(child),
            log,
        }
    }

    /// Waits (bounded) until /health answers.
    pub async fn healthy(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{} did not become healthy; log:\n{}", self.name, self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of every sample of `metric` whose labels contain all of `labels`
    /// (`outcome="successful"`), from this node's /metrics.
    pub async fn metric(&self, http: &reqwest::Client, metric: &str, labels: &[&str]) -> f64 {
        let text = http.get(&self.metrics).send().await.unwrap().text().await.unwrap();
        metric_sum(&text, metric, labels)
    }
}

pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
