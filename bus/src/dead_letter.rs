//! Dead letters: a record that cannot be handled goes, unchanged, to `<topic><suffix>`
//! (`orders.dlq` by default) with headers that say why, which handler, where it came from, when,
//! and after how many attempts. Sending is rate-limited by a token bucket, so a flood of poison
//! slows the partition down instead of drowning the cluster; the source offset is stored only
//! after the dead letter is acknowledged.

use std::time::Duration;

use tokio::time::Instant;

use crate::wire::headers::Readable as _;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Mutex;

use crate::error::BusError;
use crate::producer::Sender;
use crate::telemetry;
use crate::wire::envelope::now_rfc3339;

/// Header names added to a dead letter.
pub mod header {
    /// Human-readable reason.
    pub const REASON: &str = "choreo_dlq_reason";
    /// Stable kind: `missing_key`, `wrong_magic_byte`, `truncated`, `unknown_schema_id`,
    /// `unknown_event_type`, `malformed_avro`, `handler_permanent`, `retries_exhausted`.
    pub const KIND: &str = "choreo_dlq_kind";
    /// The handler that failed (empty for decode failures).
    pub const HANDLER: &str = "choreo_dlq_handler";
    /// The consumer group.
    pub const GROUP: &str = "choreo_dlq_group";
    /// Original topic.
    pub const TOPIC: &str = "choreo_dlq_topic";
    /// Original partition.
    pub const PARTITION: &str = "choreo_dlq_partition";
    /// Original offset.
    pub const OFFSET: &str = "choreo_dlq_offset";
    /// Original record timestamp (ms since epoch; empty if none).
    pub const TIMESTAMP: &str = "choreo_dlq_timestamp";
    /// Attempts made.
    pub const ATTEMPTS: &str = "choreo_dlq_attempts";
    /// When it was dead-lettered (RFC 3339).
    pub const TIME: &str = "choreo_dlq_time";
    /// Set when the record was too large to be dead-lettered whole: the dead letter then holds
    /// no value and none of the record's own headers, and says here how large the value was;
    /// the record itself is still in its topic at `choreo_dlq_topic/partition/offset`.
    pub const PAYLOAD_OMITTED: &str = "choreo_dlq_payload_omitted";
}

/// Where dead letters go and how fast.
#[derive(Debug, Clone)]
pub struct DeadLetterPolicy {
    /// Appended to the source topic's name.
    pub topic_suffix: String,
    /// Dead letters per second per subscriber, at most (bursts up to the same number).
    pub max_per_second: u32,
}

impl Default for DeadLetterPolicy {
    fn default() -> Self {
        Self {
            topic_suffix: ".dlq".into(),
            max_per_second: 100,
        }
    }
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone)]
pub struct Reason {
    /// Stable kind (see [`header::KIND`]).
    pub kind: &'static str,
    /// Human-readable reason.
    pub message: String,
    /// The handler that failed, if any.
    pub handler: Option<String>,
    /// Attempts made.
    pub attempts: u32,
}

/// The headers of a dead letter: the source record's own, then the `choreo_dlq_*` ones.
pub fn headers_for<M: Message>(msg: &M, reason: &Reason, group: &str) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for x in h.readable() {
            headers = headers.insert(Header {
                key: x.key,
                value: x.value,
            });
        }
    }
    let ts = msg
        .timestamp()
        .to_millis()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let fields = [
        (header::REASON, reason.message.clone()),
        (header::KIND, reason.kind.to_owned()),
        (header::HANDLER, reason.handler.clone().unwrap_or_default()),
        (header::GROUP, group.to_owned()),
        (header::TOPIC, msg.topic().to_owned()),
        (header::PARTITION, msg.partition().to_string()),
        (header::OFFSET, msg.offset().to_string()),
        (header::TIMESTAMP, ts),
        (header::ATTEMPTS, reason.attempts.to_string()),
        (header::TIME, now_rfc3339()),
    ];
    for (k, v) in &fields {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_str()),
        });
    }
    headers
}

/// The headers of a dead letter for a record too large to be dead-lettered whole: only the
/// `choreo_dlq_*` ones, and [`header::PAYLOAD_OMITTED`] (the dead letter then has no value).
pub fn headers_for_oversize<M: Message>(
    msg: &M,
    reason: &Reason,
    group: &str,
    bytes: usize,
) -> OwnedHeaders {
    slimmed(&headers_for(msg, reason, group), bytes)
}

/// [`headers_for_oversize`] from a dead letter's own headers ([`headers_for`]), which say where
/// its record is: for a dead letter refused as too large once built.
pub fn slimmed(dead_letter: &OwnedHeaders, bytes: usize) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    let (mut topic, mut partition, mut offset) = ("", "", "");
    for h in dead_letter
        .iter()
        .filter(|h| h.key.starts_with("choreo_dlq_"))
    {
        let text = h
            .value
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or_default();
        match h.key {
            header::TOPIC => topic = text,
            header::PARTITION => partition = text,
            header::OFFSET => offset = text,
            _ => {}
        }
        out = out.insert(Header {
            key: h.key,
            value: h.value,
        });
    }
    let omitted = format!(
        "{bytes} bytes: too large to be dead-lettered whole; the record is at {topic}/{partition}/{offset}"
    );
    out.insert(Header {
        key: header::PAYLOAD_OMITTED,
        value: Some(omitted.as_str()),
    })
}

