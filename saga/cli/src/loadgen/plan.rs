//! What both phases share: the arguments, the inputs of each saga, topic set-up, publishing
//! `n` keys with bounded concurrency, and the figures a phase reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use choreo_bus::{Bus, BusConfig, EmbeddedBroker};
use choreo_schemas::event::{
    InventoryReserved, LineItem, Money, OrderPlaced, PaymentAuthorized, ReservedItem,
    ShipmentScheduled,
};
use choreo_schemas::{Catalog, Event, SchemaRegistry};
use futures::StreamExt as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use choreo_coordinator::Guarantee;
use choreo_coordinator::topics::{TopicSpec, ensure_topics, partition_counts};

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
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly_once",
            Self::EffectivelyOnce => "effectively_once",
        }
    }

    pub(super) fn coordinator(self) -> Guarantee {
        match self {
            Self::ExactlyOnce => Guarantee::ExactlyOnce,
            Self::EffectivelyOnce => Guarantee::EffectivelyOnce,
        }
    }

    pub(super) fn transactional(self) -> bool {
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
    /// Start sagas at this steady rate (sagas per second) in both phases, instead of as fast as
    /// the window allows: the latency figures are then the decision latency at that rate (run
    /// once without it for the maximum, then at half of it).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long a batch lingers for more records after its first, in both phases (the
    /// coordinator's `coordinator.batch_linger`; the baseline pipe takes the same).
    #[arg(long, default_value_t = choreo_coordinator::coordinator::defaults::BATCH_LINGER.as_millis() as u64)]
    pub batch_linger_ms: u64,
}

/// The four inputs of one saga.
pub(crate) struct SagaInputs {
    pub(crate) placed: OrderPlaced,
    pub(crate) payment: PaymentAuthorized,
    pub(crate) inventory: InventoryReserved,
    pub(crate) shipment: ShipmentScheduled,
}

fn order_id(run: &str, i: usize) -> String {
    format!("lg-{run}-{i}")
}

pub(crate) fn saga_inputs(run: &str, i: usize) -> SagaInputs {
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
pub(super) struct Figures {
    pub(super) events_per_second: f64,
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) elapsed: Duration,
}

/// Nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn figures(
    started: Instant,
    acks: &[Instant],
    seen: &[Instant],
    events: usize,
) -> Figures {
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
/// acknowledged, with the instant of its last acknowledgement. With a `rate` (keys per second),
/// key `i` starts no earlier than `i / rate` seconds after the first. Returns the instant
/// publishing started and every key's last acknowledgement.
pub(crate) async fn drive<F, Fut>(
    n: usize,
    concurrency: usize,
    rate: Option<f64>,
    publish: F,
) -> anyhow::Result<(Instant, Vec<Instant>)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Instant>>,
{
    let started = Instant::now();
    let mut acks = vec![started; n];
    let pace = rate.filter(|r| r.is_finite() && *r > 0.0);
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let at = pace.map(|r| started + Duration::from_secs_f64(i as f64 / r));
            let publish = &publish;
            async move {
                if let Some(at) = at {
                    tokio::time::sleep_until(at.into()).await;
                }
                publish(i).await.map(|t| (i, t))
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = stream.next().await {
        let (i, t) = r?;
        acks[i] = t;
    }
    Ok((started, acks))
}

/// Publishes one saga's inputs as the load generators do: `OrderPlaced`, then the three
/// answers at once; returns when the last is acknowledged.
pub(crate) async fn publish_saga(bus: &Bus, s: &SagaInputs) -> anyhow::Result<Instant> {
    acked(bus, &s.placed).await?;
    let (a, b, c) = tokio::try_join!(
        acked(bus, &s.payment),
        acked(bus, &s.inventory),
        acked(bus, &s.shipment),
    )?;
    Ok(a.max(b).max(c))
}

pub(crate) async fn acked<T: Event>(bus: &Bus, event: &T) -> anyhow::Result<Instant> {
    bus.publish(event)
        .await
        .with_context(|| format!("publishing {} for {}", T::TYPE, event.correlation_id()))?;
    Ok(Instant::now())
}

/// The broker to measure on: `bootstrap_servers` when given, otherwise a fresh embedded broker
/// (returned, so that it lives as long as the run); and its bootstrap servers.
pub(crate) fn broker_or_embedded(
    bootstrap_servers: Option<&str>,
) -> anyhow::Result<(Option<EmbeddedBroker>, String)> {
    Ok(match bootstrap_servers {
        Some(b) => (None, b.to_owned()),
        None => {
            let e = EmbeddedBroker::start(1).context("starting the embedded broker")?;
            let b = e.bootstrap_servers().to_owned();
            (Some(e), b)
        }
    })
}

/// Creates topics: through the embedded broker, or with the admin client.
pub(super) async fn create_topics(
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
        None => ensure_topics(client, specs, None, timeout).await?,
    }
    Ok(())
}

/// Commits the current end of `topics` for `group`, so a fresh group starts after what earlier
/// runs left in shared topics.
pub(crate) fn commit_current_end(
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
pub(super) struct Setup {
    pub(super) run: String,
    pub(super) bootstrap: String,
    pub(super) fetch_wait_max_ms: Option<u64>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) registry: Arc<dyn SchemaRegistry>,
    pub(super) bus: Bus,
    pub(super) timeout: Duration,
    pub(super) embedded: Option<EmbeddedBroker>,
}

impl Setup {
    /// Client settings of every consumer (and of the coordinator's clients).
    pub(super) fn kafka(&self) -> BusConfig {
        let c = BusConfig::new(&self.bootstrap);
        match self.fetch_wait_max_ms {
            // The coordinator's producers get this consumer setting too (librdkafka warns that
            // they ignore it).
            Some(ms) => c.with_consumer_setting("fetch.wait.max.ms", &ms.to_string()),
            None => c,
        }
    }

    pub(super) fn client(&self) -> ClientConfig {
        self.kafka().client_config()
    }

    pub(super) fn prefix(&self) -> String {
        format!("lg-{}-", self.run)
    }
}
