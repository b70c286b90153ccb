//! Parsing of the messages WeChat pushes to formpush (message push), in either of the two
//! formats the console offers: JSON or XML. The format is told by the first non-whitespace
//! character (`<` means XML).
//!
//! Two entry points: [`extract_encrypt`] pulls the `Encrypt` field out of a safe-mode body
//! (to be decrypted by the crypto module), and [`parse_message`] reads a plaintext message,
//! decoding the subscribe-message events formpush acts on. Malformed input is an error,
//! never a panic.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

use crate::domain::subscription::{self, PushedChange};

/// One pushed message, with the parts formpush uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The mini-program's original id (`gh_...`).
    pub to_user_name: String,
    /// The user's openid.
    pub from_user_name: String,
    /// Seconds since the epoch, as WeChat sent it.
    pub create_time: i64,
    pub msg_type: String,
    pub event: Option<String>,
    pub payload: PushEvent,
}

/// The decoded event, for the subscribe-message events; `Other` for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// `subscribe_msg_popup_event`: the user answered `wx.requestSubscribeMessage`.
    SubscribePopup(Vec<SubscribeDecision>),
    /// `subscribe_msg_change_event`: the user changed a template in the settings.
    SubscribeChange(Vec<SubscribeDecision>),
    /// `subscribe_msg_sent_event`: the outcome of a subscribe send.
    SubscribeSent(Vec<SubscribeSendResult>),
    Other,
}

