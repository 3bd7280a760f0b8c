//! Load generator: publish → handle throughput through the bus, against plain rdkafka on the same
//! broker in the same run.
//!
//! ```text
//! cargo run --release -p choreo-bus --example throughput -- [--bootstrap-servers HOST:PORT]
//!     [--events N] [--partitions P] [--window W] [--rounds R]
//! ```
//!
//! Without `--bootstrap-servers` it starts an in-process [`EmbeddedBroker`] (librdkafka's mock
//! cluster), which shares the CPU with the clients: the absolute figures are then a property of
//! this machine, the ratio is the interesting part.
//!
//! Each phase uses a fresh topic and consumer group, publishes a warm-up record and waits for it
//! to be consumed (so the group has its assignment), then starts the clock:
//!
//! - baseline: a plain idempotent `FutureProducer` (acks=all, linger.ms=5, as the bus's) sends N
//!   pre-serialized payloads of the bus's value size with a key (and, with
//!   `--baseline-headers`, the CloudEvents headers the bus writes, made before the clock
//!   starts); a plain `StreamConsumer` (read_committed, manual offset store, as the bus's)
//!   counts them.
//! - bus: `Bus::publish_with` N `PaymentAuthorized` events; a subscriber handler counts them
//!   (Avro decode against a `MemoryRegistry`, CloudEvents envelope, dedup, per-partition workers).
//!
//! With `--handler-ms N` the handler waits N ms per record (a downstream call): the baseline is
//! then the bus handling one record of a partition at a time (`max_in_flight(1)`, what a
//! partition-ordered consumer does: partitions ÷ latency), against key-level concurrency
//! (`--max-in-flight`, default 64), with `--events-per-key` events per key (order checked per
//! key).
//!
//! Both sides run with mimalloc, the allocator the `choreo` binary uses, built as the workspace
//! builds it, with `override`: librdkafka's `malloc` is mimalloc's too (with glibc's, the bus
//! side ran about a third slower on the embedded broker, waiting on the allocator's locks).
//! Both record each receipt the same way (`Receipts`).
//!
//! Both publish with the same number of sends in flight (`--window`). The clock runs from the
//! first send to the last receipt. Publish → receipt latency is measured from a send timestamp
//! carried in the record (the first 8 payload bytes in the baseline, `amount.amount_minor` in
//! the bus's events).

use std::future;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use choreo_bus::wire::codec::encode_body;
use choreo_bus::wire::envelope::Envelope;
use choreo_bus::wire::framing::frame;
use choreo_bus::{Bus, BusConfig, EmbeddedBroker, Event, HandlerError, PublishOptions};
use choreo_schemas::MemoryRegistry;
use choreo_schemas::event::{Money, PaymentAuthorized};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};

/// The allocator `choreo` runs with, for both sides: glibc's, with librdkafka's threads and the
/// runtime's allocating at once, waits on its arena locks (BENCHMARKS.md, "Bus").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publish → handle throughput of the choreo bus against plain rdkafka.
#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers; default: start an in-process embedded broker.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Events per phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Partitions of each phase's topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Sends in flight at once, in both phases.
    #[arg(long, default_value_t = 1_000)]
    window: usize,
    /// Rounds of (baseline, bus); with more than one, the ratio is of the medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Replication factor of the topics on an external cluster (-1: the broker's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    replication_factor: i32,
    /// `fetch.wait.max.ms` of both consumers. Default: 10 with the embedded broker, whose mock
    /// broker holds an empty fetch for the whole wait even when records arrive meanwhile (so
    /// librdkafka's 500 would stall the consumers for up to 500 ms each time they catch up);
    /// librdkafka's default with an external broker.
    #[arg(long)]
    fetch_wait_max_ms: Option<u32>,
    /// Gives up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Milliseconds the handler waits per record (an I/O-bound handler); 0: none.
    #[arg(long, default_value_t = 0)]
    handler_ms: u64,
    /// Records of one partition in flight at once in the (concurrent) bus phase.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Consecutive events sharing one key (correlation id).
    #[arg(long, default_value_t = 1)]
    events_per_key: usize,
    /// The baseline's records carry the CloudEvents headers the bus writes (made before the
    /// clock starts): the plain client then sends the bus's records byte for byte, and the
    /// ratio is the bus's own work, without the envelope's size on the wire.
    #[arg(long)]
    baseline_headers: bool,
    /// Records of one partition the bus subscriber holds (its `queue_depth`); default: the
    /// bus's own default.
    #[arg(long)]
    queue_depth: Option<usize>,
}

