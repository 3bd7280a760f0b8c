//! The in-process tier: every bus scenario against librdkafka's mock cluster in this process,
//! plus fault injection only the mock cluster offers.

use std::time::Duration;

use choreo_bus::PublishOptions;
use choreo_integration_tests::scenarios::{self, Env};
use choreo_schemas::event::{Money, PaymentAuthorized};

fn env() -> Env {
    Env::embedded().expect("mock cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_with_every_header() {
    scenarios::round_trip_with_every_header(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_per_partition_under_concurrency() {
    scenarios::ordering_per_partition_under_concurrency(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retryable_failure_then_success() {
    scenarios::retryable_failure_then_success(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_the_dead_letter_topic() {
    scenarios::poison_goes_to_the_dead_letter_topic(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_event_id_handled_once() {
    scenarios::duplicate_event_id_handled_once(&env())
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_event_read_by_v2_reader() {
    scenarios::v1_event_read_by_v2_reader(&env())
        .await
        .expect("scenario");
}

/// A publish issued while the only broker is down is delivered once it is back (the idempotent
/// producer retries), and the publish call returns only after the acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_survives_a_broker_outage() {
    let env = env();
    let broker = env.embedded.clone().expect("embedded");
    let topic = env.topic("outage", 1).await.expect("topic");
    let bus = env.bus("/tests/outage").expect("bus");
    let e = PaymentAuthorized {
        order_id: "o".into(),
        payment_id: "p".into(),
        amount: Money {
            amount_minor: 1,
            currency: "EUR".into(),
        },
    };
    bus.publish_with(&e, PublishOptions::default().with_topic(&topic))
        .await
        .expect("first publish");
    broker.broker_down(1).expect("down");
    let pending = {
        let (bus, topic, e) = (bus.clone(), topic.clone(), e.clone());
        tokio::spawn(async move {
            bus.publish_with(&e, PublishOptions::default().with_topic(topic))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !pending.is_finished(),
        "not acknowledged while the broker is down"
    );
    broker.broker_up(1).expect("up");
    let d = pending
        .await
        .expect("task")
        .expect("delivered after the outage");
    assert_eq!(d.offset, 1);
    let got = env.read(&topic, 2).await.expect("both records present");
    assert_eq!(got.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_downstream_opens_the_circuit_instead_of_dead_lettering() {
    use choreo_bus::CircuitBreakerPolicy;
    use choreo_integration_tests::resilience;
    let policy = CircuitBreakerPolicy {
        failures: 3,
        window: Duration::from_secs(10),
        cool_down: Duration::from_secs(1),
    };
    let dead = resilience::a_failing_downstream_opens_the_circuit_instead_of_dead_lettering(
        &env(),
        Some(policy),
    )
    .await
    .expect("scenario");
    assert_eq!(dead, 0, "nothing dead-lettered during the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_of_one_partition_run_concurrently_in_order_per_key() {
    use choreo_integration_tests::resilience;
    let concurrent =
        resilience::keys_of_one_partition_run_concurrently_in_order_per_key(&env(), 64)
            .await
            .expect("scenario");
    assert!(
        concurrent > 1,
        "records of one partition ran concurrently: {concurrent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_of_one_key_does_not_hold_up_the_keys_behind_it() {
    use choreo_integration_tests::resilience;
    let order = resilience::a_run_of_one_key_does_not_hold_up_the_keys_behind_it(&env())
        .await
        .expect("scenario");
    assert_eq!(order, vec![0, 1, 2, 3, 4], "the hot key's records in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unfinished_record_holds_the_committed_offset_below_it() {
    scenarios::an_unfinished_record_holds_the_committed_offset_below_it(&env())
        .await
        .expect("scenario");
}
