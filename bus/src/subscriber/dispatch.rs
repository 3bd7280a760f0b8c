//! The dispatcher: one task polls the consumer and hands each record to its partition's
//! worker, starting the worker on the partition's first record; records of a partition revoked
//! meanwhile are left to its new owner.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use tokio_util::sync::CancellationToken;

use super::process::Processor;
use super::rebalance::SubscriberContext;
use super::worker::{Shared, lock, spawn_worker};

/// Polls the consumer until cancelled, handing each record to its partition's worker.
pub(super) async fn dispatch(
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    shared: Arc<Shared>,
    processor: Arc<Processor>,
    cancel: CancellationToken,
    depth: usize,
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
                .or_insert_with(|| spawn_worker(&consumer, &processor, depth))
                .tx
                .clone()
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            r = tx.send(msg) => { let _ = r; }
        }
    }
}
