//! rmdistillery's core: one parsed FreeSWITCH channel record into the seed's
//! `<cdr-normalized>` (`data` + `tasks`). Headline fields only for now; each rule says
//! which source wins when several carry the same fact.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::cdr::{self, RawCdr};
use super::intake::canonical_uuid;
use super::mapping::{retail_type, FieldMap, FieldWarning, RETAIL_FIELDS};
use super::orgs::OrgDirectory;
use super::rating::{e164, rate_call, RateDeck};
use super::tasks::{derive_tasks, CallFacts, TaskNode, TaskRules};

/// What the normalizer needs besides the CDR itself.
#[derive(Debug, Clone, Default)]
pub struct NormalizeContext {
    /// Where the raw CDR is stored (`cdr_queue.path`), recorded as `cdr_path`.
    pub cdr_path: String,
    /// When intake received it; the date of last resort when the CDR has no times at all.
    pub received_epoch: i64,
    pub rules: TaskRules,
    /// The rate deck, when one is configured (`rating.deck`).
    pub rates: Option<std::sync::Arc<RateDeck>>,
    /// Country code for national numbers (`rating.default_country_code`, e.g. 44).
    pub default_country_code: Option<String>,
    /// `normalize.field_map`; None: the shipped `config/field-map.conf`.
    pub field_map: Option<std::sync::Arc<FieldMap>>,
    /// `normalize.org_directory`, when configured.
    pub orgs: Option<std::sync::Arc<OrgDirectory>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    A,
    B,
}

#[derive(Debug, Clone)]
pub struct NormalizedCdr {
    pub uuid: String,
    pub uuid_bytes: [u8; 16],
    /// Date partition, `YYYYMMDD` of the call start in UTC.
    pub table_suffix: i64,
    pub org_id: i64,
    pub leg: Leg,
    /// The hour directory `YYYYMMDDTHH00` (UTC, from the call end) the XML is filed under.
    pub hour_dir: String,
    /// `<data>` children in output order; the first three carry `record="true"`.
    pub data: Vec<(String, String)>,
    /// Values the CDR carried that did not fit their fields (left empty): `<warnings>`.
    pub warnings: Vec<FieldWarning>,
    pub tasks: Vec<TaskNode>,
    /// The other legs this one names (its call's links).
    pub peers: Vec<[u8; 16]>,
    /// A half of a `loopback/` pair.
    pub loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("{0}")]
    Parse(#[from] cdr::ParseError),
    #[error("CDR has no call uuid (no <variables><uuid>, no caller_profile uuid)")]
    NoUuid,
    #[error("call uuid '{0}' is not a UUID")]
    BadUuid(String),
}

/// Parses and normalizes a raw CDR document (XML or JSON).
pub fn normalize_document(doc: &[u8], ctx: &NormalizeContext) -> Result<NormalizedCdr, NormalizeError> {
    normalize(&cdr::parse(doc)?, ctx)
}

