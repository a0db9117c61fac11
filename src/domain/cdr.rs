//! The raw CDR model: what a mod_xml_cdr / mod_json_cdr document says, unnormalised, in document
//! order, plus the parser that fills it. Interpretation (billing, leg linking) lives elsewhere.

mod json;
mod xml;

/// Which module wrote the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CdrFormat {
    Xml,
    Json,
}

/// One channel's CDR as written, with variable values percent-decoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCdr {
    pub format: CdrFormat,
    /// Identifies the FreeSWITCH process, not the call.
    pub core_uuid: Option<String>,
    pub switchname: Option<String>,
    /// `<channel_data>` children (`state`, `direction`, `flags`, ...), values trimmed.
    pub channel_data: Vec<(String, String)>,
    /// Channel variables in document order; repeated names (FreeSWITCH array variables in XML)
    /// are kept as repeated entries.
    pub variables: Vec<(String, String)>,
    /// What actually ran, with expanded arguments (`<app_log>`).
    pub app_log: Vec<Application>,
    /// One per caller profile, newest first (as FreeSWITCH emits them).
    pub callflows: Vec<Callflow>,
    pub hold_records: Vec<HoldRecord>,
    /// `<call-stats>` / `callStats` leaves as `(path, value)`: `audio.inbound.mos` -> `4.49`
    /// (arrays such as `errorLog` are left out; a non-finite `nan` reads as `null`).
    pub call_stats: Vec<(String, String)>,
}

/// One `<app_log>` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Application {
    pub app_name: String,
    pub app_data: String,
    /// Microseconds since the epoch; absent before FreeSWITCH ~1.4.
    pub app_stamp: Option<i64>,
}

/// One `<callflow>`: a caller profile with its timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Callflow {
    /// `dialplan`, `unique-id` (the profile's own id, not the channel uuid), `clone-of`,
    /// `profile_index`.
    pub attrs: Vec<(String, String)>,
    pub profile: Profile,
    /// `<times>` in microseconds since the epoch (`hold_accum_time` is a duration); 0 = never.
    pub times: Vec<(String, i64)>,
    pub extension: Option<Extension>,
}

/// The dialplan extension a callflow matched (applications omitted: `app_log` has what ran).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extension {
    pub name: String,
    pub number: String,
}

/// A caller profile: its plain fields plus the peer profiles FreeSWITCH nests inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// `username`, `caller_id_number`, `destination_number`, `uuid`, `chan_name`, ... (not
    /// percent-encoded in the source, so taken as is).
    pub fields: Vec<(String, String)>,
    pub origination: Vec<Profile>,
    /// Present on B-legs: the leg that originated this one.
    pub originator: Vec<Profile>,
    /// Present on A-legs: the legs this one bridged to.
    pub originatee: Vec<Profile>,
}

/// One `<hold-record><hold on off bridged-to/>` entry (µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HoldRecord {
    pub on: Option<i64>,
    pub off: Option<i64>,
    pub bridged_to: Option<String>,
}

impl RawCdr {
    fn empty(format: CdrFormat) -> Self {
        RawCdr {
            format,
            core_uuid: None,
            switchname: None,
            channel_data: Vec::new(),
            variables: Vec::new(),
            app_log: Vec::new(),
            callflows: Vec::new(),
            hold_records: Vec::new(),
            call_stats: Vec::new(),
        }
    }

    /// First value of variable `name` (exact, case-sensitive match).
    pub fn var(&self, name: &str) -> Option<&str> {
        lookup(&self.variables, name)
    }

    /// Every value of variable `name`, in document order.
    pub fn vars<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.variables.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The channel uuid: the `uuid` variable, else the newest caller profile's `uuid` (the 2007-2009
    /// files have no `uuid` variable). The callflow `unique-id` attribute is deliberately not used:
    /// it is the profile's own id, not the channel's.
    pub fn uuid(&self) -> Option<&str> {
        non_empty(self.var("uuid")).or_else(|| non_empty(self.newest_callflow()?.profile.get("uuid")))
    }

    /// `inbound` / `outbound` from `<channel_data>`, else the `direction` variable.
    pub fn direction(&self) -> Option<&str> {
        let cd = self.channel_data.iter().find(|(k, _)| k == "direction").map(|(_, v)| v.as_str());
        non_empty(cd).or_else(|| non_empty(self.var("direction")))
    }

    /// The current caller profile (FreeSWITCH writes the newest callflow first).
    pub fn newest_callflow(&self) -> Option<&Callflow> {
        self.callflows.first()
    }
}

impl Profile {
    /// First value of `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        lookup(&self.fields, field)
    }
}

impl Callflow {
    /// A `<times>` entry in µs.
    pub fn time(&self, name: &str) -> Option<i64> {
        self.times.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
    }

