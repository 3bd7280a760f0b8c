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
//! - **Writes** are serialized through the broker: each one creates a transactional producer
//!   with the shared transactional id, whose `init_transactions` fences any other writer (and
//!   closes its unfinished write); then it reads the topic to its end, checks the change
//!   against that history (compatibility, the id), writes it in a transaction and commits. Two
//!   instances writing at once therefore never give one version or id two meanings: the second
//!   one's check sees the first one's record, and the first one, fenced before its commit,
//!   wrote nothing and tries again on the new history (after a random pause, so that two
//!   writers do not keep fencing each other; after a few attempts it fails and says so). Ids
//!   come from the schema's content
//!   ([`choreo_schemas::registry::schema_id_of`]), so an id, once given, means one schema.

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
    writes: tokio::sync::Mutex<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

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
            writes: tokio::sync::Mutex::new(()),
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
        let consumer = reader(cfg)?;
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

    /// Writes one record as the only writer (see the module docs); `decide` looks at the
    /// caught-up history and returns the record to write, or `None` when there is nothing to
    /// write, plus its answer.
    ///
    /// Two instances writing at once fence each other in turn: each `init_transactions` closes
    /// the other's unfinished write. A fenced write wrote nothing, so it is tried again — on a
    /// fresh look at the history — after a random pause that grows with each attempt, which
    /// lets one of the two finish ([`FENCED_RETRY`]); only after its last attempt is the caller
    /// told to retry.
    async fn write<R: Send + 'static>(
        &self,
        decide: impl Fn(&MemoryRegistry) -> Result<(Option<(Vec<u8>, Vec<u8>)>, R), RegistryError>
        + Send
        + Sync
        + 'static,
    ) -> Result<R, RegistryError> {
        let _one_at_a_time = self.writes.lock().await;
        let decide = Arc::new(decide);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (cfg, view, decide) = (
                self.cfg.clone(),
                Arc::clone(&self.view),
                Arc::clone(&decide),
            );
            match blocking(move || Self::write_once(&cfg, &view, &*decide)).await? {
                Attempt::Written(answer) => return Ok(answer),
                Attempt::Fenced(e) if attempt < FENCED_RETRY.max_attempts => {
                    let pause = FENCED_RETRY.backoff(attempt);
                    tracing::debug!(attempt, ?pause, error = %e, "schema write fenced; trying again");
                    tokio::time::sleep(pause).await;
                }
                Attempt::Fenced(e) => {
                    return Err(transport(
                        "another registry instance became the writer meanwhile; retry",
                        e,
                    ));
                }
            }
        }
    }

    /// One attempt of [`Self::write`], on a blocking thread.
    fn write_once<R>(
        cfg: &SchemaTopic,
        view: &MemoryRegistry,
        decide: &impl Fn(&MemoryRegistry) -> Result<(Option<(Vec<u8>, Vec<u8>)>, R), RegistryError>,
    ) -> Result<Attempt<R>, RegistryError> {
        let producer: ThreadedProducer<DefaultProducerContext> = cfg
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
        let (record, answer) = decide(view)?;
        let Some((key, value)) = record else {
            return Ok(Attempt::Written(answer));
        };
        let written = producer
            .begin_transaction()
            .map_err(|e| ("begin", e))
            .and_then(|()| {
                producer
                    .send(BaseRecord::to(&cfg.topic).key(&key).payload(&value))
                    .map_err(|(e, _)| ("send", e))
            })
            .and_then(|()| {
                producer
                    .commit_transaction(cfg.timeout)
                    .map_err(|e| ("commit", e))
            });
        if let Err((step, e)) = written {
            let _ = producer.abort_transaction(cfg.timeout);
            return if is_fenced(&e) {
                Ok(Attempt::Fenced(e))
            } else {
                Err(transport(step, e))
            };
        }
        apply(view, Some(&key), Some(&value))?;
        Ok(Attempt::Written(answer))
    }
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

fn reader(cfg: &SchemaTopic) -> Result<BaseConsumer, RegistryError> {
    cfg.kafka
        .consumer_config()
        .set(
            "group.id",
            format!("schema-reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| transport("creating a reader", e))
}

/// The background reader: follows the topic into the view until the store is dropped.
fn follow(cfg: &SchemaTopic, view: &MemoryRegistry, stop: &std::sync::atomic::AtomicBool) {
    let consumer = match reader(cfg) {
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
        if let Some(v) = self.view.lookup(subject, text).ok().flatten() {
            return Ok(v);
        }
        let (subject, text) = (subject.to_owned(), text.to_owned());
        self.write(move |view| {
            let (v, new) = view.plan_register(&subject, &text)?;
            if !new {
                return Ok((None, v));
            }
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
            Ok((Some((key, value)), v))
        })
        .await
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
            Ok((Some((key, value)), ()))
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

    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(s) = self.view.get(id) {
            return Ok(s);
        }
        self.refresh().await?;
        self.view.get(id).ok_or(RegistryError::UnknownId(id))
    }
}
