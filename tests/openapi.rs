//! deploy/openapi.yaml against the service: every route of `cdrmunch::http::routes::ROUTES`
//! (which the routers are built from) is documented on its listeners and nothing else is; a
//! running service answers every documented operation, its examples included, with a
//! documented status, content type and body shape; `/openapi.json` is the YAML as JSON; and
//! openapi-spec-validator, from the test venv, accepts the document as OpenAPI 3.1.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::http::Method;
use cdrmunch::config::Settings;
use cdrmunch::http::openapi::DOCUMENT;
use cdrmunch::http::routes::{Endpoint, Listener, ROUTES};
use common::*;
use serde_json::Value;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn yaml_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/openapi.yaml")
}

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("build.rs wrote JSON")
}

fn listener_name(l: Listener) -> &'static str {
    match l {
        Listener::Intake => "intake",
        Listener::Metrics => "metrics",
        Listener::Ship => "ship",
    }
}

/// `(method, path)` of every operation in the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| (m.to_string(), path.clone()))
        })
        .collect()
}

/// The listeners a path is served on, by the document: its own `servers`, else the top level's.
fn documented_listeners(doc: &Value, path: &str) -> BTreeSet<String> {
    let servers = doc["paths"][path].get("servers").unwrap_or(&doc["servers"]);
    servers
        .as_array()
        .expect("servers is a list")
        .iter()
        .map(|s| {
            s["x-cdrmunch-listener"].as_str().unwrap_or_else(|| panic!("{path}: a server without x-cdrmunch-listener"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_route_is_documented_on_its_listeners_and_nothing_else_is() {
    let doc = document();
    let served: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(_, e)| (e.method().as_str().to_ascii_lowercase(), e.path().to_string())).collect();
    let documented = documented_operations(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from deploy/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "deploy/openapi.yaml documents routes nothing serves: {unserved:?}");
    let mut by_path: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (l, e) in ROUTES {
        by_path.entry(e.path()).or_default().insert(listener_name(*l).to_string());
    }
    for (path, listeners) in by_path {
        assert_eq!(documented_listeners(&doc, path), listeners, "{path}: the listeners its servers name");
    }
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version is the crate's version");
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {r}"));
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}")))
        }
        None => v,
    }
}

/// The requests to try on an operation: one per example of each request media type, or one
/// with a few bytes when a media type has no example. `true` marks an example, which must be
/// accepted.
fn requests(doc: &Value, op: &Value) -> Vec<(Option<String>, Vec<u8>, bool)> {
    let Some(body) = op.get("requestBody").map(|b| resolve(doc, b)) else {
        return vec![(None, Vec::new(), false)];
    };
    let mut out = Vec::new();
    for (media, content) in body["content"].as_object().expect("content") {
        let mut examples: Vec<&Value> = content.get("example").into_iter().collect();
        if let Some(named) = content.get("examples").and_then(Value::as_object) {
            examples.extend(named.values().map(|e| &resolve(doc, e)["value"]));
        }
        let ct = if media.contains('*') { "application/octet-stream".to_string() } else { media.clone() };
        if examples.is_empty() {
            out.push((Some(ct.clone()), b"\xd4\xc3\xb2\xa1 not an example".to_vec(), false));
        }
        for ex in examples {
            let bytes = match ex {
                Value::String(s) => s.clone().into_bytes(),
                Value::Object(fields) if media == "application/x-www-form-urlencoded" => {
                    let pairs: Vec<(&str, &str)> = fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str().expect("form fields are strings")))
                        .collect();
                    form_encode(&pairs).into_bytes()
                }
                other => serde_json::to_vec(other).unwrap(),
            };
            out.push((Some(ct.clone()), bytes, true));
        }
    }
    out
}

