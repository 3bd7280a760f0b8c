//! Bus scenarios, written once and run against the in-process mock cluster and the real broker.
//! Each scenario makes its own topics and consumer groups, so scenarios do not see each other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use choreo_bus::dead_letter::header as dlq;
use choreo_bus::subscriber::Context;
use choreo_bus::wire::envelope::header;
use choreo_bus::{
    Bus, BusConfig, EmbeddedBroker, HandlerError, PublishOptions, RetryPolicy, TraceParent,
};
use choreo_schemas::event::{
    Money, OrderPlaced, OrderPlacedV1, PaymentAuthorized, PaymentDeclined,
};
use choreo_schemas::{Event, SchemaRegistry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

/// Where the scenarios run.
#[derive(Debug, Clone)]
pub struct Env {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// The registry every bus of the scenario shares.
    pub registry: Arc<dyn SchemaRegistry>,
    /// The in-process broker, when running on it (topics are created through it).
    pub embedded: Option<Arc<EmbeddedBroker>>,
}

/// The real tier's setting: the binary's shared Apache Kafka (see [`crate::broker`]) and a
/// registry served over the Confluent REST API, for as long as this is kept.
#[derive(Debug)]
pub struct Real {
    /// Where the scenarios run.
    pub env: Env,
    /// The registry's URL.
    pub registry_url: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Real {
    /// Starts (or joins) the shared broker and serves a fresh registry.
    pub async fn start() -> anyhow::Result<Self> {
        let bootstrap = crate::broker::shared_real_broker()
            .await
            .context("a real broker for the real tier (this tier never skips)")?;
        let (addr, server) = choreo_schemas::server::serve(
            Arc::new(choreo_schemas::MemoryRegistry::new()),
            "127.0.0.1:0".parse()?,
        )
        .await
        .context("registry server")?;
        let registry_url = format!("http://{addr}");
        Ok(Self {
            env: Env {
                bootstrap,
                registry: Arc::new(choreo_schemas::ConfluentRegistry::new(&registry_url)),
                embedded: None,
            },
            registry_url,
            _server: server,
        })
    }
}

impl Env {
    /// The in-process tier: librdkafka's mock cluster (one broker) and an in-memory registry.
    pub fn embedded() -> anyhow::Result<Self> {
        let broker = EmbeddedBroker::start(1)?;
        Ok(Self {
            bootstrap: broker.bootstrap_servers().to_owned(),
            registry: Arc::new(choreo_schemas::MemoryRegistry::new()),
            embedded: Some(Arc::new(broker)),
        })
    }
}

/// How long a scenario waits for something that should happen (a liveness bound, not a speed
/// target: on a healthy broker everything happens in a small fraction of it).
pub const PATIENCE: Duration = Duration::from_secs(90);

impl Env {
    /// A unique topic with `partitions` partitions.
    pub async fn topic(&self, name: &str, partitions: i32) -> anyhow::Result<String> {
        let topic = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        match &self.embedded {
            Some(b) => {
                b.create_topic(&topic, partitions)?;
                b.create_topic(&format!("{topic}.dlq"), 1)?;
            }
            None => {
                crate::broker::create_topics(
                    &self.bootstrap,
                    &[(&topic, partitions), (&format!("{topic}.dlq"), 1)],
                )
                .await?;
            }
        }
        Ok(topic)
    }

    /// A bus with source `source`.
    pub fn bus(&self, source: &str) -> anyhow::Result<Bus> {
        Ok(Bus::new(
            BusConfig::new(&self.bootstrap).with_source(source),
            Arc::clone(&self.registry),
        )?)
    }

    /// A subscriber builder tuned for tests (short session timeout, fast retries).
    pub fn subscriber(&self, bus: &Bus, group: &str) -> choreo_bus::subscriber::SubscriberBuilder {
        bus.subscriber(&format!("{group}-{}", uuid::Uuid::new_v4().simple()))
            .client_setting("session.timeout.ms", "6000")
            .client_setting("heartbeat.interval.ms", "500")
            .retry(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
            })
            .drain_timeout(Duration::from_secs(10))
    }

    /// A plain producer for raw (possibly malformed) records.
    pub fn raw_producer(&self) -> anyhow::Result<FutureProducer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()?)
    }

    /// Reads `n` records from `topic` from the beginning with a plain consumer.
    pub async fn read(&self, topic: &str, n: usize) -> anyhow::Result<Vec<OwnedMessage>> {
        let consumer: StreamConsumer = crate::world::reader_config(&self.bootstrap)
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()?;
        consumer.subscribe(&[topic])?;
        let mut out = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => out.push(m.detach()),
                Ok(Err(e)) => tracing::warn!(error = %e, "reader"),
                Err(_) => bail!(
                    "read {} of {n} records from {topic} within {PATIENCE:?}",
                    out.len()
                ),
            }
        }
        Ok(out)
    }
}

