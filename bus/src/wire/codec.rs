//! The codec: Avro bodies in the Confluent framing ([`super::framing`]) against a schema
//! registry, with one cache of writer schemas (and of whether each is its reader's) per codec.
//!
//! Encoding registers the writer schema once under its TopicRecordNameStrategy subject
//! (`<topic>-<full name>`), so several event types share a topic. Decoding fetches the writer
//! schema by id once, then resolves the body to the reader's schema (so a v2 reader reads v1 data
//! and the reverse, as the subject's compatibility rule allows).
//!
//! Two entry points each way: typed ([`Codec::encode`], [`Codec::decode`]) for Rust services,
//! and JSON against the event catalog ([`Codec::encode_json`], [`Codec::decode_json`]) for the
//! saga coordinator, which knows events only by their schemas.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use choreo_schemas::{CachedRegistry, Catalog, Event, RegistryError, SchemaRegistry};
use serde::Serialize;

use super::compiled::{EncodeError, Encoder};
use super::framing::{frame, subject, unframe};
pub use super::plan::same_schema;
use super::plan::{Plans, read_whole};
use crate::error::{BusError, DecodeError};

/// Encodes and decodes event values against a schema registry.
#[derive(Debug, Clone)]
pub struct Codec {
    registry: CachedRegistry,
    /// Per (writer schema id, reader): the reader planned once ([`super::plan`]). A codec
    /// decodes JSON against one catalog.
    plans: Arc<Plans>,
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

/// A framed value read once: its writer schema and its Avro body.
#[derive(Debug, Clone)]
pub struct Framed<'a> {
    /// The writer schema named by the framing.
    pub writer: WriterSchema,
    /// The Avro body after the framing.
    pub body: &'a [u8],
}

/// An event decoded to JSON against the catalog (see [`Codec::decode_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonEvent {
    /// The event type (the writer schema's full name).
    pub event_type: String,
    /// The writer schema's registry id.
    pub schema_id: u32,
    /// The data, resolved to the catalog's latest schema of the type.
    pub data: serde_json::Value,
}

pub use super::compiled::MAX_AVRO_ALLOCATION;

impl Codec {
    /// A codec over `registry` (wrapped in a cache).
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Self {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        Self {
            registry: CachedRegistry::new(registry),
            plans: Arc::default(),
        }
    }

    /// The registry cache.
    pub fn registry(&self) -> &CachedRegistry {
        &self.registry
    }

    /// Encodes `event` for `topic`: registers its schema on first use, then frames the body.
    pub async fn encode<T: Event>(&self, topic: &str, event: &T) -> Result<Vec<u8>, BusError> {
        let id = self.id_for(topic, T::TYPE, T::schema_text()).await?;
        let encode_err = |e: EncodeError| BusError::Encode {
            event_type: T::TYPE.to_owned(),
            topic: topic.to_owned(),
            reason: e.to_string(),
        };
        self.encode_with_id(id, event).map_err(encode_err)
    }

    /// Encodes `event` framed with schema id `id`, which must be the registry's id of
    /// `T::schema()` (what [`Codec::encode`] does once it knows the id).
    pub fn encode_with_id<T: Event>(&self, id: u32, event: &T) -> Result<Vec<u8>, EncodeError> {
        let framed = |capacity: usize| {
            let mut out = Vec::with_capacity(5 + capacity);
            out.push(super::framing::MAGIC_BYTE);
            out.extend_from_slice(&id.to_be_bytes());
            out
        };
        if let Some(writer) = T::specific_writer() {
            let mut out = framed(writer.capacity_hint());
            writer.write(event, &mut out);
            return Ok(out);
        }
        let encoder = self.plans.encoder::<T>(T::schema())?;
        let mut out = framed(encoder.capacity_hint());
        encoder.encode_into(event, &mut out)?;
        Ok(out)
    }

    /// Registers the catalog's latest schema of `event_type` for `topic` (once; what
    /// [`Codec::encode_json`] would do on its first use), so that a caller can have it done
    /// before it needs it — the coordinator, before its first transaction.
    pub async fn register_latest(
        &self,
        topic: &str,
        catalog: &Catalog,
        event_type: &str,
    ) -> Result<u32, BusError> {
        let info = catalog.event(event_type).ok_or_else(|| BusError::Encode {
            event_type: event_type.to_owned(),
            topic: topic.to_owned(),
            reason: "the type is not in the catalog".into(),
        })?;
        self.id_for(topic, event_type, &info.latest().text).await
    }

