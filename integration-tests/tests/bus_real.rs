//! The real-broker tier: every bus scenario against Apache Kafka in another process (or
//! `KAFKA_BOOTSTRAP_SERVERS`, or testcontainers — see `choreo_integration_tests::broker`), one
//! broker for the whole binary (each scenario has topics of its own), with the registry served
//! over the Confluent REST API, and a subscriber process killed mid-batch and restarted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_bus::PublishOptions;
use choreo_integration_tests::broker::shared_real_broker;
use choreo_integration_tests::scenarios::{self, Env, PATIENCE, Real};
use choreo_schemas::event::{Money, PaymentAuthorized};
use choreo_schemas::{ConfluentRegistry, MemoryRegistry};

async fn real() -> Real {
    Real::start().await.expect("the real tier")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_with_every_header() {
    scenarios::round_trip_with_every_header(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_per_partition_under_concurrency() {
    scenarios::ordering_per_partition_under_concurrency(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retryable_failure_then_success() {
    scenarios::retryable_failure_then_success(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_the_dead_letter_topic() {
    scenarios::poison_goes_to_the_dead_letter_topic(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_event_id_handled_once() {
    scenarios::duplicate_event_id_handled_once(&real().await.env)
        .await
        .expect("scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_event_read_by_v2_reader() {
    scenarios::v1_event_read_by_v2_reader(&real().await.env)
        .await
        .expect("scenario");
}

/// One line per handling: (event id, partition, offset).
fn handled(path: &std::path::Path) -> Vec<(String, i32, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

fn handled_ids(path: &std::path::Path) -> Vec<String> {
    handled(path).into_iter().map(|(id, _, _)| id).collect()
}

/// The group's committed offsets of `topic`'s partitions.
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(20))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(0).max(0)))
        .collect()
}

/// A subscriber process killed with SIGKILL mid-batch and restarted loses nothing: every event
/// is handled at least once, and re-handled ones are only those after the last commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_killed_mid_batch_loses_nothing() {
    let real = real().await;
    let env = &real.env;
    let topic = env.topic("kill", 2).await.expect("topic");
    let bus = env.bus("/tests/kill").expect("bus");
    const N: usize = 600;
    let mut ids = HashSet::new();
    for i in 0..N {
        let e = PaymentAuthorized {
            order_id: format!("order-{}", i % 50),
            payment_id: format!("p-{i}"),
            amount: Money {
                amount_minor: i64::try_from(i).expect("small"),
                currency: "EUR".into(),
            },
        };
        let d = bus
            .publish_with(&e, PublishOptions::default().with_topic(&topic))
            .await
            .expect("publish");
        ids.insert(d.id);
    }
    let dir = std::env::temp_dir().join(format!("choreo-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("handled.txt");
    let group = format!("kill-{}", uuid::Uuid::new_v4().simple());
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_choreo-test-consumer"))
            .args([
                "--bootstrap",
                &env.bootstrap,
                "--registry",
                &real.registry_url,
                "--topic",
                &topic,
                "--group",
                &group,
            ])
            .arg("--out")
            .arg(&out)
            .args(["--work-ms", "20", "--max-in-flight", "2"])
            .kill_on_drop(true)
            .spawn()
            .expect("consumer process starts")
    };
    let mut first = spawn();
    let deadline = Instant::now() + PATIENCE;
    // Killed once a third is handled and the group has committed (every second) — records of
    // different keys finish out of order, two at a time per partition.
    while handled_ids(&out).len() < N / 3
        || committed(&env.bootstrap, &group, &topic, 2)
            .values()
            .sum::<i64>()
            == 0
    {
        assert!(
            Instant::now() < deadline,
            "the first consumer handled {} events",
            handled_ids(&out).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    let before = handled(&out);
    let at_kill = before.len();
    assert!(at_kill < N, "killed mid-batch ({at_kill} of {N} handled)");
    // What the group had committed when the process died: the restart starts there.
    let commits = committed(&env.bootstrap, &group, &topic, 2);
    assert!(
        commits.values().sum::<i64>() > 0,
        "the first process committed something before it died ({commits:?})"
    );
    let mut second = spawn();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen: HashSet<String> = handled_ids(&out).into_iter().collect();
        if ids.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart, {} of {N} events handled",
            ids.intersection(&seen).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.start_kill().expect("stop");
    let _ = second.wait().await;
    let all = handled(&out);
    let unique: HashSet<&String> = all.iter().map(|(id, _, _)| id).collect();
    assert_eq!(unique.len(), N, "every event handled, nothing extra");
    // Handled twice = exactly the records handled before the kill at or after the committed
    // offset of their partition: nothing below a commit is handled again, and everything the
    // dead process handled but had not committed is.
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (id, _, _) in &all {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let twice: HashSet<&str> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let uncommitted: HashSet<&str> = before
        .iter()
        .filter(|(_, p, o)| *o >= commits.get(p).copied().unwrap_or(0))
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert!(
        times.values().all(|n| *n <= 2),
        "no record handled more than twice"
    );
    assert_eq!(
        twice, uncommitted,
        "re-handled records are exactly those after the last commit (committed offsets {commits:?})"
    );
    eprintln!(
        "kill test: {N} events, {at_kill} handled before SIGKILL, committed offsets {commits:?}, {} re-handled after restart, all of them after the last commit",
        twice.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The registry unreachable for several seconds — longer than every retry of the subscriber's
/// policy together — while a readable record waits: the partition waits with it, and once the
/// registry is back the record is handled, not dead-lettered as "registry unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_outage_pauses_the_partition_and_dead_letters_nothing() {
    use choreo_bus::{Bus, BusConfig, HandlerError};
    let bootstrap = shared_real_broker().await.expect("a real broker");
    let env = Env {
        bootstrap: bootstrap.clone(),
        registry: Arc::new(MemoryRegistry::new()),
        embedded: None,
    };
    let topic = env.topic("registry-outage", 1).await.expect("topic");
    let store = Arc::new(MemoryRegistry::new());
    let port = choreo_integration_tests::broker::free_port().expect("port");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let url = format!("http://{addr}");
    let (_, first) = choreo_schemas::server::serve(Arc::clone(&store) as _, addr)
        .await
        .expect("registry");
    let publisher = Bus::new(
        BusConfig::new(&bootstrap).with_source("/tests/outage"),
        Arc::new(ConfluentRegistry::new(&url)),
    )
    .expect("bus");
    let event = PaymentAuthorized {
        order_id: "outage-1".into(),
        payment_id: "p-outage".into(),
        amount: Money {
            amount_minor: 1,
            currency: "EUR".into(),
        },
    };
    publisher
        .publish_with(&event, PublishOptions::default().with_topic(&topic))
        .await
        .expect("published while the registry is up");
    // The registry goes away.
    first.abort();
    let _ = first.await;
    assert!(
        reqwest::get(format!("{url}/subjects")).await.is_err(),
        "the registry still answers"
    );

    // A subscriber with a cold schema cache: it must fetch the writer schema.
    let consumer_bus = Bus::new(
        BusConfig::new(&bootstrap).with_source("/tests/outage"),
        Arc::new(ConfluentRegistry::new(&url)),
    )
    .expect("bus");
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let sub = env
        .subscriber(&consumer_bus, "outage")
        .handle_on(&topic, "payments", move |e: PaymentAuthorized, _ctx| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push(e.payment_id);
                Ok(())
            }
        })
        .start()
        .expect("subscriber");
    // The subscriber's policy: 3 attempts, backoff up to 200 ms — all spent within a second.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        seen.lock().expect("lock").is_empty(),
        "handled without its schema?"
    );

    // The registry is back on the same address.
    let (_, _second) = choreo_schemas::server::serve(Arc::clone(&store) as _, addr)
        .await
        .expect("registry again");
    scenarios::eventually(
        "the record waiting for the registry handled (not dead-lettered)",
        || !seen.lock().expect("lock").is_empty(),
    )
    .await
    .expect("handled once the registry is back");
    assert_eq!(*seen.lock().expect("lock"), ["p-outage"]);
    sub.shutdown().await.expect("shutdown");
}

/// A record that cannot be dead-lettered (an ACL denies writes to `<topic>.dlq`) is retried
/// until it can, and stops nothing but its own partition: the dispatcher pauses that partition
/// and every other partition's records are handled meanwhile. Once writes are allowed the
/// record is dead-lettered and its partition's records follow, in order, none lost. With a
/// dispatcher that waits for a full worker queue (the earlier code) the other partition stops
/// too and this test fails. (The worker takes one record at a time here, `max_in_flight(1)`,
/// so that the partition's queue fills behind the record; with key-level concurrency the
/// record would hold up only its own key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_that_cannot_be_dead_lettered_stops_only_its_own_partition() {
    use choreo_bus::{BusConfig, HandlerError};
    use rdkafka::Message as _;
    use std::sync::Mutex;

    let broker = choreo_integration_tests::broker::apache_kafka()
        .await
        .expect("Apache Kafka of this test's own (it has the SASL listener)");
    let topic = format!("stuck-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dlq = format!("{topic}.dlq");
    choreo_integration_tests::broker::create_topics(&broker.bootstrap, &[(&topic, 2), (&dlq, 1)])
        .await
        .expect("topics");
    let settings = broker
        .deny_writes(&dlq)
        .await
        .expect("deny the dead letters");
    let mut config = BusConfig::new(&broker.bootstrap).with_source("/tests/stuck");
    for (k, v) in &settings {
        if k == "bootstrap.servers" {
            config.bootstrap_servers.clone_from(v);
        } else {
            config = config.with_client_setting(k, v);
        }
    }
    let registry: Arc<dyn choreo_schemas::SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let bus = choreo_bus::Bus::new(config, Arc::clone(&registry)).expect("bus");
    let env = Env {
        bootstrap: broker.bootstrap.clone(),
        registry,
        embedded: None,
    };
    let handled: Arc<Mutex<Vec<(i32, String)>>> = Arc::default();
    let sink = Arc::clone(&handled);
    let sub = env
        .subscriber(&bus, "stuck")
        .queue_depth(1)
        .max_in_flight(1)
        .handle_on(&topic, "payments", move |e: PaymentAuthorized, ctx| {
            let sink = Arc::clone(&sink);
            async move {
                if e.order_id == "poison" {
                    return Err(HandlerError::permanent("refused"));
                }
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push((ctx.partition, e.order_id));
                Ok(())
            }
        })
        .start()
        .expect("subscriber");
    let publish = |key: String| {
        let bus = bus.clone();
        let topic = topic.clone();
        async move {
            bus.publish_with(
                &scenarios::payment(&key, 1),
                PublishOptions::default().with_topic(&topic),
            )
            .await
            .expect("published")
            .partition
        }
    };
    let stuck = publish("poison".into()).await;
    let mut expected: HashMap<i32, Vec<String>> = HashMap::new();
    for i in 0..40 {
        let key = format!("k-{i}");
        let p = publish(key.clone()).await;
        expected.entry(p).or_default().push(key);
    }
    let other = 1 - stuck;
    assert!(
        expected.get(&stuck).map_or(0, Vec::len) >= 4 && expected.contains_key(&other),
        "keys on both partitions, enough behind the poison to fill its queue: {expected:?}"
    );
    let of = |p: i32| -> Vec<String> {
        handled
            .lock()
            .expect("lock")
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, k)| k.clone())
            .collect()
    };
    let want_other = expected[&other].clone();
    scenarios::eventually("every record of the other partition handled", || {
        of(other) == want_other
    })
    .await
    .expect("the other partition goes on while the poison's dead letter is refused");
    assert!(
        of(stuck).is_empty(),
        "nothing behind the undeliverable dead letter is handled out of order: {:?}",
        of(stuck)
    );

    broker
        .allow_writes(&dlq)
        .await
        .expect("allow the dead letters");
    let want_stuck = expected[&stuck].clone();
    scenarios::eventually("the stuck partition's records handled, in order", || {
        of(stuck) == want_stuck
    })
    .await
    .expect("the partition resumes once its dead letter is written");
    let letters = env.read(&dlq, 1).await.expect("the dead letter");
    assert_eq!(letters[0].key(), Some(&b"poison"[..]));
    sub.shutdown().await.expect("shutdown");
}

/// A record too large to be dead-lettered whole (its value near the size limit, plus the
/// dead-letter headers) is dead-lettered without its value, with a header that says how large it
/// was and where it is, and its partition moves on. The earlier code retried it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_too_large_to_dead_letter_whole_leaves_a_dead_letter_that_says_where_it_is() {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let r = real().await;
    let env = &r.env;
    let topic = env.topic("huge", 1).await.expect("topic");
    let bus = env.bus("/tests/huge").expect("bus");
    let handled: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&handled);
    let sub = env
        .subscriber(&bus, "huge")
        .handle_on(&topic, "payments", move |e: PaymentAuthorized, _ctx| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().expect("lock").push(e.order_id);
                Ok(())
            }
        })
        .start()
        .expect("subscriber");
    // 999 950 bytes of garbage (no Confluent framing): poison whose dead letter, with its
    // headers, is over the producer's 1 000 000-byte message.max.bytes.
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.bootstrap)
        .set("message.max.bytes", "1048576")
        .create()
        .expect("producer");
    let value = vec![7u8; 999_950];
    raw.send(
        FutureRecord::<str, [u8]>::to(&topic)
            .key("huge-1")
            .payload(&value),
        Duration::from_secs(20),
    )
    .await
    .expect("the large record is in the topic");
    bus.publish_with(
        &scenarios::payment("after-huge", 1),
        PublishOptions::default().with_topic(&topic),
    )
    .await
    .expect("published");
    scenarios::eventually("the record after the large one handled", || {
        handled
            .lock()
            .expect("lock")
            .contains(&"after-huge".to_owned())
    })
    .await
    .expect("the partition moves on");
    let letter = env
        .read(&format!("{topic}.dlq"), 1)
        .await
        .expect("a dead letter")
        .remove(0);
    assert_eq!(letter.key(), Some(&b"huge-1"[..]));
    assert!(letter.payload().unwrap_or_default().is_empty());
    let omitted = letter
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == "choreo_dlq_payload_omitted")
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .expect("the payload-omitted header");
    assert!(
        omitted.starts_with("999950 bytes") && omitted.contains(&format!("{topic}/0/0")),
        "{omitted}"
    );
    sub.shutdown().await.expect("shutdown");
}

