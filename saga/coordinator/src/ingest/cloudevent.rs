//! The CloudEvents HTTP binding (v1.0): one event in binary mode (`ce-*` headers, the body is
//! the data), one in structured mode (`application/cloudevents+json`), or several in batch mode
//! (`application/cloudevents-batch+json`). Only JSON data is accepted: choreo turns it into Avro
//! against the catalog.

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use choreo_bus::TraceParent;
use serde_json::{Map, Value};

/// Structured mode's content type.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Batch mode's content type.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// One event as received, before it is checked against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`: the Avro full name of a catalog event.
    pub event_type: String,
    /// `subject`: the correlation id.
    pub subject: Option<String>,
    /// The `partitionkey` extension: the record key when set (else the subject).
    pub partition_key: Option<String>,
    /// `time`, as sent.
    pub time: Option<String>,
    /// `dataschema`, as sent.
    pub dataschema: Option<String>,
    /// The W3C trace context (the `traceparent` header, or the distributed-tracing extension
    /// attribute in structured mode).
    pub traceparent: Option<TraceParent>,
    /// The data, JSON.
    pub data: Value,
}

/// Why a request holds no acceptable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed (the message says what).
    Malformed(String),
    /// 415: a content type choreo does not take.
    UnsupportedMedia(String),
}

/// How the request carries its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ce-*` headers and a JSON body.
    Binary,
    /// One JSON object with the attributes and `data`.
    Structured,
    /// A JSON array of structured events.
    Batch,
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(
        raw.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether `media` is JSON (`application/json`, or any `…+json` suffix).
fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Which mode a request is in, from its content type; 415 for any other content.
pub fn mode(headers: &HeaderMap) -> Result<Mode, Refusal> {
    match media_type(headers).as_deref() {
        Some(STRUCTURED) => Ok(Mode::Structured),
        Some(BATCH) => Ok(Mode::Batch),
        Some(m) if is_json(m) => Ok(Mode::Binary),
        Some(m) => Err(Refusal::UnsupportedMedia(format!(
            "content type {m} is not accepted: send the data as application/json with ce-* \
             headers, or {STRUCTURED}, or {BATCH}"
        ))),
        None => Err(Refusal::UnsupportedMedia(
            "no Content-Type: send application/json with ce-* headers, or a CloudEvents JSON \
             content type"
                .into(),
        )),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, Refusal> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| Refusal::Malformed(format!("header {name} is not visible ASCII"))),
    }
}

fn required(value: Option<String>, what: &str) -> Result<String, Refusal> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(Refusal::Malformed(format!("{what} is empty"))),
        None => Err(Refusal::Malformed(format!("{what} is missing"))),
    }
}

fn check_specversion(v: Option<String>, what: &str) -> Result<(), Refusal> {
    match required(v, what)?.as_str() {
        "1.0" => Ok(()),
        other => Err(Refusal::Malformed(format!(
            "{what} is \"{other}\"; choreo speaks CloudEvents 1.0"
        ))),
    }
}

fn traceparent(raw: Option<String>) -> Result<Option<TraceParent>, Refusal> {
    match raw {
        None => Ok(None),
        Some(t) => TraceParent::parse(&t).map(Some).ok_or_else(|| {
            Refusal::Malformed(format!("traceparent \"{t}\" is not W3C trace context"))
        }),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| Refusal::Malformed(format!("the body is not JSON: {e}")))
}

/// A binary-mode event: attributes from the `ce-*` headers, data from the body.
pub fn binary(headers: &HeaderMap, body: &[u8]) -> Result<Incoming, Refusal> {
    check_specversion(header(headers, "ce-specversion")?, "header ce-specversion")?;
    Ok(Incoming {
        id: required(header(headers, "ce-id")?, "header ce-id")?,
        source: required(header(headers, "ce-source")?, "header ce-source")?,
        event_type: required(header(headers, "ce-type")?, "header ce-type")?,
        subject: header(headers, "ce-subject")?,
        partition_key: header(headers, "ce-partitionkey")?,
        time: header(headers, "ce-time")?,
        dataschema: header(headers, "ce-dataschema")?,
        traceparent: traceparent(header(headers, "traceparent")?)?,
        data: parse_json(body)?,
    })
}

