//! A consumed record's Kafka headers and key, read into choreo's envelope:
//! `Envelope::read` (records being handled), `Envelope::from_headers` (lossy, for display) and
//! `is_transaction_sweep`.
//!
//! Input: byte 0 bit 0 set means a record key follows as `[len: u8][bytes]` (a key that is not
//! UTF-8 is no key: the subscriber dead-letters such a record before reading its headers); then
//! headers until the input ends, each `[name len: u8][name][value len: u8][value]`, value length
//! 255 meaning a null value. Names and values are any bytes, as a producer in any language can
//! write them: the headers are built with librdkafka's own `rd_kafka_header_add`, as its
//! consumer does for a record off the wire (a name is then read up to its first NUL byte).
//!
//! What must hold, besides not panicking: each envelope field is the last header of its name
//! (`ce_correlationid`, else `ce_subject`, else the key, for the correlation id); `read` refuses
//! exactly a CloudEvents header it uses whose value is not UTF-8, naming the first such in the
//! order it reads them, and otherwise equals `from_headers`; headers whose name is not UTF-8
//! (no CloudEvents header's) are not read; the envelope survives `to_headers` and `read`.

use choreo_bus::wire::envelope::{header, is_transaction_sweep};
use choreo_bus::{DecodeError, Envelope, TraceParent};
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};

/// One header as the input gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    /// The name's bytes.
    pub name: Vec<u8>,
    /// The value's bytes, or a null value.
    pub value: Option<Vec<u8>>,
}

/// Parses the input format (see the module documentation).
pub fn parse(data: &[u8]) -> (Option<Vec<u8>>, Vec<RawHeader>) {
    let mut rest = data;
    let mut take = |n: usize| -> Vec<u8> {
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head.to_vec()
    };
    let flags = take(1).first().copied().unwrap_or(0);
    let key = if flags & 1 == 1 {
        let n = take(1).first().copied().unwrap_or(0);
        Some(take(usize::from(n)))
    } else {
        None
    };
    let mut headers = Vec::new();
    loop {
        let Some(&n) = take(1).first() else { break };
        let name = take(usize::from(n));
        let value = match take(1).first() {
            None | Some(255) => None,
            Some(&n) => Some(take(usize::from(n))),
        };
        headers.push(RawHeader { name, value });
    }
    (key, headers)
}

/// Writes the input format: the inverse of [`parse`] (for seeds).
pub fn unparse(key: Option<&[u8]>, headers: &[RawHeader]) -> Vec<u8> {
    let len = |b: &[u8]| u8::try_from(b.len()).expect("at most 254 bytes");
    let mut out = vec![u8::from(key.is_some())];
    if let Some(k) = key {
        out.push(len(k));
        out.extend_from_slice(k);
    }
    for h in headers {
        out.push(len(&h.name));
        out.extend_from_slice(&h.name);
        match &h.value {
            None => out.push(255),
            Some(v) => {
                assert!(v.len() < 255, "a value of at most 254 bytes");
                out.push(len(v));
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// Headers as librdkafka holds a consumed record's: each name and value copied as bytes.
pub fn kafka_headers(headers: &[RawHeader]) -> OwnedHeaders {
    let owned = OwnedHeaders::new_with_capacity(headers.len());
    let native = std::ptr::from_ref::<BorrowedHeaders>(owned.as_borrowed())
        .cast_mut()
        .cast::<rdkafka::bindings::rd_kafka_headers_t>();
    for h in headers {
        let (value, value_len) = match &h.value {
            Some(v) => (v.as_ptr().cast::<std::ffi::c_void>(), v.len()),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `native` is the live headers list `owned` owns (a `BorrowedHeaders` is that
        // pointer); the name and value are read for their given lengths and copied.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                native,
                h.name.as_ptr().cast(),
                isize::try_from(h.name.len()).expect("short"),
                value,
                isize::try_from(value_len).expect("short"),
            )
        };
        assert_eq!(
            err,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
    }
    owned
}

/// A header's name as librdkafka hands it back (up to the first NUL), when it is UTF-8.
fn name_of(h: &RawHeader) -> Option<&str> {
    let end = h.name.iter().position(|b| *b == 0).unwrap_or(h.name.len());
    std::str::from_utf8(&h.name[..end]).ok()
}

/// The value of the last readable header named `name` (`None`: none, or a null value).
fn last<'h>(headers: &'h [RawHeader], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .filter(|h| name_of(h) == Some(name))
        .last()
        .and_then(|h| h.value.as_deref())
}

/// The envelope the headers must give, or the header `read` must refuse.
fn expected(headers: &[RawHeader], key: Option<&str>) -> Result<Envelope, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        last(headers, name)
            .map(|v| {
                std::str::from_utf8(v)
                    .map(str::to_owned)
                    .map_err(|_| name.to_owned())
            })
            .transpose()
    };
    let correlation = match text(header::CORRELATION_ID)? {
        Some(c) => Some(c),
        None => text(header::SUBJECT)?,
    };
    Ok(Envelope {
        id: text(header::ID)?.unwrap_or_default(),
        source: text(header::SOURCE)?.unwrap_or_default(),
        event_type: text(header::TYPE)?.unwrap_or_default(),
        time: text(header::TIME)?.unwrap_or_default(),
        correlation_id: correlation
            .or_else(|| key.map(str::to_owned))
            .unwrap_or_default(),
        causation_id: text(header::CAUSATION_ID)?,
        traceparent: last(headers, header::TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(TraceParent::parse),
    })
}

/// Lets rdkafka's panic on a header name that is not UTF-8 unwind, as it does in production,
/// to where `choreo_bus::wire::headers` catches it; every other panic still aborts the process
/// (libFuzzer's hook, installed before this), so one that escapes is a crash. Called from the
/// target's initialisation.
pub fn init() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let header_name = info.location().is_some_and(|l| {
            l.file().contains("/rdkafka-") && l.file().ends_with("src/message.rs")
        });
        if !header_name {
            abort(info);
        }
    }));
}

/// The target.
pub fn run(data: &[u8]) {
    let (key, raw) = parse(data);
    let key = key.as_deref().and_then(|k| std::str::from_utf8(k).ok());
    let headers = kafka_headers(&raw);
    let h = Some(&headers);

    let sweep = raw
        .iter()
        .any(|x| name_of(x) == Some(header::TRANSACTION_SWEEP));
    assert_eq!(is_transaction_sweep(h), sweep, "transaction sweep");

    let lossy = Envelope::from_headers(h, key);
    let read = Envelope::read(h, key);
    match expected(&raw, key) {
        Ok(want) => {
            assert_eq!(read, Ok(want.clone()), "read");
            assert_eq!(lossy, want, "from_headers of UTF-8 headers");
            let again = Envelope::read(Some(&want.to_headers()), None);
            assert_eq!(again, Ok(want), "to_headers then read");
        }
        Err(name) => {
            assert_eq!(read, Err(DecodeError::InvalidHeader(name)), "read");
        }
    }
    assert_eq!(
        Envelope::read(None::<&OwnedHeaders>, key),
        Ok(Envelope {
            correlation_id: key.unwrap_or_default().to_owned(),
            ..Envelope::from_headers(None::<&OwnedHeaders>, None)
        }),
        "no headers"
    );
}
