//! The saga load generator (`choreo loadgen`).
//!
//! Drives N order sagas through a broker and measures them against a baseline taken in the same
//! run, on the same broker:
//!
//! 1. **Coordinator phase.** A coordinator runs in-process with the reference order saga. For each
//!    saga, `OrderPlaced`, then `PaymentAuthorized`, `InventoryReserved` and `ShipmentScheduled`
//!    (concurrently) are published through a [`Bus`], keyed by the order id; up to
//!    `--concurrency` sagas are in flight. A read_committed consumer on `orders` waits for each
//!    saga's `OrderConfirmed` (the coordinator's committed decision).
//! 2. **Baseline phase.** Fresh input topics (one per saga input topic) and an output topic, with
//!    the same partition count, receive the same number of records with the same encoded
//!    values, keys and publishing pattern. A plain consume → produce pipe with no saga logic
//!    copies every input to the output: one Kafka transaction per batch (up to 500 records or
//!    10 ms linger, like the coordinator) with `send_offsets_to_transaction`; with
//!    `effectively_once`, an idempotent producer and offsets committed after the deliveries.
//!    A read_committed consumer on the output waits for each key's four outputs.
//!
//! The baseline awaits its records' deliveries before `commit_transaction`. rdkafka's
//! `commit_transaction` first calls its own `flush`, which, while records are in flight, polls
//! the producer's event queue for up to 100 ms — but a `FutureProducer`'s background thread
//! takes the delivery reports from that queue, so the poll sleeps the whole 100 ms: a
//! transaction committed with records in flight costs at least ~100 ms
//! (`--baseline-commit-in-flight` measures the pipe that way).
//!
//! Latency of one saga (key): from the acknowledgement of its last input to the moment its
//! decision (`OrderConfirmed`; for the baseline, its fourth output) is seen by the read_committed
//! consumer. Throughput: input events / (first publish → last decision seen).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::wire::envelope::{Envelope, header, now_rfc3339};
use choreo_bus::{Bus, BusConfig, EmbeddedBroker, TraceParent};
use choreo_saga::{Definition, Definitions};
use choreo_schemas::event::{
    InventoryReserved, LineItem, Money, OrderCancelled, OrderConfirmed, OrderPlaced,
    PaymentAuthorized, ReservedItem, ShipmentScheduled,
};
use choreo_schemas::{Catalog, Event, MemoryRegistry, SchemaRegistry};
use futures::StreamExt as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use choreo_coordinator::topics::{TopicSpec, ensure_topics, partition_counts};
use choreo_coordinator::{CoordinatorOptions, Guarantee, start};

/// The processing guarantee to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum LoadGuarantee {
    /// Transactions: the coordinator and the baseline pipe commit each batch atomically.
    #[value(alias = "exactly-once")]
    ExactlyOnce,
    /// No transactions: idempotent producers, offsets committed after the deliveries.
    #[value(alias = "effectively-once")]
    EffectivelyOnce,
}

impl LoadGuarantee {
    fn name(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly_once",
            Self::EffectivelyOnce => "effectively_once",
        }
    }

    fn coordinator(self) -> Guarantee {
        match self {
            Self::ExactlyOnce => Guarantee::ExactlyOnce,
            Self::EffectivelyOnce => Guarantee::EffectivelyOnce,
        }
    }

    fn transactional(self) -> bool {
        self == Self::ExactlyOnce
    }
}

