//! mod_json_cdr documents. Parsed into an order- and duplicate-preserving tree (serde_json's
//! `Value` sorts keys and keeps only the last of repeated ones, but variables must stay in
//! document order and FreeSWITCH before ~1.6 repeated the `"callflow"` key once per profile).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{line_col, Application, Callflow, CdrFormat, Extension, ParseError, Profile, RawCdr, BOM};
use crate::domain::percent::{fs_escapes, percent_decode};

/// JSON value keeping object members in document order, duplicates included.
enum J {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<J, E> {
                Ok(serde_json::Number::from_f64(n).map_or(J::Null, J::Num))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(J::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(J::Obj(members))
            }
        }
        d.deserialize_any(V)
    }
}

impl J {
    /// Scalars as their text (strings unquoted); `None` for arrays and objects.
    fn scalar(&self) -> Option<String> {
        match self {
            J::Null => Some("null".into()),
            J::Bool(b) => Some(b.to_string()),
            J::Num(n) => Some(n.to_string()),
            J::Str(s) => Some(s.clone()),
            J::Arr(_) | J::Obj(_) => None,
        }
    }

    /// Any value as text: scalars via [`J::scalar`], containers as compact JSON.
    fn text(&self) -> String {
        self.scalar().unwrap_or_else(|| self.to_value().to_string())
    }

    fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => Value::Number(n.clone()),
            J::Str(s) => Value::String(s.clone()),
            J::Arr(a) => Value::Array(a.iter().map(J::to_value).collect()),
            J::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }

    fn members(&self) -> &[(String, J)] {
        match self {
            J::Obj(o) => o,
            _ => &[],
        }
    }

    fn get(&self, key: &str) -> Option<&J> {
        self.members().iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn str_of(&self, key: &str) -> String {
        self.get(key).and_then(J::scalar).unwrap_or_default()
    }

    fn int(&self) -> Option<i64> {
        match self {
            J::Num(n) => n.as_i64(),
            J::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// An object, or each object of an array (`callflow` is either, depending on the version).
    fn objects(&self) -> Vec<&J> {
        match self {
            J::Obj(_) => vec![self],
            J::Arr(a) => a.iter().filter(|j| matches!(j, J::Obj(_))).collect(),
            _ => Vec::new(),
        }
    }
}

/// Spans of bare `nan`, `-nan`, `inf`, `-inf`, `infinity` (any case, optional sign) outside
/// strings: cJSON prints C's `%g` output for non-finite doubles (e.g. `mos` without RTP).
fn non_finite_tokens(doc: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < doc.len() {
        let b = doc[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_alphabetic() || b == b'-' || b == b'+' {
            let word_start = i + usize::from(!b.is_ascii_alphabetic());
            let end = word_start + doc[word_start..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
            let word = &doc[word_start..end];
            if [&b"nan"[..], b"inf", b"infinity"].iter().any(|w| word.eq_ignore_ascii_case(w)) {
                spans.push(i..end);
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    spans
}

/// The document with bare NaN/Infinity tokens (outside strings) replaced by `null`, so FreeSWITCH
/// output that serde_json would reject is accepted. Borrows when there is nothing to replace.
pub(crate) fn lenient_json(doc: &[u8]) -> Cow<'_, [u8]> {
    replace_tokens(doc, &non_finite_tokens(doc))
}

fn replace_tokens<'a>(doc: &'a [u8], spans: &[Range<usize>]) -> Cow<'a, [u8]> {
    if spans.is_empty() {
        return Cow::Borrowed(doc);
    }
    let mut out = Vec::with_capacity(doc.len() + spans.len());
    let mut last = 0;
    for span in spans {
        out.extend_from_slice(&doc[last..span.start]);
        out.extend_from_slice(b"null");
        last = span.end;
    }
    out.extend_from_slice(&doc[last..]);
    Cow::Owned(out)
}

/// Maps an offset in the lenient text back to the original document.
fn original_offset(spans: &[Range<usize>], offset: usize) -> usize {
    let mut shift: isize = 0; // lenient minus original, for positions before the next span
    for span in spans {
        let start = (span.start as isize + shift) as usize;
        if offset < start {
            break;
        }
        if offset < start + 4 {
            return span.start;
        }
        shift += 4 - span.len() as isize;
    }
    (offset as isize - shift) as usize
}

pub(super) fn parse(doc: &[u8]) -> Result<RawCdr, ParseError> {
    let base = if doc.starts_with(BOM) { BOM.len() } else { 0 };
    let body = &doc[base..];
    let spans = non_finite_tokens(body);
    let text = replace_tokens(body, &spans);
    let root: J = serde_json::from_slice(&text).map_err(|e| json_error(doc, base, &text, &spans, &e))?;
    // `parse` only routes documents starting with '{' here, so `root` is an object.
    Ok(to_cdr(&root))
}

fn json_error(doc: &[u8], base: usize, text: &[u8], spans: &[Range<usize>], e: &serde_json::Error) -> ParseError {
    // serde_json positions are 1-based lines and byte columns in the lenient text.
    let line_start: usize =
        text.split_inclusive(|&b| b == b'\n').take(e.line().saturating_sub(1)).map(<[u8]>::len).sum();
    let lenient = (line_start + e.column().saturating_sub(1)).min(text.len());
    let offset = base + original_offset(spans, lenient);
    let (line, column) = line_col(doc, offset);
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ParseError::Json { offset: offset as u64, line, column, message }
}

fn to_cdr(root: &J) -> RawCdr {
    let mut cdr = RawCdr::empty(CdrFormat::Json);
    for (key, value) in root.members() {
        match key.as_str() {
            "core-uuid" => cdr.core_uuid = value.scalar(),
            "switchname" => cdr.switchname = value.scalar(),
            "channel_data" => {
                cdr.channel_data.extend(value.members().iter().map(|(k, v)| (k.clone(), v.text().trim().to_owned())))
            }
            "variables" => cdr.variables.extend(variables(value.members())),
            "app_log" => {
                let apps = value.get("applications").map(J::objects).unwrap_or_default();
                cdr.app_log.extend(apps.into_iter().map(|a| Application {
                    app_name: a.str_of("app_name"),
                    app_data: a.str_of("app_data"),
                    app_stamp: a.get("app_stamp").and_then(J::int),
                }));
            }
            // Every occurrence counts: old mod_json_cdr repeated the key instead of using an array.
            "callflow" => cdr.callflows.extend(value.objects().into_iter().map(callflow)),
            "callStats" => flatten_stats(value, "", &mut cdr.call_stats),
            _ => {}
        }
    }
    cdr
}

/// `{"audio":{"inbound":{"mos":4.5}}}` -> `("audio.inbound.mos", "4.5")`; arrays are skipped.
fn flatten_stats(value: &J, prefix: &str, out: &mut Vec<(String, String)>) {
    for (k, v) in value.members() {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            J::Obj(_) => flatten_stats(v, &path, out),
            J::Arr(_) => {}
            scalar => out.extend(scalar.scalar().map(|s| (path, s))),
        }
    }
}

/// Variable values are percent-decoded only when the document was written with `encode-values`
/// (the default). That setting is not recorded, so it is inferred for the whole document: decode
/// iff some string value holds a valid `%XX` and no string value holds a byte `switch_url_encode`
/// would have escaped (space, `@`, `:`, `"`, control, non-ASCII, a `%` not starting `%XX`, ...).
/// Deciding per value would wrongly decode an unencoded value that merely looks encoded.
fn variables(members: &[(String, J)]) -> Vec<(String, String)> {
    let decode = looks_encoded(members.iter().filter_map(|(_, v)| match v {
        J::Str(s) => Some(s.as_str()),
        _ => None,
    }));
    members
        .iter()
        .map(|(k, v)| {
            let value = match v {
                J::Str(s) if decode => percent_decode(s),
                _ => v.text(),
            };
            (k.clone(), value)
        })
        .collect()
}

fn looks_encoded<'a>(values: impl Iterator<Item = &'a str>) -> bool {
    let mut saw_escape = false;
    for v in values {
        let b = v.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
                    saw_escape = true;
                    i += 3;
                    continue;
                }
                return false;
            }
            if fs_escapes(b[i]) {
                return false;
            }
            i += 1;
        }
    }
    saw_escape
}

fn callflow(j: &J) -> Callflow {
    let mut cf = Callflow::default();
    for (key, value) in j.members() {
        match key.as_str() {
            "caller_profile" => cf.profile = profile(value),
            "times" => cf.times.extend(value.members().iter().filter_map(|(k, v)| Some((k.clone(), v.int()?)))),
            "extension" => {
                cf.extension = Some(Extension { name: value.str_of("name"), number: value.str_of("number") })
            }
            _ => cf.attrs.extend(value.scalar().map(|s| (key.clone(), s))),
        }
    }
    cf
}

