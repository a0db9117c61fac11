//! `cdrmunch gen`: realistic, varied FreeSWITCH CDRs (mod_xml_cdr XML or mod_json_cdr JSON)
//! for benches and load tests: A- and B-legs, answered and not, a spread of hangup causes,
//! durations and numbers, some recorded, values percent-encoded as FreeSWITCH does.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::normalize::xml_escape;
use crate::domain::percent::fs_url_encode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    Xml,
    Json,
}

/// One generated channel record.
pub struct GeneratedCdr {
    pub uuid: String,
    pub a_leg: bool,
    pub document: String,
}

const CAUSES: [(&str, u32, bool); 6] = [
    ("NORMAL_CLEARING", 16, true),
    ("ORIGINATOR_CANCEL", 487, false),
    ("NO_ANSWER", 19, false),
    ("USER_BUSY", 17, false),
    ("CALL_REJECTED", 21, false),
    ("UNALLOCATED_NUMBER", 1, false),
];

pub struct Generator {
    rng: StdRng,
    format: GenFormat,
}

impl Generator {
    pub fn new(seed: u64, format: GenFormat) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), format }
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid().to_string()
    }

    fn e164(&mut self) -> String {
        let cc = ["44", "1", "49", "33", "61", "855"][self.rng.random_range(0..6)];
        format!("+{cc}{}", self.rng.random_range(1_000_000_000u64..9_999_999_999))
    }

    pub fn next_cdr(&mut self) -> GeneratedCdr {
        let uuid = self.uuid();
        let other = self.uuid();
        let a_leg = self.rng.random_bool(0.8);
        let (cause, q850, normal) =
            CAUSES[if self.rng.random_bool(0.7) { 0 } else { self.rng.random_range(1..CAUSES.len()) }];
        let answered = normal && self.rng.random_bool(0.95);
        let start = 1_700_000_000 + self.rng.random_range(0..60 * 86_400i64);
        let ring = self.rng.random_range(1..30i64);
        let talk = if answered { self.rng.random_range(0..900i64) } else { 0 };
        let answer = if answered { start + ring } else { 0 };
        let end = start + ring + talk;
        let caller = self.e164();
        let dest = self.e164();
        let recorded = answered && a_leg && self.rng.random_bool(0.15);
        let org = self.rng.random_range(1000..1100);
        let host = format!("fs{:02}.example.net", self.rng.random_range(1..5));
        let call_id = format!("{}@{}", self.uuid(), host);
        let direction = if a_leg { "inbound" } else { "outbound" };
        let mut vars: Vec<(&str, String)> = vec![
            ("direction", direction.into()),
            ("uuid", uuid.clone()),
            ("session_id", self.rng.random_range(1..1_000_000u32).to_string()),
            ("sip_from_user", caller.clone()),
            ("sip_from_uri", format!("{caller}@{host}")),
            ("sip_to_user", dest.clone()),
            ("sip_call_id", call_id),
            ("sip_user_agent", "Yealink SIP-T46S 66.86.0.15".into()),
            ("caller_id", format!("\"{caller}\" <{caller}>")),
            ("channel_name", format!("sofia/external/{caller}@{host}")),
            ("read_codec", "PCMA".into()),
            ("write_codec", "PCMA".into()),
            ("rmOrgID", org.to_string()),
            ("hangup_cause", cause.into()),
            ("hangup_cause_q850", q850.to_string()),
            ("endpoint_disposition", if answered { "ANSWER" } else { "EARLY MEDIA" }.into()),
            ("start_epoch", start.to_string()),
            ("start_uepoch", format!("{start}{:06}", self.rng.random_range(0..1_000_000))),
            ("answer_epoch", answer.to_string()),
            ("end_epoch", end.to_string()),
            ("start_stamp", stamp(start)),
            ("end_stamp", stamp(end)),
            ("duration", (end - start).to_string()),
            ("billsec", talk.to_string()),
            ("answersec", if answered { ring.to_string() } else { "0".into() }),
            ("RECORD_STEREO", "true".into()),
        ];
        if answered {
            vars.push(("answer_stamp", stamp(answer)));
            vars.push(("bridge_uuid", other.clone()));
            vars.push(("last_bridge_to", other.clone()));
        }
        if !a_leg {
            vars.push(("originator", other.clone()));
            vars.push(("originating_leg_uuid", other.clone()));
        }
        if recorded {
            vars.push(("record_seconds", talk.to_string()));
            vars.push(("record_ms", (talk * 1000).to_string()));
        }
        let rec_path = format!("/var/lib/freeswitch/recordings/{uuid}.wav");
        let times = [
            ("created_time", start * 1_000_000),
            ("profile_created_time", start * 1_000_000),
            ("progress_time", (start + 1) * 1_000_000),
            ("answered_time", answer * 1_000_000),
            ("hangup_time", end * 1_000_000),
            ("transfer_time", 0),
        ];
        let document = match self.format {
            GenFormat::Xml => xml_doc(
                &vars,
                &times,
                &caller,
                &dest,
                &uuid,
                &other,
                a_leg,
                recorded.then_some(rec_path.as_str()),
                &host,
            ),
            GenFormat::Json => {
                json_doc(&vars, &times, &caller, &dest, &uuid, recorded.then_some(rec_path.as_str()), &host)
            }
        };
        GeneratedCdr { uuid, a_leg, document }
    }
}