/// A structured-mode event (one JSON object); `header_trace` is the request's `traceparent`.
pub fn structured(body: &[u8], header_trace: Option<TraceParent>) -> Result<Incoming, Refusal> {
    match parse_json(body)? {
        Value::Object(o) => from_object(o, "the event", header_trace),
        _ => Err(Refusal::Malformed("the body is not a JSON object".into())),
    }
}

/// A batch: a JSON array of structured events (each error names the event's index).
pub fn batch(body: &[u8], header_trace: Option<TraceParent>) -> Result<Vec<Incoming>, Refusal> {
    let Value::Array(items) = parse_json(body)? else {
        return Err(Refusal::Malformed(
            "a batch is a JSON array of events".into(),
        ));
    };
    if items.is_empty() {
        return Err(Refusal::Malformed("the batch is empty".into()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(o) => from_object(o, &format!("event [{i}]"), header_trace),
            _ => Err(Refusal::Malformed(format!(
                "event [{i}] is not a JSON object"
            ))),
        })
        .collect()
}

fn from_object(
    mut o: Map<String, Value>,
    what: &str,
    header_trace: Option<TraceParent>,
) -> Result<Incoming, Refusal> {
    let mut text = |name: &str| -> Result<Option<String>, Refusal> {
        match o.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Refusal::Malformed(format!(
                "{what}: attribute {name} must be a string, got {other}"
            ))),
        }
    };
    check_specversion(
        text("specversion")?,
        &format!("{what}: attribute specversion"),
    )?;
    let id = required(text("id")?, &format!("{what}: attribute id"))?;
    let source = required(text("source")?, &format!("{what}: attribute source"))?;
    let event_type = required(text("type")?, &format!("{what}: attribute type"))?;
    let subject = text("subject")?;
    let partition_key = text("partitionkey")?;
    let time = text("time")?;
    let dataschema = text("dataschema")?;
    let own_trace = traceparent(text("traceparent")?)?;
    if let Some(ct) = text("datacontenttype")? {
        let media = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !is_json(&media) {
            return Err(Refusal::UnsupportedMedia(format!(
                "{what}: datacontenttype {ct} is not accepted: the data must be JSON"
            )));
        }
    }
    if o.contains_key("data_base64") {
        return Err(Refusal::UnsupportedMedia(format!(
            "{what}: data_base64 is not accepted: the data must be JSON"
        )));
    }
    let data = o
        .remove("data")
        .ok_or_else(|| Refusal::Malformed(format!("{what}: data is missing")))?;
    Ok(Incoming {
        id,
        source,
        event_type,
        subject,
        partition_key,
        time,
        dataschema,
        traceparent: own_trace.or(header_trace),
        data,
    })
}

