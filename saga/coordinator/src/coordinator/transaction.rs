//! The transaction of one batch — the one place where exactly-once and effectively-once fork.
//!
//! Exactly-once: stage (nothing sent) → the previous batch's commit settled → begin → the
//! staged records (emitted events, dead letters, forwards) and the changelog records sent →
//! the batch's states applied to memory → in the background: every acknowledgement, the
//! offsets with the group metadata (KIP-447: a zombie's generation is refused), commit. The
//! next batch is collected and staged while this one commits: a commit round trip costs the
//! loop nothing, and a producer still has one transaction open at a time, since the next one
//! begins only once this one has settled.
//!
//! The memory the next batch is staged on already holds this batch's states. When this
//! batch's commit fails, nothing of it is visible, and that memory is wrong: the replica
//! restores every owned partition from the changelog and reads its inputs again from the
//! committed offsets (`BatchError::Resync`); the staged next batch is dropped. Every error
//! after `begin_transaction` aborts; a commit whose outcome is unknown (a timeout) is retried,
//! never aborted, because it may have committed.
//!
//! Effectively-once: the same records through the idempotent producer, in two waves — the
//! emitted events and dead letters first, every one acknowledged, and only then the changelog
//! records — then a plain offset commit, all before the next batch. Without a transaction
//! nothing hides a half-written batch, so the order is what keeps every effect: a changelog
//! record that landed before its emitted event would, after a crash, restore a saga that
//! believes the event sent, and the replayed input would be dropped as already seen. Emitted
//! first, a crash in between only replays the input, and the event goes out again under the
//! same deterministic id. Memory changes only after the commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaError};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use super::Guarantee;
use super::changelog::OWNER_HEADER;
use super::runtime::{BatchError, Runtime};
use super::stage::{Outgoing, Record, Staged};
use super::stored::Stored;
use crate::index::Entry;
use crate::telemetry as m;
use choreo_saga::{Millis, Status};
use choreo_schemas::RegistryError;

/// A batch whose transaction commits in the background while the next batch is collected and
/// staged (exactly-once); [`Runtime::settle`] takes its outcome.
pub(crate) struct InFlight {
    task: tokio::task::JoinHandle<Result<Duration, Failure>>,
    tally: Tally,
    next_offsets: BTreeMap<(String, i32), i64>,
    records: usize,
}

/// Why a batch committing in the background did not commit.
enum Failure {
    Batch(BatchError),
    /// An ACL denies the group its offsets.
    GroupDenied,
}

/// What a batch counts in the metrics, once it has committed.
#[derive(Default)]
pub(crate) struct Tally {
    transitions: Vec<(String, Status, Status)>,
    late_compensations: Vec<String>,
    expired: Vec<String>,
    lateness: Vec<f64>,
    inputs: BTreeMap<&'static str, u64>,
    dead_lettered: u64,
}

impl Tally {
    fn take(staged: &mut Staged) -> Self {
        Self {
            transitions: std::mem::take(&mut staged.transitions),
            late_compensations: std::mem::take(&mut staged.late_compensations),
            expired: std::mem::take(&mut staged.expired),
            lateness: std::mem::take(&mut staged.lateness),
            inputs: std::mem::take(&mut staged.inputs),
            dead_lettered: staged.dead_lettered,
        }
    }

