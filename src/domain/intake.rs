//! HTTP bodies as mod_xml_cdr / mod_json_cdr post them. The form is recognised from the body
//! alone: with `disable-100-continue` the modules drop their Content-Type and curl labels every
//! body `application/x-www-form-urlencoded`.

use std::borrow::Cow;
use std::fmt;

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as B64_STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::cdr::{content_start, lenient_json};
use super::percent::{fs_url_encode, percent_decode};

/// How a body carried its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyEncoding {
    /// The document itself (`encode=textxml`, or any XML body).
    BareXml,
    /// The document itself (mod_json_cdr with `encode=false`).
    BareJson,
    /// `cdr=<document>` unescaped (`encode=false`: raw `&` and `+` inside).
    FormRaw,
    /// `cdr=<percent-encoded document>` (`encode=true`).
    FormUrlencoded,
    /// `cdr=<base64>` (`encode=base64`).
    FormBase64,
}

impl fmt::Display for BodyEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyEncoding::BareXml => "bare XML",
            BodyEncoding::BareJson => "bare JSON",
            BodyEncoding::FormRaw => "raw cdr= form",
            BodyEncoding::FormUrlencoded => "percent-encoded cdr= form",
            BodyEncoding::FormBase64 => "base64 cdr= form",
        })
    }
}

/// The CDR document found in a body. Bare bodies and raw forms borrow from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBody<'a> {
    pub encoding: BodyEncoding,
    pub document: Cow<'a, [u8]>,
}

/// Why a body holds no recognisable CDR document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("body is empty")]
    EmptyBody,
    #[error("form field cdr= is empty")]
    EmptyCdrField,
    #[error("body is neither XML, JSON nor a cdr= form (first byte 0x{byte:02X} at offset {offset})")]
    UnknownBody { byte: u8, offset: u64 },
    #[error("cdr= value is neither XML, JSON, percent-encoded nor base64: {detail}")]
    UndecodableCdr { detail: String },
    #[error("{encoding} decodes to something that is neither XML nor JSON ({what})")]
    NotADocument { encoding: BodyEncoding, what: String },
}

/// Extracts the CDR document from a POST body.
///
/// `<` / `{` first (after a BOM and whitespace) is a bare document. `cdr=` is a form whose value
/// is taken raw if it starts with `<` / `{`, percent-decoded if it starts with `%XX`, else
/// base64-decoded. The body is never split on `&`: raw forms carry `&` and `+` inside the document.
pub fn decode_body(body: &[u8]) -> Result<DecodedBody<'_>, IntakeError> {
    let start = content_start(body);
    let rest = &body[start..];
    let (encoding, document) = match rest.first() {
        None => return Err(IntakeError::EmptyBody),
        Some(b'<') => (BodyEncoding::BareXml, Cow::Borrowed(rest)),
        Some(b'{') => (BodyEncoding::BareJson, Cow::Borrowed(rest)),
        Some(_) if rest.starts_with(b"cdr=") => decode_form_value(&rest[4..])?,
        Some(&byte) => return Err(IntakeError::UnknownBody { byte, offset: start as u64 }),
    };
    Ok(DecodedBody { encoding, document })
}

fn decode_form_value(value: &[u8]) -> Result<(BodyEncoding, Cow<'_, [u8]>), IntakeError> {
    let trimmed = value.trim_ascii();
    let (encoding, document) = match trimmed {
        [] => return Err(IntakeError::EmptyCdrField),
        [b'<' | b'{', ..] => return Ok((BodyEncoding::FormRaw, Cow::Borrowed(value))),
        [b'%', h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            (BodyEncoding::FormUrlencoded, form_decode(trimmed))
        }
        _ => (BodyEncoding::FormBase64, base64_decode(trimmed)?),
    };
    match document.get(content_start(&document)) {
        Some(b'<' | b'{') => Ok((encoding, Cow::Owned(document))),
        first => Err(IntakeError::NotADocument {
            encoding,
            what: first.map_or("nothing but whitespace".into(), |b| format!("first byte 0x{b:02X}")),
        }),
    }
}

/// Form decoding: `%XX` and `+` as space (form encoders write spaces that way; FreeSWITCH never
/// leaves a literal `+`). A JSON result that does not parse gets [`escape_stray_string_bytes`].
fn form_decode(value: &[u8]) -> Vec<u8> {
    let plain = form_unescape(value);
    if plain.get(content_start(&plain)) != Some(&b'{') || is_json(&plain) {
        return plain;
    }
    let repaired = escape_stray_string_bytes(&plain);
    if is_json(&repaired) {
        repaired
    } else {
        plain
    }
}

