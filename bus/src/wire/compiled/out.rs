//! The encoder's output: zig-zag varints, length-prefixed bytes, and its error.

use serde::ser;

/// Why a value could not be encoded with the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, EncodeError> {
    Err(EncodeError(msg.into()))
}

/// Appends the zig-zag varint of `v`.
#[inline]
pub(crate) fn long(out: &mut Vec<u8>, v: i64) {
    #[allow(clippy::cast_sign_loss)]
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        #[allow(clippy::cast_possible_truncation)]
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(z as u8);
}

#[inline]
pub(crate) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, i64::try_from(b.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(b);
}

pub(crate) fn count(out: &mut Vec<u8>, n: usize) {
    long(out, i64::try_from(n).unwrap_or(i64::MAX));
}
