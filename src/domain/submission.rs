//! What intake decides about one POSTed CDR before anything is written: the document inside
//! the body, its call uuid and leg, the FreeSWITCH host, and the storage key. Pure, so the
//! HTTP handler, `cdrmunch normalize` and tests share one set of rules.

use std::borrow::Cow;

use bytes::Bytes;

use super::cdr::{self, CdrFormat, ParseError, ParseLimits};
use super::intake::{canonical_uuid, decode_body, parse_uuid_param};
use super::normalize::{dating_epoch, table_suffix};

#[derive(Debug, Clone)]
pub struct Submission {
    /// The document itself: a slice of the body when it was sent bare or as a raw form.
    pub document: Bytes,
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
    #[error("{0}")]
    TooBig(String),
    #[error("CDR has no call uuid (no <variables><uuid>, no caller_profile uuid); a ?uuid= parameter alone cannot stand in for it")]
    NoUuid,
    #[error("call uuid '{0}' is not a UUID")]
    BadUuid(String),
    #[error("call uuid {0} is the nil UUID")]
    NilUuid(String),
    #[error("?uuid={query} does not match the CDR's uuid {body}")]
    UuidMismatch { query: String, body: String },
    #[error("?uuid=a_{0} marks an A-leg, but the CDR is a B-leg (its caller profile has an originator)")]
    LegMismatch(String),
}

/// Decodes, parses and names one submission. `peer` is the client address, the host of
/// last resort when the CDR names no switch; `received_epoch` dates a CDR with no times.
pub fn prepare(
    body: &Bytes,
    query: Option<&str>,
    peer: &str,
    received_epoch: i64,
    limits: &ParseLimits,
) -> Result<Submission, SubmissionError> {
    let decoded = decode_body(body).map_err(|e| SubmissionError::Body(e.to_string()))?;
    let document = match decoded.document {
        Cow::Borrowed(doc) => body.slice_ref(doc),
        Cow::Owned(doc) => Bytes::from(doc),
    };
    let raw = cdr::parse_limited(&document, limits).map_err(|e| match e {
        ParseError::TooBig { .. } => SubmissionError::TooBig(e.to_string()),
        e => SubmissionError::Parse(e.to_string()),
    })?;
    // the query parameter wins over a form field, as mod_xml_cdr puts it in the URL
    let param = parse_uuid_param(query)
        .or_else(|| decoded.form_uuid.as_deref().and_then(|u| parse_uuid_param(Some(&format!("uuid={u}")))));
    let uuid = raw.uuid().map(str::to_ascii_lowercase).ok_or(SubmissionError::NoUuid)?;
    if let Some(p) = &param {
        if !p.uuid.eq_ignore_ascii_case(&uuid) {
            return Err(SubmissionError::UuidMismatch { query: p.uuid.clone(), body: uuid });
        }
    }
    let uuid_bytes = canonical_uuid(&uuid).ok_or_else(|| SubmissionError::BadUuid(uuid.clone()))?;
    if uuid_bytes == [0; 16] {
        return Err(SubmissionError::NilUuid(uuid));
    }
    // mod_xml_cdr's own rule for the `a_` prefix: no originator caller profile on the current
    // callflow. The leg comes from the document; a prefix only has to agree with it.
    let b_leg = raw.newest_callflow().is_some_and(|c| !c.profile.originator.is_empty());
    if b_leg && param.as_ref().is_some_and(|p| p.a_leg_prefix) {
        return Err(SubmissionError::LegMismatch(uuid));
    }
    let a_leg = !b_leg;
    let host = sanitize_host(raw.switchname.as_deref().or_else(|| raw.var("hostname")).unwrap_or(peer));
    let ext = match raw.format {
        CdrFormat::Xml => "xml",
        CdrFormat::Json => "json",
    };
    let day = table_suffix(dating_epoch(&raw, received_epoch));
    let key = format!(
        "{host}/{:04}-{:02}-{:02}/{}{uuid}.cdr.{ext}",
        day / 10_000,
        day / 100 % 100,
        day % 100,
        if a_leg { "a_" } else { "" }
    );
    Ok(Submission { document, format: raw.format, uuid, uuid_bytes, a_leg, host, key })
}