/// `choreo loadgen` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Kafka bootstrap servers (default: an embedded broker, fresh for this run).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Sagas to drive (four input events each).
    #[arg(long, default_value_t = 2000)]
    pub sagas: usize,
    /// Partitions of the topics (saga topics, changelog, commands, baseline topics).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// The processing guarantee of the coordinator and of the baseline pipe.
    #[arg(long, value_enum, default_value_t = LoadGuarantee::ExactlyOnce)]
    pub guarantee: LoadGuarantee,
    /// Sagas in flight at once (the publish window).
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// How long each phase may take (start-up included) before it fails.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// `fetch.wait.max.ms` of every consumer in both phases (default: 10 with the embedded
    /// broker, whose mock cluster answers an empty fetch only after this wait even when records
    /// arrive meanwhile; librdkafka's default with an external broker).
    #[arg(long)]
    pub fetch_wait_max_ms: Option<u64>,
    /// Let the baseline pipe call `commit_transaction` with its records still in flight, as the
    /// coordinator does, instead of awaiting their deliveries first: rdkafka's flush inside
    /// `commit_transaction` then sleeps ~100 ms per transaction (see the module docs).
    #[arg(long)]
    pub baseline_commit_in_flight: bool,
}

/// The four inputs of one saga.
struct SagaInputs {
    placed: OrderPlaced,
    payment: PaymentAuthorized,
    inventory: InventoryReserved,
    shipment: ShipmentScheduled,
}

fn order_id(run: &str, i: usize) -> String {
    format!("lg-{run}-{i}")
}

fn saga_inputs(run: &str, i: usize) -> SagaInputs {
    let order_id = order_id(run, i);
    let qty = 1 + i32::try_from(i % 3).unwrap_or(0);
    let price = 500 + i64::try_from((i * 7919) % 9500).unwrap_or(0);
    let total = Money {
        amount_minor: price * i64::from(qty),
        currency: "EUR".into(),
    };
    let sku = format!("sku-{}", i % 5);
    SagaInputs {
        placed: OrderPlaced {
            order_id: order_id.clone(),
            customer_id: format!("customer-{}", i % 17),
            items: vec![LineItem {
                sku: sku.clone(),
                quantity: qty,
                unit_price: Money {
                    amount_minor: price,
                    currency: "EUR".into(),
                },
            }],
            total: total.clone(),
            shipping_address: format!("{i} Load Street"),
            channel: "web".into(),
        },
        payment: PaymentAuthorized {
            order_id: order_id.clone(),
            payment_id: format!("pay-{order_id}"),
            amount: total,
        },
        inventory: InventoryReserved {
            order_id: order_id.clone(),
            reservation_id: format!("res-{order_id}"),
            items: vec![ReservedItem { sku, quantity: qty }],
        },
        shipment: ShipmentScheduled {
            shipment_id: format!("shp-{order_id}"),
            order_id,
            carrier: "parcelco".into(),
            estimated_delivery_ms: 1_900_000_000_000,
        },
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    events_per_second: f64,
    p50: Duration,
    p99: Duration,
    elapsed: Duration,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn figures(started: Instant, acks: &[Instant], seen: &[Instant], events: usize) -> Figures {
    let mut lat: Vec<Duration> = acks
        .iter()
        .zip(seen)
        .map(|(a, s)| s.saturating_duration_since(*a))
        .collect();
    lat.sort_unstable();
    let last = seen.iter().max().copied().unwrap_or(started);
    let elapsed = last.saturating_duration_since(started);
    Figures {
        events_per_second: events as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        elapsed,
    }
}

/// Publishes `n` keys, `concurrency` at a time; `publish(i)` returns when key `i`'s inputs are
/// acknowledged, with the instant of its last acknowledgement. Returns the instant publishing
/// started and every key's last acknowledgement.
async fn drive<F, Fut>(
    n: usize,
    concurrency: usize,
    publish: F,
) -> anyhow::Result<(Instant, Vec<Instant>)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Instant>>,
{
    let started = Instant::now();
    let mut acks = vec![started; n];
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let fut = publish(i);
            async move { fut.await.map(|t| (i, t)) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = stream.next().await {
        let (i, t) = r?;
        acks[i] = t;
    }
    Ok((started, acks))
}

async fn acked<T: Event>(bus: &Bus, event: &T) -> anyhow::Result<Instant> {
    bus.publish(event)
        .await
        .with_context(|| format!("publishing {} for {}", T::TYPE, event.correlation_id()))?;
    Ok(Instant::now())
}

/// What a watcher counts as a key's decision.
#[derive(Debug, Clone)]
enum Decision {
    /// The first record of this `ce_type` for the key; records of `failure` are counted apart.
    Type { success: String, failure: String },
    /// The `count`-th distinct record (by `ce_id`) for the key.
    Count(usize),
}

#[derive(Debug, Default)]
struct Progress {
    done: AtomicUsize,
    failed: AtomicUsize,
    first_failure: std::sync::Mutex<Option<Vec<u8>>>,
}

fn header_str<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads `topic` (read_committed, from `start`) until every one of `n` keys has its decision;
/// returns when each was seen.
async fn watch(
    consumer: StreamConsumer,
    prefix: String,
    n: usize,
    decision: Decision,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Instant>> {
    let mut seen: Vec<Option<Instant>> = vec![None; n];
    let mut ids: Vec<Vec<String>> = match decision {
        Decision::Count(_) => vec![Vec::new(); n],
        Decision::Type { .. } => Vec::new(),
    };
    let mut failed = vec![false; n];
    loop {
        let m = match consumer.recv().await {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "loadgen watcher");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let now = Instant::now();
        let Some(i) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(prefix.as_str()))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|i| *i < n)
        else {
            continue;
        };
        if seen[i].is_some() || failed[i] {
            continue;
        }
        let decided = match &decision {
            Decision::Type { success, failure } => match header_str(&m, header::TYPE) {
                Some(t) if t == success => true,
                Some(t) if t == failure => {
                    failed[i] = true;
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    let mut first = progress
                        .first_failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = m.payload().map(<[u8]>::to_vec);
                    }
                    false
                }
                _ => false,
            },
            Decision::Count(count) => {
                let id = header_str(&m, header::ID).unwrap_or_default().to_owned();
                if !ids[i].contains(&id) {
                    ids[i].push(id);
                }
                ids[i].len() >= *count
            }
        };
        if decided {
            seen[i] = Some(now);
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        let done = progress.done.load(Ordering::Relaxed);
        if done + progress.failed.load(Ordering::Relaxed) >= n {
            if done < n {
                bail!("{} of {n} sagas did not complete", n - done);
            }
            return Ok(seen.into_iter().map(|s| s.unwrap_or(now)).collect());
        }
    }
}

/// A read_committed consumer assigned to every partition of `topic` from the current end (or
/// from the beginning of a fresh topic).
fn watch_consumer(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the measuring consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) =
            tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, p, timeout))
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .context("measuring consumer assignment")?;
    }
    consumer
        .assign(&tpl)
        .context("assigning the measuring consumer")?;
    Ok(consumer)
}

