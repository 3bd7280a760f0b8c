//! Avro binary at its lowest level, shared by the bus's compiled codec and the specific records
//! of [`specific`]: the checked reads of a body ([`Input`]), the writes of its primitives, and
//! a schema's types seen through its named types ([`names`]).

mod input;
pub mod names;
pub mod specific;

pub use input::{Input, MAX_AVRO_ALLOCATION, MAX_DEPTH, malformed};
pub use specific::{Coder, Plan, Specific, SpecificWriter};

/// Why an Avro body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// The body ended inside a value.
    #[error("truncated: {0}")]
    Truncated(String),
    /// The body does not hold a value of its schema.
    #[error("malformed Avro body: {0}")]
    Malformed(String),
}

/// Appends the zig-zag varint of `v` (an Avro `int` or `long`).
#[inline]
pub fn write_long(out: &mut Vec<u8>, v: i64) {
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

/// Appends Avro `bytes` (or a `string`'s UTF-8): the length, then the bytes.
#[inline]
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_count(out, b.len());
    out.extend_from_slice(b);
}

/// Appends a length or a block's item count.
#[inline]
pub fn write_count(out: &mut Vec<u8>, n: usize) {
    write_long(out, i64::try_from(n).unwrap_or(i64::MAX));
}
