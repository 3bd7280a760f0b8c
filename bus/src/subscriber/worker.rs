//! The partition workers: a worker takes its partition's records in order and handles records
//! of different keys concurrently (at most `max_in_flight` in the handler at once), while the
//! records of one key (one correlation id) are handled one after another, in order — an
//! I/O-bound handler holds up only its own key. A record whose key is busy waits behind it
//! without taking a handler slot, so a run of one key's records does not keep the keys after
//! it waiting; the records taken and not finished (running or waiting) are at most the queue
//! depth. The offset it stores is always just below the lowest record not finished yet
//! (`offsets`). Stopped, it takes no new record, lets the records in hand finish, and says so
//! (the drain waits for that).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::offsets::OffsetTracker;
use super::process::{Outcome, Processor};

/// Locks `m`, recovering from a poisoned lock (the data are offsets and worker handles).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A partition's worker.
pub(super) struct Worker {
    pub(super) tx: mpsc::Sender<OwnedMessage>,
    pub(super) stop: CancellationToken,
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) done: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

/// What the dispatcher, the rebalance callbacks and shutdown share.
pub(super) struct Shared {
    pub(super) workers: Mutex<HashMap<(String, i32), Worker>>,
    /// Records of a paused partition waiting for room in its worker's queue, in order (see
    /// the dispatcher).
    pub(super) parked: Mutex<HashMap<(String, i32), VecDeque<OwnedMessage>>>,
    pub(super) assigned: Mutex<HashSet<(String, i32)>>,
    pub(super) drain_timeout: Duration,
}

/// Starts the worker of one partition.
pub(super) fn spawn_worker<C, X>(
    consumer: &Arc<C>,
    processor: &Arc<Processor>,
    depth: usize,
    max_in_flight: usize,
) -> Worker
where
    C: Consumer<X> + Send + Sync + 'static,
    X: ConsumerContext + 'static,
{
    let (tx, rx) = mpsc::channel::<OwnedMessage>(depth);
    let stop = CancellationToken::new();
    let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (consumer, processor, stop2, done2) = (
        Arc::clone(consumer),
        Arc::clone(processor),
        stop.clone(),
        Arc::clone(&done),
    );
    let task = tokio::spawn(async move {
        run(
            consumer,
            processor,
            rx,
            stop2,
            max_in_flight.max(1),
            depth.max(1),
        )
        .await;
        let (flag, cv) = &*done2;
        *lock(flag) = true;
        cv.notify_all();
    });
    Worker {
        tx,
        stop,
        task,
        done,
    }
}

/// A record being handled, to its end: its key (records of one key wait for each other), its
/// offset, and how it ended.
type Handled = (Option<Vec<u8>>, i64, Outcome);

async fn run<C, X>(
    consumer: Arc<C>,
    processor: Arc<Processor>,
    mut rx: mpsc::Receiver<OwnedMessage>,
    stop: CancellationToken,
    max_in_flight: usize,
    max_taken: usize,
) where
    C: Consumer<X> + Send + Sync + 'static,
    X: ConsumerContext + 'static,
{
    let mut tracker = OffsetTracker::default();
    // Keys with a record being handled, and the records of that key waiting behind it.
    let mut busy: HashMap<Vec<u8>, VecDeque<OwnedMessage>> = HashMap::new();
    // The records being handled, polled by this task: no task per record (a spawned task per
    // record cost an aligned allocation, a cross-thread wake-up and a join handle each, about a
    // tenth of a fast subscriber's CPU). Handlers of different partitions still run in parallel,
    // one worker task per partition.
    let mut running: FuturesUnordered<BoxFuture<'static, Handled>> = FuturesUnordered::new();
    let mut topic_partition: Option<(String, i32)> = None;
    let spawn = |running: &mut FuturesUnordered<BoxFuture<'static, Handled>>, msg: OwnedMessage| {
        let (processor, stop) = (Arc::clone(&processor), stop.clone());
        running.push(Box::pin(async move {
            // A handler's panic is caught (and dead-lettered) inside; this catches the rest, a
            // bug: the record stays unfinished, so nothing past it is ever stored.
            let outcome = AssertUnwindSafe(processor.process(&msg, &stop))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(
                        "a record's processing failed; the partition's offset stays below it"
                    );
                    Outcome::Interrupted
                });
            (msg.key().map(<[u8]>::to_vec), msg.offset(), outcome)
        }));
    };
    let mut stopping = false;
    loop {
        if stopping && running.is_empty() {
            break;
        }
        // Room for one more: a handler slot free, and the records held (running, or waiting
        // behind their key) under the bound.
        let room = running.len() < max_in_flight && tracker.in_flight() < max_taken;
        tokio::select! {
            biased;
            () = stop.cancelled(), if !stopping => stopping = true,
            Some((key, offset, outcome)) = running.next(), if !running.is_empty() => {
                if outcome == Outcome::Interrupted {
                    // Not done: its offset stays unfinished, and the worker stops taking more.
                    stopping = true;
                    continue;
                }
                tracker.finish(offset);
                if let (Some(done_through), Some((topic, partition))) =
                    (tracker.storable(), &topic_partition)
                    && let Err(e) = consumer.store_offset(topic, *partition, done_through)
                {
                    tracing::debug!(error = %e, "offset not stored (partition revoked)");
                }
                // The next record of the same key, if one waits.
                if let Some(k) = key {
                    let next = busy.get_mut(&k).and_then(VecDeque::pop_front);
                    match next {
                        Some(m) if !stopping => spawn(&mut running, m),
                        Some(_) => {}
                        None => {
                            busy.remove(&k);
                        }
                    }
                }
            }
            m = rx.recv(), if room && !stopping => match m {
                Some(m) => {
                    topic_partition.get_or_insert_with(|| (m.topic().to_owned(), m.partition()));
                    tracker.take(m.offset());
                    match m.key() {
                        Some(k) => match busy.get_mut(k) {
                            Some(waiting) => waiting.push_back(m),
                            None => {
                                busy.insert(k.to_vec(), VecDeque::new());
                                spawn(&mut running, m);
                            }
                        },
                        // No key: poison, dead-lettered at once, ordered with nothing.
                        None => spawn(&mut running, m),
                    }
                }
                None => stopping = true,
            },
            else => break,
        }
    }
}
