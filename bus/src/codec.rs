//! The value codec: Avro binary in the Confluent Schema Registry framing.
//!
//! ```text
//! byte 0      magic byte, always 0
//! bytes 1..5  schema id, 4 bytes big-endian (the registry's global id)
//! bytes 5..   Avro binary body, written with that schema
//! ```
//!
//! Encoding registers the writer schema once under its TopicRecordNameStrategy subject
//! (`<topic>-<full name>`), so several event types share a topic. Decoding fetches the writer
//! schema by id once, then resolves the body to the reader's schema (so a v2 reader reads v1 data
//! and the reverse, as the subject's compatibility rule allows).

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use choreo_schemas::{CachedRegistry, Event, RegistryError, SchemaRegistry};

use crate::error::{BusError, DecodeError};

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

/// Encodes and decodes event values against a schema registry.
#[derive(Debug, Clone)]
pub struct Codec {
    registry: CachedRegistry,
}

/// A value's writer schema, looked up from its framing.
#[derive(Debug, Clone)]
pub struct WriterSchema {
    /// The registry id.
    pub id: u32,
    /// The parsed schema.
    pub schema: Arc<Schema>,
}

impl WriterSchema {
    /// The Avro full name of the writer schema (the event type).
    pub fn full_name(&self) -> Option<String> {
        self.schema.name().map(|n| n.fullname(None))
    }
}

impl Codec {
    /// A codec over `registry` (wrapped in a cache).
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Self {
        Self {
            registry: CachedRegistry::new(registry),
        }
    }

    /// The registry cache.
    pub fn registry(&self) -> &CachedRegistry {
        &self.registry
    }

    /// Encodes `event` for `topic`: registers its schema on first use, then frames the body.
    pub async fn encode<T: Event>(&self, topic: &str, event: &T) -> Result<Vec<u8>, BusError> {
        let encode_err = |reason: String| BusError::Encode {
            event_type: T::TYPE.to_owned(),
            topic: topic.to_owned(),
            reason,
        };
        let id = self
            .registry
            .id_for(&subject(topic, T::TYPE), T::schema_text())
            .await
            .map_err(|e| encode_err(e.to_string()))?;
        let body = encode_body(T::schema(), event).map_err(encode_err)?;
        Ok(frame(id, &body))
    }

    /// Registers `schema_text` for `event_type` on `topic` and encodes a generic value with it
    /// (for the coordinator, which emits events it knows only by schema).
    pub async fn encode_value(
        &self,
        topic: &str,
        event_type: &str,
        schema_text: &str,
        schema: &Schema,
        value: Value,
    ) -> Result<Vec<u8>, BusError> {
        let encode_err = |reason: String| BusError::Encode {
            event_type: event_type.to_owned(),
            topic: topic.to_owned(),
            reason,
        };
        let id = self
            .registry
            .id_for(&subject(topic, event_type), schema_text)
            .await
            .map_err(|e| encode_err(e.to_string()))?;
        let body = GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| encode_err(e.to_string()))?;
        Ok(frame(id, &body))
    }

    /// Looks up the writer schema of a framed value.
    pub async fn writer_schema(&self, value: &[u8]) -> Result<WriterSchema, WriterSchemaError> {
        let (id, _) = unframe(value).map_err(WriterSchemaError::Poison)?;
        match self.registry.schema(id).await {
            Ok(schema) => Ok(WriterSchema { id, schema }),
            Err(RegistryError::UnknownId(_)) => {
                Err(WriterSchemaError::Poison(DecodeError::UnknownSchemaId(id)))
            }
            Err(e) => Err(WriterSchemaError::Unavailable(e)),
        }
    }

    /// Decodes a framed value into `T`, resolving the writer schema to `T`'s.
    pub async fn decode<T: Event>(&self, value: &[u8]) -> Result<T, DecodeError> {
        let writer = self.writer_schema(value).await.map_err(|e| match e {
            WriterSchemaError::Poison(d) => d,
            WriterSchemaError::Unavailable(r) => {
                DecodeError::Malformed(format!("registry unavailable: {r}"))
            }
        })?;
        let (_, body) = unframe(value)?;
        decode_body::<T>(&writer.schema, body)
    }
}

