//! Codecs planned once: for each writer schema id and reader, the compiled [`Decoder`] of the
//! writer schema resolved against the reader's (typed: the Rust type's schema; JSON: the
//! catalog's latest schema of the record's type); for each Rust type, its compiled [`Encoder`].
//! A Rust type with a specific coder (`Event::SPECIFIC`, code made for the type) has that used
//! instead for every writer schema the coder plans (and to encode, through the type's own
//! `Event::specific_writer`, with no lookup here); the compiled codec takes the rest.
//! The work that does not depend on the record is done the first time a pair is met, and every
//! later record pays only for its bytes.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use std::any::TypeId;

use choreo_schemas::Event;
use choreo_schemas::binary::Plan as SpecificPlan;

use super::compiled::{Decoder, EncodeError, Encoder};
use crate::error::DecodeError;

/// The planned codecs of one codec (shared by its clones).
#[derive(Debug)]
pub(crate) struct Plans {
    /// This instance among every `Plans` the process made (what a thread's last decoder is
    /// kept under, see [`Plans::with_decoder`]).
    id: u64,
    /// Per (writer schema id, Rust type): how its records are read. (Looked up for every
    /// record: hashed with Fx, not SipHash, as the keys are not chosen by senders.)
    decoders: DashMap<(u32, TypeId), Arc<TypedDecoder>, FxBuildHasher>,
    /// Per Rust type without a specific writer: its compiled encoder.
    encoders: DashMap<TypeId, Arc<Encoder>, FxBuildHasher>,
    /// Per writer schema id: its compiled decoder into the catalog's latest schema of its type,
    /// for JSON.
    readers: DashMap<u32, Arc<Decoder>>,
    /// Per (event type, catalog version): the compiled encoder of JSON data.
    json_encoders: DashMap<(String, u32), Arc<Encoder>>,
}

/// The value `map` holds for `key`, built by `build` and kept on first use (two threads building
/// the same one at once each build it; the first kept wins).
fn kept<K, V, E, S>(
    map: &DashMap<K, Arc<V>, S>,
    key: K,
    build: impl FnOnce() -> Result<V, E>,
) -> Result<Arc<V>, E>
where
    K: std::hash::Hash + Eq,
    S: std::hash::BuildHasher + Clone,
{
    if let Some(v) = map.get(&key) {
        return Ok(Arc::clone(&v));
    }
    let built = Arc::new(build()?);
    Ok(Arc::clone(&map.entry(key).or_insert(built)))
}

/// How records of one writer schema are read into one Rust type.
#[derive(Debug)]
pub(crate) enum TypedDecoder {
    /// By the type's specific coder, as planned.
    Specific(SpecificPlan),
    /// By the compiled codec.
    Compiled(Decoder),
}

impl TypedDecoder {
    /// Reads the whole of `body` as a `T`.
    #[inline]
    pub(crate) fn decode<T: Event>(&self, body: &[u8]) -> Result<T, DecodeError> {
        match (self, T::SPECIFIC) {
            (TypedDecoder::Specific(plan), Some(coder)) => Ok(coder.read_whole(body, plan)?),
            (TypedDecoder::Compiled(d), _) => d.decode(body),
            (TypedDecoder::Specific(_), None) => Err(DecodeError::Malformed(
                "a specific plan kept for a type without a specific coder".into(),
            )),
        }
    }

    /// Whether the type's specific coder reads these records.
    #[cfg(test)]
    pub(crate) fn is_specific(&self) -> bool {
        matches!(self, TypedDecoder::Specific(_))
    }
}

impl Default for Plans {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Plans {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            decoders: DashMap::default(),
            encoders: DashMap::default(),
            readers: DashMap::default(),
            json_encoders: DashMap::default(),
        }
    }
}

/// A thread's last typed decoder: (which `Plans`, writer schema id, Rust type), and it.
type LastDecoder = Option<(u64, u32, TypeId, Arc<TypedDecoder>)>;

thread_local! {
    /// Consecutive records of one type and writer schema (nearly all of them) find their
    /// decoder here, with no lock and no reference count touched.
    static LAST_DECODER: RefCell<LastDecoder> = const { RefCell::new(None) };
}

