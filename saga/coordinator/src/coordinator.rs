//! The coordinator service: runs the saga core against Kafka.
//!
//! ```text
//!  input topics ──► consumer (group, read_committed, range assignor)
//!                    │ batch of records + due deadlines (+ operator commands)
//!                    ▼
//!            apply(state, input, now) ──► actions
//!                    │
//!   one transaction: │ emitted events ─► their topics (deterministic ce_id)
//!                    │ saga states    ─► changelog (compacted, key = saga id, same partition)
//!                    │ poison inputs  ─► <topic>.dlq
//!                    │ consumed offsets (send_offsets_to_transaction, group metadata fences zombies)
//!                    ▼
//!            commit ──► only now: in-memory states, deadline index, metrics, view
//! ```
//!
//! With `Guarantee::EffectivelyOnce` (brokers without transactions) the same batch is produced
//! with an idempotent producer, every record acknowledged, and only then are the offsets
//! committed: a crash repeats a decision at most, with the same event ids, which consumers
//! deduplicate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::types::Value as AvroValue;
use choreo_bus::codec::{Codec, WriterSchemaError, decode_value, unframe};
use choreo_bus::envelope::{Envelope, now_rfc3339};
use choreo_bus::{BusConfig, TraceParent};
use choreo_saga::{Action, Definitions, Event, Input, Millis, SagaState, Status, apply};
use choreo_schemas::{Catalog, SchemaRegistry};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::command::CommandRecord;
use crate::error::CoordinatorError;
use crate::index::{DeadlineIndex, Due};
use crate::telemetry as m;
use crate::topics::{TopicSpec, check_copartitioned, ensure_topics, partition_counts};
use crate::view::SagaView;

/// The processing guarantee (BRIEF decision 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Consume → apply → emit is one Kafka transaction.
    #[default]
    ExactlyOnce,
    /// At-least-once with deterministic event ids, for brokers without transactions.
    EffectivelyOnce,
}

/// Everything the coordinator needs.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Brokers and pass-through client settings.
    pub kafka: BusConfig,
    /// Consumer group of the coordinator replicas.
    pub group_id: String,
    /// Stable id of this replica (seeds the transactional id).
    pub instance_id: String,
    /// Exactly-once or effectively-once.
    pub guarantee: Guarantee,
    /// The saga definitions.
    pub definitions: Arc<Definitions>,
    /// The event catalog.
    pub catalog: Arc<Catalog>,
    /// The schema registry.
    pub registry: Arc<dyn SchemaRegistry>,
    /// Compacted saga state topic.
    pub changelog_topic: String,
    /// Operator commands topic.
    pub commands_topic: String,
    /// Partitions of topics created at start-up.
    pub partitions: i32,
    /// Replication factor of topics created at start-up.
    pub replication_factor: i32,
    /// Whether to create missing topics.
    pub create_topics: bool,
    /// Records per transaction, at most.
    pub batch_max_records: usize,
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// How long a finished saga is kept before it is tombstoned.
    pub completed_retention: Duration,
    /// Upper bound for broker calls (transactions, metadata, restore).
    pub kafka_timeout: Duration,
    /// How long shutdown waits for the batch in hand to commit before giving up on it (it is
    /// then aborted by the broker's transaction timeout, and its inputs are read again).
    pub drain_timeout: Duration,
}

impl CoordinatorOptions {
    /// Options with defaults for everything but the brokers, definitions and registry.
    pub fn new(
        kafka: BusConfig,
        definitions: Arc<Definitions>,
        catalog: Arc<Catalog>,
        registry: Arc<dyn SchemaRegistry>,
    ) -> Self {
        Self {
            kafka,
            group_id: "choreo-coordinator".into(),
            instance_id: "choreo-0".into(),
            guarantee: Guarantee::ExactlyOnce,
            definitions,
            catalog,
            registry,
            changelog_topic: "choreo.saga-state".into(),
            commands_topic: "choreo.saga-commands".into(),
            partitions: 6,
            replication_factor: 1,
            create_topics: true,
            batch_max_records: 500,
            batch_linger: Duration::from_millis(10),
            completed_retention: Duration::from_secs(3600),
            kafka_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// The topics the coordinator consumes: those of every consumed event, and the commands
    /// topic.
    pub fn input_topics(&self) -> Result<BTreeSet<String>, CoordinatorError> {
        let mut topics = BTreeSet::new();
        for t in self.definitions.consumed_events() {
            topics.insert(self.topic_of(t)?);
        }
        topics.insert(self.commands_topic.clone());
        Ok(topics)
    }

    fn topic_of(&self, event_type: &str) -> Result<String, CoordinatorError> {
        self.catalog
            .event(event_type)
            .map(|e| e.topic.clone())
            .ok_or_else(|| {
                CoordinatorError::Startup(format!("event type {event_type} is not in the catalog"))
            })
    }

    /// Per saga: every topic that must be co-partitioned with its inputs.
    fn saga_topic_groups(&self) -> Result<Vec<(String, Vec<String>)>, CoordinatorError> {
        let mut out = Vec::new();
        for def in self.definitions.iter() {
            let mut topics = BTreeSet::new();
            for t in def.consumed_events().chain(def.emitted_events()) {
                topics.insert(self.topic_of(t)?);
            }
            topics.insert(self.changelog_topic.clone());
            topics.insert(self.commands_topic.clone());
            out.push((
                format!("{} v{}", def.name(), def.version()),
                topics.into_iter().collect(),
            ));
        }
        Ok(out)
    }

    /// Every topic the coordinator needs, with the settings it creates them with: the saga
    /// topics and the changelog and commands topics (co-partitioned, `partitions` each), and a
    /// one-partition dead-letter topic per input topic.
    pub fn required_topics(&self) -> Result<Vec<TopicSpec>, CoordinatorError> {
        let mut specs: BTreeMap<String, TopicSpec> = BTreeMap::new();
        for (_, topics) in self.saga_topic_groups()? {
            for t in topics {
                specs.entry(t.clone()).or_insert(TopicSpec {
                    compacted: t == self.changelog_topic,
                    name: t,
                    partitions: self.partitions,
                });
            }
        }
        for t in self.input_topics()? {
            let dlq = format!("{t}.dlq");
            specs.entry(dlq.clone()).or_insert(TopicSpec {
                name: dlq,
                partitions: 1,
                compacted: false,
            });
        }
        Ok(specs.into_values().collect())
    }

    /// Creates every required topic through an embedded broker (librdkafka's mock cluster does
    /// not answer CreateTopics) and leaves topic creation out of [`start`].
    pub fn create_topics_on(
        &mut self,
        broker: &choreo_bus::EmbeddedBroker,
    ) -> Result<(), CoordinatorError> {
        for t in self.required_topics()? {
            broker.create_topic(&t.name, t.partitions)?;
        }
        self.create_topics = false;
        Ok(())
    }

    fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id)
    }
}

