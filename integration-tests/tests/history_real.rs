//! One saga's records read back from Apache Kafka: `GET /api/sagas/{definition}/{id}/events`
//! on a `choreo run` replica finds, on the partition its correlation id lands on, every event
//! the saga received and emitted and every command sent to it — with their CloudEvents headers
//! and payloads decoded through the registry, none of another saga's although they share the
//! partitions — within the saga's lifetime widened by the margin, and says when it stopped
//! early. `choreo sagas events` prints the same.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use choreo_bus::wire::envelope::Envelope;
use choreo_integration_tests::broker::real_broker;
use choreo_integration_tests::process::{Replica, choreo_binary};
use choreo_integration_tests::saga_scenarios::{
    Path, inventory_reserved, order, payment_authorized, start_services,
};
use choreo_integration_tests::world::{PARTITIONS, World};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("fits")
}

/// A record that is not Avro in the Confluent framing, keyed by `id` (the coordinator
/// dead-letters it), timed at `at_ms`.
async fn junk(bootstrap: &str, id: &str, at_ms: i64) -> (i32, i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let headers = Envelope::new(
        format!("junk-{id}-{at_ms}"),
        "/tests/junk",
        "io.choreo.tests.Junk",
        id,
        None,
        None,
    )
    .to_headers();
    let d = producer
        .send(
            FutureRecord::to("orders")
                .key(id)
                .payload("not avro at all")
                .headers(headers)
                .timestamp(at_ms),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    (d.partition, d.offset)
}

async fn get(api: &str, path: &str) -> Value {
    let r = reqwest::get(format!("{api}{path}")).await.expect("answers");
    let status = r.status();
    let body: Value = r.json().await.expect("JSON");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn wait_status(api: &str, saga: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(format!("{api}/api/sagas/{saga}")).await
            && let Ok(v) = r.json::<Value>().await
            && v["status"] == want
        {
            return;
        }
        assert!(Instant::now() < deadline, "{saga} never {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn types(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            e["type"]
                .as_str()
                .unwrap_or("")
                .rsplit('.')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sagas_records_come_back_from_its_partitions_with_headers_and_payloads() {
    let world = World::new(real_broker().await.expect("a real broker"))
        .await
        .expect("world");
    // An hour-old record with the saga's key, the first of its partition: outside the default
    // window (offsetsForTimes answers the first record at or after a time, so a record older
    // than the window but after a newer one would be read; here none is newer).
    let id = "happy-h1";
    world
        .broker
        .create_topics(&[("orders", PARTITIONS)])
        .await
        .expect("orders topic");
    let (old_partition, old_offset) = junk(&world.broker.bootstrap, id, now_ms() - 3_600_000).await;
    let cfg = world.replica_config("exactly_once", 600);
    let mut replica = Replica::start(&cfg, "history-0").await.expect("choreo run");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready");
    let api = replica.api.clone();
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");

    // Other orders share the partitions.
    for n in 2..=16 {
        Path::Happy
            .drive(&bus, &format!("happy-h{n}"))
            .await
            .expect("driven");
    }
    // This saga's inputs one after another: published back to back on three topics, its
    // payment and inventory could be read before its order, buffered, and replayed when the
    // order came, which makes the order the cause of the shipment request.
    bus.publish(&order(id)).await.expect("order");
    wait_status(&api, &format!("order/{id}"), "running").await;
    bus.publish(&payment_authorized(id)).await.expect("payment");
    bus.publish(&inventory_reserved(id))
        .await
        .expect("inventory");
    wait_status(&api, &format!("order/{id}"), "completed").await;
    // A record of the saga that no registry can read, within its lifetime.
    let (_, bad_offset) = junk(&world.broker.bootstrap, id, now_ms()).await;
    wait_status(&api, "order/happy-h16", "completed").await;

    let v = get(&api, &format!("/api/sagas/order/{id}/events")).await;
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    assert!(v["stopped_early"].is_null(), "{v}");
    let events = &v["events"];
    let t = types(events);
    for want in [
        "OrderPlaced",
        "PaymentAuthorized",
        "InventoryReserved",
        "ShipmentRequested",
        "ShipmentScheduled",
        "OrderConfirmed",
    ] {
        assert_eq!(
            t.iter().filter(|x| *x == want).count(),
            1,
            "{want} once: {t:?}"
        );
    }
    let at = |name: &str| t.iter().position(|x| x == name).expect("present");
    assert!(
        at("OrderPlaced") < at("ShipmentRequested")
            && at("ShipmentRequested") < at("OrderConfirmed"),
        "by time: {t:?}"
    );
    let all = events.as_array().expect("events");
    let partitions: Vec<i64> = all.iter().filter_map(|e| e["partition"].as_i64()).collect();
    assert!(
        partitions.iter().all(|p| *p == partitions[0]),
        "one partition number on every topic (co-partitioned): {partitions:?}"
    );
    for e in all.iter().filter(|e| e["payload"].is_object()) {
        assert_eq!(
            e["payload"]["order_id"], id,
            "only this saga's records: {e}"
        );
    }
    let placed = all
        .iter()
        .find(|e| e["type"] == "io.choreo.orders.OrderPlaced")
        .expect("OrderPlaced");
    assert_eq!(placed["payload"]["shipping_address"], "1 Test Street");
    assert_eq!(placed["source"], "/tests/driver");
    assert!(placed["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        placed["time"].is_string() && placed["schema_id"].is_u64(),
        "{placed}"
    );
    let inputs: Vec<&str> = all
        .iter()
        .filter(|e| {
            e["type"] == "io.choreo.orders.PaymentAuthorized"
                || e["type"] == "io.choreo.orders.InventoryReserved"
        })
        .filter_map(|e| e["id"].as_str())
        .collect();
    let requested = all
        .iter()
        .find(|e| e["type"] == "io.choreo.orders.ShipmentRequested")
        .expect("ShipmentRequested");
    assert!(
        requested["causation_id"]
            .as_str()
            .is_some_and(|c| inputs.contains(&c)),
        "caused by the input that let shipping start: {requested}"
    );
    assert_eq!(requested["payload"]["shipping_address"], "1 Test Street");
    let bad = all
        .iter()
        .find(|e| e["offset"] == bad_offset && e["topic"] == "orders")
        .unwrap_or_else(|| panic!("the unreadable record: {v}"));
    assert!(bad["payload"].is_null(), "{bad}");
    assert!(
        bad["payload_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );
    assert!(
        !all.iter().any(|e| e["offset"] == old_offset
            && e["partition"] == old_partition
            && e["topic"] == "orders"),
        "the hour-old record is outside the default window"
    );
    assert!(
        v["scanned"].as_u64().unwrap_or(0) > u64::try_from(all.len()).unwrap_or(0),
        "other sagas' records were looked at and left out: {}",
        v["scanned"]
    );

    // A wider margin reaches the hour-old record; a bound stops the read early and says so.
    let wide = get(&api, &format!("/api/sagas/order/{id}/events?margin=2h")).await;
    assert!(
        wide["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["offset"] == old_offset && e["topic"] == "orders"),
        "{wide}"
    );
    let short = get(&api, &format!("/api/sagas/order/{id}/events?max_records=3")).await;
    assert!(
        short["stopped_early"]
            .as_str()
            .is_some_and(|s| s.contains("max_records")),
        "{short}"
    );

    // An operator's command is one of the saga's records too.
    let waiting = "paysilent-h20";
    Path::PaymentDeadline
        .drive(&bus, waiting)
        .await
        .expect("driven");
    wait_status(&api, &format!("order/{waiting}"), "running").await;
    let r = reqwest::Client::new()
        .post(format!("{api}/api/sagas/order/{waiting}/commands"))
        .header("x-operator", "tester")
        .json(&json!({"command": "abort", "reason": "customer called"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    wait_status(&api, &format!("order/{waiting}"), "compensating").await;
    let v = get(&api, &format!("/api/sagas/order/{waiting}/events")).await;
    let command = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "command")
        .unwrap_or_else(|| panic!("the command: {v}"));
    assert_eq!(command["type"], "abort");
    assert_eq!(command["source"], "tester");
    assert_eq!(command["payload"]["command"]["reason"], "customer called");
    assert!(
        types(&v["events"]).contains(&"ReleaseInventory".to_owned()),
        "{v}"
    );

    // The CLI prints the same records.
    let out = tokio::process::Command::new(choreo_binary().expect("choreo"))
        .args(["sagas", "events", "order", id, "--api", &api])
        .output()
        .await
        .expect("choreo sagas events");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("emitted   OrderConfirmed"), "{text}");
    assert!(
        text.contains("\"shipping_address\":\"1 Test Street\""),
        "{text}"
    );

    replica.stop().await.expect("stops");
    services.shutdown().await.expect("services stop");
}
