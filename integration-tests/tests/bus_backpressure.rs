//! Backpressure from a busy partition worker, on the mock cluster and on Apache Kafka: a worker
//! whose queue is full but that keeps taking records is waited for, not paused.
//!
//! Pausing a partition makes librdkafka drop what it had prefetched for it and fetch it again
//! on resume, queued behind every other partition's prefetch. A subscriber that paused at every
//! full queue paused dozens of times a second under plain load and moved at a fraction of its
//! rate. The pause is for a worker held by its record in hand (see `bad_input_real` and
//! `bus_mock`, where such a partition is paused and the others go on).
//!
//! The pause count comes from `choreo_bus_partition_pauses_total` (one recorder for the binary,
//! each test with a topic of its own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use choreo_bus::PublishOptions;
use choreo_integration_tests::scenarios::{Env, Real, eventually, payment};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Records in the test: with a queue of 4 they fill it many times over.
const RECORDS: i64 = 400;

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        snapshotter
    })
}

/// `choreo_bus_partition_pauses_total` for `topic`.
fn pauses(topic: &str) -> u64 {
    snapshotter()
        .snapshot()
        .into_vec()
        .iter()
        .filter(|(k, ..)| {
            k.key().name() == choreo_bus::telemetry::PARTITION_PAUSES
                && k.key()
                    .labels()
                    .any(|l| l.key() == "topic" && l.value() == topic)
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// 400 records of one partition are published first, then read by a subscriber whose worker
/// holds 4 records and handles one at a time, each in about a millisecond: its queue is full
/// from the first fetch to the last record, and it takes a record every millisecond or two.
/// Every record is handled, in order, and the partition is not paused (at most once, for a
/// stall of the whole machine). Pausing at every full queue paused it dozens of times.
async fn a_full_queue_whose_worker_keeps_taking_records_is_not_paused(env: &Env) {
    snapshotter();
    let topic = env.topic("backpressure", 1).await.expect("topic");
    let bus = env.bus("/tests/backpressure").expect("bus");
    for seq in 0..RECORDS {
        bus.publish_with(
            &payment("order-backpressure", seq),
            PublishOptions::default().with_topic(&topic),
        )
        .await
        .expect("publish");
    }
    let handled = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (h, c) = (Arc::clone(&handled), Arc::clone(&count));
    let sub = env
        .subscriber(&bus, "backpressure")
        .queue_depth(4)
        .max_in_flight(1)
        .handle_on(
            &topic,
            "steady",
            move |e: choreo_schemas::event::PaymentAuthorized, _ctx| {
                let (h, c) = (Arc::clone(&h), Arc::clone(&c));
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    h.lock().expect("lock").push(e.amount.amount_minor);
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .start()
        .expect("subscriber");
    eventually("every record handled", || {
        count.load(Ordering::SeqCst) >= RECORDS as usize
    })
    .await
    .expect("handled");
    sub.shutdown().await.expect("shutdown");
    let handled = handled.lock().expect("lock").clone();
    assert_eq!(
        handled,
        (0..RECORDS).collect::<Vec<_>>(),
        "every record handled once, in order"
    );
    let paused = pauses(&topic);
    assert!(
        paused <= 1,
        "a worker that keeps taking records is waited for, not paused: paused {paused} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_a_full_queue_whose_worker_keeps_taking_records_is_not_paused() {
    let env = Env::embedded().expect("mock cluster starts");
    a_full_queue_whose_worker_keeps_taking_records_is_not_paused(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_a_full_queue_whose_worker_keeps_taking_records_is_not_paused() {
    let real = Real::start().await.expect("the real tier");
    a_full_queue_whose_worker_keeps_taking_records_is_not_paused(&real.env).await;
}
