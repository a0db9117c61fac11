//! `cdrmunch rerate`: the billed calls of a range rated again against a new deck. A dry run
//! changes nothing and says, per org, how many calls change and by how much (money exact to
//! a millionth). `--apply` rewrites their normalized CDRs (data only: their tasks stay as
//! they were, so nothing else runs again) and adds one adjustment row per changed call to
//! the billing feed, keyed by uuid + rerate id: the same rerate applied twice adds nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ops::OpsError;
use crate::config::Settings;
use crate::domain::mapping::RETAIL_FIELDS;
use crate::domain::ncdr::{NormalizedDoc, TaskDoc};
use crate::domain::normalize::{normalize_document, NormalizeContext};
use crate::domain::rating::Micros;
use crate::domain::tasks::{TaskNode, TaskType};
use crate::handlers::billing::BillingFeeder;
use crate::storage::BlobStore;
use crate::store::Store;

/// The fields a rating sets besides the retail ones: a call whose values differ has changed.
/// How often rerating rewrote a normalized CDR: part of an adjustment's key, so going back to
/// a rating the call had before (X → Y → X → Y) is a new adjustment each time.
const REWRITES: &str = "rerated";

const RATED: [&str; 4] = ["retailPrefix", "retailCharge", "quantity", "billingEventType"];

#[derive(Debug, Default, Serialize)]
pub struct OrgChange {
    pub org_id: i64,
    pub calls: u64,
    pub old_charge: String,
    pub new_charge: String,
    pub diff: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RerateReport {
    /// `rerate-` and the first 16 hex digits of the deck's MD5: the adjustments' key.
    pub rerate_id: String,
    pub applied: bool,
    pub calls_checked: u64,
    pub calls_changed: u64,
    pub adjustments_written: u64,
    pub orgs: Vec<OrgChange>,
    pub total_diff: String,
    pub failures: Vec<String>,
}

/// What to rerate.
pub struct Rerate<'a> {
    pub deck: &'a std::path::Path,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub org: Option<i64>,
    pub apply: bool,
}

/// One call rated again: its org, old and new charge, and (when changed) the new record,
/// its document, and the tasks the old document holds.
struct Rerated {
    org: i64,
    old: Micros,
    new: Micros,
    changed: Option<(crate::domain::normalize::NormalizedCdr, NormalizedDoc, Vec<TaskDoc>)>,
    /// A short digest of the rating the call had and of its rewrites: with the deck, the key
    /// of its adjustment.
    from: String,
    rewrites: u64,
}

pub async fn rerate(
    store: &Store,
    raw: Arc<dyn BlobStore>,
    ncdr: Arc<dyn BlobStore>,
    settings: &Settings,
    r: Rerate<'_>,
    mut progress: impl FnMut(u64),
) -> Result<RerateReport, OpsError> {
    if r.to <= r.from {
        return Err(OpsError::Usage("--to must be after --from".into()));
    }
    let bytes = std::fs::read(r.deck).map_err(|e| OpsError::Usage(format!("--deck {}: {e}", r.deck.display())))?;
    let mut with_deck = settings.clone();
    with_deck.rating.deck = Some(r.deck.to_path_buf());
    let base = crate::app::normalize_context(&with_deck).map_err(|e| OpsError::Usage(e.to_string()))?;
    let feeder = match r.apply {
        true => Some(BillingFeeder::connect(settings).await.map_err(OpsError::Billing)?),
        false => None,
    };
    let rerate_id = format!("rerate-{}", &crate::storage::md5_hex(&bytes)[..16]);
    let mut report = RerateReport { rerate_id: rerate_id.clone(), applied: r.apply, ..Default::default() };
    let mut by_org: BTreeMap<i64, (u64, Micros, Micros)> = BTreeMap::new();
    let mut after = 0;
    loop {
        let batch = store.rerate_candidates(r.from.timestamp(), r.to.timestamp(), r.org, after, 200).await?;
        let Some(last) = batch.last() else { break };
        after = last.0.id;
        for (q, ncdr_path) in &batch {
            report.calls_checked += 1;
            progress(report.calls_checked);
            let ctx = NormalizeContext { cdr_path: q.path.clone(), received_epoch: q.create_time, ..base.clone() };
            let call = match rate_again(&*raw, &*ncdr, q, ncdr_path, &ctx).await {
                Ok(call) => call,
                Err(why) => {
                    report.failures.push(format!("cdr_queue {}: {why}", q.id));
                    continue;
                }
            };
            let Some((new_cdr, new_doc, old_tasks)) = call.changed else { continue };
            report.calls_changed += 1;
            let line = by_org.entry(call.org).or_default();
            *line = (line.0 + 1, Micros(line.1 .0 + call.old.0), Micros(line.2 .0 + call.new.0));
            let Some(feeder) = &feeder else { continue };
            // The adjustment first: interrupted before the document is rewritten, a rerun
            // finds the call still changed and its adjustment there already. Keyed by the
            // deck and the rating it replaces, so rating back to an earlier deck is one too.
            let mut node = new_doc.tasks.iter().find(|t| t.task_type == "billing").cloned().unwrap_or(TaskDoc {
                task_type: "billing".into(),
                params: vec![("quantity".into(), new_doc.field("quantity").unwrap_or_default())],
            });
            node.params.retain(|(k, _)| k != "billingEventType");
            node.params.push(("billingEventType".into(), "rerate".into()));
            let key = format!("{rerate_id}-{}", call.from);
            let (added, _) =
                feeder.feed(&new_doc, &node, Some(&key)).await.map_err(|e| OpsError::Billing(e.to_string()))?;
            report.adjustments_written += added as u64;
            // the document keeps its tasks (their rows point into them); only the data is new
            let mut rewritten = new_cdr;
            rewritten.tasks = old_tasks.iter().filter_map(task_node).collect();
            rewritten.data.push((REWRITES.into(), (call.rewrites + 1).to_string()));
            ncdr.put(&rewritten.storage_key(), rewritten.to_xml().as_bytes()).await?;
        }
    }
    let mut total = 0i64;
    for (org_id, (calls, old, new)) in by_org {
        total += new.0 - old.0;
        let (old_charge, new_charge, diff) = (old.to_string(), new.to_string(), Micros(new.0 - old.0).to_string());
        report.orgs.push(OrgChange { org_id, calls, old_charge, new_charge, diff });
    }
    report.total_diff = Micros(total).to_string();
    Ok(report)
}

