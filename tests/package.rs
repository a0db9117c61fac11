//! The Debian package, for real: `cargo deb` packages this build's binary with deploy/debian,
//! dpkg installs it here, `systemd-analyze` verifies its units, and the packaged binary runs as
//! the packaged user from the packaged config exactly as each unit's `ExecStart=` starts it
//! (all roles in one process, then one process per role) until a posted CDR is normalized and
//! its tasks done. Then dpkg removes and purges it, and nothing of it is left.
//!
//! Needs root and dpkg (skipped, saying so, without them) and cargo-deb (scripts/test.sh
//! installs it). Only loopback ports; no systemd needed (the test does what the unit says).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The test's packages carry this in their version, so a leftover of a killed run is told
/// apart from a real installation (which the test refuses to touch).
const TEST_REVISION: &str = "0~packagetest";
const UNITS: &str = "/usr/lib/systemd/system";
const BOUND: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn exists(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// dpkg's status of the cdrmunch package and its version, e.g. ("install ok installed", "0.1.0-1").
fn package_state() -> Option<(String, String)> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}|${Version}", "cdrmunch"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once('|')?;
    (out.status.success() && !status.ends_with("not-installed")).then(|| (status.into(), version.into()))
}

fn user_exists(name: &str) -> bool {
    Command::new("getent").args(["passwd", name]).output().is_ok_and(|o| o.status.success())
}

fn group_exists(name: &str) -> bool {
    Command::new("getent").args(["group", name]).output().is_ok_and(|o| o.status.success())
}

/// Purges the package however the test ends, so a failure leaves no service user or /etc files.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if package_state().is_some() {
            let _ = Command::new("dpkg").args(["--purge", "cdrmunch"]).output();
        }
        let _ = fs::remove_dir_all("/run/cdrmunch");
    }
}

/// What the test needs of a unit file, with `%i` already replaced.
struct Unit {
    exec_start: Vec<String>,
    environment: Vec<(String, String)>,
    user: String,
    group: String,
    /// RuntimeDirectory= and its mode
    runtime_dir: Option<(String, String)>,
}

