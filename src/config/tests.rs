use std::time::Duration;

use super::*;
use std::fs;
use tempfile::TempDir;

const ORIGIN: &str = "/etc/cdrmunch/test.conf";

fn parse(text: &str, env: Option<&str>) -> Result<RawConfig, ConfigError> {
    RawConfig::parse_str(text, Path::new(ORIGIN), env, Path::new("/nonexistent"))
}

fn test_dirs() -> Dirs {
    Dirs { config_dir: "/cfg".into(), data_dir: "/d".into(), log_dir: "/l".into(), run_dir: "/r".into() }
}

fn settings(text: &str) -> Result<(Settings, Vec<ConfigWarning>), ConfigError> {
    Settings::from_raw(&parse(text, None)?, &test_dirs())
}

fn value<'a>(raw: &'a RawConfig, key: &str) -> &'a str {
    raw.get(key).unwrap_or_else(|| panic!("{key} not set")).0
}

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn env_override_wins_whatever_the_order() {
    for text in ["log.level@prod = 2\nlog.level = 6\n", "log.level = 6\nlog.level@prod = 2\n"] {
        let raw = parse(text, Some("prod")).unwrap();
        let (v, at) = raw.get("log.level").unwrap();
        assert_eq!(v, "2");
        assert_eq!(at.line, text.lines().position(|l| l.contains("@prod")).unwrap() + 1);
        for env in [None, Some("dev")] {
            assert_eq!(value(&parse(text, env).unwrap(), "log.level"), "6", "env {env:?}");
        }
    }
}

#[test]
fn later_plain_definition_wins_and_keeps_its_location() {
    let raw = parse("server.port = 1\nserver.port = 2\nmetrics.port = 3\n", None).unwrap();
    let (v, at) = raw.get("server.port").unwrap();
    assert_eq!((v, at.to_string()), ("2", format!("{ORIGIN}:2")));
    assert_eq!(raw.keys().collect::<Vec<_>>(), ["metrics.port", "server.port"]);
}

#[test]
fn inline_comments_need_whitespace_before_hash() {
    let raw = parse(
        "# full line\n   # indented\nserver.address = 10.0.0.1  # listen here\n\
         server.basic_auth = admin:ab#c\nserver.max_content_length = 2147483648\t# 2GB max\n\
         disabled_tasks =\ncdrdb.url = mysql://u:p@db/cdr#frag # note\n",
        None,
    )
    .unwrap();
    assert_eq!(value(&raw, "server.address"), "10.0.0.1");
    assert_eq!(value(&raw, "server.basic_auth"), "admin:ab#c");
    assert_eq!(value(&raw, "server.max_content_length"), "2147483648");
    assert_eq!(value(&raw, "disabled_tasks"), "");
    assert_eq!(value(&raw, "cdrdb.url"), "mysql://u:p@db/cdr#frag");
    assert_eq!(raw.keys().count(), 5);
}

