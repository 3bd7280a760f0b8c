//! The dispatcher: one task polls the consumer and hands each record to its partition's
//! worker, starting the worker on the partition's first record; records of a partition revoked
//! meanwhile are left to its new owner.
//!
//! The dispatcher waits for one partition only briefly: a full worker queue whose worker is
//! moving takes the record within [`WORKER_PATIENCE`]. When it does not (its record in hand is
//! slow, retried or cannot be dead-lettered), that partition is paused in the consumer, the
//! record is parked, and a task of its own hands the parked records over in order as the worker
//! takes them, then resumes the partition. Every other partition goes on meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio_util::sync::CancellationToken;

use super::process::Processor;
use super::rebalance::SubscriberContext;
use super::worker::{Shared, lock, spawn_worker};

/// How long the dispatcher waits for room in a full worker queue before it pauses the partition
/// and parks its records.
///
/// A worker that is moving frees a slot every few microseconds (a millisecond or two for an
/// I/O-bound handler with many records in flight), so waiting for it is ordinary backpressure.
/// Pausing instead is expensive: librdkafka drops what it had prefetched for the partition,
/// and on resume fetches it again and queues it behind every other partition's prefetch, so the
/// worker idles while the rest is read. Paused at the first full queue, a subscriber taking
/// records faster than its workers finished them paused 65 times in 50 000 records and ran at
/// 0.06–0.17× of plain rdkafka (BENCHMARKS.md). A worker that takes nothing for this long is held by its
/// record in hand (slow, retried, or waiting to be dead-lettered): its partition is paused so
/// that every other partition goes on, and the others wait at most this long, once per pause.
const WORKER_PATIENCE: Duration = Duration::from_millis(100);

/// Polls the consumer until cancelled, handing each record to its partition's worker.
pub(super) async fn dispatch(
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    shared: Arc<Shared>,
    processor: Arc<Processor>,
    cancel: CancellationToken,
    depth: usize,
    max_in_flight: usize,
) {
    loop {
        let received = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            r = consumer.recv() => r,
        };
        let msg = match received {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tp = (msg.topic().to_owned(), msg.partition());
        let tx = {
            if !lock(&shared.assigned).contains(&tp) {
                continue; // a record of a partition revoked meanwhile: its new owner reads it
            }
            let mut workers = lock(&shared.workers);
            workers
                .entry(tp.clone())
                .or_insert_with(|| spawn_worker(&consumer, &processor, depth, max_in_flight))
                .tx
                .clone()
        };
        // Behind records already parked for this partition: in order, after them.
        let msg = {
            let mut parked = lock(&shared.parked);
            match parked.get_mut(&tp) {
                Some(queue) => {
                    queue.push_back(msg);
                    continue;
                }
                None => match tx.try_send(msg) {
                    Ok(()) => continue,
                    Err(TrySendError::Closed(_)) => continue, // its worker stopped: revoked
                    Err(TrySendError::Full(msg)) => msg,
                },
            }
        };
        // A full queue whose worker is moving takes the record within the patience: that is
        // backpressure, and pausing for it would cost more than it saves (see
        // `WORKER_PATIENCE`). Only the parked map's owner (this task) adds to it, so nothing
        // was parked for the partition meanwhile.
        let msg = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            sent = tx.send_timeout(msg, WORKER_PATIENCE) => match sent {
                Ok(()) | Err(SendTimeoutError::Closed(_)) => continue,
                Err(SendTimeoutError::Timeout(msg)) => msg,
            },
        };
        lock(&shared.parked).insert(tp.clone(), VecDeque::new());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        if let Err(e) = consumer.pause(&tpl) {
            tracing::warn!(error = %e, topic = %tp.0, partition = tp.1, "could not pause a partition whose worker is busy");
        }
        metrics::counter!(crate::telemetry::PARTITION_PAUSES, "topic" => tp.0.clone()).increment(1);
        tracing::debug!(topic = %tp.0, partition = tp.1, "partition paused: its worker's queue is full");
        tokio::spawn(hand_over_parked(
            Arc::clone(&consumer),
            Arc::clone(&shared),
            tp,
            tx,
            msg,
        ));
    }
}

/// Hands `first` and then the records parked behind it to the partition's worker as it takes
/// them, in order, and resumes the partition once none is left (not if it was revoked).
async fn hand_over_parked(
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    shared: Arc<Shared>,
    tp: (String, i32),
    tx: mpsc::Sender<OwnedMessage>,
    first: OwnedMessage,
) {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        if tx.send(msg).await.is_err() {
            // The worker stopped (revoked): the new owner reads these records.
            lock(&shared.parked).remove(&tp);
            return;
        }
        let mut parked = lock(&shared.parked);
        match parked.get_mut(&tp).and_then(VecDeque::pop_front) {
            Some(m) => next = Some(m),
            None => {
                parked.remove(&tp);
            }
        }
    }
    if !lock(&shared.assigned).contains(&tp) {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.0, tp.1);
    if let Err(e) = consumer.resume(&tpl) {
        tracing::warn!(error = %e, topic = %tp.0, partition = tp.1, "could not resume a partition");
    }
    tracing::debug!(topic = %tp.0, partition = tp.1, "partition resumed");
}