/// A duplicate delivered after the subscriber restarted (same group, new process state) is
/// caught by `KafkaDedup`, which reloads the handled ids from its topic; the in-memory store,
/// whose memory went with the process, handles it again — the difference is the durable store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_after_a_restart_is_caught_by_the_durable_dedup_store() {
    use choreo_bus::{
        BusConfig, DedupStore, HandlerError, KafkaDedup, KafkaDedupOptions, MemoryDedup,
    };
    use std::sync::Mutex;

    let real = real().await;
    let env = &real.env;
    let run = |durable: bool| async move {
        let topic = env.topic("dedup-durable", 2).await.expect("topic");
        let bus = env.bus("/tests/dedup-durable").expect("bus");
        let group = format!("dedup-durable-{}", uuid::Uuid::new_v4().simple());
        let handled: Arc<Mutex<Vec<String>>> = Arc::default();
        let store = || async {
            if durable {
                KafkaDedup::open(
                    BusConfig::new(&env.bootstrap),
                    KafkaDedupOptions::for_group(&group),
                )
                .await
                .expect("dedup store") as Arc<dyn DedupStore>
            } else {
                Arc::new(MemoryDedup::default()) as Arc<dyn DedupStore>
            }
        };
        let subscribe = |store: Arc<dyn DedupStore>| {
            let sink = Arc::clone(&handled);
            bus.subscriber(&group)
                .client_setting("session.timeout.ms", "6000")
                .dedup(store)
                .handle_on(&topic, "once", move |e: PaymentAuthorized, _ctx| {
                    let sink = Arc::clone(&sink);
                    async move {
                        sink.lock()
                            .map_err(|_| HandlerError::permanent("lock"))?
                            .push(e.payment_id);
                        Ok(())
                    }
                })
                .start()
                .expect("subscriber")
        };
        let pay = |n: u32| PaymentAuthorized {
            order_id: "o-dedup".into(),
            payment_id: format!("pay-{n}"),
            amount: Money {
                amount_minor: 1,
                currency: "EUR".into(),
            },
        };
        let send = |n: u32, id: &'static str| {
            let (event, bus, topic) = (pay(n), &bus, &topic);
            async move {
                bus.publish_with(
                    &event,
                    PublishOptions::default().with_topic(topic).with_id(id),
                )
                .await
            }
        };
        let sub = subscribe(store().await);
        send(1, "evt-1").await.expect("first");
        scenarios::eventually("the first event is handled", || {
            handled.lock().map(|h| h.len() == 1).unwrap_or(false)
        })
        .await
        .expect("handled");
        sub.shutdown().await.expect("stops");

        // The restart: a new store and subscriber in the same group; the first event again.
        let sub = subscribe(store().await);
        send(2, "evt-1").await.expect("the duplicate");
        send(3, "evt-3").await.expect("a new event");
        scenarios::eventually("the new event is handled", || {
            handled
                .lock()
                .map(|h| h.iter().any(|p| p == "pay-3"))
                .unwrap_or(false)
        })
        .await
        .expect("handled");
        sub.shutdown().await.expect("stops");
        handled.lock().expect("lock").clone()
    };
    assert_eq!(
        run(true).await,
        vec!["pay-1".to_owned(), "pay-3".to_owned()],
        "the durable store caught the duplicate"
    );
    assert_eq!(
        run(false).await,
        vec!["pay-1".to_owned(), "pay-2".to_owned(), "pay-3".to_owned()],
        "without it the duplicate after the restart is handled (the store is what the first assertion tests)"
    );
}

