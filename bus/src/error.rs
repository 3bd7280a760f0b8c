//! Errors of the bus, each classified the way the consumer loop treats it.

use rdkafka::error::KafkaError;

/// Publishing, configuration, or Kafka client errors.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration is invalid.
    #[error("invalid bus configuration: {0}")]
    Config(String),
    /// The Kafka client refused or failed an operation.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        source: Box<KafkaError>,
    },
    /// The brokers refused this client: its SASL login, the TLS handshake, or an ACL.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The event could not be encoded or its schema registered.
    #[error("cannot encode {event_type} for topic {topic}: {reason}")]
    Encode {
        /// The event type.
        event_type: String,
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The schema registry could not register or look up a schema (try again later).
    #[error("schema registry: subject {subject}: {reason}")]
    Registry {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A record was not acknowledged by the broker.
    #[error("delivery to {topic} failed for correlation id {correlation_id}: {source}")]
    Delivery {
        /// The topic.
        topic: String,
        /// The record key.
        correlation_id: String,
        /// The client's error.
        source: Box<KafkaError>,
    },
}

/// Why the brokers would not let this client in, in words an operator acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The brokers refused the SASL login.
    #[error(
        "Kafka at {brokers} refused the login: SASL/{mechanism} authentication failed for user {user:?} (check sasl.username and sasl.password): {reason}"
    )]
    Authentication {
        /// Bootstrap servers.
        brokers: String,
        /// `sasl.mechanism`.
        mechanism: String,
        /// `sasl.username`.
        user: String,
        /// The broker's answer, as librdkafka reports it.
        reason: String,
    },
    /// The TLS handshake failed (most often: the broker's certificate is not signed by a
    /// trusted CA).
    #[error("TLS with Kafka at {brokers} failed (trusting {ca}; check ssl.ca.location): {reason}")]
    Tls {
        /// Bootstrap servers.
        brokers: String,
        /// What the client trusts: `ssl.ca.location`, or the system's CA certificates.
        ca: String,
        /// The handshake's error, as librdkafka reports it.
        reason: String,
    },
    /// An ACL denies this client's principal a resource.
    #[error("Kafka at {brokers} denies {principal} access to {resource} ({code}): {needs}")]
    Denied {
        /// Bootstrap servers.
        brokers: String,
        /// `User:<sasl.username>`, or which principal when there is no SASL user.
        principal: String,
        /// `topic <name>`, `consumer group <name>`…
        resource: String,
        /// The broker's error code, e.g. `TOPIC_AUTHORIZATION_FAILED`.
        code: &'static str,
        /// What the client needs on the resource.
        needs: String,
    },
}

impl BusError {
    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        BusError::Kafka {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// What a handler returns when it cannot handle an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure (a downstream timeout, say): retried with backoff up to the limit,
    /// then dead-lettered.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The event can never be handled (a business rule rejects it): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    /// A retryable error with a message.
    pub fn retryable(msg: impl std::fmt::Display) -> Self {
        HandlerError::Retryable(msg.to_string())
    }
    /// A permanent error with a message.
    pub fn permanent(msg: impl std::fmt::Display) -> Self {
        HandlerError::Permanent(msg.to_string())
    }
}

/// Why a record could not be turned into a typed event. Every kind is poison: the record goes to
/// the dead-letter topic and the partition moves on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no key, so it has no correlation id.
    #[error("missing key: a record needs its correlation id as key")]
    MissingKey,
    /// The key is not UTF-8 text, so it is no correlation id (two such keys could not be told
    /// apart once converted).
    #[error("invalid key: not UTF-8 text ({0} bytes); a correlation id is text")]
    InvalidKey(usize),
    /// A CloudEvents header is not UTF-8 text (an id that could collapse into another's when
    /// converted, and be dropped as its duplicate).
    #[error("invalid header {0}: not UTF-8 text")]
    InvalidHeader(String),
    /// The value does not start with the Confluent magic byte 0.
    #[error("wrong magic byte {0:#04x}: the value is not in the Confluent wire format")]
    WrongMagicByte(u8),
    /// The value is shorter than its framing or its Avro body.
    #[error("truncated: {0}")]
    Truncated(String),
    /// The schema id is not known to the registry.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// No handler of this subscriber takes the event type on this topic.
    #[error("unknown event type {0}: no handler for it on this topic")]
    UnknownEventType(String),
    /// The event type is not in the event catalog the record is decoded against.
    #[error("{0} is not in the catalog")]
    NotInCatalog(String),
    /// The Avro body does not match its schema, or cannot be resolved to the reader's.
    #[error("malformed Avro body: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// A short, stable name for metrics labels and the dead-letter reason header.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::MissingKey => "missing_key",
            DecodeError::InvalidKey(_) => "invalid_key",
            DecodeError::InvalidHeader(_) => "invalid_header",
            DecodeError::WrongMagicByte(_) => "wrong_magic_byte",
            DecodeError::Truncated(_) => "truncated",
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::UnknownEventType(_) | DecodeError::NotInCatalog(_) => "unknown_event_type",
            DecodeError::Malformed(_) => "malformed_avro",
        }
    }
}

impl From<choreo_schemas::binary::BinaryError> for DecodeError {
    fn from(e: choreo_schemas::binary::BinaryError) -> Self {
        match e {
            choreo_schemas::binary::BinaryError::Truncated(m) => DecodeError::Truncated(m),
            choreo_schemas::binary::BinaryError::Malformed(m) => DecodeError::Malformed(m),
        }
    }
}
