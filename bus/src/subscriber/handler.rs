//! Handlers: a typed function per (topic, event type), and the [`Context`] it is called with.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use choreo_schemas::Event;

use crate::bus::{Bus, Delivery, PublishOptions};
use crate::error::{BusError, DecodeError, HandlerError};
use crate::wire::codec::{Codec, Framed};
use crate::wire::envelope::Envelope;
use crate::wire::trace::TraceParent;

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
    /// The trace context of this handling: the `choreo.process` span's own (a child of the
    /// record's `traceparent`) when OpenTelemetry records it, else a new child id in the
    /// record's trace, or a new trace.
    pub trace: TraceParent,
    /// The writer schema's registry id.
    pub schema_id: u32,
    pub(super) bus: Bus,
}

impl PublishOptions {
    /// Options for an event caused by the one a handler is handling: same trace, causation
    /// id = the handled event's id.
    pub fn caused_by(ctx: &Context) -> Self {
        Self {
            id: None,
            causation_id: Some(ctx.envelope.id.clone()).filter(|s| !s.is_empty()),
            traceparent: Some(ctx.trace),
            topic: None,
        }
    }
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

pub(super) type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A handler as the processor calls it: decode the framed value, then run.
pub(super) trait Handler: Send + Sync {
    fn name(&self) -> &str;
    fn call(
        &self,
        codec: &Codec,
        framed: &Framed<'_>,
        ctx: Context,
    ) -> Result<HandlerFuture, DecodeError>;
}

/// A typed handler function for events `T`.
pub(super) struct TypedHandler<T, F> {
    pub(super) name: String,
    pub(super) f: F,
    pub(super) _event: PhantomData<fn() -> T>,
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
        codec: &Codec,
        framed: &Framed<'_>,
        ctx: Context,
    ) -> Result<HandlerFuture, DecodeError> {
        let event = codec.decode_framed::<T>(framed)?;
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
