//! The compiled Avro codec: Avro binary straight to and from serde, with no generic value in
//! between.
//!
//! An [`Encoder`] is compiled once per schema, a [`Decoder`] once per (writer schema, reader
//! schema) pair ([`compile`]); each record then pays only for its bytes. Decoding resolves the
//! writer's data to the reader's schema as the Avro specification has it — reader fields the
//! writer lacks get their defaults, writer fields the reader lacks are skipped by type, numbers
//! are promoted, `string` and `bytes` read as each other, enum symbols are mapped by name (to the
//! reader's default symbol when unknown), unions are resolved on either side, logical types are
//! read as their underlying type — and the Rust type's name never has to match the record's.
//! Encoding writes what apache-avro writes for the same value and schema.
//!
//! A struct whose `Deserialize` asks for exactly the fields the record hands over, in the same
//! order (the writer's fields it has, then the defaults), is handed them as a sequence, by
//! position, as a derived `Deserialize` takes them; any other is handed a map, by name. A
//! struct's `Serialize` that gives its fields in schema order has each written straight in turn,
//! the field recognised by its key's address after the first record.
//!
//! Every input is checked ([`choreo_schemas::binary::Input`]): a body that ends early is
//! [`DecodeError::Truncated`], bytes left over, a bad length, union or enum index, or invalid
//! UTF-8 are [`DecodeError::Malformed`]; nothing is allocated by a length before it is checked
//! against [`super::codec::MAX_AVRO_ALLOCATION`].

mod compile;
mod de;
mod default_de;
mod defaults;
mod json;
mod key;
mod out;
mod plan;
mod ser;

use std::sync::atomic::{AtomicUsize, Ordering};

use apache_avro::Schema;
use serde::Serialize;

pub use choreo_schemas::binary::MAX_AVRO_ALLOCATION;

pub use out::EncodeError;

use crate::error::DecodeError;

/// A malformed-body error saying `msg`.
#[cold]
pub(crate) fn malformed(msg: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(msg.into())
}

impl serde::de::Error for DecodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DecodeError::Malformed(msg.to_string())
    }
}

/// Writes values of one schema as Avro binary.
#[derive(Debug)]
pub struct Encoder {
    plan: plan::WritePlan,
    /// The longest body written so far: what an output is allocated with.
    longest: AtomicUsize,
}

impl Encoder {
    /// Compiles `schema` (a schema whose names or defaults do not resolve is an error).
    pub fn new(schema: &Schema) -> Result<Self, EncodeError> {
        compile::write_plan(schema)
            .map(|plan| Encoder {
                plan,
                longest: AtomicUsize::new(64),
            })
            .map_err(EncodeError)
    }

    /// Appends `value`'s Avro body to `out` (on an error, `out` may hold part of it).
    pub fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        value.serialize(ser::Ser {
            plan: &self.plan,
            node: &self.plan.root,
            out: &mut *out,
        })?;
        self.longest.fetch_max(out.len() - start, Ordering::Relaxed);
        Ok(())
    }

    /// The length of the longest body written so far (at least 64): a good capacity for the
    /// next one's output.
    pub fn capacity_hint(&self) -> usize {
        self.longest.load(Ordering::Relaxed)
    }

    /// `value`'s Avro body.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.capacity_hint());
        self.encode_into(value, &mut out)?;
        Ok(out)
    }
}

/// Reads Avro bodies written with one schema as values of another (or the same).
#[derive(Debug)]
pub struct Decoder {
    plan: plan::ReadPlan,
}

impl Decoder {
    /// Compiles `writer` resolved against `reader`. A schema whose names or defaults do not
    /// resolve is an error; data the reader cannot take (say, a writer field of another type)
    /// is an error of each record that has it.
    pub fn new(writer: &Schema, reader: &Schema) -> Result<Self, DecodeError> {
        compile::read_plan(writer, reader)
            .map(|plan| Decoder { plan })
            .map_err(DecodeError::Malformed)
    }

    /// Reads the whole of `body` into `T`, borrowing strings and bytes from it where `T` does.
    pub fn decode<'de, T: serde::Deserialize<'de>>(
        &self,
        body: &'de [u8],
    ) -> Result<T, DecodeError> {
        self.decode_seed(body, std::marker::PhantomData::<T>)
    }

    /// Reads the whole of `body` as JSON: the reader's value as apache-avro's generic value
    /// converts to JSON (bytes and fixed values as arrays of numbers, a union as its branch's
    /// value, an enum as its symbol; a float JSON cannot hold is an error).
    pub fn decode_json(&self, body: &[u8]) -> Result<serde_json::Value, DecodeError> {
        self.decode_seed(body, json::Json)
    }

    fn decode_seed<'de, S: serde::de::DeserializeSeed<'de>>(
        &self,
        body: &'de [u8],
        seed: S,
    ) -> Result<S::Value, DecodeError> {
        let mut input = choreo_schemas::binary::Input::new(body);
        let value = seed.deserialize(de::De {
            plan: &self.plan,
            node: &self.plan.root,
            input: &mut input,
        })?;
        if !input.rest.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} bytes left over after the Avro body",
                input.rest.len()
            )));
        }
        Ok(value)
    }
}