    fn record(self) {
        for (def, from, to) in self.transitions {
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
        for def in self.late_compensations {
            metrics::counter!(m::LATE_COMPENSATIONS, m::LABEL_DEFINITION => def).increment(1);
        }
        for def in self.expired {
            metrics::counter!(m::SAGAS_EXPIRED, m::LABEL_DEFINITION => def).increment(1);
        }
        for l in self.lateness {
            metrics::histogram!(m::DEADLINE_LATENESS_SECONDS).record(l);
        }
        for (kind, n) in self.inputs {
            metrics::counter!(m::INPUTS, m::LABEL_KIND => kind).increment(n);
        }
        if self.dead_lettered > 0 {
            metrics::counter!(m::DEAD_LETTERED).increment(self.dead_lettered);
        }
    }
}

impl Runtime {
    pub(crate) async fn process(
        &mut self,
        batch: &[Record<'_>],
        due: &[Entry],
        now: Millis,
    ) -> Result<(), BatchError> {
        let exactly_once = self.opts.guarantee == Guarantee::ExactlyOnce;
        self.unknown_ids = self.look_up_writer_schemas(batch).await;
        let started = Instant::now();
        let mut staged = Staged::default();
        self.stage(batch, due, now, &mut staged).await?;
        let staged_in = started.elapsed();
        // The previous batch committed while this one was collected and staged.
        self.settle().await?;
        if exactly_once {
            // Nothing of a batch is sent before this, and a failed batch always ends its
            // transaction: a producer that cannot begin one is in a state it cannot leave.
            self.producer.begin_transaction().map_err(|e| {
                match classify(&e, "begin_transaction") {
                    BatchError::Retry(why) => BatchError::Recover(why),
                    other => other,
                }
            })?;
        }
        let offsets = match self.produce(&mut staged).await {
            Ok(offsets) => offsets,
            Err(e) => {
                if exactly_once {
                    abort(&self.producer, self.opts.kafka_timeout)?;
                }
                return Err(e);
            }
        };
        tracing::debug!(
            records = batch.len(),
            due = due.len(),
            staged_ms = staged_in.as_millis() as u64,
            sent_ms = started.elapsed().as_millis() as u64,
            "batch staged and sent"
        );
        let tally = Tally::take(&mut staged);
        let next_offsets = std::mem::take(&mut staged.next_offsets);
        if exactly_once {
            let group = if offsets.count() > 0 {
                match self.consumer.group_metadata() {
                    Some(g) => Some(g),
                    None => {
                        abort(&self.producer, self.opts.kafka_timeout)?;
                        return Err(BatchError::Retry("no group metadata yet".into()));
                    }
                }
            } else {
                None
            };
            let (faults, producer, timeout) = (
                self.opts.faults.clone(),
                self.producer.clone(),
                self.opts.kafka_timeout,
            );
            let deliveries = std::mem::take(&mut staged.deliveries);
            let task = tokio::task::spawn_blocking(move || {
                finish(
                    &faults,
                    &producer,
                    deliveries,
                    &offsets,
                    group.as_ref(),
                    timeout,
                )
            });
            self.apply_states(staged);
            self.in_flight = Some(InFlight {
                task,
                tally,
                next_offsets,
                records: batch.len(),
            });
            return Ok(());
        }
        acknowledged(std::mem::take(&mut staged.deliveries)).await?;
        let started = Instant::now();
        if offsets.count() > 0 {
            let consumer = &self.consumer;
            tokio::task::block_in_place(|| consumer.commit(&offsets, CommitMode::Sync)).map_err(
                |e| match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                        BatchError::Fatal(self.denial(RDKafkaErrorCode::GroupAuthorizationFailed))
                    }
                    _ => BatchError::Retry(format!("offset commit: {e}")),
                },
            )?;
        }
        self.committed_batch(started.elapsed(), batch.len(), next_offsets, tally);
        self.apply_states(staged);
        Ok(())
    }

