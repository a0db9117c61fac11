//! Field mapping as data: which CDR variable or caller-profile field fills which normalized
//! field, so a platform with other variable names configures instead of patching. The file
//! (`normalize.field_map`, default `config/field-map.conf`) has one line per field:
//!
//! ```text
//! # normalized_field = type: source | source | ...
//! gateway = text: var:sip_gateway_name | var:sip_gateway
//! ```
//!
//! Sources, tried in order, first non-empty wins: `var:NAME` (a channel variable,
//! percent-decoded), `profile:NAME` (the newest caller profile), `channel:NAME`
//! (`<channel_data>`), `stats:PATH` (`<call-stats>`, e.g. `audio.inbound.mos`),
//! `cdr:switchname`, `cdr:core_uuid`. Types: `text` (trimmed), `decimal` (finite), `int`
//! (a whole number; a source that is not one is skipped), `uuid` (lowercased; must be a UUID),
//! `number` (a dialled number: spaces dropped). A mapped field named like a computed one
//! (caller_id_number, destination_number, hangup_cause) replaces it when a source has a value.

use super::cdr::RawCdr;
use super::intake::canonical_uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Int,
    Uuid,
    Number,
    /// A finite decimal (`nan` and `inf` are skipped), kept as written.
    Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Var(String),
    Profile(String),
    Channel(String),
    /// A `<call-stats>` / `callStats` leaf by dotted path.
    Stats(String),
    SwitchName,
    CoreUuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub name: String,
    pub ty: FieldType,
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    pub rules: Vec<FieldRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field map line {line}: {message}")]
pub struct MapError {
    pub line: usize,
    pub message: String,
}

/// The defaults, shipped as `config/field-map.conf`: they fit the corpus and FusionPBX-style
/// variables.
pub const DEFAULT_FIELD_MAP: &str = include_str!("../../config/field-map.conf");

/// Fields the normalizer computes itself and a map may not replace (they carry its rules:
/// identity, partitioning, leg, timing, retail).
const COMPUTED: [&str; 13] = [
    "uuid",
    "TableSuffix",
    "rmOrgID",
    "leg",
    "direction",
    "start_epoch",
    "answer_epoch",
    "end_epoch",
    "duration",
    "billsec",
    "recording_path",
    "cdr_path",
    "quantity",
];

impl FieldMap {
    pub fn default_map() -> FieldMap {
        FieldMap::parse(DEFAULT_FIELD_MAP).expect("the shipped field map parses")
    }

