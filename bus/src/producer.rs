//! The bus's one idempotent producer (acks=all, the Java client's partitioner): sending a
//! record and waiting for the broker's acknowledgement. Publishing and dead letters both send
//! through it.
//!
//! An idempotent producer that hits a fatal error (fenced, or an unrecoverable sequence or
//! authorization failure when it starts) refuses every record after it. The sender notices it
//! on the failed send, says so in one error line, and replaces the producer with a new one, so
//! that the next send (a retried dead letter, the caller's next publish) goes through — it never
//! spins on a dead producer.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::BusConfig;
use crate::error::BusError;
use crate::telemetry;

/// A clonable handle to the producer.
#[derive(Clone)]
pub(crate) struct Sender {
    producer: Arc<RwLock<FutureProducer>>,
    client: ClientConfig,
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
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The Java client's partitioner, so that keys land on the same partitions whichever
            // language produced them (co-partitioning depends on it).
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string());
        let producer: FutureProducer = client
            .create()
            .map_err(|e| BusError::kafka("creating the producer", e))?;
        Ok(Self {
            producer: Arc::new(RwLock::new(producer)),
            client,
            delivery_timeout: config.delivery_timeout(),
        })
    }

    fn current(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a failed send: if `used` has a fatal error, replaces it (once, whoever notices
    /// first) with a new producer.
    fn replace_if_fatal(&self, used: &FutureProducer) {
        let Some((code, reason)) = used.client().fatal_error() else {
            return;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.client().native_ptr() != used.client().native_ptr() {
            return; // already replaced
        }
        match self.client.create::<FutureProducer>() {
            Ok(fresh) => {
                *current = fresh;
                metrics::counter!(telemetry::PRODUCER_REPLACED).increment(1);
                tracing::error!(error = ?code, reason = %reason, "the producer hit a fatal error and refuses every record after it; it is replaced by a new producer (the records it did not acknowledge were reported failed to their senders)");
            }
            Err(e) => {
                tracing::error!(error = ?code, reason = %reason, create_error = %e, "the producer hit a fatal error and a new one cannot be created; every send fails until it can");
            }
        }
    }

    /// Sends one record and waits for the acknowledgement; returns (partition, offset).
    pub(crate) async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(i32, i64), BusError> {
        let started = Instant::now();
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(value)
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        let producer = self.current();
        match producer
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
            Err((e, _)) => {
                self.replace_if_fatal(&producer);
                Err(BusError::Delivery {
                    topic: topic.to_owned(),
                    correlation_id: String::from_utf8_lossy(key.unwrap_or_default()).into_owned(),
                    source: Box::new(e),
                })
            }
        }
    }

    /// Waits until every queued record is acknowledged.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.current()
            .flush(Timeout::After(timeout))
            .map_err(|e| BusError::kafka("flush", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    /// librdkafka's mock cluster answers the producer's first InitProducerId with
    /// CLUSTER_AUTHORIZATION_FAILED, a fatal error for an idempotent producer: that producer
    /// refuses every record from then on. The sender replaces it, and the next send is
    /// acknowledged. (Without the replacement every later send fails too.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_with_a_fatal_error_is_replaced_and_the_next_send_goes_through() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("fatal", 1, 1).expect("topic");
        cluster.request_errors(
            RDKafkaApiKey::InitProducerId,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
        );
        let mut config = BusConfig::new(cluster.bootstrap_servers());
        config.delivery_timeout_ms = 5_000;
        let sender = Sender::new(&config).expect("sender");
        let first = sender
            .send("fatal", Some(b"k".as_slice()), b"one", OwnedHeaders::new())
            .await;
        assert!(first.is_err(), "the fenced producer refuses: {first:?}");
        let mut delivered = None;
        for _ in 0..3 {
            match sender
                .send("fatal", Some(b"k".as_slice()), b"two", OwnedHeaders::new())
                .await
            {
                Ok(d) => {
                    delivered = Some(d);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "send"),
            }
        }
        assert_eq!(
            delivered.map(|d| d.0),
            Some(0),
            "a later send is acknowledged"
        );
    }
}
