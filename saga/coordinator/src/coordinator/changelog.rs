//! The changelog read back: restoring one partition's saga states on assignment, and tailing
//! every partition into the operator view.
//!
//! A restore must see every transaction that can still commit, or it would start from a state
//! older than the offsets it then resumes from. So it first waits until the partition holds no
//! open transaction (the last stable offset, what a read_committed client may read, has reached
//! the high watermark), then reads to that point. A transaction left open by a replica that
//! froze is committed or aborted by then; one that commits later cannot exist, because its
//! offsets would carry a stale group generation and be refused (KIP-447).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_saga::SagaState;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::error::CoordinatorError;
use crate::view::SagaView;

/// A client context that does not report the end of a partition as an error (the restore and
/// view consumers ask for those events on purpose).
pub(crate) struct QuietEof;

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

/// Reads changelog partitions back (one reader per restore, reused across its partitions).
pub(crate) struct ChangelogReader {
    committed: BaseConsumer<QuietEof>,
    uncommitted: BaseConsumer<QuietEof>,
    topic: String,
    timeout: Duration,
}

impl ChangelogReader {
    pub(crate) fn new(
        client: &ClientConfig,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, CoordinatorError> {
        let make = |isolation: &str| {
            client
                .clone()
                .set("group.id", "choreo-restore")
                .set("enable.auto.commit", "false")
                .set("isolation.level", isolation)
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "earliest")
                .create_with_context(QuietEof)
                .map_err(|e| CoordinatorError::kafka("creating the restore consumer", e))
        };
        Ok(Self {
            committed: make("read_committed")?,
            uncommitted: make("read_uncommitted")?,
            topic: topic.to_owned(),
            timeout,
        })
    }

    /// Waits until `partition` holds no open transaction and returns its (low, end) offsets.
    fn settled_end(&self, partition: i32) -> Result<(i64, i64), CoordinatorError> {
        let started = Instant::now();
        let mut warned = Duration::ZERO;
        loop {
            // librdkafka asks for the offsets with the consumer's isolation level: the high
            // watermark read_uncommitted, the last stable offset read_committed.
            let (low, high) = self
                .uncommitted
                .fetch_watermarks(&self.topic, partition, self.timeout)
                .map_err(|e| {
                    CoordinatorError::kafka(format!("watermarks of {}/{partition}", self.topic), e)
                })?;
            let (_, stable) = self
                .committed
                .fetch_watermarks(&self.topic, partition, self.timeout)
                .map_err(|e| {
                    CoordinatorError::kafka(
                        format!("last stable offset of {}/{partition}", self.topic),
                        e,
                    )
                })?;
            if stable >= high {
                return Ok((low, high));
            }
            let waited = started.elapsed();
            if waited >= warned + Duration::from_secs(10) {
                warned = waited;
                tracing::warn!(
                    partition,
                    stable,
                    high,
                    waited_secs = waited.as_secs(),
                    "restore waits for an open transaction on the changelog (a previous owner's) to commit or abort"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The latest state of every saga of one changelog partition, read_committed, up to the
    /// partition's end once no transaction is open on it.
    pub(crate) fn read_partition(
        &self,
        partition: i32,
    ) -> Result<HashMap<String, SagaState>, CoordinatorError> {
        let (low, end) = self.settled_end(partition)?;
        let mut states = HashMap::new();
        if end <= low {
            return Ok(states);
        }
        let consumer = &self.committed;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Beginning)
            .map_err(|e| CoordinatorError::kafka("restore assignment", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| CoordinatorError::kafka("restore assignment", e))?;
        // Bounded by progress, not by size: a restore fails only when nothing arrives for the
        // Kafka timeout.
        let mut last_progress = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
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
                    if m.offset() + 1 >= end {
                        break;
                    }
                }
                // Read_committed ends at the last stable offset: `end`, settled above.
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => tracing::warn!(error = %e, "restore"),
                None => {}
            }
            if last_progress.elapsed() > self.timeout {
                return Err(CoordinatorError::Startup(format!(
                    "restoring {}/{partition}: nothing read for {:?}",
                    self.topic, self.timeout
                )));
            }
        }
        let _ = consumer.unassign();
        Ok(states)
    }
}

/// Keeps the operator view: reads every changelog partition, forever.
pub(crate) async fn tail_changelog(
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