/// `%XX` -> byte, `+` -> space, anything else (a malformed `%` included) as is.
fn form_unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let [first, tail @ ..] = rest {
        rest = match (first, tail) {
            (b'%', [h, l, after @ ..]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                out.push(hex(*h) << 4 | hex(*l));
                after
            }
            (b'+', _) => {
                out.push(b' ');
                tail
            }
            _ => {
                out.push(*first);
                tail
            }
        };
    }
    out
}

fn is_json(doc: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(&lenient_json(doc)).is_ok()
}

/// mod_json_cdr's `encode=true` uses `switch_url_encode`, which leaves an existing `%XX` alone,
/// so with `encode-values` (the default) a value's `%22` / `%5C` / `%0D%0A` arrive, after the one
/// body decode, as a raw quote, backslash or CR LF inside a JSON string, and the JSON breaks.
/// This escapes them again, inside strings only: a quote not followed by `:` `,` `}` `]` or the
/// end, a backslash not starting a JSON escape, control bytes. Valid JSON passes unchanged.
fn escape_stray_string_bytes(doc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len() + 64);
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in doc.iter().enumerate() {
        if !in_string {
            in_string = b == b'"';
            out.push(b);
        } else if escaped {
            escaped = false;
            out.push(b);
        } else if b == b'"' {
            let next = doc[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
            if matches!(next, None | Some(b':' | b',' | b'}' | b']')) {
                in_string = false;
                out.push(b);
            } else {
                out.extend_from_slice(b"\\\"");
            }
        } else if b == b'\\' {
            if matches!(doc.get(i + 1), Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u')) {
                escaped = true;
                out.push(b);
            } else {
                out.extend_from_slice(b"\\\\");
            }
        } else if b < 0x20 {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

fn hex(d: u8) -> u8 {
    (d as char).to_digit(16).unwrap_or(0) as u8
}

/// FreeSWITCH's `switch_b64_encode` output (standard alphabet, padded, no line breaks). Also
/// accepted: missing padding, line breaks, spaces that were `+` before a form decoder got to them,
/// and a value percent-encoded on top.
fn base64_decode(value: &[u8]) -> Result<Vec<u8>, IntakeError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let attempt = |v: &[u8]| {
        let cleaned: Vec<u8> = v
            .iter()
            .filter(|b| !matches!(b, b'\r' | b'\n' | b'\t'))
            .map(|&b| if b == b' ' { b'+' } else { b })
            .collect();
        LENIENT.decode(cleaned)
    };
    attempt(value).or_else(|first| {
        let unescaped = value.contains(&b'%').then(|| percent_decode_bytes(value));
        unescaped
            .and_then(|v| attempt(&v).ok())
            .ok_or_else(|| IntakeError::UndecodableCdr { detail: format!("{first} (value starts {})", preview(value)) })
    })
}

fn percent_decode_bytes(v: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(v).collect()
}

/// The first bytes of a value, escaped for an error message.
fn preview(value: &[u8]) -> String {
    let head: String = value.iter().take(24).flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    format!("\"{head}{}\"", if value.len() > 24 { "..." } else { "" })
}

/// What `cdrmunch submit --encode` produces, mirroring the modules' `encode` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubmitEncoding {
    /// `encode=false`: `cdr=` + the document unescaped.
    Raw,
    /// `encode=true`: `cdr=` + the percent-encoded document.
    Urlencoded,
    /// `encode=base64`.
    Base64,
    /// mod_xml_cdr `encode=textxml`: the bare document.
    TextXml,
    /// mod_json_cdr `encode=false`: the bare document.
    Json,
}

/// Builds a body and its Content-Type the way the modules do.
pub fn encode_body(document: &[u8], enc: SubmitEncoding) -> (&'static str, Vec<u8>) {
    let form = |value: &[u8]| [&b"cdr="[..], value].concat();
    match enc {
        SubmitEncoding::Raw => ("application/x-www-form-plaintext", form(document)),
        SubmitEncoding::Urlencoded => ("application/x-www-form-urlencoded", form(fs_url_encode(document).as_bytes())),
        SubmitEncoding::Base64 => {
            ("application/x-www-form-base64-encoded", form(B64_STANDARD.encode(document).as_bytes()))
        }
        SubmitEncoding::TextXml => ("text/xml", document.to_vec()),
        SubmitEncoding::Json => ("application/json", document.to_vec()),
    }
}

/// The `uuid` query parameter the modules append to the URL (`uuid=a_<uuid>` for A-legs when
/// `prefix-a-leg` is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UuidParam {
    pub a_leg_prefix: bool,
    pub uuid: String,
}