/// `application/x-www-form-urlencoded`, as a browser or HTTP client encodes a form.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');
    let enc = |s: &str| utf8_percent_encode(s, FORM).to_string();
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// Checks one answer against the operation's documented responses; returns the status.
async fn check_answer(doc: &Value, op: &Value, what: &str, resp: reqwest::Response) -> u16 {
    let status = resp.status().as_u16();
    assert_ne!(status, 405, "{what}: the method is not routed");
    let documented = op["responses"].get(status.to_string()).map(|r| resolve(doc, r));
    let documented = documented.unwrap_or_else(|| panic!("{what}: status {status} is not documented"));
    for (name, header) in documented.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let got = resp.headers().get(name.as_str()).and_then(|v| v.to_str().ok());
        let got = got.unwrap_or_else(|| panic!("{what}: {status} lacks its documented {name} header"));
        let schema = resolve(doc, &resolve(doc, header)["schema"]);
        if let Some(want) = schema.get("const").and_then(Value::as_str) {
            assert_eq!(got, want, "{what}: {name}");
        }
    }
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.bytes().await.expect("body");
    let Some(content) = documented.get("content").and_then(Value::as_object) else {
        assert!(body.is_empty(), "{what}: {status} has a body but none is documented");
        return status;
    };
    let media = content.get(&ct).unwrap_or_else(|| panic!("{what}: content type {ct:?} not documented for {status}"));
    if ct == "application/json" {
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
        let schema = resolve(doc, &media["schema"]);
        for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let key = key.as_str().unwrap();
            assert!(v.get(key).is_some(), "{what}: {status} body lacks the required {key:?}: {v}");
        }
        for (key, prop) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            if let (Some(allowed), Some(got)) = (prop.get("enum").and_then(Value::as_array), v.get(key)) {
                assert!(allowed.contains(got), "{what}: {key} = {got}, not one of {allowed:?}");
            }
            if let (Some(want), Some(got)) = (prop.get("const"), v.get(key)) {
                assert_eq!(got, want, "{what}: {key}");
            }
        }
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_service_answers_every_documented_operation_as_documented() {
    let doc = document();
    let app = TestApp::start(Db::Sqlite).await;
    let (ship_addr, ship) =
        cdrmunch::ship::metrics::serve(SocketAddr::from(([127, 0, 0, 1], 0)), cdrmunch::telemetry::install())
            .await
            .expect("ship's metrics listener binds");
    for (listener, endpoint) in ROUTES {
        let addr = match listener {
            Listener::Intake => app.app().addr,
            Listener::Metrics => app.app().metrics_addr.expect("metrics listener on"),
            Listener::Ship => ship_addr,
        };
        let op = &doc["paths"][endpoint.path()][endpoint.method().as_str().to_ascii_lowercase()];
        for (ct, body, example) in requests(&doc, op) {
            let what = format!("{} {} on {listener:?} ({ct:?})", endpoint.method(), endpoint.path());
            let mut req = app.http.request(endpoint.method(), format!("http://{addr}{}", endpoint.path()));
            if let Some(ct) = ct {
                req = req.header("content-type", ct).body(body);
            }
            let status = check_answer(&doc, op, &what, req.send().await.expect("request")).await;
            assert_ne!(status, 404, "{what}: the route is not served");
            assert!(!example || status == 200, "{what}: the example was refused with {status}");
        }
        if endpoint.method() == Method::POST {
            // a refusal, with the body and headers its answer documents
            let (query, body) = if *endpoint == Endpoint::Cdr { ("", "") } else { ("?uuid=nope", "x") };
            let what = format!("refused {} {}{query}", endpoint.method(), endpoint.path());
            let req = app.http.post(format!("http://{addr}{}{query}", endpoint.path())).body(body);
            assert_eq!(check_answer(&doc, op, &what, req.send().await.unwrap()).await, 400, "{what}");
        }
        if *endpoint == Endpoint::OpenApi {
            let served: Value =
                app.http.get(format!("http://{addr}/openapi.json")).send().await.unwrap().json().await.unwrap();
            assert_eq!(served, doc, "/openapi.json is deploy/openapi.yaml as JSON");
        }
    }
    ship.abort();
    app.stop().await;
}

/// `CDRMUNCH_TEST_VENV`'s tool `name`, or a failure saying how to get it.
fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("CDRMUNCH_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cdrmunch/test-venv")
    });
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} not found: the test venv needs the PyPI package openapi-spec-validator \
         (scripts/test.sh installs it; by hand: {}/bin/pip install 'openapi-spec-validator>=0.7,<1')",
        bin.display(),
        venv.display()
    );
    bin
}

/// Runs `cmd`; its standard output, or a failure with everything it said.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let said = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        // the validator prints the whole document after its verdict
        panic!("{cmd:?} failed:\n{}", said.chars().take(4000).collect::<String>());
    }
    stdout
}

#[test]
fn the_document_is_valid_openapi_3_1_and_served_as_the_yaml_reads() {
    let validator = venv_tool("openapi-spec-validator");
    let served = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(served.path(), DOCUMENT).unwrap();
    for file in [yaml_path(), served.path().to_path_buf()] {
        run(Command::new(&validator).args(["--schema", "3.1", "--validation-errors", "all"]).arg(&file));
    }
    // another YAML parser (PyYAML, the validator's own) reads the file as build.rs did
    let python = venv_tool("python3");
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), sys.stdout)";
    let json = run(Command::new(python).args(["-c", script]).arg(yaml_path()));
    let pyyaml: Value = serde_json::from_str(&json).expect("PyYAML's JSON");
    assert_eq!(pyyaml, document(), "PyYAML and build.rs read deploy/openapi.yaml differently");
}

/// The answers that depend on the configuration: 401 under `server.basic_auth`, 404 without
/// the intake role (where the probes and `/openapi.json` are still served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_roles_are_answered_as_documented() {
    let doc = document();
    fn auth(s: &mut Settings) {
        s.server.basic_auth = Some(cdrmunch::config::BasicAuth { user: "fs".into(), password: "s3cret".into() });
    }
    fn no_intake(s: &mut Settings) {
        s.app.roles = vec!["distiller".into(), "tasks".into()];
    }
    type Tweak = fn(&mut Settings);
    let tweaks: [(Tweak, u16); 2] = [(auth, 401), (no_intake, 404)];
    for (tweak, want) in tweaks {
        let app = TestApp::start_with(Db::Sqlite, tweak, Default::default(), None).await;
        for (listener, endpoint) in ROUTES.iter().filter(|(l, _)| *l == Listener::Intake) {
            let op = &doc["paths"][endpoint.path()][endpoint.method().as_str().to_ascii_lowercase()];
            let what = format!("{} {} on {listener:?}, expecting {want}", endpoint.method(), endpoint.path());
            let req = app.http.request(endpoint.method(), app.url(endpoint.path())).body(Vec::new());
            let status = check_answer(&doc, op, &what, req.send().await.unwrap()).await;
            let expected = if endpoint.method() == Method::POST { want } else { 200 };
            assert_eq!(status, expected, "{what}");
        }
        app.stop().await;
    }
}