/// Where the topics are created.
enum Cluster {
    Embedded(EmbeddedBroker),
    External {
        admin: AdminClient<DefaultClientContext>,
        replication: i32,
    },
}

impl Cluster {
    async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        match self {
            Self::Embedded(broker) => broker
                .create_topic(topic, partitions)
                .with_context(|| format!("creating topic {topic} on the embedded broker")),
            Self::External { admin, replication } => {
                let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(*replication));
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                let results = admin
                    .create_topics([&new], &opts)
                    .await
                    .with_context(|| format!("creating topic {topic}"))?;
                for r in results {
                    r.map_err(|(t, code)| anyhow!("creating topic {t}: {code}"))?;
                }
                Ok(())
            }
        }
    }
}

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    /// First send to last receipt.
    elapsed: Duration,
    /// First send to last acknowledgement.
    acked: Duration,
    /// Publish → receipt, nanoseconds, sorted.
    latencies_ns: Vec<u64>,
}

impl Phase {
    fn rate(&self, events: usize) -> f64 {
        events as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies_ns.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies_ns[i] as f64 / 1e6
    }

    fn report(&self, label: &str, events: usize) {
        println!(
            "{label}: {events} events in {:.3} s = {:.0} events/s \
             (all acked after {:.3} s; publish→receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
            self.elapsed.as_secs_f64(),
            self.rate(events),
            self.acked.as_secs_f64(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(1.0),
        );
    }
}

/// Nanoseconds since `t0`.
fn nanos_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn payment(i: usize, amount_minor: i64) -> PaymentAuthorized {
    payment_keyed(i, i, amount_minor)
}

fn payment_keyed(i: usize, key: usize, amount_minor: i64) -> PaymentAuthorized {
    PaymentAuthorized {
        order_id: format!("order-{key:08}"),
        payment_id: format!("pay-{i:08}"),
        amount: Money {
            amount_minor,
            currency: "EUR".into(),
        },
    }
}

/// A send-timestamp-sized amount (a few seconds in ns) so both phases carry the same value size.
const TYPICAL_NS: i64 = 5_000_000_000;

/// Where a phase's consumer records each receipt: the latency is pushed onto a shared vector,
/// and the phase's waiter is woken only once the awaited count is reached.
///
/// A channel to a collector task instead woke a runtime thread for nearly every record: the bus's
/// handlers run on both threads, and those wake-ups were over a quarter of its handler's samples —
/// the instrument's cost, not the bus's. Both phases record through this.
#[derive(Default)]
struct Receipts {
    latencies: std::sync::Mutex<Vec<u64>>,
    awaited: std::sync::atomic::AtomicUsize,
    reached: tokio::sync::Notify,
}

impl Receipts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one receipt, `ns` after its send.
    fn record(&self, ns: u64) {
        let mut latencies = self.lock();
        latencies.push(ns);
        if latencies.len() == self.awaited.load(std::sync::atomic::Ordering::Acquire) {
            self.reached.notify_one();
        }
    }

    /// Waits until `n` receipts are recorded (counting from the last [`Receipts::take`]) and
    /// takes them, or fails at `deadline`.
    async fn take(
        &self,
        n: usize,
        deadline: tokio::time::Instant,
        what: &str,
    ) -> anyhow::Result<Vec<u64>> {
        self.awaited.store(n, std::sync::atomic::Ordering::Release);
        loop {
            let reached = self.reached.notified();
            {
                let mut latencies = self.lock();
                if latencies.len() >= n {
                    return Ok(std::mem::take(&mut *latencies));
                }
            }
            if tokio::time::timeout_at(deadline, reached).await.is_err() {
                bail!(
                    "{what}: timed out after {} of {n} records",
                    self.lock().len()
                );
            }
        }
    }
}

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    c
}