    /// Takes the outcome of the batch committing in the background, if any: its metrics and
    /// offsets when it committed; when it did not, the error that makes the replica restore
    /// what it had applied of it ([`BatchError::Resync`]) or recover its producer.
    pub(crate) async fn settle(&mut self) -> Result<(), BatchError> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let outcome = f.task.await.unwrap_or_else(|e| {
            Err(Failure::Batch(BatchError::Recover(format!(
                "the commit task ended: {e}"
            ))))
        });
        match outcome {
            Ok(took) => {
                self.committed_batch(took, f.records, f.next_offsets, f.tally);
                Ok(())
            }
            Err(Failure::GroupDenied) => Err(BatchError::Fatal(
                self.denial(RDKafkaErrorCode::GroupAuthorizationFailed),
            )),
            Err(Failure::Batch(BatchError::Retry(why))) => Err(BatchError::Resync(why)),
            Err(Failure::Batch(other)) => Err(other),
        }
    }

    fn committed_batch(
        &mut self,
        commit_took: Duration,
        records: usize,
        next_offsets: BTreeMap<(String, i32), i64>,
        tally: Tally,
    ) {
        metrics::histogram!(m::TRANSACTION_COMMIT_SECONDS).record(commit_took.as_secs_f64());
        metrics::histogram!(m::BATCH_RECORDS).record(records as f64);
        self.positions.extend(next_offsets);
        tally.record();
        self.failures = 0;
        self.healthy
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Looks up the writer schema of every record of the batch before its transaction begins,
    /// and returns the ids the registry did not know. A slow registry — an id it does not know
    /// costs choreo's Kafka-backed registry a read of its topic — then delays the batch instead
    /// of holding its transaction open past the transaction timeout, which the broker answers
    /// by fencing the producer. Staging takes the answers as they are for this batch (a record
    /// with an id that was unknown is dead-lettered without asking again); the next batch asks
    /// again, so a schema registered meanwhile is found.
    async fn look_up_writer_schemas(&self, batch: &[Record<'_>]) -> BTreeSet<u32> {
        let mut ids = BTreeSet::new();
        for m in batch {
            if let Some(Ok((id, _))) =
                rdkafka::Message::payload(m).map(choreo_bus::wire::framing::unframe)
            {
                ids.insert(id);
            }
        }
        let registry = self.codec.registry();
        let mut unknown = BTreeSet::new();
        for id in ids {
            if registry.cached(id).is_none()
                && let Err(RegistryError::UnknownId(_)) = registry.schema(id).await
            {
                unknown.insert(id);
            }
        }
        unknown
    }

    /// The header that names the group owning a changelog record ([`OWNER_HEADER`]).
    fn owner_header(&self) -> OwnedHeaders {
        OwnedHeaders::new().insert(rdkafka::message::Header {
            key: OWNER_HEADER,
            value: Some(self.opts.group_id.as_str()),
        })
    }

    /// Sends the batch's staged records, then its changelog records (effectively-once: the
    /// staged records acknowledged first). Returns the offsets to commit.
    async fn produce(&mut self, staged: &mut Staged) -> Result<TopicPartitionList, BatchError> {
        for record in std::mem::take(&mut staged.records) {
            let sent = self.send_outgoing(record)?;
            staged.deliveries.push(sent);
        }
        if self.opts.guarantee != Guarantee::ExactlyOnce {
            // Effects before the state that records them (see the module docs).
            acknowledged(std::mem::take(&mut staged.deliveries)).await?;
        }
        // The saga states, once per saga per batch, to the partition the saga's inputs live on.
        let changelog = self.changelog_topic.clone();
        let mut encoded = Vec::with_capacity(staged.states.len());
        for (saga_id, (p, state)) in &staged.states {
            let value = state.encode();
            let sent = self.send(
                &changelog,
                Some(*p),
                saga_id,
                Some(&value),
                self.owner_header(),
            )?;
            staged.deliveries.push(sent);
            encoded.push((saga_id.clone(), value));
        }
        staged.encoded.extend(encoded);
        for (p, saga_id) in &staged.tombstones {
            let sent = self.send(&changelog, Some(*p), saga_id, None, self.owner_header())?;
            staged.deliveries.push(sent);
        }
        self.offsets(staged)
    }

    /// The batch's consumed offsets, plus the last committed offset of every other owned input
    /// partition: a batch of deadlines alone consumes nothing, and must still carry the group
    /// generation that fences a zombie.
    fn offsets(&self, staged: &Staged) -> Result<TopicPartitionList, BatchError> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), next) in &staged.next_offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
                .map_err(|e| BatchError::Retry(format!("offset list: {e}")))?;
        }
        for ((topic, p), next) in &self.positions {
            if self.owned.contains_key(p) && !staged.next_offsets.contains_key(&(topic.clone(), *p))
            {
                tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
                    .map_err(|e| BatchError::Retry(format!("offset list: {e}")))?;
            }
        }
        Ok(tpl)
    }

    pub(crate) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, BatchError> {
        self.producer
            .send_result(record(
                topic,
                partition,
                Some(key.as_bytes()),
                value,
                headers,
            ))
            .map_err(|(e, _)| classify(&e, &format!("enqueue to {topic}")))
    }

    /// Sends a staged record. A dead letter over the record limit with its value goes without
    /// it, with headers that say where the input is: never a batch retried forever.
    fn send_outgoing(&self, out: Outgoing) -> Result<DeliveryFuture, BatchError> {
        let (key, value) = (out.key.as_deref(), out.value.as_deref());
        let refused = match self.producer.send_result(record(
            &out.topic,
            out.partition,
            key,
            value,
            out.headers,
        )) {
            Ok(f) => return Ok(f),
            Err((e, rec)) => (e, rec.headers),
        };
        match refused {
            (e, Some(headers))
                if out.dead_letter
                    && e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                let bytes = value.map_or(0, <[u8]>::len);
                tracing::warn!(
                    topic = %out.topic,
                    bytes,
                    "the input is too large to be dead-lettered whole; its dead letter holds where it is, not its value"
                );
                let slim = choreo_bus::dead_letter::slimmed(&headers, bytes);
                self.producer
                    .send_result(record(&out.topic, out.partition, key, None, slim))
                    .map_err(|(e, _)| BatchError::Retry(format!("enqueue dead letter: {e}")))
            }
            (e, _) => Err(classify(&e, &format!("enqueue to {}", out.topic))),
        }
    }

    /// The batch's states, deadlines and deletions into memory: after its commit
    /// (effectively-once), or once its records are sent (exactly-once: the next batch is
    /// staged on them; a commit that fails restores them from the changelog).
    pub(crate) fn apply_states(&mut self, staged: Staged) {
        for (saga_id, due) in staged.index_cancels {
            self.index.cancel(&saga_id, &due);
        }
        for (p, saga_id, due, at) in staged.index_sets {
            self.index.set(p, &saga_id, due, at);
        }
        // The operator view follows the changelog (see `tail_changelog`), like every replica's.
        let mut encoded = staged.encoded;
        for (saga_id, (p, state)) in staged.states {
            let (id, stored) = match encoded.remove(&saga_id) {
                Some(value) => Stored::new(&state, value, &self.view),
                None => Stored::of(&state, &self.view),
            };
            self.owned.entry(p).or_default().insert(id, stored);
        }
        for (p, saga_id) in staged.tombstones {
            if let Some(m) = self.owned.get_mut(&p) {
                m.remove(saga_id.as_str());
            }
            self.index.forget_saga(&saga_id);
        }
    }
}

