//! One saga's records, read back from Kafka: every event it received and emitted, and every
//! operator command sent to it, with their CloudEvents headers and their payloads decoded
//! through the registry — what `GET /api/sagas/{definition}/{correlation_id}/events` answers.
//!
//! The saga state keeps only a short text timeline (it must stay small), so the payloads come
//! from the topics themselves. Every record of a saga carries the same key (its correlation
//! id, decision 2) and a saga's topics are co-partitioned, so the records are on one partition
//! of each topic: the one the Java client's partitioner gives the key
//! ([`choreo_bus::wire::partition::partition_of`]). [`KafkaHistory`] reads that partition of
//! each of the definition's topics (and of the commands topic) from the first record timed at
//! or after `from_ms` (`offsetsForTimes`; a record timed earlier that comes after it is read as
//! well, as is everything after it) up to the first record timed after `to_ms` or the last
//! stable offset, read_committed, and keeps the records with that key. Records are timed by
//! their producers, a little before the coordinator saw them; the API widens the saga's life by
//! a margin for that.
//!
//! Bounds: at most [`HistoryQuery::max_records`] records are looked at in all (the answer says
//! when it stopped early, and why); a read that receives nothing for the Kafka timeout stops
//! with what it has. A saga correlated by a field rather than the key finds only the records
//! keyed by its correlation id.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_bus::wire::codec::{Codec, WriterSchemaError};
use choreo_bus::wire::envelope::{Envelope, is_transaction_sweep};
use choreo_bus::wire::partition::partition_of;
use choreo_saga::Definitions;
use choreo_schemas::Catalog;
use dashmap::DashMap;
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::command::CommandRecord;
use crate::coordinator::{CoordinatorOptions, QuietEof};

/// The records a history read looks at when the request names no bound.
pub const DEFAULT_MAX_RECORDS: usize = 20_000;
/// The most records one history read may look at.
pub const MAX_RECORDS: usize = 1_000_000;
/// When a broker finds no offset for the window's start, the records read per partition: its
/// last ones.
pub const TAIL_RECORDS: i64 = 2_000;

/// Which saga, and which window of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The definition's name.
    pub definition: String,
    /// The definition version the saga is pinned to (its topics).
    pub version: u32,
    /// The correlation id (the records' key).
    pub correlation_id: String,
    /// Read from the first record at or after this time (ms since the epoch).
    pub from_ms: u64,
    /// Read up to the last record at or before this time (or the end of the partition).
    pub to_ms: u64,
    /// Look at no more records than this, in all.
    pub max_records: usize,
}

/// One partition read for a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRead {
    /// The topic.
    pub topic: String,
    /// The partition the correlation id lands on.
    pub partition: i32,
    /// The first offset of the window.
    pub from_offset: i64,
    /// The offset after the window.
    pub to_offset: i64,
    /// Where the read stopped (`to_offset` when it read the whole window).
    pub read_to: i64,
    /// Whether `from_offset` is the first record at or after the window's start (the broker
    /// looked it up by time); otherwise it is the partition's last [`TAIL_RECORDS`] records.
    pub by_time: bool,
}

/// One record of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// `event` (a domain event) or `command` (an operator command).
    pub kind: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The record's timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The event type (`ce_type`, else the writer schema's name); the command's name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `ce_id` (a command's id).
    pub id: String,
    /// `ce_source` (a command's operator).
    pub source: String,
    /// `ce_causationid`.
    pub causation_id: Option<String>,
    /// `ce_time`.
    pub time: Option<String>,
    /// The writer schema's registry id.
    pub schema_id: Option<u32>,
    /// The payload as JSON (decoded with its writer schema; a command's record).
    pub payload: Option<serde_json::Value>,
    /// Why the payload could not be decoded.
    pub payload_error: Option<String>,
}

