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

/// The header on every changelog record that names the coordinator group that wrote it. A
/// restore that meets another group's record stops the replica: two groups sharing one
/// changelog would both own, decide and emit for every saga. Records written before the header
/// existed carry none and are read as this group's.
pub(crate) const OWNER_HEADER: &str = "choreo_group";

/// A client context that does not report the end of a partition as an error (the restore and
/// view consumers ask for those events on purpose).
#[derive(Debug)]
pub struct QuietEof;

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
    /// The group restoring (see [`OWNER_HEADER`]).
    group: String,
    timeout: Duration,
    /// How long the last stable offset may stand still below the high watermark before the
    /// transaction holding it is taken for a hanging one (see [`Self::settled_end`]).
    hanging_after: Duration,
}

impl ChangelogReader {
    pub(crate) fn new(
        client: &ClientConfig,
        topic: &str,
        group: &str,
        timeout: Duration,
        transaction_timeout: Duration,
    ) -> Result<Self, CoordinatorError> {
        let make = |isolation: &str| {
            choreo_bus::read_back(
                client.clone(),
                choreo_bus::ReadBack::ToEnd,
                "choreo-restore",
            )
            .set("isolation.level", isolation)
            .create_with_context(QuietEof)
            .map_err(|e| CoordinatorError::kafka("creating the restore consumer", e))
        };
        Ok(Self {
            committed: make("read_committed")?,
            uncommitted: make("read_uncommitted")?,
            topic: topic.to_owned(),
            group: group.to_owned(),
            timeout,
            hanging_after: (transaction_timeout * 3).max(Duration::from_secs(30)),
        })
    }

    /// Waits until `partition` holds no open transaction and returns its (low, end) offsets.
    ///
    /// Every transaction a replica opens is committed, aborted by its successor's
    /// `init_transactions`, or aborted by the broker after the transaction timeout. A last
    /// stable offset that stands still for three transaction timeouts is held by a hanging
    /// transaction, one the broker's transaction coordinator no longer tracks (it can never
    /// commit, and only an administrator can abort it): the restore then reads up to the last
    /// stable offset — all that can ever be read — and says so, rather than wait forever.
    fn settled_end(&self, partition: i32) -> Result<(i64, i64), CoordinatorError> {
        let started = Instant::now();
        let mut warned = Duration::ZERO;
        let (mut last_stable, mut stable_since) = (i64::MIN, Instant::now());
        loop {
            // librdkafka asks for the offsets with the consumer's isolation level: the high
            // watermark read_uncommitted, the last stable offset read_committed.
            let (low, high) = self
                .watermarks(&self.uncommitted, partition, started)
                .map_err(|e| {
                    CoordinatorError::kafka(format!("watermarks of {}/{partition}", self.topic), e)
                })?;
            let (_, stable) = self
                .watermarks(&self.committed, partition, started)
                .map_err(|e| {
                    CoordinatorError::kafka(
                        format!("last stable offset of {}/{partition}", self.topic),
                        e,
                    )
                })?;
            if stable >= high {
                return Ok((low, high));
            }
            if stable != last_stable {
                (last_stable, stable_since) = (stable, Instant::now());
            } else if stable_since.elapsed() >= self.hanging_after {
                tracing::error!(
                    topic = %self.topic,
                    partition,
                    stable,
                    high,
                    "a hanging transaction holds the changelog's last stable offset; restoring up to it, which is all a read_committed reader can see. Find and abort it with Kafka's tools: kafka-transactions.sh --bootstrap-server <brokers> find-hanging --broker-id <leader>, then abort --topic <topic> --partition <partition> --start-offset <its offset>"
                );
                return Ok((low, stable));
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

    /// A partition's watermarks, asked again while the broker answers with an error that
    /// passes by itself (a leader not elected yet on a topic just created, a leader moving):
    /// those fail the restore only once the Kafka timeout has gone by since `started`.
    fn watermarks<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partition: i32,
        started: Instant,
    ) -> Result<(i64, i64), KafkaError> {
        loop {
            match consumer.fetch_watermarks(&self.topic, partition, self.timeout) {
                Err(e) if passes_by_itself(&e) && started.elapsed() < self.timeout => {
                    tracing::debug!(topic = %self.topic, partition, error = %e, "watermarks asked again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// The latest changelog value of every saga of one changelog partition, read_committed, up
    /// to the partition's end once no transaction is open on it. Values are decoded by the
    /// caller, each once: the ones a later record replaced never are.
    pub(crate) fn read_partition(
        &self,
        partition: i32,
    ) -> Result<HashMap<String, Vec<u8>>, CoordinatorError> {
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
                    if let Some(owner) = owner_of(&m)
                        && owner != self.group
                    {
                        let _ = consumer.unassign();
                        return Err(CoordinatorError::Startup(format!(
                            "the changelog {} holds sagas of coordinator group {owner} ({}/{partition} offset {}); this coordinator is group {}, and two groups on one changelog would both decide and emit for every saga. Give this group its own changelog: leave coordinator.changelog_topic unset (it is then <group>.saga-state) or name another topic",
                            self.topic,
                            self.topic,
                            m.offset(),
                            self.group
                        )));
                    }
                    let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                        continue;
                    };
                    match m.payload() {
                        None => {
                            states.remove(&key);
                        }
                        Some(v) => {
                            states.insert(key, v.to_vec());
                        }
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

/// The group a changelog record names in its [`OWNER_HEADER`], if any.
fn owner_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use choreo_bus::wire::headers::Readable as _;
    m.headers()?
        .readable()
        .into_iter()
        .find(|h| h.key == OWNER_HEADER)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Keeps the operator view: reads every changelog partition, forever.
pub(crate) async fn tail_changelog(
    client: ClientConfig,
    topic: String,
    partitions: i32,
    view: Arc<SagaView>,
    cancel: CancellationToken,
) {
    let consumer: StreamConsumer<QuietEof> = match choreo_bus::read_back(
        client.clone(),
        choreo_bus::ReadBack::Follow,
        "choreo-view",
    )
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
                    Some(v) => match SagaState::decode(v) {
                        Ok(s) if SagaState::is_current_format(v) => {
                            view.upsert_encoded(&s, v.to_vec());
                        }
                        Ok(s) => view.upsert(s),
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "unreadable saga state in the changelog; not in the operator view")
                        }
                    },
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

/// Whether a metadata or offsets error passes by itself: leadership being elected or moving.
fn passes_by_itself(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::UnknownLeaderEpoch
                | RDKafkaErrorCode::FencedLeaderEpoch
        )
    )
}