    /// A callflow attribute (`profile_index`, `dialplan`, ...).
    pub fn attr(&self, name: &str) -> Option<&str> {
        lookup(&self.attrs, name)
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Why a document could not be parsed. Offsets are byte offsets into the document given to
/// [`parse`], lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("document is empty")]
    Empty,
    #[error("document does not start with '<' or '{{' (first byte 0x{byte:02X} at offset {offset})")]
    UnknownFormat { byte: u8, offset: u64 },
    #[error("XML not well-formed at byte {offset} (line {line}, column {column}): {message}")]
    Xml { offset: u64, line: u64, column: u64, message: String },
    #[error("XML root element is <{found}>, expected <cdr>")]
    XmlRoot { found: String, offset: u64 },
    #[error("JSON invalid at line {line} column {column} (byte {offset}): {message}")]
    Json { offset: u64, line: u64, column: u64, message: String },
    #[error("CDR has more than {limit} {what} (the limit is request_handler.{key})")]
    TooBig { what: &'static str, limit: usize, key: &'static str },
}

impl ParseError {
    /// Byte offset of the problem, when there is a place to point at.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ParseError::Empty | ParseError::TooBig { .. } => None,
            ParseError::UnknownFormat { offset, .. }
            | ParseError::Xml { offset, .. }
            | ParseError::XmlRoot { offset, .. }
            | ParseError::Json { offset, .. } => Some(*offset),
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Offset of the first byte after an optional UTF-8 BOM and ASCII whitespace.
pub(crate) fn content_start(doc: &[u8]) -> usize {
    let bom = if doc.starts_with(BOM) { BOM.len() } else { 0 };
    bom + doc[bom..].iter().take_while(|b| b.is_ascii_whitespace()).count()
}

/// 1-based (line, column) of byte `offset`, counting bytes.
fn line_col(doc: &[u8], offset: usize) -> (u64, u64) {
    let before = &doc[..offset.min(doc.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
    (line as u64, col as u64)
}

/// Parses a CDR document, choosing XML or JSON by its first non-blank byte (after a UTF-8 BOM).
pub fn parse(doc: &[u8]) -> Result<RawCdr, ParseError> {
    let start = content_start(doc);
    match doc.get(start) {
        None => Err(ParseError::Empty),
        Some(b'<') => xml::parse(doc),
        Some(b'{') => json::parse(doc),
        Some(&byte) => Err(ParseError::UnknownFormat { byte, offset: start as u64 }),
    }
}

/// Caps on one CDR's shape, so a body of millions of tiny elements (or JSON values) is
/// refused before it is turned into millions of allocations. Real CDRs have a few hundred
/// elements, a few hundred variables and a handful of callflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    pub max_elements: usize,
    pub max_variables: usize,
    pub max_callflows: usize,
}

impl ParseLimits {
    pub const UNLIMITED: ParseLimits =
        ParseLimits { max_elements: usize::MAX, max_variables: usize::MAX, max_callflows: usize::MAX };
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_elements: 100_000, max_variables: 20_000, max_callflows: 1_000 }
    }
}

/// [`parse`] within `limits`: the element count is bounded by a byte scan before anything is
/// allocated, the variables and callflows after.
pub fn parse_limited(doc: &[u8], limits: &ParseLimits) -> Result<RawCdr, ParseError> {
    let too_big = |what, limit, key| ParseError::TooBig { what, limit, key };
    if count_elements(doc) > limits.max_elements {
        return Err(too_big("elements", limits.max_elements, "max_cdr_elements"));
    }
    let raw = parse(doc)?;
    if raw.variables.len() > limits.max_variables {
        return Err(too_big("variables", limits.max_variables, "max_cdr_variables"));
    }
    if raw.callflows.len() > limits.max_callflows {
        return Err(too_big("callflows", limits.max_callflows, "max_cdr_callflows"));
    }
    Ok(raw)
}

/// An upper bound on what a parse would build: XML start tags (`<` not followed by `/`, `!`
/// or `?`), or JSON values (`{`, `[` and `,` outside strings, plus one).
fn count_elements(doc: &[u8]) -> usize {
    match doc.get(content_start(doc)) {
        Some(b'{') => {
            let (mut n, mut in_string, mut escaped) = (1usize, false, false);
            for &b in doc {
                if in_string {
                    match b {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => in_string = false,
                        _ => {}
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' | b',' => n += 1,
                        _ => {}
                    }
                }
            }
            n
        }
        _ => doc.windows(2).filter(|w| w[0] == b'<' && !matches!(w[1], b'/' | b'!' | b'?')).count(),
    }
}

pub(crate) use json::lenient_json;
pub(crate) use xml::resolve_ref;

#[cfg(test)]
mod tests;
