//! The shipper's keys (`cdrmunch ship`, the seed's ArchiveD on each FreeSWITCH host): part of
//! the one registry (`keys::all`), kept apart so the service's table stays readable.

use super::keys::{key, KeySpec, Kind as K};

#[rustfmt::skip]
pub(crate) static SHIP_KEYS: &[KeySpec] = &[
    key("ship.dirs", K::PathList, "", "directories to ship CDR files from: mod_xml_cdr / mod_json_cdr log-dir and err-log-dir (`--dir` adds to them)"),
    key("ship.urls", K::UrlList, "", "intake URLs, tried in order; a failure moves on to the next, as mod_xml_cdr does (`--url` replaces them)"),
    key("ship.encode", K::Encode, "urlencoded", "body form: raw (cdr=…), urlencoded (cdr=%XX…), base64, textxml (bare XML), json (bare JSON)"),
    key("ship.basic_auth", K::Auth, "", "user:pass sent as HTTP Basic credentials (mod_xml_cdr's cred=); empty sends none"),
    key("ship.done_dir", K::OptPath, "", "where a file goes after its 2xx (renamed, or copied, fsynced and removed across filesystems); this or ship.delete"),
    key("ship.delete", K::Bool, "false", "remove a file after its 2xx instead of keeping it in ship.done_dir"),
    key("ship.concurrency", K::Count, "4", "POSTs in flight at once"),
    key("ship.rescan_seconds", K::Seconds, "30", "full directory listing this often, besides inotify: catches what a restart or an event-queue overflow missed"),
    key("ship.settle_seconds", K::Seconds, "2", "a file not closed by its writer (as inotify saw it) is sent once unmodified this long"),
    key("ship.retry_backoff_seconds", K::Seconds, "1", "first wait after every URL failed a file (no answer, 5xx); doubles per round, with jitter"),
    key("ship.retry_backoff_max_seconds", K::Seconds, "60", "longest wait between two rounds over the URLs"),
    key("ship.timeout_seconds", K::Seconds, "30", "one POST's answer must arrive within this"),
    key("ship.drain_seconds", K::Seconds, "10", "on SIGTERM/SIGINT, how long POSTs in flight may finish before the shipper exits anyway"),
    key("ship.once_rounds", K::Count, "3", "with --once: rounds over the URLs per file before it counts as not delivered (left in place)"),
    key("ship.metrics_address", K::Host, "127.0.0.1", "address of the shipper's /metrics listener"),
    key("ship.metrics_port", K::Port, "0", "port of the shipper's Prometheus /metrics; 0 serves none"),
];