/// Finds `uuid=` in a query string (with or without the leading `?`), percent-decoded once.
pub fn parse_uuid_param(query: Option<&str>) -> Option<UuidParam> {
    let query = query?;
    let query = query.strip_prefix('?').unwrap_or(query);
    let raw = query.split('&').find_map(|pair| pair.strip_prefix("uuid="))?;
    let value = percent_decode(raw);
    let value = value.trim();
    let (a_leg_prefix, uuid) = match value.strip_prefix("a_") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    (!uuid.is_empty()).then(|| UuidParam { a_leg_prefix, uuid: uuid.to_owned() })
}

/// The 16 bytes of a FreeSWITCH uuid (hyphenated 8-4-4-4-12 hex, any case); `None` otherwise.
pub fn canonical_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s).ok().map(|u| *u.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cdr::{parse, CdrFormat};
    use crate::domain::{corpus_file, corpus_files};
    use proptest::prelude::*;

    const XML_ENCODINGS: [(SubmitEncoding, BodyEncoding); 4] = [
        (SubmitEncoding::Raw, BodyEncoding::FormRaw),
        (SubmitEncoding::Urlencoded, BodyEncoding::FormUrlencoded),
        (SubmitEncoding::Base64, BodyEncoding::FormBase64),
        (SubmitEncoding::TextXml, BodyEncoding::BareXml),
    ];
    const JSON_ENCODINGS: [(SubmitEncoding, BodyEncoding); 4] = [
        (SubmitEncoding::Raw, BodyEncoding::FormRaw),
        (SubmitEncoding::Urlencoded, BodyEncoding::FormUrlencoded),
        (SubmitEncoding::Base64, BodyEncoding::FormBase64),
        (SubmitEncoding::Json, BodyEncoding::BareJson),
    ];

    fn round_trip(doc: &[u8], sub: SubmitEncoding, expect: BodyEncoding) {
        let (_, body) = encode_body(doc, sub);
        let got = decode_body(&body).unwrap_or_else(|e| panic!("{sub:?}: {e}"));
        assert_eq!(got.encoding, expect, "{sub:?}");
        assert!(got.document == doc, "{sub:?}: document changed");
    }

    #[test]
    fn every_corpus_file_round_trips_through_every_encoding() {
        for (name, doc) in corpus_files("xml") {
            for (sub, expect) in XML_ENCODINGS {
                round_trip(&doc, sub, expect);
            }
            assert!(!name.is_empty());
        }
        for (_, doc) in corpus_files("json") {
            for (sub, expect) in JSON_ENCODINGS {
                round_trip(&doc, sub, expect);
            }
        }
    }

    #[test]
    fn content_types_match_the_modules() {
        let ct = |e| encode_body(b"<cdr/>", e).0;
        assert_eq!(ct(SubmitEncoding::Raw), "application/x-www-form-plaintext");
        assert_eq!(ct(SubmitEncoding::Urlencoded), "application/x-www-form-urlencoded");
        assert_eq!(ct(SubmitEncoding::Base64), "application/x-www-form-base64-encoded");
        assert_eq!(ct(SubmitEncoding::TextXml), "text/xml");
        assert_eq!(ct(SubmitEncoding::Json), "application/json");
        assert_eq!(encode_body(b"<a b=\"1\"/>", SubmitEncoding::Urlencoded).1, b"cdr=%3Ca%20b%3D%221%22/%3E");
        assert_eq!(encode_body(b"<cdr/>", SubmitEncoding::Base64).1, b"cdr=PGNkci8+");
    }

    #[test]
    fn raw_forms_keep_ampersand_and_plus() {
        let xml = b"<cdr><variables><a>x+y</a></variables><app_log><application app_name=\"set\" app_data=\"q=1&amp;r=2 +480\"/></app_log></cdr>";
        let body = [&b"cdr="[..], xml].concat();
        let got = decode_body(&body).unwrap();
        assert_eq!((got.encoding, &*got.document), (BodyEncoding::FormRaw, &xml[..]));
        let cdr = parse(&got.document).unwrap();
        assert_eq!(cdr.app_log[0].app_data, "q=1&r=2 +480");
        assert_eq!(cdr.var("a"), Some("x+y"));

        let json = br#"{"variables":{"a":"b&c=d+e"}}"#;
        let got = decode_body(&[&b"cdr="[..], json].concat()).unwrap().document.into_owned();
        assert_eq!(got, json);
    }

    #[test]
    fn bare_bodies_skip_bom_and_whitespace() {
        let got = decode_body(b"\xEF\xBB\xBF \r\n<cdr/>").unwrap();
        assert_eq!((got.encoding, &*got.document), (BodyEncoding::BareXml, &b"<cdr/>"[..]));
        let got = decode_body(b"\n{\"a\":1}").unwrap();
        assert_eq!((got.encoding, &*got.document), (BodyEncoding::BareJson, &b"{\"a\":1}"[..]));
    }

    #[test]
    fn urlencoded_forms_treat_plus_as_space() {
        let got = decode_body(b"cdr=%3Ccdr%3E%3Cvariables%3E%3Cv%3Ea+b%252B%3C%2Fv%3E%3C%2Fvariables%3E%3C%2Fcdr%3E")
            .unwrap();
        assert_eq!(got.encoding, BodyEncoding::FormUrlencoded);
        assert_eq!(&*got.document, b"<cdr><variables><v>a b%2B</v></variables></cdr>");
        assert_eq!(parse(&got.document).unwrap().var("v"), Some("a b+"));
    }

    #[test]
    fn base64_variants() {
        let b64 = |s: &str| decode_body(s.as_bytes()).map(|d| (d.encoding, d.document.into_owned()));
        let expect = Ok((BodyEncoding::FormBase64, b"<cdr/>".to_vec()));
        assert_eq!(b64("cdr=PGNkci8+"), expect);
        assert_eq!(b64("cdr=PGNk\r\nci8+\n"), expect);
        assert_eq!(b64("cdr=PGNkci8 "), Ok((BodyEncoding::FormBase64, b"<cdr/".to_vec()))); // missing padding
        assert_eq!(b64("cdr=PGNkci8%2B"), expect);
        // '+' turned into ' ' by a form decoder upstream
        assert_eq!(b64("cdr=PHg  Ps8L3g+"), Ok((BodyEncoding::FormBase64, b"<x>\xf8\xfb</x>".to_vec())));
        assert_eq!(b64("cdr=PGNkci8+").unwrap().1, b"<cdr/>");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |b: &[u8]| decode_body(b).unwrap_err().to_string();
        assert_eq!(err(b""), "body is empty");
        assert_eq!(err(b" \r\n"), "body is empty");
        assert_eq!(err(b"cdr="), "form field cdr= is empty");
        assert_eq!(err(b"cdr=  \n"), "form field cdr= is empty");
        assert_eq!(err(b"ABC"), "body is neither XML, JSON nor a cdr= form (first byte 0x41 at offset 0)");
        assert_eq!(
            err(b"uuid=x&cdr=<cdr/>"),
            "body is neither XML, JSON nor a cdr= form (first byte 0x75 at offset 0)"
        );
        let e = err(b"cdr=!!not base64!!");
        assert!(
            e.starts_with("cdr= value is neither XML, JSON, percent-encoded nor base64: ") && e.contains("!!not"),
            "{e}"
        );
        assert_eq!(
            err(b"cdr=aGVsbG8="),
            "base64 cdr= form decodes to something that is neither XML nor JSON (first byte 0x68)"
        );
        assert_eq!(
            err(b"cdr=%20%20"),
            "percent-encoded cdr= form decodes to something that is neither XML nor JSON (nothing but whitespace)"
        );
    }

    /// `switch_url_encode` as mod_json_cdr calls it: like `fs_url_encode` but an existing `%XX`
    /// (uppercase hex) is left alone.
    fn single_encode(doc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < doc.len() {
            let keep = doc[i] == b'%'
                && doc
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)));
            if keep {
                out.push(b'%');
            } else {
                out.extend_from_slice(fs_url_encode(&doc[i..=i]).as_bytes());
            }
            i += 1;
        }
        out
    }

    #[test]
    fn mod_json_cdr_single_encoded_bodies_are_repaired() {
        for (name, doc) in corpus_files("json") {
            let direct = parse(&doc).unwrap();
            let body = [&b"cdr="[..], &single_encode(&doc)].concat();
            let got = decode_body(&body).unwrap();
            assert_eq!(got.encoding, BodyEncoding::FormUrlencoded);
            let via_body = parse(&got.document).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(via_body.format, CdrFormat::Json);
            assert_eq!(via_body.variables, direct.variables, "{name}");
            assert_eq!(via_body.callflows, direct.callflows, "{name}");
        }
        // The FreeSWITCH unit test's two cases: an encoded value, and a value with its own %22.
        let doc = br#"{"variables":{"v":"%226140%22%20%3Csip%3A6140%40203.0.113.10%3E%3Btag%3Dx","w":"x%22y\\z","s":"a%0D%0Ab"}}"#;
        let body = [&b"cdr="[..], &single_encode(doc)].concat();
        let cdr = parse(&decode_body(&body).unwrap().document).unwrap();
        assert_eq!(cdr.var("v"), Some("\"6140\" <sip:6140@203.0.113.10>;tag=x"));
        assert_eq!(cdr.var("w"), Some("x\"y\\z"));
        assert_eq!(cdr.var("s"), Some("a\r\nb"));
    }

    #[test]
    fn uuid_query_parameter() {
        let p = parse_uuid_param(Some("uuid=a_6a7ccd66-6d2f-46c4-abd9-07cf37fc161e")).unwrap();
        assert_eq!(p, UuidParam { a_leg_prefix: true, uuid: "6a7ccd66-6d2f-46c4-abd9-07cf37fc161e".into() });
        let p = parse_uuid_param(Some("?x=1&uuid=2605af5c%2Df1e8-47a5-a9ce-833f051c40c5&y")).unwrap();
        assert_eq!(p, UuidParam { a_leg_prefix: false, uuid: "2605af5c-f1e8-47a5-a9ce-833f051c40c5".into() });
        assert_eq!(parse_uuid_param(None), None);
        assert_eq!(parse_uuid_param(Some("x=1")), None);
        assert_eq!(parse_uuid_param(Some("uuid=")), None);
        assert_eq!(parse_uuid_param(Some("uuid=a_")), None);
        assert_eq!(parse_uuid_param(Some("myuuid=abc")), None);
    }

    #[test]
    fn canonical_uuids() {
        let a = canonical_uuid("6a7ccd66-6d2f-46c4-abd9-07cf37fc161e").unwrap();
        assert_eq!(canonical_uuid(" 6A7CCD66-6D2F-46C4-ABD9-07CF37FC161E "), Some(a));
        assert_eq!(a[0], 0x6a);
        assert_eq!(canonical_uuid("6a7ccd666d2f46c4abd907cf37fc161e"), None);
        assert_eq!(canonical_uuid("{6a7ccd66-6d2f-46c4-abd9-07cf37fc161e}"), None);
        assert_eq!(canonical_uuid("6a7ccd66-6d2f-46c4-abd9-07cf37fc161g"), None);
        assert_eq!(canonical_uuid(""), None);
        let cdr = parse(&corpus_file("xml", "zhouhailin_a_6a7ccd66_inbound.cdr.xml")).unwrap();
        assert_eq!(canonical_uuid(cdr.uuid().unwrap()), Some(a));
    }

    proptest! {
        #[test]
        fn xml_like_bytes_round_trip(rest in proptest::collection::vec(any::<u8>(), 0..512)) {
            let doc = [&b"<"[..], &rest].concat();
            for (sub, expect) in XML_ENCODINGS {
                let (_, body) = encode_body(&doc, sub);
                let got = decode_body(&body).unwrap();
                prop_assert_eq!(got.encoding, expect);
                prop_assert_eq!(&*got.document, &doc[..]);
            }
        }

        #[test]
        fn decode_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body(&body);
            let _ = decode_body(&[&b"cdr="[..], &body].concat());
            let _ = decode_body(&[&b"cdr=%7B"[..], &body].concat());
        }

        #[test]
        fn uuid_helpers_never_panic(s in any::<String>()) {
            let _ = parse_uuid_param(Some(&s));
            let _ = canonical_uuid(&s);
        }
    }
}
