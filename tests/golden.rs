//! Golden files: for every corpus CDR, `tests/golden/<file>.golden.xml` holds the expected
//! normalized record, written by reading the CDR by hand (each file's comment says why its
//! values are right). The normalizer's output must carry every field the golden file names,
//! with that value, and exactly its tasks (embedded-default rules: billing and calllog).

mod common;

use std::path::Path;

use cdrmunch::domain::ncdr::NormalizedDoc;
use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use common::corpus_files;

fn golden_for(corpus_file: &Path) -> std::path::PathBuf {
    let name = corpus_file.file_name().unwrap().to_string_lossy().into_owned();
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.golden.xml"))
}

#[test]
fn every_corpus_cdr_normalizes_to_its_golden_record() {
    let dir = tempfile::tempdir().unwrap();
    let rules = cdrmunch::handlers::task_rules(&cdrmunch::config::Settings::embedded_default(dir.path()));
    let ctx = NormalizeContext { rules, ..Default::default() };
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in corpus_files() {
        let golden_path = golden_for(&file);
        let golden = std::fs::read_to_string(&golden_path)
            .unwrap_or_else(|e| panic!("no golden file for {}: {e}", file.display()));
        let doc = std::fs::read(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let result = normalize_document(&doc, &ctx);
        if let Some(rest) = golden.split("<reason-contains>").nth(1) {
            let want = rest.split("</reason-contains>").next().unwrap().trim();
            match result {
                Err(e) if e.to_string().contains(want) => {}
                Err(e) => failures.push(format!("{name}: rejected, but with '{e}', not containing '{want}'")),
                Ok(_) => failures.push(format!("{name}: must be rejected ({want}) but normalized")),
            }
            checked += 1;
            continue;
        }
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let want = NormalizedDoc::parse(golden.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
        let got = NormalizedDoc::parse(n.to_xml().as_bytes()).unwrap();
        for (k, v) in &want.data {
            if k == "TableSuffix" && v == "RECEIVED" {
                continue;
            }
            match got.field(k) {
                Some(g) if g == *v => {}
                other => failures.push(format!("{name}: {k}: golden '{v}', normalized {other:?}")),
            }
        }
        if got.field("recording_path").is_some() && want.field("recording_path").is_none() {
            failures.push(format!("{name}: normalized a recording_path the golden file does not have"));
        }
        if got.tasks != want.tasks {
            failures.push(format!("{name}: tasks {:?}, golden {:?}", got.tasks, want.tasks));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{} of {checked} differ:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(checked, corpus_files().len());
}
