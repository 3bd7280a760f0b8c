//! Subscribers: typed handlers on topics in a consumer group.
//!
//! One dispatcher task polls the consumer and hands each record to its partition's worker; a
//! worker handles its partition's records one at a time, in order, while partitions run
//! concurrently. An offset is stored (and later committed) only after its record was handled,
//! skipped as a duplicate, or acknowledged by the dead-letter topic — so nothing is acknowledged
//! before its effect is durable. On revocation and on shutdown, workers finish the record in hand
//! (under a deadline), and the stored offsets are committed synchronously before the partitions
//! are released.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo_schemas::Event;
use dashmap::DashMap;
use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientContext, Message, Statistics, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::{Bus, Delivery, PublishOptions};
use crate::codec::{WriterSchema, WriterSchemaError, decode_body_with, same_schema};
use crate::dead_letter::{DeadLetterPolicy, DeadLetters, Reason};
use crate::dedup::{DedupStore, MemoryDedup};
use crate::envelope::Envelope;
use crate::error::{BusError, DecodeError, HandlerError};
use crate::retry::RetryPolicy;
use crate::telemetry;
use crate::trace::TraceParent;

/// What a handler sees besides the event.
#[derive(Debug, Clone)]
pub struct Context {
    /// The record's envelope (CloudEvents headers).
    pub envelope: Envelope,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Record timestamp, ms since epoch.
    pub timestamp: Option<i64>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The trace context of this handling: a child of the record's `traceparent`, or a new trace.
    pub trace: TraceParent,
    /// The writer schema's registry id.
    pub schema_id: u32,
    bus: Bus,
}

impl Context {
    /// The correlation id (the record key).
    pub fn correlation_id(&self) -> &str {
        &self.envelope.correlation_id
    }

