//! Codecs planned once: for each writer schema id and reader, the compiled [`Decoder`] of the
//! writer schema resolved against the reader's (typed: the Rust type's schema; JSON: the
//! catalog's latest schema of the record's type); for each Rust type, its compiled [`Encoder`].
//! The work that does not depend on the record is done the first time a pair is met, and every
//! later record pays only for its bytes.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use dashmap::DashMap;
use std::any::TypeId;

use super::compiled::{Decoder, EncodeError, Encoder};
use crate::error::DecodeError;

/// The planned codecs of one codec (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Plans {
    /// Per (writer schema id, Rust type): its compiled decoder.
    decoders: DashMap<(u32, TypeId), Arc<Decoder>>,
    /// Per Rust type: its compiled encoder.
    encoders: DashMap<TypeId, Arc<Encoder>>,
    /// Per writer schema id: its compiled decoder into the catalog's latest schema of its type,
    /// for JSON.
    readers: DashMap<u32, Arc<Decoder>>,
    /// Per (event type, catalog version): the compiled encoder of JSON data.
    json_encoders: DashMap<(String, u32), Arc<Encoder>>,
}

/// The value `map` holds for `key`, built by `build` and kept on first use (two threads building
/// the same one at once each build it; the first kept wins).
fn kept<K, V, E>(
    map: &DashMap<K, Arc<V>>,
    key: K,
    build: impl FnOnce() -> Result<V, E>,
) -> Result<Arc<V>, E>
where
    K: std::hash::Hash + Eq,
{
    if let Some(v) = map.get(&key) {
        return Ok(Arc::clone(&v));
    }
    let built = Arc::new(build()?);
    Ok(Arc::clone(&map.entry(key).or_insert(built)))
}

impl Plans {
    /// The decoder of records written with schema `writer_id` (`writer`) into `T`, whose schema
    /// is `reader`, compiled on first use.
    pub(crate) fn decoder<T: 'static>(
        &self,
        writer_id: u32,
        writer: &Schema,
        reader: &Schema,
    ) -> Result<Arc<Decoder>, DecodeError> {
        kept(&self.decoders, (writer_id, TypeId::of::<T>()), || {
            Decoder::new(writer, reader)
        })
    }

    /// The encoder of `T`, whose schema is `schema`, compiled on first use.
    pub(crate) fn encoder<T: 'static>(&self, schema: &Schema) -> Result<Arc<Encoder>, EncodeError> {
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