#[test]
fn quoted_values_keep_hash_spaces_and_escapes() {
    let raw = parse(
        "server.basic_auth = \"cdr:pa ss #1\\\"x\\\\y\"  # the gateway's\n\
         emailer.subject = \"  padded  \"\nsms.from = \"\"\nsms.to = say \"hi\"\n\
         server.address=\"10.0.0.1\"#glued\n",
        None,
    )
    .unwrap();
    assert_eq!(value(&raw, "server.basic_auth"), "cdr:pa ss #1\"x\\y");
    assert_eq!(value(&raw, "emailer.subject"), "  padded  ");
    assert_eq!(value(&raw, "sms.from"), "");
    assert_eq!(value(&raw, "sms.to"), "say \"hi\"", "a quote inside an unquoted value is text");
    assert_eq!(value(&raw, "server.address"), "10.0.0.1");
    let (s, warnings) = Settings::from_raw(&raw, &test_dirs()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let auth = s.server.basic_auth.unwrap();
    assert_eq!((auth.user.as_str(), auth.password.as_str()), ("cdr", "pa ss #1\"x\\y"));
}

#[test]
fn bad_quoting_is_a_syntax_error_with_location() {
    for (text, want) in [
        ("sms.from = \"open\n", "no closing"),
        ("sms.from = \"a\" b\n", "text after the closing quote: 'b'"),
        ("sms.from = \"a\\n\"\n", "unknown escape '\\n'"),
    ] {
        let err = parse(text, None).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{text}: {err}");
        assert_eq!(err.location().unwrap().line, 1);
        assert!(err.to_string().contains(want), "{text}: {err}");
    }
}

#[test]
fn a_value_cut_by_a_comment_warns_when_it_could_hold_a_hash() {
    let text = "server.basic_auth = cdr:secret #tail\nserver.port = 80  # http\n\
                cdrdb.url = mysql://u:p@db/cdr # primary\nsms.to =  # nobody\n";
    let (s, warnings) = settings(text).unwrap();
    assert_eq!(s.server.basic_auth.unwrap().password, "secret", "unquoted: cut at the comment");
    let shown: Vec<_> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "a port cannot hold '#', an empty value was not cut: {shown:?}");
    assert!(
        shown[0].starts_with(&format!("{ORIGIN}:1: the value of 'server.basic_auth' ends where ' #'")),
        "{shown:?}"
    );
    assert!(shown[0].contains("quote it: server.basic_auth = \"…\""), "{shown:?}");
    assert!(!shown[0].contains("secret"), "a cut password is not logged: {shown:?}");
    assert!(shown[1].starts_with(&format!("{ORIGIN}:3: the value of 'cdrdb.url'")), "{shown:?}");
}

#[test]
fn recording_source_dirs_are_a_list_of_directories() {
    let (s, _) = settings("recordings.source_dirs = /a, /b/c\nrecordings.base_dir = /x\n").unwrap();
    assert_eq!(s.recordings.source_dirs, [PathBuf::from("/a"), PathBuf::from("/b/c")]);
    let (s, _) = settings("recordings.base_dir = /x\n").unwrap();
    assert_eq!(s.recordings.source_dirs, [PathBuf::from("/x"), PathBuf::from(FREESWITCH_RECORDINGS_DIR)]);
}

#[test]
fn malformed_lines_are_errors_with_location() {
    for (text, line, want) in [
        ("server.port = 80\n\nthis is junk\n", 3, "expected 'key = value', found 'this is junk'"),
        ("server port = 80\n", 1, "invalid key 'server port'"),
        ("@include = x.conf\n", 1, "unknown directive '@include'"),
        ("log.level@ = 3\n", 1, "invalid key 'log.level@'"),
    ] {
        let err = parse(text, None).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert_eq!(err.location().unwrap().line, line);
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("config error at {ORIGIN}:{line}: ")) && msg.contains(want), "{msg}");
    }
}

#[test]
fn require_resolves_next_to_includer_then_in_config_dir() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path();
    let main = write(root, "app/main.conf", "@require = conf.d/db.conf\n@require = shared.conf\nserver.port = 81\n");
    write(root, "app/conf.d/db.conf", "cdrdb.url = mysql://db/cdr\nserver.port = 1\n@require = more.conf\n");
    write(root, "app/conf.d/more.conf", "cdrdb.max_connections = 7\n");
    write(root, "etc/shared.conf", "metrics.port = 9999\n");
    // Same relative path under config_dir: the includer's directory wins.
    write(root, "etc/conf.d/db.conf", "cdrdb.url = sqlite://wrong\n");

    let raw = RawConfig::load(&main, None, &root.join("etc")).unwrap();
    let (url, at) = raw.get("cdrdb.url").unwrap();
    assert_eq!(url, "mysql://db/cdr");
    assert_eq!((at.file.clone(), at.line), (root.join("app/conf.d/db.conf"), 1));
    assert_eq!(value(&raw, "cdrdb.max_connections"), "7");
    assert_eq!(value(&raw, "metrics.port"), "9999");
    assert_eq!(raw.get("metrics.port").unwrap().1.file, root.join("etc/shared.conf"));
    // The includer's line after the @require overrides the included value.
    assert_eq!(value(&raw, "server.port"), "81");
}

#[test]
fn env_override_in_included_file_beats_later_plain_line() {
    let tmp = TempDir::new().unwrap();
    let main = write(tmp.path(), "main.conf", "@require = env.conf\nlog.level = 6\n");
    write(tmp.path(), "env.conf", "log.level@prod = 2\n");
    let raw = RawConfig::load(&main, Some("prod"), tmp.path()).unwrap();
    assert_eq!(value(&raw, "log.level"), "2");
}