impl Plans {
    /// Runs `f` with the decoder of records written with schema `writer_id` into `T` (see
    /// [`Plans::decoder`]): the thread's last one when it is that, else the shared map's.
    #[inline]
    pub(crate) fn with_decoder<T: Event, R>(
        &self,
        writer_id: u32,
        writer: &Schema,
        reader: &Schema,
        f: impl FnOnce(&TypedDecoder) -> Result<R, DecodeError>,
    ) -> Result<R, DecodeError> {
        let key = (self.id, writer_id, TypeId::of::<T>());
        LAST_DECODER.with(|last| {
            if let Ok(last) = last.try_borrow()
                && let Some((id, w, t, decoder)) = &*last
                && (*id, *w, *t) == key
            {
                return f(decoder);
            }
            let decoder = self.decoder::<T>(writer_id, writer, reader)?;
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = Some((key.0, key.1, key.2, Arc::clone(&decoder)));
            }
            f(&decoder)
        })
    }

    /// How records written with schema `writer_id` (`writer`) are read into `T`, whose schema is
    /// `reader`: planned on first use, by `T`'s specific coder when it takes the pair, else
    /// compiled.
    pub(crate) fn decoder<T: Event>(
        &self,
        writer_id: u32,
        writer: &Schema,
        reader: &Schema,
    ) -> Result<Arc<TypedDecoder>, DecodeError> {
        kept(
            &self.decoders,
            (writer_id, TypeId::of::<T>()),
            || match T::SPECIFIC.map(|coder| coder.plan(writer, reader)) {
                Some(Ok(plan)) => Ok(TypedDecoder::Specific(plan)),
                not_specific => {
                    if let Some(Err(why)) = not_specific {
                        tracing::debug!(event_type = T::TYPE, writer_id, %why,
                            "the compiled codec reads this writer schema");
                    }
                    Decoder::new(writer, reader).map(TypedDecoder::Compiled)
                }
            },
        )
    }

    /// The compiled encoder of `T`, whose schema is `schema`, compiled on first use (for a type
    /// without a specific writer, see `Event::specific_writer`).
    pub(crate) fn encoder<T: Event>(&self, schema: &Schema) -> Result<Arc<Encoder>, EncodeError> {
        kept(&self.encoders, TypeId::of::<T>(), || Encoder::new(schema))
    }

    /// The compiled encoder of JSON data of `event_type` at catalog `version` (whose schema is
    /// `schema`), compiled on first use.
    pub(crate) fn json_encoder(
        &self,
        event_type: &str,
        version: u32,
        schema: &Schema,
    ) -> Result<Arc<Encoder>, EncodeError> {
        kept(
            &self.json_encoders,
            (event_type.to_owned(), version),
            || Encoder::new(schema),
        )
    }

    /// The decoder of records written with schema `writer_id` (`writer`) and read as the
    /// catalog's latest schema of their type (`reader`), as JSON; compiled on first use.
    pub(crate) fn latest(
        &self,
        writer_id: u32,
        writer: &Schema,
        reader: &Schema,
    ) -> Result<Arc<Decoder>, DecodeError> {
        kept(&self.readers, writer_id, || Decoder::new(writer, reader))
    }
}

/// Reads a whole Avro body with `reader`: a body that ends early is truncated (also inside a
/// string, which apache-avro would read as a null), one with bytes left over is malformed.
pub(crate) fn read_whole(
    reader: &GenericDatumReader<'_>,
    body: &[u8],
) -> Result<Value, DecodeError> {
    let mut input = Body {
        rest: body,
        ran_out: false,
    };
    let value = reader.read_value(&mut input).map_err(read_error)?;
    if input.ran_out {
        return Err(DecodeError::Truncated(
            "the Avro body ended inside a string".into(),
        ));
    }
    whole(input.rest)?;
    Ok(value)
}

/// An Avro body being read, noting whether a read ran past its end: apache-avro decodes a
/// string cut short by the end of the input as a null (its end-of-input signal) rather than
/// failing, so without this a truncated body could decode, with `null` in a string field.
struct Body<'a> {
    rest: &'a [u8],
    ran_out: bool,
}

impl std::io::Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::Read::read(&mut self.rest, buf)?;
        // A slice hands over all it has: fewer bytes than asked for is its end.
        if n < buf.len() {
            self.ran_out = true;
        }
        Ok(n)
    }
}

/// An Avro read error as a decode error: a body that ended early is truncated, anything else
/// malformed.
fn read_error(e: apache_avro::Error) -> DecodeError {
    let msg = e.to_string();
    if msg.contains("failed to fill whole buffer") || msg.contains("UnexpectedEof") {
        DecodeError::Truncated(format!("the Avro body ended early: {msg}"))
    } else {
        DecodeError::Malformed(msg)
    }
}

/// A body must be read to its end: bytes left over mean it was not written with this schema.
fn whole(rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed(format!(
            "{} bytes left over after the Avro body",
            rest.len()
        )))
    }
}

/// Whether two schemas describe the same data (same Parsing Canonical Form).
pub fn same_schema(a: &Schema, b: &Schema) -> bool {
    std::ptr::eq(a, b) || a.canonical_form() == b.canonical_form()
}

#[cfg(test)]
mod tests {
    use choreo_schemas::event::{LineItem, Money, OrderPlaced, OrderPlacedV1};

    use super::*;

    fn order() -> OrderPlaced {
        OrderPlaced {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            items: vec![LineItem {
                sku: "s-1".into(),
                quantity: 3,
                unit_price: Money {
                    amount_minor: 250,
                    currency: "EUR".into(),
                },
            }],
            total: Money {
                amount_minor: 750,
                currency: "EUR".into(),
            },
            shipping_address: "1 Main St".into(),
            channel: "store".into(),
        }
    }