/// The consumer settings both phases share (the bus sets the same on its consumers).
fn consumer_config(bootstrap: &str, group: &str, fetch_wait_max_ms: Option<u32>) -> ClientConfig {
    let mut c = ClientConfig::new();
    if let Some(ms) = fetch_wait_max_ms {
        c.set("fetch.wait.max.ms", ms.to_string());
    }
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    c
}

async fn baseline(
    args: &Args,
    cluster: &Cluster,
    bootstrap: &str,
    run: &str,
) -> anyhow::Result<Phase> {
    let topic = format!("throughput-baseline-{run}");
    cluster.create_topic(&topic, args.partitions).await?;
    let producer: FutureProducer = producer_config(bootstrap)
        .create()
        .context("creating the baseline producer")?;
    let consumer: StreamConsumer =
        consumer_config(bootstrap, &format!("{topic}-group"), args.fetch_wait_max_ms)
            .create()
            .context("creating the baseline consumer")?;
    consumer
        .subscribe(&[&topic])
        .context("subscribing the baseline consumer")?;

    // The payloads, serialized before the clock starts: the bus's value, byte for byte in size.
    // With `--baseline-headers`, each with the CloudEvents headers the bus writes (made here too).
    let payloads: Vec<(String, Vec<u8>, Option<OwnedHeaders>)> = (0..args.events)
        .map(|i| {
            let e = payment(i, TYPICAL_NS);
            let body = encode_body(PaymentAuthorized::schema(), &e).map_err(|e| anyhow!(e))?;
            let headers = args.baseline_headers.then(|| {
                Envelope::new(
                    uuid::Uuid::new_v4().to_string(),
                    "/throughput",
                    PaymentAuthorized::TYPE,
                    e.order_id.clone(),
                    None,
                    None,
                )
                .to_headers()
            });
            Ok((e.order_id, frame(1, &body), headers))
        })
        .collect::<anyhow::Result<_>>()?;

    let t0 = Instant::now();
    let receipts = std::sync::Arc::new(Receipts::default());
    let recorder = std::sync::Arc::clone(&receipts);
    let consuming = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    let now = nanos_since(t0);
                    let sent = m
                        .payload()
                        .and_then(|p| p.first_chunk::<8>())
                        .map_or(now, |b| u64::from_le_bytes(*b));
                    if let Err(e) = consumer.store_offset_from_message(&m) {
                        tracing::warn!(error = %e, "baseline: offset not stored");
                    }
                    recorder.record(now.saturating_sub(sent));
                }
                Err(e) => tracing::warn!(error = %e, "baseline: consumer error"),
            }
        }
    });
    let timeout = Duration::from_secs(args.timeout_secs);

    // Warm-up: one record through, so the group has its assignment before the clock starts.
    let mut warm = vec![0u8; payloads.first().map_or(8, |(_, p, _)| p.len())];
    if let Some(head) = warm.first_chunk_mut::<8>() {
        *head = nanos_since(t0).to_le_bytes();
    }
    producer
        .send(
            FutureRecord::to(&topic).key("warm-up").payload(&warm),
            Timeout::After(timeout),
        )
        .await
        .map_err(|(e, _)| anyhow!("baseline warm-up: {e}"))?;
    receipts
        .take(1, tokio::time::Instant::now() + timeout, "baseline warm-up")
        .await?;

    let start = Instant::now();
    let window = args.window;
    let producing = tokio::spawn(async move {
        stream::iter(payloads)
            .map(|(key, mut payload, headers)| {
                let (producer, topic) = (producer.clone(), topic.clone());
                async move {
                    if let Some(head) = payload.first_chunk_mut::<8>() {
                        *head = nanos_since(t0).to_le_bytes();
                    }
                    let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
                    if let Some(h) = headers {
                        record = record.headers(h);
                    }
                    producer
                        .send(record, Timeout::After(Duration::from_secs(30)))
                        .await
                        .map(|_| ())
                        .map_err(|(e, _)| anyhow!("baseline send: {e}"))
                }
            })
            .buffer_unordered(window)
            .try_for_each(|()| future::ready(Ok(())))
            .await?;
        anyhow::Ok(start.elapsed())
    });
    let received = receipts.take(
        args.events,
        tokio::time::Instant::now() + timeout,
        "baseline",
    );
    let mut latencies_ns = received.await?;
    let elapsed = start.elapsed();
    let acked = producing.await.context("the baseline producer task")??;
    consuming.abort();
    let _ = consuming.await;
    latencies_ns.sort_unstable();
    Ok(Phase {
        elapsed,
        acked,
        latencies_ns,
    })
}

