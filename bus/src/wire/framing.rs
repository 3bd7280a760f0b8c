//! The Confluent wire framing of a record value, without I/O:
//!
//! ```text
//! byte 0      magic byte, always 0
//! bytes 1..5  schema id, 4 bytes big-endian (the registry's global id)
//! bytes 5..   Avro binary body, written with that schema
//! ```
//!
//! Subjects follow TopicRecordNameStrategy (`<topic>-<full name>`).

use crate::error::DecodeError;

/// The magic byte of the Confluent wire format.
pub const MAGIC_BYTE: u8 = 0;

/// Prefixes an Avro body with the Confluent framing.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed value into its schema id and Avro body.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match value.first() {
        None => Err(DecodeError::Truncated("empty value".into())),
        Some(&b) if b != MAGIC_BYTE => Err(DecodeError::WrongMagicByte(b)),
        Some(_) if value.len() < 5 => Err(DecodeError::Truncated(format!(
            "{} bytes, shorter than the 5-byte framing",
            value.len()
        ))),
        Some(_) => {
            let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
            Ok((id, &value[5..]))
        }
    }
}

/// Subject of an event type on a topic under TopicRecordNameStrategy.
pub fn subject(topic: &str, event_type: &str) -> String {
    format!("{topic}-{event_type}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_unframe_gives_back_id_and_body() {
        let framed = frame(0x0102_0304, b"body");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(unframe(&framed), Ok((0x0102_0304, &b"body"[..])));
    }

    #[test]
    fn each_bad_framing_is_named() {
        assert_eq!(
            unframe(&[]),
            Err(DecodeError::Truncated("empty value".into()))
        );
        assert_eq!(
            unframe(&[7, 0, 0, 0, 1]),
            Err(DecodeError::WrongMagicByte(7))
        );
        assert!(matches!(
            unframe(&[0, 0, 1]),
            Err(DecodeError::Truncated(_))
        ));
        assert_eq!(unframe(&[0, 0, 0, 0, 9]), Ok((9, &[][..])));
    }

    #[test]
    fn subjects_follow_topic_record_name_strategy() {
        assert_eq!(
            subject("orders", "choreo.orders.OrderPlaced"),
            "orders-choreo.orders.OrderPlaced"
        );
    }
}