/// Polls `cond` until it holds or [`PATIENCE`] runs out.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Euros, in cents.
pub fn eur(cents: i64) -> Money {
    Money {
        amount_minor: cents,
        currency: "EUR".into(),
    }
}

/// A payment of order `order`, id `pay-<seq>`.
pub fn payment(order: &str, seq: i64) -> PaymentAuthorized {
    PaymentAuthorized {
        order_id: order.into(),
        payment_id: format!("pay-{seq}"),
        amount: eur(seq),
    }
}

fn header_str(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Publish → subscribe round trip: the typed event, the key, every envelope header, the
/// Confluent framing, and trace/causation propagation.
pub async fn round_trip_with_every_header(env: &Env) -> anyhow::Result<()> {
    let topic = env.topic("roundtrip", 2).await?;
    let bus = env.bus("/tests/orders")?;
    let seen: Arc<Mutex<Vec<(OrderPlaced, Context)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let sub = env
        .subscriber(&bus, "roundtrip")
        .handle_on(&topic, "capture", move |e: OrderPlaced, ctx| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push((e, ctx));
                Ok(())
            }
        })
        .start()?;
    let event = OrderPlaced {
        order_id: "order-42".into(),
        customer_id: "cust-7".into(),
        items: vec![],
        total: eur(4200),
        shipping_address: "1 Main St".into(),
        channel: "mobile".into(),
    };
    let parent = TraceParent::new_root();
    let delivery = bus
        .publish_with(
            &event,
            PublishOptions {
                causation_id: Some("cause-1".into()),
                traceparent: Some(parent),
                ..PublishOptions::default()
            }
            .with_topic(&topic),
        )
        .await?;
    eventually("the event is handled", || {
        seen.lock().map(|v| !v.is_empty()).unwrap_or(false)
    })
    .await?;
    let (got, ctx) = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?[0].clone();
    ensure!(got == event, "typed event round-trips");
    ensure!(ctx.envelope.id == delivery.id, "ce_id");
    ensure!(ctx.envelope.source == "/tests/orders", "ce_source");
    ensure!(ctx.envelope.event_type == OrderPlaced::TYPE, "ce_type");
    ensure!(ctx.envelope.correlation_id == "order-42", "correlation id");
    ensure!(
        ctx.envelope.causation_id.as_deref() == Some("cause-1"),
        "ce_causationid"
    );
    let tp = ctx.envelope.traceparent.context("traceparent present")?;
    ensure!(
        tp.trace_id == parent.trace_id && tp.span_id != parent.span_id,
        "same trace, child span"
    );
    ensure!(
        ctx.trace.trace_id == parent.trace_id,
        "the handler continues the trace"
    );
    ensure!(
        (ctx.topic.as_str(), ctx.partition, ctx.offset)
            == (topic.as_str(), delivery.partition, delivery.offset)
    );
    sub.shutdown().await?;

    // The raw record, as another language's client sees it.
    let raw = env.read(&topic, 1).await?.remove(0);
    ensure!(raw.key() == Some(&b"order-42"[..]), "key = correlation id");
    let value = raw.payload().context("value")?;
    ensure!(value[0] == 0, "magic byte 0");
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    ensure!(id == ctx.schema_id, "big-endian schema id");
    ensure!(
        env.registry.schema_by_id(id).await.is_ok(),
        "schema id is registered"
    );
    for (k, want) in [
        (header::SPECVERSION, Some("1.0".to_owned())),
        (header::ID, Some(delivery.id.clone())),
        (header::SOURCE, Some("/tests/orders".to_owned())),
        (header::TYPE, Some(OrderPlaced::TYPE.to_owned())),
        (header::SUBJECT, Some("order-42".to_owned())),
        (header::CORRELATION_ID, Some("order-42".to_owned())),
        (header::CAUSATION_ID, Some("cause-1".to_owned())),
        (header::CONTENT_TYPE, Some("application/avro".to_owned())),
    ] {
        ensure!(
            header_str(&raw, k) == want,
            "header {k}: {:?} != {want:?}",
            header_str(&raw, k)
        );
    }
    let time = header_str(&raw, header::TIME).context("ce_time")?;
    ensure!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 ce_time: {time}"
    );
    ensure!(
        header_str(&raw, header::TRACEPARENT)
            .and_then(|t| TraceParent::parse(&t))
            .is_some(),
        "traceparent"
    );
    Ok(())
}