/// A running coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    drain_timeout: Duration,
    view: Arc<SagaView>,
    ready: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), CoordinatorError>>,
    tailer: tokio::task::JoinHandle<()>,
    commands: CommandPublisher,
}

impl CoordinatorHandle {
    /// The operator view (every saga, from the changelog).
    pub fn view(&self) -> Arc<SagaView> {
        Arc::clone(&self.view)
    }

    /// Whether the owned partitions are restored and the view has caught up.
    pub fn readiness(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let (ready, view) = (Arc::clone(&self.ready), Arc::clone(&self.view));
        Arc::new(move || ready.load(Ordering::Acquire) && view.is_caught_up())
    }

    /// Publishes operator commands to the commands topic.
    pub fn commands(&self) -> CommandPublisher {
        self.commands.clone()
    }

    /// Whether the processing loop has stopped (on error or shutdown).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the processing loop to end by itself (an error), without stopping it.
    pub async fn wait(&mut self) -> Result<(), CoordinatorError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(CoordinatorError::Startup(format!("coordinator task: {e}"))),
        }
    }

    /// Stops after the batch in hand is committed (waiting at most the drain timeout), and
    /// leaves the group.
    pub async fn shutdown(self) -> Result<(), CoordinatorError> {
        self.cancel.cancel();
        self.tailer.abort();
        let abort = self.task.abort_handle();
        match tokio::time::timeout(self.drain_timeout, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(CoordinatorError::Startup(format!("coordinator task: {e}"))),
            Err(_) => {
                abort.abort();
                Err(CoordinatorError::Startup(format!(
                    "the batch in hand did not commit within the drain timeout ({:?}); its inputs will be read again",
                    self.drain_timeout
                )))
            }
        }
    }
}

/// Publishes [`CommandRecord`]s to the commands topic.
#[derive(Clone)]
pub struct CommandPublisher {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for CommandPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandPublisher")
            .field("topic", &self.topic)
            .finish()
    }
}

impl CommandPublisher {
    /// Sends a command and waits for the broker's acknowledgement.
    pub async fn send(&self, record: &CommandRecord) -> Result<(), String> {
        let value = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(crate::command::COMMAND_CONTENT_TYPE),
        });
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&record.correlation_id)
                    .payload(&value)
                    .headers(headers),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }
}

fn producer_config(opts: &CoordinatorOptions) -> ClientConfig {
    let mut c = opts.kafka.client_config();
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            opts.kafka_timeout.as_millis().to_string(),
        );
    c
}

