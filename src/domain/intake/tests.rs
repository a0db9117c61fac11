//! Tests of `intake`.
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
    let got =
        decode_body(b"cdr=%3Ccdr%3E%3Cvariables%3E%3Cv%3Ea+b%252B%3C%2Fv%3E%3C%2Fvariables%3E%3C%2Fcdr%3E").unwrap();
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
    assert_eq!(err(b"uuid=x&other=1"), "form body has no cdr= field");
    // fields in any order: the cdr field is found wherever it is, a raw one runs to the end
    let got = decode_body(b"uuid=a_x&cdr=<cdr a=\"1&2\"/>").unwrap();
    assert_eq!((got.document.as_ref(), got.form_uuid.as_deref()), (&b"<cdr a=\"1&2\"/>"[..], Some("a_x")));
    let got = decode_body(b"x=1&cdr=%3Ccdr%2F%3E&uuid=a%5Fy").unwrap();
    assert_eq!((got.document.as_ref(), got.form_uuid.as_deref()), (&b"<cdr/>"[..], Some("a_y")));
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
            && doc.get(i + 1..i + 3).is_some_and(|h| h.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)));
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
