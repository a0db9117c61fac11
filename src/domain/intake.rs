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
    /// A `uuid` form field beside `cdr` (some shippers send it there instead of `?uuid=`).
    pub form_uuid: Option<String>,
}

/// Why a body holds no recognisable CDR document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("body is empty")]
    EmptyBody,
    #[error("form field cdr= is empty")]
    EmptyCdrField,
    #[error("form body has no cdr= field")]
    NoCdrField,
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
        Some(_) if looks_like_form(rest) => return decode_form(rest),
        Some(&byte) => return Err(IntakeError::UnknownBody { byte, offset: start as u64 }),
    };
    Ok(DecodedBody { encoding, document, form_uuid: None })
}

/// `name=…&…`: a form field name (letters, digits, `_`, `-`) then `=`.
fn looks_like_form(body: &[u8]) -> bool {
    let name_len = body.iter().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')).count();
    name_len > 0 && body.get(name_len) == Some(&b'=')
}

/// A form whose first field is not `cdr`: fields in any order, split on `&`. An encoded `cdr`
/// value ends at the next `&`; a raw one (starting `<` or `{`, which may hold `&` itself)
/// runs to the end of the body, as FreeSWITCH's `encode=false` forms do.
fn decode_form(body: &[u8]) -> Result<DecodedBody<'_>, IntakeError> {
    let cdr_at = body.windows(5).position(|w| w == b"&cdr=").map(|p| p + 5).ok_or(IntakeError::NoCdrField)?;
    let value = &body[cdr_at..];
    let raw = matches!(value.trim_ascii_start().first(), Some(b'<' | b'{'));
    let value_end =
        if raw { body.len() } else { value.iter().position(|&b| b == b'&').map_or(body.len(), |p| cdr_at + p) };
    let fields = body[..cdr_at - 5].split(|&b| b == b'&').chain(body[value_end..].split(|&b| b == b'&'));
    let form_uuid = fields
        .filter_map(|f| f.strip_prefix(b"uuid="))
        .map(|v| String::from_utf8_lossy(&form_unescape(v)).trim().to_string())
        .find(|v| !v.is_empty());
    let (encoding, document) = decode_form_value(&body[cdr_at..value_end])?;
    Ok(DecodedBody { encoding, document, form_uuid })
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
mod tests;