/// The rest of an exactly-once batch, in the background: every acknowledgement, the offsets
/// with the group metadata, the commit. Any failure before the commit aborts. Returns how long
/// the commit took. The acknowledgements come first: `commit_transaction` would otherwise
/// flush the records in flight itself, and rdkafka's flush then waits out its whole poll
/// interval (100 ms), because the delivery reports go to the producer's own thread. Blocks:
/// it runs on the blocking pool.
fn finish(
    faults: &super::Faults,
    producer: &FutureProducer,
    deliveries: Vec<DeliveryFuture>,
    offsets: &TopicPartitionList,
    group: Option<&ConsumerGroupMetadata>,
    timeout: Duration,
) -> Result<Duration, Failure> {
    let sent = futures::executor::block_on(acknowledged(deliveries))
        .map_err(Failure::Batch)
        .and_then(|()| match group {
            Some(g) => send_offsets(producer, offsets, g, timeout),
            None => Ok(()),
        });
    if let Err(e) = sent {
        abort(producer, timeout).map_err(Failure::Batch)?;
        return Err(e);
    }
    if faults.abort_commit() {
        abort(producer, timeout).map_err(Failure::Batch)?;
        return Err(Failure::Batch(BatchError::Retry(
            "commit_transaction: aborted by an injected fault".into(),
        )));
    }
    let started = Instant::now();
    commit(producer, timeout).map_err(Failure::Batch)?;
    Ok(started.elapsed())
}

