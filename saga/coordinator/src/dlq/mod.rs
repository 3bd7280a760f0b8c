//! Dead letters for operators: every `*.dlq` topic of the cluster (the bus's subscribers and
//! the coordinator both dead-letter to `<topic>.dlq`), its records with their reason headers
//! and their payload decoded through the registry where it can be, and redrive —
//! republishing one record, a selection or all matching to the origin topic, marked as
//! redriven and recorded in Kafka so that every replica's listing shows it.
//!
//! ## Layout
//!
//! - this file: [`DeadLetterDesk`], what the routes call (reads on a blocking thread, records
//!   described, redrives run one at a time per replica);
//! - `record.rs`: the records as the API shows them, ids, filters, cursors, limits (no I/O);
//! - `reader.rs`: reading dead-letter topics: topics, pages newest first, one record, scans;
//! - `redrive.rs`: republishing to the origin topic, and the redrive log every replica tails;
//! - `routes.rs`: `/api/dlq…` (viewers read, operators redrive) — mounted by [`crate::http`].
//!
//! Imports go one way: routes → this file → reader, redrive → record.
//!
//! ## Redriven records are handled again
//!
//! A dead-lettered record was never remembered as handled: a bus subscriber marks an event id
//! in its dedup store only after its handler succeeded (`choreo_bus::dedup`), and the
//! coordinator adds an event id to a saga's `seen` ids only in a state it commits, which a
//! dead-lettered input never changes. So the republished record — same `ce_id` — is handled
//! by the group that dead-lettered it, while every other group that already handled it drops
//! it as the duplicate it is (the coordinator by the saga's `seen` ids, choreo subscribers by
//! their dedup store).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use choreo_bus::BusConfig;
use choreo_bus::dead_letter::header as dlq;
use choreo_bus::wire::codec::{Codec, WriterSchemaError, decode_value};
use choreo_bus::wire::envelope::header as ce;
use choreo_schemas::SchemaRegistry;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod reader;
pub mod record;
mod redrive;
mod routes;

pub use record::{
    DeadLetter, DlqId, Filter, Page, RedriveDone, RedrivePreview, Selection, TopicList,
};
pub use routes::routes;

use reader::{ReadError, Reader};
use record::{
    Cursor, MAX_DECODED_BYTES, MAX_RAW_BYTES, MAX_REDRIVE, Origin, Redriven, Refusal, headers_of,
    origin_of,
};
use redrive::RedriveLog;

use crate::error::CoordinatorError;
use crate::telemetry;

/// The records a redrive by filter reads at most (a topic larger than this is redriven by ids).
pub const REDRIVE_SCAN_BUDGET: usize = 1_000_000;

/// What the desk needs.
#[derive(Debug, Clone)]
pub struct DeskOptions {
    /// Brokers and pass-through client settings (TLS, SASL).
    pub kafka: BusConfig,
    /// The coordinator group: the redrive log is `<group>.dlq-redrives`.
    pub group_id: String,
    /// The registry payloads are decoded through.
    pub registry: Arc<dyn SchemaRegistry>,
    /// Upper bound for one broker call.
    pub timeout: Duration,
    /// Replication factor of the redrive log when it is created (unset: the cluster's
    /// default).
    pub replication_factor: Option<i32>,
    /// Whether to create the redrive log when it is missing (an embedded broker's topics are
    /// created through it instead).
    pub create_topic: bool,
}

/// Why a desk call failed.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// No such topic or record.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done as asked.
    #[error("{0}")]
    BadRequest(String),
    /// A redrive's matching set is not the one its dry run counted.
    #[error("{0}")]
    Conflict(String),
    /// Kafka could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ReadError> for DeskError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound(m) => DeskError::NotFound(m),
            ReadError::Kafka(m) => DeskError::Unavailable(m),
        }
    }
}

/// Dead letters: reading and redriving them.
pub struct DeadLetterDesk {
    client: ClientConfig,
    producer: FutureProducer,
    codec: Codec,
    log: Arc<RedriveLog>,
    log_topic: String,
    timeout: Duration,
    tail: JoinHandle<()>,
    /// One redrive at a time on this replica (the log's read-modify-write).
    redriving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DeadLetterDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterDesk")
            .field("log_topic", &self.log_topic)
            .field("log_caught_up", &self.log.is_caught_up())
            .finish_non_exhaustive()
    }
}

