//! `cdrmunch why <uuid>`: the whole story of one call leg on one screen — the first command
//! an on-call engineer types. Raw file(s), queue row and its error, a spooled row not yet in
//! the database, the normalized CDR, every task with its attempts and last error, and any
//! re-post that differed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use super::{load_settings, ConfigArgs};
use crate::app::open_repository;

pub async fn why(leg: &str, cfg: ConfigArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let key =
        crate::domain::intake::canonical_uuid(leg.trim()).ok_or_else(|| anyhow::anyhow!("'{leg}' is not a uuid"))?;
    let uuid = uuid::Uuid::from_bytes(key).to_string();
    let (settings, _) = load_settings(&cfg)?;
    let store = open_repository(&settings).await?;
    let queue = store.queue_story(key).await.context("reading cdr_queue")?;
    let normalized = store.normalized_of(key).await.context("reading normalized_cdrs")?;
    let tasks = store.task_states(key).await.context("reading tasks")?;
    let conflicts = store.conflicts_of(key).await.context("reading intake_conflicts")?;
    let spooled = spooled_rows(&settings.request_handler.spool_dir, &hex::encode(key));
    let file = |p: &str| -> Value {
        match std::fs::metadata(p) {
            Ok(m) => json!({ "path": p, "bytes": m.len() }),
            Err(_) if p.starts_with("s3://") => json!({ "path": p }),
            Err(e) => json!({ "path": p, "missing": e.to_string() }),
        }
    };
    let story = json!({
        "uuid": uuid,
        "raw": queue.as_ref().map(|q| file(&q.path)),
        "queue": queue,
        "spooled": spooled,
        "normalized": normalized.as_ref().map(|(id, path)| {
            let mut f = file(path);
            f["id"] = json!(id);
            f
        }),
        "tasks": tasks.iter().map(|t| json!({
            "id": t.id, "type": t.task_type.as_str(), "node_index": t.node_index, "done": t.done.as_str(),
            "attempts": t.retry, "last_error": t.error_message,
        })).collect::<Vec<_>>(),
        "conflicts": conflicts,
    });
    let known = queue.is_some() || !spooled.is_empty() || normalized.is_some();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&story)?);
    } else {
        print!("{}", render(&story));
    }
    Ok(if known { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Spool files holding a row for the uuid (intake took the CDR while the database was away).
fn spooled_rows(dir: &Path, uuid_hex: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(uuid_hex)))
        .map(|p| p.display().to_string())
        .collect();
    found.sort();
    found
}

fn render(s: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let _ = writeln!(o, "call leg {}", text(&s["uuid"]));
    match &s["queue"] {
        Value::Null if s["spooled"].as_array().is_some_and(|a| !a.is_empty()) => {
            let _ = writeln!(o, "  queue:      not in the database yet; spooled in {}", text(&s["spooled"][0]));
        }
        Value::Null => {
            let _ = writeln!(o, "  queue:      no cdr_queue row (never received, refused, or purged)");
        }
        q => {
            let _ = writeln!(o, "  raw:        {}{}", text(&s["raw"]["path"]), file_note(&s["raw"]));
            let _ = writeln!(
                o,
                "  queue:      id {} from {}, done={} retry={} next_attempt={}",
                q["id"],
                text(&q["freeswitch_host"]),
                text(&q["done"]),
                q["retry"],
                text(&q["next_attempt"])
            );
            if !q["error"].is_null() {
                let _ = writeln!(
                    o,
                    "  error:      {} (critical={}, first {}, last {})",
                    text(&q["error"]),
                    text(&q["critical"]),
                    text(&q["first_error"]),
                    text(&q["last_error"])
                );
            }
        }
    }
    match &s["normalized"] {
        Value::Null => {
            let _ = writeln!(o, "  normalized: not yet");
        }
        n => {
            let _ = writeln!(o, "  normalized: id {} {}{}", n["id"], text(&n["path"]), file_note(n));
        }
    }
    let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(o, "  tasks:      {}", if tasks.is_empty() { "none" } else { "" });
    for t in &tasks {
        let err = t["last_error"].as_str().map(|e| format!("  last error: {e}")).unwrap_or_default();
        let _ = writeln!(
            o,
            "    {:<18} id {} done={} attempts={}{err}",
            text(&t["type"]),
            t["id"],
            text(&t["done"]),
            t["attempts"]
        );
    }
    for c in s["conflicts"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            o,
            "  re-post:    {} — first {}, other {}",
            text(&c["kind"]),
            text(&c["first_path"]),
            text(&c["other_path"])
        );
    }
    o
}

fn file_note(f: &Value) -> String {
    match (&f["bytes"], &f["missing"]) {
        (Value::Number(n), _) => format!(" ({n} bytes)"),
        (_, Value::String(e)) => format!(" (MISSING: {e})"),
        _ => String::new(),
    }
}
