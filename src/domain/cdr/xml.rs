//! mod_xml_cdr documents. quick-xml without namespace processing (variable names such as
//! `nolocal:req_uuid` contain ':'), read into a small element tree, then mapped to [`RawCdr`].

use quick_xml::errors::{Error as QxError, IllFormedError};
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{line_col, Application, Callflow, CdrFormat, Extension, HoldRecord, ParseError, Profile, RawCdr, BOM};
use crate::domain::percent::percent_decode;

/// Real CDRs nest 6 deep; the cap keeps hostile input from exhausting the stack (the tree is
/// dropped recursively).
const MAX_DEPTH: usize = 64;

struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
    offset: usize,
    /// `<variables>` only: its children as `(name, raw text)`, read without building a node
    /// per variable (a CDR has hundreds; this is most of the parse).
    captured: Vec<(String, String)>,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn trimmed(&self) -> String {
        self.text.trim().to_owned()
    }
}

/// A well-formedness problem: byte offset (into the text given to quick-xml) and description.
struct Problem(usize, String);

pub(super) fn parse(doc: &[u8]) -> Result<RawCdr, ParseError> {
    let base = if doc.starts_with(BOM) { BOM.len() } else { 0 };
    let raw = &doc[base..];
    let problem = |to_doc: &dyn Fn(usize) -> usize, Problem(at, message): Problem| {
        let offset = to_doc(at);
        let (line, column) = line_col(doc, offset);
        ParseError::Xml { offset: offset as u64, line, column, message }
    };
    // quick-xml checks each event's UTF-8 itself, so the bytes are read as they are; only a
    // document that is not UTF-8 (stray Latin-1 in a caller name must not sink the whole CDR)
    // is read again, lossily converted, with offsets mapped back to the document.
    let plain = |at: usize| base + at;
    let mut to_doc: &dyn Fn(usize) -> usize = &plain;
    let lossy_offsets = |at: usize| base + raw_offset(raw, at);
    let root = match read_tree(raw, &plain) {
        Ok(root) => root,
        Err(_) if std::str::from_utf8(raw).is_err() => {
            to_doc = &lossy_offsets;
            let text = String::from_utf8_lossy(raw);
            read_tree(text.as_bytes(), &lossy_offsets).map_err(|p| problem(&lossy_offsets, p))?
        }
        Err(p) => return Err(problem(&plain, p)),
    };
    if root.name != "cdr" {
        return Err(ParseError::XmlRoot { found: root.name, offset: to_doc(root.offset) as u64 });
    }
    Ok(to_cdr(root))
}

/// Maps an offset in the lossily decoded text back to `raw` (each invalid sequence became one
/// 3-byte U+FFFD).
fn raw_offset(raw: &[u8], text_offset: usize) -> usize {
    let (mut raw_pos, mut text_pos) = (0, 0);
    for chunk in raw.utf8_chunks() {
        let valid = chunk.valid().len();
        if text_offset <= text_pos + valid {
            return raw_pos + text_offset - text_pos;
        }
        raw_pos += valid;
        text_pos += valid;
        if !chunk.invalid().is_empty() {
            if text_offset < text_pos + 3 {
                return raw_pos;
            }
            raw_pos += chunk.invalid().len();
            text_pos += 3;
        }
    }
    raw_pos
}