/// The schema version a `dataschema` names: a URI ending in `/versions/<n>` (the registry's
/// own form, `…/subjects/<subject>/versions/<n>`), `?version=<n>` or `#<n>`. `None` when it names
/// none (the newest is used).
pub fn dataschema_version(uri: &str) -> Result<Option<u32>, String> {
    let tail = if let Some((_, v)) = uri.rsplit_once("/versions/") {
        v
    } else if let Some((_, v)) = uri.rsplit_once("version=") {
        v
    } else if let Some((_, v)) = uri.rsplit_once('#') {
        v
    } else {
        return Ok(None);
    };
    if tail == "latest" {
        return Ok(None);
    }
    tail.parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .map(Some)
        .ok_or_else(|| format!("dataschema \"{uri}\" names no schema version (…/versions/<n>)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_content_type_picks_the_mode() {
        let m = |ct: &str| mode(&headers(&[("content-type", ct)]));
        assert_eq!(m("application/json"), Ok(Mode::Binary));
        assert_eq!(m("application/json; charset=utf-8"), Ok(Mode::Binary));
        assert_eq!(m("application/cloudevents+json"), Ok(Mode::Structured));
        assert_eq!(m("Application/CloudEvents-Batch+JSON"), Ok(Mode::Batch));
        assert!(matches!(m("text/plain"), Err(Refusal::UnsupportedMedia(_))));
        assert!(matches!(
            mode(&HeaderMap::new()),
            Err(Refusal::UnsupportedMedia(_))
        ));
    }

    #[test]
    fn binary_mode_reads_the_ce_headers_and_the_json_body() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "/shop"),
            ("ce-type", "io.choreo.orders.OrderPlaced"),
            ("ce-subject", "o-1"),
            ("traceparent", TP),
        ]);
        let e = binary(&h, br#"{"order_id":"o-1"}"#).expect("event");
        assert_eq!(e.id, "e-1");
        assert_eq!(e.subject.as_deref(), Some("o-1"));
        assert_eq!(e.traceparent.map(|t| t.to_string()).as_deref(), Some(TP));
        assert_eq!(e.data["order_id"], "o-1");
    }

    #[test]
    fn binary_mode_names_what_is_missing_or_wrong() {
        let base = [
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "/shop"),
            ("ce-type", "T"),
        ];
        for (drop, want) in [
            ("ce-specversion", "header ce-specversion is missing"),
            ("ce-id", "header ce-id is missing"),
            ("ce-source", "header ce-source is missing"),
            ("ce-type", "header ce-type is missing"),
        ] {
            let pairs: Vec<_> = base.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert_eq!(
                binary(&headers(&pairs), b"{}"),
                Err(Refusal::Malformed(want.into()))
            );
        }
        let mut pairs = base.to_vec();
        pairs[0] = ("ce-specversion", "0.3");
        assert!(
            binary(&headers(&pairs), b"{}")
                .is_err_and(|e| matches!(e, Refusal::Malformed(m) if m.contains("0.3")))
        );
        assert!(binary(&headers(&base), b"{nope").is_err_and(
            |e| matches!(e, Refusal::Malformed(m) if m.starts_with("the body is not JSON"))
        ));
    }

    #[test]
    fn structured_mode_takes_attributes_extensions_and_data() {
        let body = format!(
            r#"{{"specversion":"1.0","id":"e-1","source":"/shop","type":"T","subject":"o-1",
               "partitionkey":"k","dataschema":"http://r/subjects/s/versions/2",
               "datacontenttype":"application/json","traceparent":"{TP}","data":{{"a":1}}}}"#
        );
        let e = structured(body.as_bytes(), None).expect("event");
        assert_eq!(e.partition_key.as_deref(), Some("k"));
        assert_eq!(e.data["a"], 1);
        assert!(e.traceparent.is_some());
        assert_eq!(
            dataschema_version(e.dataschema.as_deref().unwrap_or_default()),
            Ok(Some(2))
        );
    }

    #[test]
    fn structured_mode_refuses_binary_data_and_non_string_attributes() {
        let b = br#"{"specversion":"1.0","id":"e","source":"s","type":"T","data_base64":"AA=="}"#;
        assert!(matches!(
            structured(b, None),
            Err(Refusal::UnsupportedMedia(_))
        ));
        let b = br#"{"specversion":"1.0","id":7,"source":"s","type":"T","data":{}}"#;
        assert_eq!(
            structured(b, None),
            Err(Refusal::Malformed(
                "the event: attribute id must be a string, got 7".into()
            ))
        );
        let b = br#"{"specversion":"1.0","id":"e","source":"s","type":"T"}"#;
        assert_eq!(
            structured(b, None),
            Err(Refusal::Malformed("the event: data is missing".into()))
        );
    }

    #[test]
    fn a_batch_error_names_the_event_index() {
        let b = br#"[{"specversion":"1.0","id":"a","source":"s","type":"T","data":{}},
                     {"specversion":"1.0","source":"s","type":"T","data":{}}]"#;
        assert_eq!(
            batch(b, None),
            Err(Refusal::Malformed(
                "event [1]: attribute id is missing".into()
            ))
        );
        assert!(batch(b"[]", None).is_err());
        assert!(batch(b"{}", None).is_err());
    }

    #[test]
    fn dataschema_names_a_version_or_none() {
        assert_eq!(
            dataschema_version("http://r/subjects/orders-x/versions/1"),
            Ok(Some(1))
        );
        assert_eq!(dataschema_version("urn:x?version=3"), Ok(Some(3)));
        assert_eq!(dataschema_version("urn:x#2"), Ok(Some(2)));
        assert_eq!(
            dataschema_version("http://r/subjects/s/versions/latest"),
            Ok(None)
        );
        assert_eq!(dataschema_version("urn:schema:order"), Ok(None));
        assert!(dataschema_version("http://r/versions/0").is_err());
        assert!(dataschema_version("http://r/versions/two").is_err());
    }
}
