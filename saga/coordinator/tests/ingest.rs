//! The HTTP ingest against a recording sink: every mode, the records it hands to Kafka, and
//! every bad input's status and message — none of which produces anything.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use choreo_bus::Delivery;
use choreo_bus::wire::codec::Codec;
use choreo_coordinator::ingest::auth::{Auth, Grant, Pattern};
use choreo_coordinator::ingest::{self, EventSink, IngestOptions, Outgoing};
use choreo_schemas::event::{OrderPlaced, OrderPlacedV1};
use choreo_schemas::{Catalog, MemoryRegistry, SchemaRegistry};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt as _;

const PLACED: &str = "io.choreo.orders.OrderPlaced";
const TOKEN: &str = "checkout-0123456789abcdef";

/// Records every record; fails while `down`; holds each publish until `gate` opens when set.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Outgoing>>,
    down: std::sync::atomic::AtomicBool,
    gate: Mutex<Option<Arc<Notify>>>,
}

impl EventSink for Recorder {
    fn publish(&self, r: Outgoing) -> BoxFuture<'static, Result<Delivery, String>> {
        let down = self.down.load(std::sync::atomic::Ordering::SeqCst);
        let gate = self.gate.lock().expect("lock").clone();
        let mut sent = self.sent.lock().expect("lock");
        let offset = sent.len() as i64;
        let delivery = Delivery {
            topic: r.topic.clone(),
            partition: 0,
            offset,
            id: r.envelope.id.clone(),
        };
        if !down {
            sent.push(r);
        }
        Box::pin(async move {
            if let Some(g) = gate {
                g.notified().await;
            }
            if down {
                Err("broker unreachable".into())
            } else {
                Ok(delivery)
            }
        })
    }
}

struct Fixture {
    app: Router,
    sink: Arc<Recorder>,
    codec: Codec,
}

async fn fixture_with(auth: Auth, max_body: usize, max_in_flight: usize) -> Fixture {
    let catalog = Arc::new(Catalog::reference());
    let registry = Arc::new(MemoryRegistry::new());
    catalog
        .register_all(registry.as_ref())
        .await
        .expect("registers");
    let registry: Arc<dyn SchemaRegistry> = registry;
    let codec = Codec::new(registry);
    let sink = Arc::new(Recorder::default());
    let app = ingest::router(IngestOptions {
        catalog,
        codec: codec.clone(),
        sink: Arc::clone(&sink) as Arc<dyn EventSink>,
        auth,
        max_body_bytes: max_body,
        max_in_flight,
        dedup_window: 1000,
    });
    Fixture { app, sink, codec }
}

async fn fixture() -> Fixture {
    fixture_with(Auth::Off, 64 * 1024, 100).await
}

fn order(id: &str) -> Value {
    json!({
        "order_id": id,
        "customer_id": "c-1",
        "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "EUR"}}],
        "total": {"amount_minor": 2500, "currency": "EUR"},
        "shipping_address": "1 Main St"
    })
}

fn binary(id: &str, order_id: &str, data: &Value) -> Request<Body> {
    Request::post("/events")
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/shop/checkout")
        .header("ce-type", PLACED)
        .header("ce-subject", order_id)
        .body(Body::from(data.to_string()))
        .expect("request")
}

fn structured(event: &Value) -> Request<Body> {
    Request::post("/events")
        .header("content-type", "application/cloudevents+json")
        .body(Body::from(event.to_string()))
        .expect("request")
}

