//! Subscribers: typed handlers on topics in a consumer group.
//!
//! One dispatcher task polls the consumer and hands each record to its partition's worker; a
//! worker handles records of different keys concurrently (up to `max_in_flight` per
//! partition) and the records of one key one after another, in order, while partitions run
//! concurrently. An offset is stored (and later committed) only after its record was handled,
//! skipped as a duplicate, or acknowledged by the dead-letter topic — so nothing is acknowledged
//! before its effect is durable. On revocation and on shutdown, workers finish the record in hand
//! (under a deadline), and the stored offsets are committed synchronously before the partitions
//! are released.

//!
//! Rooms, each importing only from those listed before it:
//!
//! - `handler`: what a handler is, and the [`Context`] it sees.
//! - `breaker`: a handler's circuit breaker (its downstream keeps failing: wait, probe).
//! - `process`: one record — decode, dedup, the handler with retries, the dead letter.
//! - `offsets`: which offset a partition may store while records finish out of order.
//! - `worker`: one worker per partition; key-level concurrency; offsets stored below the lowest
//!   unfinished record.
//! - `rebalance`: the drain protocol on revocation, and committing what is stored.
//! - `dispatch`: the task that polls the consumer and feeds the workers.
//! - this file: the builder and the running [`Subscription`] (shutdown).

mod breaker;
mod dispatch;
mod handler;
mod offsets;
mod process;
mod rebalance;
mod worker;

pub use breaker::{BreakerState, CircuitBreakerPolicy};
pub use handler::{Context, Unhandled};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_schemas::Event;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::dead_letter::{DeadLetterPolicy, DeadLetters};
use crate::dedup::{DedupStore, MemoryDedup};
use crate::error::{BusError, HandlerError};
use crate::retry::RetryPolicy;
use dispatch::dispatch;
use handler::{Handler, TypedHandler};
use process::Processor;
use rebalance::{SubscriberContext, commit_stored};
use worker::{Shared, Worker, lock};

impl Bus {
    /// Starts building a subscriber in consumer group `group`.
    pub fn subscriber(&self, group: &str) -> SubscriberBuilder {
        SubscriberBuilder::new(self.clone(), group)
    }
}

/// The default bound of [`SubscriberBuilder::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Builds a [`Subscription`].
pub struct SubscriberBuilder {
    bus: Bus,
    group: String,
    handlers: HashMap<(String, String), Arc<dyn Handler>>,
    ignored: HashSet<(String, String)>,
    unhandled: Unhandled,
    retry: RetryPolicy,
    dead_letters: DeadLetterPolicy,
    dedup: Arc<dyn DedupStore>,
    breaker: Option<CircuitBreakerPolicy>,
    drain_timeout: Duration,
    queue_depth: usize,
    max_in_flight: usize,
    settings: Vec<(String, String)>,
}