/// Reads the element tree; `to_doc` turns text offsets into document offsets for messages.
fn read_tree(text: &[u8], to_doc: &dyn Fn(usize) -> usize) -> Result<Node, Problem> {
    let mut reader = Reader::from_reader(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.allow_unmatched_ends = false;
    config.allow_dangling_amp = false;

    let mut open: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    // A variable being read: (name, text, offset).
    let mut capture: Option<(String, String, usize)> = None;
    loop {
        let at = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| Problem(reader.error_position() as usize, describe(e)))?;
        let (start, empty) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            Event::End(_) => {
                // quick-xml has already matched the name against the open element.
                if let Some((name, text, _)) = capture.take() {
                    open.last_mut().expect("variables is open").captured.push((name, text));
                    continue;
                }
                let node = open.pop().ok_or_else(|| Problem(at, "end tag without start tag".into()))?;
                close(node, &mut open, &mut root);
                continue;
            }
            Event::Text(t) => {
                match &mut capture {
                    Some((_, text, _)) => text.push_str(&t.xml10_content()),
                    None => append_text(&mut open, &t.xml10_content(), at)?,
                }
                continue;
            }
            Event::CData(c) => {
                match &mut capture {
                    Some((_, text, _)) => text.push_str(&c.xml10_content()),
                    None => append_text(&mut open, &c.xml10_content(), at)?,
                }
                continue;
            }
            Event::GeneralRef(r) => {
                let s = resolve_ref(&r).map_err(|m| Problem(at, m))?;
                match &mut capture {
                    Some((_, text, _)) => text.push_str(&s),
                    None => append_text(&mut open, &s, at)?,
                }
                continue;
            }
            Event::Eof => {
                if let Some((name, _, offset)) = capture {
                    return Err(Problem(
                        text.len(),
                        format!("document ends inside <{name}> (opened at byte {}): missing end tag", to_doc(offset)),
                    ));
                }
                return match (open.pop(), root) {
                    (Some(unclosed), _) => Err(Problem(
                        text.len(),
                        format!(
                            "document ends inside <{}> (opened at byte {}): missing end tag",
                            unclosed.name,
                            to_doc(unclosed.offset)
                        ),
                    )),
                    (None, Some(root)) => Ok(root),
                    (None, None) => Err(Problem(text.len(), "no root element".into())),
                };
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => continue,
        };
        if root.is_some() {
            return Err(Problem(at, "content after the root element".into()));
        }
        if open.len() >= MAX_DEPTH {
            return Err(Problem(at, format!("elements nested deeper than {MAX_DEPTH} levels")));
        }
        // An element inside a variable (never written by FreeSWITCH): the variable becomes an
        // ordinary node after all.
        if let Some((name, text, offset)) = capture.take() {
            open.push(Node { name, attrs: Vec::new(), text, children: Vec::new(), offset, captured: Vec::new() });
        } else if open.len() == 2 && open[1].name == "variables" && start.attributes_raw().trim().is_empty() {
            let name = start.name().as_ref().to_owned();
            if empty {
                open[1].captured.push((name, String::new()));
            } else {
                capture = Some((name, String::new(), at));
            }
            continue;
        }
        let node = open_node(&start, at)?;
        if empty {
            close(node, &mut open, &mut root);
        } else {
            open.push(node);
        }
    }
}

fn open_node(start: &BytesStart, at: usize) -> Result<Node, Problem> {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| Problem(at, e.to_string()))?;
        let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|e| Problem(at, describe(e)))?;
        attrs.push((attr.key.as_ref().to_owned(), value.into_owned()));
    }
    Ok(Node {
        name: start.name().as_ref().to_owned(),
        attrs,
        text: String::new(),
        children: Vec::new(),
        offset: at,
        captured: Vec::new(),
    })
}

fn close(node: Node, open: &mut [Node], root: &mut Option<Node>) {
    match open.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn append_text(open: &mut [Node], s: &str, at: usize) -> Result<(), Problem> {
    match open.last_mut() {
        // Indentation between child elements never reaches a value (every text is used
        // trimmed): skip it instead of growing the parent's text with it.
        Some(node) if node.text.is_empty() && s.trim_ascii().is_empty() => {}
        Some(node) => node.text.push_str(s),
        None if s.trim().is_empty() => {}
        None => return Err(Problem(at, "text outside the root element".into())),
    }
    Ok(())
}

/// `&amp;` or `&#13;` as text; an unknown entity or a bad character reference is an error.
pub(crate) fn resolve_ref(r: &BytesRef) -> Result<String, String> {
    let resolved = if r.is_char_ref() {
        r.resolve_char_ref().map_err(|e| e.to_string())?.map(String::from)
    } else {
        resolve_xml_entity(r).map(str::to_owned)
    };
    resolved.ok_or_else(|| format!("unknown entity &{};", &**r))
}

fn describe(e: QxError) -> String {
    match e {
        QxError::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
            format!("end tag </{found}> does not match start tag <{expected}>")
        }
        QxError::IllFormed(IllFormedError::UnmatchedEndTag(name)) => {
            format!("end tag </{name}> has no start tag")
        }
        QxError::IllFormed(IllFormedError::MissingEndTag(name)) => {
            format!("element <{name}> is not closed")
        }
        other => other.to_string(),
    }
}

