//! Bus scenarios for a handler whose downstream goes down and comes back (run on both brokers,
//! like [`crate::scenarios`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use choreo_bus::dead_letter::header as dlq;
use choreo_bus::{CircuitBreakerPolicy, HandlerError, PublishOptions, RetryPolicy};
use choreo_schemas::event::PaymentAuthorized;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;

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
    // A retry budget (about 1.5 s) that outlasts the breaker's first look at two failing
    // records: the breaker opens on failures from at least two records, so a record whose
    // budget ran out before a second record failed would be dead-lettered as its own problem.
    builder = builder.retry(RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    });
    if let Some(policy) = breaker {
        builder = builder.circuit_breaker(policy);
    }
    // Every record is on the topic before the subscriber starts, so the outage meets them
    // together rather than one publish at a time.
    for n in 0..6 {
        bus.publish_with(
            &payment(&format!("o-{n}"), n),
            PublishOptions::default().with_topic(&topic),
        )
        .await?;
    }
    let sub = builder.start()?;
    // Down long enough for every record's retries (10 attempts, ≤ 200 ms apart) twice over.
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
    let reader: StreamConsumer = crate::world::reader_config(&env.bootstrap)
        .set("auto.offset.reset", "earliest")
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

/// Records of one partition with different keys are handled concurrently (a handler waiting
/// on I/O holds up only its key), those of one key in order; answers the most records seen in
/// the handler at once. With `max_in_flight = 1` it is 1 (one at a time per partition).
pub async fn keys_of_one_partition_run_concurrently_in_order_per_key(
    env: &Env,
    max_in_flight: usize,
) -> anyhow::Result<usize> {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    const KEYS: i64 = 20;
    const PER_KEY: i64 = 5;
    let topic = env.topic("per-key", 1).await?;
    let bus = env.bus("/tests/per-key")?;
    let seen: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (s, n, m) = (Arc::clone(&seen), Arc::clone(&now), Arc::clone(&most));
    let sub = env
        .subscriber(&bus, "per-key")
        .max_in_flight(max_in_flight)
        .handle_on(&topic, "slow", move |e: PaymentAuthorized, _ctx| {
            let (s, n, m) = (Arc::clone(&s), Arc::clone(&n), Arc::clone(&m));
            async move {
                let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(at_once, Ordering::SeqCst);
                // A downstream call.
                tokio::time::sleep(Duration::from_millis(30)).await;
                s.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .entry(e.order_id)
                    .or_default()
                    .push(e.amount.amount_minor);
                n.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()?;
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            bus.publish_with(
                &payment(&format!("key-{k}"), seq),
                PublishOptions::default().with_topic(&topic),
            )
            .await?;
        }
    }
    let total = usize::try_from(KEYS * PER_KEY)?;
    eventually("every record is handled", || {
        seen.lock()
            .map(|m| m.values().map(Vec::len).sum::<usize>() >= total)
            .unwrap_or(false)
    })
    .await?;
    sub.shutdown().await?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    for (key, seqs) in seen.iter() {
        ensure!(
            *seqs == (0..PER_KEY).collect::<Vec<_>>(),
            "{key} handled in publish order: {seqs:?}"
        );
    }
    Ok(most.load(Ordering::SeqCst))
}

/// A run of one key's records at the head of a partition does not hold up the keys behind it:
/// with two handler slots, the first `hot` record waits inside its handler until the `cold`
/// record (published after five `hot` ones) has been handled. A worker that counted the `hot`
/// records waiting behind their key against its slots would never reach `cold`; the first
/// handler then gives up waiting and says so. Answers the `hot` sequence numbers in the order
/// they were handled.
pub async fn a_run_of_one_key_does_not_hold_up_the_keys_behind_it(
    env: &Env,
) -> anyhow::Result<Vec<i64>> {
    const HOT: i64 = 5;
    let topic = env.topic("hot-key", 1).await?;
    let bus = env.bus("/tests/hot-key")?;
    let (cold_tx, cold_rx) = tokio::sync::watch::channel(false);
    let cold_tx = Arc::new(cold_tx);
    let hot: Arc<Mutex<Vec<i64>>> = Arc::default();
    let held_up = Arc::new(AtomicBool::new(false));
    let (h, held, tx) = (Arc::clone(&hot), Arc::clone(&held_up), Arc::clone(&cold_tx));
    for seq in 0..HOT {
        bus.publish_with(
            &payment("hot", seq),
            PublishOptions::default().with_topic(&topic),
        )
        .await?;
    }
    bus.publish_with(
        &payment("cold", 0),
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    let sub = env
        .subscriber(&bus, "hot-key")
        .max_in_flight(2)
        .handle_on(&topic, "hot-or-cold", move |e: PaymentAuthorized, _ctx| {
            let (h, held, tx, mut rx) = (
                Arc::clone(&h),
                Arc::clone(&held),
                Arc::clone(&tx),
                cold_rx.clone(),
            );
            async move {
                if e.order_id == "cold" {
                    tx.send_replace(true);
                    return Ok(());
                }
                if e.amount.amount_minor == 0
                    && tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|done| *done))
                        .await
                        .is_err()
                {
                    held.store(true, Ordering::SeqCst);
                }
                h.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push(e.amount.amount_minor);
                Ok(())
            }
        })
        .start()?;
    eventually("every hot record is handled", || {
        hot.lock()
            .map(|h| h.len() >= usize::try_from(HOT).unwrap_or(usize::MAX))
            .unwrap_or(false)
    })
    .await?;
    sub.shutdown().await?;
    ensure!(
        !held_up.load(Ordering::SeqCst),
        "the cold record was not handled while the first hot record was in its handler: the hot records waiting behind their key held the worker's slots"
    );
    let order = hot.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    Ok(order)
}