    /// Encodes JSON `data` as `event_type` on `topic`, with the catalog's latest schema of the
    /// type (for the coordinator, which emits events it knows only by schema). Data that does
    /// not fit the schema, or a type the catalog lacks, is [`BusError::Encode`]; a registry
    /// that cannot be asked is [`BusError::Registry`].
    pub async fn encode_json(
        &self,
        topic: &str,
        catalog: &Catalog,
        event_type: &str,
        data: &serde_json::Value,
    ) -> Result<Vec<u8>, BusError> {
        self.encode_json_version(topic, catalog, event_type, None, data)
            .await
    }

    /// [`Codec::encode_json`] with a chosen schema `version` of the type (1-based, as in the
    /// catalog; `None`: the newest). A version the catalog lacks is [`BusError::Encode`].
    pub async fn encode_json_version(
        &self,
        topic: &str,
        catalog: &Catalog,
        event_type: &str,
        version: Option<u32>,
        data: &serde_json::Value,
    ) -> Result<Vec<u8>, BusError> {
        let encode_err = |reason: String| BusError::Encode {
            event_type: event_type.to_owned(),
            topic: topic.to_owned(),
            reason,
        };
        let info = catalog
            .event(event_type)
            .ok_or_else(|| encode_err("the type is not in the catalog".into()))?;
        let latest = match version {
            None => info.latest(),
            Some(v) => info
                .versions
                .iter()
                .find(|s| s.version == v)
                .ok_or_else(|| {
                    encode_err(format!(
                        "the catalog has no version {v} of the type (it has 1 to {})",
                        info.latest().version
                    ))
                })?,
        };
        // The compiled encoder writes what apache-avro writes for the data it takes; data it
        // refuses goes through apache-avro's schema resolution, whose answer (the bytes, or
        // the error naming what does not fit) stands.
        let compiled = self
            .plans
            .json_encoder(event_type, latest.version, &latest.schema)
            .and_then(|e| e.encode(&AvroJson(data)));
        let body = match compiled {
            Ok(body) => body,
            Err(_) => encode_json_generic(&latest.schema, data).map_err(encode_err)?,
        };
        let id = self.id_for(topic, event_type, &latest.text).await?;
        Ok(frame(id, &body))
    }

    /// The registry id of `schema_text` under its subject on `topic`, registered on first use.
    async fn id_for(&self, topic: &str, event_type: &str, text: &str) -> Result<u32, BusError> {
        let subject = subject(topic, event_type);
        self.registry
            .id_for(&subject, text)
            .await
            .map_err(|e| BusError::Registry {
                subject,
                reason: e.to_string(),
            })
    }

