//! The partition workers: a worker handles its partition's records one at a time, in order, and
//! stores each offset only after its record is done with (handled, skipped, or dead-lettered);
//! stopped, it finishes the record in hand and says so (the drain waits for that).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
) -> Worker
where
    C: Consumer<X> + Send + Sync + 'static,
    X: ConsumerContext + 'static,
{
    let (tx, mut rx) = mpsc::channel::<OwnedMessage>(depth);
    let stop = CancellationToken::new();
    let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (consumer, processor, stop2, done2) = (
        Arc::clone(consumer),
        Arc::clone(processor),
        stop.clone(),
        Arc::clone(&done),
    );
    let task = tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                biased;
                () = stop2.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            if processor.process(&msg, &stop2).await == Outcome::Interrupted {
                break;
            }
            if let Err(e) = consumer.store_offset(msg.topic(), msg.partition(), msg.offset()) {
                tracing::debug!(error = %e, "offset not stored (partition revoked)");
            }
        }
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