    /// The same writer schema's records, the typed way and the compiled way.
    fn both_ways(plans: &Plans, id: u32, writer: &Schema, body: &[u8]) -> (OrderPlaced, bool) {
        let typed = plans
            .decoder::<OrderPlaced>(id, writer, OrderPlaced::schema())
            .expect("planned");
        let compiled = Decoder::new(writer, OrderPlaced::schema()).expect("compiled");
        let value = typed.decode::<OrderPlaced>(body).expect("decodes");
        assert_eq!(
            compiled.decode::<OrderPlaced>(body).expect("decodes"),
            value,
            "the specific coder and the compiled codec read the same value"
        );
        let through_the_thread_cache = plans
            .with_decoder::<OrderPlaced, _>(id, writer, OrderPlaced::schema(), |d| {
                d.decode::<OrderPlaced>(body)
            })
            .expect("decodes");
        assert_eq!(through_the_thread_cache, value);
        (value, typed.is_specific())
    }

    #[test]
    fn the_specific_coder_reads_the_pairs_it_plans_and_the_compiled_codec_the_rest() {
        let plans = Plans::default();
        let writer = OrderPlaced::specific_writer().expect("OrderPlaced's coder writes its schema");
        let mut body = Vec::new();
        writer.write(&order(), &mut body);
        assert_eq!(
            body,
            Encoder::new(OrderPlaced::schema())
                .expect("compiled")
                .encode(&order())
                .expect("encodes"),
            "the specific coder writes the compiled encoder's bytes"
        );

        // The same schema: specific.
        let (same, specific) = both_ways(&plans, 1, OrderPlaced::schema(), &body);
        assert_eq!(same, order());
        assert!(specific);

        // v1 → v2: specific, the default filled in.
        let v1 = OrderPlacedV1 {
            order_id: "o-2".into(),
            customer_id: "c".into(),
            items: vec![],
            total: order().total,
            shipping_address: "a".into(),
        };
        let v1_body = Encoder::new(OrderPlacedV1::schema())
            .expect("compiled")
            .encode(&v1)
            .expect("encodes");
        let (from_v1, specific) = both_ways(&plans, 2, OrderPlacedV1::schema(), &v1_body);
        assert_eq!(from_v1.channel, "web");
        assert!(specific);

        // A writer whose amounts are ints: a promotion, read by the compiled codec.
        let text = OrderPlaced::schema_text().replace(r#""type": "long""#, r#""type": "int""#);
        let int_writer = Schema::parse_str(&text).expect("a schema");
        let (promoted, specific) = both_ways(&plans, 3, &int_writer, &body);
        assert_eq!(
            promoted,
            order(),
            "small longs are the same varints as ints"
        );
        assert!(!specific);

        // The thread's last decoder is kept per writer id: switching back reads with the right
        // one.
        let (again, _) = both_ways(&plans, 2, OrderPlacedV1::schema(), &v1_body);
        assert_eq!(again, from_v1);
    }

    /// An event whose fields are declared out of its schema's order.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct SwappedEvent {
        note: String,
        order_id: String,
    }
    choreo_schemas::specific_record!(SwappedEvent {
        note: String,
        order_id: String
    });
    choreo_schemas::avro_event!(specific SwappedEvent, "test.SwappedEvent", "test",
        r#"{"type": "record", "name": "SwappedEvent", "namespace": "test", "fields": [
            {"name": "order_id", "type": "string"}, {"name": "note", "type": "string"}]}"#,
        |e| &e.order_id);

    #[test]
    fn a_type_whose_specific_coder_does_not_fit_its_schema_is_written_and_read_by_the_compiled_codec()
     {
        let codec = crate::wire::codec::Codec::new(Arc::new(choreo_schemas::MemoryRegistry::new()));
        let event = SwappedEvent {
            note: "n".into(),
            order_id: "o".into(),
        };
        // Publishing writes with a type's specific coder only when it writes the type's schema.
        assert!(OrderPlaced::specific_writer().is_some());
        assert!(
            SwappedEvent::specific_writer().is_none(),
            "fields out of the schema's order are left to the general codec"
        );
        let value = codec.encode_with_id(7, &event).expect("encodes");
        let compiled = Encoder::new(SwappedEvent::schema())
            .expect("compiled")
            .encode(&event)
            .expect("encodes");
        assert_eq!(
            &value[5..],
            &compiled[..],
            "the schema's order: order_id, then note"
        );
        let plans = Plans::default();
        let decoder = plans
            .decoder::<SwappedEvent>(7, SwappedEvent::schema(), SwappedEvent::schema())
            .expect("planned");
        assert!(!decoder.is_specific());
        assert_eq!(decoder.decode::<SwappedEvent>(&value[5..]), Ok(event));
    }
}