    /// The bus, to publish other events.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publishes an event caused by this one: same trace, `ce_causationid` = this event's id.
    pub async fn publish<T: Event>(&self, event: &T) -> Result<Delivery, BusError> {
        self.bus
            .publish_with(event, PublishOptions::caused_by(self))
            .await
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

trait Handler: Send + Sync {
    fn name(&self) -> &str;
    fn call(
        &self,
        writer: &WriterSchema,
        body: &[u8],
        ctx: Context,
    ) -> Result<HandlerFuture, DecodeError>;
}

struct TypedHandler<T, F> {
    name: String,
    f: F,
    /// Per writer schema id: whether it is `T`'s own schema (then no resolution is needed).
    same_schema: DashMap<u32, bool>,
    _event: PhantomData<fn() -> T>,
}

impl<T, F, Fut> Handler for TypedHandler<T, F>
where
    T: Event,
    F: Fn(T, Context) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn call(
        &self,
        writer: &WriterSchema,
        body: &[u8],
        ctx: Context,
    ) -> Result<HandlerFuture, DecodeError> {
        let same = *self
            .same_schema
            .entry(writer.id)
            .or_insert_with(|| same_schema(&writer.schema, T::schema()));
        let event = decode_body_with::<T>(&writer.schema, same, body)?;
        Ok(Box::pin((self.f)(event, ctx)))
    }
}

/// What to do with a record whose event type no handler takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unhandled {
    /// Dead-letter it as `unknown_event_type` (the default: nothing passes silently).
    #[default]
    DeadLetter,
    /// Skip it (store its offset) — for subscribers that read a shared topic for a few types.
    Skip,
}

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
    drain_timeout: Duration,
    queue_depth: usize,
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
            drain_timeout: Duration::from_secs(30),
            queue_depth: 256,
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
            same_schema: DashMap::new(),
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

    /// How long shutdown and revocation wait for in-flight handlers (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Records buffered per partition ahead of its handler (default 256).
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
        let processor = Arc::new(Processor {
            dead_letters: DeadLetters::new(self.bus.clone(), &self.group, self.dead_letters),
            bus: self.bus,
            group: self.group.clone(),
            handlers: self.handlers,
            ignored: self.ignored,
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

fn commit_stored<C: Consumer<X>, X: ConsumerContext>(consumer: &C) -> Result<(), BusError> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("No offset stored") => Ok(()),
        Err(e) => Err(BusError::kafka("committing offsets", e)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Worker {
    tx: mpsc::Sender<OwnedMessage>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    done: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

struct Shared {
    workers: Mutex<HashMap<(String, i32), Worker>>,
    assigned: Mutex<HashSet<(String, i32)>>,
    drain_timeout: Duration,
}

/// The consumer's context: rebalance callbacks and statistics.
pub(crate) struct SubscriberContext {
    shared: Arc<Shared>,
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
            revoked
                .iter()
                .filter_map(|tp| {
                    assigned.remove(tp);
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

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
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

async fn dispatch(
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

fn spawn_worker(
    consumer: &Arc<StreamConsumer<SubscriberContext>>,
    processor: &Arc<Processor>,
    depth: usize,
) -> Worker {
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

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The record is done with (handled, skipped, or dead-lettered): store its offset.
    Done,
    /// Stopped before the record was done with: do not store; it will be handled again.
    Interrupted,
}

struct Processor {
    bus: Bus,
    group: String,
    handlers: HashMap<(String, String), Arc<dyn Handler>>,
    ignored: HashSet<(String, String)>,
    unhandled: Unhandled,
    retry: RetryPolicy,
    dedup: Arc<dyn DedupStore>,
    dead_letters: DeadLetters,
}

impl Processor {
    async fn process(&self, msg: &OwnedMessage, stop: &CancellationToken) -> Outcome {
        let topic = msg.topic();
        let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return self
                .poison(msg, DecodeError::MissingKey, None, 0, stop)
                .await;
        };
        let Some(value) = msg.payload() else {
            return self
                .poison(
                    msg,
                    DecodeError::Truncated("no value".into()),
                    None,
                    0,
                    stop,
                )
                .await;
        };
        // The writer schema: poison if unknown, retried if the registry is unreachable.
        let mut attempt = 0;
        let writer = loop {
            attempt += 1;
            match self.bus.codec().writer_schema(value).await {
                Ok(w) => break w,
                Err(WriterSchemaError::Poison(decode)) => {
                    return self.poison(msg, decode, None, 0, stop).await;
                }
                Err(WriterSchemaError::Unavailable(e)) if attempt < self.retry.max_attempts => {
                    tracing::warn!(error = %e, attempt, "schema registry unavailable; retrying");
                    if !self.sleep(self.retry.backoff(attempt), stop).await {
                        return Outcome::Interrupted;
                    }
                }
                Err(WriterSchemaError::Unavailable(e)) => {
                    let reason = Reason {
                        kind: "registry_unavailable",
                        message: e.to_string(),
                        handler: None,
                        attempts: attempt,
                    };
                    return self.dead_letter(msg, &reason, stop).await;
                }
            }
        };
        let event_type = writer.full_name().unwrap_or_default();
        metrics::counter!(telemetry::CONSUMED, "topic" => topic.to_owned(), "type" => event_type.clone()).increment(1);
        let route = (topic.to_owned(), event_type.clone());
        let Some(handler) = self.handlers.get(&route) else {
            if self.ignored.contains(&route) || self.unhandled == Unhandled::Skip {
                return Outcome::Done;
            }
            return self
                .poison(
                    msg,
                    DecodeError::UnknownEventType(event_type),
                    None,
                    0,
                    stop,
                )
                .await;
        };
        let envelope = Envelope::from_headers(msg.headers(), Some(&key));
        if !envelope.id.is_empty() && self.dedup.seen(handler.name(), &envelope.id).await {
            metrics::counter!(telemetry::DUPLICATES, "handler" => handler.name().to_owned())
                .increment(1);
            tracing::debug!(event_id = %envelope.id, correlation_id = %key, "duplicate dropped");
            return Outcome::Done;
        }
        let trace = envelope
            .traceparent
            .map_or_else(TraceParent::new_root, |t| t.child());
        let body = &value[5..];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ctx = Context {
                envelope: envelope.clone(),
                topic: topic.to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                attempt,
                trace,
                schema_id: writer.id,
                bus: self.bus.clone(),
            };
            let fut = match handler.call(&writer, body, ctx) {
                Ok(f) => f,
                Err(decode) => {
                    return self
                        .poison(msg, decode, Some(handler.name()), attempt, stop)
                        .await;
                }
            };
            let span = tracing::info_span!(
                "choreo.process",
                otel.name = %format!("{topic} process"),
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.destination.name = %topic,
                messaging.consumer.group.name = %self.group,
                messaging.destination.partition.id = msg.partition(),
                messaging.kafka.message.offset = msg.offset(),
                messaging.kafka.message.key = %key,
                messaging.message.id = %envelope.id,
                correlation_id = %key,
                event_type = %event_type,
                handler = handler.name(),
                attempt,
                trace_id = %trace.trace_id_hex(),
                span_id = %format!("{:016x}", trace.span_id),
            );
            let started = Instant::now();
            let result = AssertUnwindSafe(fut).catch_unwind().instrument(span).await;
            let result = result.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(HandlerError::Permanent(format!("handler panicked: {what}")))
            });
            let outcome = match &result {
                Ok(()) => "ok",
                Err(HandlerError::Retryable(_)) => "retryable",
                Err(HandlerError::Permanent(_)) => "permanent",
            };
            metrics::histogram!(telemetry::HANDLER_SECONDS, "handler" => handler.name().to_owned(), "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    if !envelope.id.is_empty() {
                        self.dedup.mark(handler.name(), &envelope.id).await;
                    }
                    return Outcome::Done;
                }
                Err(HandlerError::Permanent(m)) => {
                    let reason = Reason {
                        kind: "handler_permanent",
                        message: m,
                        handler: Some(handler.name().to_owned()),
                        attempts: attempt,
                    };
                    return self.dead_letter(msg, &reason, stop).await;
                }
                Err(HandlerError::Retryable(m)) if attempt >= self.retry.max_attempts => {
                    let reason = Reason {
                        kind: "retries_exhausted",
                        message: format!("gave up after {attempt} attempts: {m}"),
                        handler: Some(handler.name().to_owned()),
                        attempts: attempt,
                    };
                    return self.dead_letter(msg, &reason, stop).await;
                }
                Err(HandlerError::Retryable(m)) => {
                    metrics::counter!(telemetry::RETRIES, "handler" => handler.name().to_owned())
                        .increment(1);
                    let backoff = self.retry.backoff(attempt);
                    tracing::info!(handler = handler.name(), attempt, error = %m, backoff_ms = backoff.as_millis() as u64, correlation_id = %key, "retrying");
                    if !self.sleep(backoff, stop).await {
                        return Outcome::Interrupted;
                    }
                }
            }
        }
    }

    /// Sleeps unless stopped first; false when stopped.
    async fn sleep(&self, d: Duration, stop: &CancellationToken) -> bool {
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    async fn poison(
        &self,
        msg: &OwnedMessage,
        error: DecodeError,
        handler: Option<&str>,
        attempts: u32,
        stop: &CancellationToken,
    ) -> Outcome {
        let reason = Reason {
            kind: error.kind(),
            message: error.to_string(),
            handler: handler.map(str::to_owned),
            attempts,
        };
        self.dead_letter(msg, &reason, stop).await
    }

    /// Sends to the dead-letter topic, retrying until acknowledged or stopped: the source offset
    /// moves on only once the dead letter is durable.
    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &Reason,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dead_letters.send(msg, reason).await {
                Ok(()) => return Outcome::Done,
                Err(e) => {
                    tracing::error!(error = %e, attempt, "dead letter not acknowledged; retrying");
                    if !self
                        .sleep(
                            self.retry.backoff(attempt.min(self.retry.max_attempts)),
                            stop,
                        )
                        .await
                    {
                        return Outcome::Interrupted;
                    }
                }
            }
        }
    }
}