/// The answer to a history read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecords {
    /// `<definition>/<correlation id>`.
    pub saga_id: String,
    /// The window read: from (ms since the epoch).
    pub from_ms: u64,
    /// The window read: to (ms since the epoch).
    pub to_ms: u64,
    /// Records looked at (with any key).
    pub scanned: usize,
    /// Why the read stopped before the end of the window, if it did.
    pub stopped_early: Option<String>,
    /// The partitions read.
    pub partitions: Vec<PartitionRead>,
    /// The saga's records, by timestamp.
    pub events: Vec<SagaRecord>,
}

/// Where the API reads a saga's records: Kafka in production ([`KafkaHistory`]), a fake in
/// tests.
pub trait HistorySource: Send + Sync {
    /// The saga's records in the query's window. The error is shown to the operator.
    fn read(&self, query: HistoryQuery) -> BoxFuture<'static, Result<SagaRecords, String>>;
}

/// Reads saga records from Kafka (see the module doc).
#[derive(Clone)]
pub struct KafkaHistory {
    client: ClientConfig,
    definitions: Arc<Definitions>,
    catalog: Arc<Catalog>,
    codec: Codec,
    commands_topic: String,
    timeout: Duration,
    partitions: Arc<DashMap<String, i32>>,
}

impl std::fmt::Debug for KafkaHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaHistory")
            .field("commands_topic", &self.commands_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaHistory {
    /// A reader for the coordinator that `opts` configures (its client settings, definitions,
    /// catalog, registry and commands topic).
    pub fn new(opts: &CoordinatorOptions) -> Self {
        Self {
            client: opts.kafka.consumer_config(),
            definitions: Arc::clone(&opts.definitions),
            catalog: Arc::clone(&opts.catalog),
            codec: Codec::new(Arc::clone(&opts.registry)),
            commands_topic: opts.commands_topic(),
            timeout: opts.kafka_timeout,
            partitions: Arc::default(),
        }
    }

    /// The topics of a definition version: what it consumes and emits, and the commands topic.
    fn topics(&self, definition: &str, version: u32) -> Result<Vec<String>, String> {
        let def = self
            .definitions
            .get(definition, version)
            .ok_or_else(|| format!("this coordinator does not run {definition} v{version}"))?;
        let mut topics = BTreeSet::new();
        for t in def.consumed_events().chain(def.emitted_events()) {
            if let Some(e) = self.catalog.event(t) {
                topics.insert(e.topic.clone());
            }
        }
        topics.insert(self.commands_topic.clone());
        Ok(topics.into_iter().collect())
    }

    async fn read_records(&self, q: HistoryQuery) -> Result<SagaRecords, String> {
        let topics = self.topics(&q.definition, q.version)?;
        let this = self.clone();
        let key = q.correlation_id.clone();
        let (from_ms, to_ms, max) = (q.from_ms, q.to_ms, q.max_records);
        let scan =
            tokio::task::spawn_blocking(move || this.scan(&topics, &key, from_ms, to_ms, max))
                .await
                .map_err(|e| format!("history task: {e}"))??;
        let mut events = Vec::with_capacity(scan.records.len());
        for m in &scan.records {
            if let Some(r) = self.record(m, &q.definition).await {
                events.push(r);
            }
        }
        events.sort_by(|a, b| {
            (a.timestamp_ms, &a.topic, a.offset).cmp(&(b.timestamp_ms, &b.topic, b.offset))
        });
        Ok(SagaRecords {
            saga_id: format!("{}/{}", q.definition, q.correlation_id),
            from_ms,
            to_ms,
            scanned: scan.scanned,
            stopped_early: scan.stopped_early,
            partitions: scan.partitions,
            events,
        })
    }

    fn consumer(&self) -> Result<BaseConsumer<QuietEof>, String> {
        choreo_bus::read_back(
            self.client.clone(),
            choreo_bus::ReadBack::ToEnd,
            "choreo-history",
        )
        .create_with_context(QuietEof)
        .map_err(|e| format!("creating the history consumer: {e}"))
    }

    fn partition_count(
        &self,
        consumer: &BaseConsumer<QuietEof>,
        topic: &str,
    ) -> Result<i32, String> {
        if let Some(n) = self.partitions.get(topic) {
            return Ok(*n);
        }
        let md = consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        let n = i32::try_from(n).unwrap_or(0);
        if n == 0 {
            return Err(format!("topic {topic} has no partitions (does it exist?)"));
        }
        self.partitions.insert(topic.to_owned(), n);
        Ok(n)
    }

    /// The window's offsets on each topic's partition of `key`, then the records in them.
    fn scan(
        &self,
        topics: &[String],
        key: &str,
        from_ms: u64,
        to_ms: u64,
        max: usize,
    ) -> Result<Scan, String> {
        let consumer = self.consumer()?;
        let at = |ms: u64| Offset::Offset(i64::try_from(ms).unwrap_or(i64::MAX));
        let (mut from, mut to) = (TopicPartitionList::new(), TopicPartitionList::new());
        for t in topics {
            let p = partition_of(key.as_bytes(), self.partition_count(&consumer, t)?);
            let add = |l: &mut TopicPartitionList, o| {
                l.add_partition_offset(t, p, o)
                    .map_err(|e| format!("offsets of {t}/{p}: {e}"))
            };
            add(&mut from, at(from_ms))?;
            add(&mut to, at(to_ms.saturating_add(1)))?;
        }
        let starts = consumer
            .offsets_for_times(from, self.timeout)
            .map_err(|e| format!("offsets for {from_ms} ms: {e}"))?;
        let ends = consumer
            .offsets_for_times(to, self.timeout)
            .map_err(|e| format!("offsets for {to_ms} ms: {e}"))?;
        // Where no offset was found for the window's start, ask for the epoch's: a broker that
        // looks offsets up by time answers the first record (so every record was older than
        // the window); one that does not (librdkafka's mock cluster, hence `choreo dev`)
        // answers none, and the partition's last records are read instead.
        let mut epoch = TopicPartitionList::new();
        for e in starts.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                epoch
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(0))
                    .map_err(|x| format!("offsets of {}/{}: {x}", e.topic(), e.partition()))?;
            }
        }
        let epoch = if epoch.count() > 0 {
            consumer
                .offsets_for_times(epoch, self.timeout)
                .map_err(|e| format!("offsets for the epoch: {e}"))?
        } else {
            epoch
        };
        let mut partitions = Vec::new();
        let mut assign = TopicPartitionList::new();
        for e in starts.elements() {
            let (t, p) = (e.topic().to_owned(), e.partition());
            // The last stable offset: read_committed, librdkafka asks for it.
            let (low, stable) = consumer
                .fetch_watermarks(&t, p, self.timeout)
                .map_err(|e| format!("watermarks of {t}/{p}: {e}"))?;
            let end = match ends.find_partition(&t, p).map(|x| x.offset()) {
                Some(Offset::Offset(o)) => o.min(stable),
                _ => stable,
            };
            let (start, by_time) = match (e.offset(), epoch.find_partition(&t, p)) {
                (Offset::Offset(o), _) => (o, true),
                (_, Some(x)) if matches!(x.offset(), Offset::Offset(_)) => continue,
                _ => (low.max(stable - TAIL_RECORDS), false),
            };
            if start >= end {
                continue;
            }
            assign
                .add_partition_offset(&t, p, Offset::Offset(start))
                .map_err(|e| format!("assigning {t}/{p}: {e}"))?;
            partitions.push(PartitionRead {
                topic: t,
                partition: p,
                from_offset: start,
                to_offset: end,
                read_to: start,
                by_time,
            });
        }
        let mut scan = Scan {
            partitions,
            records: Vec::new(),
            scanned: 0,
            stopped_early: None,
        };
        if scan.partitions.is_empty() {
            return Ok(scan);
        }
        consumer
            .assign(&assign)
            .map_err(|e| format!("assigning the history partitions: {e}"))?;
        let mut last_progress = Instant::now();
        while scan.partitions.iter().any(|r| r.read_to < r.to_offset) {
            if scan.scanned >= max {
                scan.stopped_early = Some(format!(
                    "looked at {max} records, the most allowed (max_records); ask with a higher max_records or a narrower margin"
                ));
                break;
            }
            if last_progress.elapsed() > self.timeout {
                scan.stopped_early = Some(format!(
                    "nothing arrived from the broker for {:?}",
                    self.timeout
                ));
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let Some(read) = scan
                        .partitions
                        .iter_mut()
                        .find(|r| r.partition == m.partition() && r.topic == m.topic())
                    else {
                        continue;
                    };
                    if m.offset() >= read.to_offset {
                        read.read_to = read.to_offset;
                        continue;
                    }
                    read.read_to = m.offset() + 1;
                    scan.scanned += 1;
                    if m.key() == Some(key.as_bytes()) {
                        scan.records.push(m.detach());
                    }
                }
                // Read_committed ends at the last stable offset, the window's end at the latest.
                // The error names the partition, not the topic (every topic is read at the same
                // partition number): the positions say which reached its end.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let positions = consumer.position().ok();
                    for r in scan.partitions.iter_mut().filter(|r| r.partition == p) {
                        let at = positions
                            .as_ref()
                            .and_then(|l| l.find_partition(&r.topic, p))
                            .map(|x| x.offset());
                        if let Some(Offset::Offset(o)) = at
                            && o >= r.to_offset
                        {
                            r.read_to = r.to_offset;
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "history read"),
                None => {}
            }
        }
        let _ = consumer.unassign();
        Ok(scan)
    }

    /// One kept record as the API shows it; `None` for a command of another definition and
    /// for choreo's transaction-sweep records.
    async fn record(&self, m: &OwnedMessage, definition: &str) -> Option<SagaRecord> {
        if is_transaction_sweep(m.headers()) {
            return None;
        }
        let env = Envelope::from_headers(m.headers(), None);
        let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
        let mut r = SagaRecord {
            kind: "event".into(),
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            event_type: env.event_type.clone(),
            id: env.id.clone(),
            source: env.source.clone(),
            causation_id: env.causation_id.clone(),
            time: non_empty(env.time.clone()),
            schema_id: None,
            payload: None,
            payload_error: None,
        };
        let Some(value) = m.payload() else {
            r.payload_error = Some("the record has no value".into());
            return Some(r);
        };
        if m.topic() == self.commands_topic {
            let command: CommandRecord = match serde_json::from_slice(value) {
                Ok(c) => c,
                Err(e) => {
                    r.kind = "command".into();
                    r.payload_error = Some(format!("not a command record: {e}"));
                    return Some(r);
                }
            };
            if command.definition != definition {
                return None;
            }
            r.kind = "command".into();
            r.event_type = command.command.name().to_owned();
            r.id.clone_from(&command.id);
            r.source = command.operator.clone().unwrap_or_default();
            r.payload = serde_json::to_value(&command).ok();
            return Some(r);
        }
        match self.codec.decode_written(value).await {
            Ok(e) => {
                if r.event_type.is_empty() {
                    r.event_type.clone_from(&e.event_type);
                }
                r.schema_id = Some(e.schema_id);
                r.payload = Some(e.data);
            }
            Err(WriterSchemaError::Poison(e)) => r.payload_error = Some(e.to_string()),
            Err(WriterSchemaError::Unavailable(e)) => {
                r.payload_error = Some(format!("the schema registry could not be asked: {e}"));
            }
        }
        Some(r)
    }
}

impl HistorySource for KafkaHistory {
    fn read(&self, query: HistoryQuery) -> BoxFuture<'static, Result<SagaRecords, String>> {
        let this = self.clone();
        Box::pin(async move { this.read_records(query).await })
    }
}

/// What a scan found.
struct Scan {
    partitions: Vec<PartitionRead>,
    records: Vec<OwnedMessage>,
    scanned: usize,
    stopped_early: Option<String>,
}