    /// Reads a value's framing once and looks up its writer schema: bad framing and unknown
    /// ids are poison; a registry that cannot be asked is [`WriterSchemaError::Unavailable`].
    pub async fn read<'a>(&self, value: &'a [u8]) -> Result<Framed<'a>, WriterSchemaError> {
        let (id, body) = unframe(value).map_err(WriterSchemaError::Poison)?;
        match self.registry.schema(id).await {
            Ok(schema) => Ok(Framed {
                writer: WriterSchema { id, schema },
                body,
            }),
            Err(RegistryError::UnknownId(_)) => {
                Err(WriterSchemaError::Poison(DecodeError::UnknownSchemaId(id)))
            }
            Err(e) => Err(WriterSchemaError::Unavailable(e)),
        }
    }

    /// Decodes a value already [read](Self::read) into `T`, resolving the writer schema to
    /// `T`'s (planned once per schema id and type: by `T`'s specific coder when it has one that
    /// takes the pair, else compiled, see [`super::compiled`]).
    pub fn decode_framed<T: Event>(&self, framed: &Framed<'_>) -> Result<T, DecodeError> {
        self.plans.with_decoder::<T, _>(
            framed.writer.id,
            &framed.writer.schema,
            T::schema(),
            |decoder| decoder.decode::<T>(framed.body),
        )
    }

    /// Decodes a framed value into `T`, resolving the writer schema to `T`'s.
    pub async fn decode<T: Event>(&self, value: &[u8]) -> Result<T, DecodeError> {
        let framed = self
            .read(value)
            .await
            .map_err(WriterSchemaError::into_decode)?;
        self.decode_framed(&framed)
    }

    /// Decodes a framed value to JSON as it was written: with its writer schema alone (no
    /// catalog, no resolution), for showing a record to a person whatever its type.
    pub async fn decode_written(&self, value: &[u8]) -> Result<JsonEvent, WriterSchemaError> {
        let framed = self.read(value).await?;
        let poison = WriterSchemaError::Poison;
        let event_type = framed.writer.full_name().ok_or_else(|| {
            poison(DecodeError::Malformed(
                "the writer schema is not a named record".into(),
            ))
        })?;
        let data = decode_value(&framed.writer.schema, None, framed.body)
            .and_then(|v| {
                serde_json::Value::try_from(v).map_err(|e| DecodeError::Malformed(e.to_string()))
            })
            .map_err(poison)?;
        Ok(JsonEvent {
            event_type,
            schema_id: framed.writer.id,
            data,
        })
    }

    /// Decodes a framed value to JSON, resolved to the catalog's latest schema of its type, in
    /// one call: the framing is read, the writer schema looked up, and then — only when
    /// `wanted(event_type)` returns what the caller will do with it — the body decoded.
    /// `Ok(None)` is an event that is not wanted (its body is not decoded).
    pub async fn decode_json<W>(
        &self,
        value: &[u8],
        catalog: &Catalog,
        wanted: impl FnOnce(&str) -> Option<W>,
    ) -> Result<Option<(JsonEvent, W)>, WriterSchemaError> {
        let framed = self.read(value).await?;
        let poison = WriterSchemaError::Poison;
        let Some(event_type) = framed.writer.full_name() else {
            return Err(poison(DecodeError::Malformed(
                "the writer schema is not a named record".into(),
            )));
        };
        let Some(use_of_it) = wanted(&event_type) else {
            return Ok(None);
        };
        let Some(info) = catalog.event(&event_type) else {
            return Err(poison(DecodeError::NotInCatalog(event_type)));
        };
        let data = self
            .plans
            .latest(
                framed.writer.id,
                &framed.writer.schema,
                &info.latest().schema,
            )
            .and_then(|d| d.decode_json(framed.body))
            .map_err(poison)?;
        Ok(Some((
            JsonEvent {
                event_type,
                schema_id: framed.writer.id,
                data,
            },
            use_of_it,
        )))
    }
}

/// Why a value's writer schema could not be had.
#[derive(Debug)]
pub enum WriterSchemaError {
    /// The value itself is bad (framing, unknown schema id, an undecodable body): dead-letter
    /// it.
    Poison(DecodeError),
    /// The registry could not be asked: try again later.
    Unavailable(RegistryError),
}

impl WriterSchemaError {
    /// As a [`DecodeError`] (an unavailable registry as a malformed record).
    fn into_decode(self) -> DecodeError {
        match self {
            WriterSchemaError::Poison(d) => d,
            WriterSchemaError::Unavailable(r) => {
                DecodeError::Malformed(format!("registry unavailable: {r}"))
            }
        }
    }
}

/// Serializes JSON for Avro: integers as `long` (serde_json would hand non-negative integers
/// over as `u64`, which Avro has no type for), then schema resolution narrows them.
struct AvroJson<'a>(&'a serde_json::Value);

impl Serialize for AvroJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value as J;
        match self.0 {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => s.serialize_i64(i),
                None => s.serialize_f64(n.as_f64().unwrap_or(0.0)),
            },
            J::String(t) => s.serialize_str(t),
            J::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&AvroJson(i))?;
                }
                seq.end()
            }
            J::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &AvroJson(v))?;
                }
                map.end()
            }
        }
    }
}

/// Encodes JSON `data` with `schema` through apache-avro's generic value and its schema
/// resolution: the reference [`Codec::encode_json`]'s compiled encoder must agree with, and its
/// answer for data the compiled encoder refuses.
pub fn encode_json_generic(schema: &Schema, data: &serde_json::Value) -> Result<Vec<u8>, String> {
    let value = apache_avro::to_value(AvroJson(data))
        .and_then(|v| v.resolve(schema))
        .map_err(|e| format!("the data does not fit its schema: {e}"))?;
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| e.to_string())
}