impl PushMessage {
    /// What this push changes in the credit pool, if anything: subscribe accepts add
    /// grants, rejects in the settings remove them, sent events record WeChat's outcome.
    pub fn pushed_change(&self) -> Option<PushedChange> {
        if self.from_user_name.is_empty() {
            return None;
        }
        let templates = |decisions: &[SubscribeDecision], keep: fn(&str) -> bool| -> Vec<String> {
            decisions
                .iter()
                .filter(|d| keep(&d.status))
                .map(|d| d.template_id.clone())
                .collect()
        };
        let openid = self.from_user_name.clone();
        match &self.payload {
            PushEvent::SubscribePopup(decisions) => Some(PushedChange::Grant {
                openid,
                template_ids: templates(decisions, subscription::grants_send),
            }),
            PushEvent::SubscribeChange(decisions) => Some(PushedChange::Revoke {
                openid,
                template_ids: templates(decisions, subscription::revokes_grants),
            }),
            PushEvent::SubscribeSent(results) => Some(PushedChange::SendResults(
                results
                    .iter()
                    .map(|r| {
                        let status = if r.error_code == 0 {
                            "success".to_string()
                        } else {
                            format!("{}:{}", r.error_code, r.error_status)
                        };
                        (r.msg_id.clone(), status)
                    })
                    .collect(),
            )),
            PushEvent::Other => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeDecision {
    pub template_id: String,
    /// `accept`, `reject`, ... exactly as given.
    pub status: String,
    pub popup_scene: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSendResult {
    pub template_id: String,
    pub msg_id: String,
    pub error_code: i64,
    pub error_status: String,
}

/// Why a push body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push body is empty")]
    Empty,
    #[error("push body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("push body JSON is not an object")]
    NotAnObject,
    #[error("push body is not valid XML: {0}")]
    Xml(#[from] quick_xml::Error),
    #[error("push body XML is malformed: {0}")]
    XmlStructure(&'static str),
    #[error("push message repeats the field {0}")]
    DuplicateField(String),
    #[error("push message lacks the field {0}")]
    MissingField(&'static str),
    #[error("push message field {field} is invalid: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
}

const EVENT_POPUP: &str = "subscribe_msg_popup_event";
const EVENT_CHANGE: &str = "subscribe_msg_change_event";
const EVENT_SENT: &str = "subscribe_msg_sent_event";

// XML wraps each event's `<List>` entries in a container element named after the event.
const XML_POPUP: &str = "SubscribeMsgPopupEvent";
const XML_CHANGE: &str = "SubscribeMsgChangeEvent";
const XML_SENT: &str = "SubscribeMsgSentEvent";

/// The `Encrypt` field of a safe-mode body, JSON (`{"ToUserName": ..., "Encrypt": ...}`) or
/// XML (`<xml>...<Encrypt><![CDATA[...]]></Encrypt></xml>`).
pub fn extract_encrypt(body: &str) -> Result<String, PushError> {
    let encrypt = match Body::detect(body)? {
        Body::Xml(text) => {
            let doc = XmlDoc::parse(text)?;
            req_str(&doc.fields, "Encrypt")?
        }
        Body::Json(text) => req_str(&json_object(text)?, "Encrypt")?,
    };
    if encrypt.is_empty() {
        return Err(PushError::InvalidField {
            field: "Encrypt",
            reason: "empty",
        });
    }
    Ok(encrypt)
}

/// Reads a plaintext pushed message (after decryption, in safe mode).
pub fn parse_message(body: &str) -> Result<PushMessage, PushError> {
    match Body::detect(body)? {
        Body::Xml(text) => {
            let doc = XmlDoc::parse(text)?;
            build_message(&doc.fields, |container| doc.entries(container))
        }
        Body::Json(text) => {
            let obj = json_object(text)?;
            build_message(&obj, |_| json_entries(&obj))
        }
    }
}

enum Body<'a> {
    Xml(&'a str),
    Json(&'a str),
}

impl<'a> Body<'a> {
    fn detect(body: &'a str) -> Result<Self, PushError> {
        // Some encoders put a BOM in front; it is not whitespace to `trim_start`.
        let text = body.trim_start_matches('\u{feff}').trim_start();
        match text.as_bytes().first() {
            None => Err(PushError::Empty),
            Some(b'<') => Ok(Body::Xml(text)),
            Some(_) => Ok(Body::Json(text)),
        }
    }
}

fn json_object(text: &str) -> Result<Map<String, Value>, PushError> {
    match serde_json::from_str::<Value>(text)? {
        Value::Object(obj) => Ok(obj),
        _ => Err(PushError::NotAnObject),
    }
}

/// JSON's `List`: one object when there is one entry, an array when there are several.
fn json_entries(obj: &Map<String, Value>) -> Result<Vec<&Map<String, Value>>, PushError> {
    const FIELD: &str = "List";
    match obj.get(FIELD) {
        None | Some(Value::Null) => Err(PushError::MissingField(FIELD)),
        Some(Value::Object(entry)) => Ok(vec![entry]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_object().ok_or(PushError::InvalidField {
                    field: FIELD,
                    reason: "entries must be objects",
                })
            })
            .collect(),
        Some(_) => Err(PushError::InvalidField {
            field: FIELD,
            reason: "expected an object or an array",
        }),
    }
}

/// Builds the message from the top-level fields; `entries` yields the list entries of a
/// subscribe event given its XML container name (JSON ignores the name: it is always `List`).
fn build_message<'a, F>(top: &Map<String, Value>, entries: F) -> Result<PushMessage, PushError>
where
    F: Fn(&'static str) -> Result<Vec<&'a Map<String, Value>>, PushError>,
{
    let to_user_name = req_str(top, "ToUserName")?;
    let from_user_name = req_str(top, "FromUserName")?;
    let create_time = req_i64(top, "CreateTime")?;
    let msg_type = req_str(top, "MsgType")?;
    let event = opt_str(top, "Event")?;

    let payload = match (msg_type.as_str(), event.as_deref()) {
        ("event", Some(EVENT_POPUP)) => PushEvent::SubscribePopup(decisions(entries(XML_POPUP)?)?),
        ("event", Some(EVENT_CHANGE)) => {
            PushEvent::SubscribeChange(decisions(entries(XML_CHANGE)?)?)
        }
        ("event", Some(EVENT_SENT)) => PushEvent::SubscribeSent(
            entries(XML_SENT)?
                .into_iter()
                .map(send_result)
                .collect::<Result<_, _>>()?,
        ),
        _ => PushEvent::Other,
    };

    Ok(PushMessage {
        to_user_name,
        from_user_name,
        create_time,
        msg_type,
        event,
        payload,
    })
}

fn decisions(entries: Vec<&Map<String, Value>>) -> Result<Vec<SubscribeDecision>, PushError> {
    entries
        .into_iter()
        .map(|entry| {
            Ok(SubscribeDecision {
                template_id: req_str(entry, "TemplateId")?,
                status: req_str(entry, "SubscribeStatusString")?,
                popup_scene: opt_str_or_num(entry, "PopupScene")?,
            })
        })
        .collect()
}

fn send_result(entry: &Map<String, Value>) -> Result<SubscribeSendResult, PushError> {
    // WeChat spells it MsgID here; MsgId (its spelling elsewhere) is accepted too.
    let msg_id = match opt_str_or_num(entry, "MsgID")? {
        Some(id) => id,
        None => opt_str_or_num(entry, "MsgId")?.ok_or(PushError::MissingField("MsgID"))?,
    };
    Ok(SubscribeSendResult {
        template_id: req_str(entry, "TemplateId")?,
        msg_id,
        error_code: req_i64(entry, "ErrorCode")?,
        error_status: opt_str(entry, "ErrorStatus")?.unwrap_or_default(),
    })
}

// Field accessors shared by both formats: XML values arrive as JSON strings.

fn opt_str(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, PushError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PushError::InvalidField {
            field,
            reason: "expected a string",
        }),
    }
}

fn req_str(map: &Map<String, Value>, field: &'static str) -> Result<String, PushError> {
    opt_str(map, field)?.ok_or(PushError::MissingField(field))
}

/// A string, or a number kept as its decimal text (WeChat is inconsistent about which).
fn opt_str_or_num(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, PushError> {
    match map.get(field) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => opt_str(map, field),
    }
}

/// An integer given as a JSON number or as decimal text (XML, or JSON strings).
fn req_i64(map: &Map<String, Value>, field: &'static str) -> Result<i64, PushError> {
    let invalid = PushError::InvalidField {
        field,
        reason: "expected an integer",
    };
    match map.get(field) {
        None | Some(Value::Null) => Err(PushError::MissingField(field)),
        Some(Value::Number(n)) => n.as_i64().ok_or(invalid),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| invalid),
        Some(_) => Err(invalid),
    }
}

/// The few parts of a WeChat XML message formpush reads: the text of the root's leaf
/// children, and, per container child of the root, the leaf texts of each `<List>` in it.
/// A flat walk with an explicit stack: no recursion, so deep nesting cannot overflow.
#[derive(Default)]
struct XmlDoc {
    fields: Map<String, Value>,
    lists: HashMap<String, Vec<Map<String, Value>>>,
}

/// An element whose text is being collected; it stops being a leaf if a child turns up.
#[derive(Default)]
struct Leaf {
    text: String,
    has_child: bool,
}

impl XmlDoc {
    fn parse(text: &str) -> Result<Self, PushError> {
        let mut reader = Reader::from_str(text);
        reader.config_mut().trim_text(true);

        let mut doc = XmlDoc::default();
        let mut stack: Vec<String> = Vec::new();
        let mut seen_root = false;
        // Depth 2: a child of the root, with the List entries gathered inside it.
        let mut field = Leaf::default();
        let mut container: Vec<Map<String, Value>> = Vec::new();
        // Depth 3: a <List> entry; depth 4: one of its fields.
        let mut entry: Option<Map<String, Value>> = None;
        let mut entry_field = Leaf::default();

        loop {
            let (start, end) = match reader.read_event()? {
                Event::Start(e) => (Some(element_name(&e)?), false),
                Event::Empty(e) => (Some(element_name(&e)?), true),
                Event::End(_) => (None, true),
                Event::Text(t) => {
                    let s = t.unescape()?;
                    Self::text(&stack, &s, &mut field, &mut entry_field, entry.is_some())?;
                    continue;
                }
                Event::CData(c) => {
                    let s = c.decode().map_err(quick_xml::Error::from)?;
                    Self::text(&stack, &s, &mut field, &mut entry_field, entry.is_some())?;
                    continue;
                }
                Event::Eof => break,
                // Declarations, comments, processing instructions, DOCTYPE: nothing to read.
                _ => continue,
            };

            if let Some(name) = start {
                match stack.len() {
                    0 if seen_root => {
                        return Err(PushError::XmlStructure("more than one root element"))
                    }
                    0 => seen_root = true,
                    1 => {
                        field = Leaf::default();
                        container.clear();
                    }
                    2 => {
                        field.has_child = true;
                        entry = (name == "List").then(Map::new);
                    }
                    3 if entry.is_some() => entry_field = Leaf::default(),
                    4 => entry_field.has_child = true,
                    _ => {}
                }
                stack.push(name);
            }
            if !end {
                continue;
            }

            // quick-xml has already checked that an end tag matches its start tag.
            let name = stack
                .pop()
                .ok_or(PushError::XmlStructure("end tag without start tag"))?;
            match stack.len() {
                1 => {
                    if !field.has_child {
                        insert_unique(&mut doc.fields, name.clone(), &field.text)?;
                    }
                    if field.has_child || !container.is_empty() {
                        doc.lists.entry(name).or_default().append(&mut container);
                    }
                }
                2 => {
                    if let Some(done) = entry.take() {
                        container.push(done);
                    }
                }
                3 => {
                    if let Some(current) = entry.as_mut() {
                        if !entry_field.has_child {
                            insert_unique(current, name, &entry_field.text)?;
                        }
                    }
                }
                _ => {}
            }
        }

        if !stack.is_empty() {
            return Err(PushError::XmlStructure("unclosed element"));
        }
        if !seen_root {
            return Err(PushError::XmlStructure("no root element"));
        }
        Ok(doc)
    }

    /// Routes character data to the leaf being collected, if any.
    fn text(
        stack: &[String],
        s: &str,
        field: &mut Leaf,
        entry_field: &mut Leaf,
        in_entry: bool,
    ) -> Result<(), PushError> {
        match stack.len() {
            // Whitespace is trimmed away already; anything else outside the root is junk.
            0 if !s.is_empty() => Err(PushError::XmlStructure("text outside the root element")),
            2 => {
                field.text.push_str(s);
                Ok(())
            }
            4 if in_entry => {
                entry_field.text.push_str(s);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The `<List>` entries of `container`. A container present but holding no `<List>`
    /// gives no entries; an absent one is an error.
    fn entries(&self, container: &'static str) -> Result<Vec<&Map<String, Value>>, PushError> {
        match self.lists.get(container) {
            Some(list) => Ok(list.iter().collect()),
            None if self.fields.contains_key(container) => Ok(Vec::new()),
            None => Err(PushError::MissingField(container)),
        }
    }
}

/// The element's name; its attributes are checked for well-formedness though none is read
/// (quick-xml parses them lazily, so a broken one would otherwise slip through).
fn element_name(start: &BytesStart<'_>) -> Result<String, PushError> {
    for attr in start.attributes() {
        attr.map_err(quick_xml::Error::from)?;
    }
    String::from_utf8(start.name().as_ref().to_vec())
        .map_err(|_| PushError::XmlStructure("element name is not UTF-8"))
}

/// A field given twice is ambiguous (which one did WeChat mean?), so it is refused.
fn insert_unique(map: &mut Map<String, Value>, name: String, text: &str) -> Result<(), PushError> {
    if map.contains_key(&name) {
        return Err(PushError::DuplicateField(name));
    }
    map.insert(name, Value::String(text.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decision(template_id: &str, status: &str, scene: Option<&str>) -> SubscribeDecision {
        SubscribeDecision {
            template_id: template_id.into(),
            status: status.into(),
            popup_scene: scene.map(Into::into),
        }
    }

    fn sent(template_id: &str, msg_id: &str, code: i64, status: &str) -> SubscribeSendResult {
        SubscribeSendResult {
            template_id: template_id.into(),
            msg_id: msg_id.into(),
            error_code: code,
            error_status: status.into(),
        }
    }

    // ---- extract_encrypt ----

    #[test]
    fn extract_encrypt_from_official_json_body() {
        let body = r#"{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}"#;
        assert_eq!(
            extract_encrypt(body).unwrap(),
            "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
        );
    }

    #[test]
    fn extract_encrypt_from_xml_body() {
        let body = "\n  <xml>\n    <ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n    <Encrypt><![CDATA[D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQ==]]></Encrypt>\n  </xml>\n";
        assert_eq!(
            extract_encrypt(body).unwrap(),
            "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQ=="
        );
        // Plain text content (no CDATA) and an XML declaration work too.
        let body = "<?xml version=\"1.0\"?><xml><Encrypt>abc+/=</Encrypt></xml>";
        assert_eq!(extract_encrypt(body).unwrap(), "abc+/=");
    }

    #[test]
    fn extract_encrypt_errors() {
        assert!(matches!(extract_encrypt(""), Err(PushError::Empty)));
        assert!(matches!(extract_encrypt("  \n\t"), Err(PushError::Empty)));
        assert!(matches!(
            extract_encrypt(r#"{"ToUserName":"gh"}"#),
            Err(PushError::MissingField("Encrypt"))
        ));
        assert!(matches!(
            extract_encrypt(r#"{"Encrypt":42}"#),
            Err(PushError::InvalidField {
                field: "Encrypt",
                ..
            })
        ));
        assert!(matches!(
            extract_encrypt(r#"{"Encrypt":""}"#),
            Err(PushError::InvalidField {
                field: "Encrypt",
                ..
            })
        ));
        assert!(matches!(
            extract_encrypt(r#"["Encrypt"]"#),
            Err(PushError::NotAnObject)
        ));
        assert!(matches!(
            extract_encrypt(r#"{"Encrypt":"abc""#),
            Err(PushError::Json(_))
        ));
        assert!(matches!(
            extract_encrypt("<xml><ToUserName>gh</ToUserName></xml>"),
            Err(PushError::MissingField("Encrypt"))
        ));
        assert!(matches!(
            extract_encrypt("<xml><Encrypt>abc</Encrypt>"),
            Err(PushError::XmlStructure(_))
        ));
        assert!(matches!(
            extract_encrypt("<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"),
            Err(PushError::DuplicateField(_))
        ));
    }

    #[test]
    fn safe_mode_end_to_end_official_json() {
        use super::super::crypto::{verify_signature, MessageCrypto};
        let body = r#"{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}"#;
        let encrypt = extract_encrypt(body).unwrap();
        assert!(verify_signature(
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
            &["AAAAA", "1714112445", "415670741", &encrypt]
        ));
        let crypto = MessageCrypto::new(&"A".repeat(43), "wxba5fad812f8e6fb9").unwrap();
        let msg = parse_message(&crypto.decrypt(&encrypt).unwrap()).unwrap();
        assert_eq!(msg.to_user_name, "gh_97417a04a28d");
        assert_eq!(msg.from_user_name, "o9AgO5Kd5ggOC-bXrbNODIiE3bGY");
        assert_eq!(msg.create_time, 1714112445);
        assert_eq!(msg.event.as_deref(), Some("debug_demo"));
        assert_eq!(msg.payload, PushEvent::Other);
    }

    // ---- plaintext vectors from WeChat's documentation ----

    #[test]
    fn parses_official_json_plaintext() {
        let body = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;
        assert_eq!(
            parse_message(body).unwrap(),
            PushMessage {
                to_user_name: "gh_97417a04a28d".into(),
                from_user_name: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into(),
                create_time: 1714112445,
                msg_type: "event".into(),
                event: Some("debug_demo".into()),
                payload: PushEvent::Other,
            }
        );
    }

    #[test]
    fn parses_official_xml_plaintext() {
        let body = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n\
<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n\
<CreateTime>1715943329</CreateTime>\n\
<MsgType><![CDATA[event]]></MsgType>\n\
<Event><![CDATA[debug_demo]]></Event>\n\
<debug_str><![CDATA[hello world]]></debug_str>\n\
</xml>";
        assert_eq!(
            parse_message(body).unwrap(),
            PushMessage {
                to_user_name: "gh_97417a04a28d".into(),
                from_user_name: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into(),
                create_time: 1715943329,
                msg_type: "event".into(),
                event: Some("debug_demo".into()),
                payload: PushEvent::Other,
            }
        );
    }

    #[test]
    fn parses_subscribe_vector_plaintext() {
        let body = r#"{"ToUserName":"gh_7f083739789a","FromUserName":"oia2TjjewbmiOUlr6X-1crbLOvLw","CreateTime":1409304348,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgHQQP7vs","SubscribeStatusString":"accept","PopupScene":"0"}]}"#;
        let msg = parse_message(body).unwrap();
        assert_eq!(msg.to_user_name, "gh_7f083739789a");
        assert_eq!(msg.from_user_name, "oia2TjjewbmiOUlr6X-1crbLOvLw");
        assert_eq!(msg.create_time, 1409304348);
        assert_eq!(msg.msg_type, "event");
        assert_eq!(msg.event.as_deref(), Some("subscribe_msg_popup_event"));
        assert_eq!(
            msg.payload,
            PushEvent::SubscribePopup(vec![decision(
                "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgHQQP7vs",
                "accept",
                Some("0")
            )])
        );
    }

    // ---- JSON events ----

    fn json_event(event: &str, list: &str) -> String {
        format!(
            r#"{{"ToUserName":"gh_123","FromUserName":"openid-1","CreateTime":1610969440,"MsgType":"event","Event":"{event}","List":{list}}}"#
        )
    }

    #[test]
    fn json_popup_single_object_and_array() {
        let single = json_event(
            EVENT_POPUP,
            r#"{"TemplateId":"T1","SubscribeStatusString":"accept","PopupScene":2}"#,
        );
        assert_eq!(
            parse_message(&single).unwrap().payload,
            PushEvent::SubscribePopup(vec![decision("T1", "accept", Some("2"))])
        );
        let array = json_event(
            EVENT_POPUP,
            r#"[{"TemplateId":"T1","SubscribeStatusString":"accept","PopupScene":"1"},
                {"TemplateId":"T2","SubscribeStatusString":"reject"}]"#,
        );
        assert_eq!(
            parse_message(&array).unwrap().payload,
            PushEvent::SubscribePopup(vec![
                decision("T1", "accept", Some("1")),
                decision("T2", "reject", None),
            ])
        );
        let empty = json_event(EVENT_POPUP, "[]");
        assert_eq!(
            parse_message(&empty).unwrap().payload,
            PushEvent::SubscribePopup(vec![])
        );
    }

    #[test]
    fn json_change_single_object_and_array() {
        let single = json_event(
            EVENT_CHANGE,
            r#"{"TemplateId":"T1","SubscribeStatusString":"reject"}"#,
        );
        let msg = parse_message(&single).unwrap();
        assert_eq!(msg.from_user_name, "openid-1");
        assert_eq!(
            msg.payload,
            PushEvent::SubscribeChange(vec![decision("T1", "reject", None)])
        );
        let array = json_event(
            EVENT_CHANGE,
            r#"[{"TemplateId":"T1","SubscribeStatusString":"reject"},{"TemplateId":"T2","SubscribeStatusString":"reject"}]"#,
        );
        assert_eq!(
            parse_message(&array).unwrap().payload,
            PushEvent::SubscribeChange(vec![
                decision("T1", "reject", None),
                decision("T2", "reject", None),
            ])
        );
    }

    #[test]
    fn json_sent_numbers_or_strings() {
        let single = json_event(
            EVENT_SENT,
            r#"{"TemplateId":"T1","MsgID":"1700827132819554304","ErrorCode":"0","ErrorStatus":"success"}"#,
        );
        assert_eq!(
            parse_message(&single).unwrap().payload,
            PushEvent::SubscribeSent(vec![sent("T1", "1700827132819554304", 0, "success")])
        );
        let array = json_event(
            EVENT_SENT,
            r#"[{"TemplateId":"T1","MsgID":1700827132819554304,"ErrorCode":0,"ErrorStatus":"success"},
                {"TemplateId":"T2","MsgId":"42","ErrorCode":10005,"ErrorStatus":"Send Fail"},
                {"TemplateId":"T3","MsgID":"43","ErrorCode":"-1"}]"#,
        );
        assert_eq!(
            parse_message(&array).unwrap().payload,
            PushEvent::SubscribeSent(vec![
                sent("T1", "1700827132819554304", 0, "success"),
                sent("T2", "42", 10005, "Send Fail"),
                sent("T3", "43", -1, ""),
            ])
        );
    }

    #[test]
    fn json_create_time_as_string_and_other_events() {
        let body = r#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":"1700000000","MsgType":"event","Event":"user_enter_tempsession","SessionFrom":"x"}"#;
        let msg = parse_message(body).unwrap();
        assert_eq!(msg.create_time, 1700000000);
        assert_eq!(msg.event.as_deref(), Some("user_enter_tempsession"));
        assert_eq!(msg.payload, PushEvent::Other);

        // A text message: no Event; an event name with another MsgType is not decoded.
        let body = r#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":1,"MsgType":"text","Content":"hi"}"#;
        let msg = parse_message(body).unwrap();
        assert_eq!(msg.event, None);
        assert_eq!(msg.payload, PushEvent::Other);
        let body = r#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":1,"MsgType":"text","Event":"subscribe_msg_popup_event"}"#;
        assert_eq!(parse_message(body).unwrap().payload, PushEvent::Other);
    }

    #[test]
    fn json_malformed() {
        let cases: &[&str] = &[
            "{",
            "not json",
            r#"{"ToUserName":"gh",}"#,
            "null",
            "[1,2]",
            "\"string\"",
        ];
        for body in cases {
            assert!(parse_message(body).is_err(), "{body} parsed");
        }
        let missing = r#"{"FromUserName":"o1","CreateTime":1,"MsgType":"event"}"#;
        assert!(matches!(
            parse_message(missing),
            Err(PushError::MissingField("ToUserName"))
        ));
        let bad_time =
            r#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":1.5,"MsgType":"event"}"#;
        assert!(matches!(
            parse_message(bad_time),
            Err(PushError::InvalidField {
                field: "CreateTime",
                ..
            })
        ));
        let bad_time =
            r#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":"soon","MsgType":"event"}"#;
        assert!(matches!(
            parse_message(bad_time),
            Err(PushError::InvalidField {
                field: "CreateTime",
                ..
            })
        ));
        let bad_type = r#"{"ToUserName":5,"FromUserName":"o1","CreateTime":1,"MsgType":"event"}"#;
        assert!(matches!(
            parse_message(bad_type),
            Err(PushError::InvalidField {
                field: "ToUserName",
                ..
            })
        ));
        assert!(matches!(
            parse_message(&json_event(EVENT_POPUP, "null")),
            Err(PushError::MissingField("List"))
        ));
        let no_list = r#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_change_event"}"#;
        assert!(matches!(
            parse_message(no_list),
            Err(PushError::MissingField("List"))
        ));
        assert!(matches!(
            parse_message(&json_event(EVENT_POPUP, r#""T1""#)),
            Err(PushError::InvalidField { field: "List", .. })
        ));
        assert!(matches!(
            parse_message(&json_event(
                EVENT_POPUP,
                r#"[{"TemplateId":"T1","SubscribeStatusString":"accept"}, 3]"#
            )),
            Err(PushError::InvalidField { field: "List", .. })
        ));
        assert!(matches!(
            parse_message(&json_event(
                EVENT_POPUP,
                r#"{"SubscribeStatusString":"accept"}"#
            )),
            Err(PushError::MissingField("TemplateId"))
        ));
        assert!(matches!(
            parse_message(&json_event(
                EVENT_SENT,
                r#"{"TemplateId":"T","ErrorCode":0}"#
            )),
            Err(PushError::MissingField("MsgID"))
        ));
        assert!(matches!(
            parse_message(&json_event(
                EVENT_SENT,
                r#"{"TemplateId":"T","MsgID":"1","ErrorCode":"x"}"#
            )),
            Err(PushError::InvalidField {
                field: "ErrorCode",
                ..
            })
        ));
        assert!(matches!(
            parse_message(&json_event(
                EVENT_POPUP,
                r#"{"TemplateId":"T","SubscribeStatusString":"accept","PopupScene":[1]}"#
            )),
            Err(PushError::InvalidField {
                field: "PopupScene",
                ..
            })
        ));
    }

    // ---- XML events ----

    #[test]
    fn xml_popup_official_example_two_entries() {
        let body = r#"<xml>
    <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
    <FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>
    <CreateTime>1610969440</CreateTime>
    <MsgType><![CDATA[event]]></MsgType>
    <Event><![CDATA[subscribe_msg_popup_event]]></Event>
    <SubscribeMsgPopupEvent>
        <List>
            <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>
            <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>
            <PopupScene>2</PopupScene>
        </List>
        <List>
            <TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>
            <SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>
            <PopupScene>2</PopupScene>
        </List>
    </SubscribeMsgPopupEvent>
</xml>"#;
        assert_eq!(
            parse_message(body).unwrap(),
            PushMessage {
                to_user_name: "gh_123456789abc".into(),
                from_user_name: "otFpruAK8D-E6EfStSYonYSBZ8_4".into(),
                create_time: 1610969440,
                msg_type: "event".into(),
                event: Some(EVENT_POPUP.into()),
                payload: PushEvent::SubscribePopup(vec![
                    decision(
                        "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
                        "accept",
                        Some("2")
                    ),
                    decision(
                        "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI",
                        "reject",
                        Some("2")
                    ),
                ]),
            }
        );
    }

    fn xml_event(event: &str, container: &str, lists: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[openid-1]]></FromUserName>\
             <CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[{event}]]></Event><{container}>{lists}</{container}></xml>"
        )
    }

    #[test]
    fn xml_popup_single_entry_without_scene() {
        let body = xml_event(
            EVENT_POPUP,
            XML_POPUP,
            "<List><TemplateId>T1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List>",
        );
        assert_eq!(
            parse_message(&body).unwrap().payload,
            PushEvent::SubscribePopup(vec![decision("T1", "accept", None)])
        );
    }

    #[test]
    fn xml_change_single_and_multiple() {
        let one = "<List><TemplateId><![CDATA[T1]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>";
        let body = xml_event(EVENT_CHANGE, XML_CHANGE, one);
        let msg = parse_message(&body).unwrap();
        assert_eq!(msg.from_user_name, "openid-1");
        assert_eq!(msg.create_time, 1610969440);
        assert_eq!(
            msg.payload,
            PushEvent::SubscribeChange(vec![decision("T1", "reject", None)])
        );
        let two = format!("{one}\n<List><TemplateId>T2</TemplateId><SubscribeStatusString>reject</SubscribeStatusString></List>");
        let body = xml_event(EVENT_CHANGE, XML_CHANGE, &two);
        assert_eq!(
            parse_message(&body).unwrap().payload,
            PushEvent::SubscribeChange(vec![
                decision("T1", "reject", None),
                decision("T2", "reject", None),
            ])
        );
    }

    #[test]
    fn xml_sent_single_and_multiple() {
        let one = "<List><TemplateId><![CDATA[T1]]></TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List>";
        let body = xml_event(EVENT_SENT, XML_SENT, one);
        assert_eq!(
            parse_message(&body).unwrap().payload,
            PushEvent::SubscribeSent(vec![sent("T1", "1700827132819554304", 0, "success")])
        );
        let two = format!("{one}<List><TemplateId>T2</TemplateId><MsgID>7</MsgID><ErrorCode>10005</ErrorCode><ErrorStatus>Send Fail</ErrorStatus></List>");
        let body = xml_event(EVENT_SENT, XML_SENT, &two);
        assert_eq!(
            parse_message(&body).unwrap().payload,
            PushEvent::SubscribeSent(vec![
                sent("T1", "1700827132819554304", 0, "success"),
                sent("T2", "7", 10005, "Send Fail"),
            ])
        );
    }

    #[test]
    fn xml_empty_container_and_escapes() {
        let body = xml_event(EVENT_POPUP, XML_POPUP, "");
        assert_eq!(
            parse_message(&body).unwrap().payload,
            PushEvent::SubscribePopup(vec![])
        );
        let body = xml_event(
            EVENT_POPUP,
            XML_POPUP,
            "<List><TemplateId>a&amp;b&#x41;</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene/></List>",
        );
        assert_eq!(
            parse_message(&body).unwrap().payload,
            PushEvent::SubscribePopup(vec![decision("a&bA", "accept", Some(""))])
        );
    }

    #[test]
    fn xml_other_event_and_unknown_nesting_is_ignored() {
        let body = "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>5</CreateTime>\
                    <MsgType>event</MsgType><Event>user_enter_tempsession</Event>\
                    <Extra><Deep><Deeper><Deepest>x</Deepest></Deeper></Deep></Extra></xml>";
        let msg = parse_message(body).unwrap();
        assert_eq!(msg.create_time, 5);
        assert_eq!(msg.payload, PushEvent::Other);
    }

    #[test]
    fn xml_malformed() {
        let cases: &[&str] = &[
            "<",
            "<xml>",
            "<xml><ToUserName>gh</xml>",
            "<xml></xml><xml></xml>",
            "<xml></xml>junk",
            "<xml><Event>&bogus;</Event></xml>",
            "<xml><![CDATA[unterminated</xml>",
            "<xml attr=></xml>",
            "<xml><Encrypt a=\"1\" a=\"2\">x</Encrypt></xml>",
            "</xml>",
            "<a><b></a></b>",
            "<!DOCTYPE x [<!ENTITY e \"y\">]><xml><Encrypt>&e;</Encrypt></xml>",
        ];
        for body in cases {
            for result in [
                parse_message(body).map(|_| ()),
                extract_encrypt(body).map(|_| ()),
            ] {
                assert!(
                    matches!(result, Err(PushError::Xml(_) | PushError::XmlStructure(_))),
                    "{body}: {result:?}"
                );
            }
        }
        let no_time = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><MsgType>event</MsgType></xml>";
        assert!(matches!(
            parse_message(no_time),
            Err(PushError::MissingField("CreateTime"))
        ));
        let bad_time = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>abc</CreateTime><MsgType>event</MsgType></xml>";
        assert!(matches!(
            parse_message(bad_time),
            Err(PushError::InvalidField {
                field: "CreateTime",
                ..
            })
        ));
        let dup = "<xml><ToUserName>gh</ToUserName><ToUserName>gh2</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType></xml>";
        assert!(matches!(
            parse_message(dup),
            Err(PushError::DuplicateField(f)) if f == "ToUserName"
        ));
        // The event's container is missing.
        let body = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_sent_event</Event></xml>";
        assert!(matches!(
            parse_message(body),
            Err(PushError::MissingField(XML_SENT))
        ));
        // A List entry lacking a field.
        let body = xml_event(
            EVENT_SENT,
            XML_SENT,
            "<List><TemplateId>T</TemplateId><ErrorCode>0</ErrorCode></List>",
        );
        assert!(matches!(
            parse_message(&body),
            Err(PushError::MissingField("MsgID"))
        ));
        // Duplicate field inside an entry.
        let body = xml_event(EVENT_CHANGE, XML_CHANGE, "<List><TemplateId>T</TemplateId><TemplateId>U</TemplateId><SubscribeStatusString>reject</SubscribeStatusString></List>");
        assert!(matches!(
            parse_message(&body),
            Err(PushError::DuplicateField(_))
        ));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let depth = 100_000;
        let body = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert!(parse_message(&body).is_err());
        let unclosed = "<a>".repeat(depth);
        assert!(parse_message(&unclosed).is_err());
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse_message(&json).is_err());
    }

    #[test]
    fn bom_and_leading_whitespace_are_skipped() {
        let body = "\u{feff}\r\n {\"Encrypt\":\"x\"}";
        assert_eq!(extract_encrypt(body).unwrap(), "x");
        let body = "\u{feff}  <xml><Encrypt>x</Encrypt></xml>";
        assert_eq!(extract_encrypt(body).unwrap(), "x");
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            PushError::MissingField("Encrypt").to_string(),
            "push message lacks the field Encrypt"
        );
        let err = parse_message("{").unwrap_err();
        assert!(err.to_string().starts_with("push body is not valid JSON"));
        let err = parse_message("<xml>").unwrap_err();
        assert!(err.to_string().contains("XML"));
    }

    // ---- property tests ----

    /// Fragments that steer random input into the XML walker's interesting states.
    fn xml_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("<xml>".to_string()),
            Just("</xml>".to_string()),
            Just("<List>".to_string()),
            Just("</List>".to_string()),
            Just("<SubscribeMsgPopupEvent>".to_string()),
            Just("</SubscribeMsgPopupEvent>".to_string()),
            Just("<TemplateId>".to_string()),
            Just("</TemplateId>".to_string()),
            Just("<Encrypt/>".to_string()),
            Just("<![CDATA[".to_string()),
            Just("]]>".to_string()),
            Just("&amp;".to_string()),
            Just("&".to_string()),
            Just("<!--".to_string()),
            Just("-->".to_string()),
            Just("<?xml version=\"1.0\"?>".to_string()),
            "[a-zA-Z0-9 <>/=\"'&;!\\[\\]-]{0,8}",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|parts| parts.concat())
    }

    fn json_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"List\"".to_string()),
            Just("\"Encrypt\"".to_string()),
            Just("\"CreateTime\"".to_string()),
            Just("\"ErrorCode\"".to_string()),
            Just("\"MsgID\"".to_string()),
            Just("\"Event\"".to_string()),
            Just("\"subscribe_msg_sent_event\"".to_string()),
            Just("null".to_string()),
            "-?[0-9]{1,22}(\\.[0-9]+)?",
            "\"[a-z]{0,5}\"",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|parts| parts.concat())
    }

    fn decision_strategy() -> impl Strategy<Value = SubscribeDecision> {
        (
            "[A-Za-z0-9_-]{1,43}",
            prop_oneof![Just("accept"), Just("reject"), Just("ban"), Just("filter")],
            proptest::option::of("[0-9]{1,3}"),
        )
            .prop_map(|(template_id, status, popup_scene)| SubscribeDecision {
                template_id,
                status: status.to_string(),
                popup_scene,
            })
    }

    fn decisions_as_json(list: &[SubscribeDecision], single_as_object: bool) -> String {
        let items: Vec<Value> = list
            .iter()
            .map(|d| {
                let mut obj = serde_json::json!({
                    "TemplateId": d.template_id,
                    "SubscribeStatusString": d.status,
                });
                if let Some(scene) = &d.popup_scene {
                    obj["PopupScene"] = Value::String(scene.clone());
                }
                obj
            })
            .collect();
        let list = match (single_as_object, items.as_slice()) {
            (true, [one]) => one.clone(),
            _ => Value::Array(items),
        };
        serde_json::json!({
            "ToUserName": "gh_1", "FromUserName": "o_1", "CreateTime": 1,
            "MsgType": "event", "Event": EVENT_POPUP, "List": list,
        })
        .to_string()
    }

    fn decisions_as_xml(list: &[SubscribeDecision]) -> String {
        let lists: String = list
            .iter()
            .map(|d| {
                let scene = d
                    .popup_scene
                    .as_ref()
                    .map(|s| format!("<PopupScene>{s}</PopupScene>"))
                    .unwrap_or_default();
                format!(
                    "<List><TemplateId><![CDATA[{}]]></TemplateId><SubscribeStatusString><![CDATA[{}]]></SubscribeStatusString>{scene}</List>",
                    d.template_id, d.status
                )
            })
            .collect();
        xml_event(EVENT_POPUP, XML_POPUP, &lists)
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(s in ".*") {
            let _ = parse_message(&s);
            let _ = extract_encrypt(&s);
            let xml = format!("<{s}");
            let _ = parse_message(&xml);
            let _ = extract_encrypt(&xml);
        }

        #[test]
        fn never_panics_on_xml_like_input(s in xml_soup()) {
            let _ = parse_message(&s);
            let _ = extract_encrypt(&s);
        }

        #[test]
        fn never_panics_on_json_like_input(s in json_soup()) {
            let _ = parse_message(&s);
            let _ = extract_encrypt(&s);
        }

        #[test]
        fn popup_lists_read_back_from_both_formats(
            list in proptest::collection::vec(decision_strategy(), 0..6),
            single_as_object in any::<bool>(),
        ) {
            let expected = PushEvent::SubscribePopup(list.clone());
            let json = decisions_as_json(&list, single_as_object);
            prop_assert_eq!(&parse_message(&json).unwrap().payload, &expected);
            let xml = decisions_as_xml(&list);
            prop_assert_eq!(&parse_message(&xml).unwrap().payload, &expected);
        }

        #[test]
        fn encrypt_field_read_back(encrypt in "[A-Za-z0-9+/]{1,60}={0,2}") {
            let json = serde_json::json!({"ToUserName": "gh", "Encrypt": encrypt}).to_string();
            prop_assert_eq!(extract_encrypt(&json).unwrap(), encrypt.clone());
            let xml = format!("<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
            prop_assert_eq!(extract_encrypt(&xml).unwrap(), encrypt);
        }
    }
}
