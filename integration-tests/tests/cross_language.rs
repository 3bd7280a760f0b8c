//! Another language speaks the wire contract: a Python service using the official Confluent
//! client and Avro serializer (TopicRecordNameStrategy) against choreo's registry publishes an
//! event that a choreo subscriber handles, and reads the event the choreo service answers with —
//! value, schema id framing and CloudEvents headers. The Python environment is installed once
//! by `integration-tests/python/setup.sh`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_bus::{Bus, BusConfig, Context, EmbeddedBroker, HandlerError};
use choreo_schemas::MemoryRegistry;
use choreo_schemas::event::{OrderPlaced, PaymentAuthorized};
use tokio::process::Command;

fn python() -> String {
    let script = &format!(
        "{}/python/setup.sh",
        choreo_integration_tests::process::manifest_dir()
    );
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("runs setup.sh");
    assert!(
        out.status.success(),
        "python setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_service_and_a_choreo_service_talk() {
    let python = python();
    let script = &format!(
        "{}/python/cross_language.py",
        choreo_integration_tests::process::manifest_dir()
    );
    let broker = EmbeddedBroker::start(1).expect("broker");
    for t in ["orders", "payments"] {
        broker.create_topic(t, 3).expect("topic");
    }
    let registry = Arc::new(MemoryRegistry::new());
    let (addr, _server) = choreo_schemas::server::serve(
        Arc::clone(&registry) as Arc<dyn choreo_schemas::RegistryStore>,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("registry");
    let registry_url = format!("http://{addr}");
    let bootstrap = broker.bootstrap_servers().to_owned();
    let bus = Bus::new(
        BusConfig::new(&bootstrap)
            .with_source("/services/payments-rust")
            .tuned_for_embedded_broker(),
        registry.clone(),
    )
    .expect("bus");
    let seen: Arc<Mutex<Vec<(OrderPlaced, Context)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let sub = bus
        .subscriber("payments-rust")
        .client_setting("session.timeout.ms", "6000")
        .handle("authorize", move |e: OrderPlaced, ctx: Context| {
            let sink = Arc::clone(&sink);
            async move {
                ctx.publish(&PaymentAuthorized {
                    payment_id: format!("pay-{}", e.order_id),
                    order_id: e.order_id.clone(),
                    amount: e.total.clone(),
                })
                .await
                .map_err(HandlerError::retryable)?;
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push((e, ctx));
                Ok(())
            }
        })
        .start()
        .expect("subscriber");

    let produced = Command::new(&python)
        .args([script, "produce", &bootstrap, &registry_url, "py-order-1"])
        .output()
        .await
        .expect("python runs");
    assert!(
        produced.status.success(),
        "python produce: {}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let consumed = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(&python)
            .args([script, "consume", &bootstrap, &registry_url, "py-order-1"])
            .output(),
    )
    .await
    .expect("python consume finishes")
    .expect("python runs");
    assert!(
        consumed.status.success(),
        "python consume: {}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&consumed.stdout).expect("json from python");

    // The choreo service read the Python event…
    let (order, ctx) = seen.lock().expect("lock")[0].clone();
    assert_eq!(order.order_id, "py-order-1");
    assert_eq!(order.channel, "python");
    assert_eq!(order.items[0].unit_price.amount_minor, 750);
    assert_eq!(ctx.envelope.source, "/services/orders-python");
    assert_eq!(ctx.envelope.correlation_id, "py-order-1");
    assert_eq!(
        ctx.trace.trace_id_hex(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the Python trace continues"
    );
    // …and the Python service read choreo's answer with its stock deserializer.
    assert_eq!(answer["magic"], 0);
    assert_eq!(answer["value"]["payment_id"], "pay-py-order-1");
    assert_eq!(answer["value"]["amount"]["amount_minor"], 1500);
    let h = &answer["headers"];
    assert_eq!(h["ce_type"], "io.choreo.orders.PaymentAuthorized");
    assert_eq!(h["ce_specversion"], "1.0");
    assert_eq!(h["ce_correlationid"], "py-order-1");
    assert_eq!(
        h["ce_causationid"],
        serde_json::Value::String(ctx.envelope.id.clone())
    );
    assert!(
        h["traceparent"]
            .as_str()
            .is_some_and(|t| t.contains("4bf92f3577b34da6a3ce929d0e0e4736"))
    );
    sub.shutdown().await.expect("shutdown");
}
