//! The shipper's rules, pure: which files in a mod_xml_cdr / mod_json_cdr log directory are
//! CDRs, the `?uuid=` a file is posted with, when a file is finished, and how long to wait
//! after a failure (failover first, then the one backoff).

use std::time::Duration;

use super::cdr::CdrFormat;
use super::intake::canonical_uuid;
use super::outcome::Backoff;

/// A CDR file as the modules name it: `[a_]<uuid>.cdr.xml`, `[a_]<uuid>.cdr.json`. Other
/// `*.xml` / `*.json` files (renamed by hand, left by an older shipper) are shipped too, without
/// `?uuid=`: intake takes the uuid from the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrFileName {
    pub format: CdrFormat,
    /// `a_<uuid>` or `<uuid>`, for `?uuid=`; `None` when the name is not the modules' own.
    pub uuid_param: Option<String>,
}

impl CdrFileName {
    /// `None` for anything that is not a CDR file: hidden and temp files, reason files,
    /// other extensions.
    pub fn parse(name: &str) -> Option<CdrFileName> {
        if name.starts_with('.') {
            return None;
        }
        let (stem, format) = if let Some(s) = name.strip_suffix(".xml") {
            (s, CdrFormat::Xml)
        } else if let Some(s) = name.strip_suffix(".json") {
            (s, CdrFormat::Json)
        } else {
            return None;
        };
        if stem.is_empty() {
            return None;
        }
        let uuid_param = stem.strip_suffix(".cdr").filter(|s| {
            let bare = s.strip_prefix("a_").unwrap_or(s);
            canonical_uuid(bare).is_some()
        });
        Some(CdrFileName { format, uuid_param: uuid_param.map(str::to_string) })
    }

    /// `?uuid=…` (or `&uuid=…` when the URL has a query already), or nothing.
    pub fn query_for(&self, url: &str) -> String {
        match &self.uuid_param {
            Some(u) => format!("{}uuid={u}", if url.contains('?') { '&' } else { '?' }),
            None => String::new(),
        }
    }
}

/// Whether a file can be sent: its writer closed it (inotify's IN_CLOSE_WRITE, or it was
/// renamed in whole), or nothing modified it for `settle`. mod_xml_cdr writes a file with
/// one open/write/close, so an unmodified file is a finished one.
pub fn is_settled(closed: bool, since_modified: Duration, settle: Duration) -> bool {
    closed || since_modified >= settle
}

/// The wait before the next attempt after a file's `failures`-th consecutive retriable
/// failure (1-based) with `urls` URLs: none while a URL of this round is untried (failover,
/// as mod_xml_cdr moves to its next url), then the backoff by completed rounds, jittered by
/// `fraction` (0..1) into its upper half so files that failed together spread out.
pub fn retry_delay(failures: u32, urls: usize, backoff: &Backoff, fraction: f64) -> Duration {
    let urls = urls.max(1) as u32;
    if failures == 0 || !failures.is_multiple_of(urls) {
        return Duration::ZERO;
    }
    backoff.jittered(failures / urls - 1, 0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// The text beside a rejected file: what the receiver answered, for whoever looks at it.
pub fn reason_text(url: &str, status: u16, body: &str) -> String {
    let body: String = body.chars().take(4000).collect();
    format!("HTTP {status} from {url}\n{}\n", body.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "6a7ccd66-0000-4000-8000-000000000001";

    #[test]
    fn module_names_give_the_uuid_parameter() {
        let a = CdrFileName::parse(&format!("a_{U}.cdr.xml")).unwrap();
        assert_eq!((a.format, a.uuid_param.as_deref()), (CdrFormat::Xml, Some(&*format!("a_{U}"))));
        let b = CdrFileName::parse(&format!("{U}.cdr.json")).unwrap();
        assert_eq!((b.format, b.uuid_param.as_deref()), (CdrFormat::Json, Some(U)));
        assert_eq!(a.query_for("http://h/api/v2/cdr"), format!("?uuid=a_{U}"));
        assert_eq!(a.query_for("http://h/cdr?key=1"), format!("&uuid=a_{U}"));
    }

    #[test]
    fn other_cdr_files_go_without_a_uuid_and_the_rest_is_ignored() {
        let odd = CdrFileName::parse("summitrabz_2015_inbound.xml").unwrap();
        assert_eq!(odd.uuid_param, None);
        assert_eq!(odd.query_for("http://h/"), "");
        assert_eq!(CdrFileName::parse("a_not-a-uuid.cdr.xml").unwrap().uuid_param, None);
        for ignored in [".a_x.cdr.xml", "x.cdr.xml.reason", "x.tmp", ".xml", "rejected", "x.xml.part"] {
            assert_eq!(CdrFileName::parse(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn a_file_is_settled_when_closed_or_quiet() {
        let s = Duration::from_secs(2);
        assert!(is_settled(true, Duration::ZERO, s));
        assert!(!is_settled(false, Duration::from_millis(1999), s));
        assert!(is_settled(false, s, s));
    }

    #[test]
    fn failover_is_immediate_and_rounds_back_off() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
        // two URLs: the second is tried at once, then the round waits 1 s (0.5..1 jittered)
        assert_eq!(retry_delay(1, 2, &b, 0.3), Duration::ZERO);
        assert_eq!(retry_delay(2, 2, &b, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 2, &b, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(4, 2, &b, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(3, 1, &b, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(100, 1, &b, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn the_reason_names_status_and_url_and_keeps_the_body() {
        let r = reason_text("http://h/api/v2/cdr", 400, "{\"error\":\"not a CDR\"}\n");
        assert_eq!(r, "HTTP 400 from http://h/api/v2/cdr\n{\"error\":\"not a CDR\"}\n");
    }
}
