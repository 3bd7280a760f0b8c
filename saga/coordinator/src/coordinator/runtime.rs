//! The runtime loop of one replica: collect a batch, follow rebalances, restore what was
//! assigned, process the batch (see `transaction.rs`), and recover from what the producer
//! cannot continue after.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stage::Record;
use choreo_bus::wire::codec::Codec;
use choreo_saga::{Millis, SagaState, StateDecodeError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::CoordinatorOptions;
use super::Guarantee;
use super::changelog::ChangelogReader;
use super::stored::Stored;
use super::transaction::InFlight;
use crate::error::CoordinatorError;
use crate::index::{DeadlineIndex, Due};
use crate::telemetry as m;
use crate::view::SagaView;

/// Rebalance callbacks, as the consumer reported them (they run inside `recv`, so never in the
/// middle of a batch's transaction).
#[derive(Debug, Default)]
pub(crate) struct RebalanceEvents {
    assigned: BTreeSet<i32>,
    revoked: BTreeSet<i32>,
    changed: bool,
    /// Bumped by every callback: records received under an older generation were fetched for
    /// an assignment that no longer holds.
    generation: u64,
}

pub(crate) struct RebalanceContext {
    pub(crate) events: Arc<Mutex<RebalanceEvents>>,
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
            e.generation += 1;
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut e = self.events.lock().unwrap_or_else(|p| p.into_inner());
            for el in tpl.elements() {
                e.assigned.insert(el.partition());
            }
            e.changed = true;
            e.generation += 1;
        }
    }
}

