//! [`KafkaDedup`]: a [`DedupStore`] whose memory is a Kafka topic, so that a duplicate delivered
//! after a restart or a rebalance is still caught.
//!
//! - **Records**: one per handled event — key `<scope>\u{1f}<event id>`, value the time it was
//!   handled (ms since epoch, decimal) — on a topic per subscriber group (`<group>.dedup` by
//!   default), `cleanup.policy=compact,delete` with `retention.ms` = the window: Kafka keeps one
//!   record per id, and forgets ids older than the window.
//! - **Reads** are served from memory ([`MemoryDedup`], bounded by `capacity`), filled at
//!   [`KafkaDedup::open`] by reading the topic to its end (records older than the window are
//!   skipped), and kept up to date by a background reader that follows every partition — so
//!   the marks another instance of the group writes (a rebalance moved the partition) arrive
//!   within the reader's lag.
//! - **Writes** ([`DedupStore::mark`], after the handler succeeded and before the offset is
//!   stored) go through the bus's idempotent producer and wait for the acknowledgement. A mark
//!   that cannot be written is logged and counted (`choreo_bus_dedup_mark_failures_total`) and
//!   still remembered in memory: a duplicate after a restart may then be handled again, which
//!   at-least-once allows.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::BusConfig;
use crate::dedup::{DedupStore, MemoryDedup};
use crate::error::BusError;
use crate::producer::Sender;
use crate::telemetry;

/// Separates the scope from the event id in a record key.
const SEPARATOR: char = '\u{1f}';

/// How a [`KafkaDedup`] keeps its ids.
#[derive(Debug, Clone)]
pub struct KafkaDedupOptions {
    /// The topic (created when missing).
    pub topic: String,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic; `None`: the cluster's default.
    pub replication_factor: Option<i32>,
    /// How long an id is remembered (the topic's `retention.ms`; older records are skipped on
    /// load).
    pub window: Duration,
    /// The most ids kept in memory (the oldest are forgotten first).
    pub capacity: usize,
    /// Upper bound for creating the topic and for the initial read making no progress.
    pub timeout: Duration,
}