/// Records of one partition are handled in order while partitions are handled concurrently.
pub async fn ordering_per_partition_under_concurrency(env: &Env) -> anyhow::Result<()> {
    let topic = env.topic("ordering", 4).await?;
    let bus = env.bus("/tests/ordering")?;
    const KEYS: usize = 16;
    const PER_KEY: i64 = 25;
    let seen: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let (sink, cur, max) = (
        Arc::clone(&seen),
        Arc::clone(&in_flight),
        Arc::clone(&max_in_flight),
    );
    let sub = env
        .subscriber(&bus, "ordering")
        .handle_on(&topic, "ordered", move |e: PaymentAuthorized, _ctx| {
            let (sink, cur, max) = (Arc::clone(&sink), Arc::clone(&cur), Arc::clone(&max));
            async move {
                let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(
                    u64::try_from(e.amount.amount_minor % 3).unwrap_or(0),
                ))
                .await;
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .entry(e.order_id)
                    .or_default()
                    .push(e.amount.amount_minor);
                cur.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()?;
    let mut sends = Vec::new();
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            let (bus, topic) = (bus.clone(), topic.clone());
            sends.push(async move {
                bus.publish_with(
                    &payment(&format!("order-{k}"), seq),
                    PublishOptions::default().with_topic(topic),
                )
                .await
            });
            // Per key, publish strictly in sequence: wait for this round before the next.
        }
        for r in futures::future::join_all(sends.drain(..)).await {
            r?;
        }
    }
    let total = KEYS * usize::try_from(PER_KEY)?;
    eventually("every event is handled", || {
        seen.lock()
            .map(|m| m.values().map(Vec::len).sum::<usize>() >= total)
            .unwrap_or(false)
    })
    .await?;
    sub.shutdown().await?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    for (key, seqs) in seen.iter() {
        let want: Vec<i64> = (0..PER_KEY).collect();
        ensure!(*seqs == want, "{key} handled in publish order: {seqs:?}");
    }
    ensure!(
        max_in_flight.load(Ordering::SeqCst) > 1,
        "partitions were handled concurrently"
    );
    Ok(())
}