/// A handler's downstream down for a few seconds: with a circuit breaker nothing is
/// dead-lettered and every record is handled once it is back; without one, the same outage
/// dead-letters records (so the breaker is what the first run tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_downstream_opens_the_circuit_instead_of_dead_lettering() {
    use choreo_bus::CircuitBreakerPolicy;
    use choreo_integration_tests::resilience;
    let real = real().await;
    let policy = CircuitBreakerPolicy {
        failures: 3,
        window: Duration::from_secs(10),
        cool_down: Duration::from_secs(1),
    };
    let with = resilience::a_failing_downstream_opens_the_circuit_instead_of_dead_lettering(
        &real.env,
        Some(policy),
    )
    .await
    .expect("scenario with a breaker");
    assert_eq!(with, 0, "nothing dead-lettered during the outage");
    let without = resilience::a_failing_downstream_opens_the_circuit_instead_of_dead_lettering(
        &real.env, None,
    )
    .await
    .expect("scenario without a breaker");
    assert!(
        without > 0,
        "without a breaker the outage dead-letters records"
    );
}

/// On Apache Kafka: a run of one key's records at the head of a partition does not keep the
/// keys behind it waiting for a handler slot (records waiting behind a busy key hold none).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_of_one_key_does_not_hold_up_the_keys_behind_it() {
    use choreo_integration_tests::resilience;
    let real = real().await;
    let order = resilience::a_run_of_one_key_does_not_hold_up_the_keys_behind_it(&real.env)
        .await
        .expect("scenario");
    assert_eq!(order, vec![0, 1, 2, 3, 4], "the hot key's records in order");
}

/// Key-level concurrency on Apache Kafka: one partition, twenty keys, a handler that waits on
/// I/O — many records of the partition are in the handler at once, each key in order; with
/// `max_in_flight(1)` only one is (so the concurrency is the worker's, not the test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_of_one_partition_run_concurrently_in_order_per_key() {
    use choreo_integration_tests::resilience;
    let real = real().await;
    let concurrent =
        resilience::keys_of_one_partition_run_concurrently_in_order_per_key(&real.env, 64)
            .await
            .expect("scenario");
    assert!(
        concurrent > 1,
        "records of one partition ran concurrently: {concurrent}"
    );
    let serial = resilience::keys_of_one_partition_run_concurrently_in_order_per_key(&real.env, 1)
        .await
        .expect("scenario");
    assert_eq!(serial, 1, "max_in_flight(1): one record at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unfinished_record_holds_the_committed_offset_below_it() {
    scenarios::an_unfinished_record_holds_the_committed_offset_below_it(&real().await.env)
        .await
        .expect("scenario");
}