fn to_cdr(mut root: Node) -> RawCdr {
    let mut cdr = RawCdr::empty(CdrFormat::Xml);
    cdr.core_uuid = root.attr("core-uuid").map(str::to_owned);
    cdr.switchname = root.attr("switchname").map(str::to_owned);
    for section in &mut root.children {
        match section.name.as_str() {
            "channel_data" => cdr.channel_data.extend(section.children.iter().map(|c| (c.name.clone(), c.trimmed()))),
            "variables" => {
                let captured = std::mem::take(&mut section.captured);
                cdr.variables.extend(captured.into_iter().map(|(name, text)| (name, decode_owned(text))));
                cdr.variables.extend(section.children.iter().map(|c| (c.name.clone(), percent_decode(c.text.trim()))))
            }
            "app_log" => cdr.app_log.extend(section.named("application").map(|a| Application {
                app_name: a.attr("app_name").unwrap_or_default().to_owned(),
                app_data: a.attr("app_data").unwrap_or_default().to_owned(),
                app_stamp: a.attr("app_stamp").and_then(|s| s.trim().parse().ok()),
            })),
            "callflow" => cdr.callflows.push(callflow(section)),
            "call-stats" => flatten_stats(section, "", &mut cdr.call_stats),
            "hold-record" => cdr.hold_records.extend(section.named("hold").map(|h| HoldRecord {
                on: h.attr("on").and_then(|s| s.trim().parse().ok()),
                off: h.attr("off").and_then(|s| s.trim().parse().ok()),
                bridged_to: h.attr("bridged-to").map(str::to_owned),
            })),
            _ => {}
        }
    }
    cdr
}

/// `<call-stats><audio><inbound><mos>4.5</mos>` -> `("audio.inbound.mos", "4.5")`.
fn flatten_stats(node: &Node, prefix: &str, out: &mut Vec<(String, String)>) {
    for c in &node.children {
        let path = if prefix.is_empty() { c.name.clone() } else { format!("{prefix}.{}", c.name) };
        if c.children.is_empty() {
            out.push((path, c.trimmed()));
        } else {
            flatten_stats(c, &path, out);
        }
    }
}

/// A variable's value: trimmed and percent-decoded once, reusing the text when neither
/// changes it (the common case).
fn decode_owned(text: String) -> String {
    let trimmed = text.trim();
    if trimmed.len() == text.len() && !text.contains('%') {
        text
    } else {
        percent_decode(trimmed)
    }
}

fn callflow(node: &Node) -> Callflow {
    Callflow {
        attrs: node.attrs.clone(),
        profile: node.child("caller_profile").map(profile).unwrap_or_default(),
        times: node
            .child("times")
            .map(|t| t.children.iter().filter_map(|c| Some((c.name.clone(), c.text.trim().parse().ok()?))).collect())
            .unwrap_or_default(),
        extension: node.child("extension").map(|e| Extension {
            name: e.attr("name").unwrap_or_default().to_owned(),
            number: e.attr("number").unwrap_or_default().to_owned(),
        }),
    }
}

