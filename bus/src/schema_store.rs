//! A schema registry whose storage is a compacted Kafka topic (as Confluent's registry keeps
//! `_schemas`): it survives restarts, and every instance reading the topic serves the same
//! subjects, versions and ids.
//!
//! - **Records**: one per subject version — key `{"kind":"schema","subject":…,"version":n}`,
//!   value `{"subject","version","id","schema"}` — and one per rule — key
//!   `{"kind":"config","subject":…|null}`, value `{"compatibility":"BACKWARD"}`. The topic has
//!   one partition, so its order is the registry's history.
//! - **Reads** are served from an in-process view ([`MemoryRegistry`]) that a background reader
//!   keeps up with the topic (read_committed); an id the view does not know yet is looked up
//!   again after reading the topic to its end, before the answer is "not found".
//! - **Writes** are serialized through the broker with one transactional id that every writer
//!   shares. To become the writer, an instance creates a transactional producer with that id,
//!   whose `init_transactions` fences any other writer (and closes its unfinished write); then
//!   it reads the topic to its end, checks the change against that history (compatibility, the
//!   id), writes it in a transaction and commits. Two instances writing at once therefore never
//!   give one version or id two meanings: the second one's check sees the first one's record,
//!   and the first one, fenced before its commit, wrote nothing and tries again on the new
//!   history. Ids come from the schema's content
//!   ([`choreo_schemas::registry::schema_id_of`]), so an id, once given, means one schema.
//! - **Staying the writer.** An instance keeps its producer after a write and writes the next
//!   change with it directly: as long as its commits succeed, no other instance has become the
//!   writer since it read the history, so its view is the whole history. The first commit that
//!   finds it fenced drops the producer, and the change is tried again as above. A burst of
//!   writes therefore costs one `init_transactions`, not one per change; and registering many
//!   schemas at once ([`SchemaRegistry::register_many`], as a coordinator registers its catalog
//!   at start-up) is one write: the new ones in one transaction.
//! - **Replicas that start together** all register the same schemas at once. A change the view
//!   already holds is not written, and does not make its instance the writer; a change the view
//!   would refuse is checked again on the whole topic before the refusal is given. A fenced instance
//!   waits before it tries again, between one and two times as long as its own attempt took,
//!   so that the writer that fenced it (whose attempt takes about as long) can finish; then it
//!   usually finds its change already written. After a few attempts it fails and says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use choreo_schemas::compat::Compatibility;
use choreo_schemas::{
    MemoryRegistry, RegistryError, RegistryStore, SchemaRegistry, SubjectVersion,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::BusConfig;
use crate::retry::RetryPolicy;

/// The default topic.
pub const DEFAULT_TOPIC: &str = "_choreo_schemas";

/// The default transactional id every writer shares.
pub const DEFAULT_WRITER_ID: &str = "choreo-schema-registry";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Key {
    Schema { subject: String, version: u32 },
    Config { subject: Option<String> },
}

#[derive(Debug, Serialize, Deserialize)]
struct SchemaValue {
    subject: String,
    version: u32,
    id: u32,
    schema: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigValue {
    compatibility: Compatibility,
}

fn transport(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Transport {
        message: format!("schema topic: {what}: {e}"),
        retryable: true,
    }
}

/// Where the registry keeps its schemas.
#[derive(Debug, Clone)]
pub struct SchemaTopic {
    /// The Kafka clients' settings (bootstrap servers, TLS, SASL).
    pub kafka: BusConfig,
    /// The compacted topic (created with one partition when missing).
    pub topic: String,
    /// The transactional id writers share (one writer at a time).
    pub writer_id: String,
    /// Replication factor when the topic is created; unset: the cluster's
    /// `default.replication.factor`.
    pub replication_factor: Option<i32>,
    /// Upper bound of one broker call.
    pub timeout: Duration,
    /// Whether a background reader keeps the view up to date between writes (the default). A
    /// store that only writes (a one-off registration) can go without: every write, and
    /// [`KafkaSchemaStore::refresh`], read the topic to its end first either way.
    pub follow: bool,
}

impl SchemaTopic {
    /// The defaults for these clients.
    pub fn new(kafka: BusConfig) -> Self {
        Self {
            kafka,
            topic: DEFAULT_TOPIC.into(),
            writer_id: DEFAULT_WRITER_ID.into(),
            replication_factor: None,
            timeout: Duration::from_secs(30),
            follow: true,
        }
    }
}

/// The Kafka-backed registry.
pub struct KafkaSchemaStore {
    view: Arc<MemoryRegistry>,
    cfg: SchemaTopic,
    /// One write at a time; holds the producer while this instance is the writer.
    writes: tokio::sync::Mutex<Option<Writer>>,
    fenced: std::sync::atomic::AtomicU64,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// The transactional producer of an instance that is (or was, until its next commit finds it
/// fenced) the writer.
type Writer = ThreadedProducer<DefaultProducerContext>;

/// The records one write puts in one transaction, as key and value; none: nothing to write.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

impl std::fmt::Debug for KafkaSchemaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSchemaStore")
            .field("topic", &self.cfg.topic)
            .field("subjects", &self.view.subjects().len())
            .finish_non_exhaustive()
    }
}

impl Drop for KafkaSchemaStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, RegistryError> + Send + 'static,
) -> Result<R, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| transport("worker", e))?
}

