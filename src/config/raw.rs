//! Reading config text into resolved `key -> (value, location)` pairs:
//! comments, quoted values, `key@ENV` overrides, `@require` includes and `${NAME}`
//! environment references. No key is interpreted here; that is `Settings::from_raw`'s job.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::vars::{self, VarError};
use super::{ConfigError, Location};

/// A config file with includes and environment overrides resolved.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub(super) entries: BTreeMap<String, (String, Location)>,
    /// `key@ENV` lines for other environments: ignored, but kept so a typo in
    /// them is still reported as an unknown key.
    pub(super) inactive: Vec<(String, Location)>,
    /// Lines whose unquoted value was cut short by a ` #` comment: `from_raw` warns
    /// for keys whose values may hold a `#` (a password cut at `#` fails silently).
    pub(super) cut: HashSet<Location>,
}

impl RawConfig {
    /// Reads `path` and everything it requires. `env` selects `key@ENV` lines;
    /// `config_dir` is the fallback for relative `@require` paths.
    pub fn load(path: &Path, env: Option<&str>, config_dir: &Path) -> Result<RawConfig, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::parse_str(&text, path, env, config_dir)
    }

    /// Like [`RawConfig::load`] for text already in memory; `origin` names it
    /// in locations and anchors its relative `@require` paths.
    pub fn parse_str(
        text: &str,
        origin: &Path,
        env: Option<&str>,
        config_dir: &Path,
    ) -> Result<RawConfig, ConfigError> {
        Self::parse_with_vars(text, origin, env, config_dir, &|name| std::env::var(name).ok())
    }

    /// [`RawConfig::parse_str`] with `${NAME}` looked up through `vars` instead of the
    /// process environment (tests).
    pub(super) fn parse_with_vars(
        text: &str,
        origin: &Path,
        env: Option<&str>,
        config_dir: &Path,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RawConfig, ConfigError> {
        let mut loader = Loader {
            env: env.filter(|e| !e.is_empty()),
            config_dir,
            vars,
            plain: BTreeMap::new(),
            overrides: BTreeMap::new(),
            inactive: Vec::new(),
            cut: HashSet::new(),
            stack: Vec::new(),
            done: HashSet::new(),
        };
        loader.text(text, origin)?;
        let mut entries = loader.plain;
        entries.extend(loader.overrides);
        // Only the values in force: a variable named by an overridden line or another
        // environment's need not be set.
        // In file order, so the error names the first line written.
        let mut in_force: Vec<_> = entries.iter_mut().collect();
        in_force.sort_by(|(_, (_, a)), (_, (_, b))| a.cmp(b));
        for (key, (value, at)) in in_force {
            *value = vars::expand(value, vars).map_err(|e| var_error(e, key, at))?;
        }
        Ok(RawConfig { entries, inactive: loader.inactive, cut: loader.cut })
    }

    /// The resolved value of `key` and the line it came from.
    pub fn get(&self, key: &str) -> Option<(&str, &Location)> {
        self.entries.get(key).map(|(value, at)| (value.as_str(), at))
    }

    /// Every resolved key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

struct Loader<'a> {
    env: Option<&'a str>,
    config_dir: &'a Path,
    vars: &'a dyn Fn(&str) -> Option<String>,
    plain: BTreeMap<String, (String, Location)>,
    /// Kept apart from `plain` so `key@ENV` wins wherever it appears.
    overrides: BTreeMap<String, (String, Location)>,
    inactive: Vec<(String, Location)>,
    cut: HashSet<Location>,
    /// Canonical paths of the files being read, outermost first: requiring one
    /// of them again is a cycle.
    stack: Vec<PathBuf>,
    /// Canonical paths already read: requiring them again does nothing.
    done: HashSet<PathBuf>,
}

