//! The schema registry's REST API (`choreo_schemas::server`, the Confluent subset the
//! serializers of every language call) over a fresh in-memory registry: register a schema,
//! look one up, check compatibility, set a rule — through the router, on a current-thread
//! runtime.
//!
//! Input: up to 8 requests separated by a line `====`. Each is a line `<METHOD> <path>` and the
//! body after it; a first line ending in ` schema` sends the body as the schema text of a
//! request (`{"schema": "<the body>"}`), so that mutations reach the Avro schema parser and the
//! compatibility check rather than JSON syntax. Requests whose method or path is not a valid
//! HTTP one are skipped.
//!
//! What must hold, besides not panicking: no answer is a server error (5xx), every answer
//! (but to HEAD, which has no body) is JSON; a schema registered (200 `{"id": n}`) is served
//! by `GET /schemas/ids/n` with the same canonical form, registering it again under its
//! subject gives the same id, and looking it up finds it; a schema the compatibility check
//! accepts for a subject then registers under it without a conflict (409).

use std::sync::{Arc, OnceLock};

use apache_avro::Schema;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Uri};
use choreo_schemas::MemoryRegistry;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Separates requests in an input.
pub const SEPARATOR: &str = "\n====\n";
/// Marks a request whose body is a schema's text.
pub const SCHEMA_SUFFIX: &str = " schema";
const MAX_REQUESTS: usize = 8;

/// One request of an input.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The path (and query).
    pub uri: Uri,
    /// The body as sent.
    pub body: Vec<u8>,
    /// The schema text, when the input gave it as one.
    pub schema: Option<String>,
}

/// Parses an input's requests (see the module documentation).
pub fn parse(input: &str) -> Vec<Call> {
    input
        .split(SEPARATOR)
        .take(MAX_REQUESTS)
        .filter_map(|request| {
            let (head, body) = request.split_once('\n').unwrap_or((request, ""));
            let (head, schema) = match head.strip_suffix(SCHEMA_SUFFIX) {
                Some(h) => (h, Some(body.to_owned())),
                None => (head, None),
            };
            let (method, path) = head.split_once(' ')?;
            let method = Method::from_bytes(method.as_bytes()).ok()?;
            let uri = path.parse::<Uri>().ok()?;
            let body = match &schema {
                Some(s) => json!({ "schema": s }).to_string().into_bytes(),
                None => body.as_bytes().to_vec(),
            };
            Some(Call {
                method,
                uri,
                body,
                schema,
            })
        })
        .collect()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Sends one request; the answer's status and JSON body.
async fn send(app: &Router, method: &Method, uri: &str, body: &[u8]) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(Body::from(body.to_vec()))
        .expect("a request of a valid method and path");
    let answer = app.clone().oneshot(request).await.expect("infallible");
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .expect("an in-memory body");
    assert!(
        !status.is_server_error(),
        "{method} {uri} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if method == Method::HEAD {
        // An answer to HEAD has no body (HTTP), so nothing to read as JSON.
        return (status, Value::Null);
    }
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {uri} answered {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

/// The subject of a `/subjects/{s}/versions` or `/compatibility/subjects/{s}/versions/{v}`
/// path, as written (still percent-encoded).
fn subject_of(path: &str, compatibility: bool) -> Option<&str> {
    let parts: Vec<&str> = path.split('/').collect();
    match (compatibility, parts.as_slice()) {
        (false, ["", "subjects", s, "versions"]) => Some(s),
        (true, ["", "compatibility", "subjects", s, "versions", _]) => Some(s),
        _ => None,
    }
}

/// The schema text of a request body, when it has one.
fn schema_text(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("schema")?.as_str().map(str::to_owned)
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let calls = parse(input);
    if calls.is_empty() {
        return;
    }
    let app = choreo_schemas::server::router(Arc::new(MemoryRegistry::new()));
    runtime().block_on(async {
        for c in &calls {
            let uri = c.uri.to_string();
            let (status, body) = send(&app, &c.method, &uri, &c.body).await;
            if c.method != Method::POST || status != StatusCode::OK {
                continue;
            }
            let path = c.uri.path();
            if let Some(subject) = subject_of(path, false) {
                registered(&app, subject, &c.body, &body).await;
            } else if let Some(subject) = subject_of(path, true)
                && body.get("is_compatible") == Some(&Value::Bool(true))
            {
                let register = format!("/subjects/{subject}/versions");
                let (status, answer) = send(&app, &Method::POST, &register, &c.body).await;
                assert_ne!(
                    status,
                    StatusCode::CONFLICT,
                    "compatible, then refused as incompatible: {answer}"
                );
            }
        }
    });
}

/// Checks a schema the registry accepted under `subject`.
async fn registered(app: &Router, subject: &str, request: &[u8], answer: &Value) {
    let id = answer
        .get("id")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("a registration answers an id: {answer}"));
    let text = schema_text(request).expect("a registered request names its schema");
    let canonical = Schema::parse_str(&text)
        .expect("a registered schema parses")
        .canonical_form();
    let (status, served) = send(app, &Method::GET, &format!("/schemas/ids/{id}"), b"").await;
    assert_eq!(status, StatusCode::OK, "{served}");
    let served = served
        .get("schema")
        .and_then(Value::as_str)
        .expect("the schema text");
    let served = Schema::parse_str(served).expect("a served schema parses");
    assert_eq!(served.canonical_form(), canonical, "served as registered");
    let versions = format!("/subjects/{subject}/versions");
    let (status, again) = send(app, &Method::POST, &versions, request).await;
    assert_eq!(
        (status, again.get("id")),
        (StatusCode::OK, answer.get("id")),
        "again"
    );
    let (status, found) = send(app, &Method::POST, &format!("/subjects/{subject}"), request).await;
    assert_eq!(status, StatusCode::OK, "looked up: {found}");
    assert_eq!(found.get("id"), answer.get("id"), "looked up");
}