pub fn normalize(raw: &RawCdr, ctx: &NormalizeContext) -> Result<NormalizedCdr, NormalizeError> {
    let uuid = raw.uuid().ok_or(NormalizeError::NoUuid)?.to_ascii_lowercase();
    let uuid_bytes = canonical_uuid(&uuid).ok_or_else(|| NormalizeError::BadUuid(uuid.clone()))?;
    let t = Timing::of(raw);
    let leg = leg_of(raw);
    let var = |k: &str| raw.var(k).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let super::mapping::Mapped { fields: mapped, mut warnings } =
        ctx.field_map.as_deref().unwrap_or_else(|| default_field_map()).apply(raw);
    let mapped_value = |k: &str| mapped.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let newest = raw.newest_callflow();
    let profile = |f: &str| newest.and_then(|c| c.profile.get(f)).filter(|v| !v.is_empty());
    // The map may rename where these come from; otherwise the newest caller profile, then
    // the variable of the same name — but on a leg whose caller id FreeSWITCH flipped, the
    // profile holds the callee: the number presented is found as `presented` says.
    let flipped = presented(raw, "number");
    let caller = mapped_value("caller_id_number").or(flipped).unwrap_or_else(|| {
        profile("caller_id_number").or_else(|| raw.var("caller_id_number")).unwrap_or("").to_string()
    });
    let destination = mapped_value("destination_number").unwrap_or_else(|| {
        profile("destination_number").or_else(|| raw.var("destination_number")).unwrap_or("").to_string()
    });
    let hangup_cause =
        mapped_value("hangup_cause").unwrap_or_else(|| raw.var("hangup_cause").unwrap_or("").to_string());
    let direction = raw.direction().map(str::to_string).unwrap_or_else(|| {
        // No direction recorded (2007 files, edited fixtures): a leg FreeSWITCH originated
        // carries an originator profile.
        if leg == Leg::B { "outbound" } else { "inbound" }.to_string()
    });
    // The customer: the CDR's own variables win, then the org directory by any mapped field.
    let org = ctx.orgs.as_deref().and_then(|d| {
        d.lookup(|field| match field {
            "caller_id_number" => Some(caller.as_str()),
            "destination_number" => Some(destination.as_str()),
            f => mapped.iter().find(|(n, _)| n == f).map(|(_, v)| v.as_str()),
        })
    });
    // the first of the variables that is a whole number; one that is not is a warning
    let mut org_id = None;
    for k in ["rmOrgID", "rm_org_id"] {
        match var(k).map(|v| v.parse::<i64>().map_err(|_| v)) {
            Some(Ok(id)) if org_id.is_none() => org_id = Some(id),
            Some(Err(v)) => {
                let reason = format!("not a whole number (variable {k})");
                warnings.push(FieldWarning { field: "rmOrgID".into(), value: v, reason });
            }
            _ => {}
        }
    }
    let org_id = org_id.or(org.map(|o| o.org_id)).unwrap_or(0);
    let start_or_received = t.dating_epoch(ctx.received_epoch);
    let end_or_start = if t.end > 0 { t.end } else { start_or_received };
    let recording_path = recording_path(raw, t.answer > 0);
    let other_leg = ["originating_leg_uuid", "originator", "bridge_uuid", "signal_bond", "last_bridge_to"]
        .iter()
        .find_map(|k| raw.var(k).filter(|v| !v.is_empty() && *v != uuid))
        .map(str::to_string);

    let inbound = direction == "inbound";
    let loopback = is_loopback(raw);
    let core: [(&str, String); 13] = [
        ("uuid", uuid.clone()),
        ("TableSuffix", table_suffix(start_or_received).to_string()),
        ("rmOrgID", org_id.to_string()),
        ("leg", if leg == Leg::A { "A" } else { "B" }.to_string()),
        ("direction", direction),
        ("caller_id_number", caller),
        ("destination_number", destination.clone()),
        ("start_epoch", t.start.to_string()),
        ("answer_epoch", t.answer.to_string()),
        ("end_epoch", t.end.to_string()),
        ("duration", t.duration.to_string()),
        ("billsec", t.billsec.to_string()),
        ("hangup_cause", hangup_cause),
    ];
    let mut data: Vec<(String, String)> = core.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let flipped_name = presented(raw, "name").map(|name| ("caller_id_name".to_string(), name));
    let mapped = mapped.into_iter().map(|(k, v)| match &flipped_name {
        Some((field, name)) if k == *field => (k, name.clone()),
        _ => (k, v),
    });
    let mapped: Vec<(String, String)> = mapped.collect();
    data.extend(mapped.iter().filter(|(n, _)| !data.iter().any(|(d, _)| d == n)).cloned().collect::<Vec<_>>());
    let computed = [
        ("other_leg_uuid", other_leg),
        ("recording_path", recording_path.clone()),
        ("cdr_path", Some(ctx.cdr_path.clone()).filter(|p| !p.is_empty())),
        ("rmOriginatorOrgId", Some(org_id.to_string()).filter(|_| org_id != 0)),
    ];
    data.extend(computed.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))));

    // Retail: what the CDR carries wins; otherwise the deck, by longest prefix of the
    // E.164 destination. Quantity is the billed seconds (0 when unanswered).
    // A carried value that does not fit its type is left out with a warning; without a rate
    // that fits, the deck rates the call.
    let mut quantity = t.billsec;
    let mut carried: Vec<(String, String)> = Vec::new();
    for k in RETAIL_FIELDS {
        let Some(v) = var(k) else { continue };
        match retail_type(k).map_or(Ok(v.clone()), |ty| ty.check(&v)) {
            Ok(v) => carried.push((k.to_string(), v)),
            Err(reason) => warnings.push(FieldWarning { field: k.into(), value: v, reason: reason.into() }),
        }
    }
    if ctx.rates.is_none() || carried.iter().any(|(k, _)| k == "retailRate") {
        data.extend(carried);
    } else if let Some(deck) = &ctx.rates {
        let rated = e164(&destination, ctx.default_country_code.as_deref())
            .and_then(|d| deck.lookup(&d))
            .map(|r| rate_call(r, t.billsec));
        if let Some(r) = rated {
            quantity = r.quantity;
            let retail = [
                ("retailConnectCharge", r.rate.connect_charge.to_string()),
                ("retailRate", r.rate.rate.to_string()),
                ("retailRateType", r.rate.rate_type.as_str().to_string()),
                ("retailCountryCode", r.rate.country_code.clone()),
                ("retailCountry", r.rate.country.clone()),
                ("retailPrimaryBandType", r.rate.primary_band_type.clone()),
                ("retailSubBandType", r.rate.sub_band_type.clone()),
                ("retailChargeBand", r.rate.charge_band.clone()),
                ("retailPrefix", r.rate.prefix.clone()),
                ("retailCharge", r.charge.to_string()),
            ];
            data.extend(retail.into_iter().map(|(k, v)| (k.to_string(), v)));
        }
    }
    data.push(("quantity".to_string(), quantity.to_string()));

    let facts = CallFacts {
        a_leg: leg == Leg::A,
        inbound,
        answered: t.answer > 0,
        billsec: t.billsec,
        quantity,
        recording_path,
        notify_email: var("notify_email").or_else(|| org.and_then(|o| o.notify_email.clone())),
        notify_sms: var("notify_sms").or_else(|| org.and_then(|o| o.notify_sms.clone())),
        buffered_recording: var("buffered_recording"),
        sf_org_id: var("sf_org_id").or_else(|| org.and_then(|o| o.sf_org_id.clone())),
        transcription_allowed: org.is_none_or(|o| o.transcription),
        loopback,
    };
    Ok(NormalizedCdr {
        uuid,
        uuid_bytes,
        table_suffix: table_suffix(start_or_received),
        org_id,
        leg,
        hour_dir: hour_dir(end_or_start),
        data,
        warnings,
        tasks: derive_tasks(&facts, &ctx.rules),
        peers: peers_of(raw, &uuid_bytes),
        loopback,
    })
}

