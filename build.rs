//! Converts `deploy/openapi.yaml` to the JSON `GET /openapi.json` serves: a document that
//! does not parse fails the build, never the running service.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest.join("deploy/openapi.yaml");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");
    let yaml = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let doc: serde_json::Value =
        serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", source.display()));
    let version = doc.get("openapi").and_then(serde_json::Value::as_str).unwrap_or_default();
    assert!(version.starts_with("3.1."), "{}: openapi: 3.1.x expected, found {version:?}", source.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("openapi.json");
    let json = serde_json::to_string(&doc).expect("a JSON value serializes");
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