impl Loader<'_> {
    fn text(&mut self, text: &str, origin: &Path) -> Result<(), ConfigError> {
        let id = canonical(origin);
        self.stack.push(id.clone());
        for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            let at = Location { file: origin.to_path_buf(), line: n + 1 };
            let uncommented = strip_comment(line, true).trim();
            if uncommented.is_empty() {
                continue;
            }
            let Some((key, _)) = uncommented.split_once('=') else {
                return Err(ConfigError::Syntax {
                    location: at,
                    message: format!("expected 'key = value', found '{uncommented}'"),
                });
            };
            // The value is read from the line itself: a quoted one may hold ` #`.
            let rest = &line.trim_start()[key.len() + 1..];
            let (value, cut) =
                parse_value(rest).map_err(|message| ConfigError::Syntax { location: at.clone(), message })?;
            if cut {
                self.cut.insert(at.clone());
            }
            let (key, value) = (key.trim(), value.as_str());
            if key == "@require" {
                let target = vars::expand(value, self.vars).map_err(|e| var_error(e, key, &at))?;
                self.require(&target, origin, at)?;
                continue;
            }
            let (base, env) = match key.split_once('@') {
                Some((base, env)) => (base, Some(env)),
                None => (key, None),
            };
            if base.is_empty() || key.contains(char::is_whitespace) || env == Some("") {
                let message = if base.is_empty() {
                    format!("unknown directive '{key}' (the only one is @require)")
                } else {
                    format!("invalid key '{key}'")
                };
                return Err(ConfigError::Syntax { location: at, message });
            }
            let entry = (value.to_string(), at);
            match env {
                None => {
                    self.plain.insert(base.into(), entry);
                }
                Some(env) if Some(env) == self.env => {
                    self.overrides.insert(base.into(), entry);
                }
                Some(_) => self.inactive.push((key.into(), entry.1)),
            }
        }
        self.stack.pop();
        self.done.insert(id);
        Ok(())
    }

    /// Reads a required file in place, so lines after the `@require` override it.
    fn require(&mut self, target: &str, origin: &Path, at: Location) -> Result<(), ConfigError> {
        let fail = |reason: String| ConfigError::Require { location: at.clone(), target: target.into(), reason };
        if target.is_empty() {
            return Err(fail("expected a file path".into()));
        }
        // Joining an absolute target yields the target, so both cover it.
        let mut candidates = vec![origin.parent().unwrap_or(Path::new("")).join(target), self.config_dir.join(target)];
        candidates.dedup();
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            let tried: Vec<_> = candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(fail(format!("file not found (looked for {})", tried.join(" and "))));
        };
        let id = canonical(path);
        if let Some(start) = self.stack.iter().position(|p| *p == id) {
            let chain: Vec<_> = self.stack[start..].iter().chain([&id]).map(|p| p.display().to_string()).collect();
            return Err(fail(format!("require cycle: {}", chain.join(" -> "))));
        }
        if self.done.contains(&id) {
            return Ok(());
        }
        let text = fs::read_to_string(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        self.text(&text, path)
    }
}

/// A `${…}` that could not be expanded, blamed on its line.
fn var_error(e: VarError, key: &str, at: &Location) -> ConfigError {
    match e {
        VarError::Unset(name) => ConfigError::UnsetVar { location: at.clone(), key: key.into(), name },
        VarError::Malformed(message) => ConfigError::Syntax { location: at.clone(), message },
    }
}

/// Identity of a file for dedupe and cycle checks; text that is not (yet) a
/// file on disk is identified by its name.
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Cuts a comment: `#` at the start (when `at_start`) or after whitespace. A `#`
/// glued to text (`password = ab#c`) is part of the value.
fn strip_comment(text: &str, at_start: bool) -> &str {
    let mut after_space = at_start;
    for (i, c) in text.char_indices() {
        if c == '#' && after_space {
            return &text[..i];
        }
        after_space = c.is_whitespace();
    }
    text
}

/// The value after `=`: `"…"` (with `\"` and `\\` escapes, so it may hold ` #`) or
/// unquoted up to a ` #` comment. Also says whether an unquoted value was cut by a
/// comment, so a `#` meant as part of it can be warned about.
pub(super) fn parse_value(rest: &str) -> Result<(String, bool), String> {
    let trimmed = rest.trim_start();
    let Some(quoted) = trimmed.strip_prefix('"') else {
        let value = strip_comment(rest, false);
        let cut = value.len() < rest.len() && !value.trim().is_empty();
        return Ok((value.trim().to_string(), cut));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let after = quoted[i + 1..].trim_start();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(format!("text after the closing quote: '{after}' (a comment starts with ' #')"));
                }
                return Ok((value, false));
            }
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => value.push(e),
                Some((_, e)) => return Err(format!("unknown escape '\\{e}' in a quoted value (only \\\" and \\\\)")),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("quoted value has no closing '\"'".to_string())
}