/// Starts the coordinator: checks and creates topics, sets up the (transactional) producer,
/// joins the group, and starts the processing loop and the view.
pub async fn start(opts: CoordinatorOptions) -> Result<CoordinatorHandle, CoordinatorError> {
    crate::telemetry::describe();
    let opts = Arc::new(opts);
    let input_topics = opts.input_topics()?;
    let groups = opts.saga_topic_groups()?;
    let specs: BTreeMap<String, TopicSpec> = opts
        .required_topics()?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let client = opts.kafka.client_config();
    if opts.create_topics {
        let specs: Vec<TopicSpec> = specs.values().cloned().collect();
        ensure_topics(&client, &specs, opts.replication_factor, opts.kafka_timeout).await?;
    }
    let counts = {
        let (client, names, timeout) = (
            client.clone(),
            specs.keys().cloned().collect::<Vec<_>>(),
            opts.kafka_timeout,
        );
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            partition_counts(&client, &refs, timeout)
        })
        .await
        .map_err(|e| CoordinatorError::Startup(format!("metadata task: {e}")))??
    };
    check_copartitioned(&groups, &counts)?;
    let changelog_partitions = counts
        .get(&opts.changelog_topic)
        .copied()
        .unwrap_or(opts.partitions);

    let producer: FutureProducer = {
        let mut c = producer_config(&opts);
        if opts.guarantee == Guarantee::ExactlyOnce {
            c.set("transactional.id", opts.transactional_id())
                .set("transaction.timeout.ms", "60000");
        }
        c.create()
            .map_err(|e| CoordinatorError::kafka("creating the producer", e))?
    };
    if opts.guarantee == Guarantee::ExactlyOnce {
        let (p, timeout, bootstrap) = (
            producer.clone(),
            opts.kafka_timeout,
            opts.kafka.bootstrap_servers.clone(),
        );
        tokio::task::spawn_blocking(move || p.init_transactions(Timeout::After(timeout)))
            .await
            .map_err(|e| CoordinatorError::Startup(format!("init_transactions task: {e}")))?
            .map_err(|e| CoordinatorError::TransactionsUnsupported {
                bootstrap,
                reason: e.to_string(),
            })?;
        tracing::info!(transactional_id = %opts.transactional_id(), "transactions initialised; earlier instances with this id are fenced");
    }
    let command_producer: FutureProducer = producer_config(&opts)
        .create()
        .map_err(|e| CoordinatorError::kafka("creating the command producer", e))?;

    let rebalance = Arc::new(Mutex::new(RebalanceEvents::default()));
    let mut consumer_config = opts.kafka.consumer_config();
    // Defaults a `kafka.client` setting may override: a dead replica's partitions move after
    // 10 s.
    for (k, v) in [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        if !opts.kafka.client.contains_key(k) {
            consumer_config.set(k, v);
        }
    }
    let consumer: StreamConsumer<RebalanceContext> = consumer_config
        .set("group.id", &opts.group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .create_with_context(RebalanceContext {
            events: Arc::clone(&rebalance),
        })
        .map_err(|e| CoordinatorError::kafka("creating the consumer", e))?;
    let topic_refs: Vec<&str> = input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|e| CoordinatorError::kafka("subscribing", e))?;
    tracing::info!(group = %opts.group_id, topics = ?input_topics, guarantee = ?opts.guarantee, "coordinator subscribed");

    let view = Arc::new(SagaView::new());
    let ready = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();
    let tailer = tokio::spawn(tail_changelog(
        opts.kafka.consumer_config(),
        opts.changelog_topic.clone(),
        changelog_partitions,
        Arc::clone(&view),
        cancel.clone(),
    ));
    let runtime = Runtime {
        codec: Codec::new(Arc::clone(&opts.registry)),
        opts: Arc::clone(&opts),
        consumer,
        producer,
        owned: HashMap::new(),
        index: DeadlineIndex::default(),
        rebalance,
        ready: Arc::clone(&ready),
        assigned_once: false,
        last_gauge: Instant::now(),
        same_schema: HashMap::new(),
    };
    let task = tokio::spawn(runtime.run(cancel.clone()));
    Ok(CoordinatorHandle {
        drain_timeout: opts.drain_timeout,
        view,
        ready,
        cancel,
        task,
        tailer,
        commands: CommandPublisher {
            producer: command_producer,
            topic: opts.commands_topic.clone(),
        },
    })
}

#[derive(Debug, Default)]
struct RebalanceEvents {
    assigned: BTreeSet<i32>,
    revoked: BTreeSet<i32>,
    changed: bool,
}

/// A client context that does not report the end of a partition as an error (the restore and
/// view consumers ask for those events on purpose).
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        tracing::error!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for QuietEof {}

struct RebalanceContext {
    events: Arc<Mutex<RebalanceEvents>>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut e = self.events.lock().unwrap_or_else(|p| p.into_inner());
            for el in tpl.elements() {
                e.revoked.insert(el.partition());
                e.assigned.remove(&el.partition());
            }
            e.changed = true;
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut e = self.events.lock().unwrap_or_else(|p| p.into_inner());
            for el in tpl.elements() {
                e.assigned.insert(el.partition());
            }
            e.changed = true;
        }
    }
}

fn now_millis() -> Millis {
    Millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX),
    )
}

/// What one batch changes; applied to memory only after its commit.
#[derive(Default)]
struct Staged {
    states: HashMap<String, (i32, SagaState)>,
    tombstones: Vec<(i32, String)>,
    index_sets: Vec<(i32, String, Due, Millis)>,
    index_cancels: Vec<(String, Due)>,
    next_offsets: BTreeMap<(String, i32), i64>,
    transitions: Vec<(String, Status, Status)>,
    lateness: Vec<f64>,
    deliveries: Vec<DeliveryFuture>,
    dead_lettered: u64,
    inputs: BTreeMap<&'static str, u64>,
}

struct Runtime {
    opts: Arc<CoordinatorOptions>,
    consumer: StreamConsumer<RebalanceContext>,
    producer: FutureProducer,
    codec: Codec,
    owned: HashMap<i32, HashMap<String, SagaState>>,
    index: DeadlineIndex,
    rebalance: Arc<Mutex<RebalanceEvents>>,
    ready: Arc<AtomicBool>,
    assigned_once: bool,
    last_gauge: Instant,
    /// Per writer schema id: whether it is the catalog's latest schema of its event type.
    same_schema: HashMap<u32, bool>,
}

enum BatchError {
    /// Give up this batch; rewind and try again.
    Retry(String),
    /// Stop the coordinator.
    Fatal(CoordinatorError),
}

