//! The transaction of one batch — the one place where exactly-once and effectively-once fork.
//!
//! Exactly-once: begin → stage (emitted events, dead letters) → changelog records → wait for
//! every acknowledgement → offsets with the group metadata (KIP-447: a zombie's generation is
//! refused) → commit. Every error after `begin_transaction` aborts; a commit whose outcome is
//! unknown (a timeout) is retried, never aborted, because it may have committed.
//! Effectively-once: the same records through the idempotent producer, in two waves — the
//! emitted events and dead letters first, every one acknowledged, and only then the changelog
//! records — then a plain offset commit. Without a transaction nothing hides a half-written
//! batch, so the order is what keeps every effect: a changelog record that landed before its
//! emitted event would, after a crash, restore a saga that believes the event sent, and the
//! replayed input would be dropped as already seen. Emitted first, a crash in between only
//! replays the input, and the event goes out again under the same deterministic id.
//!
//! Memory (states, deadline index, metrics) changes only after the commit
//! ([`Runtime::apply_committed`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaError};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use super::Guarantee;
use super::changelog::OWNER_HEADER;
use super::runtime::{BatchError, Runtime};
use super::stage::Staged;
use super::stored::Stored;
use crate::index::Entry;
use crate::telemetry as m;
use choreo_saga::{Millis, Status};
use choreo_schemas::RegistryError;