impl KafkaSchemaStore {
    /// Opens the registry: creates the topic when missing, reads it to its end into the view,
    /// and starts the reader that keeps the view up to date (unless [`SchemaTopic::follow`] is
    /// off).
    pub async fn open(cfg: SchemaTopic) -> Result<Arc<Self>, RegistryError> {
        create_topic(&cfg).await?;
        let view = Arc::new(MemoryRegistry::new());
        let store = Arc::new(Self {
            view,
            cfg,
            writes: tokio::sync::Mutex::new(None),
            fenced: std::sync::atomic::AtomicU64::new(0),
            stop: Arc::default(),
        });
        store.refresh().await?;
        if !store.cfg.follow {
            return Ok(store);
        }
        let (view, cfg, stop) = (
            Arc::clone(&store.view),
            store.cfg.clone(),
            Arc::clone(&store.stop),
        );
        std::thread::Builder::new()
            .name("schema-topic-reader".into())
            .spawn(move || follow(&cfg, &view, &stop))
            .map_err(|e| transport("starting the reader", e))?;
        Ok(store)
    }

    /// Reads the topic from the beginning to its current end into the view.
    fn catch_up(cfg: &SchemaTopic, view: &MemoryRegistry) -> Result<(), RegistryError> {
        let consumer = reader(cfg, crate::ReadBack::ToEnd)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.topic, 0, Offset::Beginning)
            .map_err(|e| transport("assign", e))?;
        consumer.assign(&tpl).map_err(|e| transport("assign", e))?;
        let deadline = Instant::now() + cfg.timeout;
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => apply(view, m.key(), m.payload())?,
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => return Err(transport("read", e)),
                None => {}
            }
            if Instant::now() > deadline {
                return Err(transport(
                    "read",
                    format!(
                        "did not reach the end of {} in {:?}",
                        cfg.topic, cfg.timeout
                    ),
                ));
            }
        }
    }

    /// Registers each `(subject, text)` in order, the new ones in one transaction, and returns
    /// their versions.
    async fn register_versions(
        &self,
        items: Vec<(String, String)>,
    ) -> Result<Vec<SubjectVersion>, RegistryError> {
        // All registered already: answered from the view, without waiting for a write.
        let known: Option<Vec<SubjectVersion>> = items
            .iter()
            .map(|(subject, text)| self.view.lookup(subject, text).ok().flatten())
            .collect();
        if let Some(versions) = known {
            return Ok(versions);
        }
        self.write(move |view| {
            let planned = view.plan_register_all(&items)?;
            let mut records = Vec::new();
            for (v, _) in planned.iter().filter(|(_, new)| *new) {
                let key = json(&Key::Schema {
                    subject: v.subject.clone(),
                    version: v.version,
                })?;
                let value = json(&SchemaValue {
                    subject: v.subject.clone(),
                    version: v.version,
                    id: v.id,
                    schema: v.schema.clone(),
                })?;
                records.push((key, value));
            }
            Ok((records, planned.into_iter().map(|(v, _)| v).collect()))
        })
        .await
    }

    /// How many of this instance's write attempts found another instance had become the
    /// writer (each was tried again, or refused after the last attempt).
    pub fn fenced_writes(&self) -> u64 {
        self.fenced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes records as the only writer (see the module docs); `decide` looks at the
    /// caught-up history and returns the records to write in one transaction (none when there
    /// is nothing to write), plus its answer.
    ///
    /// A fenced write wrote nothing, so it is tried again — on a fresh look at the history —
    /// after a pause of one to two times what the fenced attempt took (at least
    /// [`FENCED_RETRY`]'s backoff): the instance that fenced it needs about as long to finish
    /// its own write. Only after the last attempt is the caller told to retry.
    async fn write<R: Send + 'static>(
        &self,
        decide: impl Fn(&MemoryRegistry) -> Result<(Records, R), RegistryError> + Send + Sync + 'static,
    ) -> Result<R, RegistryError> {
        let mut writer = self.writes.lock().await;
        let decide = Arc::new(decide);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (cfg, view, decide, held) = (
                self.cfg.clone(),
                Arc::clone(&self.view),
                Arc::clone(&decide),
                writer.take(),
            );
            let started = Instant::now();
            let (outcome, kept) =
                blocking(move || Ok(Self::write_once(&cfg, &view, &*decide, held))).await?;
            *writer = kept;
            match outcome? {
                Attempt::Written(answer) => return Ok(answer),
                Attempt::Fenced(e) => {
                    self.fenced
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!(crate::telemetry::SCHEMA_WRITES_FENCED).increment(1);
                    if attempt >= FENCED_RETRY.max_attempts {
                        return Err(transport(
                            "another registry instance became the writer meanwhile; retry",
                            e,
                        ));
                    }
                    let pause = fenced_pause(started.elapsed(), FENCED_RETRY.backoff(attempt));
                    tracing::debug!(attempt, ?pause, error = %e, "schema write fenced; trying again");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One attempt of [`Self::write`], on a blocking thread: with the producer `held` from an
    /// earlier write when there is one, else (or when that one fails) as a new writer. Returns
    /// the producer to keep for the next write.
    fn write_once<R>(
        cfg: &SchemaTopic,
        view: &MemoryRegistry,
        decide: &impl Fn(&MemoryRegistry) -> Result<(Records, R), RegistryError>,
        held: Option<Writer>,
    ) -> (Result<Attempt<R>, RegistryError>, Option<Writer>) {
        // Nothing to write on what this instance already knows (it is in the view, which holds
        // committed records only): done, without fencing anyone. A refusal is decided again on
        // the whole history first: the view may not have a newer rule yet.
        let (records, answer) = match decide(view) {
            Ok(decided) => decided,
            Err(_) => match Self::catch_up(cfg, view).and_then(|()| decide(view)) {
                Ok(decided) => decided,
                Err(e) => return (Err(e), held),
            },
        };
        if records.is_empty() {
            return (Ok(Attempt::Written(answer)), held);
        }
        if let Some(producer) = held {
            match Self::commit(cfg, view, &producer, &records) {
                Ok(()) => return (Ok(Attempt::Written(answer)), Some(producer)),
                Err((_, e)) if is_fenced(&e) => return (Ok(Attempt::Fenced(e)), None),
                Err((step, e)) => {
                    tracing::debug!(step, error = %e, "schema writer kept from an earlier write failed; starting a new one");
                }
            }
        }
        match Self::become_writer(cfg, view, decide) {
            Ok((producer, records, answer)) if records.is_empty() => {
                (Ok(Attempt::Written(answer)), Some(producer))
            }
            Ok((producer, records, answer)) => match Self::commit(cfg, view, &producer, &records) {
                Ok(()) => (Ok(Attempt::Written(answer)), Some(producer)),
                Err((_, e)) if is_fenced(&e) => (Ok(Attempt::Fenced(e)), None),
                Err((step, e)) => (Err(transport(step, e)), None),
            },
            Err(e) => (Err(e), None),
        }
    }

    /// Creates the transactional producer (fencing any other writer), reads the topic to its
    /// end and decides on that whole history.
    fn become_writer<R>(
        cfg: &SchemaTopic,
        view: &MemoryRegistry,
        decide: &impl Fn(&MemoryRegistry) -> Result<(Records, R), RegistryError>,
    ) -> Result<(Writer, Records, R), RegistryError> {
        let producer: Writer = cfg
            .kafka
            .client_config()
            .set("transactional.id", &cfg.writer_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(|e| transport("creating the writer", e))?;
        producer
            .init_transactions(cfg.timeout)
            .map_err(|e| transport("becoming the writer", e))?;
        Self::catch_up(cfg, view)?;
        let (records, answer) = decide(view)?;
        Ok((producer, records, answer))
    }

    /// Writes `records` in one transaction of `producer` and applies them to the view once
    /// committed; on failure the transaction is aborted and the failing step named.
    fn commit(
        cfg: &SchemaTopic,
        view: &MemoryRegistry,
        producer: &Writer,
        records: &Records,
    ) -> Result<(), (&'static str, KafkaError)> {
        let written = producer
            .begin_transaction()
            .map_err(|e| ("begin", e))
            .and_then(|()| {
                records.iter().try_for_each(|(key, value)| {
                    producer
                        .send(BaseRecord::to(&cfg.topic).key(key).payload(value))
                        .map_err(|(e, _)| ("send", e))
                })
            })
            .and_then(|()| {
                producer
                    .commit_transaction(cfg.timeout)
                    .map_err(|e| ("commit", e))
            });
        if written.is_err() {
            let _ = producer.abort_transaction(cfg.timeout);
        }
        written?;
        for (key, value) in records {
            if let Err(e) = apply(view, Some(key), Some(value)) {
                tracing::warn!(error = %e, "schema record written but not applied to the view");
            }
        }
        Ok(())
    }
}

/// How long a fenced writer waits before it tries again: between one and two times its own
/// fenced attempt (the writer that fenced it makes the same calls, so needs about as long to
/// commit), and at least `backoff`.
fn fenced_pause(attempt_took: Duration, backoff: Duration) -> Duration {
    // The policy's jitter: uniform in [ceiling/2, ceiling], the ceiling twice the attempt.
    let twice = attempt_took.saturating_mul(2);
    let spread = RetryPolicy {
        max_attempts: 1,
        initial_backoff: twice,
        max_backoff: twice,
    };
    spread.backoff(1).max(backoff)
}

/// How one write is tried again while other instances keep fencing it: 8 attempts, pauses of
/// 20–40 ms growing to 0.64–1.28 s.
const FENCED_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_backoff: Duration::from_millis(40),
    max_backoff: Duration::from_millis(1280),
};

/// What one attempt of a write came to.
enum Attempt<R> {
    Written(R),
    /// Another instance became the writer before the commit; nothing was written.
    Fenced(KafkaError),
}

/// Whether the error says another producer with the same transactional id took over (the
/// broker's `PRODUCER_FENCED` / `INVALID_PRODUCER_EPOCH`, or librdkafka's local `_FENCED`).
fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

fn reader(cfg: &SchemaTopic, how: crate::ReadBack) -> Result<BaseConsumer, RegistryError> {
    let group = format!("schema-reader-{}", uuid::Uuid::new_v4().simple());
    crate::read_back(cfg.kafka.consumer_config(), how, &group)
        .create()
        .map_err(|e| transport("creating a reader", e))
}

/// The background reader: follows the topic into the view until the store is dropped.
fn follow(cfg: &SchemaTopic, view: &MemoryRegistry, stop: &std::sync::atomic::AtomicBool) {
    let consumer = match reader(cfg, crate::ReadBack::Follow) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "schema topic reader stopped");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(&cfg.topic, 0, Offset::Beginning)
        .and_then(|()| consumer.assign(&tpl))
        .is_err()
    {
        tracing::error!(topic = %cfg.topic, "schema topic reader could not assign the topic");
        return;
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Err(e) = apply(view, m.key(), m.payload()) {
                    tracing::warn!(offset = m.offset(), error = %e, "schema topic record skipped");
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "schema topic reader"),
        }
    }
}