/// The call rated with `ctx`'s deck; `changed` when a rated field differs.
async fn rate_again(
    raw: &dyn BlobStore,
    ncdr: &dyn BlobStore,
    q: &crate::store::QueuedCdr,
    ncdr_path: &str,
    ctx: &NormalizeContext,
) -> Result<Rerated, String> {
    let old = ncdr.get(ncdr_path).await.map_err(|e| format!("reading {ncdr_path}: {e}"))?;
    let old = NormalizedDoc::parse(&old).map_err(|e| e.to_string())?;
    let doc = raw.get(&q.path).await.map_err(|e| format!("reading {}: {e}", q.path))?;
    let new = normalize_document(&doc, ctx).map_err(|e| e.to_string())?;
    if new.uuid_bytes != q.uuid {
        return Err(format!("raw CDR {} holds call uuid {}, not the queued one", q.path, new.uuid));
    }
    let new_doc = NormalizedDoc::parse(new.to_xml().as_bytes()).map_err(|e| e.to_string())?;
    if old.field("retailCharge").is_some() && new_doc.field("retailCharge").is_none() {
        // a billed call is never rated to nothing
        let to = new_doc.field("destination_number").unwrap_or_default();
        return Err(format!("the deck has no rate for {to}; the call keeps its rating"));
    }
    let charge = |d: &NormalizedDoc| d.field("retailCharge").and_then(|c| Micros::parse(&c)).unwrap_or_default();
    let org = old.field("rmOrgID").and_then(|o| o.parse().ok()).unwrap_or(0);
    let rated: Vec<&str> = RETAIL_FIELDS.iter().copied().chain(RATED).collect();
    let changed = rated.iter().any(|f| old.field(f) != new_doc.field(f));
    let was: Vec<String> = rated.iter().chain(&[REWRITES]).map(|f| old.field(f).unwrap_or_default()).collect();
    let from = crate::storage::md5_hex(was.join("\u{1f}").as_bytes())[..8].to_string();
    let (old_charge, new_charge) = (charge(&old), charge(&new_doc));
    let rewrites = old.field(REWRITES).and_then(|n| n.parse().ok()).unwrap_or(0);
    let changed = changed.then_some((new, new_doc, old.tasks));
    Ok(Rerated { org, old: old_charge, new: new_charge, changed, from, rewrites })
}

fn task_node(t: &TaskDoc) -> Option<TaskNode> {
    Some(TaskNode { task_type: t.task_type.parse::<TaskType>().ok()?, params: t.params.clone() })
}