#[derive(Debug)]
pub(crate) struct DeadLetters {
    sender: Sender,
    group: String,
    policy: DeadLetterPolicy,
    bucket: TokenBucket,
}

/// At most `rate` tokens a second, in bursts of up to `rate`.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Waits for a token.
    async fn take(&self) {
        loop {
            let wait = {
                let mut b = self.state.lock().await;
                let now = Instant::now();
                b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.rate);
                b.1 = now;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl DeadLetters {
    pub(crate) fn new(sender: Sender, group: &str, policy: DeadLetterPolicy) -> Self {
        Self {
            sender,
            group: group.to_owned(),
            bucket: TokenBucket::new(policy.max_per_second),
            policy,
        }
    }

    /// The dead-letter topic of a source topic.
    pub(crate) fn topic_for(&self, source: &str) -> String {
        format!("{source}{}", self.policy.topic_suffix)
    }

    pub(crate) async fn send(&self, msg: &OwnedMessage, reason: &Reason) -> Result<(), BusError> {
        self.bucket.take().await;
        let headers = headers_for(msg, reason, &self.group);
        // The key as it came (a key that is not text is why some records are here).
        let key = msg.key();
        let topic = self.topic_for(msg.topic());
        let value = msg.payload().unwrap_or_default();
        let sent = self.sender.send(&topic, key, value, headers).await;
        match sent {
            Ok(_) => {}
            // The record with the dead-letter headers is over the size limit (a record near it,
            // or large headers): dead-letter what says where it is instead of retrying forever.
            Err(BusError::Delivery { source, .. })
                if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                let slim = headers_for_oversize(msg, reason, &self.group, value.len());
                self.sender.send(&topic, key, &[], slim).await?;
                tracing::warn!(
                    messaging.destination.name = msg.topic(),
                    messaging.kafka.destination.partition = msg.partition(),
                    messaging.kafka.message.offset = msg.offset(),
                    bytes = value.len(),
                    "the record is too large to be dead-lettered whole; its dead letter holds where it is, not its value"
                );
            }
            Err(e) => {
                metrics::counter!(telemetry::DEAD_LETTER_FAILURES, "topic" => msg.topic().to_owned())
                    .increment(1);
                return Err(e);
            }
        }
        metrics::counter!(telemetry::DEAD_LETTERED, "topic" => msg.topic().to_owned(),
            "reason" => reason.kind)
        .increment(1);
        tracing::warn!(
            messaging.destination.name = msg.topic(),
            messaging.kafka.destination.partition = msg.partition(),
            messaging.kafka.message.offset = msg.offset(),
            correlation_id = %String::from_utf8_lossy(key.unwrap_or_default()),
            dead_letter_topic = %topic,
            kind = reason.kind,
            reason = %reason.message,
            "dead-lettered"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slim dead letter keeps the `choreo_dlq_*` headers only, and says where the record is
    /// from the dead letter's own headers.
    #[test]
    fn a_slim_dead_letter_says_where_its_record_is() {
        let msg = OwnedMessage::new(
            Some(vec![1; 10]),
            Some(b"k".to_vec()),
            "orders".into(),
            rdkafka::Timestamp::CreateTime(1_000),
            2,
            41,
            Some(OwnedHeaders::new().insert(Header {
                key: "ce_id",
                value: Some("e-1"),
            })),
        );
        let reason = Reason {
            kind: "malformed",
            message: "bad".into(),
            handler: None,
            attempts: 1,
        };
        let slim = headers_for_oversize(&msg, &reason, "g", 10);
        let read: Vec<(String, String)> = slim
            .iter()
            .map(|h| {
                let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                (h.key.to_owned(), v)
            })
            .collect();
        assert!(
            read.iter().all(|(k, _)| k.starts_with("choreo_dlq_")),
            "{read:?}"
        );
        assert!(read.contains(&(header::KIND.to_owned(), "malformed".to_owned())));
        assert_eq!(
            read.last(),
            Some(&(
                header::PAYLOAD_OMITTED.to_owned(),
                "10 bytes: too large to be dead-lettered whole; the record is at orders/2/41"
                    .to_owned()
            ))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_held_to_the_rate() {
        let bucket = TokenBucket::new(5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.take().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a burst of up to the rate goes at once"
        );
        for _ in 0..10 {
            bucket.take().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2),
            "10 more at 5/s take 2 s of virtual time: {took:?}"
        );
        assert!(
            took < Duration::from_millis(2100),
            "and not much more: {took:?}"
        );
    }
}
