//! The normalizer over the corpus beside a bare quick-xml event pass over the same XML bytes
//! (the speed limit of any XML normalizer). Criterion measures both; the summary at the end
//! prints CDRs/s and MB/s on one core for each and the ratio.
//!
//!     cargo bench --bench normalizer

use std::path::PathBuf;

// the allocator the service itself runs with (src/main.rs)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use cdrmunch::domain::normalize::{normalize_document, NormalizeContext};
use std::hint::black_box;

use criterion::{Criterion, Throughput};
use quick_xml::events::Event;
use quick_xml::Reader;

fn corpus() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = std::env::var_os("CDRMUNCH_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let ctx = NormalizeContext::default();
    let load = |sub: &str| -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(sub)).expect("corpus").flatten().map(|e| e.path()).collect();
        files.sort();
        // only the CDRs that normalize: the rejected one measures the error path, not the work
        files.into_iter().map(|p| std::fs::read(p).unwrap()).filter(|d| normalize_document(d, &ctx).is_ok()).collect()
    };
    (load("xml"), load("json"))
}

fn bare_pass(doc: &[u8]) -> usize {
    let mut reader = Reader::from_reader(doc);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => n += 1,
        }
        buf.clear();
    }
    n
}

/// Runs `f` over all docs for about `d`, returns (docs per second, bytes per second).
fn rate(docs: &[Vec<u8>], d: Duration, mut f: impl FnMut(&[u8])) -> (f64, f64) {
    let bytes: usize = docs.iter().map(Vec::len).sum();
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < d {
        for doc in docs {
            f(doc);
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (rounds as f64 * docs.len() as f64 / secs, rounds as f64 * bytes as f64 / secs)
}

fn main() {
    let (xml, json) = corpus();
    let ctx = NormalizeContext::default();
    let xml_bytes: usize = xml.iter().map(Vec::len).sum();
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group("corpus_xml");
    g.throughput(Throughput::Bytes(xml_bytes as u64));
    g.bench_function("normalize", |b| {
        b.iter(|| {
            for d in &xml {
                black_box(normalize_document(black_box(d), &ctx).unwrap());
            }
        })
    });
    g.bench_function("bare_quick_xml", |b| {
        b.iter(|| {
            for d in &xml {
                black_box(bare_pass(black_box(d)));
            }
        })
    });
    g.finish();
    let json_bytes: usize = json.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("corpus_json");
    g.throughput(Throughput::Bytes(json_bytes as u64));
    g.bench_function("normalize", |b| {
        b.iter(|| {
            for d in &json {
                black_box(normalize_document(black_box(d), &ctx).unwrap());
            }
        })
    });
    g.finish();
    c.final_summary();
    if std::env::var_os("NORMALIZER_BENCH_NO_SUMMARY").is_some() {
        return;
    }

    let d = Duration::from_secs(2);
    let (n_cdr, n_b) = rate(&xml, d, |doc| {
        black_box(normalize_document(doc, &ctx).unwrap());
    });
    let (q_cdr, q_b) = rate(&xml, d, |doc| {
        black_box(bare_pass(doc));
    });
    let (p_cdr, p_b) = rate(&xml, d, |doc| {
        black_box(cdrmunch::domain::cdr::parse(doc).unwrap());
    });
    let (j_cdr, j_b) = rate(&json, d, |doc| {
        black_box(normalize_document(doc, &ctx).unwrap());
    });
    println!(
        "\nsummary, one core, {} XML CDRs ({} bytes), {} JSON CDRs ({} bytes):",
        xml.len(),
        xml_bytes,
        json.len(),
        json_bytes
    );
    println!("  XML normalize       {:>9.0} CDRs/s {:>7.1} MB/s", n_cdr, n_b / 1e6);
    println!("  XML bare quick-xml  {:>9.0} CDRs/s {:>7.1} MB/s", q_cdr, q_b / 1e6);
    println!("  XML parse only      {:>9.0} CDRs/s {:>7.1} MB/s", p_cdr, p_b / 1e6);
    println!("  normalize / bare    {:>8.0} %", 100.0 * n_b / q_b);
    println!("  JSON normalize      {:>9.0} CDRs/s {:>7.1} MB/s", j_cdr, j_b / 1e6);
}