/// Leaf children are fields; `<originatee>` etc. wrap one `<originatee_caller_profile>` per peer.
fn profile(node: &Node) -> Profile {
    let mut p = Profile::default();
    for c in &node.children {
        let peers = || c.children.iter().map(profile);
        match c.name.as_str() {
            "origination" => p.origination.extend(peers()),
            "originator" => p.originator.extend(peers()),
            "originatee" => p.originatee.extend(peers()),
            _ if c.children.is_empty() => p.fields.push((c.name.clone(), c.trimmed())),
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::ParseError;

    fn xml_err(doc: &[u8]) -> (String, u64) {
        let e = parse(doc).expect_err("must fail");
        assert!(matches!(e, ParseError::Xml { .. }), "{e:?}");
        (e.to_string(), e.offset().unwrap())
    }

    #[test]
    fn variable_names_may_contain_colons() {
        let cdr =
            parse(b"<cdr><variables><nolocal:req_uuid>a%40b</nolocal:req_uuid><x:y:z/></variables></cdr>").unwrap();
        assert_eq!(cdr.variables, vec![("nolocal:req_uuid".into(), "a@b".into()), ("x:y:z".into(), "".into())]);
    }

    #[test]
    fn entities_are_decoded_and_unknown_ones_rejected() {
        let doc =
            br#"<cdr><app_log><application app_name="python" app_data="{&quot;a&quot;: 1} &amp; &#x41;"/></app_log>
            <variables><v>&lt;%3C&#66;&gt;</v></variables></cdr>"#;
        let cdr = parse(doc).unwrap();
        assert_eq!(cdr.app_log[0].app_data, r#"{"a": 1} & A"#);
        assert_eq!(cdr.var("v"), Some("<<B>"));
        let (msg, _) = xml_err(b"<cdr><variables><v>&nbsp;</v></variables></cdr>");
        assert!(msg.contains("&nbsp;"), "{msg}");
        let (msg, _) = xml_err(b"<cdr><application app_data=\"&bogus;\"/></cdr>");
        assert!(msg.contains("bogus"), "{msg}");
        xml_err(b"<cdr><variables><v>a & b</v></variables></cdr>");
    }

    #[test]
    fn unclosed_element_at_eof_is_an_error() {
        let doc = b"<?xml version=\"1.0\"?>\n<cdr>\n  <variables>\n    <uuid>x</uuid>\n";
        let (msg, offset) = xml_err(doc);
        assert!(msg.contains("<variables>") && msg.contains("missing end tag"), "{msg}");
        assert_eq!(offset, doc.len() as u64);
        let (msg, _) = xml_err(b"<cdr><variables><uuid>x");
        assert!(msg.contains("<uuid>"), "{msg}");
    }

    #[test]
    fn mismatched_tags_name_both_elements() {
        let doc = b"<cdr>\n<variables>\n<caller_id>\"1001\" <1001></caller_id></variables></cdr>";
        let (msg, offset) = xml_err(doc);
        assert!(msg.contains("</caller_id>") && msg.contains("<1001>"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert_eq!(&doc[offset as usize..offset as usize + 12], b"</caller_id>");
    }

    #[test]
    fn root_must_be_cdr_and_single() {
        let e = parse(b"<?xml version=\"1.0\"?>\n<foo><bar/></foo>").unwrap_err();
        assert_eq!(e.to_string(), "XML root element is <foo>, expected <cdr>");
        assert_eq!(e.offset(), Some(22));
        let (msg, _) = xml_err(b"<cdr></cdr><cdr></cdr>");
        assert!(msg.contains("after the root"), "{msg}");
        let (msg, _) = xml_err(b"<cdr></cdr>junk");
        assert!(msg.contains("outside the root"), "{msg}");
        xml_err(b"</cdr>");
        xml_err(b"<!-- only a comment -->");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let doc = b"<cdr><variables><a>x\xFFy%FFz</a></variables><callflow><caller_profile><caller_id_name>Jos\xE9</caller_id_name></caller_profile></callflow></cdr>";
        let cdr = parse(doc).unwrap();
        assert_eq!(cdr.var("a"), Some("x\u{FFFD}y\u{FFFD}z"));
        assert_eq!(cdr.callflows[0].profile.get("caller_id_name"), Some("Jos\u{FFFD}"));
    }

    #[test]
    fn error_offsets_count_raw_bytes() {
        let doc = b"\xEF\xBB\xBF<cdr><a>\xE9\xFF\xFE</b></cdr>";
        let (msg, offset) = xml_err(doc);
        assert_eq!(&doc[offset as usize..offset as usize + 4], b"</b>", "{msg}");
        let doc = b"\xEF\xBB\xBF<cdr><a>\xE9<b>";
        let (msg, _) = xml_err(doc);
        assert!(msg.contains("<b> (opened at byte 12)"), "{msg}");
    }

    #[test]
    fn text_is_trimmed_and_bom_accepted() {
        let cdr = parse(b"\xEF\xBB\xBF<cdr><channel_data><direction>inbound\n\t</direction></channel_data><variables><direction> outbound </direction></variables></cdr>").unwrap();
        assert_eq!(cdr.channel_data, vec![("direction".into(), "inbound".into())]);
        assert_eq!(cdr.direction(), Some("inbound"));
        assert_eq!(cdr.var("direction"), Some("outbound"));
    }

    #[test]
    fn hold_records_times_and_nested_profiles() {
        let doc = br#"<cdr><hold-record><hold on="1521025767847893" off="1521025783334494" bridged-to="9c1a"/><hold on="x"/></hold-record>
            <callflow dialplan="XML" profile_index="2"><extension name="e" number="1002"><application app_name="bridge"/></extension>
              <caller_profile><uuid>a</uuid><originator><originator_caller_profile><uuid>b</uuid></originator_caller_profile></originator></caller_profile>
              <times><created_time>10</created_time><bogus>n/a</bogus><hangup_time> 20 </hangup_time></times></callflow></cdr>"#;
        let cdr = parse(doc).unwrap();
        assert_eq!(cdr.hold_records.len(), 2);
        assert_eq!(cdr.hold_records[0].on, Some(1521025767847893));
        assert_eq!(cdr.hold_records[0].bridged_to.as_deref(), Some("9c1a"));
        assert_eq!(cdr.hold_records[1].off, None);
        let cf = &cdr.callflows[0];
        assert_eq!(cf.times, vec![("created_time".into(), 10), ("hangup_time".into(), 20)]);
        assert_eq!(cf.attr("profile_index"), Some("2"));
        assert_eq!(cf.extension.as_ref().map(|e| e.number.as_str()), Some("1002"));
        assert_eq!(cf.profile.originator[0].get("uuid"), Some("b"));
        assert_eq!(cdr.uuid(), Some("a"));
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let doc = format!("<cdr>{}", "<a>".repeat(100_000));
        let (msg, _) = xml_err(doc.as_bytes());
        assert!(msg.contains("nested deeper"), "{msg}");
    }
}