/// Applies one record of the topic to the view.
fn apply(
    view: &MemoryRegistry,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<(), RegistryError> {
    let Some(key) = key else { return Ok(()) };
    let bad =
        |e: serde_json::Error| RegistryError::InvalidSchema(format!("schema topic record: {e}"));
    match serde_json::from_slice::<Key>(key).map_err(bad)? {
        Key::Schema { .. } => {
            let Some(value) = value else { return Ok(()) };
            let v: SchemaValue = serde_json::from_slice(value).map_err(bad)?;
            view.restore(&SubjectVersion {
                subject: v.subject,
                version: v.version,
                id: v.id,
                schema: v.schema,
            })
        }
        Key::Config { subject } => {
            let Some(value) = value else { return Ok(()) };
            let c: ConfigValue = serde_json::from_slice(value).map_err(bad)?;
            view.set_compatibility(subject.as_deref(), c.compatibility);
            Ok(())
        }
    }
}

async fn create_topic(cfg: &SchemaTopic) -> Result<(), RegistryError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .kafka
        .client_config()
        .create()
        .map_err(|e| transport("admin client", e))?;
    let topic = NewTopic::new(
        &cfg.topic,
        1,
        // -1: the cluster's default (KIP-464).
        TopicReplication::Fixed(cfg.replication_factor.unwrap_or(-1)),
    )
    .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(cfg.timeout)),
        )
        .await
        .map_err(|e| transport("creating the topic", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(transport(&format!("creating {t}"), code)),
        }
    }
    Ok(())
}

