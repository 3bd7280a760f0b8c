//! The record envelope: the CloudEvents Kafka binary binding headers plus the correlation
//! extension and W3C `traceparent`. This is the wire contract every language speaks.
//!
//! | header | meaning |
//! |---|---|
//! | `ce_specversion` | `1.0` |
//! | `ce_id` | the event id (deduplication key) |
//! | `ce_source` | the emitting service, a URI reference |
//! | `ce_type` | the Avro full name of the event |
//! | `ce_time` | RFC 3339 time of the event |
//! | `ce_subject` | the correlation id (also the record key) |
//! | `ce_correlationid` | the correlation id (CloudEvents correlation extension) |
//! | `ce_causationid` | the id of the event that caused this one, if any |
//! | `content-type` | `application/avro` |
//! | `traceparent` | W3C trace context |

use rdkafka::message::{Header, OwnedHeaders};

use super::headers::Readable;
use super::trace::TraceParent;
use crate::error::DecodeError;

/// Header names of the envelope.
pub mod header {
    /// CloudEvents spec version.
    pub const SPECVERSION: &str = "ce_specversion";
    /// Event id.
    pub const ID: &str = "ce_id";
    /// Event source.
    pub const SOURCE: &str = "ce_source";
    /// Event type.
    pub const TYPE: &str = "ce_type";
    /// Event time.
    pub const TIME: &str = "ce_time";
    /// Subject (the correlation id).
    pub const SUBJECT: &str = "ce_subject";
    /// Correlation id (extension).
    pub const CORRELATION_ID: &str = "ce_correlationid";
    /// Causation id (extension).
    pub const CAUSATION_ID: &str = "ce_causationid";
    /// Content type of the value.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Marks a record the saga coordinator writes only to abort it (closing, with its abort
    /// marker, whatever transaction the broker left open for its producer). A read_committed
    /// reader never sees one on Apache Kafka; choreo's readers skip one wherever a broker
    /// shows it (librdkafka's mock cluster does not filter aborted records).
    pub const TRANSACTION_SWEEP: &str = "choreo-transaction-sweep";
}

/// Whether a record is a transaction-sweep record ([`header::TRANSACTION_SWEEP`]): nothing to
/// handle, skipped by every choreo reader.
pub fn is_transaction_sweep<H: Readable>(headers: Option<&H>) -> bool {
    headers.is_some_and(|h| h.has(header::TRANSACTION_SWEEP))
}

/// [`is_transaction_sweep`] of headers already read with [`Readable::readable`] (a reader
/// that goes on to [`Envelope::read_readable`] reads them once).
pub fn is_transaction_sweep_readable(headers: &[Header<'_, &[u8]>]) -> bool {
    headers.iter().any(|h| h.key == header::TRANSACTION_SWEEP)
}

/// The content type of a choreo record value.
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

/// The envelope of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `ce_id`.
    pub id: String,
    /// `ce_source`.
    pub source: String,
    /// `ce_type`.
    pub event_type: String,
    /// `ce_time`, RFC 3339.
    pub time: String,
    /// `ce_correlationid` / `ce_subject`.
    pub correlation_id: String,
    /// `ce_causationid`.
    pub causation_id: Option<String>,
    /// `traceparent`.
    pub traceparent: Option<TraceParent>,
}