#[test]
fn same_file_required_twice_is_read_once() {
    let tmp = TempDir::new().unwrap();
    let main = write(tmp.path(), "main.conf", "@require = a.conf\nserver.port = 2\n@require = sub/../a.conf\n");
    write(tmp.path(), "a.conf", "server.port = 1\n");
    fs::create_dir(tmp.path().join("sub")).unwrap();
    // Read twice, the second read would set the port back to 1.
    let raw = RawConfig::load(&main, None, tmp.path()).unwrap();
    assert_eq!(value(&raw, "server.port"), "2");
}

#[test]
fn require_cycle_is_an_error_at_the_closing_require() {
    let tmp = TempDir::new().unwrap();
    let a = write(tmp.path(), "a.conf", "server.port = 1\n@require = b.conf\n");
    let b = write(tmp.path(), "b.conf", "\n\n@require = a.conf\n");
    let err = RawConfig::load(&a, None, tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Require { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("config error at {}:3: @require = 'a.conf': require cycle: ", b.display())),
        "{msg}"
    );
    let [a, b] = [&a, &b].map(|p| fs::canonicalize(p).unwrap().display().to_string());
    assert!(msg.ends_with(&format!("{a} -> {b} -> {a}")), "{msg}");

    let own = write(tmp.path(), "self.conf", "@require = self.conf\n");
    assert!(RawConfig::load(&own, None, tmp.path()).unwrap_err().to_string().contains("require cycle"));
}

#[test]
fn missing_require_names_the_includer_line() {
    let tmp = TempDir::new().unwrap();
    let main = write(tmp.path(), "main.conf", "server.port = 1\n@require = conf.d/nope.conf\n");
    let err = RawConfig::load(&main, None, &tmp.path().join("etc")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("config error at {}:2: @require = 'conf.d/nope.conf'", main.display())), "{msg}");
    assert!(
        msg.contains("file not found") && msg.contains(&tmp.path().join("etc/conf.d/nope.conf").display().to_string())
    );
}

#[test]
fn missing_top_level_file_is_an_io_error() {
    let err = RawConfig::load(Path::new("/nonexistent/cdrmunch.conf"), None, Path::new("/")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/cdrmunch.conf"), "{err}");
}

#[test]
fn unknown_and_unused_keys_warn_with_location() {
    let text = "sever.port = 80\nserver.threads = 8\nlog.level@dev = 99\nlog.levle@dev = 5\nserver.port = 81\n";
    let (s, warnings) = settings(text).unwrap();
    let shown: Vec<_> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            format!("{ORIGIN}:1: unknown key 'sever.port' (ignored)"),
            format!("{ORIGIN}:2: key 'server.threads' is accepted for compatibility but not used (ignored)"),
            format!("{ORIGIN}:4: unknown key 'log.levle@dev' (ignored)"),
        ]
    );
    assert_eq!(s.server.port, 81);
    // Every resolved key is kept raw, known or not; inactive env lines are not.
    assert_eq!(s.raw.get("sever.port").map(String::as_str), Some("80"));
    assert_eq!(s.raw.len(), 3);
}

