//! choreo's spans join the caller's trace, on Apache Kafka: a client posts an order to the HTTP
//! ingest with its own `traceparent`; `choreo run`, exporting spans over OTLP/HTTP to a
//! collector this test plays, must export
//!
//! - `choreo.ingest` ("ingest"), a child of the client's span, in the client's trace;
//! - `choreo.publish` ("orders publish") under it, whose id the produced `OrderPlaced` record
//!   carries;
//! - `choreo.saga` ("order apply": the coordinator applying that record to the saga), a child
//!   of the record's span, whose id every event the saga emits for it carries;
//!
//! so that a trace viewer shows one connected tree from the client through Kafka to the
//! coordinator's decisions and on to the services it commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use choreo_integration_tests::broker::{free_port, real_broker};
use choreo_integration_tests::process::Replica;
use choreo_integration_tests::saga_scenarios::SAGA_TOPICS;
use choreo_integration_tests::world::{PARTITIONS, World};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// One exported span, ids in hex.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    service: String,
}

/// An OTLP/HTTP collector (protobuf on `/v1/traces`) keeping every span it is sent.
async fn collector() -> (u16, Arc<Mutex<Vec<Exported>>>) {
    let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
    let kept = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut out = kept.lock().expect("lock");
                for rs in request.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        out.push(Exported {
                            name: span.name,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            attributes: span
                                .attributes
                                .iter()
                                .filter_map(|a| {
                                    Some((a.key.clone(), text(a.value.as_ref()?.value.as_ref()?)?))
                                })
                                .collect(),
                            service: service.clone(),
                        });
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

fn text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    })
}

/// The span id a record's `traceparent` names, after checking its trace id.
fn span_of(m: &OwnedMessage) -> String {
    let tp = header(m, "traceparent").expect("a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(
        parts[1],
        TRACE,
        "the record is in the client's trace: {tp} ({} {:?} at {}/{}@{})",
        m.topic(),
        header(m, "ce_type"),
        m.topic(),
        m.partition(),
        m.offset()
    );
    parts[2].to_owned()
}

/// Every committed record of the saga topics keyed `key`, until `done` holds or time runs out.
fn records_of(
    bootstrap: &str,
    key: &str,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in SAGA_TOPICS {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(t, p, Offset::Beginning)
                .expect("offset");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "records of {key} never came: {} so far",
            out.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200))
            && m.key() == Some(key.as_bytes())
        {
            out.push(m.detach());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn choreos_spans_join_the_callers_trace_from_the_ingest_through_kafka_to_the_saga() {
    let broker = real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    let world = World::new(broker).await.expect("world");
    let topics: Vec<(&str, i32)> = SAGA_TOPICS.iter().map(|t| (*t, PARTITIONS)).collect();
    world.broker.create_topics(&topics).await.expect("topics");
    let (otlp_port, spans) = collector().await;
    let ingest_port = free_port().expect("port");
    let mut cfg = world.replica_config("exactly_once", 60);
    for (k, v) in [
        ("CHOREO__INGEST__LISTEN", format!("127.0.0.1:{ingest_port}")),
        ("CHOREO__INGEST__ALLOW_ANONYMOUS", "true".into()),
        (
            "CHOREO__TRACING__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        ),
        ("CHOREO__TRACING__SERVICE_NAME", "choreo-under-test".into()),
        // Spans leave the process within a second.
        ("OTEL_BSP_SCHEDULE_DELAY", "500".into()),
    ] {
        cfg.env.push((k.into(), v));
    }
    let mut replica = Replica::start(&cfg, "traced-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready");

    let order = "order-traced-1";
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{ingest_port}/events"))
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "traced-1")
        .header("ce-source", "/shop/checkout")
        .header("ce-type", "io.choreo.orders.OrderPlaced")
        .header("ce-subject", order)
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .body(
            json!({
                "order_id": order, "customer_id": "c-7",
                "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
                "total": {"amount_minor": 1999, "currency": "EUR"},
                "shipping_address": "1 Main St"
            })
            .to_string(),
        )
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(answer.status().as_u16(), 202, "{:?}", answer.text().await);

    // The order, and what the saga emitted because of it (the payment and inventory commands;
    // a deadline that fires later starts a trace of its own).
    let bootstrap = world.broker.bootstrap.clone();
    let emitted_by_saga = |m: &OwnedMessage| {
        header(m, "ce_source").is_some_and(|s| s.starts_with("/choreo/sagas/"))
            && header(m, "ce_causationid").as_deref() == Some("traced-1")
    };
    let records = tokio::task::spawn_blocking(move || {
        records_of(&bootstrap, order, |rs| {
            rs.iter().filter(|m| emitted_by_saga(m)).count() >= 2
                && rs.iter().any(|m| m.topic() == "orders")
        })
    })
    .await
    .expect("reader");
    let placed = records
        .iter()
        .find(|m| m.topic() == "orders")
        .expect("the order");
    let commands: Vec<&OwnedMessage> = records.iter().filter(|m| emitted_by_saga(m)).collect();

    // The spans, once exported (named by their `otel.name`: "ingest", "<topic> publish",
    // "<definition> apply").
    let is_ingest = |s: &Exported| s.name == "ingest";
    let is_publish = |s: &Exported| s.name == "orders publish";
    let is_saga = |s: &Exported| {
        s.name == "order apply"
            && s.attributes.get("saga.input").map(String::as_str) == Some("event")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let exported = loop {
        let now: Vec<Exported> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.trace_id == TRACE)
            .cloned()
            .collect();
        if now.iter().any(is_ingest) && now.iter().any(is_publish) && now.iter().any(is_saga) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not every span of the client's trace was exported: {now:#?}\nall: {:#?}",
            spans.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let one = |what: &str, pick: &dyn Fn(&Exported) -> bool| {
        let found: Vec<&Exported> = exported.iter().filter(|s| pick(s)).collect();
        assert_eq!(
            found.len(),
            1,
            "one {what} span in the trace: {exported:#?}"
        );
        found[0].clone()
    };
    let ingest = one("ingest", &is_ingest);
    let publish = one("publish", &is_publish);
    let saga = one("saga", &is_saga);

    assert_eq!(
        ingest.parent, CLIENT_SPAN,
        "the ingest's span is the client's child"
    );
    assert_eq!(ingest.service, "choreo-under-test");
    assert_eq!(
        publish.parent, ingest.span_id,
        "the publish is under the ingest"
    );
    assert_eq!(
        span_of(placed),
        publish.span_id,
        "the order record names the publish span"
    );
    assert_eq!(
        saga.parent, publish.span_id,
        "the coordinator's span is the record's child"
    );
    assert_eq!(
        saga.attributes.get("saga_id").map(String::as_str),
        Some("order/order-traced-1")
    );
    assert_eq!(
        saga.attributes.get("correlation_id").map(String::as_str),
        Some(order)
    );
    for c in commands {
        assert_eq!(
            span_of(c),
            saga.span_id,
            "{} names the saga's span",
            header(c, "ce_type").unwrap_or_default()
        );
    }
    replica.stop().await.expect("stops");
}