impl Runtime {
    async fn run(mut self, cancel: CancellationToken) -> Result<(), CoordinatorError> {
        let mut failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let mut batch = self.collect(&cancel).await;
            let (revoked, assigned) = self.take_rebalance();
            if !revoked.is_empty() {
                batch.retain(|m| !revoked.contains(&m.partition()));
                for p in &revoked {
                    self.owned.remove(p);
                    self.index.forget_partition(*p);
                }
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            if !assigned.is_empty() {
                self.ready.store(false, Ordering::Release);
                if let Err(e) = self.restore(&assigned).await {
                    tracing::error!(error = %e, "restore failed");
                    return Err(e);
                }
            }
            if self.assigned_once {
                self.ready.store(true, Ordering::Release);
            }
            batch.retain(|m| self.owned.contains_key(&m.partition()));
            let now = now_millis();
            let due = self.index.due(now, self.opts.batch_max_records);
            if batch.is_empty() && due.is_empty() {
                self.update_gauges();
                continue;
            }
            match self.process(&batch, &due, now).await {
                Ok(()) => failures = 0,
                Err(BatchError::Fatal(e)) => {
                    tracing::error!(error = %e, "coordinator stopping");
                    return Err(e);
                }
                Err(BatchError::Retry(why)) => {
                    failures += 1;
                    metrics::counter!(m::TRANSACTION_ABORTS).increment(1);
                    tracing::warn!(reason = %why, failures, "batch aborted; rewinding and retrying");
                    self.rewind(&batch);
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                }
            }
            self.update_gauges();
        }
        tracing::info!("coordinator stopped");
        Ok(())
    }

    fn take_rebalance(&mut self) -> (BTreeSet<i32>, BTreeSet<i32>) {
        let mut e = self.rebalance.lock().unwrap_or_else(|p| p.into_inner());
        if !e.changed {
            return (BTreeSet::new(), BTreeSet::new());
        }
        e.changed = false;
        self.assigned_once = true;
        let revoked = std::mem::take(&mut e.revoked);
        let assigned: BTreeSet<i32> = e
            .assigned
            .iter()
            .copied()
            .filter(|p| !self.owned.contains_key(p) || revoked.contains(p))
            .collect();
        (revoked, assigned)
    }

