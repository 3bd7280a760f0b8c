//! The [`Bus`] handle: publishing typed events (subscribers start from it too, see
//! [`crate::subscriber`]).

use std::sync::Arc;

use choreo_schemas::{Event, SchemaRegistry};
use rdkafka::message::OwnedHeaders;
use tracing::Instrument;

use crate::config::BusConfig;
use crate::error::BusError;
use crate::producer::Sender;
use crate::telemetry;
use crate::wire::codec::Codec;
use crate::wire::envelope::Envelope;
use crate::wire::trace::TraceParent;

/// A cheap, clonable handle to the bus: one idempotent producer, one codec and registry cache.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    config: BusConfig,
    sender: Sender,
    codec: Codec,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .field("source", &self.inner.config.source)
            .finish()
    }
}

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The event id (`ce_id`).
    pub id: String,
}

/// Per-publish options; the defaults give a fresh id, no cause, and a new trace.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// The event id; a random UUID when unset. Set a deterministic id to make re-publishing
    /// idempotent for deduplicating consumers.
    pub id: Option<String>,
    /// The id of the event that caused this one.
    pub causation_id: Option<String>,
    /// The trace to continue.
    pub traceparent: Option<TraceParent>,
    /// Overrides the event type's default topic.
    pub topic: Option<String>,
}

impl PublishOptions {
    /// Sets the event id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }
}

impl Bus {
    /// Connects a bus (the producer is created now; the broker is contacted lazily).
    pub fn new(config: BusConfig, registry: Arc<dyn SchemaRegistry>) -> Result<Self, BusError> {
        config.validate()?;
        telemetry::describe();
        let sender = Sender::new(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                sender,
                codec: Codec::new(registry),
            }),
        })
    }

    /// Creates a bus, then checks that the cluster lets it in: the cluster's metadata is
    /// fetched with the bus's client settings within `timeout`. A wrong SASL password, a CA that
    /// did not sign the brokers' certificates, or brokers that cannot be reached is then one
    /// error at start-up ([`BusError::Refused`] names the mechanism and user, or the CA file,
    /// never a secret) instead of publishes that each wait out the delivery timeout.
    ///
    /// The check asks in steps of at most a second, so dropping the future (a shutdown signal
    /// while the brokers cannot be reached) leaves at most one step running.
    pub async fn connect(
        config: BusConfig,
        registry: Arc<dyn SchemaRegistry>,
        timeout: std::time::Duration,
    ) -> Result<Self, BusError> {
        let client = config.client_config();
        let bus = Self::new(config, registry)?;
        let metadata = Arc::new(crate::connect::MetadataClient::new(&client)?);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let step = deadline
                .saturating_duration_since(std::time::Instant::now())
                .min(std::time::Duration::from_secs(1));
            let m = Arc::clone(&metadata);
            let answer = tokio::task::spawn_blocking(move || m.fetch(None, step))
                .await
                .map_err(|e| BusError::Config(format!("the connection check stopped: {e}")))?;
            match answer {
                Ok(_) => return Ok(bus),
                Err(refused @ BusError::Refused(_)) => return Err(refused),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The codec (and through it, the registry cache).
    pub fn codec(&self) -> &Codec {
        &self.inner.codec
    }

    /// Publishes `event` to its topic with the correlation id as key; returns once the broker
    /// acknowledged it (acks=all, idempotent producer).
    pub async fn publish<T: Event>(&self, event: &T) -> Result<Delivery, BusError> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// Publishes with explicit options (id, cause, trace, topic).
    pub async fn publish_with<T: Event>(
        &self,
        event: &T,
        options: PublishOptions,
    ) -> Result<Delivery, BusError> {
        let topic = options.topic.clone().unwrap_or_else(|| T::TOPIC.to_owned());
        let value = self.inner.codec.encode(&topic, event).await?;
        let envelope = Envelope::new(
            options
                .id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            self.inner.config.source.clone(),
            T::TYPE,
            event.correlation_id(),
            options.causation_id,
            options.traceparent,
        );
        self.publish_envelope(&topic, &envelope, &value).await
    }

    /// Publishes an already-encoded value with an envelope (used by the saga coordinator).
    pub async fn publish_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
        value: &[u8],
    ) -> Result<Delivery, BusError> {
        self.publish_envelope_keyed(topic, &envelope.correlation_id, envelope, value)
            .await
    }

    /// [`Bus::publish_envelope`] with a record key other than the correlation id (the
    /// CloudEvents `partitionkey` extension).
    pub async fn publish_envelope_keyed(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
        value: &[u8],
    ) -> Result<Delivery, BusError> {
        let span = tracing::info_span!(
            "choreo.publish",
            otel.name = %format!("{topic} publish"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "publish",
            messaging.destination.name = %topic,
            messaging.message.id = %envelope.id,
            messaging.kafka.message.key = %key,
            correlation_id = %envelope.correlation_id,
            event_type = %envelope.event_type,
            trace_id = %envelope.traceparent.map(|t| t.trace_id_hex()).unwrap_or_default(),
        );
        // With OpenTelemetry, the record names this span (a child of the span it is published
        // in); without, the envelope's traceparent as it is.
        let traced = crate::wire::trace::publishing(&span, envelope.traceparent);
        let delivery = self
            .send_raw(topic, Some(key), value, envelope.to_headers_traced(traced))
            .instrument(span)
            .await;
        let labels = [
            ("topic", topic.to_owned()),
            ("type", envelope.event_type.clone()),
        ];
        match delivery {
            Ok((partition, offset)) => {
                metrics::counter!(telemetry::PUBLISHED, &labels).increment(1);
                Ok(Delivery {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    id: envelope.id.clone(),
                })
            }
            Err(e) => {
                metrics::counter!(telemetry::PUBLISH_FAILED, &labels).increment(1);
                Err(e)
            }
        }
    }

    /// Sends one record and waits for the acknowledgement; returns (partition, offset).
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(i32, i64), BusError> {
        self.inner
            .sender
            .send(topic, key.map(str::as_bytes), value, headers)
            .await
    }

    /// The producer, for the parts of the bus that send records of their own (dead letters).
    pub(crate) fn sender(&self) -> &Sender {
        &self.inner.sender
    }

    /// Waits until every queued record is acknowledged.
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), BusError> {
        self.inner.sender.flush(timeout)
    }
}
