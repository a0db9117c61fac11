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
//! `cdr:switchname`, `cdr:core_uuid`. Types: `text` (trimmed), `int` (a whole number),
//! `decimal` (plain decimal notation, as a DECIMAL column takes it), `epoch` (whole seconds
//! since 1970, not negative), `uuid` (lowercased), `number` (a dialled number: spaces
//! dropped). The first source with a value of the field's type wins; when sources have values
//! but none fits, the field stays empty and a [`FieldWarning`] says why — a value a CDR carries
//! never makes the call fail. A mapped field named like a computed one (caller_id_number,
//! destination_number, hangup_cause) replaces it when a source has a value.

use super::cdr::RawCdr;
use super::intake::canonical_uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Int,
    Uuid,
    Number,
    /// Plain decimal notation (no exponent, `nan`, `inf`), kept as written.
    Decimal,
    /// Whole seconds since 1970.
    Epoch,
}

impl FieldType {
    pub const ALL: [FieldType; 6] =
        [FieldType::Text, FieldType::Int, FieldType::Uuid, FieldType::Number, FieldType::Decimal, FieldType::Epoch];

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Int => "int",
            FieldType::Uuid => "uuid",
            FieldType::Number => "number",
            FieldType::Decimal => "decimal",
            FieldType::Epoch => "epoch",
        }
    }

    /// Whether a value of this type fits a DECIMAL column.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int | FieldType::Decimal | FieldType::Epoch)
    }

    /// The value in this type's canonical form, or why it is not one.
    pub fn check(self, v: &str) -> Result<String, &'static str> {
        let v = v.trim();
        match self {
            FieldType::Text => Ok(v.to_string()),
            FieldType::Int => v.parse::<i64>().map(|n| n.to_string()).map_err(|_| "not a whole number"),
            FieldType::Epoch => {
                v.parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n.to_string()).ok_or("not an epoch time")
            }
            FieldType::Uuid => canonical_uuid(v).map(|_| v.to_ascii_lowercase()).ok_or("not a UUID"),
            FieldType::Number => Ok(v.chars().filter(|c| !c.is_whitespace()).collect()),
            FieldType::Decimal if is_decimal(v) => Ok(v.to_string()),
            FieldType::Decimal => Err("not a decimal number (at most 16 digits before the point and 8 after)"),
        }
    }
}

/// `-12`, `0.02`, `+3.5`: plain decimal notation a DECIMAL(24,8) column takes exactly, the same
/// on both engines.
pub fn is_decimal(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int.len() <= 16
        && frac.len() <= 8
}

/// A value a CDR carried that did not fit its field's type: the field was left empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWarning {
    pub field: String,
    pub value: String,
    pub reason: String,
}

/// The type of a field the normalizer computes (a field map may not declare these).
pub fn computed_type(field: &str) -> Option<FieldType> {
    Some(match field {
        "uuid" | "other_leg_uuid" => FieldType::Uuid,
        "TableSuffix" | "rmOrgID" | "duration" | "billsec" | "quantity" | "rmOriginatorOrgId" => FieldType::Int,
        "start_epoch" | "answer_epoch" | "end_epoch" => FieldType::Epoch,
        "leg" | "direction" | "recording_path" | "cdr_path" => FieldType::Text,
        "retailCharge" => FieldType::Decimal,
        _ => return None,
    })
}

/// The retail fields a CDR may carry itself (set by the dialplan or an upstream rater); the
/// rate deck fills the same ones, plus `retailPrefix` and `retailCharge`. The amounts are
/// decimal, the rest text.
pub const RETAIL_FIELDS: [&str; 8] = [
    "retailConnectCharge",
    "retailRate",
    "retailRateType",
    "retailCountryCode",
    "retailCountry",
    "retailPrimaryBandType",
    "retailSubBandType",
    "retailChargeBand",
];

/// The type of a retail field (carried by a CDR or filled by the deck).
pub fn retail_type(field: &str) -> Option<FieldType> {
    match field {
        "retailConnectCharge" | "retailRate" => Some(FieldType::Decimal),
        f if RETAIL_FIELDS.contains(&f) || f == "retailPrefix" => Some(FieldType::Text),
        _ => None,
    }
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
    /// Its line in the map file, for messages.
    pub line: usize,
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
fn is_computed(name: &str) -> bool {
    computed_type(name).is_some()
}

/// What a field map gives one CDR: its fields, and the values that did not fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    pub fields: Vec<(String, String)>,
    pub warnings: Vec<FieldWarning>,
}

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
            if is_computed(name) {
                return Err(err(format!("'{name}' is computed by the normalizer and cannot be mapped")));
            }
            if rules.iter().any(|r| r.name == name) {
                return Err(err(format!("'{name}' is mapped twice")));
            }
            let (ty, sources) = rest.split_once(':').ok_or_else(|| err("expected 'type: sources' after '='".into()))?;
            let ty = FieldType::ALL
                .into_iter()
                .find(|t| t.name() == ty.trim())
                .ok_or_else(|| err(format!("type '{}' is not text, int, decimal, epoch, uuid or number", ty.trim())))?;
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
            rules.push(FieldRule { name: name.to_string(), ty, sources, line: i + 1 });
        }
        Ok(FieldMap { rules })
    }

    /// The declared type of a normalized field, and the map line declaring it (None for a
    /// computed field); None for a field nothing fills.
    pub fn declared(&self, field: &str) -> Option<(FieldType, Option<usize>)> {
        if let Some(r) = self.rules.iter().find(|r| r.name == field) {
            return Some((r.ty, Some(r.line)));
        }
        computed_type(field).or_else(|| retail_type(field)).map(|t| (t, None))
    }

    /// Every rule's field, in file order: the first source with a value of the rule's type.
    /// Sources with values of which none fits leave the field out, with a warning.
    pub fn apply(&self, raw: &RawCdr) -> Mapped {
        let profile = raw.newest_callflow().map(|c| &c.profile);
        let mut out = Mapped::default();
        for rule in &self.rules {
            let mut misfit: Option<(&str, &'static str)> = None;
            let found = rule.sources.iter().find_map(|src| {
                let v = match src {
                    Source::Var(n) => raw.var(n),
                    Source::Profile(n) => profile.and_then(|p| p.get(n)),
                    Source::Channel(n) => raw.channel_data.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
                    Source::Stats(p) => raw.call_stats.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str()),
                    Source::SwitchName => raw.switchname.as_deref(),
                    Source::CoreUuid => raw.core_uuid.as_deref(),
                }
                .map(str::trim)
                .filter(|v| !v.is_empty())?;
                rule.ty.check(v).map_err(|why| misfit = misfit.or(Some((v, why)))).ok()
            });
            match (found, misfit) {
                (Some(v), _) => out.fields.push((rule.name.clone(), v)),
                (None, Some((value, why))) => out.warnings.push(FieldWarning {
                    field: rule.name.clone(),
                    value: value.to_string(),
                    reason: format!("{why} (field map: {})", rule.ty.name()),
                }),
                (None, None) => {}
            }
        }
        out
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
        let got = map.apply(&raw).fields;
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