    /// Collects up to `batch_max_records` records: waits for the first until the next deadline
    /// (at most 100 ms), then lingers `batch_linger` for more.
    async fn collect(&mut self, cancel: &CancellationToken) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let now = now_millis();
        let until_deadline = self
            .index
            .next_at()
            .map_or(Duration::from_millis(100), |at| {
                Duration::from_millis(at.0.saturating_sub(now.0)).min(Duration::from_millis(100))
            });
        let first = tokio::select! {
            () = cancel.cancelled() => return batch,
            r = tokio::time::timeout(until_deadline, self.consumer.recv()) => r,
        };
        match first {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                return batch;
            }
            Err(_) => return batch,
        }
        let linger_until = tokio::time::Instant::now() + self.opts.batch_linger;
        while batch.len() < self.opts.batch_max_records {
            match tokio::time::timeout_at(linger_until, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Reads the changelog partitions just assigned and rebuilds their deadline index.
    async fn restore(&mut self, partitions: &BTreeSet<i32>) -> Result<(), CoordinatorError> {
        for &p in partitions {
            let started = Instant::now();
            let (client, topic, timeout) = (
                self.opts.kafka.consumer_config(),
                self.opts.changelog_topic.clone(),
                self.opts.kafka_timeout,
            );
            let states = tokio::task::spawn_blocking(move || {
                read_changelog_partition(&client, &topic, p, timeout)
            })
            .await
            .map_err(|e| CoordinatorError::Startup(format!("restore task: {e}")))??;
            self.index.forget_partition(p);
            let retention = self.opts.completed_retention;
            for s in states.values() {
                for d in s.deadlines() {
                    self.index
                        .set(p, &s.saga_id, Due::Deadline(d.kind.clone()), d.at);
                }
                if s.status.is_terminal() {
                    self.index
                        .set(p, &s.saga_id, Due::Expiry, s.updated_at.plus(retention));
                }
            }
            let n = states.len();
            self.owned.insert(p, states);
            let secs = started.elapsed().as_secs_f64();
            metrics::histogram!(m::RESTORE_SECONDS).record(secs);
            metrics::counter!(m::RESTORED_SAGAS).increment(n as u64);
            tracing::info!(
                partition = p,
                sagas = n,
                seconds = secs,
                "partition restored from the changelog"
            );
        }
        Ok(())
    }

    fn rewind(&mut self, batch: &[OwnedMessage]) {
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for msg in batch {
            first
                .entry((msg.topic().to_owned(), msg.partition()))
                .or_insert(msg.offset());
        }
        for ((topic, p), offset) in first {
            if let Err(e) =
                self.consumer
                    .seek(&topic, p, Offset::Offset(offset), Duration::from_secs(10))
            {
                tracing::warn!(error = %e, topic = %topic, partition = p, "seek after abort failed");
            }
        }
    }

    fn update_gauges(&mut self) {
        if self.last_gauge.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_gauge = Instant::now();
        let mut per_def: BTreeMap<&str, u64> = BTreeMap::new();
        for d in self.opts.definitions.iter() {
            per_def.entry(d.name()).or_insert(0);
        }
        for states in self.owned.values() {
            for s in states.values() {
                if !s.status.is_terminal() {
                    *per_def.entry(s.definition.as_str()).or_insert(0) += 1;
                }
            }
        }
        for (d, n) in per_def {
            metrics::gauge!(m::SAGAS_IN_FLIGHT, m::LABEL_DEFINITION => d.to_owned()).set(n as f64);
        }
    }

    fn current(&self, staged: &Staged, partition: i32, saga_id: &str) -> Option<SagaState> {
        staged
            .states
            .get(saga_id)
            .map(|(_, s)| s.clone())
            .or_else(|| {
                self.owned
                    .get(&partition)
                    .and_then(|m| m.get(saga_id))
                    .cloned()
            })
    }

    async fn process(
        &mut self,
        batch: &[OwnedMessage],
        due: &[crate::index::Entry],
        now: Millis,
    ) -> Result<(), BatchError> {
        let exactly_once = self.opts.guarantee == Guarantee::ExactlyOnce;
        if exactly_once {
            self.producer
                .begin_transaction()
                .map_err(|e| classify(&e, "begin_transaction"))?;
        }
        let mut staged = Staged::default();
        let result = self.stage(batch, due, now, &mut staged).await;
        if let Err(e) = result {
            if exactly_once {
                let _ = self.block(|p, t| p.abort_transaction(t));
            }
            return Err(e);
        }
        // The saga states, once per saga per batch, to the partition the saga's inputs live on.
        let changelog = &self.opts.changelog_topic;
        for (saga_id, (p, state)) in &staged.states {
            let value = state
                .to_json()
                .map_err(|e| BatchError::Retry(format!("serialising {saga_id}: {e}")))?;
            let headers = OwnedHeaders::new();
            let sent = self.send(changelog, Some(*p), saga_id, Some(&value), headers)?;
            staged.deliveries.push(sent);
        }
        for (p, saga_id) in &staged.tombstones {
            let sent = self.send(changelog, Some(*p), saga_id, None, OwnedHeaders::new())?;
            staged.deliveries.push(sent);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), next) in &staged.next_offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
                .map_err(|e| BatchError::Retry(format!("offset list: {e}")))?;
        }
        let started = Instant::now();
        // Wait for every record's acknowledgement first: `commit_transaction` would otherwise
        // flush in-flight records itself, and rdkafka's flush then waits out its whole poll
        // interval (100 ms) because the delivery reports go to the producer's own thread.
        for d in futures::future::join_all(std::mem::take(&mut staged.deliveries)).await {
            let failed = match d {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(format!("delivery failed: {e}")),
                Err(_) => Some("delivery cancelled".to_owned()),
            };
            if let Some(why) = failed {
                if exactly_once {
                    let _ = self.block(|p, t| p.abort_transaction(t));
                }
                return Err(BatchError::Retry(why));
            }
        }
        if exactly_once {
            if tpl.count() > 0 {
                let cgm = self
                    .consumer
                    .group_metadata()
                    .ok_or_else(|| BatchError::Retry("no group metadata yet".into()))?;
                if let Err(e) = self.block(|p, t| p.send_offsets_to_transaction(&tpl, &cgm, t)) {
                    let _ = self.block(|p, t| p.abort_transaction(t));
                    return Err(classify(&e, "send_offsets_to_transaction"));
                }
            }
            if let Err(e) = self.block(|p, t| p.commit_transaction(t)) {
                let _ = self.block(|p, t| p.abort_transaction(t));
                return Err(classify(&e, "commit_transaction"));
            }
        } else if tpl.count() > 0 {
            let consumer = &self.consumer;
            tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync))
                .map_err(|e| BatchError::Retry(format!("offset commit: {e}")))?;
        }
        metrics::histogram!(m::TRANSACTION_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::BATCH_RECORDS).record(batch.len() as f64);
        self.apply_committed(staged);
        Ok(())
    }

    fn block<R>(
        &self,
        f: impl FnOnce(&FutureProducer, Timeout) -> Result<R, KafkaError>,
    ) -> Result<R, KafkaError> {
        let timeout = Timeout::After(self.opts.kafka_timeout);
        tokio::task::block_in_place(|| f(&self.producer, timeout))
    }

    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, BatchError> {
        let mut rec = FutureRecord::<str, [u8]>::to(topic)
            .key(key)
            .headers(headers);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        self.producer
            .send_result(rec)
            .map_err(|(e, _)| BatchError::Retry(format!("enqueue to {topic}: {e}")))
    }

    fn apply_committed(&mut self, staged: Staged) {
        for (saga_id, due) in staged.index_cancels {
            self.index.cancel(&saga_id, &due);
        }
        for (p, saga_id, due, at) in staged.index_sets {
            self.index.set(p, &saga_id, due, at);
        }
        // The operator view follows the changelog (see `tail_changelog`), like every replica's.
        for (saga_id, (p, state)) in staged.states {
            self.owned.entry(p).or_default().insert(saga_id, state);
        }
        for (p, saga_id) in staged.tombstones {
            if let Some(m) = self.owned.get_mut(&p) {
                m.remove(&saga_id);
            }
            self.index.forget_saga(&saga_id);
        }
        for (def, from, to) in staged.transitions {
            let counter = match to {
                Status::Running if matches!(from, Status::Pending) => Some(m::SAGAS_STARTED),
                Status::Completed => Some(m::SAGAS_COMPLETED),
                Status::Compensated => Some(m::SAGAS_COMPENSATED),
                Status::NeedsOperator => Some(m::SAGAS_NEEDS_OPERATOR),
                _ => None,
            };
            if let Some(c) = counter {
                metrics::counter!(c, m::LABEL_DEFINITION => def).increment(1);
            }
        }
        for l in staged.lateness {
            metrics::histogram!(m::DEADLINE_LATENESS_SECONDS).record(l);
        }
        for (kind, n) in staged.inputs {
            metrics::counter!(m::INPUTS, m::LABEL_KIND => kind).increment(n);
        }
        if staged.dead_lettered > 0 {
            metrics::counter!(m::DEAD_LETTERED).increment(staged.dead_lettered);
        }
    }

    async fn stage(
        &mut self,
        batch: &[OwnedMessage],
        due: &[crate::index::Entry],
        now: Millis,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        for msg in batch {
            staged
                .next_offsets
                .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
            if msg.topic() == self.opts.commands_topic {
                *staged.inputs.entry("command").or_default() += 1;
                self.stage_command(msg, now, staged).await?;
            } else {
                self.stage_event(msg, now, staged).await?;
            }
        }
        for entry in due {
            let Some(mut state) = self.current(staged, entry.partition, &entry.saga_id) else {
                staged
                    .index_cancels
                    .push((entry.saga_id.clone(), entry.due.clone()));
                continue;
            };
            match &entry.due {
                Due::Expiry => {
                    if state.status.is_terminal() {
                        staged.states.remove(&entry.saga_id);
                        staged
                            .tombstones
                            .push((entry.partition, entry.saga_id.clone()));
                    } else {
                        staged
                            .index_cancels
                            .push((entry.saga_id.clone(), Due::Expiry));
                    }
                }
                Due::Deadline(kind) => {
                    *staged.inputs.entry("deadline").or_default() += 1;
                    staged
                        .lateness
                        .push(now.0.saturating_sub(entry.at.0) as f64 / 1000.0);
                    // The index entry goes whatever the saga decides; a re-armed deadline comes
                    // back as a SetDeadline action.
                    staged
                        .index_cancels
                        .push((entry.saga_id.clone(), entry.due.clone()));
                    let Some(def) = self.opts.definitions.for_state(&state).cloned() else {
                        continue;
                    };
                    let actions = apply(
                        &def,
                        &mut state,
                        &Input::Deadline { kind: kind.clone() },
                        now,
                    );
                    self.perform(entry.partition, &state, actions, None, staged)
                        .await?;
                    self.stage_state(entry.partition, state, now, staged);
                }
            }
        }
        Ok(())
    }

    fn stage_state(&self, partition: i32, state: SagaState, now: Millis, staged: &mut Staged) {
        if state.status.is_terminal() {
            staged.index_sets.push((
                partition,
                state.saga_id.clone(),
                Due::Expiry,
                now.plus(self.opts.completed_retention),
            ));
        }
        staged
            .states
            .insert(state.saga_id.clone(), (partition, state));
    }

    async fn stage_command(
        &mut self,
        msg: &OwnedMessage,
        now: Millis,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        let record: CommandRecord = match msg.payload().map(serde_json::from_slice::<CommandRecord>)
        {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                return self.dead_letter(msg, "malformed_command", &e.to_string(), staged);
            }
            None => return self.dead_letter(msg, "malformed_command", "empty value", staged),
        };
        let saga_id = format!("{}/{}", record.definition, record.correlation_id);
        let Some(mut state) = self.current(staged, msg.partition(), &saga_id) else {
            tracing::warn!(saga_id = %saga_id, command = ?record.command, "command for an unknown saga ignored");
            return Ok(());
        };
        let Some(def) = self.opts.definitions.for_state(&state).cloned() else {
            return Ok(());
        };
        let actions = apply(
            &def,
            &mut state,
            &Input::Command(record.command.clone()),
            now,
        );
        tracing::info!(saga_id = %saga_id, correlation_id = %record.correlation_id, command = ?record.command, operator = record.operator.as_deref().unwrap_or(""), "operator command applied");
        self.perform(msg.partition(), &state, actions, None, staged)
            .await?;
        self.stage_state(msg.partition(), state, now, staged);
        Ok(())
    }

    async fn stage_event(
        &mut self,
        msg: &OwnedMessage,
        now: Millis,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        let Some(value) = msg.payload() else {
            return self.dead_letter(msg, "truncated", "no value", staged);
        };
        let writer = match self.codec.writer_schema(value).await {
            Ok(w) => w,
            Err(WriterSchemaError::Poison(decode)) => {
                return self.dead_letter(msg, decode.kind(), &decode.to_string(), staged);
            }
            Err(WriterSchemaError::Unavailable(registry)) => {
                return Err(BatchError::Retry(format!("schema registry: {registry}")));
            }
        };
        let Some(event_type) = writer.full_name() else {
            return self.dead_letter(
                msg,
                "malformed_avro",
                "the writer schema is not a named record",
                staged,
            );
        };
        let interested: Vec<String> = self
            .opts
            .definitions
            .interested_in(&event_type)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if interested.is_empty() {
            return Ok(()); // another service's event (or one the coordinator emitted)
        }
        *staged.inputs.entry("event").or_default() += 1;
        let catalog = Arc::clone(&self.opts.catalog);
        let Some(reader) = catalog.event(&event_type).map(|e| &e.latest().schema) else {
            return self.dead_letter(
                msg,
                "unknown_event_type",
                &format!("{event_type} is not in the catalog"),
                staged,
            );
        };
        let body = match unframe(value) {
            Ok((_, b)) => b,
            Err(d) => return self.dead_letter(msg, d.kind(), &d.to_string(), staged),
        };
        // Resolution is the costliest step of decoding; skip it when the writer wrote with the
        // reader's own schema (decided once per schema id).
        let same = *self
            .same_schema
            .entry(writer.id)
            .or_insert_with(|| choreo_bus::codec::same_schema(&writer.schema, reader));
        let data = match decode_value(&writer.schema, (!same).then_some(reader), body)
            .and_then(|v| avro_to_json(&v))
        {
            Ok(d) => d,
            Err(d) => return self.dead_letter(msg, d.kind(), &d.to_string(), staged),
        };
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let envelope = Envelope::from_headers(msg.headers(), key.as_deref());
        let id = if envelope.id.is_empty() {
            format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset())
        } else {
            envelope.id.clone()
        };
        let time = Millis(
            msg.timestamp()
                .to_millis()
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(now.0),
        );
        for name in interested {
            let Some(latest) = self.opts.definitions.latest(&name).cloned() else {
                continue;
            };
            let Some(correlation_id) = latest.correlation_id(key.as_deref(), &data) else {
                return self.dead_letter(
                    msg,
                    "missing_key",
                    "no correlation id: the record has no key and no correlation field",
                    staged,
                );
            };
            let saga_id = format!("{name}/{correlation_id}");
            let mut state = match self.current(staged, msg.partition(), &saga_id) {
                Some(s) => s,
                None => {
                    if matches!(
                        latest.role_of(&event_type),
                        Some(choreo_saga::Role::Ack(_)) | None
                    ) {
                        tracing::debug!(saga_id = %saga_id, event_type = %event_type, "acknowledgement for a saga that is not here (finished and expired?)");
                        continue;
                    }
                    SagaState::new(&latest, correlation_id.clone(), now)
                }
            };
            let Some(def) = self.opts.definitions.for_state(&state).cloned() else {
                tracing::error!(saga_id = %saga_id, version = state.version, "the definition version this saga is pinned to is not loaded; input skipped");
                continue;
            };
            let input = Input::Event(Event {
                id: id.clone(),
                event_type: event_type.clone(),
                correlation_id: correlation_id.clone(),
                time,
                data: data.clone(),
            });
            let actions = apply(&def, &mut state, &input, now);
            self.perform(msg.partition(), &state, actions, Some(&envelope), staged)
                .await?;
            self.stage_state(msg.partition(), state, now, staged);
        }
        Ok(())
    }

    async fn perform(
        &mut self,
        partition: i32,
        state: &SagaState,
        actions: Vec<Action>,
        cause: Option<&Envelope>,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        for action in actions {
            match action {
                Action::Emit(e) => {
                    let Some(info) = self.opts.catalog.event(&e.event_type) else {
                        return Err(BatchError::Fatal(CoordinatorError::Startup(format!(
                            "{} is not in the catalog",
                            e.event_type
                        ))));
                    };
                    let latest = info.latest();
                    let value = apache_avro::to_value(AvroJson(&e.data))
                        .and_then(|v| v.resolve(&latest.schema))
                        .map_err(|err| {
                            BatchError::Fatal(CoordinatorError::Startup(format!(
                                "saga {} emits {} with data that does not fit its schema: {err}",
                                state.saga_id, e.event_type
                            )))
                        })?;
                    let bytes = self
                        .codec
                        .encode_value(&e.topic, &e.event_type, &latest.text, &latest.schema, value)
                        .await
                        .map_err(|err| BatchError::Retry(err.to_string()))?;
                    let envelope = Envelope {
                        id: e.event_id.to_string(),
                        source: format!("/choreo/sagas/{}", state.definition),
                        event_type: e.event_type.clone(),
                        time: now_rfc3339(),
                        correlation_id: e.key.clone(),
                        causation_id: cause.map(|c| c.id.clone()).filter(|s| !s.is_empty()),
                        traceparent: Some(
                            cause
                                .and_then(|c| c.traceparent)
                                .map_or_else(TraceParent::new_root, |t| t.child()),
                        ),
                    };
                    tracing::debug!(saga_id = %state.saga_id, correlation_id = %e.key, event_type = %e.event_type, event_id = %envelope.id, kind = ?e.kind, attempt = e.attempt, "emit");
                    let sent =
                        self.send(&e.topic, None, &e.key, Some(&bytes), envelope.to_headers())?;
                    staged.deliveries.push(sent);
                }
                Action::SetDeadline(d) => staged.index_sets.push((
                    partition,
                    state.saga_id.clone(),
                    Due::Deadline(d.kind),
                    d.at,
                )),
                Action::CancelDeadline { kind } => staged
                    .index_cancels
                    .push((state.saga_id.clone(), Due::Deadline(kind))),
                Action::Status { from, to, reason } => {
                    tracing::info!(saga_id = %state.saga_id, correlation_id = %state.correlation_id, from = ?from, to = ?to, reason = %reason, "saga status");
                    staged
                        .transitions
                        .push((state.definition.clone(), from, to));
                }
                Action::Rejected { reason } => {
                    tracing::debug!(saga_id = %state.saga_id, correlation_id = %state.correlation_id, reason = %reason, "input rejected");
                }
            }
        }
        Ok(())
    }

    /// Sends a poison input to `<topic>.dlq`, in the same transaction as the batch.
    fn dead_letter(
        &self,
        msg: &OwnedMessage,
        kind: &'static str,
        reason: &str,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        let headers = choreo_bus::dead_letter::headers_for(
            msg,
            &choreo_bus::dead_letter::Reason {
                kind,
                message: reason.to_owned(),
                handler: Some("saga-coordinator".to_owned()),
                attempts: 1,
            },
            &self.opts.group_id,
        );
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), correlation_id = %key, kind, reason, "input dead-lettered");
        let dlq_topic = format!("{}.dlq", msg.topic());
        let mut rec = FutureRecord::<[u8], [u8]>::to(&dlq_topic).headers(headers);
        if let Some(p) = msg.payload() {
            rec = rec.payload(p);
        }
        if let Some(k) = msg.key() {
            rec = rec.key(k);
        }
        let result = match self.producer.send_result(rec) {
            Ok(f) => {
                staged.deliveries.push(f);
                Ok(())
            }
            Err((e, _)) => Err(BatchError::Retry(format!("enqueue dead letter: {e}"))),
        };
        staged.dead_lettered += 1;
        result
    }
}

