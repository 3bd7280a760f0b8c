//! The drain protocol on revocation: librdkafka asks before it takes partitions away; the
//! workers of those partitions are stopped and waited for (each finishes the record in hand,
//! up to the drain timeout), the stored offsets are committed, and only then are the partitions
//! released. Assignment just records the new partitions (their workers start on first record).

use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

use super::worker::{Shared, Worker, lock};
use crate::error::BusError;
use crate::telemetry;

/// Commits the stored offsets synchronously (nothing stored is not an error).
pub(super) fn commit_stored<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
) -> Result<(), BusError> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("No offset stored") => Ok(()),
        Err(e) => Err(BusError::kafka("committing offsets", e)),
    }
}

/// The consumer's context: rebalance callbacks and statistics.
pub(crate) struct SubscriberContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for SubscriberContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(telemetry::CONSUMER_LAG, "topic" => topic.clone(),
                        "partition" => partition.to_string())
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SubscriberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = partitions(tpl);
        let workers: Vec<Worker> = {
            let mut assigned = lock(&self.shared.assigned);
            let mut map = lock(&self.shared.workers);
            let mut parked = lock(&self.shared.parked);
            revoked
                .iter()
                .filter_map(|tp| {
                    assigned.remove(tp);
                    parked.remove(tp);
                    map.remove(tp)
                })
                .collect()
        };
        for w in &workers {
            w.stop.cancel();
        }
        let deadline = Instant::now() + self.shared.drain_timeout;
        let wait = || {
            for w in &workers {
                let (flag, cv) = &*w.done;
                let mut done = lock(flag);
                while !*done {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::warn!(
                            "revocation drain timed out; unfinished records will be redelivered"
                        );
                        w.task.abort();
                        break;
                    }
                    done = cv
                        .wait_timeout(done, left)
                        .map(|r| r.0)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        };
        // The callback runs on the thread polling the consumer: hand the runtime's other work to
        // another thread while this one waits for the workers.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            Ok(_) => tracing::warn!(
                "drain on revocation needs the multi-thread runtime; in-flight records will be redelivered"
            ),
            Err(_) => wait(),
        }
        if let Err(e) = commit_stored(consumer) {
            tracing::warn!(error = %e, "commit on revocation failed; records since the last commit will be redelivered");
        }
        tracing::info!(partitions = ?revoked, "partitions revoked after draining");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused while it was ours before starts afresh.
            let _ = consumer.resume(tpl);
            let new = partitions(tpl);
            tracing::info!(partitions = ?new, "partitions assigned");
            lock(&self.shared.assigned).extend(new);
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}