impl Drop for DeadLetterDesk {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl DeadLetterDesk {
    /// The redrive log of a coordinator group: `<group>.dlq-redrives`.
    pub fn log_topic(group_id: &str) -> String {
        crate::coordinator::derived_topic(group_id, "dlq-redrives")
    }

    /// Creates the redrive log if asked and missing (compacted, one partition), and starts
    /// reading it.
    pub async fn start(
        opts: DeskOptions,
        shutdown: CancellationToken,
    ) -> Result<Arc<DeadLetterDesk>, CoordinatorError> {
        let client = opts.kafka.consumer_config();
        let log_topic = Self::log_topic(&opts.group_id);
        if opts.create_topic {
            let spec = crate::topics::TopicSpec {
                name: log_topic.clone(),
                partitions: 1,
                compacted: true,
            };
            crate::topics::ensure_topics(
                &opts.kafka.client_config(),
                &[spec],
                opts.replication_factor,
                opts.timeout,
            )
            .await?;
        }
        let producer = redrive::producer(&opts.kafka.client_config(), opts.timeout)
            .map_err(|e| CoordinatorError::kafka("creating the redrive producer", e))?;
        let log = Arc::new(RedriveLog::default());
        let tail = tokio::spawn(redrive::tail(
            Arc::clone(&log),
            client.clone(),
            log_topic.clone(),
            shutdown.child_token(),
        ));
        Ok(Arc::new(DeadLetterDesk {
            client,
            producer,
            codec: Codec::new(opts.registry),
            log,
            log_topic,
            timeout: opts.timeout,
            tail,
            redriving: tokio::sync::Mutex::new(()),
        }))
    }

    /// Runs `f` with a fresh reader on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, DeskError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        tokio::task::spawn_blocking(move || f(&Reader::new(&client, timeout)?))
            .await
            .map_err(|e| DeskError::Unavailable(format!("reader task: {e}")))?
            .map_err(DeskError::from)
    }

    /// Every dead-letter topic with its size.
    pub async fn topics(&self) -> Result<TopicList, DeskError> {
        let topics = self.read(|r| r.topics()).await?;
        Ok(TopicList { topics })
    }

