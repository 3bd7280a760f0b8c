//! The soak's count of ended sagas, from the events they end with: the order saga emits
//! `OrderConfirmed` when it completes and `OrderCancelled` when it has compensated, so a
//! read_committed reader of those events sees each ended order once — and twice if an outcome
//! were emitted twice. Counting them here, rather than keeping every finished saga in the
//! coordinator's view, lets the coordinator forget finished sagas as it does in production
//! (`coordinator.completed_retention`), so that its memory can level off during the soak.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use choreo_bus::wire::envelope::header;
use choreo_bus::wire::headers::Readable as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

/// The events an order saga ends with (a saga that needs an operator emits neither).
pub(super) const OUTCOMES: [&str; 2] = [
    "io.choreo.orders.OrderConfirmed",
    "io.choreo.orders.OrderCancelled",
];

/// Outcome events seen so far, by order id.
pub(super) struct Outcomes {
    seen: Arc<Mutex<HashMap<String, u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Outcomes {
    /// Reads `topics` from their beginning, read_committed, counting [`OUTCOMES`] by key.
    pub(super) fn start(bootstrap: &str, topics: &[&str]) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("soak-outcomes-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(topics)?;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let is_outcome = m.headers().is_some_and(|h| {
                        h.readable().into_iter().any(|x| {
                            x.key == header::TYPE
                                && x.value
                                    .is_some_and(|v| OUTCOMES.iter().any(|o| o.as_bytes() == v))
                        })
                    });
                    if let (true, Some(key)) = (is_outcome, m.key()) {
                        let key = String::from_utf8_lossy(key).into_owned();
                        if let Ok(mut seen) = seen.lock() {
                            *seen.entry(key).or_insert(0) += 1;
                        }
                    }
                }
            })
        };
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Orders with at least one outcome event, and those with more than one.
    pub(super) fn counts(&self) -> (u64, u64) {
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let ended = seen.len() as u64;
        let repeated = seen.values().filter(|n| **n > 1).count() as u64;
        (ended, repeated)
    }
}

impl Drop for Outcomes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
