//! Dead letters of the coordinator on Apache Kafka (a broker of its own: the saga topics have
//! fixed names): an input of a running saga framed with a schema the registry does not have is
//! dead-lettered by the coordinator; once the schema is registered, `choreo dlq redrive` (the
//! binary, against one replica) republishes it, the coordinator applies it — its event id was
//! not remembered as seen — and the saga completes; the other replica shows the redrive; the
//! redrive is counted in the metrics.

use std::time::{Duration, Instant};

use choreo_bus::wire::framing::frame;
use choreo_integration_tests::broker::real_broker;
use choreo_integration_tests::dead_letters::send_raw;
use choreo_integration_tests::process::{Replica, choreo_binary};
use choreo_integration_tests::saga_scenarios::{order, start_services};
use choreo_integration_tests::world::World;
use choreo_schemas::event::{InventoryReserved, Money, PaymentAuthorized};
use choreo_schemas::{Event, SchemaRegistry, schema_id_of};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("the API answers")
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// Waits until `GET url` answers JSON for which `cond` holds; returns it.
async fn until(url: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = get(url).await;
        if cond(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `choreo dlq <args> --api <api>`: (exit code, stdout, stderr).
async fn cli(api: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(choreo_binary().expect("the choreo binary"))
        .arg("dlq")
        .args(args)
        .args(["--api", api])
        .env_remove("CHOREO_API")
        .env_remove("CHOREO_API_TOKEN")
        .output()
        .await
        .expect("choreo runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_input_dead_lettered_for_a_missing_schema_is_redriven_and_completes_its_saga()
{
    let world = World::new(real_broker().await.expect("a real broker"))
        .await
        .expect("world");
    let cfg = world.replica_config("exactly_once", 120);
    let mut a = Replica::start(&cfg, "dlq-a").await.expect("replica a");
    let mut b = Replica::start(&cfg, "dlq-b").await.expect("replica b");
    a.wait_ready(PATIENCE).await.expect("a ready");
    b.wait_ready(PATIENCE).await.expect("b ready");
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");

    // The order is placed and its inventory reserved, through the bus; its payment arrives
    // framed with the payment schema's id before anyone registered that schema.
    let id = "happy-redriven-1";
    bus.publish(&order(id)).await.expect("order");
    bus.publish(&InventoryReserved {
        order_id: id.into(),
        reservation_id: format!("res-{id}"),
        items: vec![],
    })
    .await
    .expect("reservation");
    let pay = PaymentAuthorized {
        order_id: id.into(),
        payment_id: format!("pay-{id}"),
        amount: Money {
            amount_minor: 1000,
            currency: "EUR".into(),
        },
    };
    let schema = PaymentAuthorized::schema();
    let schema_id = schema_id_of(&schema.canonical_form());
    let body = choreo_bus::wire::codec::encode_body(schema, &pay).expect("encodes");
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &world.broker.bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    send_raw(
        &raw,
        "payments",
        Some(id),
        &frame(schema_id, &body),
        "pay-event-1",
    )
    .await
    .expect("sent");

    // The coordinator dead-letters it — and so does the services' subscriber, which reads the
    // payments topic too (for the refunds): one dead letter per group. The saga waits for
    // its payment.
    let listing = until(
        &format!("{}/api/dlq/payments.dlq", a.api),
        "the payment in payments.dlq, from both groups",
        |v| v["records"].as_array().is_some_and(|r| r.len() == 2),
    )
    .await;
    let records = listing["records"].as_array().expect("records");
    assert!(
        records
            .iter()
            .all(|r| r["kind"] == "unknown_schema_id" && r["ce_id"] == "pay-event-1"),
        "{listing}"
    );
    let dead = records
        .iter()
        .find(|r| r["handler"] == "saga-coordinator")
        .unwrap_or_else(|| panic!("the coordinator's dead letter: {listing}"));
    assert_eq!(dead["group"], cfg.group.as_str());
    assert_eq!(dead["payload"], Value::Null);
    assert!(
        dead["payload_base64"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{dead}"
    );
    let dead_id = dead["id"].as_str().expect("id").to_owned();
    let saga = format!("{}/api/sagas/order/{id}", a.api);
    let s = until(&saga, "the saga running", |v| v["status"] == "running").await;
    assert_eq!(
        s["steps"][0]["status"], "running",
        "the payment step waits: {s}"
    );

    // The CLI shows it, and — before the fix — would redrive it.
    let (code, out, err) = cli(&a.api, &["show", "payments.dlq"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("unknown_schema_id") && out.contains(&dead_id),
        "{out}"
    );
    let (code, out, _) = cli(&a.api, &["redrive", "payments.dlq", "--id", &dead_id]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("would redrive 1 record(s)"), "{out}");

    // The fix: the schema is registered. Redriven, the payment completes its step, shipping
    // runs, the saga completes.
    world
        .registry
        .register(
            "payments-io.choreo.orders.PaymentAuthorized",
            PaymentAuthorized::schema_text(),
        )
        .await
        .expect("registered");
    let (code, out, err) = cli(
        &a.api,
        &[
            "redrive",
            "payments.dlq",
            "--id",
            &dead_id,
            "--yes",
            "--operator",
            "carol",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("redrove 1 record(s) of payments.dlq"),
        "{out}"
    );
    until(&saga, "the saga completed", |v| v["status"] == "completed").await;

    // The other replica shows who redrove it, and where to.
    let shown = until(
        &format!("{}/api/dlq/{dead_id}", b.api),
        "the redrive on replica b",
        |v| v["redriven"].as_array().is_some_and(|r| !r.is_empty()),
    )
    .await;
    assert_eq!(shown["redriven"][0]["by"], "carol");
    assert_eq!(shown["redriven"][0]["to"]["topic"], "payments");
    assert!(a.counter("choreo_dlq_redriven_total").await >= 1.0);

    services.shutdown().await.expect("services stop");
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
}
