//! `${NAME}` and `${NAME:-default}` in config values, taken from the environment when a
//! config is loaded: containers, Kubernetes and ECS hand secrets and per-pod values (a
//! database URL, S3 keys, the pod name) to the service as environment variables, so one
//! config file serves every replica and no secret is written into it.
//!
//! Only `${` starts a reference, so a `$` elsewhere (a password `pa$$word`) is kept as
//! written; `$${` writes a literal `${`. Expansion happens after the line is parsed, so an
//! expanded value may hold ` #` or quotes.

/// Why a value's `${…}` could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum VarError {
    /// `${NAME}` without a default and `NAME` is not set.
    Unset(String),
    /// Not `${NAME}` or `${NAME:-default}`; the message says what was found.
    Malformed(String),
}

/// `value` with every `${NAME}` / `${NAME:-default}` replaced through `var` (the process
/// environment in the service). As in the shell, `:-` also takes the default for a
/// variable set to the empty string; a bare `${NAME}` set empty is empty.
pub(super) fn expand(value: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, VarError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(VarError::Malformed(format!(
                    "'${{' without a closing '}}' in '{value}' (write $${{ for a literal ${{)"
                )));
            };
            out.push_str(&reference(&tail[..end], var)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one reference, `NAME` or `NAME:-default`.
fn reference(inner: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, VarError> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(VarError::Malformed(format!(
            "'${{{inner}}}' is not ${{NAME}} or ${{NAME:-default}} (NAME: letters, digits, _; \
             write $${{ for a literal ${{)"
        )));
    }
    match (var(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(VarError::Unset(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DB_URL" => Some("mysql://u:p#1@db:3306/CDR".into()),
            "EMPTY" => Some(String::new()),
            "POD_NAME" => Some("cdrmunch-distiller-5d8f-x2k4z".into()),
            _ => None,
        }
    }

    fn ok(value: &str) -> String {
        expand(value, &env).unwrap_or_else(|e| panic!("{value}: {e:?}"))
    }

    #[test]
    fn references_take_the_variable_or_the_default() {
        assert_eq!(ok("${DB_URL}"), "mysql://u:p#1@db:3306/CDR");
        assert_eq!(ok("pod-${POD_NAME}-x"), "pod-cdrmunch-distiller-5d8f-x2k4z-x");
        assert_eq!(ok("${UNSET:-/var/lib/cdrmunch}"), "/var/lib/cdrmunch");
        assert_eq!(ok("${UNSET:-}"), "");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("${DB_URL:-unused}"), "mysql://u:p#1@db:3306/CDR");
        assert_eq!(ok("${UNSET:-a:-b}"), "a:-b");
        assert_eq!(ok("${POD_NAME}/${UNSET:-d}"), "cdrmunch-distiller-5d8f-x2k4z/d");
    }

    #[test]
    fn a_dollar_without_a_brace_is_kept_and_double_dollar_brace_is_literal() {
        assert_eq!(ok("pa$$word$"), "pa$$word$");
        assert_eq!(ok("$HOME"), "$HOME");
        assert_eq!(ok("$${DB_URL}"), "${DB_URL}");
        // read left to right: `$` kept, then `$${` is the escape
        assert_eq!(ok("a$$${POD_NAME}"), "a$${POD_NAME}");
        assert_eq!(ok("no dollars"), "no dollars");
    }

    #[test]
    fn unset_and_malformed_references_are_errors() {
        assert_eq!(expand("x ${NOPE} y", &env), Err(VarError::Unset("NOPE".into())));
        for bad in ["${", "${DB_URL", "${}", "${1X}", "${A-B}", "${A B}", "${:-x}", "${DB_URL-x}"] {
            assert!(matches!(expand(bad, &env), Err(VarError::Malformed(_))), "{bad}");
        }
    }

    fn parse(text: &str, env: Option<&str>) -> Result<super::super::RawConfig, super::super::ConfigError> {
        let origin = std::path::Path::new("/etc/cdrmunch/container.conf");
        super::super::RawConfig::parse_with_vars(text, origin, env, std::path::Path::new("/nonexistent"), &env_of)
    }

    fn env_of(name: &str) -> Option<String> {
        env(name)
    }

    #[test]
    fn a_config_expands_the_values_in_force_and_names_the_line_of_an_unset_one() {
        let text = "cdrdb.url = ${DB_URL}\napp.instance_id = \"${POD_NAME}\"  # per pod\n\
                    emailer.password = ${SMTP_PASSWORD}\nemailer.password@prod = ${EMPTY:-none}\n\
                    s3.region@dev = ${DEV_ONLY}\n";
        let raw = parse(text, Some("prod")).unwrap();
        assert_eq!(raw.get("cdrdb.url").unwrap().0, "mysql://u:p#1@db:3306/CDR");
        assert_eq!(raw.get("app.instance_id").unwrap().0, "cdrmunch-distiller-5d8f-x2k4z");
        // the overridden line and another environment's line name unset variables: no error
        assert_eq!(raw.get("emailer.password").unwrap().0, "none");
        let err = parse(text, None).unwrap_err().to_string();
        assert!(err.contains("/etc/cdrmunch/container.conf:3"), "{err}");
        assert!(err.contains("SMTP_PASSWORD") && err.contains("emailer.password"), "{err}");
        let err = parse("log.file = ${LOG\n", None).unwrap_err().to_string();
        assert!(err.contains("container.conf:1") && err.contains("closing"), "{err}");
    }

    #[test]
    fn a_require_target_may_name_a_variable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cdrmunch-distiller-5d8f-x2k4z.conf"), "log.level = 6\n").unwrap();
        let main = dir.path().join("main.conf");
        let text = "@require = ${POD_NAME}.conf\n";
        let raw = super::super::RawConfig::parse_with_vars(text, &main, None, dir.path(), &env_of).unwrap();
        assert_eq!(raw.get("log.level").unwrap().0, "6");
        let err =
            super::super::RawConfig::parse_with_vars("@require = ${NOPE}.conf\n", &main, None, dir.path(), &env_of)
                .unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
    }
}