/// The shipped field map, parsed once.
fn default_field_map() -> &'static FieldMap {
    static MAP: std::sync::OnceLock<FieldMap> = std::sync::OnceLock::new();
    MAP.get_or_init(FieldMap::default_map)
}

/// Call timing in whole seconds since the epoch (0 = did not happen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Timing {
    start: i64,
    answer: i64,
    end: i64,
    duration: i64,
    billsec: i64,
}

impl Timing {
    /// Variables win (FreeSWITCH computed them from the newest profile); when they are
    /// missing (2007-era files) the same rules are applied to `<times>`: start = the first
    /// profile's creation, answer = the first answer, end = the last hangup.
    ///
    /// When the result contradicts itself (answer or end before start, answer after end, a
    /// negative length, billsec over duration), the one rule is: the `<times>` of the
    /// callflows decide if they are consistent; if they are not either, lengths are clamped
    /// to 0 ≤ billsec ≤ duration and an answer outside the call counts as no answer.
    fn of(raw: &RawCdr) -> Timing {
        let from_vars = Self::read(raw, true);
        if from_vars.consistent() {
            return from_vars;
        }
        let from_times = Self::read(raw, false);
        if from_times.consistent() && from_times.start > 0 {
            return from_times;
        }
        from_vars.clamped()
    }

    /// The start, else the end, else when it was received.
    fn dating_epoch(&self, received_epoch: i64) -> i64 {
        if self.start > 0 {
            self.start
        } else if self.end > 0 {
            self.end
        } else {
            received_epoch
        }
    }

    fn consistent(&self) -> bool {
        let Timing { start, answer, end, duration, billsec } = *self;
        duration >= 0
            && billsec >= 0
            && (duration == 0 || billsec <= duration)
            && !(start > 0 && end > 0 && end < start)
            && !(answer > 0 && start > 0 && answer < start)
            && !(answer > 0 && end > 0 && answer > end)
    }

    fn clamped(self) -> Timing {
        let Timing { start, mut answer, end, duration, billsec } = self;
        if answer > 0 && ((start > 0 && answer < start) || (end > 0 && answer > end)) {
            answer = 0;
        }
        let duration = duration.max(0);
        let billsec = if answer == 0 { 0 } else { billsec.clamp(0, if duration > 0 { duration } else { i64::MAX }) };
        Timing { start, answer, end, duration, billsec }
    }

    fn read(raw: &RawCdr, use_vars: bool) -> Timing {
        let var = |k: &str| raw.var(k).filter(|_| use_vars).and_then(|v| v.trim().parse::<i64>().ok());
        let times = |name: &'static str| raw.callflows.iter().filter_map(move |c| c.time(name)).filter(|&us| us > 0);
        let secs = |us: i64| us / 1_000_000;
        let start =
            var("start_epoch").filter(|&v| v > 0).or_else(|| times("created_time").min().map(secs)).unwrap_or(0);
        let answer = var("answer_epoch").or_else(|| times("answered_time").min().map(secs)).unwrap_or(0);
        let end = var("end_epoch").filter(|&v| v > 0).or_else(|| times("hangup_time").max().map(secs)).unwrap_or(0);
        let duration = var("duration").unwrap_or(if end >= start && start > 0 { end - start } else { 0 });
        let billsec = var("billsec").unwrap_or(if answer > 0 && end >= answer { end - answer } else { 0 });
        Timing { start, answer, end, duration, billsec }
    }
}