impl KafkaDedupOptions {
    /// Defaults for subscriber group `group`: topic `<group>.dedup`, 6 partitions, a 7-day
    /// window, 1 000 000 ids in memory.
    pub fn for_group(group: &str) -> Self {
        Self {
            topic: format!("{group}.dedup"),
            partitions: 6,
            replication_factor: None,
            window: Duration::from_secs(7 * 24 * 3600),
            capacity: 1_000_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A durable [`DedupStore`] (see the module docs).
pub struct KafkaDedup {
    memory: Arc<MemoryDedup>,
    sender: Sender,
    topic: String,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaDedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDedup")
            .field("topic", &self.topic)
            .field("remembered", &self.memory.len())
            .finish_non_exhaustive()
    }
}

impl Drop for KafkaDedup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl KafkaDedup {
    /// Creates the topic when missing, reads it to its end into memory, and starts the reader
    /// that follows it.
    pub async fn open(kafka: BusConfig, opts: KafkaDedupOptions) -> Result<Arc<Self>, BusError> {
        create_topic(&kafka, &opts).await?;
        let mut opts = opts;
        opts.partitions = partition_count(&kafka, &opts).await?;
        let memory = Arc::new(MemoryDedup::with_capacity(opts.capacity));
        let consumer = reader(&kafka, &opts)?;
        let (loaded, opts_for_load) = (Arc::clone(&memory), opts.clone());
        let consumer = tokio::task::spawn_blocking(move || {
            catch_up(&consumer, &opts_for_load, &loaded).map(|()| consumer)
        })
        .await
        .map_err(|e| BusError::Config(format!("dedup loader: {e}")))??;
        let stop = Arc::new(AtomicBool::new(false));
        let (following, halt, window) = (Arc::clone(&memory), Arc::clone(&stop), opts.window);
        std::thread::Builder::new()
            .name("dedup-topic-reader".into())
            .spawn(move || follow(&consumer, &following, window, &halt))
            .map_err(|e| BusError::Config(format!("starting the dedup reader: {e}")))?;
        tracing::info!(topic = %opts.topic, remembered = memory.len(), "durable dedup store open");
        Ok(Arc::new(Self {
            memory,
            sender: Sender::new(&kafka)?,
            topic: opts.topic,
            stop,
        }))
    }

    /// How many ids are remembered in memory now.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }
}

#[async_trait]
impl DedupStore for KafkaDedup {
    async fn seen(&self, scope: &str, id: &str) -> bool {
        self.memory.seen(scope, id).await
    }

    async fn mark(&self, scope: &str, id: &str) {
        let key = format!("{scope}{SEPARATOR}{id}");
        let value = now_ms().to_string();
        if let Err(e) = self
            .sender
            .send(
                &self.topic,
                Some(key.as_bytes()),
                value.as_bytes(),
                OwnedHeaders::new(),
            )
            .await
        {
            metrics::counter!(telemetry::DEDUP_MARK_FAILURES).increment(1);
            tracing::warn!(topic = %self.topic, event_id = id, error = %e, "the handled event's id was not written to the dedup topic; a duplicate after a restart may be handled again");
        }
        self.memory.mark(scope, id).await;
    }
}

fn reader(kafka: &BusConfig, opts: &KafkaDedupOptions) -> Result<BaseConsumer, BusError> {
    // Read to its end, then followed: the same consumer does both.
    let group = format!("dedup-reader-{}", uuid::Uuid::new_v4().simple());
    let consumer: BaseConsumer =
        crate::read_back(kafka.consumer_config(), crate::ReadBack::Follow, &group)
            .create()
            .map_err(|e| BusError::kafka("creating the dedup reader", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..opts.partitions.max(1) {
        tpl.add_partition_offset(&opts.topic, p, Offset::Beginning)
            .map_err(|e| BusError::kafka("dedup reader assignment", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| BusError::kafka("dedup reader assignment", e))?;
    Ok(consumer)
}

/// Applies one record: remembers its id when it is within the window.
fn remember(memory: &MemoryDedup, window: Duration, key: Option<&[u8]>, value: Option<&[u8]>) {
    let (Some(key), Some(value)) = (key, value) else {
        return;
    };
    let Some((scope, id)) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.split_once(SEPARATOR))
    else {
        return;
    };
    let at = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if now_ms().saturating_sub(at) <= window_ms {
        memory.remember(scope, id);
    }
}

/// Reads every partition to its end (the end as of now).
fn catch_up(
    consumer: &BaseConsumer,
    opts: &KafkaDedupOptions,
    memory: &MemoryDedup,
) -> Result<(), BusError> {
    let mut open: HashSet<i32> = (0..opts.partitions.max(1)).collect();
    let mut last_progress = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                remember(memory, opts.window, m.key(), m.payload());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "dedup topic load"),
            None => {}
        }
        if last_progress.elapsed() > opts.timeout {
            return Err(BusError::Config(format!(
                "loading the dedup topic {}: nothing read for {:?} (partitions {open:?} not read to their end)",
                opts.topic, opts.timeout
            )));
        }
    }
    Ok(())
}

/// The background reader: follows the topic into memory until the store is dropped.
fn follow(consumer: &BaseConsumer, memory: &MemoryDedup, window: Duration, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => remember(memory, window, m.key(), m.payload()),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "dedup topic reader"),
        }
    }
}

/// The topic's partition count (it may have existed with another than `opts.partitions`).
async fn partition_count(kafka: &BusConfig, opts: &KafkaDedupOptions) -> Result<i32, BusError> {
    let consumer: BaseConsumer = kafka
        .consumer_config()
        .create()
        .map_err(|e| BusError::kafka("dedup topic metadata", e))?;
    let (topic, timeout) = (opts.topic.clone(), opts.timeout);
    tokio::task::spawn_blocking(move || {
        let md = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| BusError::kafka("dedup topic metadata", e))?;
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            .filter(|n| *n > 0)
            .ok_or_else(|| BusError::Config(format!("the dedup topic {topic} has no partitions")))
    })
    .await
    .map_err(|e| BusError::Config(format!("dedup topic metadata: {e}")))?
}

async fn create_topic(kafka: &BusConfig, opts: &KafkaDedupOptions) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config()
        .create()
        .map_err(|e| BusError::kafka("admin client", e))?;
    let retention = opts.window.as_millis().to_string();
    let topic = NewTopic::new(
        &opts.topic,
        opts.partitions.max(1),
        // -1: the cluster's default (KIP-464).
        TopicReplication::Fixed(opts.replication_factor.unwrap_or(-1)),
    )
    .set("cleanup.policy", "compact,delete")
    .set("retention.ms", &retention);
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(opts.timeout)),
        )
        .await
        .map_err(|e| BusError::kafka("creating the dedup topic", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(BusError::Config(format!(
                    "creating the dedup topic {t}: {code}"
                )));
            }
        }
    }
    Ok(())
}
