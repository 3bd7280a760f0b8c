//! One record, start to end: the framing and writer schema (waited for while the registry is
//! unreachable, however long), the route to a handler, dedup by `ce_id`, the handler with retries and
//! backoff, and the dead letter — whose acknowledgement is what lets the offset move on.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::breaker::{Admission, CircuitBreaker};
use super::handler::{Context, Handler, Unhandled};
use crate::bus::Bus;
use crate::dead_letter::{DeadLetters, Reason};
use crate::dedup::DedupStore;
use crate::error::{DecodeError, HandlerError};
use crate::retry::RetryPolicy;
use crate::telemetry;
use crate::wire::codec::WriterSchemaError;
use crate::wire::envelope::{Envelope, is_transaction_sweep_readable};
use crate::wire::headers::Readable;
use crate::wire::trace;

/// Values by (topic, event type), looked up by `&str`s: finding a record's handler allocates
/// nothing (a map keyed by `(String, String)` needs both copied for every lookup).
pub(super) struct Routes<V>(HashMap<String, HashMap<String, V>>);

impl<V> FromIterator<((String, String), V)> for Routes<V> {
    fn from_iter<I: IntoIterator<Item = ((String, String), V)>>(routes: I) -> Self {
        let mut nested: HashMap<String, HashMap<String, V>> = HashMap::new();
        for ((topic, event_type), v) in routes {
            nested.entry(topic).or_default().insert(event_type, v);
        }
        Self(nested)
    }
}