    /// Up to `limit` records of `topic` matching `filter`, newest first, before the cursor
    /// `before` (a page's `next`).
    pub async fn page(
        &self,
        topic: &str,
        filter: Filter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page, DeskError> {
        let cursor = before
            .map(Cursor::parse)
            .transpose()
            .map_err(DeskError::BadRequest)?;
        let topic_owned = topic.to_owned();
        let (records, next) = self
            .read(move |r| {
                r.page(
                    &topic_owned,
                    &filter,
                    limit,
                    cursor.as_ref(),
                    record::SCAN_BUDGET,
                )
            })
            .await?;
        let mut registry_down = None;
        let mut out = Vec::with_capacity(records.len());
        for m in &records {
            out.push(self.describe(m, &mut registry_down).await);
        }
        Ok(Page {
            records: out,
            next: next.map(|c| c.encode()),
        })
    }

    /// One record (404 if the topic does not hold it).
    pub async fn get(&self, id: &DlqId) -> Result<DeadLetter, DeskError> {
        let key = id.clone();
        let found = self.read(move |r| r.read_one(&key)).await?;
        let m = found.ok_or_else(|| DeskError::NotFound(format!("no dead letter {id}")))?;
        Ok(self.describe(&m, &mut None).await)
    }

    /// A record as the API shows it. `registry_down` carries, across one page, that the
    /// registry could not be asked (the other records are then not decoded).
    async fn describe(&self, m: &OwnedMessage, registry_down: &mut Option<String>) -> DeadLetter {
        let headers = headers_of(m);
        let get = |k: &str| headers.get(k).cloned();
        let id = DlqId {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        }
        .to_string();
        let mut event_type = get(ce::TYPE).filter(|t| !t.is_empty());
        let (mut payload, mut payload_error, mut raw) = (None, None, None);
        let value = m.payload();
        if let Some(omitted) = get(dlq::PAYLOAD_OMITTED) {
            payload_error = Some(format!("the value was not dead-lettered: {omitted}"));
        } else if let Some(v) = value {
            if v.len() > MAX_DECODED_BYTES {
                payload_error = Some(format!(
                    "{} bytes: too large to decode here (the first {MAX_RAW_BYTES} are in payload_base64)",
                    v.len()
                ));
                raw = Some(v);
            } else if let Some(down) = registry_down.as_ref() {
                payload_error = Some(down.clone());
                raw = Some(v);
            } else {
                match self.codec.read(v).await {
                    Ok(framed) => {
                        if event_type.is_none() {
                            event_type = framed.writer.full_name();
                        }
                        match decode_value(&framed.writer.schema, None, framed.body).and_then(|d| {
                            serde_json::Value::try_from(d)
                                .map_err(|e| choreo_bus::DecodeError::Malformed(e.to_string()))
                        }) {
                            Ok(json) => payload = Some(json),
                            Err(e) => {
                                payload_error = Some(e.to_string());
                                raw = Some(v);
                            }
                        }
                    }
                    Err(WriterSchemaError::Poison(e)) => {
                        payload_error = Some(e.to_string());
                        raw = Some(v);
                    }
                    Err(WriterSchemaError::Unavailable(e)) => {
                        let why = format!("the schema registry could not be asked: {e}");
                        *registry_down = Some(why.clone());
                        payload_error = Some(why);
                        raw = Some(v);
                    }
                }
            }
        } else {
            payload_error = Some("the record has no value".into());
        }
        let origin_topic = get(dlq::TOPIC)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| origin_of(m.topic()).unwrap_or_default().to_owned());
        DeadLetter {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            reason: get(dlq::REASON).unwrap_or_default(),
            kind: get(dlq::KIND).unwrap_or_default(),
            handler: get(dlq::HANDLER).unwrap_or_default(),
            group: get(dlq::GROUP).unwrap_or_default(),
            origin: Origin {
                topic: origin_topic,
                partition: get(dlq::PARTITION).and_then(|p| p.parse().ok()),
                offset: get(dlq::OFFSET).and_then(|o| o.parse().ok()),
            },
            attempts: get(dlq::ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0),
            event_type,
            ce_id: get(ce::ID).filter(|i| !i.is_empty()),
            payload,
            payload_error,
            payload_base64: raw.map(|v| {
                base64::engine::general_purpose::STANDARD.encode(&v[..v.len().min(MAX_RAW_BYTES)])
            }),
            redriven: self.log.of(&id),
            headers,
            id,
        }
    }

    /// The records a redrive of `selection` takes (oldest first, at most [`MAX_REDRIVE`]),
    /// how many match in all, and the ids it leaves out.
    async fn select(
        &self,
        topic: &str,
        selection: Selection,
    ) -> Result<(Vec<OwnedMessage>, usize, Vec<Refusal>), DeskError> {
        let topic_owned = topic.to_owned();
        let (candidates, mut refused) = match selection {
            Selection::Ids(ids) => {
                let found = self.read(move |r| r.read_ids(&topic_owned, ids)).await?;
                let mut refused = Vec::new();
                let mut out = Vec::new();
                for (id, m) in found {
                    match m {
                        Some(m) => out.push(m),
                        None => refused.push(Refusal {
                            id: id.to_string(),
                            reason: "no such record (never written, or deleted by the topic's retention)".into(),
                        }),
                    }
                }
                (out, refused)
            }
            Selection::Filter(filter) => {
                let log = Arc::clone(&self.log);
                let (found, complete) = self
                    .read(move |r| {
                        r.scan(&topic_owned, REDRIVE_SCAN_BUDGET, |m| {
                            let id = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
                            filter.matches(&headers_of(m)) && !log.contains(&id)
                        })
                    })
                    .await?;
                if !complete {
                    return Err(DeskError::BadRequest(format!(
                        "{topic} holds more than {REDRIVE_SCAN_BUDGET} records: redrive them by ids"
                    )));
                }
                (found, Vec::new())
            }
        };
        let mut taken = Vec::new();
        for m in candidates {
            match redrivable(&m, topic) {
                Ok(()) => taken.push(m),
                Err(reason) => refused.push(Refusal {
                    id: format!("{}/{}/{}", m.topic(), m.partition(), m.offset()),
                    reason,
                }),
            }
        }
        let matched = taken.len();
        taken.truncate(MAX_REDRIVE);
        Ok((taken, matched, refused))
    }

