//! The commands beside `serve`, one function each.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::gen::{GenFormat, Generator};
use super::submit::{collect_files, Item, SubmitOptions};
use super::{load_settings, ops, progress_bar, ConfigArgs};
use crate::app::open_repository;
use crate::config::describe_keys;
use crate::domain::intake::decode_body;
use crate::domain::normalize::{normalize_document, NormalizeContext};
use crate::domain::tasks::TaskType;
use crate::store::{RetryCdrs, RetryTasks};

pub async fn migrate(cfg: ConfigArgs) -> anyhow::Result<ExitCode> {
    let (settings, _) = load_settings(&cfg)?;
    crate::logging::init(settings.log.level);
    let store = open_repository(&settings).await.context("migration failed")?;
    println!(
        "{} database at {} is up to date",
        store.dialect().name(),
        crate::store::redact_url(&settings.database.cdrdb_url)
    );
    Ok(ExitCode::SUCCESS)
}

/// The normalized XML of one file, built with the same context the service builds.
pub fn normalize(
    file: PathBuf,
    cfg: ConfigArgs,
    disabled_tasks: &str,
    rates: Option<PathBuf>,
    country_code: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (mut settings, _) = load_settings(&cfg)?;
    if rates.is_some() {
        settings.rating.deck = rates;
    }
    if country_code.is_some() {
        settings.rating.default_country_code = country_code;
    }
    for t in disabled_tasks.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        t.parse::<TaskType>().map_err(anyhow::Error::msg)?;
        settings.distiller.disabled_tasks.push(t.to_string());
    }
    let base = crate::app::normalize_context(&settings)?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let normalized = decode_body(&bytes).map_err(|e| e.to_string()).and_then(|d| {
        let ctx = NormalizeContext { cdr_path: file.display().to_string(), received_epoch: 0, ..base };
        normalize_document(&d.document, &ctx).map_err(|e| e.to_string())
    });
    match normalized {
        Ok(n) => {
            print!("{}", n.to_xml());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: permanent failure: {e}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn submit(
    paths: Vec<PathBuf>,
    generate: Option<usize>,
    format: GenFormat,
    seed: u64,
    opts: SubmitOptions,
) -> anyhow::Result<ExitCode> {
    let items: Vec<Item> = match generate {
        Some(n) => {
            let mut g = Generator::new(seed, format);
            (0..n).map(|_| g.next_cdr()).map(|c| Item { name: c.uuid, document: c.document.into_bytes() }).collect()
        }
        None => collect_files(&paths)?
            .into_iter()
            .map(|p| {
                let document = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                Ok(Item { name: p.display().to_string(), document })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if items.is_empty() {
        bail!("no CDR files found");
    }
    let summary = super::submit::submit(items, &opts).await?;
    let all_ok = summary.keys().all(|s| s.starts_with('2'));
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn gen(count: usize, out: PathBuf, format: GenFormat, seed: u64) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut g = Generator::new(seed, format);
    for _ in 0..count {
        let c = g.next_cdr();
        let ext = if format == GenFormat::Xml { "xml" } else { "json" };
        let name = format!("{}{}.cdr.{ext}", if c.a_leg { "a_" } else { "" }, c.uuid);
        std::fs::write(out.join(&name), c.document).with_context(|| format!("writing {name}"))?;
    }
    println!("wrote {count} CDRs to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn status(cfg: ConfigArgs, json: bool, limit: u32) -> anyhow::Result<ExitCode> {
    let (settings, _) = load_settings(&cfg)?;
    let store = open_repository(&settings).await?;
    let st = ops::status(&store, chrono::Utc::now(), limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", ops::render_status(&st));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn retry(
    cfg: ConfigArgs,
    cdr: Option<u64>,
    task: Option<u64>,
    errors: bool,
    task_type: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (settings, _) = load_settings(&cfg)?;
    let store = open_repository(&settings).await?;
    let now = chrono::Utc::now();
    let (what, n) = match (cdr, task, errors, task_type) {
        (Some(id), None, false, None) => ("CDR", store.retry_cdrs(&RetryCdrs::One(id)).await?),
        (None, Some(id), false, None) => ("task", store.retry_tasks(&RetryTasks::One(id), now).await?),
        (None, None, true, None) => ("CDR", store.retry_cdrs(&RetryCdrs::Errors).await?),
        (None, None, true, Some(t)) => {
            let task_type = match t.as_str() {
                "all" => None,
                _ => Some(t.parse::<TaskType>().map_err(anyhow::Error::msg)?),
            };
            ("task", store.retry_tasks(&RetryTasks::Errors { task_type }, now).await?)
        }
        _ => bail!("say what to retry: --cdr ID, --task ID, --errors, or --errors --type T|all"),
    };
    if json {
        println!("{}", serde_json::json!({ "kind": what, "requeued": n }));
    } else {
        println!("{n} {what}{} put back to done='n', retry=0", if n == 1 { "" } else { "s" });
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn purge(
    cfg: ConfigArgs,
    older_than: &str,
    archive_to: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (settings, _) = load_settings(&cfg)?;
    let age = ops::parse_duration(older_than).map_err(anyhow::Error::msg)?;
    let store = open_repository(&settings).await?;
    let (_, ncdr) = ops::stores(&settings).await?;
    let archive = match &archive_to {
        Some(t) => Some(crate::storage::open(t, &settings.s3).await.with_context(|| format!("--archive-to {t}"))?),
        None => None,
    };
    let bar = progress_bar(json);
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(age);
    let report = ops::purge(&store, &*ncdr, archive.as_deref(), cutoff, dry_run, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let archived = match report.archived {
        0 => String::new(),
        n => format!(", {n} archived to {}", archive_to.unwrap_or_default()),
    };
    let missing = match report.missing_files {
        0 => String::new(),
        n => format!(", {n} files already gone"),
    };
    println!(
        "{}{} normalized CDRs older than {}: {} files ({} bytes){archived}{missing}",
        if dry_run { "dry run: would purge " } else { "purged " },
        report.normalized_cdrs,
        report.cutoff,
        report.files,
        report.bytes,
    );
    Ok(ExitCode::SUCCESS)
}

/// What a command over a range of received CDRs works with.
struct Range {
    settings: crate::config::Settings,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    store: crate::store::Store,
    raw: std::sync::Arc<dyn crate::storage::BlobStore>,
    ncdr: std::sync::Arc<dyn crate::storage::BlobStore>,
}

async fn range(cfg: &ConfigArgs, from: &str, to: &str) -> anyhow::Result<Range> {
    let (settings, _) = load_settings(cfg)?;
    let from = ops::parse_time(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = ops::parse_time(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let store = open_repository(&settings).await?;
    let (raw, ncdr) = ops::stores(&settings).await?;
    Ok(Range { settings, from, to, store, raw, ncdr })
}

pub async fn replay(cfg: ConfigArgs, from: &str, to: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Range { settings, from, to, store, raw, ncdr } = range(&cfg, from, to).await?;
    let bar = progress_bar(json);
    let report = ops::replay(&store, raw, ncdr, &settings, from, to, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "replayed {} of {} CDRs: tasks {} added, {} re-pointed, {} dropped; {} failed, {} not normalized",
            report.renormalized,
            report.cdrs,
            report.tasks_added,
            report.tasks_repointed,
            report.tasks_dropped,
            report.failed,
            report.not_normalized
        );
        for f in &report.failures {
            println!("  {f}");
        }
    }
    Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn config(cfg: ConfigArgs, keys: bool) -> anyhow::Result<ExitCode> {
    if keys {
        for (key, ty, default, help) in describe_keys() {
            println!("{key}\n    type: {ty}; default: {default}\n    {help}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (settings, source) = load_settings(&cfg)?;
    println!("# resolved from {source}");
    for (k, v) in &settings.raw {
        println!("{k} = {v}");
    }
    println!("# database: {}", crate::store::redact_url(&settings.database.cdrdb_url));
    println!("# listen: {}:{}", settings.server.address, settings.server.port);
    let off = crate::handlers::off_types(&settings);
    for t in TaskType::ALL {
        match off.iter().find(|(o, _)| *o == t) {
            None => println!("# task {t}: on"),
            Some((_, why)) => println!("# task {t}: off ({why})"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cdrmunch call`: the call a leg belongs to.
pub async fn call(leg: &str, cfg: ConfigArgs, json: bool) -> anyhow::Result<ExitCode> {
    let key =
        crate::domain::intake::canonical_uuid(leg.trim()).ok_or_else(|| anyhow::anyhow!("'{leg}' is not a uuid"))?;
    let (settings, _) = load_settings(&cfg)?;
    let store = open_repository(&settings).await?;
    let Some(call) = store.call_of(key).await? else {
        eprintln!("cdrmunch: no call knows the leg {leg} (not normalized yet, or purged)");
        return Ok(ExitCode::from(1));
    };
    let text = |u: &[u8; 16]| uuid::Uuid::from_bytes(*u).to_string();
    let leg_name = |l: crate::domain::normalize::Leg| if l == crate::domain::normalize::Leg::A { "A" } else { "B" };
    if json {
        let legs: Vec<_> = call
            .legs
            .iter()
            .map(|(u, l, r)| serde_json::json!({ "uuid": text(u), "leg": leg_name(*l), "role": r.as_str() }))
            .collect();
        let out = serde_json::json!({
            "call_id": text(&call.call_id),
            "caller": call.caller,
            "callee": call.callee,
            "answered": call.answered,
            "talk_seconds": call.talk_seconds,
            "start_epoch": call.start,
            "answer_epoch": call.answer,
            "end_epoch": call.end,
            "hangup_cause": call.hangup_cause,
            "legs": legs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("call {}: {} -> {}", text(&call.call_id), call.caller, call.callee);
        let answered =
            if call.answered { format!("answered, {} s talked", call.talk_seconds) } else { "not answered".into() };
        println!("  {answered}; start {} answer {} end {}; {}", call.start, call.answer, call.end, call.hangup_cause);
        for (u, l, r) in &call.legs {
            println!("  {} {} {}", text(u), leg_name(*l), r.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cdrmunch rerate`.
pub async fn rerate(
    cfg: ConfigArgs,
    deck: &std::path::Path,
    (from, to): (&str, &str),
    org: Option<i64>,
    apply: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Range { settings, from, to, store, raw, ncdr } = range(&cfg, from, to).await?;
    let bar = progress_bar(json);
    let what = super::rerate::Rerate { deck, from, to, org, apply };
    let report = super::rerate::rerate(&store, raw, ncdr, &settings, what, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if apply { "rerated" } else { "dry run: would rerate" };
        println!(
            "{verb} {} of {} billed calls ({}): total difference {}",
            report.calls_changed, report.calls_checked, report.rerate_id, report.total_diff
        );
        for o in &report.orgs {
            println!("  org {}: {} calls, {} -> {} ({})", o.org_id, o.calls, o.old_charge, o.new_charge, o.diff);
        }
        if apply {
            println!("  {} adjustment rows written to the billing feed", report.adjustments_written);
        }
        for f in &report.failures {
            println!("  {f}");
        }
    }
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
