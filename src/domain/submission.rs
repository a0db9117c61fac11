//! What intake decides about one POSTed CDR before anything is written: the document inside
//! the body, its call uuid and leg, the FreeSWITCH host, and the storage key. Pure, so the
//! HTTP handler, `cdrmunch normalize` and tests share one set of rules.

use super::cdr::{self, CdrFormat, RawCdr};
use super::intake::{canonical_uuid, decode_body, parse_uuid_param};
use super::normalize::{leg_of, table_suffix, Leg};

#[derive(Debug, Clone)]
pub struct Submission {
    pub document: Vec<u8>,
    pub format: CdrFormat,
    pub uuid: String,
    pub uuid_bytes: [u8; 16],
    pub a_leg: bool,
    pub host: String,
    /// `{host}/{YYYY-MM-DD}/{a_}{uuid}.cdr.{xml|json}`: by FreeSWITCH host and call date
    /// (UTC), named as mod_xml_cdr names its log-dir files. Deterministic, so a retried POST
    /// overwrites the same file instead of leaving a second copy.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    #[error("{0}")]
    Body(String),
    #[error("not a well-formed CDR: {0}")]
    Parse(String),
    #[error("CDR has no call uuid (no ?uuid= parameter, no <variables><uuid>, no caller_profile uuid)")]
    NoUuid,
    #[error("call uuid '{0}' is not a UUID")]
    BadUuid(String),
    #[error("?uuid={query} does not match the CDR's uuid {body}")]
    UuidMismatch { query: String, body: String },
}

/// Decodes, parses and names one submission. `peer` is the client address, the host of
/// last resort when the CDR names no switch; `received_epoch` dates a CDR with no times.
pub fn prepare(
    body: &[u8],
    query: Option<&str>,
    peer: &str,
    received_epoch: i64,
) -> Result<Submission, SubmissionError> {
    let decoded = decode_body(body).map_err(|e| SubmissionError::Body(e.to_string()))?;
    let document = decoded.document.into_owned();
    let raw = cdr::parse(&document).map_err(|e| SubmissionError::Parse(e.to_string()))?;
    let param = parse_uuid_param(query);
    let body_uuid = raw.uuid().map(str::to_ascii_lowercase);
    let uuid = match (&param, body_uuid) {
        (Some(p), Some(b)) if !p.uuid.eq_ignore_ascii_case(&b) => {
            return Err(SubmissionError::UuidMismatch { query: p.uuid.clone(), body: b })
        }
        (_, Some(b)) => b,
        (Some(p), None) => p.uuid.to_ascii_lowercase(),
        (None, None) => return Err(SubmissionError::NoUuid),
    };
    let uuid_bytes = canonical_uuid(&uuid).ok_or_else(|| SubmissionError::BadUuid(uuid.clone()))?;
    let a_leg = param.as_ref().map(|p| p.a_leg_prefix).unwrap_or(false) || leg_of(&raw) == Leg::A;
    let host = sanitize_host(raw.switchname.as_deref().or_else(|| raw.var("hostname")).unwrap_or(peer));
    let call_epoch = call_epoch(&raw).unwrap_or(received_epoch);
    let ext = match raw.format {
        CdrFormat::Xml => "xml",
        CdrFormat::Json => "json",
    };
    let day = table_suffix(call_epoch);
    let key = format!(
        "{host}/{:04}-{:02}-{:02}/{}{uuid}.cdr.{ext}",
        day / 10_000,
        day / 100 % 100,
        day % 100,
        if a_leg { "a_" } else { "" }
    );
    Ok(Submission { document, format: raw.format, uuid, uuid_bytes, a_leg, host, key })
}

/// When the call started: `start_epoch`, else the earliest `<times><created_time>`.
fn call_epoch(raw: &RawCdr) -> Option<i64> {
    raw.var("start_epoch").and_then(|v| v.trim().parse::<i64>().ok()).filter(|&v| v > 0).or_else(|| {
        raw.callflows.iter().filter_map(|c| c.time("created_time")).filter(|&t| t > 0).min().map(|us| us / 1_000_000)
    })
}

/// A host name safe as one path component.
fn sanitize_host(h: &str) -> String {
    let s: String = h
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() {
        "unknown-host".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "<cdr switchname=\"fs1\"><variables><uuid>6A7CCD66-0000-4000-8000-000000000001</uuid>\
        <start_epoch>1700000000</start_epoch></variables></cdr>";

    #[test]
    fn names_by_host_date_leg_and_uuid() {
        let s = prepare(DOC.as_bytes(), Some("uuid=a_6a7ccd66-0000-4000-8000-000000000001"), "10.0.0.1", 0).unwrap();
        assert_eq!(s.key, "fs1/2023-11-14/a_6a7ccd66-0000-4000-8000-000000000001.cdr.xml");
        assert!(s.a_leg);
    }

    #[test]
    fn query_uuid_must_agree_with_the_body() {
        let err = prepare(DOC.as_bytes(), Some("uuid=6a7ccd66-0000-4000-8000-000000000002"), "h", 0).unwrap_err();
        assert!(matches!(err, SubmissionError::UuidMismatch { .. }), "{err}");
    }

    #[test]
    fn uuid_from_query_when_the_body_has_none_and_host_falls_back_to_peer() {
        let doc = "<cdr><variables><hangup_cause>X</hangup_cause></variables></cdr>";
        let s =
            prepare(doc.as_bytes(), Some("uuid=6a7ccd66-0000-4000-8000-000000000003"), "127.0.0.1", 86_400).unwrap();
        assert_eq!(s.key, "127.0.0.1/1970-01-02/a_6a7ccd66-0000-4000-8000-000000000003.cdr.xml");
        assert_eq!(prepare(doc.as_bytes(), None, "h", 0).unwrap_err(), SubmissionError::NoUuid);
    }

    #[test]
    fn host_names_cannot_escape_the_directory() {
        assert_eq!(sanitize_host("../../etc"), "_.._etc");
        assert_eq!(sanitize_host(""), "unknown-host");
    }
}
