//! A field default handed to serde ([`DvDe`]), as the decoder hands a value it reads.

use serde::de::{self, DeserializeSeed, Visitor};

use super::defaults::Dv;
use crate::error::DecodeError;

/// Bytes handed to a sequence type, one `u8` each.
pub(crate) fn byte_seq<'de, V: Visitor<'de>>(
    b: &[u8],
    visitor: V,
) -> Result<V::Value, DecodeError> {
    let mut seq = de::value::SeqDeserializer::<_, DecodeError>::new(b.iter().copied());
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

/// Hands a default to serde.
#[derive(Clone, Copy)]
pub(crate) struct DvDe<'p>(pub(crate) &'p Dv);

impl<'de> de::Deserializer<'de> for DvDe<'_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Dv::Null => visitor.visit_unit(),
            Dv::Bool(b) => visitor.visit_bool(*b),
            Dv::Int(i) => visitor.visit_i32(*i),
            Dv::Long(i) => visitor.visit_i64(*i),
            Dv::Float(f) => visitor.visit_f32(*f),
            Dv::Double(f) => visitor.visit_f64(*f),
            Dv::Bytes(b) => visitor.visit_bytes(b),
            Dv::Str(s) | Dv::Enum(_, s) => visitor.visit_str(s),
            Dv::Array(items) => visitor.visit_seq(Items(items.iter())),
            Dv::Map(entries) | Dv::Record(entries) => visitor.visit_map(Entries {
                rest: entries.iter(),
                value: None,
            }),
            Dv::Union(_, inner) => DvDe(inner).deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Dv::Null => visitor.visit_none(),
            Dv::Union(_, inner) => DvDe(inner).deserialize_option(visitor),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.0 {
            Dv::Str(s) | Dv::Enum(_, s) => {
                visitor.visit_enum(de::value::StrDeserializer::<DecodeError>::new(s))
            }
            Dv::Union(_, inner) => DvDe(inner).deserialize_enum(_name, _variants, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Dv::Bytes(b) => byte_seq(b, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier ignored_any
    }
}

struct Items<'p>(std::slice::Iter<'p, Dv>);

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        self.0.next().map(|v| seed.deserialize(DvDe(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'p> {
    rest: std::slice::Iter<'p, (Box<str>, Dv)>,
    value: Option<&'p Dv>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some((k, v)) = self.rest.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        seed.deserialize(de::value::StrDeserializer::<DecodeError>::new(k))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| DecodeError::Malformed("a map value asked for before its key".into()))?;
        seed.deserialize(DvDe(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.len())
    }
}