#[test]
fn bad_values_name_location_key_value_and_expectation() {
    for (key, bad, want) in [
        ("server.address", "", "a host name or IP address"),
        ("server.port", "80x", "a port number from 0 to 65535"),
        ("metrics.port", "70000", "a port number from 0 to 65535"),
        ("distiller.number_of_distilleries", "0", "a whole number >= 1"),
        ("distiller.prefetch", "-1", "a whole number >= 1"),
        ("cdrdb.max_connections", "99999999999999999999", "a whole number from 1 to 4294967295"),
        ("server.max_content_length", "2T", "optionally with a K, M or G suffix"),
        ("request_handler.max_cdr_size", "0", "a size in bytes >= 1"),
        ("request_handler.cdr_queue_enabled", "maybe", "true or false"),
        ("cdr_queue_poll_interval_seconds", "0", "a number of seconds > 0"),
        ("tasksd.poll_interval_seconds", "inf", "a number of seconds > 0"),
        ("cdr_base_dir", "", "a path"),
        ("cdrdb.url", "postgres://db/cdr", "starting with sqlite:, mysql: or mariadb:"),
        ("billingdb.url", "billing.db", "starting with sqlite:, mysql: or mariadb:"),
        ("server.basic_auth", "nocolon", "user:password with a non-empty user"),
        ("server.basic_auth", ":secret", "user:password with a non-empty user"),
        ("log.level", "7", "a log level from 1 (critical) to 6 (debug)"),
        ("billing-feeder.field_types", "s,x", "list of column types s or d; got 'x'"),
        ("billing-feeder.field_names", "a,,b", "got an empty entry"),
        ("tasksd.handler.nope", "builtin", "a key tasksd.handler.<type> with <type> one of"),
        ("tasksd.handler.billing", "", "a non-empty value"),
        ("task-executor.workers", "many", "a whole number >= 1"),
        ("task-executor.exponential_backoff", "sure", "true or false"),
        ("app.memory_limit", "lots", "a size in bytes"),
        ("distiller.lease_seconds", "1", "at least 2 seconds (the lease is renewed every third of it)"),
        ("tasksd.lease_seconds", "1", "at least 2 seconds"),
    ] {
        let err = settings(&format!("# header\n{key} = {bad}\n")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Value { .. }), "{msg}");
        assert!(msg.starts_with(&format!("config error at {ORIGIN}:2: {key} = '{bad}': expected ")), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn error_message_matches_the_documented_form() {
    let raw = RawConfig::parse_str(
        "\n\ndistiller.number_of_distilleries = ten\n",
        Path::new("/etc/cdrmunch/distiller.conf"),
        None,
        Path::new("/etc/cdrmunch"),
    )
    .unwrap();
    let err = Settings::from_raw(&raw, &test_dirs()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config error at /etc/cdrmunch/distiller.conf:3: distiller.number_of_distilleries = 'ten': expected a whole number >= 1"
    );
}

#[test]
fn first_error_in_file_order_is_reported() {
    let err = settings("server.port = x\nlog.level = 0\n").unwrap_err();
    assert_eq!(err.location().unwrap().line, 1, "{err}");
}

#[test]
fn inactive_env_lines_are_not_validated() {
    let raw = parse("log.level@dev = 99\n", Some("prod")).unwrap();
    let (s, warnings) = Settings::from_raw(&raw, &test_dirs()).unwrap();
    assert_eq!((s.log.level, warnings.len()), (4, 0));
}

#[test]
fn good_values_convert() {
    let (s, warnings) = settings(
        "server.max_content_length = 2G\nrequest_handler.max_cdr_size = 512k\n\
         request_handler.cdr_queue_enabled = off\nmetrics.enabled = YES\ntasksd.exponential_backoff = 0\n\
         cdr_queue_poll_interval_seconds = 0.5\nserver.basic_auth = admin:pa:ss#1\nlog.facility = local0\n\
         log.file = /var/log/cdrmunch.log\napp.pid_file =\napp.run_as_user = cdr\nserver.port = 0\n\
         distiller.retry_backoff_max_seconds = 0\n",
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.server.max_content_length, 2 << 30);
    assert_eq!(s.request_handler.max_cdr_size, 512 << 10);
    assert!(!s.request_handler.cdr_queue_enabled && s.metrics.enabled && !s.tasksd.exponential_backoff);
    assert_eq!(s.distiller.poll_interval, Duration::from_millis(500));
    let auth = s.server.basic_auth.unwrap();
    assert_eq!((auth.user.as_str(), auth.password.as_str()), ("admin", "pa:ss#1"));
    assert!(!format!("{auth:?}").contains("pa:ss"));
    assert_eq!(s.log.facility.as_deref(), Some("local0"));
    assert_eq!(s.log.file, Some(PathBuf::from("/var/log/cdrmunch.log")));
    assert_eq!(s.app.pid_file, None);
    assert_eq!(s.app.run_as_user.as_deref(), Some("cdr"));
    assert_eq!((s.server.port, s.distiller.retry_backoff_max_seconds), (0, 0));
}

#[test]
fn disabled_tasks_must_be_known_task_types() {
    let (s, _) = settings("disabled_tasks = billing, emailer ,CDR2SFAPI\n").unwrap();
    assert_eq!(s.distiller.disabled_tasks, ["billing", "emailer", "CDR2SFAPI"]);
    assert!(settings("disabled_tasks =\n").unwrap().0.distiller.disabled_tasks.is_empty());

    let msg = settings("disabled_tasks = billing,Emailer\n").unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("config error at {ORIGIN}:1: disabled_tasks = 'billing,Emailer': expected ")),
        "{msg}"
    );
    assert!(msg.contains("got 'Emailer'"), "{msg}");
    assert!(TASK_TYPES.iter().all(|t| msg.contains(t)), "{msg}");
}

