//! Readers planned once per writer schema and reader: the work of decoding that does not depend
//! on the record — resolving the names of both schemas, deciding whether the writer's schema is
//! the reader's — is done the first time a (writer id, reader) pair is met, and every later
//! record pays only for reading its bytes (and, when the schemas differ, for resolving its
//! value).
//!
//! A record written with the reader's own schema is read into a `Value` and converted; one
//! written with another version is resolved to the reader's schema in between.
//!
//! The planned readers borrow their schemas for the life of the process: each writer schema
//! (and each catalog reader schema it is resolved to) is copied once and kept, as the registry
//! cache keeps it. That is bounded by the schemas the registry knows, not by the records read.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use dashmap::DashMap;
use serde::de::DeserializeOwned;

use super::codec::same_schema;
use crate::error::DecodeError;

/// Which reader a record is decoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ReaderKey {
    /// A Rust event type, by its type name.
    Type(&'static str),
    /// The catalog's latest schema of the writer's type (JSON decoding).
    Latest,
}

/// One planned reader: with the reader's schema attached only when the writer's differs.
pub(crate) struct Planned {
    reader: GenericDatumReader<'static>,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned").finish_non_exhaustive()
    }
}

/// The planned readers of one codec (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Plans {
    readers: DashMap<(u32, ReaderKey), Arc<Planned>>,
}

impl Plans {
    /// The reader for records written with schema `writer_id` (`writer`) and read as `key`
    /// (`reader`), planned on first use.
    pub(crate) fn get(
        &self,
        writer_id: u32,
        writer: &Schema,
        key: ReaderKey,
        reader: &Schema,
    ) -> Result<Arc<Planned>, DecodeError> {
        if let Some(p) = self.readers.get(&(writer_id, key)) {
            return Ok(Arc::clone(&p));
        }
        let writer: &'static Schema = Box::leak(Box::new(writer.clone()));
        let built = if same_schema(writer, reader) {
            GenericDatumReader::builder(writer).build()
        } else {
            let reader: &'static Schema = Box::leak(Box::new(reader.clone()));
            GenericDatumReader::builder(writer)
                .reader_schema(reader)
                .build()
        };
        let planned = Arc::new(Planned {
            reader: built.map_err(|e| DecodeError::Malformed(e.to_string()))?,
        });
        // Two threads planning the same pair at once each leak one copy; the first one kept wins.
        Ok(Arc::clone(
            &self.readers.entry((writer_id, key)).or_insert(planned),
        ))
    }
}

impl Planned {
    /// Reads `body` into `T`. (Through a generic value: apache-avro's direct deserialiser
    /// insists that the Rust type's name is the record's, which a type kept for an older
    /// version, like `OrderPlacedV1`, is not.)
    pub(crate) fn read<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, DecodeError> {
        let value = self.read_value(body)?;
        apache_avro::from_value(&value).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// Reads `body` into a generic value of the reader's schema.
    pub(crate) fn read_value(&self, body: &[u8]) -> Result<Value, DecodeError> {
        read_whole(&self.reader, body)
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