fn json(v: &impl Serialize) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(v).map_err(|e| transport("encoding a record", e))
}

#[async_trait]
impl RegistryStore for KafkaSchemaStore {
    fn view(&self) -> &MemoryRegistry {
        &self.view
    }

    async fn register_version(
        &self,
        subject: &str,
        text: &str,
    ) -> Result<SubjectVersion, RegistryError> {
        let items = vec![(subject.to_owned(), text.to_owned())];
        let mut versions = self.register_versions(items).await?;
        versions
            .pop()
            .ok_or_else(|| transport("registering", "no version planned"))
    }

    async fn set_rule(
        &self,
        subject: Option<&str>,
        rule: Compatibility,
    ) -> Result<(), RegistryError> {
        let subject = subject.map(str::to_owned);
        self.write(move |_| {
            let key = json(&Key::Config {
                subject: subject.clone(),
            })?;
            let value = json(&ConfigValue {
                compatibility: rule,
            })?;
            Ok((vec![(key, value)], ()))
        })
        .await
    }

    async fn refresh(&self) -> Result<(), RegistryError> {
        let (cfg, view) = (self.cfg.clone(), Arc::clone(&self.view));
        blocking(move || Self::catch_up(&cfg, &view)).await
    }
}

#[async_trait]
impl SchemaRegistry for KafkaSchemaStore {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.register_version(subject, schema).await.map(|v| v.id)
    }

    async fn register_many(&self, items: &[(String, String)]) -> Result<Vec<u32>, RegistryError> {
        let versions = self.register_versions(items.to_vec()).await?;
        Ok(versions.into_iter().map(|v| v.id).collect())
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(s) = self.view.get(id) {
            return Ok(s);
        }
        self.refresh().await?;
        self.view.get(id).ok_or(RegistryError::UnknownId(id))
    }
}