/// Serializes JSON for Avro: integers as `long` (serde_json would hand non-negative integers
/// over as `u64`, which Avro has no type for), then schema resolution narrows them.
struct AvroJson<'a>(&'a serde_json::Value);

impl Serialize for AvroJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value as J;
        match self.0 {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => s.serialize_i64(i),
                None => s.serialize_f64(n.as_f64().unwrap_or(0.0)),
            },
            J::String(t) => s.serialize_str(t),
            J::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&AvroJson(i))?;
                }
                seq.end()
            }
            J::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &AvroJson(v))?;
                }
                map.end()
            }
        }
    }
}

/// Converts a decoded Avro value into JSON for the saga core.
fn avro_to_json(v: &AvroValue) -> Result<serde_json::Value, choreo_bus::DecodeError> {
    serde_json::Value::try_from(v.clone())
        .map_err(|e| choreo_bus::DecodeError::Malformed(e.to_string()))
}

fn classify(e: &KafkaError, what: &str) -> BatchError {
    if let KafkaError::Transaction(t) = e
        && (t.is_fatal()
            || matches!(
                t.code(),
                RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            ))
    {
        return BatchError::Fatal(CoordinatorError::Fenced(format!("{what}: {t}")));
    }
    if matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fatal)
    ) {
        return BatchError::Fatal(CoordinatorError::Fenced(format!("{what}: {e}")));
    }
    BatchError::Retry(format!("{what}: {e}"))
}