impl Runtime {
    pub(crate) async fn process(
        &mut self,
        batch: &[OwnedMessage],
        due: &[Entry],
        now: Millis,
    ) -> Result<(), BatchError> {
        let exactly_once = self.opts.guarantee == Guarantee::ExactlyOnce;
        self.unknown_ids = self.look_up_writer_schemas(batch).await;
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
        let mut staged = Staged::default();
        let offsets = match self.produce(batch, due, now, &mut staged).await {
            Ok(offsets) => offsets,
            Err(e) => {
                if exactly_once {
                    self.abort()?;
                }
                return Err(e);
            }
        };
        let started = Instant::now();
        if exactly_once {
            self.commit()?;
        } else if offsets.count() > 0 {
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
        metrics::histogram!(m::TRANSACTION_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::BATCH_RECORDS).record(batch.len() as f64);
        for ((topic, p), next) in &staged.next_offsets {
            self.positions.insert((topic.clone(), *p), *next);
        }
        self.apply_committed(staged);
        Ok(())
    }

    /// Looks up the writer schema of every record of the batch before its transaction begins,
    /// and returns the ids the registry did not know. A slow registry — an id it does not know
    /// costs choreo's Kafka-backed registry a read of its topic — then delays the batch instead
    /// of holding its transaction open past the transaction timeout, which the broker answers
    /// by fencing the producer. Staging takes the answers as they are for this batch (a record
    /// with an id that was unknown is dead-lettered without asking again); the next batch asks
    /// again, so a schema registered meanwhile is found.
    async fn look_up_writer_schemas(&self, batch: &[OwnedMessage]) -> BTreeSet<u32> {
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

    /// Everything of the batch but the commit: staged records, changelog records, every
    /// acknowledgement, and (exactly-once) the offsets sent to the transaction. Returns the
    /// offsets to commit.
    async fn produce(
        &mut self,
        batch: &[OwnedMessage],
        due: &[Entry],
        now: Millis,
        staged: &mut Staged,
    ) -> Result<TopicPartitionList, BatchError> {
        let started = Instant::now();
        self.stage(batch, due, now, staged).await?;
        let staged_in = started.elapsed();
        let exactly_once = self.opts.guarantee == Guarantee::ExactlyOnce;
        if !exactly_once {
            // Effects before the state that records them (see the module docs).
            Self::acknowledged(&mut staged.deliveries).await?;
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
        let tpl = self.offsets(staged)?;
        // Wait for every record's acknowledgement first: `commit_transaction` would otherwise
        // flush in-flight records itself, and rdkafka's flush then waits out its whole poll
        // interval (100 ms) because the delivery reports go to the producer's own thread.
        Self::acknowledged(&mut staged.deliveries).await?;
        tracing::debug!(
            records = batch.len(),
            due = due.len(),
            staged_ms = staged_in.as_millis() as u64,
            acknowledged_ms = started.elapsed().as_millis() as u64,
            "batch staged and acknowledged"
        );
        if exactly_once && tpl.count() > 0 {
            let cgm = self
                .consumer
                .group_metadata()
                .ok_or_else(|| BatchError::Retry("no group metadata yet".into()))?;
            self.block(|p, t| p.send_offsets_to_transaction(&tpl, &cgm, t))
                .map_err(|e| {
                    // An ACL added while running denies the group its offsets: stop with
                    // the line that names it, as at start-up (retrying cannot change it).
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed)
                    {
                        return BatchError::Fatal(
                            self.denial(RDKafkaErrorCode::GroupAuthorizationFailed),
                        );
                    }
                    if is_stale_generation(&e) {
                        tracing::warn!(error = %e, "commit fenced by the group: this replica's generation is stale (its partitions went to another replica while it was stalled); the batch is aborted and nothing of it is visible");
                    }
                    classify(&e, "send_offsets_to_transaction")
                })?;
        }
        Ok(tpl)
    }

    /// Waits for every delivery in `deliveries` (and empties it); the first failure fails the
    /// batch.
    async fn acknowledged(deliveries: &mut Vec<DeliveryFuture>) -> Result<(), BatchError> {
        for d in futures::future::join_all(std::mem::take(deliveries)).await {
            match d {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(classify(&e, "delivery")),
                Err(_) => return Err(BatchError::Retry("delivery cancelled".into())),
            }
        }
        Ok(())
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

    /// Commits the open transaction. A retriable failure (a timeout: the outcome is unknown)
    /// is retried — librdkafka allows only that — until the commit succeeds or fails for good;
    /// one that requires an abort is aborted.
    fn commit(&self) -> Result<(), BatchError> {
        self.retrying("commit_transaction", |p, t| p.commit_transaction(t))
            .or_else(|e| {
                let out = classify(&e, "commit_transaction");
                if matches!(out, BatchError::Retry(_)) {
                    self.abort()?;
                }
                Err(out)
            })
    }

    /// Aborts the open transaction, retrying while the broker cannot be reached. An abort that
    /// fails for good leaves a producer that cannot go on.
    fn abort(&self) -> Result<(), BatchError> {
        self.retrying("abort_transaction", |p, t| p.abort_transaction(t))
            .map_err(|e| match classify(&e, "abort_transaction") {
                BatchError::Retry(why) => BatchError::Recover(why),
                other => other,
            })
    }

    /// Calls a transaction step until it succeeds or fails with anything but a retriable
    /// error (its outcome unknown: the same step again is the only call librdkafka allows).
    fn retrying(
        &self,
        what: &str,
        step: impl Fn(&FutureProducer, Timeout) -> Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        let mut attempt = 0u32;
        loop {
            match self.block(&step) {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "{what} did not complete; retrying it");
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn block<R>(
        &self,
        f: impl FnOnce(&FutureProducer, Timeout) -> Result<R, KafkaError>,
    ) -> Result<R, KafkaError> {
        let timeout = Timeout::After(self.opts.kafka_timeout);
        tokio::task::block_in_place(|| f(&self.producer, timeout))
    }

    pub(crate) fn send(
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
            .map_err(|(e, _)| classify(&e, &format!("enqueue to {topic}")))
    }

    pub(crate) fn apply_committed(&mut self, staged: Staged) {
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
        for def in staged.late_compensations {
            metrics::counter!(m::LATE_COMPENSATIONS, m::LABEL_DEFINITION => def).increment(1);
        }
        for def in staged.expired {
            metrics::counter!(m::SAGAS_EXPIRED, m::LABEL_DEFINITION => def).increment(1);
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
