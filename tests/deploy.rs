//! The Prometheus alert rules and the Grafana dashboard in deploy/: promtool checks and
//! unit-tests the rules, and every metric they name is one the service exports.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool not found: scripts/test.sh installs it (Debian's prometheus package)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

/// Metric names in a PromQL expression: identifiers followed by `{`, `[`, `)` or space that
/// look like ours (the functions and keywords are not).
fn metric_names(expr: &str) -> Vec<String> {
    const NOT_METRICS: [&str; 12] = [
        "sum",
        "max",
        "by",
        "rate",
        "increase",
        "histogram_quantile",
        "and",
        "le",
        "task_type",
        "instance",
        "actor",
        "role",
    ];
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if !word.is_empty() && !in_quotes && word.chars().next().is_some_and(|f| f.is_ascii_alphabetic()) {
            let w = std::mem::take(&mut word);
            if !NOT_METRICS.contains(&w.as_str()) && c != '(' && !w.starts_with("le") && w.contains('_') || w == "up" {
                out.push(w);
            }
        }
        word.clear();
    }
    out
}

fn known(name: &str) -> bool {
    let base = ["_bucket", "_count", "_sum"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
    name == "up" || cdrmunch::telemetry::ALL.contains(&base)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = deploy("prometheus");
    let said = promtool(&["check", "rules", "cdrmunch-alerts.yml"], &dir);
    assert!(said.contains("SUCCESS: 8 rules found"), "{said}");
    let said = promtool(&["test", "rules", "cdrmunch-alerts.test.yml"], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
    // every seed threshold is there
    let rules = std::fs::read_to_string(dir.join("cdrmunch-alerts.yml")).unwrap();
    for expr in [
        "max(cdr_queue_pending) > 10000",
        "max(cdr_queue_errors) > 100",
        "(tasks_pending)) > 50000",
        "(tasks_errors)) > 500",
        "sum(distiller_throughput) < 100",
        "[5m]))) > 30",
    ] {
        assert!(rules.contains(expr), "no rule with {expr}");
    }
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        for m in metric_names(line) {
            assert!(known(&m), "rule names unknown metric {m}: {line}");
        }
    }
}

#[test]
fn the_dashboard_shows_only_metrics_the_service_exports() {
    let text = std::fs::read_to_string(deploy("grafana/cdrmunch-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut seen = std::collections::BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr}");
            for m in names {
                assert!(known(&m), "panel '{}' names unknown metric {m}", p["title"]);
                seen.insert(m);
            }
        }
    }
    for seed in ["cdr_queue_pending", "cdr_queue_errors", "tasks_pending", "tasks_errors", "distiller_throughput"] {
        assert!(seen.contains(seed), "the dashboard lacks {seed}");
    }
    assert!(seen.contains("cdrmunch_task_latency_seconds_bucket"));
}

#[test]
fn the_metric_name_scanner_finds_names_and_skips_functions() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, task_type) (rate(cdrmunch_task_latency_seconds_bucket[5m]))) > 30",
    );
    assert_eq!(names, ["cdrmunch_task_latency_seconds_bucket"]);
    assert_eq!(metric_names("up{job=\"cdrmunch\"} == 0"), ["up"]);
    assert!(!known("cdrmunch_made_up_total"));
}