impl Envelope {
    /// A new event's envelope, timed now: its trace continues `parent` as a child span (a
    /// new trace when there is none).
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
        correlation_id: impl Into<String>,
        causation_id: Option<String>,
        parent: Option<TraceParent>,
    ) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            event_type: event_type.into(),
            time: now_rfc3339(),
            correlation_id: correlation_id.into(),
            causation_id: causation_id.filter(|s| !s.is_empty()),
            traceparent: Some(parent.map_or_else(TraceParent::new_root, |t| t.child())),
        }
    }

    /// The envelope of an event emitted because of `cause` (none for an event that starts a
    /// chain, such as one fired by a deadline): causation id = the cause's id, the trace
    /// continued from the cause's.
    pub fn caused_by(
        cause: Option<&Envelope>,
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
        correlation_id: impl Into<String>,
    ) -> Self {
        Self::new(
            id,
            source,
            event_type,
            correlation_id,
            cause.map(|c| c.id.clone()),
            cause.and_then(|c| c.traceparent),
        )
    }

    /// Kafka headers for this envelope.
    pub fn to_headers(&self) -> OwnedHeaders {
        self.to_headers_traced(self.traceparent)
    }

    /// Kafka headers for this envelope, with `traceparent` in place of the envelope's own (the
    /// id of the span that writes the record; see [`crate::wire::trace::publishing`]).
    pub fn to_headers_traced(&self, traceparent: Option<TraceParent>) -> OwnedHeaders {
        let tp = traceparent.map(|t| t.to_string());
        let mut h = OwnedHeaders::new_with_capacity(10)
            .insert(Header {
                key: header::SPECVERSION,
                value: Some("1.0"),
            })
            .insert(Header {
                key: header::ID,
                value: Some(self.id.as_str()),
            })
            .insert(Header {
                key: header::SOURCE,
                value: Some(self.source.as_str()),
            })
            .insert(Header {
                key: header::TYPE,
                value: Some(self.event_type.as_str()),
            })
            .insert(Header {
                key: header::TIME,
                value: Some(self.time.as_str()),
            })
            .insert(Header {
                key: header::SUBJECT,
                value: Some(self.correlation_id.as_str()),
            })
            .insert(Header {
                key: header::CORRELATION_ID,
                value: Some(self.correlation_id.as_str()),
            })
            .insert(Header {
                key: header::CONTENT_TYPE,
                value: Some(AVRO_CONTENT_TYPE),
            });
        if let Some(c) = &self.causation_id {
            h = h.insert(Header {
                key: header::CAUSATION_ID,
                value: Some(c.as_str()),
            });
        }
        if let Some(tp) = &tp {
            h = h.insert(Header {
                key: header::TRACEPARENT,
                value: Some(tp.as_str()),
            });
        }
        h
    }

    /// Reads the envelope of a consumed record. Missing headers become empty strings (a record
    /// from a producer that sets no CloudEvents headers is still handled; its type comes from
    /// the writer schema); `key` fills the correlation id when the headers do not carry one.
    /// A header that is not UTF-8 is read lossily: for records being handled, use
    /// [`Envelope::read`], which refuses it.
    pub fn from_headers<H: Readable>(headers: Option<&H>, key: Option<&str>) -> Self {
        let lossy =
            |v: &[u8]| Ok::<_, std::convert::Infallible>(String::from_utf8_lossy(v).into_owned());
        let readable = headers.map(Readable::readable).unwrap_or_default();
        match Self::build(&readable, key, lossy) {
            Ok(e) => e,
            Err((_, never)) => match never {},
        }
    }

    /// Reads the envelope of a record being handled, as [`Envelope::from_headers`] does, but
    /// refuses a CloudEvents header that is not UTF-8 text ([`DecodeError::InvalidHeader`]):
    /// converted lossily, two distinct event ids could become one, and the second be dropped as
    /// a duplicate.
    pub fn read<H: Readable>(headers: Option<&H>, key: Option<&str>) -> Result<Self, DecodeError> {
        Self::read_readable(&headers.map(Readable::readable).unwrap_or_default(), key)
    }

    /// [`Envelope::read`] of headers already read with [`Readable::readable`]: a reader that
    /// also looks for other headers (the transaction sweep) reads each from librdkafka once.
    pub fn read_readable(
        headers: &[Header<'_, &[u8]>],
        key: Option<&str>,
    ) -> Result<Self, DecodeError> {
        Self::build(headers, key, |v| {
            std::str::from_utf8(v).map(str::to_owned).map_err(|_| ())
        })
        .map_err(|(name, ())| DecodeError::InvalidHeader(name.to_owned()))
    }

    /// The envelope, each header read with `text`; an error names the header.
    fn build<'n, E>(
        readable: &[Header<'_, &[u8]>],
        key: Option<&str>,
        text: impl Fn(&[u8]) -> Result<String, E>,
    ) -> Result<Self, (&'n str, E)> {
        let get = |name: &'n str| -> Result<Option<String>, (&'n str, E)> {
            let value = readable
                .iter()
                .rev()
                .find(|x| x.key == name)
                .and_then(|x| x.value);
            value.map(|v| text(v).map_err(|e| (name, e))).transpose()
        };
        let correlation_id = match get(header::CORRELATION_ID)? {
            Some(c) => Some(c),
            None => get(header::SUBJECT)?,
        };
        Ok(Envelope {
            id: get(header::ID)?.unwrap_or_default(),
            source: get(header::SOURCE)?.unwrap_or_default(),
            event_type: get(header::TYPE)?.unwrap_or_default(),
            time: get(header::TIME)?.unwrap_or_default(),
            correlation_id: correlation_id
                .or_else(|| key.map(str::to_owned))
                .unwrap_or_default(),
            causation_id: get(header::CAUSATION_ID)?,
            // An unreadable trace context starts a new trace (W3C); it does not refuse the record.
            traceparent: get(header::TRACEPARENT)
                .ok()
                .flatten()
                .and_then(|t| TraceParent::parse(&t)),
        })
    }
}

