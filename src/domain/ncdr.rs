//! Reading a `<cdr-normalized>` document back: what a task executor sees. The distillery
//! wrote it (see `normalize::to_xml`); the executor finds its `<task>` by `node_index`.

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};

use super::tasks::CDR_FILE_PATH_PLACEHOLDER;

/// One `<task type="…">` node with its child elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDoc {
    pub task_type: String,
    pub params: Vec<(String, String)>,
}

impl TaskDoc {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// A parsed normalized CDR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NormalizedDoc {
    pub data: Vec<(String, String)>,
    pub tasks: Vec<TaskDoc>,
    /// `<warnings>`: values the CDR carried that did not fit their fields.
    pub warnings: Vec<super::mapping::FieldWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NcdrError {
    #[error("normalized CDR is not well-formed XML at byte {offset}: {message}")]
    Xml { offset: u64, message: String },
    #[error("normalized CDR root is <{0}>, expected <cdr-normalized> with <data>")]
    Root(String),
    #[error("normalized CDR has no <task> at node_index {index} (it has {count})")]
    NoTask { index: u32, count: usize },
    #[error("task at node_index {index} is '{found}', the tasks row says '{expected}'")]
    TaskMismatch { index: u32, found: String, expected: String },
}

impl NormalizedDoc {
    pub fn parse(xml: &[u8]) -> Result<NormalizedDoc, NcdrError> {
        let text_in = String::from_utf8_lossy(xml);
        let mut reader = Reader::from_str(&text_in);
        reader.config_mut().check_end_names = true;
        let mut doc = NormalizedDoc::default();
        // element names from the root down
        let mut path: Vec<String> = Vec::new();
        let mut text = String::new();
        loop {
            let at = reader.buffer_position();
            let err = |e: &dyn std::fmt::Display| NcdrError::Xml { offset: at, message: e.to_string() };
            let event = reader.read_event().map_err(|e| err(&e))?;
            let (start, empty) = match event {
                Event::Start(s) => (s, false),
                Event::Empty(s) => (s, true),
                Event::Text(t) => {
                    text.push_str(&t.xml10_content());
                    continue;
                }
                Event::CData(c) => {
                    text.push_str(&c.xml10_content());
                    continue;
                }
                Event::GeneralRef(r) => {
                    text.push_str(&super::cdr::resolve_ref(&r).map_err(|m| err(&m))?);
                    continue;
                }
                Event::End(_) => {
                    close(&mut doc, &mut path, &text);
                    text.clear();
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let name = start.name().as_ref().to_owned();
            if path.is_empty() && name != "cdr-normalized" {
                return Err(NcdrError::Root(name));
            }
            let in_list = |list: &str, item: &str| path.len() == 2 && path[1] == list && name == item;
            if in_list("tasks", "task") || in_list("warnings", "warning") {
                let mut attrs = Vec::new();
                for a in start.attributes() {
                    let a = a.map_err(|e| err(&e))?;
                    let value = a.normalized_value(XmlVersion::Implicit1_0).map_err(|e| err(&e))?.into_owned();
                    attrs.push((a.key.as_ref().to_string(), value));
                }
                let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                if name == "task" {
                    doc.tasks.push(TaskDoc { task_type: attr("type"), params: Vec::new() });
                } else {
                    let (field, value, reason) = (attr("field"), attr("value"), attr("reason"));
                    doc.warnings.push(super::mapping::FieldWarning { field, value, reason });
                }
            }
            text.clear();
            path.push(name);
            if empty {
                close(&mut doc, &mut path, "");
            }
        }
        if !path.is_empty() {
            let message = format!("<{}> is not closed", path.join("><"));
            return Err(NcdrError::Xml { offset: xml.len() as u64, message });
        }
        if doc.data.is_empty() {
            return Err(NcdrError::Root(String::new()));
        }
        Ok(doc)
    }

    /// A `<data>` field, or one derived from it: `*_stamp` is the matching `*_epoch` as UTC
    /// `YYYY-MM-DD HH:MM:SS` (billing and templates ask for stamps).
    pub fn field(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.data.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        let base = name.strip_suffix("_stamp")?;
        let epoch: i64 = self.field(&format!("{base}_epoch"))?.parse().ok().filter(|e| *e > 0)?;
        chrono::DateTime::from_timestamp(epoch, 0).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    }

    /// The `<task>` a `tasks` row points at, with `__CDRFilePath__` replaced by the
    /// normalized CDR's own location (the seed's placeholder).
    pub fn task(&self, index: u32, expected_type: &str, ncdr_location: &str) -> Result<TaskDoc, NcdrError> {
        let t = self.tasks.get(index as usize).ok_or(NcdrError::NoTask { index, count: self.tasks.len() })?;
        if t.task_type != expected_type {
            return Err(NcdrError::TaskMismatch { index, found: t.task_type.clone(), expected: expected_type.into() });
        }
        let mut t = t.clone();
        for (_, v) in &mut t.params {
            if v.contains(CDR_FILE_PATH_PLACEHOLDER) {
                *v = v.replace(CDR_FILE_PATH_PLACEHOLDER, ncdr_location);
            }
        }
        Ok(t)
    }
}

/// Ends the innermost element: a `<data>` child becomes a field, a `<task>` child a param.
fn close(doc: &mut NormalizedDoc, path: &mut Vec<String>, text: &str) {
    if let Some(name) = path.pop() {
        match path.as_slice() {
            [_, d] if d == "data" => doc.data.push((name, text.trim().to_string())),
            [_, t, task] if t == "tasks" && task == "task" => {
                if let Some(last) = doc.tasks.last_mut() {
                    last.params.push((name, text.trim().to_string()));
                }
            }
            _ => {}
        }
    }
}

/// Fills `{field}` placeholders from a normalized CDR (unknown fields become empty) and turns
/// a written `\n` into a line break, so one-line config values can hold multi-line bodies.
pub fn render(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let template = template.replace("\\n", "\n");
    let mut out = String::with_capacity(template.len());
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if after[..close].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                out.push_str(&lookup(&after[..close]).unwrap_or_default());
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::normalize::{normalize_document, NormalizeContext};

    fn sample() -> Vec<u8> {
        let raw = "<?xml version=\"1.0\"?>\n<cdr><variables><uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid>\
             <direction>inbound</direction><start_epoch>1700000000</start_epoch>\
             <answer_epoch>1700000005</answer_epoch><end_epoch>1700000065</end_epoch><billsec>60</billsec>\
             <hangup_cause>NORMAL_CLEARING</hangup_cause><record_path>/rec</record_path>\
             <record_name>a&amp;b.wav</record_name></variables><callflow><caller_profile>\
             <caller_id_number>1001</caller_id_number><destination_number>+4420</destination_number>\
             </caller_profile></callflow></cdr>";
        let n = normalize_document(raw.as_bytes(), &NormalizeContext::default()).unwrap();
        n.to_xml().into_bytes()
    }

    #[test]
    fn reads_back_what_the_distillery_wrote() {
        let doc = NormalizedDoc::parse(&sample()).unwrap();
        assert_eq!(doc.field("uuid").as_deref(), Some("0d2e4c6a-1111-2222-3333-444455556666"));
        assert_eq!(doc.field("recording_path").as_deref(), Some("/rec/a&b.wav"));
        assert_eq!(doc.field("start_stamp").as_deref(), Some("2023-11-14 22:13:20"));
        let types: Vec<_> = doc.tasks.iter().map(|t| t.task_type.as_str()).collect();
        assert_eq!(types, ["billing", "calllog", "recordingDelivery", "transcription"]);
        assert!(doc.tasks[1].params.is_empty(), "self-closing <task/> has no params");
        assert_eq!(doc.tasks[0].param("quantity"), Some("60"));
        let t = doc.task(2, "recordingDelivery", "/ncdr/x.xml").unwrap();
        assert_eq!(t.param("CDRFilePath"), Some("/ncdr/x.xml"));
        assert_eq!(doc.task(5, "billing", "").unwrap_err(), NcdrError::NoTask { index: 5, count: 4 });
        assert!(matches!(doc.task(0, "calllog", ""), Err(NcdrError::TaskMismatch { .. })));
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        assert!(matches!(NormalizedDoc::parse(b"<cdr><a></b></cdr>"), Err(NcdrError::Root(_))));
        assert!(matches!(NormalizedDoc::parse(b"<cdr-normalized><data><a></b>"), Err(NcdrError::Xml { .. })));
    }

    proptest::proptest! {
        #[test]
        fn reading_never_panics(doc in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = NormalizedDoc::parse(&doc);
        }

        #[test]
        fn what_the_distillery_writes_reads_back(value in "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\u{FFFE}\\u{FFFF}]{0,40}") {
            let xml = format!("<cdr-normalized><data><uuid>{}</uuid></data><tasks/></cdr-normalized>",
                crate::domain::normalize::xml_escape(&value));
            let doc = NormalizedDoc::parse(xml.as_bytes()).unwrap();
            proptest::prop_assert_eq!(doc.field("uuid").unwrap_or_default(), value.trim().to_string());
        }
    }

    #[test]
    fn templates_fill_fields_and_line_breaks() {
        let f = |k: &str| (k == "caller_id_number").then(|| "1001".to_string());
        assert_eq!(render("Missed {caller_id_number}{nope}\\n{ x}", f), "Missed 1001\n{ x}");
        assert_eq!(render("brace { alone", f), "brace { alone");
    }
}
