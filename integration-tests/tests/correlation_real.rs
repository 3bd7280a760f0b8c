//! A saga correlated by a field, fed by records keyed otherwise, on Apache Kafka: its events
//! arrive on partitions other than its correlation id's, and the coordinator must still give
//! the saga one owner — forwarding each such input, in its transaction, through
//! `<group>.saga-rekey` to the partition of the correlation id — so the saga completes, exists
//! once, and an operator command (keyed by correlation id) reaches it.

use std::time::{Duration, Instant};

use choreo_bus::wire::codec::Codec;
use choreo_bus::wire::partition::partition_of;
use choreo_bus::{Bus, Envelope};
use choreo_integration_tests::process::Replica;
use choreo_integration_tests::saga_scenarios::{
    fast_order_saga_toml_with_acks, order, start_services,
};
use choreo_integration_tests::world::{PARTITIONS, World};
use choreo_schemas::Event;
use choreo_schemas::event::{InventoryReserved, Money, PaymentAuthorized};
use serde_json::Value;

/// A key that is not `order_id` and lands on another partition than `order_id` does.
fn other_key(order_id: &str, prefix: &str) -> String {
    let owner = partition_of(order_id.as_bytes(), PARTITIONS);
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| partition_of(k.as_bytes(), PARTITIONS) != owner)
        .expect("some key lands elsewhere")
}

/// Publishes `event` keyed by `key` (not by its correlation id).
async fn publish_keyed<T: Event>(
    bus: &Bus,
    codec: &Codec,
    topic: &str,
    key: &str,
    event: &T,
    id: &str,
) {
    let value = codec.encode(topic, event).await.expect("encoded");
    let envelope = Envelope::new(id, "/tests/elsewhere", T::TYPE, key, None, None);
    let d = bus
        .publish_envelope_keyed(topic, key, &envelope, &value)
        .await
        .expect("published");
    assert_eq!(
        d.partition,
        partition_of(key.as_bytes(), PARTITIONS),
        "the record is where its key puts it"
    );
}

async fn saga(replica: &Replica, id: &str) -> Option<Value> {
    let r = reqwest::get(format!("{}/api/sagas/order/{id}", replica.api))
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn wait_status(replica: &Replica, id: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = saga(replica, id).await;
        if let Some(s) = &s
            && want.contains(&s["status"].as_str().unwrap_or_default())
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "saga {id} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_correlated_by_a_field_has_one_owner_whatever_its_records_are_keyed_by() {
    let world = World::real_with_saga_topics().await;
    let cfg = world.replica_config("exactly_once", 60);
    let toml = fast_order_saga_toml_with_acks(60, 300).replace(
        "correlation = \"key\"",
        "correlation = { field = \"order_id\" }",
    );
    assert!(
        toml.contains("field = \"order_id\""),
        "the definition is field-correlated"
    );
    std::fs::write(&cfg.definition, toml).expect("definition");
    let mut replica = Replica::start(&cfg, "field-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready");
    let bus = world.bus().expect("bus");
    let codec = Codec::new(world.registry.clone());
    let services = start_services(&bus).expect("services");

    // The happy path, each input keyed by something else than the order id.
    let id = "field-order-1";
    publish_keyed(
        &bus,
        &codec,
        "orders",
        &other_key(id, "customer"),
        &order(id),
        "fo-1-placed",
    )
    .await;
    let pay = PaymentAuthorized {
        order_id: id.into(),
        payment_id: "pay-1".into(),
        amount: Money {
            amount_minor: 1000,
            currency: "EUR".into(),
        },
    };
    publish_keyed(
        &bus,
        &codec,
        "payments",
        &other_key(id, "payment"),
        &pay,
        "fo-1-paid",
    )
    .await;
    let reserve = InventoryReserved {
        order_id: id.into(),
        reservation_id: "res-1".into(),
        items: vec![],
    };
    publish_keyed(
        &bus,
        &codec,
        "inventory",
        &other_key(id, "stock"),
        &reserve,
        "fo-1-reserved",
    )
    .await;
    let done = wait_status(&replica, id, &["completed"]).await;
    assert_eq!(done["correlation_id"], id);

    // One saga for the order, none under the other keys.
    let list: Value = reqwest::get(format!("{}/api/sagas?limit=1000", replica.api))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = list["sagas"]
        .as_array()
        .expect("sagas")
        .iter()
        .filter_map(|s| s["saga_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["order/field-order-1"], "one saga, one owner");

    // A command, keyed by the correlation id, reaches a saga whose start came keyed otherwise.
    let waiting = "field-order-2";
    publish_keyed(
        &bus,
        &codec,
        "orders",
        &other_key(waiting, "customer"),
        &order(waiting),
        "fo-2-placed",
    )
    .await;
    wait_status(&replica, waiting, &["running"]).await;
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/api/sagas/order/{waiting}/commands",
            replica.api
        ))
        .json(&serde_json::json!({"command": "abort", "reason": "customer called"}))
        .send()
        .await
        .expect("command");
    assert_eq!(answer.status().as_u16(), 202);
    wait_status(&replica, waiting, &["compensating", "compensated"]).await;

    services.shutdown().await.expect("services stop");
    replica.stop().await.expect("stops");
}
