//! Dead letters as the API shows them: ids (`<topic>/<partition>/<offset>`), the
//! [`DeadLetter`] with its reason headers, the filters, the cursor of a listing, and the
//! limits every request is held to. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use choreo_bus::dead_letter::header as dlq;
use choreo_bus::wire::headers::Readable as _;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde::{Deserialize, Serialize};

/// The suffix of a dead-letter topic: `orders.dlq` holds what could not be handled from
/// `orders` (the bus's subscribers and the coordinator both write there).
pub const DLQ_SUFFIX: &str = ".dlq";

/// A listing returns this many records unless it asks for another number.
pub const DEFAULT_LIMIT: usize = 50;
/// A listing returns at most this many records.
pub const MAX_LIMIT: usize = 500;
/// A listing reads at most this many records (matching or not) before it answers with what
/// it found and a cursor to go on from: a filter that matches little never reads a whole
/// topic in one request.
pub const SCAN_BUDGET: usize = 10_000;
/// One redrive republishes at most this many records (the oldest matching first); the answer
/// says how many more match.
pub const MAX_REDRIVE: usize = 1_000;
/// A redrive's body is at most this large (413 above): a thousand ids and a note.
pub const MAX_REDRIVE_BODY: usize = 128 * 1024;
/// A filter's text (`reason`, `kind`) is at most this long.
pub const MAX_FILTER_TEXT: usize = 256;
/// A redrive's note (why) is at most this long.
pub const MAX_REDRIVE_NOTE: usize = choreo_saga::MAX_REASON_BYTES;
/// Values up to this size are decoded; larger ones are shown as their first
/// [`MAX_RAW_BYTES`] bytes.
pub const MAX_DECODED_BYTES: usize = 256 * 1024;
/// At most this many raw bytes of a value are shown (base64) when it cannot be decoded.
pub const MAX_RAW_BYTES: usize = 64 * 1024;
/// A header's text is cut to this many bytes.
pub const MAX_HEADER_TEXT: usize = 4 * 1024;

/// Added to a redriven record: the dead letter it came from (its id).
pub const REDRIVEN_FROM: &str = "choreo_redriven_from";
/// Added to a redriven record: who redrove it.
pub const REDRIVEN_BY: &str = "choreo_redriven_by";

/// `<topic>/<partition>/<offset>` of a record in a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DlqId {
    /// The dead-letter topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

impl DlqId {
    /// Reads `orders.dlq/0/5`. Topic names cannot hold `/`, so the last two parts are the
    /// partition and the offset.
    pub fn parse(text: &str) -> Result<DlqId, String> {
        let mut parts = text.rsplitn(3, '/');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "\"{}\" is not a dead-letter id (<topic>/<partition>/<offset>, e.g. orders.dlq/0/5)",
                shown(text)
            ));
        };
        let partition = partition
            .parse::<i32>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| format!("\"{}\": the partition is not a number", shown(text)))?;
        let offset = offset
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| format!("\"{}\": the offset is not a number", shown(text)))?;
        check_topic(topic)?;
        Ok(DlqId {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }
}

impl std::fmt::Display for DlqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// At most 80 characters of `text`, for an error message.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Only dead-letter topics are read or redriven through this API (it is not a way to read any
/// topic): a name of Kafka's alphabet that ends in `.dlq`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(format!("\"{}\" is not a topic name", shown(topic)));
    }
    if origin_of(topic).is_none() {
        return Err(format!(
            "{topic} is not a dead-letter topic (their names end in {DLQ_SUFFIX})"
        ));
    }
    Ok(())
}

/// The topic a dead-letter topic's records came from (`orders.dlq` → `orders`).
pub fn origin_of(topic: &str) -> Option<&str> {
    topic.strip_suffix(DLQ_SUFFIX).filter(|o| !o.is_empty())
}

/// One dead-letter topic in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    /// The dead-letter topic.
    pub topic: String,
    /// Where its records came from.
    pub origin: String,
    /// Records it holds (sum over its partitions of high − low watermark).
    pub records: u64,
}

/// The answer to `GET /api/dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    /// Every dead-letter topic, by name.
    pub topics: Vec<TopicSummary>,
}

