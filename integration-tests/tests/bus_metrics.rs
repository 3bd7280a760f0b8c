//! The bus reports through the `metrics` crate: a publish → handle round trip, a retry and a
//! dead letter show up as the documented metrics with their labels.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use choreo_bus::telemetry as t;
use choreo_bus::{EmbeddedBroker, HandlerError, PublishOptions};
use choreo_integration_tests::scenarios::{Env, eventually};
use choreo_schemas::MemoryRegistry;
use choreo_schemas::event::{Money, PaymentAuthorized};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_handle_retry_and_dead_letter_are_measured() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let broker = EmbeddedBroker::start(1).expect("broker");
    let env = Env {
        bootstrap: broker.bootstrap_servers().to_owned(),
        registry: Arc::new(MemoryRegistry::new()),
        embedded: Some(Arc::new(broker)),
    };
    let topic = env.topic("metrics", 1).await.expect("topic");
    let bus = env.bus("/tests/metrics").expect("bus");
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let sub = env
        .subscriber(&bus, "metrics")
        .handle_on(&topic, "measured", move |e: PaymentAuthorized, ctx| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                match (e.payment_id.as_str(), ctx.attempt) {
                    ("flaky", 1) => Err(HandlerError::retryable("once")),
                    ("poison", _) => Err(HandlerError::permanent("never")),
                    _ => Ok(()),
                }
            }
        })
        .start()
        .expect("subscriber");
    for id in ["ok", "flaky", "poison"] {
        let e = PaymentAuthorized {
            order_id: "o".into(),
            payment_id: id.into(),
            amount: Money {
                amount_minor: 1,
                currency: "EUR".into(),
            },
        };
        bus.publish_with(&e, PublishOptions::default().with_topic(&topic))
            .await
            .expect("publish");
    }
    eventually("every attempt made", || calls.load(Ordering::SeqCst) >= 4)
        .await
        .expect("handled");
    sub.shutdown().await.expect("shutdown");

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, label: (&str, &str)| -> u64 {
        snapshot
            .iter()
            .filter(|(k, ..)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == label.0 && l.value() == label.1)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    let histogram_samples = |name: &str| -> usize {
        snapshot
            .iter()
            .filter(|(k, ..)| k.key().name() == name)
            .map(|(.., v)| match v {
                DebugValue::Histogram(s) => s.len(),
                _ => 0,
            })
            .sum()
    };
    assert!(counter(t::PUBLISHED, ("topic", &topic)) >= 3, "published");
    assert!(
        counter(t::CONSUMED, ("type", "io.choreo.orders.PaymentAuthorized")) >= 3,
        "consumed"
    );
    assert_eq!(counter(t::RETRIES, ("handler", "measured")), 1, "one retry");
    assert_eq!(
        counter(t::DEAD_LETTERED, ("reason", "handler_permanent")),
        1,
        "one dead letter"
    );
    assert!(
        histogram_samples(t::HANDLER_SECONDS) >= 4,
        "every attempt timed"
    );
}
