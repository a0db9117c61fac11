//! The org directory (the seed's CoreAPI/BigDB customer lookup): per-org settings keyed by a
//! field of the normalized CDR, loaded from a CSV (`normalize.org_directory`):
//!
//! ```text
//! key,org_id,sf_org_id,notify_email,notify_sms,transcription
//! domain:pbx.example.com,77,00D000000000001,ops@example.com,,yes
//! accountcode:4711,78,,,+447700900123,no
//! ```
//!
//! A key is `field:value`, the field one the normalizer produces (`domain`, `accountcode`,
//! `gateway`, ...). The first key that matches a CDR wins, in the file's order. A CDR's own
//! variables (`rmOrgID`, `sf_org_id`, `notify_email`, `notify_sms`) take precedence.

use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgSettings {
    pub org_id: i64,
    pub sf_org_id: Option<String>,
    pub notify_email: Option<String>,
    pub notify_sms: Option<String>,
    /// Transcription of this org's recordings (default: yes).
    pub transcription: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgDirectory {
    entries: Vec<OrgSettings>,
    /// field -> lowercased value -> index of its first entry: a CDR costs one probe per key
    /// field (a handful), whatever the directory's size.
    index: HashMap<String, HashMap<String, usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("org directory line {line}: {message}")]
pub struct OrgError {
    pub line: usize,
    pub message: String,
}

pub const ORG_COLUMNS: [&str; 6] = ["key", "org_id", "sf_org_id", "notify_email", "notify_sms", "transcription"];

impl OrgDirectory {
    pub fn parse(text: &str) -> Result<OrgDirectory, OrgError> {
        let mut lines =
            text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let (h, header) = lines.next().ok_or(OrgError { line: 1, message: "empty org directory".into() })?;
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        if names != ORG_COLUMNS {
            return Err(OrgError { line: h + 1, message: format!("header must be {}", ORG_COLUMNS.join(",")) });
        }
        let (mut entries, mut index) = (Vec::new(), HashMap::<String, HashMap<String, usize>>::new());
        for (i, line) in lines {
            let err = |message: String| OrgError { line: i + 1, message };
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if cols.len() != ORG_COLUMNS.len() {
                return Err(err(format!("{} columns, expected {}", cols.len(), ORG_COLUMNS.len())));
            }
            let (field, value) = cols[0]
                .split_once(':')
                .filter(|(f, v)| !f.is_empty() && !v.is_empty())
                .ok_or_else(|| err(format!("key '{}' is not field:value (e.g. domain:pbx.example.com)", cols[0])))?;
            let org_id = cols[1].parse::<i64>().map_err(|_| err(format!("org_id '{}' is not a number", cols[1])))?;
            let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let transcription = match cols[5].to_ascii_lowercase().as_str() {
                "" | "yes" | "true" | "1" => true,
                "no" | "false" | "0" => false,
                other => return Err(err(format!("transcription '{other}' is not yes or no"))),
            };
            let settings = OrgSettings {
                org_id,
                sf_org_id: opt(cols[2]),
                notify_email: opt(cols[3]),
                notify_sms: opt(cols[4]),
                transcription,
            };
            entries.push(settings);
            let at = entries.len() - 1;
            index.entry(field.to_string()).or_default().entry(value.to_ascii_lowercase()).or_insert(at);
        }
        Ok(OrgDirectory { entries, index })
    }

    /// The org of a CDR, by the first entry whose `field:value` the CDR has (case-insensitive
    /// value, as domains are).
    pub fn lookup<'a>(&self, field: impl Fn(&str) -> Option<&'a str>) -> Option<&OrgSettings> {
        self.index
            .iter()
            .filter_map(|(f, values)| values.get(&field(f)?.trim().to_ascii_lowercase()).copied())
            .min()
            .map(|i| &self.entries[i])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "key,org_id,sf_org_id,notify_email,notify_sms,transcription\n\
                       domain:pbx.example.com,77,00D000000000001,ops@example.com,,yes\n\
                       accountcode:4711,78,,,+447700900123,no\n";

    #[test]
    fn the_first_matching_key_gives_the_org() {
        let d = OrgDirectory::parse(DIR).unwrap();
        let by = |pairs: &'static [(&'static str, &'static str)]| {
            move |f: &str| pairs.iter().find(|(k, _)| *k == f).map(|(_, v)| *v)
        };
        let o = d.lookup(by(&[("domain", "PBX.example.com"), ("accountcode", "4711")])).unwrap();
        assert_eq!((o.org_id, o.sf_org_id.as_deref(), o.transcription), (77, Some("00D000000000001"), true));
        let o = d.lookup(by(&[("accountcode", "4711")])).unwrap();
        assert_eq!((o.org_id, o.notify_sms.as_deref(), o.transcription), (78, Some("+447700900123"), false));
        assert!(d.lookup(by(&[("domain", "other.example.com")])).is_none());
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(OrgDirectory::parse(&DIR.replace(",77,", ",seventy,")).unwrap_err().line, 2);
        assert!(OrgDirectory::parse(&DIR.replace("domain:pbx", "pbx")).unwrap_err().message.contains("field:value"));
        assert!(OrgDirectory::parse("org,id\n").unwrap_err().message.starts_with("header"));
    }
}