/// Where a record is (or went).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Where a dead letter came from (its `choreo_dlq_topic/partition/offset` headers; `null`
/// when a header is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition there.
    pub partition: Option<i32>,
    /// Its offset there.
    pub offset: Option<i64>,
}

/// One redrive of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Who (the operator token's name).
    pub by: String,
    /// Where the record was republished.
    pub to: Position,
    /// Why, if the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One record of a dead-letter topic. Every text in it came from a record: clients show it as
/// text, never as markup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `<topic>/<partition>/<offset>`.
    pub id: String,
    /// Partition in the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// When it was dead-lettered (the record's timestamp, ms since the epoch).
    pub timestamp_ms: Option<i64>,
    /// The record key (the correlation id), as text.
    pub key: Option<String>,
    /// Why (`choreo_dlq_reason`).
    pub reason: String,
    /// The stable kind (`choreo_dlq_kind`: `unknown_schema_id`, `handler_permanent`, …).
    pub kind: String,
    /// The handler that failed (`saga-coordinator` for the coordinator; empty for a record
    /// that could not be decoded).
    pub handler: String,
    /// The consumer group that dead-lettered it.
    pub group: String,
    /// Where it came from.
    pub origin: Origin,
    /// Attempts made before it was dead-lettered.
    pub attempts: u32,
    /// `ce_type`, or the writer schema's name.
    pub event_type: Option<String>,
    /// `ce_id`.
    pub ce_id: Option<String>,
    /// The value decoded with its writer schema from the registry, when it can be.
    pub payload: Option<serde_json::Value>,
    /// Why the value is not decoded, when it is not.
    pub payload_error: Option<String>,
    /// The value's bytes (at most [`MAX_RAW_BYTES`]), base64, when it is not decoded.
    pub payload_base64: Option<String>,
    /// Every header, as text.
    pub headers: BTreeMap<String, String>,
    /// Each time it was redriven, oldest first.
    pub redriven: Vec<Redrive>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The records, newest first.
    pub records: Vec<DeadLetter>,
    /// Where the next page starts (`before=`), or `null` at the end.
    pub next: Option<String>,
}

/// Which records of a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Records whose reason contains this text (ignoring case).
    #[serde(default)]
    pub reason: Option<String>,
    /// Records of this kind.
    #[serde(default)]
    pub kind: Option<String>,
}

impl Filter {
    /// The filter with blank fields dropped, checked against the limits.
    pub fn checked(self) -> Result<Filter, String> {
        let clean = |name: &str, v: Option<String>| -> Result<Option<String>, String> {
            let Some(v) = v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            if v.len() > MAX_FILTER_TEXT {
                return Err(format!(
                    "{name}: at most {MAX_FILTER_TEXT} bytes, got {}",
                    v.len()
                ));
            }
            Ok(Some(v))
        };
        Ok(Filter {
            reason: clean("reason", self.reason)?.map(|r| r.to_lowercase()),
            kind: clean("kind", self.kind)?,
        })
    }

    /// Whether a record with these headers matches.
    pub fn matches(&self, headers: &BTreeMap<String, String>) -> bool {
        let get = |k: &str| headers.get(k).map_or("", String::as_str);
        self.kind.as_deref().is_none_or(|k| get(dlq::KIND) == k)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| get(dlq::REASON).to_lowercase().contains(r))
    }
}

/// Every header of `msg` as text (not valid UTF-8: replaced; longer than
/// [`MAX_HEADER_TEXT`]: cut). A repeated name keeps its last value.
pub fn headers_of(msg: &OwnedMessage) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(h) = msg.headers() {
        for x in h.readable() {
            let v = x.value.map(String::from_utf8_lossy).unwrap_or_default();
            out.insert(x.key.to_owned(), cut(&v, MAX_HEADER_TEXT));
        }
    }
    out
}

/// `text` cut to at most `max` bytes on a character boundary (ending with `…` when cut).
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Where a listing stands: per partition, the offset it reads before next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(pub BTreeMap<i32, i64>);