/// The recording target: FusionPBX-style `record_path`/`record_name`, else the file given
/// to `record_session` in the app log — when the recording is known to have something in it:
/// a `record_seconds`/`record_ms`/`record_samples` variable > 0, or, for FreeSWITCH before
/// those variables existed (2008-era CDRs carry none of them), an answered call.
fn recording_path(raw: &RawCdr, answered: bool) -> Option<String> {
    if let (Some(dir), Some(name)) = (raw.var("record_path"), raw.var("record_name")) {
        return Some(format!("{}/{}", dir.trim_end_matches('/'), name));
    }
    let stats: Vec<f64> = ["record_seconds", "record_ms", "record_samples"]
        .iter()
        .filter_map(|k| raw.var(k).and_then(|v| v.trim().parse::<f64>().ok()))
        .collect();
    let recorded = if stats.is_empty() { answered } else { stats.iter().any(|n| *n > 0.0) };
    if !recorded {
        return None;
    }
    raw.app_log
        .iter()
        .find(|a| a.app_name == "record_session")
        .and_then(|a| a.app_data.split_whitespace().next())
        .map(str::to_string)
}

fn utc(epoch: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(epoch, 0).unwrap_or_default()
}

/// The epoch a CDR is dated by: its `TableSuffix`, and the day directory intake files the
/// raw CDR under. One rule for both, so a contradictory call cannot land on two dates.
pub fn dating_epoch(raw: &RawCdr, received_epoch: i64) -> i64 {
    Timing::of(raw).dating_epoch(received_epoch)
}

pub fn table_suffix(epoch: i64) -> i64 {
    let d = utc(epoch);
    (d.year() as i64) * 10_000 + (d.month() as i64) * 100 + d.day() as i64
}

pub fn hour_dir(epoch: i64) -> String {
    let d = utc(epoch);
    format!("{:04}{:02}{:02}T{:02}00", d.year(), d.month(), d.day(), d.hour())
}

impl NormalizedCdr {
    /// Storage key `{YYYYMMDDTHH00}/{uuid}.xml`, deterministic so a replay overwrites.
    pub fn storage_key(&self) -> String {
        format!("{}/{}.xml", self.hour_dir, self.uuid)
    }

    /// The seed's `<cdr-normalized>` document.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<cdr-normalized>\n  <data>\n");
        for (i, (name, value)) in self.data.iter().enumerate() {
            let record = if i < 3 { " record=\"true\"" } else { "" };
            let _ = writeln!(out, "    <{name}{record}>{}</{name}>", xml_escape(value));
        }
        out.push_str("  </data>\n");
        if !self.warnings.is_empty() {
            out.push_str("  <warnings>\n");
            for w in &self.warnings {
                let (f, v, r) = (xml_escape(&w.field), xml_escape(&w.value), xml_escape(&w.reason));
                let _ = writeln!(out, "    <warning field=\"{f}\" value=\"{v}\" reason=\"{r}\"/>");
            }
            out.push_str("  </warnings>\n");
        }
        out.push_str("  <tasks>\n");
        for task in &self.tasks {
            if task.params.is_empty() {
                let _ = writeln!(out, "    <task type=\"{}\"/>", task.task_type);
                continue;
            }
            let _ = writeln!(out, "    <task type=\"{}\">", task.task_type);
            for (k, v) in &task.params {
                let _ = writeln!(out, "      <{k}>{}</{k}>", xml_escape(v));
            }
            out.push_str("    </task>\n");
        }
        out.push_str("  </tasks>\n</cdr-normalized>\n");
        out
    }

    /// What this leg contributes to its call.
    pub fn leg_facts(&self) -> crate::domain::calls::LegFacts {
        let text = |k: &str| self.data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let int = |k: &str| text(k).parse::<i64>().unwrap_or(0);
        crate::domain::calls::LegFacts {
            uuid: self.uuid_bytes,
            peers: self.peers.clone(),
            leg: self.leg,
            loopback: self.loopback,
            start: int("start_epoch"),
            answer: int("answer_epoch"),
            end: int("end_epoch"),
            billsec: int("billsec"),
            caller: text("caller_id_number"),
            callee: text("destination_number"),
            hangup_cause: text("hangup_cause"),
        }
    }

    /// `(task_type, node_index)` for the `tasks` rows: node_index is the position among `<task>` nodes.
    pub fn task_rows(&self) -> Vec<(crate::domain::tasks::TaskType, u32)> {
        self.tasks.iter().enumerate().map(|(i, t)| (t.task_type, i as u32)).collect()
    }
}

/// Escapes text for element content and attribute values; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // a raw CR would come back as LF (XML end-of-line handling): keep it as a reference
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

mod legs;
use legs::peers_of;
pub use legs::{is_loopback, leg_of, presented};

#[cfg(test)]
mod tests;