fn unit(file: &str, instance: &str) -> Unit {
    let text = fs::read_to_string(Path::new(UNITS).join(file)).unwrap().replace("%i", instance);
    let maybe = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('='))).map(|v| v.trim().to_string())
    };
    let value = |key: &str| maybe(key).unwrap_or_else(|| panic!("{file}: no {key}="));
    let environment = text
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
        .collect();
    Unit {
        exec_start: value("ExecStart").split_whitespace().map(String::from).collect(),
        environment,
        user: value("User"),
        group: value("Group"),
        runtime_dir: maybe("RuntimeDirectory").map(|d| (d, value("RuntimeDirectoryMode"))),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The packaged binary run as a unit would run it; killed if the test fails halfway.
struct Service {
    name: String,
    child: Child,
    notify: UnixDatagram,
    log: PathBuf,
    port: u16,
    pid_file: Option<PathBuf>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// `cdrmunch serve` as `file`'s ExecStart= runs it, in its RuntimeDirectory=, with only the
    /// ports moved to free loopback ones. Returns once it sent READY=1 and wrote its pid file.
    fn serve(file: &str, instance: &str, scratch: &Path) -> Service {
        let unit = unit(file, instance);
        let port = free_port();
        let (name, argv, overlay, env) = with_overlay(file, &unit, instance, scratch, |env| {
            format!(
                "server.address@{env} = 127.0.0.1\nserver.port@{env} = {port}\nmetrics.port@{env} = {}\n",
                free_port()
            )
        });
        let resolved = check_config(&overlay, &env);
        let pid_file: PathBuf =
            resolved.lines().find_map(|l| l.strip_prefix("app.pid_file = ")).expect("app.pid_file").into();
        let (dir, mode) = unit.runtime_dir.clone().unwrap_or_else(|| panic!("{file}: no RuntimeDirectory="));
        let runtime = format!("/run/{dir}");
        assert!(pid_file.starts_with(&runtime), "{name}: pid file {} not under {runtime}", pid_file.display());
        // RuntimeDirectory=, as systemd creates it
        run(Command::new("install").args(["-d", "-o", &unit.user, "-g", &unit.group, "-m", &mode, &runtime]));
        let service = Service::launch(name, &unit.user, &unit, &argv, scratch, port, Some(pid_file));
        let pid_file = service.pid_file.as_ref().unwrap();
        let pid = fs::read_to_string(pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        assert_eq!(pid.trim(), service.child.id().to_string(), "{}: pid file", service.name);
        service
    }

    /// `cdrmunch ship` as cdrmunch-ship.service runs it, shipping `dir` to `intake`, as `user`
    /// (the unit's freeswitch does not exist here). Returns once it sent READY=1.
    fn ship(scratch: &Path, dir: &Path, done: &Path, intake: u16, user: &str) -> Service {
        let file = "cdrmunch-ship.service";
        let unit = unit(file, "");
        let (name, argv, _, _) = with_overlay(file, &unit, "ship", scratch, |env| {
            format!(
                "ship.dirs@{env} = {}\nship.done_dir@{env} = {}\nship.urls@{env} = http://127.0.0.1:{intake}/api/v2/cdr\n\
                 ship.metrics_address@{env} = 127.0.0.1\nship.metrics_port@{env} = {}\n",
                dir.display(),
                done.display(),
                free_port()
            )
        });
        Service::launch(name, user, &unit, &argv, scratch, 0, None)
    }

    /// Runs `argv` as `user` (and its group) with the unit's Environment= and a notify socket,
    /// as systemd does, and waits for READY=1.
    fn launch(
        name: String,
        user: &str,
        unit: &Unit,
        argv: &[String],
        scratch: &Path,
        port: u16,
        pid_file: Option<PathBuf>,
    ) -> Service {
        let tag = name.replace(['@', '.', ':'], "-");
        let socket_name = format!("cdrmunch-package-test-{}-{tag}", std::process::id());
        let notify = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket_name.as_bytes()).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let log = scratch.join(format!("{tag}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("setpriv")
            .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(unit.environment.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", format!("@{socket_name}"))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("setpriv");
        let mut service = Service { name, child, notify, log, port, pid_file };
        service.expect_notification("READY=1");
        service
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn expect_notification(&mut self, state: &str) {
        let deadline = Instant::now() + BOUND;
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = self.notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == state) {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // what it sent just before exiting is still queued
                self.notify.set_nonblocking(true).unwrap();
                while let Ok(n) = self.notify.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == state) {
                        return;
                    }
                }
                panic!("{} exited ({status}) before {state}:\n{}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "{}: no {state} within {BOUND:?}:\n{}", self.name, self.log());
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    /// SIGTERM, as systemctl stop sends it: STOPPING=1, exit 0, pid file removed.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        self.expect_notification("STOPPING=1");
        let deadline = Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{}: still running {BOUND:?} after SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{} stopped with {status}:\n{}", self.name, self.log());
        if let Some(pid_file) = &self.pid_file {
            assert!(!pid_file.exists(), "{}: pid file left behind", self.name);
        }
    }

    /// POSTs a CDR file as mod_xml_cdr does (`cdr=<urlencoded XML>`, `?uuid=`); the status code.
    fn post_cdr(&self, file: &Path) -> u16 {
        let xml = fs::read(file).unwrap();
        let leg = file.file_name().unwrap().to_str().unwrap().trim_end_matches(".cdr.xml");
        let body = format!("cdr={}", percent_encoding::percent_encode(&xml, percent_encoding::NON_ALPHANUMERIC));
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(BOUND)).unwrap();
        write!(
            conn,
            "POST /api/v2/cdr?uuid={leg} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("answer: {answer}"))
    }
}

/// `cdrmunch why --json` as the service user, with the packaged config, until the leg is
/// normalized and every task it got is done.
fn wait_processed(uuid: &str, services: &[&Service]) -> serde_json::Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let out = run(Command::new("setpriv")
            .args(["--reuid", "cdrmunch", "--regid", "cdrmunch", "--init-groups", "--", "/usr/bin/cdrmunch"])
            .args(["why", "--json", "--config", "/etc/cdrmunch/cdrmunch.conf", "--env", "prod", uuid])
            .current_dir("/"));
        let story: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let tasks = story["tasks"].as_array().unwrap();
        if !story["normalized"].is_null() && !tasks.is_empty() && tasks.iter().all(|t| t["done"] == "y") {
            return story;
        }
        if Instant::now() > deadline {
            let logs: Vec<_> = services.iter().map(|s| format!("--- {}\n{}", s.name, s.log())).collect();
            panic!("{uuid} not processed within {BOUND:?}: {story:#}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The unit's ExecStart= with its `--config` swapped for a file that requires it and adds
/// `extra(env)` (keys for the unit's `--env`), after checking the unit's own config. Returns
/// the service's name, its argv, the overlay's path and the env.
fn with_overlay(
    file: &str,
    unit: &Unit,
    instance: &str,
    scratch: &Path,
    extra: impl FnOnce(&str) -> String,
) -> (String, Vec<String>, String, String) {
    let mut argv = unit.exec_start.clone();
    assert_eq!(argv[0], "/usr/bin/cdrmunch", "{file}: ExecStart runs the packaged binary");
    let at = |flag: &str| argv.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{file}: no {flag}")) + 1;
    let (config_at, env) = (at("--config"), argv[at("--env")].clone());
    let config = argv[config_at].clone();
    assert!(config.starts_with("/etc/cdrmunch/"), "{file}: {config}");
    // the packaged config is valid as the unit reads it
    check_config(&config, &env);
    let overlay = scratch.join(format!("{}.conf", if instance.is_empty() { "all" } else { instance }));
    fs::write(&overlay, format!("@require = {config}\n{}", extra(&env))).unwrap();
    fs::set_permissions(&overlay, fs::Permissions::from_mode(0o644)).unwrap();
    let overlay = overlay.display().to_string();
    argv[config_at] = overlay.clone();
    (format!("{file}:{instance}"), argv, overlay, env)
}

/// `cdrmunch config` accepts the file without a warning; its resolved settings.
fn check_config(config: &str, env: &str) -> String {
    let out = run(Command::new("/usr/bin/cdrmunch").args(["config", "--config", config, "--env", env]));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.trim().is_empty(), "cdrmunch config --config {config} --env {env}: {said}");
    String::from_utf8(out.stdout).unwrap()
}

fn build_package(work: &Path) -> PathBuf {
    // cargo-deb packages target/release/cdrmunch of CARGO_TARGET_DIR: this test's build is put
    // there (a hard link; a copy across filesystems), so nothing is compiled again
    let release = work.join("target/release");
    fs::create_dir_all(&release).unwrap();
    let bin = env!("CARGO_BIN_EXE_cdrmunch");
    if fs::hard_link(bin, release.join("cdrmunch")).is_err() {
        fs::copy(bin, release.join("cdrmunch")).unwrap();
    }
    let deb = work.join("cdrmunch.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let version = format!("{}-{TEST_REVISION}", env!("CARGO_PKG_VERSION"));
    let out = Command::new(&cargo)
        .args(["deb", "--no-build", "--strip", "--fast", "--deb-version", &version, "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", work.join("target"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "cargo deb failed (scripts/test.sh installs cargo-deb): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

/// Each unit passes `systemd-analyze verify` without a word, and its hardening rates "OK".
fn verify_units(units: &[&str]) {
    for unit in units {
        let out = Command::new("systemd-analyze").args(["verify", "--man=no", unit]).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {unit}: {said}");
        // exposure 0-100 (shown as 0.0-10.0): above 20 a sandboxing line was lost
        run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--threshold=20", unit]));
    }
}

#[test]
fn debian_package_installs_runs_its_units_commands_and_purges_clean() {
    // SAFETY: a plain getter
    if unsafe { libc::geteuid() } != 0 || Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("SKIPPED: the Debian package test needs root and dpkg (it installs and purges the package)");
        return;
    }
    match package_state() {
        Some((_, version)) if version.ends_with(TEST_REVISION) => drop(Installed),
        Some((status, version)) => {
            panic!("cdrmunch {version} ({status}) is on this machine: the test will not replace it")
        }
        None => {}
    }
    assert!(!user_exists("cdrmunch"), "a user cdrmunch exists without the package: the test's purge would delete it");
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // overlay configs and logs, readable by the service user
    let scratch = tempfile::tempdir().unwrap();
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let deb = build_package(work.path());
    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files: Vec<String> = contents
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // what the package put in place
    for path in ["/usr/bin/cdrmunch", "/etc/cdrmunch/cdrmunch.conf", "/etc/cdrmunch/ship.conf"] {
        assert!(exists(path), "{path} not installed");
    }
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "cdrmunch"]));
    for f in files.iter().filter(|f| f.starts_with("/etc/")) {
        assert!(conffiles.contains(&format!(" {f} ")), "{f} is not a conffile: {conffiles}");
    }
    assert!(user_exists("cdrmunch") && group_exists("cdrmunch"), "postinst made no cdrmunch user and group");
    assert_eq!(stdout(Command::new("stat").args(["-c", "%U:%G", "/var/lib/cdrmunch"])).trim(), "cdrmunch:cdrmunch");
    let units = ["cdrmunch.service", "cdrmunch@.service", "cdrmunch-ship.service"];
    for u in units {
        assert!(files.contains(&format!("{UNITS}/{u}")), "{u} not packaged: {files:?}");
    }
    verify_units(&["cdrmunch.service", "cdrmunch@intake.service", "cdrmunch-ship.service"]);

    // real CDRs: answered A-legs, each of which gets tasks
    let gen = scratch.path().join("gen");
    run(Command::new("/usr/bin/cdrmunch").args(["gen", "-n", "6", "--seed", "1", "--out"]).arg(&gen));
    let mut legs: Vec<PathBuf> = fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("a_"))
        .collect();
    legs.sort();
    assert!(legs.len() >= 3, "gen made too few A-legs: {legs:?}");
    let uuid =
        |p: &Path| p.file_name().unwrap().to_str().unwrap()["a_".len()..].trim_end_matches(".cdr.xml").to_string();

    // all roles in one process: cdrmunch.service
    let all = Service::serve("cdrmunch.service", "", scratch.path());
    assert_eq!(all.post_cdr(&legs[0]), 200);
    let story = wait_processed(&uuid(&legs[0]), &[&all]);
    assert!(story["normalized"]["path"].as_str().unwrap().starts_with("/var/lib/cdrmunch/"), "{story:#}");
    // ExecReload's SIGHUP leaves it running
    all.signal(libc::SIGHUP);
    let deadline = Instant::now() + BOUND;
    while !all.log().contains("SIGHUP") {
        assert!(Instant::now() < deadline, "no SIGHUP line:\n{}", all.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(all.post_cdr(&legs[0]), 200, "a re-post after SIGHUP");
    // the shipper, as cdrmunch-ship.service runs it, sends a file written after it is up
    let (spool, done) = (scratch.path().join("xml_cdr"), scratch.path().join("xml_cdr_done"));
    for d in [&spool, &done] {
        run(Command::new("install").args(["-d", "-o", "cdrmunch", "-g", "cdrmunch"]).arg(d));
    }
    let ship = Service::ship(scratch.path(), &spool, &done, all.port, "cdrmunch");
    fs::copy(&legs[2], spool.join(legs[2].file_name().unwrap())).unwrap();
    wait_processed(&uuid(&legs[2]), &[&all, &ship]);
    let deadline = Instant::now() + BOUND;
    while !done.join(legs[2].file_name().unwrap()).exists() {
        assert!(Instant::now() < deadline, "the shipper did not move the file to its done dir:\n{}", ship.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    ship.stop();
    all.stop();

    // one process per role, sharing the database: cdrmunch@intake, @distiller, @tasks
    let roles: Vec<Service> = ["intake", "distiller", "tasks"]
        .iter()
        .map(|r| Service::serve("cdrmunch@.service", r, scratch.path()))
        .collect();
    for (service, role) in roles.iter().zip(["intake", "distiller", "tasks"]) {
        assert!(service.log().contains(&format!("roles {role}\n")), "{}:\n{}", service.name, service.log());
    }
    assert_eq!(roles[0].post_cdr(&legs[1]), 200);
    wait_processed(&uuid(&legs[1]), &roles.iter().collect::<Vec<_>>());
    for service in roles {
        service.stop();
    }

    // remove keeps the config, data and user; purge takes everything
    run(Command::new("dpkg").args(["-r", "cdrmunch"]));
    for f in files.iter().filter(|f| !f.starts_with("/etc/")) {
        assert!(!exists(f), "{f} left after dpkg -r");
    }
    assert!(exists("/etc/cdrmunch/cdrmunch.conf") && exists("/var/lib/cdrmunch") && user_exists("cdrmunch"));
    run(Command::new("dpkg").args(["--purge", "cdrmunch"]));
    for f in files.iter().map(String::as_str).chain(["/etc/cdrmunch", "/var/lib/cdrmunch", "/run/cdrmunch"]) {
        assert!(!exists(f), "{f} left after dpkg --purge");
    }
    assert!(!user_exists("cdrmunch") && !group_exists("cdrmunch"), "purge left the cdrmunch user or group");
    assert!(package_state().is_none(), "dpkg still knows cdrmunch: {:?}", package_state());
    let traces = stdout(Command::new("find").args(["/etc/systemd/system", "/var/lib/systemd", "-name", "*cdrmunch*"]));
    assert!(traces.trim().is_empty(), "systemd traces left after purge: {traces}");
}