pub(crate) fn now_millis() -> Millis {
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

/// Why a batch did not commit.
pub(crate) enum BatchError {
    /// Aborted (or never begun): rewind and try again.
    Retry(String),
    /// A batch aborted after its states were applied to memory (its commit ran while the next
    /// batch was staged): restore the owned partitions from the changelog and read their
    /// inputs again from the committed offsets.
    Resync(String),
    /// The transactional producer cannot go on (fenced, or a fatal error): recreate it and
    /// restore the owned partitions from what is committed.
    Recover(String),
    /// Stop the coordinator.
    Fatal(CoordinatorError),
}

impl BatchError {
    /// How much of the replica the failure takes down: a stop over a new producer over a
    /// restore over a rewind.
    fn gravity(&self) -> u8 {
        match self {
            Self::Retry(_) => 0,
            Self::Resync(_) => 1,
            Self::Recover(_) => 2,
            Self::Fatal(_) => 3,
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Retry(why) | Self::Resync(why) | Self::Recover(why) => why.clone(),
            Self::Fatal(e) => e.to_string(),
        }
    }
}

/// Consecutive failed batches after which `/readyz` says the replica is not ready.
const UNHEALTHY_AFTER: u32 = 3;

/// Producer recoveries within a minute after which the replica stops: something else keeps
/// fencing it (another process running with the same instance id).
const MAX_RECOVERIES_PER_MINUTE: usize = 5;

/// Failed tries of one recovery (a broker that does not answer) after which the replica
/// stops: about eight minutes.
const RECOVERY_ATTEMPTS: u32 = 55;

pub(crate) struct Runtime {
    pub(crate) opts: Arc<CoordinatorOptions>,
    /// [`CoordinatorOptions::changelog_topic`], resolved once.
    pub(crate) changelog_topic: String,
    /// [`CoordinatorOptions::commands_topic`], resolved once.
    pub(crate) commands_topic: String,
    /// [`CoordinatorOptions::rekey_topic`], resolved once.
    pub(crate) rekey_topic: String,
    /// The partition count of the saga topics (co-partitioned, the changelog's).
    pub(crate) partitions: i32,
    /// Shared with the loop, whose batches borrow their records from it.
    pub(crate) consumer: Arc<StreamConsumer<RebalanceContext>>,
    pub(crate) producer: FutureProducer,
    pub(crate) codec: Codec,
    /// The states of the sagas of each owned partition, as their changelog values.
    pub(crate) owned: HashMap<i32, HashMap<Arc<str>, Stored, crate::Ids>>,
    /// The operator view, which keeps the owned sagas' values with the store (shared bytes).
    pub(crate) view: Arc<SagaView>,
    pub(crate) index: DeadlineIndex,
    pub(crate) rebalance: Arc<Mutex<RebalanceEvents>>,
    pub(crate) ready: Arc<AtomicBool>,
    /// False while batches keep failing.
    pub(crate) healthy: Arc<AtomicBool>,
    pub(crate) assigned_once: bool,
    pub(crate) last_gauge: Instant,
    /// The next offset of every owned input partition as last committed (or fetched at
    /// assignment). Every transaction sends these along, so that even a batch of deadlines
    /// only is fenced by the group generation (KIP-447) when this replica is a zombie.
    pub(crate) positions: HashMap<(String, i32), i64>,
    /// Partitions to restore before their inputs are handled.
    pub(crate) pending_restore: BTreeSet<i32>,
    pub(crate) recoveries: VecDeque<Instant>,
    /// Sagas of this replica waiting for their start event, as counted at the last gauge
    /// refresh (every second).
    pub(crate) pending_sagas: usize,
    /// An ACL denied the consumer its group or a topic: the replica stops with this.
    pub(crate) denied: Option<CoordinatorError>,
    /// Writer schema ids the registry did not know when the current batch was looked up
    /// (before its transaction began): its records with them are dead-lettered as unknown.
    pub(crate) unknown_ids: BTreeSet<u32>,
    /// The batch committing in the background (exactly-once), settled before the next one
    /// begins its transaction, before a rebalance or a recovery is handled, and at shutdown.
    pub(crate) in_flight: Option<InFlight>,
    /// Batches failed in a row: three make the replica unhealthy; a commit resets it.
    pub(crate) failures: u32,
}

impl Runtime {
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> Result<(), CoordinatorError> {
        let result = self.run_loop(&cancel).await;
        self.healthy.store(false, Ordering::Release);
        self.ready.store(false, Ordering::Release);
        result
    }

    async fn run_loop(&mut self, cancel: &CancellationToken) -> Result<(), CoordinatorError> {
        let session = self.opts.session_timeout();
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let iteration = Instant::now();
            let consumer = Arc::clone(&self.consumer);
            let (mut batch, stale) = self.collect(&consumer, cancel).await;
            // A rebalance (and the restore it brings), a denial or a stop is handled with
            // nothing in flight.
            if (self.rebalanced() || self.denied.is_some() || cancel.is_cancelled())
                && !self.settled().await?
            {
                continue;
            }
            if let Some(e) = self.denied.take() {
                tracing::error!(error = %e, "coordinator stopping");
                return Err(e);
            }
            let (revoked, assigned) = self.take_rebalance();
            if !revoked.is_empty() && iteration.elapsed() > session {
                tracing::error!(
                    stalled_secs = iteration.elapsed().as_secs_f64(),
                    session_timeout_secs = session.as_secs_f64(),
                    "fenced: this replica was away from the group longer than its session timeout (it stalled, or the broker was unreachable) and its partitions were revoked; it had no batch in hand, and rejoins the group"
                );
            }
            if stale > 0 {
                // Fetched for an assignment that has since changed; what is still ours is
                // fetched again from the committed offsets.
                batch.drain(..stale);
            }
            if !revoked.is_empty() {
                batch.retain(|m| {
                    !revoked.contains(&m.partition()) || assigned.contains(&m.partition())
                });
                for p in &revoked {
                    self.owned.remove(p);
                    self.index.forget_partition(*p);
                    self.pending_restore.remove(p);
                }
                self.positions.retain(|(_, p), _| !revoked.contains(p));
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            self.pending_restore.extend(assigned);
            if !self.pending_restore.is_empty() {
                self.ready.store(false, Ordering::Release);
                // Nothing is in flight here: a rebalance settled it above, and a failure that
                // forgets the owned sagas settled it in `failed`.
                let partitions = std::mem::take(&mut self.pending_restore);
                if let Err(e) = self.restore(&partitions).await {
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
                // Idle: the batch in flight is settled (its metrics and offsets taken).
                self.settled().await?;
                self.update_gauges();
                continue;
            }
            let result = self.process(&batch, &due, now).await;
            if result.is_err() && iteration.elapsed() > session {
                tracing::error!(
                    stalled_secs = iteration.elapsed().as_secs_f64(),
                    session_timeout_secs = session.as_secs_f64(),
                    "fenced: this batch took longer than the group session timeout (the replica stalled, or the broker was unreachable), so its partitions may have gone to another replica; the batch was aborted and nothing of it is visible; it rejoins the group"
                );
            }
            // A batch that commits makes the replica healthy again (`committed_batch`): under
            // exactly-once, when it is settled.
            if let Err(e) = result {
                self.failed(e, &batch).await?;
            }
            self.update_gauges();
        }
        // Stopping: the batch in flight commits (or aborts) before the replica leaves.
        if let Err(e) = self.settle().await {
            tracing::warn!(reason = %e.reason(), "the last batch did not commit; its inputs will be read again");
        }
        tracing::info!("coordinator stopped");
        Ok(())
    }

    /// Handles a failed batch (`batch`: its records, for a rewind): the batch in flight is
    /// settled first, and the graver of the two failures is handled. An error stops the
    /// replica.
    async fn failed(
        &mut self,
        error: BatchError,
        batch: &[Record<'_>],
    ) -> Result<(), CoordinatorError> {
        let error = match self.settle().await {
            Ok(()) => error,
            Err(earlier) if earlier.gravity() >= error.gravity() => earlier,
            Err(_) => error,
        };
        match error {
            BatchError::Fatal(e) => {
                tracing::error!(error = %e, "coordinator stopping");
                Err(e)
            }
            BatchError::Recover(why) => {
                metrics::counter!(m::TRANSACTION_ABORTS).increment(1);
                if let Err(e) = self.recover(&why).await {
                    tracing::error!(error = %e, "recovery failed; coordinator stopping");
                    return Err(e);
                }
                Ok(())
            }
            BatchError::Retry(why) => {
                self.replace_producer_if_fatal()?;
                self.count_failure();
                tracing::warn!(reason = %why, failures = self.failures, "batch aborted; rewinding and retrying");
                self.rewind(batch)?;
                self.back_off().await;
                Ok(())
            }
            BatchError::Resync(why) => {
                self.count_failure();
                tracing::warn!(reason = %why, failures = self.failures, "batch aborted; restoring the owned partitions from the changelog and reading again from the committed offsets (the next batch was staged on it)");
                self.forget_owned();
                self.seek_to_committed()?;
                self.back_off().await;
                Ok(())
            }
        }
    }

    /// Settles the batch in flight, handling its failure ([`Self::failed`]): whether it
    /// committed (or nothing was in flight).
    async fn settled(&mut self) -> Result<bool, CoordinatorError> {
        match self.settle().await {
            Ok(()) => Ok(true),
            Err(e) => self.failed(e, &[]).await.map(|()| false),
        }
    }

    fn count_failure(&mut self) {
        self.failures += 1;
        if self.failures >= UNHEALTHY_AFTER {
            self.healthy.store(false, Ordering::Release);
        }
        metrics::counter!(m::TRANSACTION_ABORTS).increment(1);
    }

    async fn back_off(&self) {
        tokio::time::sleep(Duration::from_millis(
            100 * u64::from(self.failures.min(50)),
        ))
        .await;
    }

    /// Whether a rebalance callback ran since the last [`Self::take_rebalance`].
    fn rebalanced(&self) -> bool {
        self.rebalance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .changed
    }

    fn generation(&self) -> u64 {
        self.rebalance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
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
    /// (at most 100 ms), then lingers `batch_linger` for more. A rebalance ends the batch; the
    /// second value counts the records at its front that were received before it.
    async fn collect<'c>(
        &mut self,
        consumer: &'c StreamConsumer<RebalanceContext>,
        cancel: &CancellationToken,
    ) -> (Vec<Record<'c>>, usize) {
        let mut batch = Vec::new();
        let seen = self.generation();
        let now = now_millis();
        let until_deadline = self
            .index
            .next_at()
            .map_or(Duration::from_millis(100), |at| {
                Duration::from_millis(at.0.saturating_sub(now.0)).min(Duration::from_millis(100))
            });
        let first = tokio::select! {
            () = cancel.cancelled() => return (batch, 0),
            r = tokio::time::timeout(until_deadline, consumer.recv()) => r,
        };
        match first {
            Ok(Ok(m)) => batch.push(m),
            Ok(Err(e)) => {
                self.consumer_error(e);
                return (batch, 0);
            }
            Err(_) => return (batch, 0),
        }
        if self.generation() != seen {
            return (batch, 0);
        }
        let linger_until = tokio::time::Instant::now() + self.opts.batch_linger;
        while batch.len() < self.opts.batch_max_records {
            match tokio::time::timeout_at(linger_until, consumer.recv()).await {
                Ok(Ok(m)) => {
                    if self.generation() != seen {
                        let stale = batch.len();
                        batch.push(m);
                        return (batch, stale);
                    }
                    batch.push(m);
                }
                Ok(Err(e)) => {
                    self.consumer_error(e);
                    break;
                }
                Err(_) => break,
            }
        }
        (batch, 0)
    }

    /// Logs a consumer error; one that says an ACL denies the group or an input topic stops
    /// the replica (through `denied`), as retrying cannot change it.
    fn consumer_error(&mut self, e: rdkafka::error::KafkaError) {
        let code = e.rdkafka_error_code();
        let Some(code) = code.filter(|c| choreo_bus::connect::is_authorization_error(*c)) else {
            tracing::warn!(error = %e, "consumer error");
            return;
        };
        self.denied = Some(self.denial(code));
    }

    /// An ACL denies the coordinator its consumer group (`GROUP_AUTHORIZATION_FAILED`) or an
    /// input topic: the error it stops with, naming the principal and the resource (retrying
    /// cannot change an ACL).
    pub(crate) fn denial(&self, code: rdkafka::types::RDKafkaErrorCode) -> CoordinatorError {
        let resource = if code == rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed {
            format!("consumer group {}", self.opts.group_id)
        } else {
            let inputs = self.opts.input_topics().unwrap_or_default();
            let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
            format!("one of its input topics ({})", names.join(", "))
        };
        let refused = choreo_bus::connect::denied(
            &self.opts.kafka.client_config(),
            resource,
            code,
            "the coordinator needs Describe and Read on its group and on its input topics",
        );
        choreo_bus::BusError::from(refused).into()
    }

    /// The committed offsets of every input topic's `partitions`, once they are stable (a
    /// transaction of a previous owner that carries offsets is committed or aborted first).
    fn fetch_committed(&mut self, partitions: &BTreeSet<i32>) -> Result<(), CoordinatorError> {
        let topics = self.opts.input_topics()?;
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            for p in partitions {
                tpl.add_partition(t, *p);
            }
        }
        for el in self.committed(tpl)?.elements() {
            if let Offset::Offset(o) = el.offset() {
                self.positions
                    .insert((el.topic().to_owned(), el.partition()), o);
            }
        }
        Ok(())
    }

    /// The group's committed offsets of `tpl` (stable ones, under read_committed).
    fn committed(&self, tpl: TopicPartitionList) -> Result<TopicPartitionList, CoordinatorError> {
        let (consumer, timeout) = (&self.consumer, self.opts.kafka_timeout);
        tokio::task::block_in_place(|| consumer.committed_offsets(tpl, timeout))
            .map_err(|e| CoordinatorError::kafka("fetching committed offsets", e))
    }

    /// Reads the changelog partitions just assigned and rebuilds their deadline index.
    async fn restore(&mut self, partitions: &BTreeSet<i32>) -> Result<(), CoordinatorError> {
        self.fetch_committed(partitions)?;
        let (client, topic, group, timeout, txn_timeout) = (
            self.opts.kafka.consumer_config(),
            self.changelog_topic.clone(),
            self.opts.group_id.clone(),
            self.opts.kafka_timeout,
            self.opts.transaction_timeout,
        );
        let list: Vec<i32> = partitions.iter().copied().collect();
        let restored = tokio::task::spawn_blocking(move || {
            let reader = ChangelogReader::new(&client, &topic, &group, timeout, txn_timeout)?;
            list.into_iter()
                .map(|p| {
                    let started = Instant::now();
                    reader
                        .read_partition(p)
                        .map(|states| (p, states, started.elapsed()))
                })
                .collect::<Result<Vec<_>, CoordinatorError>>()
        })
        .await
        .map_err(|e| CoordinatorError::Startup(format!("restore task: {e}")))??;
        for (p, values, took) in restored {
            self.index.forget_partition(p);
            let mut states = HashMap::with_capacity_and_hasher(values.len(), crate::Ids::default());
            for (key, value) in values {
                let s = match SagaState::decode(&value) {
                    Ok(s) => s,
                    // Written by a newer release: going on without it would start the saga
                    // afresh over it.
                    Err(e @ StateDecodeError::UnknownFormat(_)) => {
                        return Err(CoordinatorError::Startup(format!(
                            "restoring {}/{p}: saga {key}: {e}",
                            self.changelog_topic
                        )));
                    }
                    Err(e) => {
                        tracing::error!(key = %key, error = %e, "unreadable saga state in the changelog; skipped");
                        continue;
                    }
                };
                // A state from before the binary format is kept (and written next) in it.
                let (id, stored) = if SagaState::is_current_format(&value) {
                    Stored::new(&s, value, &self.view)
                } else {
                    Stored::of(&s, &self.view)
                };
                states.insert(id, stored);
                if let Err(why) = self.opts.definitions.checked_for_state(&s) {
                    // Its inputs are rejected by the state machine (never a panic); an operator
                    // must bring back the definition it was made with.
                    tracing::error!(saga_id = %s.saga_id, reason = %why, "restored saga state does not fit its definition; its deadlines are not armed and its inputs are rejected");
                    metrics::counter!(m::MISMATCHED_STATES).increment(1);
                    continue;
                }
                for d in s.deadlines() {
                    self.index
                        .set(p, &s.saga_id, Due::Deadline(d.kind.clone()), d.at);
                }
                if let Some(keep) = self.retention_of(&s) {
                    self.index
                        .set(p, &s.saga_id, Due::Expiry, s.updated_at.plus(keep));
                }
            }
            let n = states.len();
            self.owned.insert(p, states);
            let secs = took.as_secs_f64();
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

    /// Puts the consumer back at the first record of an aborted batch. A partition that is no
    /// longer ours needs nothing; one that is ours and cannot be rewound stops the replica,
    /// since going on would skip the batch's records.
    fn rewind(&mut self, batch: &[Record<'_>]) -> Result<(), CoordinatorError> {
        let mut first: std::collections::BTreeMap<(String, i32), i64> = Default::default();
        for msg in batch {
            first
                .entry((msg.topic().to_owned(), msg.partition()))
                .or_insert(msg.offset());
        }
        for ((topic, p), offset) in first {
            self.seek(&topic, p, Offset::Offset(offset))?;
        }
        Ok(())
    }

    fn seek(&self, topic: &str, p: i32, offset: Offset) -> Result<(), CoordinatorError> {
        let mut last = None;
        for attempt in 0..5u64 {
            match self
                .consumer
                .seek(topic, p, offset, Duration::from_secs(10))
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let still_ours = self.consumer.assignment().is_ok_and(|a| {
                        a.elements()
                            .iter()
                            .any(|el| el.topic() == topic && el.partition() == p)
                    });
                    if !still_ours {
                        tracing::info!(
                            topic,
                            partition = p,
                            "not rewound: the partition is no longer assigned here"
                        );
                        return Ok(());
                    }
                    tracing::warn!(error = %e, topic, partition = p, attempt, "seek failed; retrying");
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
                }
            }
        }
        Err(CoordinatorError::Startup(format!(
            "cannot rewind {topic}/{p} to {offset:?} after an aborted batch ({}); stopping rather than skipping its records",
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// Effectively-once: an idempotent producer with a fatal error (fenced, an unrecoverable
    /// sequence or authorization failure) refuses every record after it, so every batch would
    /// fail the same way forever. It is replaced by a new one, with one error line; the aborted
    /// batch is read again. (Exactly-once has the same in [`Self::recover`], through the
    /// transaction calls.)
    fn replace_producer_if_fatal(&mut self) -> Result<(), CoordinatorError> {
        if self.opts.guarantee != Guarantee::EffectivelyOnce {
            return Ok(());
        }
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return Ok(());
        };
        tracing::error!(error = ?code, reason = %reason, "the producer hit a fatal error and refuses every record after it; replacing it with a new one (the batch it failed is read again)");
        self.producer = super::producer_config(&self.opts)
            .create()
            .map_err(|e| CoordinatorError::kafka("re-creating the producer", e))?;
        metrics::counter!(m::PRODUCERS_REPLACED).increment(1);
        Ok(())
    }

    /// The transactional producer cannot continue: a new one (whose `init_transactions` aborts
    /// whatever the old one left open), every owned partition restored again from what was
    /// committed, and the consumer put back at the committed offsets.
    async fn recover(&mut self, why: &str) -> Result<(), CoordinatorError> {
        let now = Instant::now();
        self.recoveries
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        self.recoveries.push_back(now);
        if self.recoveries.len() > MAX_RECOVERIES_PER_MINUTE {
            return Err(CoordinatorError::Fenced(format!(
                "{why}; fenced {} times within a minute: is another replica running with coordinator.instance_id = {:?}?",
                self.recoveries.len(),
                self.opts.instance_id
            )));
        }
        match self.opts.guarantee {
            Guarantee::ExactlyOnce => {
                tracing::error!(reason = %why, transactional_id = %self.opts.transactional_id(), "fenced: this replica's transaction was refused (a transaction the broker timed out, or another instance with this transactional id); nothing of the batch is visible; recreating the producer and restoring the owned partitions")
            }
            Guarantee::EffectivelyOnce => {
                tracing::error!(reason = %why, "the producer hit a fatal error and refuses every record after it; recreating it and restoring the owned partitions (the batch is read again; its events repeat with the same ids)")
            }
        }
        // Nothing the old producer still holds may reach the log after its successor's
        // `init_transactions`.
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        // A broker just back may not answer yet: keep trying (the replica is not ready
        // meanwhile) rather than stop; only the session of tries has a bound.
        self.forget_owned();
        let mut attempt = 0u32;
        loop {
            match self.renew().await {
                Ok(()) => return Ok(()),
                Err(e @ CoordinatorError::Fenced(_)) => return Err(e),
                Err(e) if attempt >= RECOVERY_ATTEMPTS => return Err(e),
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "recovery did not complete; trying again");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt.min(10)))).await;
                }
            }
        }
    }

    /// A new transactional producer, and the consumer put back at the committed offsets of
    /// the assignment (whose partitions are restored again before their next batch).
    async fn renew(&mut self) -> Result<(), CoordinatorError> {
        self.producer = match self.opts.guarantee {
            Guarantee::ExactlyOnce => super::transactional_producer(&self.opts).await?,
            // No transactions here (the broker may have none): a new idempotent producer.
            Guarantee::EffectivelyOnce => super::producer_config(&self.opts)
                .create()
                .map_err(|e| CoordinatorError::kafka("re-creating the producer", e))?,
        };
        self.seek_to_committed()
    }

    /// Forgets the owned sagas and their deadlines: every owned partition is restored from the
    /// changelog before its next batch.
    fn forget_owned(&mut self) {
        let partitions: BTreeSet<i32> = self.owned.keys().copied().collect();
        for p in &partitions {
            self.index.forget_partition(*p);
        }
        self.owned.clear();
        self.positions.clear();
        self.pending_restore.extend(partitions);
    }

    /// Puts the consumer back at the committed offsets of its assignment.
    fn seek_to_committed(&mut self) -> Result<(), CoordinatorError> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| CoordinatorError::kafka("reading the assignment", e))?;
        for el in self.committed(assignment)?.elements() {
            let offset = match el.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            self.seek(el.topic(), el.partition(), offset)?;
        }
        Ok(())
    }

    fn update_gauges(&mut self) {
        if self.last_gauge.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_gauge = Instant::now();
        let mut per_def: std::collections::BTreeMap<Arc<str>, u64> = Default::default();
        for d in self.opts.definitions.iter() {
            per_def.entry(d.name().into()).or_insert(0);
        }
        let mut per_number: HashMap<u32, u64> = HashMap::new();
        let mut pending = 0;
        for states in self.owned.values() {
            for s in states.values() {
                if !s.status.is_terminal() {
                    *per_number.entry(s.definition).or_insert(0) += 1;
                }
                if s.status == choreo_saga::Status::Pending {
                    pending += 1;
                }
            }
        }
        for (number, n) in per_number {
            if let Some(name) = self.view.definition_named(number) {
                *per_def.entry(name).or_insert(0) += n;
            }
        }
        self.pending_sagas = pending;
        metrics::gauge!(m::SAGAS_PENDING).set(pending as f64);
        for (d, n) in per_def {
            metrics::gauge!(m::SAGAS_IN_FLIGHT, m::LABEL_DEFINITION => d.to_string()).set(n as f64);
        }
    }
}