/// A retryable failure is retried with backoff and then succeeds; nothing is dead-lettered.
pub async fn retryable_failure_then_success(env: &Env) -> anyhow::Result<()> {
    let topic = env.topic("retry", 1).await?;
    let bus = env.bus("/tests/retry")?;
    let attempts = Arc::new(AtomicU32::new(0));
    let succeeded = Arc::new(AtomicU32::new(0));
    let (a, s) = (Arc::clone(&attempts), Arc::clone(&succeeded));
    let sub = env
        .subscriber(&bus, "retry")
        .handle_on(&topic, "flaky", move |_e: PaymentAuthorized, ctx| {
            let (a, s) = (Arc::clone(&a), Arc::clone(&s));
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt < 3 {
                    return Err(HandlerError::retryable(format!(
                        "downstream timeout (attempt {})",
                        ctx.attempt
                    )));
                }
                s.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()?;
    bus.publish_with(
        &payment("order-r", 1),
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    // A second record proves the partition moved on after the retried one.
    bus.publish_with(
        &payment("order-r", 2),
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    eventually("both records handled", || {
        succeeded.load(Ordering::SeqCst) == 2
    })
    .await?;
    sub.shutdown().await?;
    ensure!(
        attempts.load(Ordering::SeqCst) == 6,
        "two records × three attempts, got {}",
        attempts.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Every undecodable kind, a permanent handler error and an exhausted retry land in the
/// dead-letter topic with their reasons, while later records of the same partition are handled.
pub async fn poison_goes_to_the_dead_letter_topic(env: &Env) -> anyhow::Result<()> {
    let topic = env.topic("poison", 1).await?;
    let bus = env.bus("/tests/poison")?;
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&handled);
    let sink2 = Arc::clone(&handled);
    let sub = env
        .subscriber(&bus, "poison")
        .handle_on(&topic, "payments", move |e: PaymentAuthorized, _ctx| {
            let sink = Arc::clone(&sink);
            async move {
                match e.payment_id.as_str() {
                    "permanent" => Err(HandlerError::permanent("card network says no")),
                    "flaky-forever" => Err(HandlerError::retryable("still down")),
                    _ => {
                        sink.lock()
                            .map_err(|_| HandlerError::permanent("lock"))?
                            .push(e.payment_id);
                        Ok(())
                    }
                }
            }
        })
        .handle_on(&topic, "declines", move |e: PaymentDeclined, _ctx| {
            let sink = Arc::clone(&sink2);
            async move {
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push(e.reason);
                Ok(())
            }
        })
        .start()?;
    // A good record first, so the schemas are registered and the raw bodies below are real.
    bus.publish_with(
        &payment("o", 0),
        PublishOptions::default()
            .with_topic(&topic)
            .with_id("good-0"),
    )
    .await?;
    let good = env.read(&topic, 1).await?.remove(0);
    let good_value = good.payload().context("value")?.to_vec();
    let id = u32::from_be_bytes([good_value[1], good_value[2], good_value[3], good_value[4]]);
    // An event type the subscriber has no handler for, framed correctly.
    let unknown_type = bus
        .codec()
        .encode(
            &topic,
            &OrderPlacedV1 {
                order_id: "o".into(),
                customer_id: "c".into(),
                items: vec![],
                total: eur(1),
                shipping_address: "a".into(),
            },
        )
        .await?;
    let raw = env.raw_producer()?;
    // A transaction-sweep record (the coordinator's, written only to be aborted; a broker that
    // shows aborted records shows it): skipped, not dead-lettered. Sent before the poison, its
    // dead letter would be the first one read below.
    let sweep = OwnedHeaders::new().insert(Header {
        key: header::TRANSACTION_SWEEP,
        value: Some(""),
    });
    raw.send(
        FutureRecord::<str, [u8]>::to(&topic)
            .key("choreo.transaction-sweep")
            .headers(sweep),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)?;
    let mut wrong_magic = good_value.clone();
    wrong_magic[0] = 7;
    let mut unknown_id = good_value.clone();
    unknown_id[1..5].copy_from_slice(&(id + 10_000).to_be_bytes());
    let truncated = good_value[..good_value.len() - 4].to_vec();
    // The first field (a string) claiming 2^40 bytes: refused before anything is allocated.
    let mut absurd = good_value[..5].to_vec();
    let mut n: u64 = (1u64 << 40) << 1; // zig-zag
    while n >= 0x80 {
        absurd.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    absurd.push(n as u8);
    absurd.extend_from_slice(b"order");
    // Bytes from no producer at all.
    let random: Vec<u8> = (0u32..96)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    let cases = [
        PoisonCase::new("wrong_magic_byte", "wrong_magic_byte", wrong_magic),
        PoisonCase::new("unknown_schema_id", "unknown_schema_id", unknown_id),
        PoisonCase::new("truncated", "truncated", truncated),
        PoisonCase::new("missing_key", "missing_key", good_value.clone()).key(None),
        PoisonCase::new("unknown_event_type", "unknown_event_type", unknown_type),
        PoisonCase::new("invalid_key", "invalid_key", good_value.clone())
            .key(Some(vec![0xff, 0xfe, b'o'])),
        PoisonCase::new("invalid_header", "invalid_header", good_value.clone())
            .header(header::ID, vec![0xc3, 0x28, b'1']),
        PoisonCase::new("null_value", "truncated", Vec::new()).null(),
        PoisonCase::new("absurd_length", "malformed_avro", absurd),
        PoisonCase::new("random_bytes", "wrong_magic_byte", random),
    ];
    for c in &cases {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "case",
            value: Some(c.case),
        });
        for (k, v) in &c.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut rec = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
        if let Some(v) = &c.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(k) = &c.key {
            rec = rec.key(k.as_slice());
        }
        raw.send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    bus.publish_with(
        &payment("o", 1).with_payment_id("permanent"),
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    bus.publish_with(
        &payment("o", 2).with_payment_id("flaky-forever"),
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    bus.publish_with(
        &PaymentDeclined {
            order_id: "o".into(),
            reason: "after-the-poison".into(),
        },
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    eventually("the record after the poison is handled", || {
        handled
            .lock()
            .map(|v| v.iter().any(|x| x == "after-the-poison"))
            .unwrap_or(false)
    })
    .await?;
    sub.shutdown().await?;
    ensure!(
        *handled.lock().map_err(|_| anyhow::anyhow!("lock"))?
            == vec!["pay-0".to_owned(), "after-the-poison".to_owned()]
    );

    let expected = cases.len() + 2;
    let dead = env.read(&format!("{topic}.dlq"), expected).await?;
    ensure!(
        !dead
            .iter()
            .any(|m| m.key() == Some(b"choreo.transaction-sweep".as_slice())),
        "a transaction-sweep record is skipped, not dead-lettered"
    );
    let mut by_kind: BTreeMap<String, &OwnedMessage> = BTreeMap::new();
    let mut by_case: BTreeMap<String, &OwnedMessage> = BTreeMap::new();
    for m in &dead {
        by_kind.insert(header_str(m, dlq::KIND).context("kind header")?, m);
        if let Some(c) = header_str(m, "case") {
            by_case.insert(c, m);
        }
    }
    for c in &cases {
        let m = by_case
            .get(c.case)
            .with_context(|| format!("{} is dead-lettered; got {:?}", c.case, by_case.keys()))?;
        let case = c.case;
        ensure!(
            header_str(m, dlq::KIND).as_deref() == Some(c.kind),
            "{case}: kind {:?}, expected {}",
            header_str(m, dlq::KIND),
            c.kind
        );
        ensure!(
            m.payload().unwrap_or_default() == c.value.as_deref().unwrap_or_default(),
            "{case}: original value kept"
        );
        ensure!(m.key() == c.key.as_deref(), "{case}: original key kept");
        for (k, v) in &c.headers {
            let kept = m
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == *k).and_then(|x| x.value));
            ensure!(
                kept == Some(v.as_slice()),
                "{case}: original header {k} kept"
            );
        }
        ensure!(
            header_str(m, dlq::TOPIC).as_deref() == Some(topic.as_str()),
            "{case}: source topic"
        );
        ensure!(
            header_str(m, dlq::PARTITION).as_deref() == Some("0"),
            "{case}: source partition"
        );
        ensure!(
            header_str(m, dlq::OFFSET)
                .and_then(|o| o.parse::<i64>().ok())
                .is_some(),
            "{case}: source offset"
        );
        ensure!(
            header_str(m, dlq::TIMESTAMP).is_some_and(|t| t.parse::<i64>().is_ok()),
            "{case}: source timestamp"
        );
        ensure!(
            header_str(m, dlq::REASON).is_some_and(|r| !r.is_empty()),
            "{case}: reason"
        );
        ensure!(header_str(m, dlq::TIME).is_some(), "{case}: time");
    }
    let offsets: HashSet<String> = dead
        .iter()
        .filter_map(|m| header_str(m, dlq::OFFSET))
        .collect();
    ensure!(
        offsets.len() == expected,
        "each dead letter points at its own source offset"
    );
    let permanent = by_kind
        .get("handler_permanent")
        .context("permanent error dead-lettered")?;
    ensure!(header_str(permanent, dlq::HANDLER).as_deref() == Some("payments"));
    ensure!(header_str(permanent, dlq::ATTEMPTS).as_deref() == Some("1"));
    ensure!(header_str(permanent, dlq::REASON).is_some_and(|r| r.contains("card network says no")));
    let exhausted = by_kind
        .get("retries_exhausted")
        .context("exhausted retry dead-lettered")?;
    ensure!(header_str(exhausted, dlq::ATTEMPTS).as_deref() == Some("3"));
    ensure!(header_str(exhausted, dlq::HANDLER).as_deref() == Some("payments"));
    Ok(())
}

/// One bad record of the dead-letter scenario: what it is (`case`, also a header on it), the
/// dead-letter kind it must get, and its key, value and extra headers.
struct PoisonCase {
    case: &'static str,
    kind: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl PoisonCase {
    fn new(case: &'static str, kind: &'static str, value: Vec<u8>) -> Self {
        Self {
            case,
            kind,
            key: Some(b"o".to_vec()),
            value: Some(value),
            headers: Vec::new(),
        }
    }

    fn key(mut self, key: Option<Vec<u8>>) -> Self {
        self.key = key;
        self
    }

    fn null(mut self) -> Self {
        self.value = None;
        self
    }

    fn header(mut self, name: &'static str, value: Vec<u8>) -> Self {
        self.headers.push((name, value));
        self
    }
}

trait WithPaymentId {
    fn with_payment_id(self, id: &str) -> Self;
}

impl WithPaymentId for PaymentAuthorized {
    fn with_payment_id(mut self, id: &str) -> Self {
        self.payment_id = id.into();
        self
    }
}

/// A record published twice with the same `ce_id` is handled once.
pub async fn duplicate_event_id_handled_once(env: &Env) -> anyhow::Result<()> {
    let topic = env.topic("dedup", 1).await?;
    let bus = env.bus("/tests/dedup")?;
    let count: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&count);
    let sub = env
        .subscriber(&bus, "dedup")
        .handle_on(&topic, "once", move |e: PaymentAuthorized, _ctx| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push(e.payment_id);
                Ok(())
            }
        })
        .start()?;
    let opts = || PublishOptions::default().with_topic(&topic);
    bus.publish_with(&payment("o", 1), opts().with_id("same-id"))
        .await?;
    bus.publish_with(&payment("o", 1), opts().with_id("same-id"))
        .await?;
    bus.publish_with(&payment("o", 2), opts().with_id("other-id"))
        .await?;
    eventually("the last record is handled", || {
        count
            .lock()
            .map(|v| v.contains(&"pay-2".to_owned()))
            .unwrap_or(false)
    })
    .await?;
    sub.shutdown().await?;
    ensure!(
        *count.lock().map_err(|_| anyhow::anyhow!("lock"))?
            == vec!["pay-1".to_owned(), "pay-2".to_owned()],
        "the duplicate was dropped"
    );
    Ok(())
}

/// A v1 event is read by a v2 reader (the new field takes its default).
pub async fn v1_event_read_by_v2_reader(env: &Env) -> anyhow::Result<()> {
    let topic = env.topic("evolution", 1).await?;
    let old_service = env.bus("/tests/old-orders")?;
    let got: Arc<Mutex<Vec<OrderPlaced>>> = Arc::default();
    let sink = Arc::clone(&got);
    let new_service = env.bus("/tests/new-orders")?;
    let sub = env
        .subscriber(&new_service, "evolution")
        .handle_on(&topic, "v2-reader", move |e: OrderPlaced, _ctx| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| HandlerError::permanent("lock"))?
                    .push(e);
                Ok(())
            }
        })
        .start()?;
    old_service
        .publish_with(
            &OrderPlacedV1 {
                order_id: "o-v1".into(),
                customer_id: "c".into(),
                items: vec![],
                total: eur(5),
                shipping_address: "a".into(),
            },
            PublishOptions::default().with_topic(&topic),
        )
        .await?;
    eventually("the v1 event is handled by the v2 reader", || {
        got.lock().map(|v| !v.is_empty()).unwrap_or(false)
    })
    .await?;
    sub.shutdown().await?;
    let e = got.lock().map_err(|_| anyhow::anyhow!("lock"))?[0].clone();
    ensure!(
        e.order_id == "o-v1" && e.channel == "web",
        "v1 read as v2 with the default: {e:?}"
    );
    Ok(())
}

/// The offset committed for a partition is never past a record still being handled. Two
/// records of one partition, different keys, run at once: the first is held in its handler, the
/// second finishes. After two auto-commit intervals the group's committed offset is still at
/// most the held record's (a crash now replays it); once it is released, the commit moves past
/// both. Storing each finished record's own offset instead fails the first check.
pub async fn an_unfinished_record_holds_the_committed_offset_below_it(
    env: &Env,
) -> anyhow::Result<()> {
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::topic_partition_list::Offset;

    let topic = env.topic("held", 1).await?;
    let bus = env.bus("/tests/held")?;
    let group = format!("held-{}", uuid::Uuid::new_v4().simple());
    let release = Arc::new(tokio::sync::Notify::new());
    let fast_done = Arc::new(AtomicU32::new(0));
    let (r, f) = (Arc::clone(&release), Arc::clone(&fast_done));
    let sub = bus
        .subscriber(&group)
        .client_setting("session.timeout.ms", "6000")
        .max_in_flight(2)
        .handle_on(&topic, "held", move |e: PaymentAuthorized, _ctx| {
            let (r, f) = (Arc::clone(&r), Arc::clone(&f));
            async move {
                if e.order_id == "slow" {
                    r.notified().await;
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        })
        .start()?;
    let slow = bus
        .publish_with(
            &payment("slow", 1),
            PublishOptions::default().with_topic(&topic),
        )
        .await?;
    bus.publish_with(
        &payment("fast", 2),
        PublishOptions::default().with_topic(&topic),
    )
    .await?;
    eventually("the second record handled", || {
        fast_done.load(Ordering::SeqCst) == 1
    })
    .await?;
    let committed = || -> anyhow::Result<Option<i64>> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.bootstrap)
            .set("group.id", &group)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(match got.find_partition(&topic, 0).map(|p| p.offset()) {
            Some(Offset::Offset(n)) => Some(n),
            _ => None,
        })
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let held = committed()?;
    ensure!(
        held.is_none_or(|n| n <= slow.offset),
        "committed {held:?} past the record still in its handler (offset {})",
        slow.offset
    );
    release.notify_one();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if committed()?.is_some_and(|n| n > slow.offset + 1) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the commit never moved past both records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sub.shutdown().await?;
    Ok(())
}
