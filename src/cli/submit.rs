//! `cdrmunch submit`: posts CDR files exactly as mod_xml_cdr / mod_json_cdr would
//! (`?uuid=[a_]<uuid>`, `cdr=` forms or bare bodies), concurrently, with a progress bar and
//! a summary of the answers. Also the load generator behind the bench.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures::StreamExt;

use crate::domain::cdr::CdrFormat;
use crate::domain::intake::{encode_body, SubmitEncoding};
use crate::domain::submission;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encode {
    /// `cdr=<raw document>` (mod_xml_cdr encode=false)
    Raw,
    /// `cdr=<percent-encoded document>` (encode=true, the default of both modules)
    Urlencoded,
    /// `cdr=<base64>` (encode=base64)
    Base64,
    /// bare XML, text/xml (encode=textxml)
    Textxml,
    /// bare JSON, application/json (mod_json_cdr)
    Json,
}

impl Encode {
    pub fn wire(self, format: CdrFormat) -> SubmitEncoding {
        match (self, format) {
            (Encode::Raw, _) => SubmitEncoding::Raw,
            (Encode::Urlencoded, _) => SubmitEncoding::Urlencoded,
            (Encode::Base64, _) => SubmitEncoding::Base64,
            // a bare body is whatever the document is
            (Encode::Textxml | Encode::Json, CdrFormat::Xml) => SubmitEncoding::TextXml,
            (Encode::Textxml | Encode::Json, CdrFormat::Json) => SubmitEncoding::Json,
        }
    }
}

pub struct SubmitOptions {
    pub url: String,
    pub encode: Encode,
    pub concurrency: usize,
    pub basic_auth: Option<String>,
    /// CSV of `uuid,start_ns,end_ns,status` per POST (for the bench's latency figures).
    pub timings: Option<PathBuf>,
    pub quiet: bool,
}

/// One document to post, already read or generated.
pub struct Item {
    pub name: String,
    pub document: Vec<u8>,
}

/// Expands files and directories (recursively; `*.xml`, `*.json`) into a sorted list.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        if p.is_dir() {
            for e in std::fs::read_dir(p).with_context(|| format!("reading directory {}", p.display()))? {
                let e = e?;
                let path = e.path();
                let is_cdr = path.extension().is_some_and(|x| x == "xml" || x == "json");
                if path.is_dir() || is_cdr {
                    walk(&path, out)?;
                }
            }
        } else if p.exists() {
            out.push(p.to_path_buf());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// Posts every item; returns the count per answer ("200", "400", "error: …").
pub async fn submit(items: Vec<Item>, opts: &SubmitOptions) -> anyhow::Result<BTreeMap<String, usize>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .timeout(Duration::from_secs(120))
        .build()?;
    let bar =
        if opts.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(items.len() as u64) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} CDRs  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let results: Vec<Posted> = futures::stream::iter(items)
        .map(|item| {
            let client = client.clone();
            let bar = bar.clone();
            async move {
                let r = post_one(&client, opts, &item).await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let mut summary = BTreeMap::new();
    for r in &results {
        *summary.entry(r.status.clone()).or_insert(0) += 1;
    }
    if let Some(path) = &opts.timings {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(f, "uuid,start_ns,end_ns,status")?;
        for r in &results {
            writeln!(f, "{},{},{},{}", r.uuid, r.start_ns, r.end_ns, r.status)?;
        }
    }
    if !opts.quiet {
        eprintln!(
            "posted {} CDRs in {:.2}s ({:.0}/s)",
            results.len(),
            elapsed.as_secs_f64(),
            results.len() as f64 / elapsed.as_secs_f64().max(1e-9)
        );
        for (status, n) in &summary {
            eprintln!("  {status}: {n}");
        }
        let failed: Vec<&Posted> = results.iter().filter(|r| !r.status.starts_with('2')).collect();
        for r in failed.iter().take(20) {
            eprintln!("  failed {} ({}): {}", r.name, r.status, r.message);
        }
        if failed.len() > 20 {
            eprintln!("  … and {} more failures", failed.len() - 20);
        }
    }
    Ok(summary)
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The answer to one POST.
struct Posted {
    name: String,
    uuid: String,
    status: String,
    /// The server's `error` text for a non-2xx.
    message: String,
    start_ns: u128,
    end_ns: u128,
}

async fn post_one(client: &reqwest::Client, opts: &SubmitOptions, item: &Item) -> Posted {
    // The same rules as intake find the uuid and the leg for `?uuid=[a_]<uuid>`.
    let (query, uuid, format) = match submission::prepare(
        &bytes::Bytes::copy_from_slice(&item.document),
        None,
        "submit",
        0,
        &crate::domain::cdr::ParseLimits::UNLIMITED,
    ) {
        Ok(s) => (format!("?uuid={}{}", if s.a_leg { "a_" } else { "" }, s.uuid), s.uuid, s.format),
        Err(_) => {
            let json = item.document.trim_ascii_start().starts_with(b"{");
            (String::new(), item.name.clone(), if json { CdrFormat::Json } else { CdrFormat::Xml })
        }
    };
    let (content_type, body) = encode_body(&item.document, opts.encode.wire(format));
    let mut req = client.post(format!("{}{query}", opts.url)).header("Content-Type", content_type).body(body);
    if let Some(cred) = &opts.basic_auth {
        let (u, p) = cred.split_once(':').unwrap_or((cred.as_str(), ""));
        req = req.basic_auth(u, Some(p));
    }
    let start = unix_ns();
    let (status, message) = match req.send().await {
        Ok(resp) => {
            let code = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            let message = if code.is_success() {
                String::new()
            } else {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect())
            };
            (code.as_u16().to_string(), message)
        }
        Err(e) => {
            let kind = if e.is_connect() {
                "connection failed"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            (format!("error: {kind}"), e.to_string())
        }
    };
    Posted { name: item.name.clone(), uuid, status, message, start_ns: start, end_ns: unix_ns() }
}
