//! Fuzzing what intake and the distillery do with a body, as property tests (cargo-fuzz needs
//! a nightly toolchain this project does not have): corpus CDRs mutated byte by byte, cut
//! short and wrapped in every body encoding, plus arbitrary bytes and forms. Whatever comes
//! in, intake answers with a submission or an error — never a panic — and a submission it
//! accepts normalizes or fails as data. Cases per property: `CDRMUNCH_FUZZ_CASES` (default
//! 10,000). A failing case is saved under `proptest-regressions/` and replayed first from then
//! on: that directory is the corpus of crashers found, and is committed.

mod common;

use std::sync::OnceLock;

use bytes::Bytes;
use cdrmunch::domain::cdr::ParseLimits;
use cdrmunch::domain::intake::{encode_body, SubmitEncoding};
use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use cdrmunch::domain::submission;
use proptest::prelude::*;

fn corpus() -> &'static Vec<Vec<u8>> {
    static DOCS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    DOCS.get_or_init(|| common::corpus_files().iter().map(|p| std::fs::read(p).unwrap()).collect())
}

fn cases() -> u32 {
    std::env::var("CDRMUNCH_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

const ENCODINGS: [SubmitEncoding; 5] = [
    SubmitEncoding::Raw,
    SubmitEncoding::Urlencoded,
    SubmitEncoding::Base64,
    SubmitEncoding::TextXml,
    SubmitEncoding::Json,
];

/// Intake's whole decision on one body, then the distillery's, as the service runs them.
fn intake_and_distill(body: Vec<u8>, query: Option<&str>) {
    let limits = ParseLimits { max_elements: 5_000, ..ParseLimits::default() };
    if let Ok(sub) = submission::prepare(&Bytes::from(body), query, "fuzz", 1_700_000_000, &limits) {
        assert!(!sub.key.contains(".."), "{}", sub.key);
        assert!(sub.key.split('/').all(|part| !part.is_empty() && part.len() <= 255), "{}", sub.key);
        let ctx = NormalizeContext { received_epoch: 1_700_000_000, ..NormalizeContext::default() };
        let _ = normalize_document(&sub.document, &ctx);
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let tokens = prop::sample::select(vec![
        b"<".to_vec(),
        b">".to_vec(),
        b"</".to_vec(),
        b"&amp;".to_vec(),
        b"&#0;".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"%".to_vec(),
        b"%2".to_vec(),
        b"\xff\xfe".to_vec(),
        b"<variables>".to_vec(),
        b"<callflow>".to_vec(),
        b"{\"".to_vec(),
        b"[".to_vec(),
        b"00000000-0000-0000-0000-000000000000".to_vec(),
        b"<![CDATA[".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), tokens).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Edit::Remove(at, n)),
    ]
}

fn apply(doc: &mut Vec<u8>, e: &Edit) {
    if doc.is_empty() {
        return;
    }
    match e {
        Edit::Set(at, b) => {
            let at = at % doc.len();
            doc[at] = *b;
        }
        Edit::Insert(at, t) => {
            let at = at % (doc.len() + 1);
            doc.splice(at..at, t.iter().copied());
        }
        Edit::Remove(at, n) => {
            let at = at % doc.len();
            let end = (at + n).min(doc.len());
            doc.drain(at..end);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_cdrs_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 0..12),
        cut in prop::option::of(any::<prop::sample::Index>()),
        enc in any::<prop::sample::Index>(),
        prefix in any::<bool>(),
    ) {
        let docs = corpus();
        let mut doc = docs[which.index(docs.len())].clone();
        for e in &edits {
            apply(&mut doc, e);
        }
        if let Some(cut) = cut {
            doc.truncate(cut.index(doc.len() + 1));
        }
        let (_, body) = encode_body(&doc, *enc.get(&ENCODINGS));
        let query = format!("uuid={}6a7ccd66-6d2f-46c4-abd9-07cf37fc161e", if prefix { "a_" } else { "" });
        intake_and_distill(body, Some(&query));
    }

    #[test]
    fn arbitrary_bodies_and_queries_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        query in prop::option::of("[a-z_=&%0-9A-F-]{0,80}"),
    ) {
        intake_and_distill(body, query.as_deref());
    }

    #[test]
    fn arbitrary_forms_never_panic(
        fields in prop::collection::vec(("[a-z_]{1,8}", prop::collection::vec(any::<u8>(), 0..200)), 0..6),
        doc in any::<prop::sample::Index>(),
    ) {
        let docs = corpus();
        let mut body = Vec::new();
        for (name, value) in &fields {
            body.extend_from_slice(name.as_bytes());
            body.push(b'=');
            body.extend_from_slice(value);
            body.push(b'&');
        }
        body.extend_from_slice(b"cdr=");
        body.extend_from_slice(&docs[doc.index(docs.len())]);
        intake_and_distill(body, None);
    }
}
