//! The bus's one idempotent producer (acks=all, the Java client's partitioner): sending a
//! record and waiting for the broker's acknowledgement. Publishing and dead letters both send
//! through it.

use std::time::{Duration, Instant};

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::BusConfig;
use crate::error::BusError;

/// A clonable handle to the producer.
#[derive(Clone)]
pub(crate) struct Sender {
    producer: FutureProducer,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// Creates the producer (the broker is contacted lazily).
    pub(crate) fn new(config: &BusConfig) -> Result<Self, BusError> {
        let mut client = config.client_config();
        // 5 ms unless the client settings choose (the HTTP ingest, answering per request,
        // waits less).
        if !config.client.contains_key("linger.ms") {
            client.set("linger.ms", "5");
        }
        let producer: FutureProducer = client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The Java client's partitioner, so that keys land on the same partitions whichever
            // language produced them (co-partitioning depends on it).
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string())
            .create()
            .map_err(|e| BusError::kafka("creating the producer", e))?;
        Ok(Self {
            producer,
            delivery_timeout: config.delivery_timeout(),
        })
    }

    /// Sends one record and waits for the acknowledgement; returns (partition, offset).
    pub(crate) async fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(i32, i64), BusError> {
        let started = Instant::now();
        let mut record = FutureRecord::<str, [u8]>::to(topic)
            .payload(value)
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        match self
            .producer
            .send(record, Timeout::After(self.delivery_timeout))
            .await
        {
            Ok(d) => {
                tracing::debug!(
                    partition = d.partition,
                    offset = d.offset,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "delivered"
                );
                Ok((d.partition, d.offset))
            }
            Err((e, _)) => Err(BusError::Delivery {
                topic: topic.to_owned(),
                correlation_id: key.unwrap_or_default().to_owned(),
                source: Box::new(e),
            }),
        }
    }

    /// Waits until every queued record is acknowledged.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| BusError::kafka("flush", e))
    }
}