fn stamp(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default().format("%Y-%m-%d %H:%M:%S").to_string()
}

#[allow(clippy::too_many_arguments)]
fn xml_doc(
    vars: &[(&str, String)],
    times: &[(&str, i64)],
    caller: &str,
    dest: &str,
    uuid: &str,
    other: &str,
    a_leg: bool,
    rec: Option<&str>,
    host: &str,
) -> String {
    let mut x = String::with_capacity(6000);
    let _ = writeln!(
        x,
        "<?xml version=\"1.0\"?>\n<cdr core-uuid=\"6d1e3c52-2a0b-4c8f-9a51-0c8e2f0b7a11\" switchname=\"{host}\">"
    );
    let dir = vars[0].1.as_str();
    let _ = writeln!(x, "  <channel_data>\n    <state>CS_REPORTING</state>\n    <direction>{dir}</direction>\n    <state_number>11</state_number>\n  </channel_data>");
    x.push_str("  <variables>\n");
    for (k, v) in vars {
        let _ = writeln!(x, "    <{k}>{}</{k}>", fs_url_encode(v.as_bytes()));
    }
    x.push_str("  </variables>\n  <app_log>\n");
    if let Some(r) = rec {
        let _ =
            writeln!(x, "    <application app_name=\"record_session\" app_data=\"{}\"></application>", xml_escape(r));
    }
    let _ = writeln!(
        x,
        "    <application app_name=\"bridge\" app_data=\"sofia/gateway/carrier/{}\"></application>\n  </app_log>",
        xml_escape(dest)
    );
    let _ = writeln!(x, "  <callflow dialplan=\"XML\" unique-id=\"{uuid}\" profile_index=\"1\">\n    <extension name=\"outbound\" number=\"{}\"></extension>\n    <caller_profile>", xml_escape(dest));
    for (k, v) in [
        ("username", caller),
        ("dialplan", "XML"),
        ("caller_id_name", caller),
        ("caller_id_number", caller),
        ("destination_number", dest),
        ("uuid", uuid),
        ("context", "public"),
    ] {
        let _ = writeln!(x, "      <{k}>{}</{k}>", xml_escape(v));
    }
    if !a_leg {
        let _ = writeln!(x, "      <originator>\n        <originator_caller_profile>\n          <caller_id_number>{}</caller_id_number>\n          <uuid>{other}</uuid>\n        </originator_caller_profile>\n      </originator>", xml_escape(caller));
    }
    x.push_str("    </caller_profile>\n    <times>\n");
    for (k, v) in times {
        let _ = writeln!(x, "      <{k}>{v}</{k}>");
    }
    x.push_str("    </times>\n  </callflow>\n</cdr>\n");
    x
}

fn json_doc(
    vars: &[(&str, String)],
    times: &[(&str, i64)],
    caller: &str,
    dest: &str,
    uuid: &str,
    rec: Option<&str>,
    host: &str,
) -> String {
    let variables: serde_json::Map<String, serde_json::Value> =
        vars.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(fs_url_encode(v.as_bytes())))).collect();
    let times: serde_json::Map<String, serde_json::Value> =
        times.iter().map(|(k, v)| (k.to_string(), v.to_string().into())).collect();
    let mut apps = vec![serde_json::json!({"app_name": "bridge", "app_data": format!("sofia/gateway/carrier/{dest}")})];
    if let Some(r) = rec {
        apps.insert(0, serde_json::json!({"app_name": "record_session", "app_data": r}));
    }
    serde_json::json!({
        "core-uuid": "6d1e3c52-2a0b-4c8f-9a51-0c8e2f0b7a11",
        "switchname": host,
        "channel_data": {"state": "CS_REPORTING", "direction": vars[0].1, "state_number": "11"},
        "variables": variables,
        "app_log": {"applications": apps},
        "callflow": [{
            "dialplan": "XML", "profile_index": "1",
            "caller_profile": {"caller_id_number": caller, "caller_id_name": caller, "destination_number": dest, "uuid": uuid, "context": "public"},
            "times": times
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::normalize::{normalize_document, NormalizeContext};

    #[test]
    fn generated_cdrs_normalize_to_what_was_generated() {
        for format in [GenFormat::Xml, GenFormat::Json] {
            let mut g = Generator::new(7, format);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let c = g.next_cdr();
                assert!(seen.insert(c.uuid.clone()), "uuids are unique");
                let n = normalize_document(c.document.as_bytes(), &NormalizeContext::default())
                    .unwrap_or_else(|e| panic!("{format:?} {e}\n{}", c.document));
                assert_eq!(n.uuid, c.uuid);
                assert_eq!(n.leg == crate::domain::normalize::Leg::A, c.a_leg, "{}", c.document);
            }
        }
    }
}