/// Waits for a watcher, failing on timeout or when `alive` says the system under test stopped.
async fn await_watcher(
    watcher: &mut tokio::task::JoinHandle<anyhow::Result<Vec<Instant>>>,
    progress: &Progress,
    n: usize,
    deadline: Instant,
    what: &str,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Instant>> {
    loop {
        tokio::select! {
            r = &mut *watcher => return r.context("the measuring task failed")?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let (done, failed) = (
            progress.done.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
        );
        if let Err(e) = alive() {
            watcher.abort();
            return Err(e.context(format!(
                "{what}: stopped with {done} of {n} decisions seen ({failed} failed)"
            )));
        }
        if Instant::now() > deadline {
            watcher.abort();
            bail!(
                "{what}: only {done} of {n} decisions seen before the timeout ({failed} failed, {} missing)",
                n - done - failed
            );
        }
    }
}

/// Creates topics: through the embedded broker, or with the admin client.
async fn create_topics(
    embedded: Option<&EmbeddedBroker>,
    client: &ClientConfig,
    specs: &[TopicSpec],
    timeout: Duration,
) -> anyhow::Result<()> {
    match embedded {
        Some(b) => {
            for t in specs {
                b.create_topic(&t.name, t.partitions)
                    .with_context(|| format!("creating {}", t.name))?;
            }
        }
        None => ensure_topics(client, specs, 1, timeout).await?,
    }
    Ok(())
}

/// Commits the current end of `topics` for `group`, so a fresh group starts after what earlier
/// runs left in shared topics.
fn commit_current_end(
    client: &ClientConfig,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the offset client")?;
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let counts = partition_counts(client, &refs, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in counts {
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, timeout)
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
            tpl.add_partition_offset(&topic, p, Offset::Offset(high))
                .context("offset list")?;
        }
    }
    if tpl.count() > 0 {
        consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing start offsets for {group}"))?;
    }
    Ok(())
}

// Fields drop in order: the clients before the embedded broker.
struct Setup {
    run: String,
    bootstrap: String,
    fetch_wait_max_ms: Option<u64>,
    catalog: Arc<Catalog>,
    registry: Arc<dyn SchemaRegistry>,
    bus: Bus,
    timeout: Duration,
    embedded: Option<EmbeddedBroker>,
}

impl Setup {
    /// Client settings of every consumer (and of the coordinator's clients).
    fn kafka(&self) -> BusConfig {
        let c = BusConfig::new(&self.bootstrap);
        match self.fetch_wait_max_ms {
            // The coordinator's producers get this consumer setting too (librdkafka warns that
            // they ignore it).
            Some(ms) => c.with_consumer_setting("fetch.wait.max.ms", &ms.to_string()),
            None => c,
        }
    }

    fn client(&self) -> ClientConfig {
        self.kafka().client_config()
    }

    fn prefix(&self) -> String {
        format!("lg-{}-", self.run)
    }
}

/// Runs the load generator.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.sagas == 0 {
        bail!("--sagas must be at least 1");
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let embedded = match &args.bootstrap_servers {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(1).context("starting the embedded broker")?),
    };
    let bootstrap = match (&args.bootstrap_servers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(e)) => e.bootstrap_servers().to_owned(),
        (None, None) => bail!("no broker"),
    };
    let catalog = Arc::new(Catalog::reference());
    let memory = Arc::new(MemoryRegistry::new());
    catalog.register_all(memory.as_ref()).await?;
    let registry: Arc<dyn SchemaRegistry> = memory;
    let bus = Bus::new(
        BusConfig::new(&bootstrap).with_source("/choreo/loadgen"),
        Arc::clone(&registry),
    )?;
    let fetch_wait_max_ms = args.fetch_wait_max_ms.or(embedded.as_ref().map(|_| 10));
    let setup = Setup {
        run,
        bootstrap,
        fetch_wait_max_ms,
        embedded,
        catalog,
        registry,
        bus,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
    };

    let broker = match &setup.embedded {
        Some(_) => format!(
            "embedded (librdkafka mock cluster, 1 broker, {})",
            setup.bootstrap
        ),
        None => setup.bootstrap.clone(),
    };
    println!("choreo loadgen");
    println!(
        "  sagas        {} ({} input events)",
        args.sagas,
        4 * args.sagas
    );
    println!("  partitions   {}", args.partitions);
    println!("  guarantee    {}", args.guarantee.name());
    println!("  broker       {broker}");
    println!("  concurrency  {} sagas in flight", args.concurrency);
    println!(
        "  consumers    read_committed, fetch.wait.max.ms {}",
        setup.fetch_wait_max_ms.map_or_else(
            || "librdkafka default (500)".to_owned(),
            |ms| ms.to_string()
        )
    );
    println!("  batches      up to 500 records or 10 ms linger (coordinator and baseline pipe)");
    println!(
        "  baseline     {}",
        match (
            args.guarantee.transactional(),
            args.baseline_commit_in_flight
        ) {
            (true, false) => "one transaction per batch; deliveries awaited, then commit",
            (true, true) => "one transaction per batch; commit with deliveries in flight",
            (false, _) => "idempotent producer; deliveries awaited, then offsets committed",
        }
    );
    println!("  run id       {}", setup.run);
    println!();

    eprintln!("coordinator phase: {} sagas…", args.sagas);
    let saga = saga_phase(&setup, &args).await?;
    eprintln!(
        "coordinator phase: done in {:.2} s",
        saga.elapsed.as_secs_f64()
    );
    eprintln!("baseline phase: {} keys…", args.sagas);
    let base = baseline_phase(&setup, &args).await?;
    eprintln!(
        "baseline phase: done in {:.2} s",
        base.elapsed.as_secs_f64()
    );
    if let Err(e) = setup.bus.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "flushing the load generator's producer");
    }

    let baseline_label = match (
        args.guarantee.transactional(),
        args.baseline_commit_in_flight,
    ) {
        (true, false) => "baseline (transactional pipe)",
        (true, true) => "baseline (transactional pipe, commit in flight)",
        (false, _) => "baseline (idempotent pipe, no transactions)",
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<48} {:>10} {:>10} {:>10}",
        "", "events/s", "p50 ms", "p99 ms"
    );
    for (label, f) in [
        (baseline_label, base),
        ("choreo coordinator (order saga)", saga),
    ] {
        let _ = writeln!(
            out,
            "{label:<48} {:>10.0} {:>10.1} {:>10.1}",
            f.events_per_second,
            ms(f.p50),
            ms(f.p99)
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let _ = writeln!(
        out,
        "ratio coordinator/baseline: throughput {:.2}, p50 {:.1}x, p99 {:.1}x",
        ratio(saga.events_per_second, base.events_per_second),
        ratio(ms(saga.p50), ms(base.p50)),
        ratio(ms(saga.p99), ms(base.p99)),
    );
    let _ = writeln!(
        out,
        "(latency: last input acknowledged → decision seen by a read_committed consumer; \
         throughput: {} input events / first publish → last decision)",
        4 * args.sagas
    );
    print!("{out}");
    Ok(())
}

async fn saga_phase(setup: &Setup, args: &LoadgenArgs) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + setup.timeout;
    let mut defs = Definitions::new();
    defs.insert(Definition::reference_order_saga(&setup.catalog)?)?;
    let mut opts = CoordinatorOptions::new(
        setup.kafka().with_source("/choreo/loadgen/coordinator"),
        Arc::new(defs),
        Arc::clone(&setup.catalog),
        Arc::clone(&setup.registry),
    );
    opts.partitions = args.partitions;
    opts.guarantee = args.guarantee.coordinator();
    opts.instance_id = "loadgen-0".into();
    opts.group_id = format!("choreo-loadgen-{}", setup.run);
    if setup.embedded.is_none() {
        // The catalog topics are shared with whatever else uses this cluster; the coordinator's
        // own topics are this run's.
        opts.changelog_topic = format!("choreo.loadgen-{}.saga-state", setup.run);
        opts.commands_topic = format!("choreo.loadgen-{}.saga-commands", setup.run);
    }
    let client = setup.client();
    let specs = opts.required_topics()?;
    create_topics(setup.embedded.as_ref(), &client, &specs, setup.timeout).await?;
    opts.create_topics = false;
    if setup.embedded.is_none() {
        let inputs: Vec<String> = opts.input_topics()?.into_iter().collect();
        let (c, g, t) = (client.clone(), opts.group_id.clone(), setup.timeout);
        tokio::task::spawn_blocking(move || commit_current_end(&c, &g, &inputs, t))
            .await
            .context("offset task")??;
    }

    let orders = OrderPlaced::TOPIC;
    let orders_partitions = {
        let (c, t) = (client.clone(), setup.timeout);
        tokio::task::spawn_blocking(move || {
            partition_counts(&c, &[orders], t).map_err(anyhow::Error::from)
        })
        .await
        .context("metadata task")??
        .get(orders)
        .copied()
        .with_context(|| format!("topic {orders} does not exist"))?
    };
    let consumer = watch_consumer(
        &client,
        &format!("choreo-loadgen-{}-watch", setup.run),
        orders,
        orders_partitions,
        setup.timeout,
    )?;

    let mut coordinator = start(opts).await.context("starting the coordinator")?;
    let ready = coordinator.readiness();
    while !ready() {
        if coordinator.is_finished() {
            let r = coordinator.wait().await;
            bail!("the coordinator stopped during start-up: {r:?}");
        }
        if Instant::now() > deadline {
            bail!("the coordinator was not ready (group joined, partitions restored) in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let n = args.sagas;
    let progress = Arc::new(Progress::default());
    let mut watcher = tokio::spawn(watch(
        consumer,
        setup.prefix(),
        n,
        Decision::Type {
            success: OrderConfirmed::TYPE.to_owned(),
            failure: OrderCancelled::TYPE.to_owned(),
        },
        Arc::clone(&progress),
    ));

    let inputs: Vec<SagaInputs> = (0..n).map(|i| saga_inputs(&setup.run, i)).collect();
    let bus = &setup.bus;
    let published = drive(n, args.concurrency, |i| {
        let s = &inputs[i];
        async move {
            acked(bus, &s.placed).await?;
            let (a, b, c) = tokio::try_join!(
                acked(bus, &s.payment),
                acked(bus, &s.inventory),
                acked(bus, &s.shipment),
            )?;
            Ok(a.max(b).max(c))
        }
    })
    .await;
    let (started, acks) = match published {
        Ok(x) => x,
        Err(e) => {
            watcher.abort();
            let _ = coordinator.shutdown().await;
            return Err(e);
        }
    };

    let seen = await_watcher(
        &mut watcher,
        &progress,
        n,
        deadline,
        "coordinator phase",
        || {
            if coordinator.is_finished() {
                bail!("the coordinator stopped (see the log above)");
            }
            Ok(())
        },
    )
    .await;
    let seen = match seen {
        Ok(s) => s,
        Err(e) => {
            let reason = first_cancellation(bus, &progress).await;
            let _ = coordinator.shutdown().await;
            return Err(match reason {
                Some(r) => e.context(format!("first OrderCancelled reason: {r}")),
                None => e,
            });
        }
    };
    coordinator
        .shutdown()
        .await
        .context("stopping the coordinator")?;
    Ok(figures(started, &acks, &seen, 4 * n))
}

async fn first_cancellation(bus: &Bus, progress: &Progress) -> Option<String> {
    let payload = progress
        .first_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()?;
    bus.codec()
        .decode::<OrderCancelled>(&payload)
        .await
        .ok()
        .map(|c| format!("{} ({})", c.reason, c.order_id))
}

/// One encoded input of the baseline.
struct RawInput {
    topic: usize,
    event_type: &'static str,
    value: Vec<u8>,
}

async fn encode<T: Event>(bus: &Bus, topic: usize, event: &T) -> anyhow::Result<RawInput> {
    Ok(RawInput {
        topic,
        event_type: T::TYPE,
        value: bus.codec().encode(T::TOPIC, event).await?,
    })
}

async fn send_raw(
    bus: &Bus,
    topics: &[String],
    key: &str,
    input: &RawInput,
) -> anyhow::Result<Instant> {
    let envelope = Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        source: bus.config().source.clone(),
        event_type: input.event_type.to_owned(),
        time: now_rfc3339(),
        correlation_id: key.to_owned(),
        causation_id: None,
        traceparent: Some(TraceParent::new_root()),
    };
    let topic = &topics[input.topic];
    bus.send_raw(topic, Some(key), &input.value, envelope.to_headers())
        .await
        .with_context(|| format!("publishing to {topic} for {key}"))?;
    Ok(Instant::now())
}

async fn baseline_phase(setup: &Setup, args: &LoadgenArgs) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + setup.timeout;
    let n = args.sagas;
    let base = format!("choreo.loadgen-{}.baseline", setup.run);
    let inputs: Vec<String> = ["orders", "payments", "inventory", "shipping"]
        .iter()
        .map(|t| format!("{base}.{t}"))
        .collect();
    let output = format!("{base}.out");
    let specs: Vec<TopicSpec> = inputs
        .iter()
        .chain(std::iter::once(&output))
        .map(|name| TopicSpec {
            name: name.clone(),
            partitions: args.partitions,
            compacted: false,
        })
        .collect();
    let client = setup.client();
    create_topics(setup.embedded.as_ref(), &client, &specs, setup.timeout).await?;

    // The same encoded values as the coordinator phase, in the same pattern.
    let bus = &setup.bus;
    let mut records: Vec<(String, [RawInput; 4])> = Vec::with_capacity(n);
    for i in 0..n {
        let s = saga_inputs(&setup.run, i);
        let key = s.placed.order_id.clone();
        records.push((
            key,
            [
                encode(bus, 0, &s.placed).await?,
                encode(bus, 1, &s.payment).await?,
                encode(bus, 2, &s.inventory).await?,
                encode(bus, 3, &s.shipment).await?,
            ],
        ));
    }

    let transactional = args.guarantee.transactional();
    let pipe_group = format!("choreo-loadgen-{}-pipe", setup.run);
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", &pipe_group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .context("creating the pipe's consumer")?;
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .context("subscribing the pipe's consumer")?;
    let producer: FutureProducer = {
        let mut c = BusConfig::new(&setup.bootstrap).client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000");
        if transactional {
            c.set("transactional.id", format!("{pipe_group}-0"))
                .set("transaction.timeout.ms", "60000");
        }
        c.create().context("creating the pipe's producer")?
    };
    if transactional {
        let (p, t) = (producer.clone(), setup.timeout);
        tokio::task::spawn_blocking(move || p.init_transactions(Timeout::After(t)))
            .await
            .context("init_transactions task")?
            .context("the broker refused transactions (try --guarantee effectively_once)")?;
    }
    let watch_c = watch_consumer(
        &client,
        &format!("choreo-loadgen-{}-watch-baseline", setup.run),
        &output,
        args.partitions,
        setup.timeout,
    )?;

    let cancel = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut pipe = tokio::spawn(run_pipe(Pipe {
        consumer,
        producer,
        output,
        transactional,
        await_before_commit: !args.baseline_commit_in_flight,
        timeout: Duration::from_secs(30),
        ready: Arc::clone(&ready),
        cancel: cancel.clone(),
    }));
    while !ready.load(Ordering::Acquire) {
        if pipe.is_finished() {
            let r = (&mut pipe).await;
            bail!("the baseline pipe stopped during start-up: {r:?}");
        }
        if Instant::now() > deadline {
            cancel.cancel();
            bail!("the baseline pipe did not join its group in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let progress = Arc::new(Progress::default());
    let mut watcher = tokio::spawn(watch(
        watch_c,
        setup.prefix(),
        n,
        Decision::Count(4),
        Arc::clone(&progress),
    ));
    let topics = &inputs;
    let published = drive(n, args.concurrency, |i| {
        let (key, r) = &records[i];
        async move {
            send_raw(bus, topics, key, &r[0]).await?;
            let (a, b, c) = tokio::try_join!(
                send_raw(bus, topics, key, &r[1]),
                send_raw(bus, topics, key, &r[2]),
                send_raw(bus, topics, key, &r[3]),
            )?;
            Ok(a.max(b).max(c))
        }
    })
    .await;
    let (started, acks) = match published {
        Ok(x) => x,
        Err(e) => {
            watcher.abort();
            cancel.cancel();
            return Err(e);
        }
    };
    let seen = await_watcher(
        &mut watcher,
        &progress,
        n,
        deadline,
        "baseline phase",
        || {
            if pipe.is_finished() {
                bail!("the baseline pipe stopped");
            }
            Ok(())
        },
    )
    .await;
    cancel.cancel();
    let stopped = pipe.await.context("the baseline pipe task")?;
    let seen = seen?;
    stopped.context("the baseline pipe")?;
    Ok(figures(started, &acks, &seen, 4 * n))
}

/// The baseline: consume → produce, one output record per input, no saga logic.
struct Pipe {
    consumer: StreamConsumer,
    producer: FutureProducer,
    output: String,
    transactional: bool,
    await_before_commit: bool,
    timeout: Duration,
    ready: Arc<AtomicBool>,
    cancel: CancellationToken,
}

const BATCH_MAX_RECORDS: usize = 500;
const BATCH_LINGER: Duration = Duration::from_millis(10);

impl Pipe {
    /// Up to `BATCH_MAX_RECORDS`: waits up to 100 ms for the first, then lingers for more.
    async fn collect(&self) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let first = tokio::select! {
            () = self.cancel.cancelled() => return batch,
            r = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()) => r,
        };
        match first {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "baseline pipe consumer");
                return batch;
            }
            Err(_) => return batch,
        }
        let until = tokio::time::Instant::now() + BATCH_LINGER;
        while batch.len() < BATCH_MAX_RECORDS {
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "baseline pipe consumer");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    async fn process(&self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        if self.transactional {
            self.producer
                .begin_transaction()
                .context("begin_transaction")?;
        }
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let mut rec = FutureRecord::<[u8], [u8]>::to(&self.output);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(v) = m.payload() {
                rec = rec.payload(v);
            }
            if let Some(h) = m.headers() {
                rec = rec.headers(h.clone());
            }
            let f = self
                .producer
                .send_result(rec)
                .map_err(|(e, _)| e)
                .context("enqueueing an output record")?;
            deliveries.push(f);
            next.insert((m.topic(), m.partition()), m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), offset) in &next {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))
                .context("offset list")?;
        }
        let timeout = Timeout::After(self.timeout);
        if self.transactional {
            if self.await_before_commit {
                await_deliveries(deliveries).await?;
                // The delivery reports are consumed; wait (briefly) until librdkafka has
                // released them too, so that the flush in `commit_transaction` finds nothing.
                for _ in 0..200 {
                    if self.producer.in_flight_count() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
            }
            let cgm = self
                .consumer
                .group_metadata()
                .context("no consumer group metadata")?;
            tokio::task::block_in_place(|| {
                self.producer
                    .send_offsets_to_transaction(&tpl, &cgm, timeout)
            })
            .context("send_offsets_to_transaction")?;
            tokio::task::block_in_place(|| self.producer.commit_transaction(timeout))
                .context("commit_transaction")?;
        } else {
            await_deliveries(deliveries).await?;
            tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync))
                .context("committing offsets")?;
        }
        Ok(())
    }
}

