//! rmdistillery's core: one parsed FreeSWITCH channel record into the seed's
//! `<cdr-normalized>` (`data` + `tasks`). Headline fields only for now; each rule says
//! which source wins when several carry the same fact.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::cdr::{self, RawCdr};
use super::intake::canonical_uuid;
use super::mapping::FieldMap;
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

/// The retail fields a CDR may carry itself (set by the dialplan or an upstream rater): kept
/// as they are, and the deck is not consulted.
const RETAIL_VARIABLES: [&str; 8] = [
    "retailConnectCharge",
    "retailRate",
    "retailRateType",
    "retailCountryCode",
    "retailCountry",
    "retailPrimaryBandType",
    "retailSubBandType",
    "retailChargeBand",
];

#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub tasks: Vec<TaskNode>,
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
    let mapped = ctx.field_map.as_deref().unwrap_or_else(|| default_field_map()).apply(raw);
    let mapped_value = |k: &str| mapped.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let newest = raw.newest_callflow();
    let profile = |f: &str| newest.and_then(|c| c.profile.get(f)).filter(|v| !v.is_empty());
    // The map may rename where these come from; otherwise the newest caller profile, then
    // the variable of the same name.
    let caller = mapped_value("caller_id_number").unwrap_or_else(|| {
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
    let org_id = ["rmOrgID", "rm_org_id"]
        .iter()
        .find_map(|k| raw.var(k).and_then(|v| v.trim().parse::<i64>().ok()))
        .or(org.map(|o| o.org_id))
        .unwrap_or(0);
    let start_or_received = if t.start > 0 {
        t.start
    } else if t.end > 0 {
        t.end
    } else {
        ctx.received_epoch
    };
    let end_or_start = if t.end > 0 { t.end } else { start_or_received };
    let recording_path = recording_path(raw, t.answer > 0);
    let other_leg = ["originating_leg_uuid", "originator", "bridge_uuid", "signal_bond", "last_bridge_to"]
        .iter()
        .find_map(|k| raw.var(k).filter(|v| !v.is_empty() && *v != uuid))
        .map(str::to_string);

    let inbound = direction == "inbound";
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
    let mut quantity = t.billsec;
    let carried: Vec<(String, String)> =
        RETAIL_VARIABLES.iter().filter_map(|k| var(k).map(|v| (k.to_string(), v))).collect();
    if !carried.is_empty() {
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
    };
    Ok(NormalizedCdr {
        uuid,
        uuid_bytes,
        table_suffix: table_suffix(start_or_received),
        org_id,
        leg,
        hour_dir: hour_dir(end_or_start),
        data,
        tasks: derive_tasks(&facts, &ctx.rules),
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

/// B-leg markers (FORMAT.md §5): an originator caller profile or the variables that
/// FreeSWITCH sets on legs it originated for a bridge.
pub fn leg_of(raw: &RawCdr) -> Leg {
    let has_originator = raw.callflows.iter().any(|c| !c.profile.originator.is_empty());
    let var_marker = ["originator", "originating_leg_uuid"].iter().any(|k| raw.var(k).is_some_and(|v| !v.is_empty()));
    if has_originator || var_marker {
        Leg::B
    } else {
        Leg::A
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
        out.push_str("  </data>\n  <tasks>\n");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tasks::TaskType;

    fn xml(vars: &str, callflow: &str) -> Vec<u8> {
        format!("<?xml version=\"1.0\"?>\n<cdr><variables>{vars}</variables>{callflow}</cdr>").into_bytes()
    }

    #[test]
    fn headline_from_variables_and_profile() {
        let doc = xml(
            "<uuid>0D2E4C6A-1111-2222-3333-444455556666</uuid><direction>inbound</direction>\
             <start_epoch>1700000000</start_epoch><answer_epoch>1700000005</answer_epoch>\
             <end_epoch>1700000065</end_epoch><billsec>60</billsec><duration>65</duration>\
             <hangup_cause>NORMAL_CLEARING</hangup_cause><rmOrgID>42</rmOrgID>",
            "<callflow><caller_profile><caller_id_number>%2B441234</caller_id_number>\
             <destination_number>+442071234567</destination_number></caller_profile></callflow>",
        );
        let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
        assert_eq!(n.uuid, "0d2e4c6a-1111-2222-3333-444455556666");
        assert_eq!(n.table_suffix, 20231114);
        assert_eq!(n.hour_dir, "20231114T2200");
        assert_eq!(n.org_id, 42);
        // profile fields are not percent-encoded: "%2B" stays as written there
        let get = |k: &str| n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("caller_id_number"), Some("%2B441234"));
        assert_eq!(get("destination_number"), Some("+442071234567"));
        assert_eq!(get("billsec"), Some("60"));
        let rows: Vec<_> = n.task_rows().into_iter().map(|(t, i)| format!("{t}@{i}")).collect();
        assert_eq!(rows, ["billing@0", "calllog@1"], "no Salesforce org: no CDR2SFAPI");
        let x = n.to_xml();
        assert!(x.contains("<uuid record=\"true\">0d2e4c6a-1111-2222-3333-444455556666</uuid>"), "{x}");
        assert!(x.contains("<task type=\"billing\">\n      <quantity>60</quantity>"), "{x}");
    }

    #[test]
    fn times_fill_in_for_missing_variables() {
        let doc = xml(
            "<hangup_cause>UNALLOCATED</hangup_cause>",
            "<callflow><caller_profile><uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid></caller_profile>\
             <times><created_time>1181000000000000</created_time><answered_time>1181000002500000</answered_time>\
             <hangup_time>1181000071000000</hangup_time></times></callflow>",
        );
        let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
        let get = |k: &str| n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("start_epoch"), "1181000000");
        assert_eq!(get("answer_epoch"), "1181000002");
        assert_eq!(get("billsec"), "69");
        assert_eq!(get("duration"), "71");
    }

    #[test]
    fn contradicting_timings_follow_one_rule() {
        let get = |n: &NormalizedCdr, k: &str| n.data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        let times = "<callflow><caller_profile><uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid></caller_profile>\
             <times><created_time>1700000000000000</created_time><answered_time>1700000010000000</answered_time>\
             <hangup_time>1700000070000000</hangup_time></times></callflow>";
        // billsec larger than duration: the <times> are consistent and decide
        let doc = xml(
            "<start_epoch>1700000000</start_epoch><answer_epoch>1700000010</answer_epoch>\
             <end_epoch>1700000070</end_epoch><duration>70</duration><billsec>700</billsec>",
            times,
        );
        let n = normalize_document(&doc, &Default::default()).unwrap();
        assert_eq!((get(&n, "duration"), get(&n, "billsec")), ("70".into(), "60".into()));
        // an answer after the end and no <times>: no answer, nothing billed
        let doc = xml(
            "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><start_epoch>1700000000</start_epoch>\
             <answer_epoch>1700000100</answer_epoch><end_epoch>1700000070</end_epoch><duration>70</duration>\
             <billsec>-30</billsec>",
            "",
        );
        let n = normalize_document(&doc, &Default::default()).unwrap();
        assert_eq!(
            (get(&n, "answer_epoch"), get(&n, "billsec"), get(&n, "duration")),
            ("0".into(), "0".into(), "70".into())
        );
        assert!(n.tasks.iter().all(|t| t.task_type != TaskType::Billing), "not billed");
    }

    #[test]
    fn missing_or_bad_uuid_is_a_permanent_error() {
        let none = xml("<hangup_cause>X</hangup_cause>", "");
        assert_eq!(normalize_document(&none, &Default::default()).unwrap_err(), NormalizeError::NoUuid);
        let bad = xml("<uuid>not-a-uuid</uuid>", "");
        assert!(matches!(normalize_document(&bad, &Default::default()), Err(NormalizeError::BadUuid(_))));
    }

    #[test]
    fn the_deck_rates_answered_calls_unless_the_cdr_carries_retail_values() {
        let deck = "prefix,country_code,country,primary_band_type,sub_band_type,charge_band,connect_charge,rate,rate_type,first_increment,next_increment\n\
                    44,GB,United Kingdom,International,Geographic,A,0.01,0.02,perMinute,60,60\n\
                    4420,GB,United Kingdom,National,London,L,0,0.006,perMinute,30,6\n";
        let ctx = NormalizeContext {
            rates: Some(std::sync::Arc::new(RateDeck::parse(deck).unwrap())),
            default_country_code: Some("44".into()),
            ..Default::default()
        };
        let call = |dest: &str, billsec: u32, extra: &str| {
            let answer = if billsec > 0 { 1700000005 } else { 0 };
            xml(
                &format!(
                    "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><direction>outbound</direction>\
                     <start_epoch>1700000000</start_epoch><answer_epoch>{answer}</answer_epoch>\
                     <end_epoch>1700000100</end_epoch><billsec>{billsec}</billsec>{extra}"
                ),
                &format!("<callflow><caller_profile><destination_number>{dest}</destination_number></caller_profile></callflow>"),
            )
        };
        let get = |n: &NormalizedCdr, k: &str| n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        // London, national format, 31 s: 30/6 -> 36 s at 0.006/min = 0.0036
        let n = normalize_document(&call("020 7123 4567", 31, ""), &ctx).unwrap();
        assert_eq!(get(&n, "retailPrefix").as_deref(), Some("4420"));
        assert_eq!(get(&n, "retailRateType").as_deref(), Some("perMinute"));
        assert_eq!(get(&n, "quantity").as_deref(), Some("36"));
        assert_eq!(get(&n, "retailCharge").as_deref(), Some("0.0036"));
        assert_eq!(n.tasks[0].params, vec![("quantity".to_string(), "36".to_string())], "billing bills the increments");
        // unanswered: rated but nothing billed, no billing task
        let n = normalize_document(&call("+441312345678", 0, ""), &ctx).unwrap();
        assert_eq!((get(&n, "quantity").as_deref(), get(&n, "retailCharge").as_deref()), (Some("0"), Some("0")));
        assert!(n.tasks.iter().all(|t| t.task_type != TaskType::Billing));
        // the CDR's own retail values win over the deck
        let n = normalize_document(
            &call("+441312345678", 60, "<retailRate>0.5</retailRate><retailRateType>perCall</retailRateType>"),
            &ctx,
        )
        .unwrap();
        assert_eq!(get(&n, "retailRate").as_deref(), Some("0.5"));
        assert_eq!(get(&n, "retailPrefix"), None);
        assert_eq!(get(&n, "quantity").as_deref(), Some("60"));
        // no deck: no retail fields, quantity is billsec
        let n = normalize_document(&call("+441312345678", 61, ""), &NormalizeContext::default()).unwrap();
        assert_eq!((get(&n, "retailRate"), get(&n, "quantity").as_deref()), (None, Some("61")));
    }

    #[test]
    fn a_field_map_and_the_org_directory_drive_the_record_and_its_tasks() {
        let map = FieldMap::parse(
            "caller_id_number = number: var:pbx_caller\ndomain = text: var:pbx_domain\ngateway = text: var:trunk",
        )
        .unwrap();
        let orgs = OrgDirectory::parse(
            "key,org_id,sf_org_id,notify_email,notify_sms,transcription\n\
             domain:acme.example,12,00D000000000ACM,alerts@acme.example,,no\n",
        )
        .unwrap();
        let ctx = NormalizeContext {
            field_map: Some(std::sync::Arc::new(map)),
            orgs: Some(std::sync::Arc::new(orgs)),
            ..Default::default()
        };
        let doc = xml(
            "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><direction>inbound</direction>\
             <start_epoch>1700000000</start_epoch><answer_epoch>0</answer_epoch><end_epoch>1700000020</end_epoch>\
             <pbx_caller>%2B44 7700 900123</pbx_caller><pbx_domain>ACME.example</pbx_domain><trunk>carrier-a</trunk>\
             <record_path>/rec</record_path><record_name>m.wav</record_name>",
            "<callflow><caller_profile><caller_id_number>ignored</caller_id_number></caller_profile></callflow>",
        );
        let n = normalize_document(&doc, &ctx).unwrap();
        let get = |k: &str| n.data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("caller_id_number").as_deref(), Some("+447700900123"), "the map renames the source");
        assert_eq!(get("gateway").as_deref(), Some("carrier-a"));
        assert_eq!(get("sip_call_id"), None, "only the configured map applies");
        assert_eq!((n.org_id, get("rmOriginatorOrgId").as_deref()), (12, Some("12")));
        let types: Vec<_> = n.tasks.iter().map(|t| t.task_type).collect();
        // missed call of an org with Salesforce and an alert address; transcription off for it
        assert_eq!(types, [TaskType::Calllog, TaskType::Cdr2SfApi, TaskType::RecordingDelivery, TaskType::Emailer]);
        assert_eq!(n.tasks[1].params, vec![("sf_org_id".to_string(), "00D000000000ACM".to_string())]);
        assert_eq!(n.tasks[3].params, vec![("to".to_string(), "alerts@acme.example".to_string())]);
    }

    #[test]
    fn escaping_keeps_the_document_well_formed() {
        assert_eq!(xml_escape("a<b>&\"c\u{1}"), "a&lt;b&gt;&amp;&quot;c");
    }
}