fn ce(id: &str, order_id: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/shop/checkout", "type": PLACED,
           "subject": order_id, "data": data})
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.expect("answers");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn header(r: &Outgoing, name: &str) -> Option<String> {
    use rdkafka::message::Headers as _;
    r.envelope
        .to_headers()
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

#[tokio::test]
async fn binary_mode_produces_avro_to_the_catalog_topic_keyed_by_subject_after_the_ack() {
    let f = fixture().await;
    let (status, _, body) = send(&f.app, binary("e-1", "o-1", &order("o-1"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"id": "e-1", "topic": "orders", "partition": 0, "offset": 0, "duplicate": false})
    );
    let sent = f.sink.sent.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!((r.topic.as_str(), r.key.as_str()), ("orders", "o-1"));
    assert_eq!(header(r, "ce_type").as_deref(), Some(PLACED));
    assert_eq!(header(r, "ce_source").as_deref(), Some("/shop/checkout"));
    assert_eq!(header(r, "ce_subject").as_deref(), Some("o-1"));
    assert_eq!(header(r, "ce_correlationid").as_deref(), Some("o-1"));
    assert_eq!(header(r, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header(r, "ce_id").as_deref(), Some("e-1"));
    assert_eq!(
        header(r, "content-type").as_deref(),
        Some("application/avro")
    );
    assert!(r.envelope.traceparent.is_some(), "a trace is started");
    // Plain JSON, v2 newest: the missing `channel` took its default.
    let decoded: OrderPlaced = f.codec.decode(&r.value).await.expect("valid Avro");
    assert_eq!(decoded.order_id, "o-1");
    assert_eq!(decoded.items[0].quantity, 2);
    assert_eq!(decoded.channel, "web");
}

#[tokio::test]
async fn structured_mode_honours_dataschema_partitionkey_time_and_traceparent() {
    let f = fixture().await;
    let mut e = ce("e-2", "o-2", order("o-2"));
    e["dataschema"] =
        json!("http://registry/subjects/orders-io.choreo.orders.OrderPlaced/versions/1");
    e["partitionkey"] = json!("customer-c-1");
    e["time"] = json!("2026-12-03T10:00:00.000Z");
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut req = structured(&e);
    req.headers_mut()
        .insert("traceparent", parent.parse().expect("header"));
    let (status, _, body) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let r = f.sink.sent.lock().expect("lock")[0].clone();
    assert_eq!(r.key, "customer-c-1");
    assert_eq!(r.envelope.correlation_id, "o-2");
    assert_eq!(r.envelope.time, "2026-12-03T10:00:00.000Z");
    let tp = r.envelope.traceparent.expect("trace");
    assert_eq!(
        tp.trace_id_hex(),
        "0af7651916cd43dd8448eb211c80319c",
        "trace continued"
    );
    // Written with v1: the v1 type reads it as written, the writer schema is v1's.
    let framed = f.codec.read(&r.value).await.expect("framed");
    let v1 = Catalog::reference();
    let v1 = &v1.event(PLACED).expect("known").versions[0];
    assert!(choreo_bus::wire::codec::same_schema(
        &framed.writer.schema,
        &v1.schema
    ));
    let _: OrderPlacedV1 = f.codec.decode(&r.value).await.expect("v1 Avro");
}

#[tokio::test]
async fn the_same_source_and_id_twice_is_produced_once_and_answered_as_a_duplicate() {
    let f = fixture().await;
    let (s1, _, b1) = send(&f.app, binary("same", "o-3", &order("o-3"))).await;
    let (s2, _, b2) = send(&f.app, structured(&ce("same", "o-3", order("o-3")))).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(b1["duplicate"], false);
    assert_eq!(b2["duplicate"], true);
    assert_eq!(b1["offset"], b2["offset"]);
    assert_eq!(f.sink.sent.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_batch_is_validated_all_or_nothing_and_answered_per_event() {
    let f = fixture().await;
    let batch = |events: Vec<Value>| {
        Request::post("/events")
            .header("content-type", "application/cloudevents-batch+json")
            .body(Body::from(Value::Array(events).to_string()))
            .expect("request")
    };
    let mut bad = order("o-b");
    bad["total"]["amount_minor"] = json!("lots");
    let (status, _, body) = send(
        &f.app,
        batch(vec![ce("b-1", "o-a", order("o-a")), ce("b-2", "o-b", bad)]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["index"], 1);
    assert_eq!(
        body["error"],
        "event [1]: data does not fit io.choreo.orders.OrderPlaced v2: total.amount_minor: expected a whole number (long), got \"lots\""
    );
    assert!(
        f.sink.sent.lock().expect("lock").is_empty(),
        "nothing produced"
    );

    let (status, _, body) = send(
        &f.app,
        batch(vec![
            ce("b-1", "o-a", order("o-a")),
            ce("b-2", "o-b", order("o-b")),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["validation"], "all_or_nothing");
    assert_eq!(body["delivery"], "per_event");
    assert_eq!(
        (body["accepted"].clone(), body["failed"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(body["events"][1]["id"], "b-2");
    let keys: Vec<String> = f
        .sink
        .sent
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(keys, ["o-a", "o-b"], "produced in the batch's order");
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_a_message_naming_what_is_wrong_and_produces_nothing() {
    let f = fixture_with(Auth::Off, 2048, 100).await;
    let mut wrong_type = order("o");
    wrong_type["items"][0]["quantity"] = json!("two");
    let mut missing = order("o");
    missing.as_object_mut().map(|o| o.remove("customer_id"));
    let mut unknown = binary("u", "o", &order("o"));
    unknown
        .headers_mut()
        .insert("ce-type", "io.choreo.orders.Nope".parse().expect("header"));
    let mut no_subject = binary("s", "o", &order("o"));
    no_subject.headers_mut().remove("ce-subject");
    let mut text = binary("t", "o", &order("o"));
    text.headers_mut()
        .insert("content-type", "text/plain".parse().expect("header"));
    let mut old_version = ce("v", "o", order("o"));
    old_version["dataschema"] = json!("http://r/subjects/x/versions/9");
    let big = json!({"pad": "x".repeat(4096)});
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            Request::post("/events")
                .header("content-type", "application/cloudevents+json")
                .body(Body::from("{\"specversion\": \"1.0\", "))
                .expect("request"),
            StatusCode::BAD_REQUEST,
            "the body is not JSON",
        ),
        (
            "wrong type",
            binary("w", "o", &wrong_type),
            StatusCode::BAD_REQUEST,
            "items[0].quantity: expected a whole number (int, 32 bits), got \"two\"",
        ),
        (
            "missing field",
            binary("m", "o", &missing),
            StatusCode::BAD_REQUEST,
            "customer_id: missing (required, no default)",
        ),
        (
            "no subject",
            no_subject,
            StatusCode::BAD_REQUEST,
            "subject is missing",
        ),
        (
            "unknown type",
            unknown,
            StatusCode::UNPROCESSABLE_ENTITY,
            "io.choreo.orders.Nope is not in the catalog",
        ),
        (
            "unknown version",
            structured(&old_version),
            StatusCode::UNPROCESSABLE_ENTITY,
            "has no schema version 9",
        ),
        (
            "oversize",
            binary("b", "o", &big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "ingest.max_body_bytes",
        ),
        (
            "not JSON",
            text,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain is not accepted",
        ),
    ];
    for (what, req, want_status, want_message) in cases {
        let (status, _, body) = send(&f.app, req).await;
        assert_eq!(status, want_status, "{what}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(want_message), "{what}: {message}");
    }
    assert!(
        f.sink.sent.lock().expect("lock").is_empty(),
        "nothing produced"
    );
}

#[tokio::test]
async fn tokens_are_required_and_limited_to_their_sources_and_types() {
    let auth = Auth::Tokens(vec![Grant {
        name: "checkout".into(),
        secret: TOKEN.into(),
        sources: vec![Pattern::new("/shop/checkout")],
        types: vec![Pattern::new(PLACED)],
    }]);
    let f = fixture_with(auth, 64 * 1024, 100).await;
    let with = |token: Option<&str>, source: &str| {
        let mut r = binary(&format!("a-{source}-{token:?}"), "o", &order("o"));
        r.headers_mut()
            .insert("ce-source", source.parse().expect("header"));
        if let Some(t) = token {
            r.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        r
    };
    let (status, headers, body) = send(&f.app, with(None, "/shop/checkout")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, _) = send(
        &f.app,
        with(Some("checkout-0123456789abcdeX"), "/shop/checkout"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(&f.app, with(Some(TOKEN), "/shop/payments")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"],
        "token \"checkout\" may not send from source \"/shop/payments\""
    );
    assert!(
        f.sink.sent.lock().expect("lock").is_empty(),
        "nothing produced"
    );
    let (status, _, body) = send(&f.app, with(Some(TOKEN), "/shop/checkout")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn kafka_unreachable_is_503_retryable_and_the_retry_produces() {
    let f = fixture().await;
    f.sink.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, headers, body) = send(&f.app, binary("r-1", "o-r", &order("o-r"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    f.sink
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, _, body) = send(&f.app, binary("r-1", "o-r", &order("o-r"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body["duplicate"], false,
        "the failed attempt was not remembered"
    );
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_get_429_until_the_broker_answers() {
    let f = fixture_with(Auth::Off, 64 * 1024, 1).await;
    let gate = Arc::new(Notify::new());
    *f.sink.gate.lock().expect("lock") = Some(Arc::clone(&gate));
    let app = f.app.clone();
    let first = tokio::spawn(async move { send(&app, binary("i-1", "o", &order("o"))).await });
    while f.sink.sent.lock().expect("lock").is_empty() {
        tokio::task::yield_now().await;
    }
    let (status, headers, body) = send(&f.app, binary("i-2", "o", &order("o"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], "1");
    *f.sink.gate.lock().expect("lock") = None;
    gate.notify_one();
    let (status, _, _) = first.await.expect("first");
    assert_eq!(status, StatusCode::ACCEPTED, "answered once acknowledged");
    let (status, _, _) = send(&f.app, binary("i-2", "o", &order("o"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}
