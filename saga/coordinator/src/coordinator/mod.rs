//! The coordinator service: runs the saga core against Kafka.
//!
//! ## Layout
//!
//! - this file: options, the handle, start-up (topics, the producer, the consumer);
//! - `runtime.rs`: the loop — batches, rebalances, restore on assignment, recovery;
//! - `transaction.rs`: one batch's transaction (where exactly-once and effectively-once fork);
//! - `stage.rs`: inputs through the pure state machine into the batch's records;
//! - `changelog.rs`: reading the changelog back (restore, and the operator view's tail);
//! - `sweep.rs`: after every `init_transactions`, closing as aborted whatever an earlier
//!   producer with the same transactional id left open (a marker the broker skipped).
//!
//! Imports go one way: runtime → transaction → stage → the saga core; changelog and sweep
//! are leaves.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo_bus::BusConfig;
use choreo_bus::wire::codec::Codec;
use choreo_saga::Definitions;
use choreo_schemas::{Catalog, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::command::CommandRecord;
use crate::error::CoordinatorError;
use crate::index::DeadlineIndex;
use crate::topics::{TopicSpec, check_copartitioned, ensure_topics, partition_counts};
use crate::view::SagaView;

pub(crate) mod changelog;
pub use changelog::QuietEof;
mod runtime;
mod stage;
mod stored;
mod sweep;
mod transaction;

pub use stage::MAX_STATE_BYTES;

use runtime::{RebalanceContext, RebalanceEvents, Runtime};

/// The coordinator consumer's session timeout unless `kafka.client` sets one: a dead replica's
/// partitions move after this long.
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Compacted saga state topic; unset: derived from the group (see [`Self::changelog_topic`]).
    pub changelog_topic: Option<String>,
    /// Operator commands topic; unset: derived from the group (see [`Self::commands_topic`]).
    pub commands_topic: Option<String>,
    /// Partitions of topics created at start-up.
    pub partitions: i32,
    /// Replication factor of topics created at start-up; unset: the cluster's
    /// `default.replication.factor`.
    pub replication_factor: Option<i32>,
    /// Whether to create missing topics.
    pub create_topics: bool,
    /// Whether the brokers are choreo's embedded broker (librdkafka's mock cluster), which
    /// answers neither CreateTopics nor DescribeConfigs: set by
    /// [`Self::create_topics_on`]. The start-up check of the changelog's `cleanup.policy` is
    /// then skipped rather than waited out for the Kafka timeout.
    pub embedded_broker: bool,
    /// Records per transaction, at most.
    pub batch_max_records: usize,
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// How long a finished saga is kept before it is tombstoned.
    pub completed_retention: Duration,
    /// How long a saga that needs an operator is kept after its last change when nobody acts
    /// (then it is deleted, with an error line and `choreo_sagas_expired_total`).
    pub needs_operator_retention: Duration,
    /// At most this many sagas of this replica wait for their start event (created by a
    /// success or failure that came first); beyond it, such an event is dead-lettered
    /// (`no_saga`) rather than held. Checked against a count refreshed every second.
    pub max_pending_sagas: usize,
    /// Upper bound for broker calls (transactions, metadata, restore).
    pub kafka_timeout: Duration,
    /// `transaction.timeout.ms`: how long the broker lets a transaction stay open before it
    /// aborts it. A frozen replica's open transaction is aborted this long after it began, and
    /// a new owner of its partitions waits for that before it restores them.
    pub transaction_timeout: Duration,
    /// How long shutdown waits for the batch in hand to commit before giving up on it (it is
    /// then aborted by the broker's transaction timeout, and its inputs are read again).
    pub drain_timeout: Duration,
    /// The process's shutdown signal: the coordinator stops on it (as on
    /// [`CoordinatorHandle::shutdown`]) through a child token; a fresh token by default.
    pub shutdown: CancellationToken,
    /// Faults a test injects into the running coordinator; none by default.
    #[doc(hidden)]
    pub faults: Faults,
}

/// Faults a test injects into a running coordinator, to watch it recover (none by default).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The next this many transactions are aborted where they would commit, as a broker
    /// answering the commit with an abortable error makes them.
    pub abort_commits: Arc<std::sync::atomic::AtomicU32>,
}