/// Why a value's writer schema could not be had.
#[derive(Debug)]
pub enum WriterSchemaError {
    /// The value itself is bad (framing, unknown schema id): dead-letter it.
    Poison(DecodeError),
    /// The registry could not be asked: try again later.
    Unavailable(RegistryError),
}

/// Writes `event` as an Avro body with `schema`.
pub fn encode_body<T: serde::Serialize>(schema: &Schema, event: &T) -> Result<Vec<u8>, String> {
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_ser_to_vec(event))
        .map_err(|e| e.to_string())
}

/// Reads an Avro body written with `writer` into a generic value, resolved to `reader` when
/// one is given (pass `None` when the reader's schema is the writer's: resolution is then the
/// costliest step of decoding and changes nothing).
pub fn decode_value(
    writer: &Schema,
    reader: Option<&Schema>,
    body: &[u8],
) -> Result<Value, DecodeError> {
    let mut input = body;
    let value = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .and_then(|r| r.read_value(&mut input))
        .map_err(|e| {
            let msg = e.to_string();
            if msg.contains("failed to fill whole buffer") || msg.contains("UnexpectedEof") {
                DecodeError::Truncated(format!("the Avro body ended early: {msg}"))
            } else {
                DecodeError::Malformed(msg)
            }
        })?;
    if !input.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes left over after the Avro body",
            input.len()
        )));
    }
    Ok(value)
}

/// Whether two schemas describe the same data (same Parsing Canonical Form).
pub fn same_schema(a: &Schema, b: &Schema) -> bool {
    std::ptr::eq(a, b) || a.canonical_form() == b.canonical_form()
}

/// Reads an Avro body written with `writer` into `T`, resolving it to `T::schema()` unless
/// `writer_is_reader` says they are the same (see [`same_schema`]; callers cache it per schema
/// id).
pub fn decode_body_with<T: Event>(
    writer: &Schema,
    writer_is_reader: bool,
    body: &[u8],
) -> Result<T, DecodeError> {
    let reader = (!writer_is_reader).then(T::schema);
    let value = decode_value(writer, reader, body)?;
    apache_avro::from_value(&value).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Reads an Avro body written with `writer` into `T` (resolved to `T::schema()` when it
/// differs).
pub fn decode_body<T: Event>(writer: &Schema, body: &[u8]) -> Result<T, DecodeError> {
    decode_body_with::<T>(writer, same_schema(writer, T::schema()), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_schemas::MemoryRegistry;
    use choreo_schemas::event::{Money, OrderPlaced, OrderPlacedV1};

    fn v1() -> OrderPlacedV1 {
        OrderPlacedV1 {
            order_id: "o-1".into(),
            customer_id: "c".into(),
            items: vec![],
            total: Money {
                amount_minor: 100,
                currency: "EUR".into(),
            },
            shipping_address: "a".into(),
        }
    }

    #[tokio::test]
    async fn framing_and_resolution() {
        let codec = Codec::new(Arc::new(MemoryRegistry::new()));
        let bytes = codec.encode("orders", &v1()).await.expect("encode");
        assert_eq!(bytes[0], 0);
        let (id, body) = unframe(&bytes).expect("frame");
        assert_eq!(id, 1);
        assert!(!body.is_empty());
        let v2: OrderPlaced = codec.decode(&bytes).await.expect("v1 read as v2");
        assert_eq!(v2.channel, "web");
        let back: OrderPlacedV1 = codec.decode(&bytes).await.expect("v1 read as v1");
        assert_eq!(back, v1());
    }

    #[tokio::test]
    async fn each_undecodable_kind_is_named() {
        let codec = Codec::new(Arc::new(MemoryRegistry::new()));
        let good = codec.encode("orders", &v1()).await.expect("encode");
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
        let unknown = frame(4242, &good[5..]);
        assert_eq!(
            codec.decode::<OrderPlaced>(&unknown).await,
            Err(DecodeError::UnknownSchemaId(4242))
        );
        let cut = &good[..good.len() - 3];
        assert!(matches!(
            codec.decode::<OrderPlaced>(cut).await,
            Err(DecodeError::Truncated(_))
        ));
    }
}