/// Scalar members are fields; `originatee: {"originatee_caller_profiles": [...]}` (and the
/// `originator` / `origination` counterparts) hold the peer profiles.
fn profile(j: &J) -> Profile {
    let mut p = Profile::default();
    for (key, value) in j.members() {
        let target = match key.as_str() {
            "origination" => &mut p.origination,
            "originator" => &mut p.originator,
            "originatee" => &mut p.originatee,
            _ => {
                p.fields.extend(value.scalar().map(|s| (key.clone(), s)));
                continue;
            }
        };
        for (_, list) in value.members() {
            target.extend(list.objects().into_iter().map(profile));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ParseError};
    use super::*;

    #[test]
    fn non_finite_tokens_become_null_outside_strings_only() {
        let doc = br#"{"a":nan,"b":-nan,"c":[inf,-Infinity,NaN],"d":"nan","e":"x\"nan","f":1e5,"g":-1}"#;
        let fixed = lenient_json(doc);
        assert_eq!(&*fixed, &br#"{"a":null,"b":null,"c":[null,null,null],"d":"nan","e":"x\"nan","f":1e5,"g":-1}"#[..]);
        assert!(matches!(lenient_json(b"{\"a\":true}"), Cow::Borrowed(_)));
    }

    #[test]
    fn errors_point_into_the_original_document() {
        let doc = b"{\"m\":nan,\n \"x\": ,\n}";
        let e = parse(doc).unwrap_err();
        let ParseError::Json { line, column, offset, .. } = &e else { panic!("{e:?}") };
        assert_eq!((*line, *column), (2, 7));
        assert_eq!(doc[*offset as usize], b',');
        assert!(e.to_string().starts_with("JSON invalid at line 2 column 7 (byte 16): expected value"), "{e}");
        let e = parse(b"{\"a\":\"b\"").unwrap_err();
        assert!(e.to_string().contains("EOF"), "{e}");
    }

    #[test]
    fn offsets_map_across_replacements() {
        let spans = vec![2..5, 10..14]; // "nan" (3 -> 4) and "-inf" (4 -> 4)
        assert_eq!(original_offset(&spans, 1), 1);
        assert_eq!(original_offset(&spans, 3), 2);
        assert_eq!(original_offset(&spans, 6), 5);
        assert_eq!(original_offset(&spans, 11), 10);
        assert_eq!(original_offset(&spans, 12), 10);
        assert_eq!(original_offset(&spans, 15), 14);
    }

    #[test]
    fn repeated_callflow_keys_are_all_kept_in_order() {
        let doc =
            br#"{"callflow":{"profile_index":"2","caller_profile":{"uuid":"u"}},"callflow":{"profile_index":"1"}}"#;
        let cdr = parse(doc).unwrap();
        let idx: Vec<_> = cdr.callflows.iter().map(|c| c.attr("profile_index").unwrap()).collect();
        assert_eq!(idx, ["2", "1"]);
        assert_eq!(cdr.uuid(), Some("u"));
    }

    #[test]
    fn encode_values_is_decided_per_document() {
        assert!(looks_encoded(["a%40b", "plain", "100%25"].into_iter()));
        assert!(!looks_encoded(["plain", "digits"].into_iter()));
        assert!(!looks_encoded(["a%40b", "c@d"].into_iter()));
        assert!(!looks_encoded(["a%40b", "50% off"].into_iter()));
        assert!(!looks_encoded(["a%40b", "two words"].into_iter()));

        let enc = parse(br#"{"variables":{"a":"x%40y","b":"ARRAY%3A%3A1%7C%3A2","n":5,"o":{"k":[1]}}}"#).unwrap();
        assert_eq!(enc.var("a"), Some("x@y"));
        assert_eq!(enc.var("b"), Some("ARRAY::1|:2"));
        assert_eq!(enc.var("n"), Some("5"));
        assert_eq!(enc.var("o"), Some(r#"{"k":[1]}"#));
        let raw = parse(br#"{"variables":{"a":"x%40y","b":"ARRAY::1|:2"}}"#).unwrap();
        assert_eq!(raw.var("a"), Some("x%40y"));
        assert_eq!(raw.var("b"), Some("ARRAY::1|:2"));
    }

    #[test]
    fn variables_keep_document_order_and_duplicates() {
        let cdr = parse(br#"{"variables":{"z":"1","a":"2","z":"3"}}"#).unwrap();
        let names: Vec<_> = cdr.variables.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["z", "a", "z"]);
        assert_eq!(cdr.vars("z").collect::<Vec<_>>(), ["1", "3"]);
    }
}