impl Faults {
    /// Whether to abort this commit (one fewer to abort after it).
    pub(crate) fn abort_commit(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.abort_commits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// `<group>.<suffix>`, with every character a topic name may not hold (`[A-Za-z0-9._-]` only)
/// written as `_`, cut to Kafka's 249 characters.
pub fn derived_topic(group: &str, suffix: &str) -> String {
    let clean: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let keep = 249usize.saturating_sub(suffix.len() + 1);
    let clean: String = clean.chars().take(keep).collect();
    format!("{clean}.{suffix}")
}

/// The default of every coordinator setting, written once: [`CoordinatorOptions::new`] and the
/// configuration file's defaults ([`crate::config`]) both take them from here.
pub mod defaults {
    use std::time::Duration;

    /// `kafka.group_id`.
    pub const GROUP_ID: &str = "choreo-coordinator";
    /// `coordinator.instance_id` when neither the file nor `HOSTNAME` names one.
    pub const INSTANCE_ID: &str = "choreo-0";
    /// What the changelog's name is derived from: `<group>.saga-state` (see
    /// [`super::derived_topic`]).
    pub const CHANGELOG_SUFFIX: &str = "saga-state";
    /// What the commands topic's name is derived from: `<group>.saga-commands`.
    pub const COMMANDS_SUFFIX: &str = "saga-commands";
    /// What the re-keying topic's name is derived from: `<group>.saga-rekey`. An input whose
    /// correlation id belongs to another partition than the one it arrived on (keyed otherwise,
    /// correlated by a field, or produced with another partitioner) is forwarded through it,
    /// keyed by its correlation id, to the partition that owns the saga.
    pub const REKEY_SUFFIX: &str = "saga-rekey";
    /// The changelog every coordinator group shared before the names were derived from the
    /// group (see [`super::legacy_changelog_check`]).
    pub const LEGACY_CHANGELOG_TOPIC: &str = "choreo.saga-state";
    /// The commands topic every coordinator group shared before.
    pub const LEGACY_COMMANDS_TOPIC: &str = "choreo.saga-commands";
    /// `coordinator.partitions`.
    pub const PARTITIONS: i32 = 6;
    /// `coordinator.batch_max_records`.
    pub const BATCH_MAX_RECORDS: usize = 500;
    /// `coordinator.batch_linger`: 2 ms. Under load a batch fills to `batch_max_records`
    /// within it either way; at half the maximum rate, 10 ms put most of itself on the decision
    /// latency (p99 42–122 ms against 33–43 ms on Apache Kafka, `choreo loadgen --rate`;
    /// BENCHMARKS.md), with the same maximum throughput.
    pub const BATCH_LINGER: Duration = Duration::from_millis(2);
    /// `coordinator.completed_retention`.
    pub const COMPLETED_RETENTION: Duration = Duration::from_secs(3600);
    /// `coordinator.needs_operator_retention`: 30 days.
    pub const NEEDS_OPERATOR_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    /// `coordinator.max_pending_sagas`.
    pub const MAX_PENDING_SAGAS: usize = 100_000;
    /// `coordinator.kafka_timeout`.
    pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
    /// `coordinator.transaction_timeout`.
    pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
    /// `coordinator.drain_timeout`.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
}

impl CoordinatorOptions {
    /// Options with defaults ([`defaults`]) for everything but the brokers, definitions and
    /// registry.
    pub fn new(
        kafka: BusConfig,
        definitions: Arc<Definitions>,
        catalog: Arc<Catalog>,
        registry: Arc<dyn SchemaRegistry>,
    ) -> Self {
        Self {
            kafka,
            group_id: defaults::GROUP_ID.into(),
            instance_id: defaults::INSTANCE_ID.into(),
            guarantee: Guarantee::ExactlyOnce,
            definitions,
            catalog,
            registry,
            changelog_topic: None,
            commands_topic: None,
            partitions: defaults::PARTITIONS,
            replication_factor: None,
            create_topics: true,
            embedded_broker: false,
            batch_max_records: defaults::BATCH_MAX_RECORDS,
            batch_linger: defaults::BATCH_LINGER,
            completed_retention: defaults::COMPLETED_RETENTION,
            max_pending_sagas: defaults::MAX_PENDING_SAGAS,
            needs_operator_retention: defaults::NEEDS_OPERATOR_RETENTION,
            kafka_timeout: defaults::KAFKA_TIMEOUT,
            transaction_timeout: defaults::TRANSACTION_TIMEOUT,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            shutdown: CancellationToken::new(),
            faults: Faults::default(),
        }
    }

    /// The compacted topic of this group's saga states: `coordinator.changelog_topic`, else
    /// `<group_id>.saga-state` — a group of its own never reads another group's sagas (two
    /// groups sharing one changelog would both own, decide and emit for every saga).
    pub fn changelog_topic(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| derived_topic(&self.group_id, defaults::CHANGELOG_SUFFIX))
    }

    /// The topic of this group's operator commands: `coordinator.commands_topic`, else
    /// `<group_id>.saga-commands`.
    pub fn commands_topic(&self) -> String {
        self.commands_topic
            .clone()
            .unwrap_or_else(|| derived_topic(&self.group_id, defaults::COMMANDS_SUFFIX))
    }

    /// The topic through which inputs that arrived on another partition than their saga's are
    /// forwarded: `<group_id>.saga-rekey` ([`defaults::REKEY_SUFFIX`]).
    pub fn rekey_topic(&self) -> String {
        derived_topic(&self.group_id, defaults::REKEY_SUFFIX)
    }

    /// The topics the coordinator consumes: those of every consumed event, the commands topic
    /// and the re-keying topic.
    pub fn input_topics(&self) -> Result<BTreeSet<String>, CoordinatorError> {
        let mut topics = BTreeSet::new();
        for t in self.definitions.consumed_events() {
            topics.insert(self.topic_of(t)?);
        }
        topics.insert(self.commands_topic());
        topics.insert(self.rekey_topic());
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
            topics.insert(self.changelog_topic());
            topics.insert(self.commands_topic());
            topics.insert(self.rekey_topic());
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
        let changelog = self.changelog_topic();
        for (_, topics) in self.saga_topic_groups()? {
            for t in topics {
                specs.entry(t.clone()).or_insert(TopicSpec {
                    compacted: t == changelog,
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
        self.embedded_broker = true;
        Ok(())
    }

    /// The consumer group session timeout the coordinator's consumer runs with.
    pub(crate) fn session_timeout(&self) -> Duration {
        self.kafka
            .consumer
            .get("session.timeout.ms")
            .or_else(|| self.kafka.client.get("session.timeout.ms"))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_millis)
    }

    pub(crate) fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id)
    }
}

/// A running coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    drain_timeout: Duration,
    view: Arc<SagaView>,
    ready: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
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

    /// Whether the owned partitions are restored, batches commit (not failing again and
    /// again), the processing loop runs, and the view has caught up.
    pub fn readiness(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let (ready, healthy, view) = (
            Arc::clone(&self.ready),
            Arc::clone(&self.healthy),
            Arc::clone(&self.view),
        );
        Arc::new(move || {
            ready.load(Ordering::Acquire) && healthy.load(Ordering::Acquire) && view.is_caught_up()
        })
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

/// A transactional producer with its transactions initialised: a previous incarnation with the
/// same transactional id is fenced, and what it left open is aborted.
pub(crate) async fn transactional_producer(
    opts: &CoordinatorOptions,
) -> Result<FutureProducer, CoordinatorError> {
    let mut c = producer_config(opts);
    // librdkafka requires a record's delivery timeout within the transaction's.
    let message_timeout = opts.kafka_timeout.min(opts.transaction_timeout);
    c.set("transactional.id", opts.transactional_id())
        .set(
            "transaction.timeout.ms",
            opts.transaction_timeout.as_millis().to_string(),
        )
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        );
    let producer: FutureProducer = c
        .create()
        .map_err(|e| CoordinatorError::kafka("creating the transactional producer", e))?;
    let (p, timeout) = (producer.clone(), opts.kafka_timeout);
    tokio::task::spawn_blocking(move || p.init_transactions(Timeout::After(timeout)))
        .await
        .map_err(|e| CoordinatorError::Startup(format!("init_transactions task: {e}")))?
        .map_err(|e| init_error(opts, &e))?;
    tracing::info!(transactional_id = %opts.transactional_id(), "transactions initialised; earlier instances with this id are fenced");
    sweep::abort_leftovers(&producer, opts).await?;
    Ok(producer)
}

/// A broker error code as the Kafka protocol names it (`TRANSACTIONAL_ID_AUTHORIZATION_FAILED`),
/// from rdkafka's variant name, so that the line matches Kafka's documentation and logs.
fn protocol_name(code: RDKafkaErrorCode) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// `init_transactions` failed: a refusal (authorization, a broker without transactions) is
/// reported as such, with the setting that runs without them; anything else (a timeout, an
/// unreachable broker) says what it is, without advice to downgrade.
fn init_error(opts: &CoordinatorOptions, e: &KafkaError) -> CoordinatorError {
    let code = match e {
        KafkaError::Transaction(t) => Some(t.code()),
        other => other.rdkafka_error_code(),
    };
    let refused = matches!(
        code,
        Some(
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::InvalidRequest
        )
    );
    let reason = match code {
        Some(c) => format!("{}: {e}", protocol_name(c)),
        None => e.to_string(),
    }
    .replace('\n', " ");
    if refused {
        CoordinatorError::TransactionsUnsupported {
            bootstrap: opts.kafka.bootstrap_servers.clone(),
            reason,
        }
    } else {
        CoordinatorError::Startup(format!(
            "could not initialise transactions with the broker at {} within {:?} ({reason}); is it reachable, and can its transaction coordinator start (transaction.state.log.replication.factor and min.isr no higher than the live brokers)?",
            opts.kafka.bootstrap_servers, opts.kafka_timeout
        ))
    }
}

/// Upgrading from the shared changelog: before the changelog and commands topics were named
/// after the group, every group used `choreo.saga-state` and `choreo.saga-commands`. A group
/// that has run before (it has committed offsets on its input topics) and whose derived
/// changelog does not exist yet keeps its sagas in the old topic: starting it on a new, empty
/// changelog would forget every running saga, so it refuses and says how to carry on. A new
/// group (no committed offsets) starts on its own topics.
async fn legacy_changelog_check(
    opts: &CoordinatorOptions,
    client: &ClientConfig,
) -> Result<(), CoordinatorError> {
    if opts.changelog_topic.is_some() {
        return Ok(());
    }
    let derived = opts.changelog_topic();
    let (legacy, legacy_commands) = (
        defaults::LEGACY_CHANGELOG_TOPIC,
        defaults::LEGACY_COMMANDS_TOPIC,
    );
    let inputs: Vec<String> = opts.input_topics()?.into_iter().collect();
    let (client, group, timeout, derived_name) = (
        client.clone(),
        opts.group_id.clone(),
        opts.kafka_timeout,
        derived.clone(),
    );
    let upgraded = tokio::task::spawn_blocking(move || {
        let mut names: Vec<&str> = inputs.iter().map(String::as_str).collect();
        names.extend([derived_name.as_str(), legacy]);
        let counts = partition_counts(&client, &names, timeout)?;
        if counts.contains_key(&derived_name) || !counts.contains_key(legacy) {
            return Ok(false);
        }
        let inputs: BTreeMap<String, i32> = counts
            .into_iter()
            .filter(|(t, _)| inputs.contains(t))
            .collect();
        crate::topics::group_has_committed(&client, &group, &inputs, timeout)
    })
    .await
    .map_err(|e| CoordinatorError::Startup(format!("metadata task: {e}")))??;
    if upgraded {
        return Err(CoordinatorError::Startup(format!(
            "group {} has run before and its sagas are in {legacy} (the changelog every group shared before changelogs were named after their group), but its own changelog {derived} does not exist yet: starting on it would forget every running saga. To keep them, set coordinator.changelog_topic = \"{legacy}\" and coordinator.commands_topic = \"{legacy_commands}\" (CHOREO__COORDINATOR__CHANGELOG_TOPIC / __COMMANDS_TOPIC); if no other group shares that topic this is all. To start this group afresh, create {derived} (same partitions as its inputs, cleanup.policy=compact) first",
            opts.group_id
        )));
    }
    Ok(())
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
    legacy_changelog_check(&opts, &client).await?;
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
    {
        let (client, group, timeout) = (client.clone(), opts.group_id.clone(), opts.kafka_timeout);
        let inputs: BTreeMap<String, i32> = counts
            .iter()
            .filter(|(t, _)| input_topics.contains(*t))
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        tokio::task::spawn_blocking(move || {
            crate::topics::check_group_access(&client, &group, &inputs, timeout)
        })
        .await
        .map_err(|e| CoordinatorError::Startup(format!("group check task: {e}")))??;
    }
    if !opts.embedded_broker {
        crate::topics::check_changelog_policy(&client, &opts.changelog_topic(), opts.kafka_timeout)
            .await?;
    }
    let changelog_partitions = counts
        .get(&opts.changelog_topic())
        .copied()
        .unwrap_or(opts.partitions);

    let producer: FutureProducer = match opts.guarantee {
        Guarantee::ExactlyOnce => transactional_producer(&opts).await?,
        Guarantee::EffectivelyOnce => producer_config(&opts)
            .create()
            .map_err(|e| CoordinatorError::kafka("creating the producer", e))?,
    };
    let command_producer: FutureProducer = producer_config(&opts)
        .create()
        .map_err(|e| CoordinatorError::kafka("creating the command producer", e))?;

    let rebalance = Arc::new(Mutex::new(RebalanceEvents::default()));
    let mut consumer_config = opts.kafka.consumer_config();
    // Defaults a `kafka.client` or `kafka.consumer` setting may override: a dead replica's
    // partitions move after 10 s.
    let session_ms = DEFAULT_SESSION_TIMEOUT.as_millis().to_string();
    for (k, v) in [
        ("session.timeout.ms", session_ms.as_str()),
        ("heartbeat.interval.ms", "1000"),
    ] {
        if !opts.kafka.client.contains_key(k) && !opts.kafka.consumer.contains_key(k) {
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
    let healthy = Arc::new(AtomicBool::new(true));
    let cancel = opts.shutdown.child_token();
    let tailer = tokio::spawn(changelog::tail_changelog(
        opts.kafka.consumer_config(),
        opts.changelog_topic(),
        changelog_partitions,
        Arc::clone(&view),
        cancel.clone(),
    ));
    let codec = Codec::new(Arc::clone(&opts.registry));
    register_emitted(&codec, &opts).await;
    let runtime = Runtime {
        changelog_topic: opts.changelog_topic(),
        commands_topic: opts.commands_topic(),
        rekey_topic: opts.rekey_topic(),
        partitions: changelog_partitions,
        codec,
        opts: Arc::clone(&opts),
        consumer: Arc::new(consumer),
        producer,
        owned: HashMap::new(),
        view: Arc::clone(&view),
        index: DeadlineIndex::default(),
        rebalance,
        ready: Arc::clone(&ready),
        healthy: Arc::clone(&healthy),
        assigned_once: false,
        last_gauge: Instant::now(),
        positions: HashMap::new(),
        pending_restore: BTreeSet::new(),
        recoveries: VecDeque::new(),
        pending_sagas: 0,
        denied: None,
        unknown_ids: BTreeSet::new(),
        in_flight: None,
        failures: 0,
    };
    let task = tokio::spawn(runtime.run(cancel.clone()));
    Ok(CoordinatorHandle {
        drain_timeout: opts.drain_timeout,
        view,
        ready,
        healthy,
        cancel,
        task,
        tailer,
        commands: CommandPublisher {
            producer: command_producer,
            topic: opts.commands_topic(),
        },
    })
}

/// Registers the schema of every event the definitions may emit before the first batch: a
/// registration is a write to the registry (for choreo's Kafka-backed one, a write to its
/// topic), which inside a transaction could hold it open past the transaction timeout. One
/// that fails here is logged and done again on first use.
async fn register_emitted(codec: &Codec, opts: &CoordinatorOptions) {
    let mut emitted = BTreeSet::new();
    for d in opts.definitions.iter() {
        emitted.extend(d.emitted_events().into_iter().map(str::to_owned));
    }
    for event_type in emitted {
        let Some(topic) = opts.catalog.event(&event_type).map(|e| e.topic.clone()) else {
            continue;
        };
        let registered = tokio::time::timeout(
            opts.kafka_timeout,
            codec.register_latest(&topic, &opts.catalog, &event_type),
        )
        .await;
        match registered {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(event_type = %event_type, error = %e, "schema not registered at start-up; it is registered when first emitted");
            }
            Err(_) => {
                tracing::warn!(event_type = %event_type, "schema registration timed out at start-up; it is registered when first emitted");
            }
        }
    }
}
