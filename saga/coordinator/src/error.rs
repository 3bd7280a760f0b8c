//! The coordinator's errors.

use rdkafka::error::KafkaError;

/// Why the coordinator could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A start-up check failed (topics, definitions, configuration).
    #[error("{0}")]
    Startup(String),
    /// The broker refused transactions while exactly-once is configured.
    #[error(
        "the broker at {bootstrap} refused transactions ({reason}); choreo is configured for exactly-once: set coordinator.guarantee = \"effectively_once\" (or CHOREO__COORDINATOR__GUARANTEE=effectively_once) to run on brokers without transactions"
    )]
    TransactionsUnsupported {
        /// Bootstrap servers.
        bootstrap: String,
        /// The broker's answer.
        reason: String,
    },
    /// Another instance with the same transactional id took over (this one is a zombie).
    #[error("fenced: another coordinator instance with transactional id {0} took over")]
    Fenced(String),
    /// A Kafka client error.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client error.
        source: Box<KafkaError>,
    },
    /// A bus error.
    #[error(transparent)]
    Bus(#[from] Box<choreo_bus::BusError>),
}

impl CoordinatorError {
    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        CoordinatorError::Kafka {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

impl From<choreo_bus::BusError> for CoordinatorError {
    fn from(e: choreo_bus::BusError) -> Self {
        CoordinatorError::Bus(Box::new(e))
    }
}
