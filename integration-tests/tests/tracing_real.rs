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
use choreo_integration_tests::broker::free_port;
use choreo_integration_tests::process::Replica;
use choreo_integration_tests::saga_scenarios::SAGA_TOPICS;
use choreo_integration_tests::world::{PARTITIONS, World, reader_config};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
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
    let c: BaseConsumer = reader_config(bootstrap)
        .set("isolation.level", "read_committed")
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
    let world = World::real_with_saga_topics().await;
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

    // The order, its payment and its stock, all sent by the client within its trace; the saga
    // answers the last of them with ShipmentRequested.
    let order = "order-traced-1";
    let events = [
        (
            "traced-1",
            "io.choreo.orders.OrderPlaced",
            json!({
                "order_id": order, "customer_id": "c-7",
                "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
                "total": {"amount_minor": 1999, "currency": "EUR"},
                "shipping_address": "1 Main St"
            }),
        ),
        (
            "traced-2",
            "io.choreo.orders.PaymentAuthorized",
            json!({"order_id": order, "payment_id": "pay-1", "amount": {"amount_minor": 1999, "currency": "EUR"}}),
        ),
        (
            "traced-3",
            "io.choreo.orders.InventoryReserved",
            json!({"order_id": order, "reservation_id": "res-1", "items": [{"sku": "BOOK-1", "quantity": 1}]}),
        ),
    ];
    let client = reqwest::Client::new();
    for (id, ty, data) in &events {
        let answer = client
            .post(format!("http://127.0.0.1:{ingest_port}/events"))
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", *id)
            .header("ce-source", "/shop/checkout")
            .header("ce-type", *ty)
            .header("ce-subject", order)
            .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
            .body(data.to_string())
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(
            answer.status().as_u16(),
            202,
            "{id}: {:?}",
            answer.text().await
        );
    }

    let bootstrap = world.broker.bootstrap.clone();
    let is_shipment = |m: &OwnedMessage| {
        header(m, "ce_type").as_deref() == Some("io.choreo.orders.ShipmentRequested")
    };
    let records = tokio::task::spawn_blocking(move || {
        records_of(&bootstrap, order, |rs| {
            rs.iter().any(is_shipment)
                && ["traced-1", "traced-2", "traced-3"].iter().all(|id| {
                    rs.iter()
                        .any(|m| header(m, "ce_id").as_deref() == Some(*id))
                })
        })
    })
    .await
    .expect("reader");
    let by_id = |id: &str| {
        records
            .iter()
            .find(|m| header(m, "ce_id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("the record of {id}"))
    };
    let shipment = records
        .iter()
        .find(|m| is_shipment(m))
        .expect("ShipmentRequested");
    let cause = header(shipment, "ce_causationid").expect("a causation id");
    let cause_type = events
        .iter()
        .find(|(id, _, _)| *id == cause)
        .map(|(_, ty, _)| *ty)
        .unwrap_or_else(|| {
            panic!("ShipmentRequested caused by one of the client's events, not {cause}")
        });

    // The spans, once exported (named by their `otel.name`: "ingest", "<topic> publish",
    // "<definition> apply").
    let attr = |s: &Exported, k: &str| s.attributes.get(k).cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let exported = loop {
        let now: Vec<Exported> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.trace_id == TRACE)
            .cloned()
            .collect();
        let ingests = now.iter().filter(|s| s.name == "ingest").count();
        let publishes = now.iter().filter(|s| s.name.ends_with(" publish")).count();
        let applies = now
            .iter()
            .filter(|s| s.name == "order apply" && attr(s, "saga.input") == "event")
            .count();
        if ingests >= 3 && publishes >= 3 && applies >= 3 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not every span of the client's trace was exported: {now:#?}"
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
    let mut saga_span_of = HashMap::new();
    for (id, ty, _) in &events {
        let ingest = one(&format!("ingest of {id}"), &|s| {
            s.name == "ingest" && attr(s, "messaging.message.id") == *id
        });
        assert_eq!(
            ingest.parent, CLIENT_SPAN,
            "{id}: the ingest's span is the client's child"
        );
        assert_eq!(ingest.service, "choreo-under-test");
        let publish = one(&format!("publish of {id}"), &|s| {
            s.name.ends_with(" publish") && attr(s, "messaging.message.id") == *id
        });
        assert_eq!(
            publish.parent, ingest.span_id,
            "{id}: the publish is under the ingest"
        );
        assert_eq!(
            span_of(by_id(id)),
            publish.span_id,
            "{id}: its record names the publish span"
        );
        let saga = one(&format!("saga span of {id}"), &|s| {
            s.name == "order apply"
                && attr(s, "saga.input") == "event"
                && attr(s, "event_type") == *ty
        });
        assert_eq!(
            saga.parent, publish.span_id,
            "{id}: the coordinator's span is the record's child"
        );
        assert_eq!(attr(&saga, "saga_id"), "order/order-traced-1");
        assert_eq!(attr(&saga, "correlation_id"), order);
        saga_span_of.insert(*ty, saga.span_id);
    }
    assert_eq!(
        span_of(shipment),
        saga_span_of[cause_type],
        "ShipmentRequested names the span of the saga applying its cause ({cause_type})"
    );
    replica.stop().await.expect("stops");
}