impl std::fmt::Debug for SubscriberBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberBuilder")
            .field("group", &self.group)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SubscriberBuilder {
    pub(crate) fn new(bus: Bus, group: &str) -> Self {
        Self {
            bus,
            group: group.to_owned(),
            handlers: HashMap::new(),
            ignored: HashSet::new(),
            unhandled: Unhandled::default(),
            retry: RetryPolicy::default(),
            dead_letters: DeadLetterPolicy::default(),
            dedup: Arc::new(MemoryDedup::default()),
            breaker: None,
            drain_timeout: Duration::from_secs(30),
            queue_depth: 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            settings: Vec::new(),
        }
    }

    /// Handles `T` on its default topic with `f`; `name` identifies the handler in logs, metrics,
    /// dead letters and the dedup scope.
    pub fn handle<T, F, Fut>(self, name: &str, f: F) -> Self
    where
        T: Event,
        F: Fn(T, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handle_on(T::TOPIC, name, f)
    }

    /// Handles `T` on `topic` with `f`.
    pub fn handle_on<T, F, Fut>(mut self, topic: &str, name: &str, f: F) -> Self
    where
        T: Event,
        F: Fn(T, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let h = TypedHandler::<T, F> {
            name: name.to_owned(),
            f,
            _event: PhantomData,
        };
        self.handlers
            .insert((topic.to_owned(), T::TYPE.to_owned()), Arc::new(h));
        self
    }

    /// Skips event type `event_type` on `topic` without dead-lettering it.
    pub fn ignore(mut self, topic: &str, event_type: &str) -> Self {
        self.ignored
            .insert((topic.to_owned(), event_type.to_owned()));
        self
    }

    /// What to do with event types no handler takes.
    pub fn unhandled(mut self, policy: Unhandled) -> Self {
        self.unhandled = policy;
        self
    }

    /// The retry policy for retryable handler errors.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Where dead letters go and how fast.
    pub fn dead_letters(mut self, policy: DeadLetterPolicy) -> Self {
        self.dead_letters = policy;
        self
    }

    /// The dedup store (default: [`MemoryDedup`] with 100 000 ids).
    pub fn dedup(mut self, store: Arc<dyn DedupStore>) -> Self {
        self.dedup = store;
        self
    }

    /// A circuit breaker per handler (default: none): when a handler's downstream keeps
    /// failing — `failures` retryable failures of at least two records within `window` — its
    /// partitions wait `cool_down` instead of retrying and dead-lettering, then one record
    /// probes. See [`CircuitBreakerPolicy`].
    pub fn circuit_breaker(mut self, policy: CircuitBreakerPolicy) -> Self {
        self.breaker = Some(policy);
        self
    }

    /// How long shutdown and revocation wait for in-flight handlers (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// At most this many records of one partition in the handler at once (default 64): records
    /// of different keys are handled concurrently, those of one key in order, one at a time. A
    /// record whose key is busy waits without holding a slot, so the worker looks past a run of
    /// one key's records for other keys (up to [`SubscriberBuilder::queue_depth`] records held).
    /// 1 handles a partition's records one at a time.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Records buffered per partition ahead of its handler (default 1024). When they are all
    /// taken, the partition is paused until they have gone to the handler; a resumed partition
    /// is fetched again, which takes a broker round trip, so the buffer must hold more than the
    /// handler gets through meanwhile (with 256, a fast handler spent most of its time waiting:
    /// see BENCHMARKS.md). Memory: up to this many records per partition in the buffer and as
    /// many more held by its worker (running, or waiting behind their key), beside librdkafka's
    /// own prefetch (`queued.max.messages.kbytes`).
    pub fn queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }

    /// A librdkafka consumer setting (e.g. `session.timeout.ms`, `auto.offset.reset`).
    pub fn client_setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Joins the group, subscribes to every topic a handler names, and starts handling.
    pub fn start(self) -> Result<Subscription, BusError> {
        if self.handlers.is_empty() {
            return Err(BusError::Config(format!(
                "subscriber {} has no handler",
                self.group
            )));
        }
        let topics: Vec<String> = {
            let mut t: Vec<String> = self.handlers.keys().map(|(t, _)| t.clone()).collect();
            t.sort();
            t.dedup();
            t
        };
        let shared = Arc::new(Shared {
            workers: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            assigned: Mutex::new(HashSet::new()),
            drain_timeout: self.drain_timeout,
        });
        let mut cfg = self.bus.config().consumer_config();
        cfg.set("group.id", &self.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "5000");
        for (k, v) in &self.settings {
            cfg.set(k, v);
        }
        let consumer: StreamConsumer<SubscriberContext> = cfg
            .create_with_context(SubscriberContext {
                shared: Arc::clone(&shared),
            })
            .map_err(|e| BusError::kafka("creating the consumer", e))?;
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .map_err(|e| BusError::kafka(format!("subscribing to {topics:?}"), e))?;
        let consumer = Arc::new(consumer);
        let breakers = self
            .breaker
            .map(|policy| {
                self.handlers
                    .values()
                    .map(|h| {
                        (
                            h.name().to_owned(),
                            Arc::new(breaker::CircuitBreaker::new(h.name(), policy)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let processor = Arc::new(Processor {
            breakers,
            dead_letters: DeadLetters::new(
                self.bus.sender().clone(),
                &self.group,
                self.dead_letters,
            ),
            bus: self.bus,
            group: self.group.clone(),
            handlers: self.handlers.into_iter().collect(),
            ignored: self.ignored.into_iter().map(|route| (route, ())).collect(),
            unhandled: self.unhandled,
            retry: self.retry,
            dedup: self.dedup,
        });
        let cancel = CancellationToken::new();
        let dispatcher = tokio::spawn(dispatch(
            Arc::clone(&consumer),
            Arc::clone(&shared),
            processor,
            cancel.clone(),
            self.queue_depth,
            self.max_in_flight,
        ));
        tracing::info!(group = %self.group, ?topics, "subscriber started");
        Ok(Subscription {
            group: self.group,
            consumer,
            shared,
            cancel,
            dispatcher,
        })
    }
}

/// A running subscriber. Call [`Subscription::shutdown`] to stop it cleanly; dropping it stops
/// polling but does not wait for in-flight handlers.
pub struct Subscription {
    group: String,
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("group", &self.group)
            .finish()
    }
}

impl Subscription {
    /// The partitions this subscriber owns now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = lock(&self.shared.assigned).iter().cloned().collect();
        v.sort();
        v
    }

    /// Stops polling, lets each in-flight handler finish (up to the drain timeout), commits the
    /// stored offsets, and leaves the group.
    pub async fn shutdown(self) -> Result<(), BusError> {
        self.cancel.cancel();
        let _ = self.dispatcher.await;
        let workers: Vec<Worker> = lock(&self.shared.workers).drain().map(|(_, w)| w).collect();
        for w in &workers {
            w.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + self.shared.drain_timeout;
        for w in workers {
            let abort = w.task.abort_handle();
            if tokio::time::timeout_at(deadline, w.task).await.is_err() {
                tracing::warn!(group = %self.group, "a handler did not finish within the drain timeout; its record will be handled again");
                abort.abort();
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let committed = tokio::task::spawn_blocking(move || commit_stored(consumer.as_ref())).await;
        self.consumer.unsubscribe();
        tracing::info!(group = %self.group, "subscriber stopped");
        match committed {
            Ok(r) => r,
            Err(e) => Err(BusError::Config(format!("commit task failed: {e}"))),
        }
    }
}
