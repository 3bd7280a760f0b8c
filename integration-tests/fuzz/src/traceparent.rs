//! A `traceparent` value (W3C Trace Context, version 00) as a record header or an HTTP header
//! carries it: `TraceParent::parse`.
//!
//! Input: the value's bytes (inputs that are not UTF-8 are skipped: both callers hand over
//! text).
//!
//! What must hold: `parse` accepts exactly the values of the W3C version-00 grammar
//! (`00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>`, neither id all zeros), around
//! optional surrounding whitespace, and what it accepts prints back as the value it read.

use choreo_bus::TraceParent;

/// Whether `s` is `n` lowercase hexadecimal digits.
fn lower_hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The W3C grammar of a version-00 `traceparent`, written independently of choreo's parser.
pub fn is_valid(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    match fields.as_slice() {
        ["00", trace, parent, flags] => {
            lower_hex(trace, 32)
                && lower_hex(parent, 16)
                && lower_hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0')
        }
        _ => false,
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = TraceParent::parse(s);
    let value = s.trim();
    assert_eq!(
        parsed.is_some(),
        is_valid(value),
        "{s:?} parsed as {parsed:?}"
    );
    if let Some(t) = parsed {
        assert_eq!(t.to_string(), value, "printed back");
        assert_eq!(TraceParent::parse(&t.to_string()), Some(t));
    }
}
