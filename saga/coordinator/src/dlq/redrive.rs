//! Redrive: a dead letter republished to its origin topic — its key, value and headers, without
//! the `choreo_dlq_*` ones, plus `choreo_redriven_from` (the dead letter's id) and
//! `choreo_redriven_by` (who) — through an idempotent producer; and the redrive log.
//!
//! The redrive log is the compacted topic `<group>.dlq-redrives`, keyed by dead-letter id; a
//! record's value is every redrive of that dead letter so far (JSON). Every replica tails it
//! from the beginning, so every replica's listing shows what any replica redrove. Two
//! replicas redriving the same record at the same instant may each write a list without the
//! other's entry, and compaction then keeps one of the two; both republished records are in
//! the origin topic and in the log lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use choreo_bus::wire::headers::Readable as _;
use dashmap::DashMap;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::record::{DlqId, Position, REDRIVEN_BY, REDRIVEN_FROM, Redrive};
use crate::QuietEof;

/// Every redrive any replica made, by dead-letter id, as read from the redrive log (and
/// this replica's own as soon as they are durable).
#[derive(Debug, Default)]
pub(crate) struct RedriveLog {
    redrives: DashMap<String, Vec<Redrive>>,
    caught_up: AtomicBool,
}

impl RedriveLog {
    /// The redrives of one dead letter, oldest first.
    pub(crate) fn of(&self, id: &str) -> Vec<Redrive> {
        self.redrives
            .get(id)
            .map(|r| r.value().clone())
            .unwrap_or_default()
    }

    /// Whether a dead letter was ever redriven.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.redrives.get(id).is_some_and(|r| !r.is_empty())
    }

    /// Records what the log now says about `id` (a list written by this replica).
    pub(crate) fn set(&self, id: &str, list: Vec<Redrive>) {
        self.redrives.insert(id.to_owned(), list);
    }

    /// Whether the log was read to its end once.
    pub(crate) fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }
}

/// Reads the redrive log from the beginning into `log`, forever (waiting for the topic while
/// it does not exist).
pub(crate) async fn tail(
    log: Arc<RedriveLog>,
    client: ClientConfig,
    topic: String,
    cancel: CancellationToken,
) {
    let consumer: StreamConsumer<QuietEof> = match choreo_bus::read_back(
        client.clone(),
        choreo_bus::ReadBack::Follow,
        "choreo-dlq-redrives",
    )
    .create_with_context(QuietEof)
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the redrive log reader; listings will not show redrives by other replicas");
            return;
        }
    };
    let partitions = loop {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10));
        match md
            .as_ref()
            .map(|m| m.topics().first().map(|t| t.partitions().len()))
        {
            Ok(Some(n)) if n > 0 => break n,
            Ok(_) => tracing::debug!(topic = %topic, "the redrive log does not exist yet"),
            Err(e) => tracing::warn!(topic = %topic, error = %e, "redrive log metadata"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let _ = tpl.add_partition_offset(&topic, p, Offset::Beginning);
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::error!(error = %e, "cannot assign the redrive log");
        return;
    }
    let mut at_end = std::collections::BTreeSet::new();
    loop {
        let r = tokio::select! {
            () = cancel.cancelled() => return,
            r = consumer.recv() => r,
        };
        match r {
            Ok(m) => {
                let Some(id) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                match m.payload().map(serde_json::from_slice::<Vec<Redrive>>) {
                    None => {
                        log.redrives.remove(&id);
                    }
                    Some(Ok(list)) => log.set(&id, list),
                    Some(Err(e)) => {
                        tracing::warn!(id = %id, error = %e, "unreadable redrive log record; skipped");
                    }
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if at_end.len() >= partitions && !log.is_caught_up() {
                    log.caught_up.store(true, Ordering::Release);
                    tracing::info!(redriven = log.redrives.len(), "redrive log caught up");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "redrive log reader");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The producer of redrives and of the redrive log: idempotent, acks=all, the Java client's
/// partitioner (a redriven record's key lands where the same key would from any producer).
pub(crate) fn producer(
    client: &ClientConfig,
    timeout: Duration,
) -> Result<FutureProducer, KafkaError> {
    client
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()
}

/// The headers of the republished record: the dead letter's own without the `choreo_dlq_*`
/// ones (and without an earlier redrive's marks), then where it comes from and who sent it.
pub(crate) fn republished_headers(msg: &OwnedMessage, id: &DlqId, by: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for x in h.readable() {
            if x.key.starts_with("choreo_dlq_") || x.key == REDRIVEN_FROM || x.key == REDRIVEN_BY {
                continue;
            }
            out = out.insert(Header {
                key: x.key,
                value: x.value,
            });
        }
    }
    let from = id.to_string();
    out.insert(Header {
        key: REDRIVEN_FROM,
        value: Some(from.as_str()),
    })
    .insert(Header {
        key: REDRIVEN_BY,
        value: Some(by),
    })
}

/// Republishes `msg` to `origin`: keyed records where the partitioner puts their key (the
/// partition they came from while the topic's partition count is unchanged), keyless ones to
/// `partition`. Resolves once the broker acknowledged it.
pub(crate) async fn republish(
    producer: &FutureProducer,
    origin: &str,
    msg: &OwnedMessage,
    headers: OwnedHeaders,
    partition: Option<i32>,
    timeout: Duration,
) -> Result<Position, String> {
    let mut record = FutureRecord::<[u8], [u8]>::to(origin).headers(headers);
    if let Some(v) = msg.payload() {
        record = record.payload(v);
    }
    match msg.key() {
        Some(k) => record = record.key(k),
        None => {
            if let Some(p) = partition {
                record = record.partition(p);
            }
        }
    }
    producer
        .send(record, Timeout::After(timeout))
        .await
        .map(|d| Position {
            topic: origin.to_owned(),
            partition: d.partition,
            offset: d.offset,
        })
        .map_err(|(e, _)| e.to_string())
}

/// Writes what the redrive log says about `id` (every redrive of it so far); resolves once
/// acknowledged.
pub(crate) async fn write_log(
    producer: &FutureProducer,
    topic: &str,
    id: &str,
    list: &[Redrive],
    timeout: Duration,
) -> Result<(), String> {
    let value = serde_json::to_vec(list).map_err(|e| e.to_string())?;
    producer
        .send(
            FutureRecord::to(topic).key(id).payload(&value),
            Timeout::After(timeout),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.to_string())
}