async fn await_deliveries(deliveries: Vec<DeliveryFuture>) -> anyhow::Result<()> {
    for d in futures::future::join_all(deliveries).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e).context("delivering an output record"),
            Err(_) => bail!("an output delivery was cancelled"),
        }
    }
    Ok(())
}

async fn run_pipe(pipe: Pipe) -> anyhow::Result<()> {
    while !pipe.cancel.is_cancelled() {
        if !pipe.ready.load(Ordering::Relaxed)
            && pipe.consumer.assignment().is_ok_and(|a| a.count() > 0)
        {
            pipe.ready.store(true, Ordering::Release);
        }
        let batch = pipe.collect().await;
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = pipe.process(&batch).await {
            if pipe.transactional {
                let _ = tokio::task::block_in_place(|| {
                    pipe.producer
                        .abort_transaction(Timeout::After(pipe.timeout))
                });
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn guarantee_names_parse() {
        use clap::ValueEnum as _;
        for (s, g) in [
            ("exactly_once", LoadGuarantee::ExactlyOnce),
            ("effectively_once", LoadGuarantee::EffectivelyOnce),
            ("exactly-once", LoadGuarantee::ExactlyOnce),
        ] {
            assert_eq!(LoadGuarantee::from_str(s, false).ok(), Some(g));
        }
    }
}