/// The current time as RFC 3339 with millisecond precision, UTC.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_from_millis(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch as UTC calendar fields: year, month, day, hour, minute,
/// second, millisecond.
fn civil_from_millis(ms: i64) -> [i64; 7] {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    [y, m, d, sod / 3600, (sod % 3600) / 60, sod % 60, millis]
}

/// Formats milliseconds since the Unix epoch as RFC 3339 (UTC).
pub fn rfc3339_from_millis(ms: i64) -> String {
    let [y, m, d, hh, mm, ss, millis] = civil_from_millis(ms);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z");
    }
    // Written digit by digit: this runs for every published event, and `format!` took a tenth
    // of the publishing path's time.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for (at, value, digits) in [
        (0, y, 4),
        (5, m, 2),
        (8, d, 2),
        (11, hh, 2),
        (14, mm, 2),
        (17, ss, 2),
        (20, millis, 3),
    ] {
        let mut v = value;
        for i in (at..at + digits).rev() {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            {
                out[i] = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    }
    // Digits and separators only: always UTF-8.
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers as _;

    #[test]
    fn headers_round_trip() {
        let e = Envelope {
            id: "id-1".into(),
            source: "/orders".into(),
            event_type: "io.choreo.orders.OrderPlaced".into(),
            time: now_rfc3339(),
            correlation_id: "order-1".into(),
            causation_id: Some("cause".into()),
            traceparent: Some(TraceParent::new_root()),
        };
        let h = e.to_headers();
        assert_eq!(Envelope::from_headers(Some(&h), None), e);
        let specversion = h
            .iter()
            .find(|x| x.key == header::SPECVERSION)
            .and_then(|x| x.value);
        assert_eq!(specversion, Some(&b"1.0"[..]));
    }

    #[test]
    fn an_effect_carries_its_cause_id_and_continues_its_trace() {
        let cause = Envelope::caused_by(None, "cause-1", "/orders", "T", "order-1");
        assert_eq!(cause.causation_id, None);
        let root = cause.traceparent.expect("a new trace");
        let effect = Envelope::caused_by(Some(&cause), "effect-1", "/sagas", "U", "order-1");
        assert_eq!(effect.causation_id.as_deref(), Some("cause-1"));
        let child = effect.traceparent.expect("the cause's trace");
        assert_eq!(child.trace_id_hex(), root.trace_id_hex());
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn rfc3339_is_what_format_writes_for_every_kind_of_instant() {
        let formatted = |ms: i64| {
            let [y, m, d, hh, mm, ss, millis] = civil_from_millis(ms);
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
        };
        // Every hour of four years around a leap day, and odd milliseconds.
        let start = 946_684_800_000; // 2000-01-01
        for h in 0..(4 * 366 * 24) {
            let ms = start + h * 3_600_000 + (h * 7_919) % 3_600_000;
            assert_eq!(rfc3339_from_millis(ms), formatted(ms), "{ms}");
        }
        assert_eq!(rfc3339_from_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_from_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_from_millis(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339_from_millis(1_795_219_200_000),
            "2026-11-21T00:00:00.000Z"
        );
    }
}