async fn through_bus(
    args: &Args,
    cluster: &Cluster,
    bootstrap: &str,
    run: &str,
    max_in_flight: usize,
) -> anyhow::Result<Phase> {
    let topic = format!("throughput-bus-{run}-{max_in_flight}");
    cluster.create_topic(&topic, args.partitions).await?;
    let registry = std::sync::Arc::new(MemoryRegistry::new());
    let bus = Bus::new(
        BusConfig::new(bootstrap).with_source("/throughput"),
        registry,
    )?;

    let t0 = Instant::now();
    let receipts = std::sync::Arc::new(Receipts::default());
    let recorder = std::sync::Arc::clone(&receipts);
    let mut subscriber = bus
        .subscriber(&format!("{topic}-group"))
        .max_in_flight(max_in_flight);
    if let Some(depth) = args.queue_depth {
        subscriber = subscriber.queue_depth(depth);
    }
    let delay = Duration::from_millis(args.handler_ms);
    let per_key = args.events_per_key.max(1);
    // Per key, the payment ids seen, in order (checked after the phase).
    let order: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>> =
        std::sync::Arc::default();
    let seen = std::sync::Arc::clone(&order);
    if let Some(ms) = args.fetch_wait_max_ms {
        subscriber = subscriber.client_setting("fetch.wait.max.ms", &ms.to_string());
    }
    let subscription = subscriber
        .handle_on(&topic, "count", move |e: PaymentAuthorized, _ctx| {
            let recorder = std::sync::Arc::clone(&recorder);
            let seen = std::sync::Arc::clone(&seen);
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                // Order per key is checked where a key has more than one event (the plain
                // consumer does no such bookkeeping, so it is not charged to the bus otherwise).
                if per_key > 1
                    && let Ok(mut m) = seen.lock()
                {
                    m.entry(e.order_id.clone())
                        .or_default()
                        .push(e.payment_id.clone());
                }
                let now = nanos_since(t0);
                let sent = u64::try_from(e.amount.amount_minor).unwrap_or(now);
                recorder.record(now.saturating_sub(sent));
                Ok::<(), HandlerError>(())
            }
        })
        .start()?;
    let timeout = Duration::from_secs(args.timeout_secs);

    // Warm-up: one event through (registers the schema, joins the group) before the clock starts.
    let warm = payment(99_999_999, i64::try_from(nanos_since(t0))?);
    bus.publish_with(&warm, PublishOptions::default().with_topic(topic.clone()))
        .await
        .context("bus warm-up")?;
    receipts
        .take(1, tokio::time::Instant::now() + timeout, "bus warm-up")
        .await?;

    let start = Instant::now();
    let (window, events) = (args.window, args.events);
    let publishing = {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            stream::iter(0..events)
                .map(|i| {
                    let (bus, topic) = (bus.clone(), topic.clone());
                    async move {
                        let sent = i64::try_from(nanos_since(t0)).unwrap_or(i64::MAX);
                        let event = payment_keyed(i, i / per_key, sent);
                        bus.publish_with(&event, PublishOptions::default().with_topic(topic))
                            .await
                            .map(|_| ())
                            .context("bus publish")
                    }
                })
                .buffer_unordered(window)
                .try_for_each(|()| future::ready(Ok(())))
                .await?;
            anyhow::Ok(start.elapsed())
        })
    };
    let received = receipts.take(args.events, tokio::time::Instant::now() + timeout, "bus");
    let mut latencies_ns = received.await?;
    let elapsed = start.elapsed();
    let acked = publishing.await.context("the bus publisher task")??;
    subscription
        .shutdown()
        .await
        .context("shutting the subscriber down")?;
    // Order per key: payment ids carry their publish index, published in order per key.
    let order = order.lock().map_err(|_| anyhow!("lock"))?;
    for (key, ids) in order.iter() {
        let mut sorted = ids.clone();
        sorted.sort();
        if *ids != sorted {
            bail!("{key} handled out of order: {ids:?}");
        }
    }
    latencies_ns.sort_unstable();
    Ok(Phase {
        elapsed,
        acked,
        latencies_ns,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut args = Args::parse();
    if args.events == 0 || args.partitions < 1 || args.window == 0 || args.rounds == 0 {
        bail!("--events, --partitions, --window and --rounds must be positive");
    }

    let (cluster, bootstrap, where_) = match &args.bootstrap_servers {
        Some(b) => {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", b)
                .create()
                .context("creating the admin client")?;
            let cluster = Cluster::External {
                admin,
                replication: args.replication_factor,
            };
            (cluster, b.clone(), format!("broker {b}"))
        }
        None => {
            let broker = EmbeddedBroker::start(1)?;
            let b = broker.bootstrap_servers().to_owned();
            let where_ = format!("embedded broker at {b} (librdkafka mock cluster, in process)");
            args.fetch_wait_max_ms = args.fetch_wait_max_ms.or(Some(10));
            (Cluster::Embedded(broker), b, where_)
        }
    };
    let size = frame(
        1,
        &encode_body(PaymentAuthorized::schema(), &payment(0, TYPICAL_NS))
            .map_err(|e| anyhow!(e))?,
    )
    .len();
    println!(
        "{where_}; {} events per phase, {} partitions, {} sends in flight, {size}-byte values, \
         fetch.wait.max.ms {}",
        args.events,
        args.partitions,
        args.window,
        args.fetch_wait_max_ms
            .map_or_else(|| "default".into(), |ms| ms.to_string()),
    );

    let run = uuid::Uuid::new_v4().simple().to_string();
    let (mut base_rates, mut bus_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round}:");
        }
        let id = format!("{run}-{round}");
        let (b, c) = if args.handler_ms > 0 {
            let b = through_bus(&args, &cluster, &bootstrap, &id, 1).await?;
            b.report(
                &format!(
                    "baseline (choreo bus, one record of a partition at a time, handler {} ms)",
                    args.handler_ms
                ),
                args.events,
            );
            let c = through_bus(&args, &cluster, &bootstrap, &id, args.max_in_flight).await?;
            c.report(
                &format!(
                    "choreo bus (key-level concurrency, max_in_flight {}, handler {} ms, {} events per key, order per key checked)",
                    args.max_in_flight, args.handler_ms, args.events_per_key
                ),
                args.events,
            );
            (b, c)
        } else {
            let b = baseline(&args, &cluster, &bootstrap, &id).await?;
            b.report(
                if args.baseline_headers {
                    "baseline (plain rdkafka, with the bus's CloudEvents headers)"
                } else {
                    "baseline (plain rdkafka)"
                },
                args.events,
            );
            let c = through_bus(&args, &cluster, &bootstrap, &id, args.max_in_flight).await?;
            c.report(
                "choreo bus (Avro + envelope + dedup + key-level concurrency)",
                args.events,
            );
            (b, c)
        };
        let (br, cr) = (b.rate(args.events), c.rate(args.events));
        if args.rounds > 1 {
            println!("ratio bus/baseline (round {round}): {:.2}", cr / br);
        }
        base_rates.push(br);
        bus_rates.push(cr);
    }
    let (br, cr) = (median(base_rates), median(bus_rates));
    if args.rounds > 1 {
        println!(
            "median of {} rounds: baseline {br:.0} events/s, choreo bus {cr:.0} events/s",
            args.rounds
        );
    }
    println!("ratio bus/baseline: {:.2}", cr / br);
    Ok(())
}