    /// What a redrive of `selection` would republish.
    pub async fn preview(
        &self,
        topic: &str,
        selection: Selection,
    ) -> Result<RedrivePreview, DeskError> {
        let (taken, matched, refused) = self.select(topic, selection).await?;
        let ids: Vec<String> = taken.iter().map(id_of).collect();
        let already_redriven = ids
            .iter()
            .filter(|id| self.log.contains(id))
            .cloned()
            .collect();
        Ok(RedrivePreview {
            matched,
            ids,
            refused,
            already_redriven,
        })
    }

    /// Republishes what `selection` matches — exactly `expect` records, or nothing (a
    /// conflict) — each to its origin topic, and records the redrives in the log. Answers once
    /// the broker acknowledged each.
    pub async fn redrive(
        &self,
        topic: &str,
        selection: Selection,
        expect: usize,
        by: &str,
        note: Option<&str>,
    ) -> Result<RedriveDone, DeskError> {
        let _one_at_a_time = self.redriving.lock().await;
        let (taken, matched, mut refused) = self.select(topic, selection).await?;
        if matched != expect {
            return Err(DeskError::Conflict(format!(
                "{matched} records match now, not {expect}: run the dry run again"
            )));
        }
        let origin = origin_of(topic).unwrap_or_default().to_owned();
        let origin_name = origin.clone();
        let partitions = self.read(move |r| r.partition_count(&origin_name)).await?;
        let Some(partitions) = partitions else {
            return Err(DeskError::BadRequest(format!(
                "the origin topic {origin} does not exist"
            )));
        };
        let mut sends = Vec::new();
        for m in &taken {
            let id = DlqId {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            };
            let keyless_partition = headers_of(m)
                .get(dlq::PARTITION)
                .and_then(|p| p.parse::<i32>().ok())
                .filter(|p| *p < partitions);
            let headers = redrive::republished_headers(m, &id, by);
            sends.push(redrive::republish(
                &self.producer,
                &origin,
                m,
                headers,
                keyless_partition,
                self.timeout,
            ));
        }
        // Enqueued in offset order (per partition the broker keeps it); awaited together.
        let results = futures::future::join_all(sends).await;
        let mut done = RedriveDone {
            redriven: Vec::new(),
            refused: Vec::new(),
            remaining: matched.saturating_sub(taken.len()),
        };
        let at_ms = now_ms();
        let mut log_writes = Vec::new();
        for (m, result) in taken.iter().zip(results) {
            let id = id_of(m);
            match result {
                Ok(to) => {
                    tracing::info!(dead_letter = %id, to_topic = %to.topic, to_partition = to.partition, to_offset = to.offset, by, correlation_id = %m.key().map(String::from_utf8_lossy).unwrap_or_default(), "dead letter redriven");
                    let mut list = self.log.of(&id);
                    let again = !list.is_empty();
                    list.push(record::Redrive {
                        at_ms,
                        by: by.to_owned(),
                        to: to.clone(),
                        note: note.map(str::to_owned),
                    });
                    log_writes.push((id.clone(), list));
                    done.redriven.push(Redriven { id, to, again });
                }
                Err(e) => {
                    tracing::warn!(dead_letter = %id, error = %e, "redrive not acknowledged");
                    refused.push(Refusal {
                        id,
                        reason: format!("not acknowledged by the broker: {e}"),
                    });
                }
            }
        }
        metrics::counter!(telemetry::DLQ_REDRIVEN, "topic" => topic.to_owned())
            .increment(done.redriven.len() as u64);
        metrics::counter!(telemetry::DLQ_REDRIVE_REFUSED, "topic" => topic.to_owned())
            .increment(refused.len() as u64);
        done.refused = refused;
        if done.redriven.is_empty() && !taken.is_empty() {
            return Err(DeskError::Unavailable(format!(
                "no record was acknowledged by the broker: {}",
                done.refused
                    .first()
                    .map_or_else(String::new, |r| r.reason.clone())
            )));
        }
        let writes = log_writes.iter().map(|(id, list)| {
            redrive::write_log(&self.producer, &self.log_topic, id, list, self.timeout)
        });
        let written = futures::future::join_all(writes).await;
        let mut unrecorded = Vec::new();
        for ((id, list), w) in log_writes.into_iter().zip(written) {
            match w {
                Ok(()) => self.log.set(&id, list),
                Err(e) => {
                    tracing::error!(dead_letter = %id, error = %e, "redriven, but the redrive log did not take it: other replicas will not show it as redriven");
                    unrecorded.push(id);
                }
            }
        }
        if !unrecorded.is_empty() {
            return Err(DeskError::Unavailable(format!(
                "{} records were redriven, but the redrive log ({}) did not take {} of them ({}): listings will not show those as redriven",
                done.redriven.len(),
                self.log_topic,
                unrecorded.len(),
                unrecorded.join(", ")
            )));
        }
        Ok(done)
    }
}