#[test]
fn billing_field_counts_must_match() {
    let msg =
        settings("billing-feeder.field_names = a,b,c\nbilling-feeder.field_types = s,d\n").unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "config error at {ORIGIN}:2: billing-feeder.field_types = 's,d': expected 3 entries, \
             one per entry of billing-feeder.field_names (got 2)"
        )
    );
    // Only names set: checked against the seed types, blamed on the names.
    let msg = settings("billing-feeder.field_names = a,b\n").unwrap_err().to_string();
    assert!(msg.contains(":1: billing-feeder.field_names = 'a,b': expected 22 entries"), "{msg}");

    let (s, _) = settings("billing-feeder.field_names = a, b\nbilling-feeder.field_types = s,d\n").unwrap();
    assert_eq!(
        (s.billing_feeder.field_names, s.billing_feeder.field_types),
        (vec!["a".into(), "b".into()], vec!["s".into(), "d".into()])
    );
}

#[test]
fn pattern_keys_fill_maps() {
    let (s, warnings) = settings(
        "billing-feeder.node_name_map__duration = seconds\ntasksd.handler.billing = builtin:billing\n\
         tasksd.handler.emailer = /usr/lib/cdrmunch/mail\n",
    )
    .unwrap();
    assert!(warnings.is_empty());
    let map: Vec<_> = s.billing_feeder.node_name_map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(map, [("billsec", "quantity"), ("duration", "seconds")]);
    let handlers: Vec<_> = s.tasksd.handlers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(handlers, [("billing", "builtin:billing"), ("emailer", "/usr/lib/cdrmunch/mail")]);

    let (s, _) = settings("billing-feeder.node_name_map__billsec = units\n").unwrap();
    assert_eq!(s.billing_feeder.node_name_map["billsec"], "units");
}

#[test]
fn absent_keys_take_seed_defaults() {
    let (s, warnings) = settings("").unwrap();
    assert!(warnings.is_empty() && s.raw.is_empty());
    let sv = &s.server;
    assert_eq!(
        (sv.address.as_str(), sv.port, sv.max_content_length, &sv.basic_auth),
        ("0.0.0.0", 80, 2147483648, &None)
    );
    let rh = &s.request_handler;
    assert!(rh.cdr_queue_enabled);
    assert_eq!(rh.cdr_base_dir, Path::new("/data/PBX_Archive/CDR"));
    assert_eq!(rh.paging_base_dir, Path::new("/data/PBX_Archive/SMS"));
    assert_eq!(rh.pcap_base_dir, Path::new("/data/PBX_Archive/PCAP"));
    assert_eq!((rh.max_cdr_size, rh.group_commit_max), (16 << 20, 500));
    let d = &s.distiller;
    assert_eq!((d.number_of_distilleries, d.poll_interval, d.poll_max_batch_size), (10, Duration::from_secs(1), 1000));
    assert_eq!(d.cdr_base_dir, Path::new("/data/PBX_Archive/CDR"));
    assert_eq!(d.normalized_cdr_base_dir, Path::new("/data/CDRMunch/ncdr"));
    assert!(d.disabled_tasks.is_empty());
    assert_eq!(
        (d.lease_seconds, d.job_timeout_seconds, d.retry_backoff_seconds, d.retry_backoff_max_seconds),
        (30, 60, 10, 3600)
    );
    assert_eq!((d.poison_threshold, d.prefetch), (3, 2));
    let db = &s.database;
    assert_eq!(
        (db.cdrdb_url.as_str(), db.cdrdb_max_connections, db.billingdb_url.as_str()),
        ("sqlite:///d/cdrmunch.db", 10, "sqlite:///d/billing.db")
    );
    let t = &s.tasksd;
    assert_eq!((t.executor_threads, t.poll_interval, t.poll_batch_size), (2, Duration::from_secs(1), 100));
    assert_eq!((t.max_retries, t.retry_backoff_seconds, t.exponential_backoff), (5, 60, true));
    assert!(t.handlers.is_empty());
    let bf = &s.billing_feeder;
    assert_eq!((bf.field_names.len(), bf.field_types.len()), (22, 22));
    assert_eq!((bf.field_names[0].as_str(), bf.field_names[21].as_str()), ("uuid", "billingEventType"));
    assert_eq!((bf.field_names[1].as_str(), bf.field_types[1].as_str()), ("quantity", "d"));
    assert_eq!(bf.node_name_map.get("billsec").map(String::as_str), Some("quantity"));
    assert_eq!((s.log.level, &s.log.facility, &s.log.file), (4, &None, &None));
    assert_eq!(s.app.pid_file, None, "no pid file unless configured: two instances never share one");
    assert_eq!(s.recordings.source_dirs, [PathBuf::from("/d/recordings"), PathBuf::from(FREESWITCH_RECORDINGS_DIR)]);
    assert_eq!((&s.app.run_as_user, &s.app.run_as_group), (&None, &None));
    assert_eq!((s.metrics.enabled, s.metrics.address.as_str(), s.metrics.port), (true, "127.0.0.1", 9464));
}