impl Cursor {
    /// Reads `0:15,1:7` (what [`Cursor::encode`] writes).
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let bad = || {
            format!(
                "before: \"{}\" is not a cursor (pass the \"next\" of the previous page)",
                shown(text)
            )
        };
        let mut out = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (p, o) = part.split_once(':').ok_or_else(bad)?;
            let p = p.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(bad)?;
            let o = o.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(bad)?;
            if out.insert(p, o).is_some() {
                return Err(bad());
            }
        }
        if out.is_empty() {
            return Err(bad());
        }
        Ok(Cursor(out))
    }

    /// `0:15,1:7`.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What a redrive picks: ids, or every record a filter matches that was not redriven yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These records (a record redriven before is redriven again, and the answer shows it).
    Ids(BTreeSet<DlqId>),
    /// Every record of the topic that matches and was never redriven.
    Filter(Filter),
}

/// A record a redrive leaves out, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The dead letter's id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// The answer to a redrive's dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePreview {
    /// How many records the redrive would republish.
    pub matched: usize,
    /// Which (oldest first; at most [`MAX_REDRIVE`], the ones a run would take).
    pub ids: Vec<String>,
    /// Ids asked for that a run would leave out, with why.
    pub refused: Vec<Refusal>,
    /// Of the matched ids, those redriven before.
    pub already_redriven: Vec<String>,
}

/// One record republished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redriven {
    /// The dead letter's id.
    pub id: String,
    /// Where it was republished.
    pub to: Position,
    /// Whether it had been redriven before.
    pub again: bool,
}

/// The answer to a redrive that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveDone {
    /// What was republished, each acknowledged by the broker.
    pub redriven: Vec<Redriven>,
    /// What was left out, with why.
    pub refused: Vec<Refusal>,
    /// Records the filter still matches beyond this run's [`MAX_REDRIVE`] (run it again).
    pub remaining: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_what_they_write_and_name_only_dead_letter_topics() {
        let id = DlqId::parse("orders.dlq/2/17").expect("an id");
        assert_eq!(
            (id.topic.as_str(), id.partition, id.offset),
            ("orders.dlq", 2, 17)
        );
        assert_eq!(id.to_string(), "orders.dlq/2/17");
        for bad in [
            "orders.dlq/2",
            "orders.dlq/x/1",
            "orders.dlq/1/-3",
            "orders/0/1",
            ".dlq/0/1",
            "a b.dlq/0/1",
            "",
        ] {
            assert!(DlqId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(origin_of("payments.v2.dlq"), Some("payments.v2"));
        assert!(check_topic("payments.dlq").is_ok());
        assert!(
            check_topic("payments")
                .expect_err("not a dlq")
                .contains("not a dead-letter topic")
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_write() {
        let c = Cursor::parse("0:15,1:7").expect("a cursor");
        assert_eq!(c.0, BTreeMap::from([(0, 15), (1, 7)]));
        assert_eq!(c.encode(), "0:15,1:7");
        for bad in ["", "yesterday", "0:1,0:2", "0:-1", "-1:4", "0:"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_kind_exactly_and_reason_by_text_ignoring_case() {
        let headers = BTreeMap::from([
            (dlq::KIND.to_owned(), "handler_permanent".to_owned()),
            (dlq::REASON.to_owned(), "Card Processor said no".to_owned()),
        ]);
        let f = |reason: Option<&str>, kind: Option<&str>| {
            Filter {
                reason: reason.map(str::to_owned),
                kind: kind.map(str::to_owned),
            }
            .checked()
            .expect("a filter")
        };
        assert!(f(None, None).matches(&headers));
        assert!(f(Some("processor SAID"), None).matches(&headers));
        assert!(f(None, Some("handler_permanent")).matches(&headers));
        assert!(!f(None, Some("handler")).matches(&headers));
        assert!(!f(Some("timeout"), Some("handler_permanent")).matches(&headers));
        assert!(
            f(Some("  "), Some("")).matches(&headers),
            "blank is no filter"
        );
        assert!(
            Filter {
                reason: Some("x".repeat(MAX_FILTER_TEXT + 1)),
                kind: None
            }
            .checked()
            .is_err()
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        let cut_text = cut(&"é".repeat(10), 9);
        assert!(cut_text.len() <= 9 && cut_text.ends_with('…'), "{cut_text}");
    }
}
