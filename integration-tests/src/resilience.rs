//! Bus scenarios for a handler whose downstream goes down and comes back (run on both brokers,
//! like [`crate::scenarios`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use choreo_bus::dead_letter::header as dlq;
use choreo_bus::{CircuitBreakerPolicy, HandlerError, PublishOptions};
use choreo_schemas::event::PaymentAuthorized;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message};

use crate::scenarios::{Env, PATIENCE, eventually, payment};

/// The downstream of a handler is down for a while, and every record fails retryably. With a
/// circuit breaker the partitions wait (no record exhausts its retries, nothing is
/// dead-lettered, a probe after each cool-down), and once the downstream is back every record
/// is handled. Without one (`breaker = None`), the same outage dead-letters records — the
/// breaker is what makes the difference. Answers the number of records dead-lettered.
pub async fn a_failing_downstream_opens_the_circuit_instead_of_dead_lettering(
    env: &Env,
    breaker: Option<CircuitBreakerPolicy>,
) -> anyhow::Result<usize> {
    let topic = env.topic("breaker", 3).await?;
    let bus = env.bus("/tests/breaker")?;
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let (d, c, h) = (Arc::clone(&down), Arc::clone(&calls), Arc::clone(&handled));
    let mut builder = env.subscriber(&bus, "breaker").handle_on(
        &topic,
        "charge",
        move |e: PaymentAuthorized, _ctx| {
            let (d, c, h) = (Arc::clone(&d), Arc::clone(&c), Arc::clone(&h));
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    return Err(HandlerError::retryable("payment gateway unreachable"));
                }
                h.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push(e.payment_id);
                Ok(())
            }
        },
    );
    if let Some(policy) = breaker {
        builder = builder.circuit_breaker(policy);
    }
    let sub = builder.start()?;
    for n in 0..6 {
        bus.publish_with(
            &payment(&format!("o-{n}"), n),
            PublishOptions::default().with_topic(&topic),
        )
        .await?;
    }
    // Down long enough for every record's retries (3 attempts, ≤ 200 ms apart) many times over.
    eventually("the handler is called while its downstream is down", || {
        calls.load(Ordering::SeqCst) >= 6
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    down.store(false, Ordering::SeqCst);
    let expected_handled = if breaker.is_some() { 6 } else { 0 };
    if breaker.is_some() {
        eventually(
            "every record is handled once the downstream is back",
            || handled.lock().map(|h| h.len() == 6).unwrap_or(false),
        )
        .await?;
    }
    // A sentinel poison record: the dead letters before it are the outage's.
    let raw = env.raw_producer()?;
    raw.send(
        FutureRecord::<str, [u8]>::to(&topic)
            .key("sentinel")
            .payload(&[9u8, 9, 9]),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)?;
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.bootstrap)
        .set(
            "group.id",
            format!("reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    reader.subscribe(&[&format!("{topic}.dlq")])?;
    let mut dead_lettered = 0;
    loop {
        let m = tokio::time::timeout(PATIENCE, reader.recv())
            .await
            .context("the sentinel's dead letter never came")??;
        if m.key() == Some(b"sentinel".as_slice()) {
            break;
        }
        ensure!(
            m.headers().is_some(),
            "a dead letter has headers ({})",
            dlq::KIND
        );
        dead_lettered += 1;
    }
    sub.shutdown().await?;
    let got = handled.lock().map(|h| h.len()).unwrap_or(0);
    ensure!(
        breaker.is_none() || got == expected_handled,
        "handled {got} of 6"
    );
    Ok(dead_lettered)
}