/// A record to `topic` (`partition`: `None`, the partitioner places it by key).
fn record<'a>(
    topic: &'a str,
    partition: Option<i32>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut rec = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    rec
}

/// Waits for every delivery; the first failure fails the batch.
async fn acknowledged(deliveries: Vec<DeliveryFuture>) -> Result<(), BatchError> {
    for d in futures::future::join_all(deliveries).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(classify(&e, "delivery")),
            Err(_) => return Err(BatchError::Retry("delivery cancelled".into())),
        }
    }
    Ok(())
}

fn send_offsets(
    producer: &FutureProducer,
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
) -> Result<(), Failure> {
    producer
        .send_offsets_to_transaction(offsets, group, Timeout::After(timeout))
        .map_err(|e| {
            // An ACL added while running denies the group its offsets: stop with the line that
            // names it, as at start-up (retrying cannot change it).
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed) {
                return Failure::GroupDenied;
            }
            if is_stale_generation(&e) {
                tracing::warn!(error = %e, "commit fenced by the group: this replica's generation is stale (its partitions went to another replica while it was stalled); the batch is aborted and nothing of it is visible");
            }
            Failure::Batch(classify(&e, "send_offsets_to_transaction"))
        })
}

/// Commits the open transaction. A retriable failure (a timeout: the outcome is unknown) is
/// retried — librdkafka allows only that — until the commit succeeds or fails for good; one
/// that requires an abort is aborted.
fn commit(producer: &FutureProducer, timeout: Duration) -> Result<(), BatchError> {
    retrying(producer, timeout, "commit_transaction", |p, t| {
        p.commit_transaction(t)
    })
    .or_else(|e| {
        let out = classify(&e, "commit_transaction");
        if matches!(out, BatchError::Retry(_)) {
            abort(producer, timeout)?;
        }
        Err(out)
    })
}

/// Aborts the open transaction, retrying while the broker cannot be reached. An abort that
/// fails for good leaves a producer that cannot go on.
pub(crate) fn abort(producer: &FutureProducer, timeout: Duration) -> Result<(), BatchError> {
    retrying(producer, timeout, "abort_transaction", |p, t| {
        p.abort_transaction(t)
    })
    .map_err(|e| match classify(&e, "abort_transaction") {
        BatchError::Retry(why) => BatchError::Recover(why),
        other => other,
    })
}

/// Calls a transaction step until it succeeds or fails with anything but a retriable error
/// (its outcome unknown: the same step again is the only call librdkafka allows).
fn retrying(
    producer: &FutureProducer,
    timeout: Duration,
    what: &str,
    step: impl Fn(&FutureProducer, Timeout) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let mut attempt = 0u32;
    loop {
        // On a runtime worker the runtime moves to another thread meanwhile; elsewhere (the
        // blocking pool) this is the plain call.
        match tokio::task::block_in_place(|| step(producer, Timeout::After(timeout))) {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "{what} did not complete; retrying it");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// A commit refused for the sender's group generation (or membership).
pub(crate) fn is_stale_generation(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::RebalanceInProgress
        )
    )
}

/// What a failed transactional call means for the batch: a fatal producer error or a fenced
/// epoch needs a new producer; anything else aborts and retries the batch.
fn classify(e: &KafkaError, what: &str) -> BatchError {
    let fenced_code = |c: RDKafkaErrorCode| {
        matches!(
            c,
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    };
    if let KafkaError::Transaction(t) = e
        && (t.is_fatal() || fenced_code(t.code()))
    {
        return BatchError::Recover(format!("{what}: {}", describe(t)));
    }
    if e.rdkafka_error_code().is_some_and(fenced_code) {
        return BatchError::Recover(format!("{what}: {e}"));
    }
    BatchError::Retry(format!("{what}: {e}"))
}

fn describe(e: &RDKafkaError) -> String {
    format!("{} ({:?})", e.string(), e.code())
}