/// Encodes JSON `data` with `schema` through the compiled encoder only (an error where it
/// refuses the data). For tests that compare it with [`encode_json_generic`].
pub fn encode_json_compiled(schema: &Schema, data: &serde_json::Value) -> Result<Vec<u8>, String> {
    Encoder::new(schema)
        .and_then(|e| e.encode(&AvroJson(data)))
        .map_err(|e| e.to_string())
}

/// Writes `event` as an Avro body with `schema`, compiling an [`Encoder`] for this one call
/// (for tools and tests; [`Codec::encode`] keeps one per type).
pub fn encode_body<T: Serialize>(schema: &Schema, event: &T) -> Result<Vec<u8>, String> {
    Encoder::new(schema)
        .and_then(|e| e.encode(event))
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
    let reader = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    read_whole(&reader, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::{frame, unframe};
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
        let canonical = OrderPlacedV1::schema().canonical_form();
        assert_eq!(id, choreo_schemas::registry::schema_id_of(&canonical));
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

    /// Found by fuzzing (`integration-tests/fuzz`, target `wire_decode`): a body cut inside
    /// its last string field decoded, with `null` in that string field (apache-avro's
    /// end-of-input signal), when the writer schema was the reader's.
    #[tokio::test]
    async fn a_body_cut_inside_a_string_is_truncated_not_a_null() {
        use choreo_schemas::event::InventoryReleased;
        let catalog = Catalog::reference();
        let codec = Codec::new(Arc::new(MemoryRegistry::new()));
        let data = serde_json::json!({"order_id": "o-1", "reservation_id": "r-1"});
        let good = codec
            .encode_json("inventory", &catalog, InventoryReleased::TYPE, &data)
            .await
            .expect("encode");
        for cut in [1, 2] {
            let value = &good[..good.len() - cut];
            let json = codec.decode_json(value, &catalog, |_| Some(())).await;
            assert!(
                matches!(
                    json,
                    Err(WriterSchemaError::Poison(DecodeError::Truncated(_)))
                ),
                "cut {cut}: {json:?}"
            );
            let (_, body) = unframe(value).expect("framed");
            let generic = decode_value(InventoryReleased::schema(), None, body);
            assert!(
                matches!(generic, Err(DecodeError::Truncated(_))),
                "cut {cut}: {generic:?}"
            );
        }
        // The fuzzer's own input: a string length with fewer bytes after it.
        let fuzzed = decode_value(InventoryReleased::schema(), None, &[0x00, 0x42, 0xf9, 0xcb]);
        assert!(
            matches!(fuzzed, Err(DecodeError::Truncated(_))),
            "{fuzzed:?}"
        );
    }

    #[tokio::test]
    async fn json_entry_points_round_trip_against_the_catalog() {
        use choreo_schemas::event::PaymentAuthorized;
        let catalog = Catalog::reference();
        let codec = Codec::new(Arc::new(MemoryRegistry::new()));
        let data = serde_json::json!({
            "order_id": "o-1", "payment_id": "p-1",
            "amount": { "amount_minor": 1999, "currency": "EUR" }
        });
        let bytes = codec
            .encode_json("payments", &catalog, PaymentAuthorized::TYPE, &data)
            .await
            .expect("encode");
        let typed: PaymentAuthorized = codec.decode(&bytes).await.expect("typed read");
        assert_eq!(typed.amount.amount_minor, 1999);
        let back = codec
            .decode_json(&bytes, &catalog, |t| {
                (t == PaymentAuthorized::TYPE).then_some(())
            })
            .await
            .expect("decode")
            .expect("wanted")
            .0;
        assert_eq!(back.event_type, PaymentAuthorized::TYPE);
        assert_eq!(back.data, data);
        let skipped = codec.decode_json(&bytes, &catalog, |_| None::<()>).await;
        assert!(
            matches!(skipped, Ok(None)),
            "an unwanted event is not decoded"
        );

        let unknown = codec
            .encode_json("payments", &catalog, "io.choreo.Nope", &data)
            .await;
        assert!(
            matches!(unknown, Err(BusError::Encode { .. })),
            "{unknown:?}"
        );
        let misfit = codec
            .encode_json(
                "payments",
                &catalog,
                PaymentAuthorized::TYPE,
                &serde_json::json!({"order_id": 1}),
            )
            .await;
        assert!(matches!(misfit, Err(BusError::Encode { .. })), "{misfit:?}");
    }
}
