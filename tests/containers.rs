//! The container image, compose, Kubernetes and ECS files in deploy/. No image can be built
//! or pulled here, so each file is checked by the tool that owns its format (hadolint, the
//! compose specification's schema, kubernetes-validate, botocore's ECS model), and against
//! the service: every config key they set is a known key, every `${VAR}` the configs need
//! is provided, every port, path and probe is one the service uses and answers.
//! `the_checks_catch_mistakes` shows each check failing on a broken copy.

#[path = "containers/files.rs"]
mod files;
#[path = "containers/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use files::*;
use serde_json::Value;
use support::*;

#[test]
fn the_compose_file_is_valid_compose() {
    let (ok, said) = compose_schema(&repo("deploy/compose.yaml"));
    assert!(ok, "check-jsonschema (compose specification): {said}");
}

#[test]
fn the_kubernetes_manifests_validate_strictly_as_written_and_as_kustomize_builds_them() {
    let k = kustomization();
    assert_eq!(k["kind"], "Kustomization");
    let dir = repo("deploy/kubernetes");
    let listed: BTreeSet<String> =
        k["resources"].as_array().expect("resources").iter().map(|r| s(r, "resource").to_string()).collect();
    let mut manifests = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            // the example Secret is validated but never applied with the base (real values)
            assert!(
                listed.contains(&name) || name == "secret.example.yaml",
                "{name} is not in kustomization.yaml's resources"
            );
            manifests.push(e.path());
        }
    }
    assert!(!listed.contains("secret.example.yaml"), "the example Secret must not be in the base");
    for r in &listed {
        assert!(dir.join(r).is_file(), "kustomization.yaml names {r}, which does not exist");
    }
    for g in k["configMapGenerator"].as_array().expect("configMapGenerator") {
        for f in g["files"].as_array().into_iter().flatten() {
            let f = s(f, "file").rsplit('=').next().unwrap();
            assert!(dir.join(f).is_file(), "configMapGenerator {}: {f} does not exist", g["name"]);
        }
    }
    manifests.sort();
    kubernetes_validate(&manifests).unwrap_or_else(|said| panic!("kubernetes-validate --strict: {said}"));

    let (ok, built) = run(Command::new(kubectl()).arg("kustomize").arg(&dir));
    assert!(ok, "kubectl kustomize: {built}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("built.yaml");
    std::fs::write(&out, &built).unwrap();
    kubernetes_validate(std::slice::from_ref(&out)).unwrap_or_else(|said| panic!("the built base: {said}"));
    let kinds: BTreeSet<String> = yaml_docs(&out).iter().map(|d| s(&d["kind"], "kind").to_string()).collect();
    for kind in ["ConfigMap", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    {
        assert!(kinds.contains(kind), "the base builds no {kind}: {kinds:?}");
    }
}

#[test]
fn the_ecs_task_definitions_are_valid_register_task_definition_input() {
    let files = ecs_files();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let errors = ecs_validate(&paths);
    for (file, errs) in &errors {
        assert!(errs.is_empty(), "{file}: {errs:?}");
    }
    let families: BTreeSet<String> = files
        .iter()
        .map(|f| {
            let td: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            // Fargate's cpu/memory pairs for the sizes used here, and its stop timeout cap
            let (cpu, mem) = (s(&td["cpu"], "cpu"), s(&td["memory"], "memory").parse::<u32>().unwrap());
            let mems = match cpu {
                "512" => 1024..=4096,
                "1024" => 2048..=8192,
                "2048" => 4096..=16384,
                "4096" => 8192..=30720,
                other => panic!("{}: cpu {other}", f.display()),
            };
            assert!(mems.contains(&mem) && mem % 1024 == 0, "{}: Fargate has no {cpu}/{mem}", f.display());
            let c = &td["containerDefinitions"][0];
            assert!(c["stopTimeout"].as_u64().is_some_and(|t| (30..=120).contains(&t)), "stopTimeout: drain is 30 s");
            assert_eq!(c["logConfiguration"]["logDriver"], "awslogs");
            s(&td["family"], "family").to_string()
        })
        .collect();
    let want: BTreeSet<String> = cdrmunch::config::ROLES.iter().map(|r| format!("cdrmunch-{r}")).collect();
    assert_eq!(families, want, "one task definition per role");
}

#[test]
fn the_dockerfile_passes_hadolint_and_its_build_context_holds_what_it_copies() {
    let (ok, said) = hadolint(&repo("deploy/Dockerfile"));
    assert!(ok, "hadolint: {said}");
    let image = Image::load();
    let builder = &image.stages[0];
    assert!(builder[0].args.starts_with("rust:"), "builder: {}", builder[0].args);
    assert!(
        builder.iter().any(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked")),
        "the builder runs cargo build --release --locked"
    );
    assert_eq!(image.runtime()[0].args, "debian:bookworm-slim");
    let user = image.one("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|u| u > 0), "USER {user}: numeric and not root");
    assert!(image.one("ENTRYPOINT").contains("tini"), "tini as PID 1");
    let ignore = read(".dockerignore");
    for stage in &image.stages {
        for ins in stage.iter().filter(|i| i.keyword == "COPY") {
            let (flags, sources, _) = copy_parts(ins);
            if flags.iter().any(|f| f.starts_with("--from")) {
                continue;
            }
            for src in sources {
                assert!(repo(&src).exists(), "Dockerfile:{}: COPY {src}: no such file", ins.line);
                assert!(context_sends(&ignore, &src), "Dockerfile:{}: .dockerignore leaves out {src}", ins.line);
            }
        }
    }
    assert!(!context_sends(&ignore, "target"), ".dockerignore sends target/");
    // every file cargo needs: the manifest's targets, compiled-in files, migrations
    let needs =
        ["Cargo.lock", "build.rs", "deploy/openapi.yaml", "src/main.rs", "benches/tasks.rs", "config/field-map.conf"];
    for needed in needs.into_iter().chain(["migrations/mysql"]) {
        assert!(context_sends(&ignore, needed), ".dockerignore leaves out {needed}");
        let copied = image.stages[0].iter().filter(|i| i.keyword == "COPY").flat_map(|i| copy_parts(i).1);
        assert!(
            copied
                .into_iter()
                .any(|src| needed == src || needed.starts_with(&format!("{}/", src.trim_end_matches('/')))),
            "the builder does not copy {needed}"
        );
    }
}

/// Each deployment's environment resolves the image's config to a valid one (a typo'd key
/// is a warning, an unset `${VAR}` an error: both fail), running the role it is meant for.
#[test]
fn every_deployment_resolves_to_a_valid_config_with_the_environment_it_provides() {
    let image = Image::load();
    for (role, svc) in compose_services() {
        let env = compose_env(&svc);
        check_env_names(&format!("compose cdrmunch-{role}"), &image, &env);
        let site = svc["volumes"].as_array().expect("volumes").iter().find_map(|v| {
            let (src, rest) = s(v, "volume").split_once(':')?;
            (rest.split(':').next() == Some(&image.config_dir_mount())).then(|| repo(&format!("deploy/{src}")))
        });
        let config = resolve_for(&image, site.as_deref(), &env);
        assert_eq!(config["app.roles"], role, "compose cdrmunch-{role}");
    }
    let objects = k8s_objects();
    for w in workloads(&objects) {
        let name = s(&w["metadata"]["name"], "name");
        let env = k8s_env(w);
        check_env_names(&format!("kubernetes {name}"), &image, &env);
        let site = repo("deploy/kubernetes");
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(site.join("cdrmunch.conf"), tmp.path().join("cdrmunch.conf")).unwrap();
        let config = resolve_for(&image, Some(tmp.path()), &env);
        assert_eq!(Some(config["app.roles"].as_str()), name.strip_prefix("cdrmunch-"), "{name}");
        assert_eq!(config["app.instance_id"], format!("{name}-0"), "{name}: one instance id per pod");
    }
    for file in ecs_files() {
        let c = ecs_container(&file);
        let env = ecs_env(&c);
        check_env_names(&file.display().to_string(), &image, &env);
        let config = resolve_for(&image, None, &env);
        assert!(file.ends_with(format!("cdrmunch-{}.json", config["app.roles"])), "{}", file.display());
        assert!(config["cdrdb.url"].starts_with("mysql://"), "ECS runs on Aurora MySQL");
    }
}

#[test]
fn ports_mounts_and_probes_agree_with_the_config() {
    let image = Image::load();
    let config = base_config(&image);
    let (server, metrics) = (port(&config, "server.port"), port(&config, "metrics.port"));
    let data_dir = image.env["CDRMUNCH_DATA_DIR"].clone();
    let uid: u64 = image.one("USER").split(':').next().unwrap().parse().unwrap();

    // the image
    let exposed: BTreeSet<u16> = image.one("EXPOSE").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(exposed, BTreeSet::from([server, metrics]), "EXPOSE");
    let hc = image.one("HEALTHCHECK");
    let words: Vec<&str> = hc.split(['[', ']', ',', '"', ' ']).filter(|w| !w.is_empty()).collect();
    assert_eq!(url_port_path(&health_url(&words)), (server, "/health".into()), "HEALTHCHECK");
    assert!(image.one("VOLUME").contains(&format!("\"{data_dir}\"")), "VOLUME {data_dir}");

    // compose
    let c = compose();
    for (name, svc) in c["services"].as_object().unwrap() {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let src = s(v, "volume").split(':').next().unwrap();
            if src.starts_with('.') {
                assert!(repo(&format!("deploy/{src}")).exists(), "compose {name} mounts {src}: no such file");
            }
        }
        if let Some(build) = svc.get("build") {
            let ctx = repo(&format!("deploy/{}", s(&build["context"], "context")));
            assert!(ctx.join(s(&build["dockerfile"], "dockerfile")).is_file(), "compose {name}: dockerfile");
        }
    }
    let services = compose_services();
    assert_eq!(services.keys().map(String::as_str).collect::<Vec<_>>(), ["distiller", "intake", "tasks"]);
    for (role, svc) in &services {
        for p in svc["ports"].as_array().into_iter().flatten() {
            let container_port: u16 = s(p, "port").rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(container_port, server, "compose cdrmunch-{role} publishes {p}");
        }
    }
    let prom = yaml(&repo("deploy/compose/prometheus.yml"));
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["job_name"], "cdrmunch", "the alert rules' up{{job=\"cdrmunch\"}}");
    let targets: BTreeSet<String> = job["static_configs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let (host, p) = s(t, "target").rsplit_once(':').unwrap();
            assert_eq!(p.parse::<u16>().unwrap(), metrics, "prometheus target {t}");
            host.strip_prefix("cdrmunch-").expect("a cdrmunch service").to_string()
        })
        .collect();
    assert_eq!(targets, services.keys().cloned().collect(), "Prometheus scrapes every cdrmunch service");
    let prom_mounts: Vec<&str> =
        c["services"]["prometheus"]["volumes"].as_array().unwrap().iter().map(|v| s(v, "volume")).collect();
    for rule in prom["rule_files"].as_array().unwrap() {
        let mount =
            prom_mounts.iter().find(|m| m.ends_with(&format!(":{}:ro", s(rule, "rule")))).expect("rule mounted");
        assert_eq!(mount.split(':').next(), Some("./prometheus/cdrmunch-alerts.yml"), "the shipped rules");
    }
    let provider = yaml(&repo("deploy/grafana/provisioning/dashboards/cdrmunch.yaml"));
    let dash_dir = s(&provider["providers"][0]["options"]["path"], "provider path");
    let grafana: Vec<&str> =
        c["services"]["grafana"]["volumes"].as_array().unwrap().iter().map(|v| s(v, "volume")).collect();
    assert!(
        grafana.iter().any(|v| v.starts_with("./grafana/cdrmunch-dashboard.json:") && v.contains(dash_dir)),
        "Grafana's provider reads {dash_dir}, where the dashboard is mounted: {grafana:?}"
    );

    // Kubernetes
    let objects = k8s_objects();
    let gens: Vec<String> = kustomization()["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| s(&g["name"], "name").to_string())
        .collect();
    let services_of: Vec<&Value> = of_kind(&objects, "Service");
    let roles: BTreeSet<String> = workloads(&objects)
        .iter()
        .map(|w| s(&w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"], "role").to_string())
        .collect();
    assert_eq!(roles, cdrmunch::config::ROLES.iter().map(|r| r.to_string()).collect(), "a workload per role");
    for w in workloads(&objects) {
        let name = s(&w["metadata"]["name"], "name");
        let pod = &w["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(uid), "{name}: the image's USER");
        let c = &pod["containers"][0];
        let ports: BTreeMap<&str, u64> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (s(&p["name"], "port name"), p["containerPort"].as_u64().unwrap()))
            .collect();
        assert_eq!(ports, BTreeMap::from([("http", server as u64), ("metrics", metrics as u64)]), "{name}");
        for (probe, path) in [("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{name} {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{name} {probe}");
        }
        let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (s(&m["mountPath"], "mountPath"), s(&m["name"], "name")))
            .collect();
        let config_vol = mounts.get(image.config_dir_mount().as_str()).expect("the site config mounted");
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == *config_vol).unwrap();
        assert!(gens.iter().any(|g| volume["configMap"]["name"] == *g), "{name}: config from a generated ConfigMap");
        assert!(mounts.contains_key(data_dir.as_str()), "{name}: {data_dir} mounted");
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(labels_match(&w["spec"]["selector"]["matchLabels"], labels), "{name}: selector");
        let pdbs = of_kind(&objects, "PodDisruptionBudget");
        let covering = pdbs.iter().filter(|p| labels_match(&p["spec"]["selector"]["matchLabels"], labels)).count();
        assert_eq!(covering, 1, "{name}: one PodDisruptionBudget");
        if w["kind"] == "StatefulSet" {
            let svc =
                services_of.iter().find(|sv| sv["metadata"]["name"] == w["spec"]["serviceName"]).expect("serviceName");
            assert_eq!(svc["spec"]["clusterIP"], "None", "{name}: its serviceName is headless");
        }
    }
    for svc in &services_of {
        let name = s(&svc["metadata"]["name"], "name");
        let selected: Vec<&Value> = workloads(&objects)
            .into_iter()
            .filter(|w| labels_match(&svc["spec"]["selector"], &w["spec"]["template"]["metadata"]["labels"]))
            .collect();
        assert!(!selected.is_empty(), "Service {name} selects no pods");
        for p in svc["spec"]["ports"].as_array().unwrap() {
            let want = if p["targetPort"] == "http" { server } else { metrics };
            assert_eq!(p["port"].as_u64(), Some(want as u64), "Service {name}");
            for w in &selected {
                let c = &w["spec"]["template"]["spec"]["containers"][0];
                assert!(c["ports"].as_array().unwrap().iter().any(|cp| cp["name"] == p["targetPort"]), "{name}");
            }
        }
    }
    let sms = of_kind(&objects, "ServiceMonitor");
    assert_eq!(sms.len(), 1);
    let sm = &sms[0]["spec"];
    let scraped = services_of.iter().find(|sv| labels_match(&sm["selector"]["matchLabels"], &sv["metadata"]["labels"]));
    let scraped = scraped.expect("the ServiceMonitor selects a Service");
    assert_eq!(scraped["metadata"]["labels"][s(&sm["jobLabel"], "jobLabel")], "cdrmunch", "job=\"cdrmunch\"");
    for e in sm["endpoints"].as_array().unwrap() {
        assert!(scraped["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == e["port"]), "{e}");
    }
    let hpas = of_kind(&objects, "HorizontalPodAutoscaler");
    assert_eq!(hpas[0]["spec"]["scaleTargetRef"]["name"], "cdrmunch-distiller");
    for m in hpa_metrics() {
        assert!(cdrmunch::telemetry::ALL.contains(&m.as_str()), "the HPA scales on {m}, which is no metric of ours");
    }

    // ECS
    for file in ecs_files() {
        let c = ecs_container(&file);
        let ports: BTreeSet<u16> =
            c["portMappings"].as_array().unwrap().iter().map(|p| p["containerPort"].as_u64().unwrap() as u16).collect();
        assert_eq!(ports, BTreeSet::from([server, metrics]), "{}", file.display());
        let words: Vec<&str> = c["healthCheck"]["command"].as_array().unwrap().iter().map(|w| s(w, "w")).collect();
        assert_eq!(url_port_path(&health_url(&words)), (server, "/health".into()), "{}", file.display());
        let user = s(&c["user"], "user").split(':').next().unwrap().parse::<u64>().unwrap();
        assert_eq!(user, uid, "{}: the image's USER", file.display());
        assert!(c["mountPoints"].as_array().unwrap().iter().any(|m| m["containerPath"] == data_dir.as_str()));
    }
}

/// The real binary on the container's config — SQLite and directories in a temp dir instead
/// of the deployment's database and S3, loopback instead of 0.0.0.0 — answers every probed
/// path and exports the autoscaler's metric.
#[tokio::test]
async fn the_container_config_answers_the_probes_and_exports_the_autoscaled_metric() {
    let image = Image::load();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("image");
    let mut env = image.lay_out(&root);
    let d = tmp.path().display();
    for (k, v) in [
        ("CDRMUNCH_CDRDB_URL", format!("sqlite://{d}/cdrmunch.db")),
        ("CDRMUNCH_BILLINGDB_URL", format!("sqlite://{d}/billing.db")),
        ("CDRMUNCH_CDR_STORE", format!("{d}/cdr")),
        ("CDRMUNCH_NCDR_STORE", format!("{d}/ncdr")),
    ] {
        env.insert(k.into(), v);
    }
    std::fs::create_dir_all(&env["CDRMUNCH_DATA_DIR"]).unwrap();
    let (http_port, metrics_port) = (free_port(), free_port());
    let conf = tmp.path().join("test.conf");
    let site = root.join(image.config_path().strip_prefix("/").unwrap());
    std::fs::write(
        &conf,
        format!(
            "@require = {}\nserver.address = 127.0.0.1\nserver.port = {http_port}\n\
             metrics.address = 127.0.0.1\nmetrics.port = {metrics_port}\n",
            site.display()
        ),
    )
    .unwrap();
    let resolved = resolve(&conf, &env).unwrap_or_else(|said| panic!("{said}"));
    for (k, v) in &resolved {
        assert!(!v.starts_with('/') || v.starts_with(&*d.to_string()), "{k} = {v} is outside the test's dir");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrmunch"));
    cmd.args(["serve", "--config"]).arg(&conf).env_clear().envs(&env).env("RUST_LOG", "cdrmunch=warn");
    let _server = Server(cmd.stdout(std::process::Stdio::null()).spawn().expect("spawn cdrmunch serve"));

    let http = reqwest::Client::new();
    let (probed, scraped) = probed_paths();
    for path in &probed {
        let url = format!("http://127.0.0.1:{http_port}{path}");
        eventually(&http, &url, |_| true).await;
    }
    let hpa = hpa_metrics();
    for path in &scraped {
        let url = format!("http://127.0.0.1:{metrics_port}{path}");
        // the queue gauges appear once the metrics actor has read the queue
        eventually(&http, &url, |body| hpa.iter().all(|m| body.lines().any(|l| l.starts_with(&format!("{m} "))))).await;
    }
}

/// GETs `url` until it answers 200 with a body `ok` accepts (bounded).
async fn eventually(http: &reqwest::Client, url: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            if status.is_success() && ok(&body) {
                return;
            }
            last = format!("{status}: {}", body.chars().take(2000).collect::<String>());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer as expected within 60 s; last: {last}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process, killed and reaped when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every check above fails on a broken copy of the file it checks.
#[test]
fn the_checks_catch_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = |rel: &str, name: &str, from: &str, to: &str| -> PathBuf {
        let text = read(rel);
        assert!(text.contains(from), "{rel} has no {from}");
        let path = tmp.path().join(name);
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        path
    };
    let compose = broken("deploy/compose.yaml", "compose.yaml", "restart:", "restrat:");
    assert!(!compose_schema(&compose).0, "a misspelt compose key passed");

    let intake = broken("deploy/kubernetes/intake.yaml", "intake.yaml", "containerPort:", "containerPrt:");
    assert!(kubernetes_validate(&[intake]).is_err(), "a misspelt field passed --strict");
    let hpa = broken("deploy/kubernetes/hpa.yaml", "hpa.yaml", "HorizontalPodAutoscaler", "HorizontalPodAutoscalr");
    assert!(kubernetes_validate(&[hpa]).is_err(), "an unknown kind passed");

    let member = broken("deploy/ecs/cdrmunch-intake.json", "member.json", "\"healthCheck\"", "\"healthcheck\"");
    let enum_value = broken("deploy/ecs/cdrmunch-intake.json", "enum.json", "\"awsvpc\"", "\"awsvcp\"");
    let missing = broken("deploy/ecs/cdrmunch-intake.json", "missing.json", "\"family\"", "\"famly\"");
    let errors = ecs_validate(&[&member, &enum_value, &missing]);
    assert_eq!(errors.len(), 3);
    for (file, errs) in &errors {
        assert!(!errs.is_empty(), "{file} passed");
    }

    let dockerfile = broken("deploy/Dockerfile", "Dockerfile", "USER 10001:10001", "USER root");
    assert!(!hadolint(&dockerfile).0, "hadolint let USER root pass");
    assert!(!context_sends("*\n!src/\n", "config/field-map.conf"));
    assert!(context_sends("*\n!src/\n", "src/main.rs"));

    // an unknown key, a required variable unset, a variable no config reads
    let image = Image::load();
    let root = tmp.path().join("image");
    let env = image.lay_out(&root);
    let site = root.join(image.config_path().strip_prefix("/").unwrap());
    let mut with_db = env.clone();
    with_db.insert("CDRMUNCH_CDRDB_URL".into(), "sqlite:///nonexistent/a.db".into());
    with_db.insert("CDRMUNCH_BILLINGDB_URL".into(), "sqlite:///nonexistent/b.db".into());
    assert!(resolve(&site, &with_db).is_ok());
    let said = resolve(&site, &env).unwrap_err();
    assert!(said.contains("CDRMUNCH_CDRDB_URL"), "{said}");
    std::fs::write(&site, format!("{}\nserver.prot = 8080\n", std::fs::read_to_string(&site).unwrap())).unwrap();
    let said = resolve(&site, &with_db).unwrap_err();
    assert!(said.contains("server.prot"), "{said}");
    let mut typo = BTreeMap::new();
    typo.insert("CDRMUNCH_CDRDB_URL".to_string(), "x".to_string());
    typo.insert("CDRMUNCH_BILLINGDB_URL".to_string(), "x".to_string());
    typo.insert("CDRMUNCH_S3_ENDPONT".to_string(), "http://s3".to_string());
    let caught = std::panic::catch_unwind(|| check_env_names("a typo", &image, &typo));
    assert!(caught.is_err(), "CDRMUNCH_S3_ENDPONT passed");
    typo.remove("CDRMUNCH_S3_ENDPONT");
    typo.remove("CDRMUNCH_BILLINGDB_URL");
    let caught = std::panic::catch_unwind(|| check_env_names("no billing db", &image, &typo));
    assert!(caught.is_err(), "a missing CDRMUNCH_BILLINGDB_URL passed");
}