fn id_of(m: &OwnedMessage) -> String {
    format!("{}/{}/{}", m.topic(), m.partition(), m.offset())
}

/// Whether a dead letter of `topic` can be republished; why not otherwise.
fn redrivable(m: &OwnedMessage, topic: &str) -> Result<(), String> {
    let headers = headers_of(m);
    if let Some(omitted) = headers.get(dlq::PAYLOAD_OMITTED) {
        return Err(format!(
            "its value was not dead-lettered ({omitted}); republish the original from its topic by other means"
        ));
    }
    let origin = origin_of(topic).unwrap_or_default();
    if let Some(named) = headers.get(dlq::TOPIC).filter(|t| !t.is_empty())
        && named != origin
    {
        return Err(format!(
            "its origin header names {named}, not {origin}: not redriven to a topic other than the one its dead-letter topic belongs to"
        ));
    }
    Ok(())
}

/// The distinct ids of a redrive body, each checked to be of `topic`.
pub fn ids_of(topic: &str, ids: &[String]) -> Result<Selection, String> {
    let mut out = BTreeSet::new();
    for text in ids {
        let id = DlqId::parse(text)?;
        if id.topic != topic {
            return Err(format!("{id} is not a record of {topic}"));
        }
        out.insert(id);
    }
    Ok(Selection::Ids(out))
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, Headers as _, OwnedHeaders};

    use super::*;

    fn dead_letter(headers: &[(&str, &str)]) -> OwnedMessage {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            Some(vec![0, 0, 0, 0, 1, 2]),
            Some(b"o-1".to_vec()),
            "orders.dlq".into(),
            Timestamp::CreateTime(1),
            0,
            5,
            Some(h),
        )
    }

    #[test]
    fn a_redriven_record_keeps_its_own_headers_and_says_where_it_came_from() {
        let m = dead_letter(&[
            ("ce_id", "e-1"),
            (dlq::KIND, "handler_permanent"),
            (dlq::TOPIC, "orders"),
            (record::REDRIVEN_FROM, "orders.dlq/0/1"),
            (record::REDRIVEN_BY, "bob"),
            ("traceparent", "00-abc"),
        ]);
        let id = DlqId::parse("orders.dlq/0/5").expect("id");
        let h = redrive::republished_headers(&m, &id, "alice");
        let got: Vec<(String, String)> = h
            .iter()
            .map(|x| {
                (
                    x.key.to_owned(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("ce_id", "e-1"),
            ("traceparent", "00-abc"),
            ("choreo_redriven_from", "orders.dlq/0/5"),
            ("choreo_redriven_by", "alice"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn only_a_whole_record_of_this_topic_is_redriven() {
        assert!(redrivable(&dead_letter(&[(dlq::TOPIC, "orders")]), "orders.dlq").is_ok());
        assert!(redrivable(&dead_letter(&[]), "orders.dlq").is_ok());
        let omitted = redrivable(
            &dead_letter(&[(dlq::PAYLOAD_OMITTED, "2000000 bytes: too large")]),
            "orders.dlq",
        )
        .expect_err("no value to redrive");
        assert!(omitted.contains("was not dead-lettered"), "{omitted}");
        let elsewhere = redrivable(&dead_letter(&[(dlq::TOPIC, "payments")]), "orders.dlq")
            .expect_err("another topic");
        assert!(
            elsewhere.contains("names payments, not orders"),
            "{elsewhere}"
        );
    }
}