    pub fn parse(text: &str) -> Result<FieldMap, MapError> {
        let mut rules: Vec<FieldRule> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(l, _)| l).trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| MapError { line: i + 1, message };
            let (name, rest) =
                line.split_once('=').ok_or_else(|| err("expected: field = type: source | ...".into()))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err(format!("'{name}' is not a field name (letters, digits, _)")));
            }
            if COMPUTED.contains(&name) {
                return Err(err(format!("'{name}' is computed by the normalizer and cannot be mapped")));
            }
            if rules.iter().any(|r| r.name == name) {
                return Err(err(format!("'{name}' is mapped twice")));
            }
            let (ty, sources) = rest.split_once(':').ok_or_else(|| err("expected 'type: sources' after '='".into()))?;
            let ty = match ty.trim() {
                "text" => FieldType::Text,
                "int" => FieldType::Int,
                "uuid" => FieldType::Uuid,
                "number" => FieldType::Number,
                "decimal" => FieldType::Decimal,
                other => return Err(err(format!("type '{other}' is not text, int, decimal, uuid or number"))),
            };
            let sources = sources
                .split('|')
                .map(|s| {
                    let s = s.trim();
                    let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
                    match (kind, arg) {
                        ("var", a) if !a.is_empty() => Ok(Source::Var(a.to_string())),
                        ("profile", a) if !a.is_empty() => Ok(Source::Profile(a.to_string())),
                        ("channel", a) if !a.is_empty() => Ok(Source::Channel(a.to_string())),
                        ("stats", a) if !a.is_empty() => Ok(Source::Stats(a.to_string())),
                        ("cdr", "switchname") => Ok(Source::SwitchName),
                        ("cdr", "core_uuid") => Ok(Source::CoreUuid),
                        _ => Err(err(format!(
                            "source '{s}' is not var:NAME, profile:NAME, channel:NAME, stats:PATH, cdr:switchname or cdr:core_uuid"
                        ))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(FieldRule { name: name.to_string(), ty, sources });
        }
        Ok(FieldMap { rules })
    }

    /// `(field, value)` for every rule a source fills, in file order.
    pub fn apply(&self, raw: &RawCdr) -> Vec<(String, String)> {
        let profile = raw.newest_callflow().map(|c| &c.profile);
        self.rules
            .iter()
            .filter_map(|rule| {
                rule.sources.iter().find_map(|src| {
                    let v = match src {
                        Source::Var(n) => raw.var(n),
                        Source::Profile(n) => profile.and_then(|p| p.get(n)),
                        Source::Channel(n) => raw.channel_data.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
                        Source::Stats(p) => raw.call_stats.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str()),
                        Source::SwitchName => raw.switchname.as_deref(),
                        Source::CoreUuid => raw.core_uuid.as_deref(),
                    }?;
                    convert(rule.ty, v.trim()).map(|v| (rule.name.clone(), v))
                })
            })
            .collect()
    }
}

fn convert(ty: FieldType, v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    match ty {
        FieldType::Text => Some(v.to_string()),
        FieldType::Int => v.parse::<i64>().ok().map(|n| n.to_string()),
        FieldType::Uuid => canonical_uuid(v).map(|_| v.to_ascii_lowercase()),
        FieldType::Number => Some(v.chars().filter(|c| !c.is_whitespace()).collect()),
        FieldType::Decimal => v.parse::<f64>().ok().filter(|f| f.is_finite()).map(|_| v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_empty_source_of_the_right_type_wins() {
        let map = FieldMap::parse(
            "gateway = text: var:sip_gateway_name | var:sip_gateway  # either\n\
             org_user = int: var:user_id | var:fallback_id\n\
             peer = uuid: var:originator\n\
             callee = number: profile:destination_number\n\
             where = text: cdr:switchname",
        )
        .unwrap();
        let raw = super::super::cdr::parse(
            b"<cdr switchname=\"fs7\"><variables><sip_gateway_name></sip_gateway_name><sip_gateway>carrier-b</sip_gateway>\
              <user_id>abc</user_id><fallback_id>42</fallback_id><originator>0D2E4C6A-1111-2222-3333-444455556666</originator>\
              </variables><callflow><caller_profile><destination_number>+44 20 7946 0000</destination_number>\
              </caller_profile></callflow></cdr>",
        )
        .unwrap();
        let got = map.apply(&raw);
        let want: Vec<(String, String)> = [
            ("gateway", "carrier-b"),
            ("org_user", "42"),
            ("peer", "0d2e4c6a-1111-2222-3333-444455556666"),
            ("callee", "+442079460000"),
            ("where", "fs7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "(.{0,30}\n){0,5}") {
            let _ = FieldMap::parse(&text);
        }
    }

    #[test]
    fn mistakes_are_named_by_line() {
        let e = FieldMap::parse("ok = text: var:a\nbad = text: env:HOME").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("env:HOME"), "{e}");
        assert!(FieldMap::parse("billsec = int: var:x").unwrap_err().message.contains("computed"));
        assert!(FieldMap::parse("a = float: var:x").unwrap_err().message.contains("float"));
        assert!(FieldMap::parse("a = text: var:x\na = text: var:y").unwrap_err().message.contains("twice"));
        assert!(!FieldMap::default_map().rules.is_empty());
    }
}