/// Reads one changelog partition to its end (read_committed): the latest state of every saga.
fn read_changelog_partition(
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<HashMap<String, SagaState>, CoordinatorError> {
    let consumer: BaseConsumer<QuietEof> = client
        .clone()
        .set("group.id", "choreo-restore")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(QuietEof)
        .map_err(|e| CoordinatorError::kafka("creating the restore consumer", e))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| CoordinatorError::kafka(format!("watermarks of {topic}/{partition}"), e))?;
    let mut states = HashMap::new();
    if high <= low {
        return Ok(states);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| CoordinatorError::kafka("restore assignment", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| CoordinatorError::kafka("restore assignment", e))?;
    let deadline = Instant::now() + timeout.max(Duration::from_secs(60));
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                match m.payload() {
                    None => {
                        states.remove(&key);
                    }
                    Some(v) => match SagaState::from_json(v) {
                        Ok(s) => {
                            states.insert(key, s);
                        }
                        Err(e) => {
                            tracing::error!(key = %key, error = %e, "unreadable saga state in the changelog; skipped")
                        }
                    },
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => tracing::warn!(error = %e, "restore"),
            None => {}
        }
        if Instant::now() > deadline {
            return Err(CoordinatorError::Startup(format!(
                "restoring {topic}/{partition} did not reach its end within {timeout:?}"
            )));
        }
    }
    Ok(states)
}

/// Keeps the operator view: reads every changelog partition, forever.
async fn tail_changelog(
    client: ClientConfig,
    topic: String,
    partitions: i32,
    view: Arc<SagaView>,
    cancel: CancellationToken,
) {
    let consumer: StreamConsumer<QuietEof> = match client
        .clone()
        .set("group.id", "choreo-view")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(QuietEof)
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the view consumer; the operator API will be empty");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = tpl.add_partition_offset(&topic, p, Offset::Beginning);
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::error!(error = %e, "cannot assign the changelog to the view consumer");
        return;
    }
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    loop {
        let r = tokio::select! {
            () = cancel.cancelled() => return,
            r = consumer.recv() => r,
        };
        match r {
            Ok(m) => {
                let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                match m.payload() {
                    None => view.remove(&key),
                    Some(v) => {
                        if let Ok(s) = SagaState::from_json(v) {
                            view.upsert(s);
                        }
                    }
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if at_end.len() >= usize::try_from(partitions).unwrap_or(0) && !view.is_caught_up()
                {
                    view.set_caught_up();
                    tracing::info!(
                        sagas = view.len(),
                        "operator view caught up with the changelog"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "view consumer");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