impl<V> Routes<V> {
    pub(super) fn get(&self, topic: &str, event_type: &str) -> Option<&V> {
        self.0.get(topic).and_then(|types| types.get(event_type))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The record is done with (handled, skipped, or dead-lettered): store its offset.
    Done,
    /// Stopped before the record was done with: do not store; it will be handled again.
    Interrupted,
}

/// Handles records for one subscriber.
pub(super) struct Processor {
    pub(super) bus: Bus,
    pub(super) group: String,
    pub(super) handlers: Routes<Arc<dyn Handler>>,
    pub(super) ignored: Routes<()>,
    pub(super) unhandled: Unhandled,
    pub(super) retry: RetryPolicy,
    pub(super) dedup: Arc<dyn DedupStore>,
    /// Per handler name, when the subscriber has circuit breakers.
    pub(super) breakers: HashMap<String, Arc<CircuitBreaker>>,
    pub(super) dead_letters: DeadLetters,
}

impl Processor {
    pub(super) async fn process(&self, msg: &OwnedMessage, stop: &CancellationToken) -> Outcome {
        let topic = msg.topic();
        // Read from librdkafka once, for the sweep mark and the envelope.
        let headers = msg.headers().map(Readable::readable).unwrap_or_default();
        if is_transaction_sweep_readable(&headers) {
            return Outcome::Done;
        }
        let key = match msg.key().map(std::str::from_utf8) {
            Some(Ok(k)) => k.to_owned(),
            Some(Err(_)) => {
                let len = msg.key().map_or(0, <[u8]>::len);
                return self
                    .poison(msg, DecodeError::InvalidKey(len), None, 0, stop)
                    .await;
            }
            None => {
                return self
                    .poison(msg, DecodeError::MissingKey, None, 0, stop)
                    .await;
            }
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
        // The writer schema: poison if the registry says it does not exist; while the registry
        // cannot be reached, the partition waits (backoff up to the policy's ceiling) for as
        // long as the outage lasts — a readable record is never dead-lettered for it — until
        // the subscriber stops or the partition is revoked.
        let mut attempt: u32 = 0;
        let framed = loop {
            attempt = attempt.saturating_add(1);
            match self.bus.codec().read(value).await {
                Ok(f) => {
                    if attempt > 1 {
                        tracing::info!(attempts = attempt, "schema registry reachable again");
                    }
                    break f;
                }
                Err(WriterSchemaError::Poison(decode)) => {
                    return self.poison(msg, decode, None, 0, stop).await;
                }
                Err(WriterSchemaError::Unavailable(e)) => {
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(error = %e, attempt, topic, partition = msg.partition(), offset = msg.offset(), "schema registry unavailable; the partition waits for it");
                    }
                    metrics::counter!(telemetry::REGISTRY_WAITS, "topic" => topic.to_owned())
                        .increment(1);
                    if !self.sleep(self.retry.backoff(attempt), stop).await {
                        return Outcome::Interrupted;
                    }
                }
            }
        };
        let event_type = framed.writer.full_name().unwrap_or_default();
        metrics::counter!(telemetry::CONSUMED, "topic" => topic.to_owned(), "type" => event_type.clone()).increment(1);
        let Some(handler) = self.handlers.get(topic, &event_type) else {
            if self.ignored.get(topic, &event_type).is_some() || self.unhandled == Unhandled::Skip {
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
        let envelope = match Envelope::read_readable(&headers, Some(&key)) {
            Ok(e) => e,
            Err(invalid) => {
                return self
                    .poison(msg, invalid, Some(handler.name()), 0, stop)
                    .await;
            }
        };
        // Not kept across the handler's awaits: the envelope holds what is needed of them.
        drop(headers);
        // The envelope goes into the first attempt's context as it is; a retry reads it from
        // the headers again (read once already, so it reads). Cloned per attempt, its eight
        // strings were copied for every record.
        let event_id = envelope.id.clone();
        let record_trace = envelope.traceparent;
        let mut first_envelope = Some(envelope);
        if !event_id.is_empty() && self.dedup.seen(handler.name(), &event_id).await {
            metrics::counter!(telemetry::DUPLICATES, "handler" => handler.name().to_owned())
                .increment(1);
            tracing::debug!(event_id = %event_id, correlation_id = %key, "duplicate dropped");
            return Outcome::Done;
        }
        let breaker = self.breakers.get(handler.name());
        let mut attempt = 0;
        loop {
            attempt += 1;
            // While the handler's downstream is known to be down, the record waits here (and
            // the partition behind it): nothing is retried, nothing dead-lettered.
            while let Some(b) = breaker {
                match b.admit(Instant::now()) {
                    Admission::Go => break,
                    Admission::Wait(d) => {
                        if !self.sleep(d, stop).await {
                            return Outcome::Interrupted;
                        }
                    }
                }
            }
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
                messaging.message.id = %event_id,
                correlation_id = %key,
                event_type = %event_type,
                handler = handler.name(),
                attempt,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            // A child of the record's traceparent: the handler's effects carry this span's id.
            let trace = trace::join(&span, record_trace);
            // Formatted only for a span that records them (the trace id's hex is a `format!`).
            if !span.is_disabled() {
                span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
                span.record(
                    "span_id",
                    tracing::field::display(format_args!("{:016x}", trace.span_id)),
                );
            }
            let envelope = match first_envelope.take() {
                Some(e) => e,
                None => match Envelope::read(msg.headers(), Some(&key)) {
                    Ok(e) => e,
                    Err(invalid) => {
                        return self
                            .poison(msg, invalid, Some(handler.name()), attempt, stop)
                            .await;
                    }
                },
            };
            let ctx = Context {
                envelope,
                topic: topic.to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                attempt,
                trace,
                schema_id: framed.writer.id,
                bus: self.bus.clone(),
            };
            let fut = match handler.call(self.bus.codec(), &framed, ctx) {
                Ok(f) => f,
                Err(decode) => {
                    return self
                        .poison(msg, decode, Some(handler.name()), attempt, stop)
                        .await;
                }
            };
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
                    if let Some(b) = breaker {
                        b.success();
                    }
                    if !event_id.is_empty() {
                        self.dedup.mark(handler.name(), &event_id).await;
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
                Err(HandlerError::Retryable(_))
                    if breaker.is_some_and(|b| {
                        b.failure(Instant::now(), (msg.partition(), msg.offset()))
                    }) =>
                {
                    // The breaker is open: this failure is the downstream's, not the
                    // record's, and does not count toward its retries.
                    attempt -= 1;
                    metrics::counter!(telemetry::RETRIES, "handler" => handler.name().to_owned())
                        .increment(1);
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
