//! The HTTP ingest's JSON-to-Avro path: a `POST /events` request (binary, structured or batch
//! mode) through the ingest's router with the reference catalog, an in-memory registry and a
//! sink that records what would be produced.
//!
//! Input: an HTTP request after its request line — a first line with the `Content-Type` (empty:
//! none), header lines `Name: value` up to an empty line, then the body. Headers that are not
//! valid HTTP are skipped.
//!
//! What must hold, besides not panicking: the answer is 202 or a client error the ingest
//! documents (400, 413, 415, 422), never a server error, with a JSON body; nothing is recorded
//! unless the answer is 202; each record produced goes to its type's topic, keyed by the
//! `partitionkey` or the subject, and its value decodes (`Codec::decode_json`, as the
//! coordinator reads it) to data that fits the type's latest schema and holds every field the
//! event sent, with the value sent.

use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use choreo_bus::Delivery;
use choreo_coordinator::ingest::auth::Auth;
use choreo_coordinator::ingest::cloudevent::{self, Mode};
use choreo_coordinator::ingest::{self, EventSink, IngestOptions, Outgoing, shape};
use futures::future::BoxFuture;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::wire_decode::fixture;

/// The largest body the ingest under test accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Records what would be produced.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Outgoing>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl EventSink for Recorder {
    fn publish(&self, r: Outgoing) -> BoxFuture<'static, Result<Delivery, String>> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let delivery = Delivery {
            topic: r.topic.clone(),
            partition: 0,
            offset: i64::try_from(sent.len()).unwrap_or(i64::MAX),
            id: r.envelope.id.clone(),
        };
        sent.push(r);
        Box::pin(async move { Ok(delivery) })
    }
}

/// A request of an input.
#[derive(Debug)]
pub struct Post {
    /// The request as sent.
    pub request: Request<Body>,
    /// The body as sent.
    pub body: Vec<u8>,
}

/// Parses an input (see the module documentation).
pub fn parse(data: &[u8]) -> Post {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let mut request = Request::post("/events");
    if let Some(ct) = lines.next().filter(|l| !l.is_empty())
        && let Ok(v) = HeaderValue::from_bytes(ct)
    {
        request = request.header("content-type", v);
    }
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            request = request.header(n, v);
        }
    }
    let request = request
        .body(Body::from(body.to_vec()))
        .expect("valid header names and values");
    Post {
        request,
        body: body.to_vec(),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The target.
pub fn run(data: &[u8]) {
    let f = fixture();
    let post = parse(data);
    let headers = post.request.headers().clone();
    let sink = Arc::new(Recorder::default());
    let app = ingest::router(IngestOptions {
        catalog: Arc::new(f.catalog.clone()),
        codec: f.codec.clone(),
        sink: Arc::clone(&sink) as Arc<dyn EventSink>,
        auth: Auth::Off,
        max_body_bytes: MAX_BODY_BYTES,
        max_in_flight: 1_000,
        dedup_window: 1_000,
    });
    let (status, answer) = runtime().block_on(async {
        let answer = app.oneshot(post.request).await.expect("infallible");
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .expect("an in-memory body");
        (status, bytes)
    });
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
        panic!(
            "answered {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&answer)
        )
    });
    let sent = std::mem::take(&mut *sink.sent.lock().unwrap_or_else(|e| e.into_inner()));
    match status {
        StatusCode::ACCEPTED => {}
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => {
            assert!(answer.get("error").is_some(), "{status}: {answer}");
            assert!(sent.is_empty(), "{status}, yet {} produced", sent.len());
            return;
        }
        other => panic!("answered {other}: {answer}"),
    }
    assert!(!sent.is_empty(), "202 with nothing produced: {answer}");
    let events = events_of(&headers, &post.body);
    for record in &sent {
        check_record(record, &events);
    }
}

/// The events of a request as the client wrote them.
fn events_of(headers: &axum::http::HeaderMap, body: &[u8]) -> Vec<SentEvent> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let of_object = |o: &Value| SentEvent {
        id: o.get("id").and_then(Value::as_str).map(str::to_owned),
        source: o.get("source").and_then(Value::as_str).map(str::to_owned),
        subject: o.get("subject").and_then(Value::as_str).map(str::to_owned),
        partition_key: o
            .get("partitionkey")
            .and_then(Value::as_str)
            .map(str::to_owned),
        data: o.get("data").cloned().unwrap_or(Value::Null),
    };
    match (cloudevent::mode(headers), json) {
        (Ok(Mode::Batch), Value::Array(items)) => items.iter().map(of_object).collect(),
        (Ok(Mode::Structured), event) => vec![of_object(&event)],
        (_, data) => vec![SentEvent {
            id: text("ce-id"),
            source: text("ce-source"),
            subject: text("ce-subject"),
            partition_key: text("ce-partitionkey"),
            data,
        }],
    }
}

/// One event as the client sent it.
#[derive(Debug)]
struct SentEvent {
    id: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    partition_key: Option<String>,
    data: Value,
}

fn check_record(record: &Outgoing, events: &[SentEvent]) {
    let f = fixture();
    let e = &record.envelope;
    let sent = events
        .iter()
        .find(|s| s.id.as_deref() == Some(&e.id) && s.source.as_deref() == Some(&e.source))
        .unwrap_or_else(|| panic!("produced {} from {}, which was not sent", e.id, e.source));
    let info = f.catalog.event(&e.event_type).expect("a catalog type");
    assert_eq!(record.topic, info.topic, "its type's topic");
    let key = sent.partition_key.clone().or_else(|| sent.subject.clone());
    assert_eq!(
        Some(&record.key),
        key.as_ref(),
        "keyed by partitionkey or subject"
    );
    let decoded = crate::block_on(f.codec.decode_json(&record.value, &f.catalog, |_| Some(())))
        .unwrap_or_else(|err| panic!("a produced {} does not decode: {err:?}", e.event_type))
        .expect("wanted")
        .0;
    assert_eq!(decoded.event_type, e.event_type);
    shape::check(&info.latest().schema, &decoded.data)
        .unwrap_or_else(|m| panic!("decoded data does not fit the latest schema: {m}"));
    assert!(
        holds(&decoded.data, &sent.data),
        "decoded {} does not hold what was sent, {}",
        decoded.data,
        sent.data
    );
}

/// Whether `decoded` holds every field of `sent` with its value (defaults may add fields).
fn holds(decoded: &Value, sent: &Value) -> bool {
    match (decoded, sent) {
        (Value::Object(d), Value::Object(s)) => s
            .iter()
            .all(|(k, v)| d.get(k).is_some_and(|dv| holds(dv, v))),
        (Value::Array(d), Value::Array(s)) => {
            d.len() == s.len() && d.iter().zip(s).all(|(d, s)| holds(d, s))
        }
        (Value::Number(d), Value::Number(s)) => match (d.as_i64(), s.as_i64()) {
            (Some(d), Some(s)) => d == s,
            _ => d.as_f64() == s.as_f64(),
        },
        (d, s) => d == s,
    }
}
