//! The collector: a read_committed consumer of every saga topic that records each event the
//! coordinator emitted, by order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use choreo_bus::wire::envelope::header;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};

/// The order saga topics.
use super::paths::{Path, SAGA_TOPICS};

/// One event the coordinator emitted, as a read_committed consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Record key (order id).
    pub key: String,
    /// `ce_type` without the namespace.
    pub event_type: String,
    /// `ce_id`.
    pub id: String,
    /// The record's timestamp (ms since the epoch; the producer's create time).
    pub timestamp: i64,
}

/// Collects the coordinator's emitted events (`ce_source` under `/choreo/sagas/`).
#[derive(Debug)]
pub struct Collector {
    seen: Arc<Mutex<Vec<Emitted>>>,
    /// The highest offset read per (topic, partition), every record counted.
    last: Arc<Mutex<HashMap<(String, i32), i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Starts reading the saga topics from the beginning, read_committed.
    pub fn start(bootstrap: &str) -> anyhow::Result<Self> {
        Self::start_with(bootstrap, "read_committed")
    }

    /// The same, read_uncommitted: records of aborted transactions included.
    pub fn start_uncommitted(bootstrap: &str) -> anyhow::Result<Self> {
        Self::start_with(bootstrap, "read_uncommitted")
    }

    fn start_with(bootstrap: &str, isolation: &str) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("collector-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .set("session.timeout.ms", "6000")
            .create()?;
        consumer.subscribe(&SAGA_TOPICS)?;
        let seen: Arc<Mutex<Vec<Emitted>>> = Arc::default();
        let sink = Arc::clone(&seen);
        let last: Arc<Mutex<HashMap<(String, i32), i64>>> = Arc::default();
        let last_sink = Arc::clone(&last);
        let task = tokio::spawn(async move {
            // The collector's own group may rebalance (a broker crash) and read records again
            // from the start; a record is counted once per offset, so only duplicates that
            // are records of their own count.
            let mut offsets = std::collections::HashSet::new();
            loop {
                let Ok(m) = consumer.recv().await else {
                    continue;
                };
                if !offsets.insert((m.topic().to_owned(), m.partition(), m.offset())) {
                    continue;
                }
                if let Ok(mut l) = last_sink.lock() {
                    let e = l.entry((m.topic().to_owned(), m.partition())).or_insert(-1);
                    *e = (*e).max(m.offset());
                }
                let get = |k: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == k)
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                if !get(header::SOURCE).is_some_and(|s| s.starts_with("/choreo/sagas/")) {
                    continue;
                }
                let e = Emitted {
                    key: m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    event_type: get(header::TYPE)
                        .unwrap_or_default()
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    id: get(header::ID).unwrap_or_default(),
                    timestamp: m.timestamp().to_millis().unwrap_or(0),
                };
                if let Ok(mut v) = sink.lock() {
                    v.push(e);
                }
            }
        });
        Ok(Self { seen, last, task })
    }

    /// The highest offset read so far per (topic, partition), of any record.
    pub fn last_offsets(&self) -> HashMap<(String, i32), i64> {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Everything seen so far.
    pub fn all(&self) -> Vec<Emitted> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Emitted event types per order, in arrival order.
    pub fn by_order(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in self.all() {
            m.entry(e.key).or_default().push(e.event_type);
        }
        m
    }

    /// How many of `orders` are finished: every event their path calls for was emitted (for
    /// an order id without a path prefix, a terminal event).
    pub fn terminal_count(&self, orders: &[String]) -> usize {
        let m = self.by_order();
        orders.iter().filter(|o| finished(&m, o)).count()
    }

    /// Waits until every order in `orders` is finished (see [`Collector::terminal_count`]).
    pub async fn wait_terminal(&self, orders: &[String], patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let m = self.by_order();
            let missing: Vec<&String> = orders.iter().filter(|o| !finished(&m, o)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} sagas have not emitted all their path calls for after {patience:?}; e.g. {:?} emitted {:?}",
                    missing.len(),
                    orders.len(),
                    missing[0],
                    m.get(missing[0])
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn finished(m: &BTreeMap<String, Vec<String>>, order: &str) -> bool {
    let Some(got) = m.get(order) else {
        return false;
    };
    match Path::of(order) {
        Some(path) => path.expected().iter().all(|t| got.iter().any(|g| g == t)),
        None => got
            .iter()
            .any(|t| t == "OrderConfirmed" || t == "OrderCancelled"),
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