/// Longest host directory name kept whole; longer ones are cut and given a digest of the
/// whole name, so two long names that share a beginning still get two directories.
const MAX_HOST_DIR: usize = 100;

/// A host name safe as one path component (a file name is at most 255 bytes).
fn sanitize_host(h: &str) -> String {
    let s: String = h
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() {
        "unknown-host".into()
    } else if s.len() > MAX_HOST_DIR {
        use md5::Digest;
        let digest = hex::encode(md5::Md5::digest(h.trim().as_bytes()));
        format!("{}~{}", &s[..MAX_HOST_DIR - 17], &digest[..16])
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
        let s = prep(DOC, Some("uuid=a_6a7ccd66-0000-4000-8000-000000000001"), "10.0.0.1", 0).unwrap();
        assert_eq!(s.key, "fs1/2023-11-14/a_6a7ccd66-0000-4000-8000-000000000001.cdr.xml");
        assert!(s.a_leg);
    }

    #[test]
    fn query_uuid_must_agree_with_the_body() {
        let err = prep(DOC, Some("uuid=6a7ccd66-0000-4000-8000-000000000002"), "h", 0).unwrap_err();
        assert!(matches!(err, SubmissionError::UuidMismatch { .. }), "{err}");
    }

    fn prep(doc: &str, query: Option<&str>, peer: &str, received: i64) -> Result<Submission, SubmissionError> {
        prepare(&Bytes::from(doc.to_string()), query, peer, received, &ParseLimits::default())
    }

    #[test]
    fn a_query_uuid_cannot_stand_in_for_a_missing_call_uuid() {
        let doc = "<cdr><variables><hangup_cause>X</hangup_cause></variables></cdr>";
        let err = prep(doc, Some("uuid=6a7ccd66-0000-4000-8000-000000000003"), "127.0.0.1", 86_400).unwrap_err();
        assert_eq!(err, SubmissionError::NoUuid);
        assert_eq!(prep(doc, None, "h", 0).unwrap_err(), SubmissionError::NoUuid);
    }

    #[test]
    fn host_falls_back_to_the_peer_and_the_date_to_receipt() {
        let doc = "<cdr><variables><uuid>6a7ccd66-0000-4000-8000-000000000003</uuid></variables></cdr>";
        let s = prep(doc, None, "127.0.0.1", 86_400).unwrap();
        assert_eq!(s.key, "127.0.0.1/1970-01-02/a_6a7ccd66-0000-4000-8000-000000000003.cdr.xml");
    }

    #[test]
    fn the_nil_uuid_is_refused() {
        let doc = "<cdr><variables><uuid>00000000-0000-0000-0000-000000000000</uuid></variables></cdr>";
        assert!(matches!(prep(doc, None, "h", 0), Err(SubmissionError::NilUuid(_))));
    }

    #[test]
    fn the_leg_comes_from_the_document_and_a_prefix_must_agree() {
        let b_leg = "<cdr><variables><uuid>6a7ccd66-0000-4000-8000-000000000004</uuid></variables><callflow>\
            <caller_profile><originator><originator_caller_profile><uuid>6a7ccd66-0000-4000-8000-000000000005</uuid>\
            </originator_caller_profile></originator></caller_profile></callflow></cdr>";
        let plain = prep(b_leg, Some("uuid=6a7ccd66-0000-4000-8000-000000000004"), "h", 0).unwrap();
        assert!(!plain.a_leg && !plain.key.contains("/a_"), "{}", plain.key);
        let err = prep(b_leg, Some("uuid=a_6a7ccd66-0000-4000-8000-000000000004"), "h", 0).unwrap_err();
        assert!(matches!(err, SubmissionError::LegMismatch(_)), "{err}");
        // an A-leg posted without the prefix (prefix-a-leg off) is still an A-leg
        let a = prep(DOC, Some("uuid=6a7ccd66-0000-4000-8000-000000000001"), "h", 0).unwrap();
        assert!(a.a_leg && a.key.contains("/a_"), "{}", a.key);
    }

    #[test]
    fn a_form_with_the_uuid_field_first_is_read_as_a_form() {
        let body = "uuid=a_6a7ccd66-0000-4000-8000-000000000001&cdr=%3C%3Fxml+version%3D%221.0%22%3F%3E%0A%3Ccdr+switchname%3D%22fs1%22%3E\
            %3Cvariables%3E%3Cuuid%3E6a7ccd66-0000-4000-8000-000000000001%3C%2Fuuid%3E%3Cstart_epoch%3E1700000000%3C%2Fstart_epoch%3E\
            %3C%2Fvariables%3E%3C%2Fcdr%3E";
        let s = prep(body, None, "h", 0).unwrap();
        assert_eq!(s.key, "fs1/2023-11-14/a_6a7ccd66-0000-4000-8000-000000000001.cdr.xml");
        let mismatch =
            body.replace("uuid=a_6a7ccd66-0000-4000-8000-000000000001", "uuid=6a7ccd66-0000-4000-8000-000000000009");
        assert!(matches!(prep(&mismatch, None, "h", 0), Err(SubmissionError::UuidMismatch { .. })));
    }

    #[test]
    fn a_parse_bomb_is_refused_naming_the_limit() {
        let bomb = format!(
            "<cdr><variables><uuid>6a7ccd66-0000-4000-8000-000000000001</uuid></variables>{}</cdr>",
            "<a/>".repeat(100_001)
        );
        let err = prep(&bomb, None, "h", 0).unwrap_err();
        assert!(matches!(err, SubmissionError::TooBig(_)) && err.to_string().contains("max_cdr_elements"), "{err}");
        let json = format!(
            "{{\"variables\":{{\"uuid\":\"6a7ccd66-0000-4000-8000-000000000001\"}},\"a\":[{}0]}}",
            "0,".repeat(100_001)
        );
        assert!(matches!(prep(&json, None, "h", 0), Err(SubmissionError::TooBig(_))));
    }

    #[test]
    fn a_contradictory_call_is_dated_as_the_normalizer_dates_it() {
        // end before start in the variables: the consistent <times> decide (the next day)
        let doc =
            "<cdr><variables><uuid>6a7ccd66-0000-4000-8000-000000000006</uuid><start_epoch>1700000000</start_epoch>\
            <end_epoch>1600000000</end_epoch></variables><callflow><times><created_time>1700100000000000</created_time>\
            <hangup_time>1700100060000000</hangup_time></times></callflow></cdr>";
        let s = prep(doc, None, "h", 0).unwrap();
        let n = crate::domain::normalize::normalize_document(doc.as_bytes(), &Default::default()).unwrap();
        let suffix = n.data.iter().find(|(k, _)| k == "TableSuffix").map(|(_, v)| v.clone()).unwrap();
        assert_eq!(s.key.split('/').nth(1).unwrap().replace('-', ""), suffix, "{}", s.key);
    }

    #[test]
    fn host_names_cannot_escape_the_directory() {
        assert_eq!(sanitize_host("../../etc"), "_.._etc");
        assert_eq!(sanitize_host(""), "unknown-host");
        let (a, b) = (format!("{}a", "h".repeat(300)), format!("{}b", "h".repeat(300)));
        let (da, db) = (sanitize_host(&a), sanitize_host(&b));
        assert!(da.len() <= MAX_HOST_DIR && db.len() <= MAX_HOST_DIR && da != db, "{da} {db}");
    }
}