#[test]
fn embedded_default_keeps_everything_under_data_dir() {
    let s = Settings::embedded_default(Path::new("./data"));
    assert_eq!((s.server.address.as_str(), s.server.port), ("127.0.0.1", 8080));
    assert_eq!(s.database.cdrdb_url, "sqlite://./data/cdrmunch.db");
    assert_eq!(s.database.billingdb_url, "sqlite://./data/billing.db");
    assert_eq!(s.distiller.cdr_base_dir, Path::new("./data/cdr"));
    assert_eq!(s.request_handler.cdr_base_dir, Path::new("./data/cdr"));
    assert_eq!(s.request_handler.paging_base_dir, Path::new("./data/paging"));
    assert_eq!(s.request_handler.pcap_base_dir, Path::new("./data/pcap"));
    assert_eq!(s.distiller.normalized_cdr_base_dir, Path::new("./data/ncdr"));
    assert_eq!((s.log.level, &s.app.pid_file, s.distiller.number_of_distilleries), (4, &None, 16));
    // Everything else is the seed default.
    assert_eq!((s.request_handler.max_cdr_size, s.distiller.lease_seconds, s.metrics.port), (16 << 20, 30, 9464));
    assert_eq!(s.raw.get("server.port").map(String::as_str), Some("8080"));

    let s = Settings::embedded_default(Path::new("/var/lib/cdrmunch/"));
    assert_eq!(s.database.cdrdb_url, "sqlite:///var/lib/cdrmunch/cdrmunch.db");
}

#[test]
fn registry_is_consistent() {
    let keys = describe_keys();
    let mut names: Vec<_> = keys.iter().map(|k| k.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), keys.len(), "duplicate key in registry");
    for spec in keys::all().filter(|k| k.prefix().is_none() && !k.default.is_empty()) {
        let default = keys::expand(spec.default, &test_dirs());
        assert!(spec.kind.parse(&default).is_ok(), "seed default of {} does not parse: {default}", spec.name);
    }
    assert!(keys.iter().all(|(_, ty, _, help)| !ty.is_empty() && !help.is_empty()));
}

#[test]
fn dirs_come_from_env_with_defaults() {
    let d = Dirs::from_vars(|name| match name {
        "CDRMUNCH_DATA_DIR" => Some("/srv/cdr".into()),
        "CDRMUNCH_LOG_DIR" => Some("".into()),
        _ => None,
    });
    assert_eq!(
        d,
        Dirs {
            config_dir: "/etc/cdrmunch".into(),
            data_dir: "/srv/cdr".into(),
            log_dir: "/var/log/cdrmunch".into(),
            run_dir: "/var/run/cdrmunch".into(),
        }
    );
}
