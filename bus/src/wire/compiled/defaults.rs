//! Field defaults: a schema's default JSON turned once, at planning, into a value typed by the
//! field's schema ([`Dv`]), which the decoder hands serde for a field the writer lacks
//! ([`DvDe`]) and the encoder writes for a field the value lacks.
//!
//! As the Avro specification has it: a `bytes` or `fixed` default is a string of code points
//! 0-255, one byte each; a union's default is a value of its first branch (a later branch is
//! taken too, as apache-avro's parser accepts it); a record's default fills its own fields'
//! defaults.

use apache_avro::Schema;
use serde::de::{self, DeserializeSeed, Visitor};
use serde_json::Value as Json;

use super::plan::{Base, Names};
use crate::error::DecodeError;

/// A default value, typed by its schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dv {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(Box<[u8]>),
    Str(Box<str>),
    /// An enum symbol, with its index.
    Enum(u32, Box<str>),
    Array(Vec<Dv>),
    Map(Vec<(Box<str>, Dv)>),
    /// A record's fields in schema order.
    Record(Vec<(Box<str>, Dv)>),
    /// A union's branch `index`.
    Union(u32, Box<Dv>),
}

/// `json` as a value of `schema`.
pub(crate) fn from_json(json: &Json, schema: &Schema, names: &Names<'_>) -> Result<Dv, String> {
    let wrong = |what: &str| Err(format!("{json} is not {what}"));
    Ok(match names.base(schema)? {
        Base::Null => match json {
            Json::Null => Dv::Null,
            _ => return wrong("null"),
        },
        Base::Bool => match json {
            Json::Bool(b) => Dv::Bool(*b),
            _ => return wrong("a boolean"),
        },
        Base::Int => match json.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Dv::Int(i),
            None => return wrong("an int"),
        },
        Base::Long => match json.as_i64() {
            Some(i) => Dv::Long(i),
            None => return wrong("a long"),
        },
        #[allow(clippy::cast_possible_truncation)]
        Base::Float => match json.as_f64() {
            Some(f) => Dv::Float(f as f32),
            None => return wrong("a float"),
        },
        Base::Double => match json.as_f64() {
            Some(f) => Dv::Double(f),
            None => return wrong("a double"),
        },
        Base::Bytes => Dv::Bytes(code_points(json)?.into()),
        Base::Fixed(n, _) => {
            let b = code_points(json)?;
            if b.len() != n {
                return wrong(&format!("{n} bytes"));
            }
            Dv::Bytes(b.into())
        }
        Base::Str => match json {
            Json::String(s) => Dv::Str(s.as_str().into()),
            _ => return wrong("a string"),
        },
        Base::Enum(e) => match json {
            Json::String(s) => match e.symbols.iter().position(|x| x == s) {
                Some(i) => Dv::Enum(index(i)?, s.as_str().into()),
                None => return wrong(&format!("a symbol of {}", e.name)),
            },
            _ => return wrong("an enum symbol"),
        },
        Base::Array(items) => match json {
            Json::Array(a) => Dv::Array(
                a.iter()
                    .map(|j| from_json(j, items, names))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return wrong("an array"),
        },
        Base::Map(values) => match json {
            Json::Object(o) => Dv::Map(
                o.iter()
                    .map(|(k, j)| Ok((k.as_str().into(), from_json(j, values, names)?)))
                    .collect::<Result<_, String>>()?,
            ),
            _ => return wrong("a map"),
        },
        Base::Record(r) => match json {
            Json::Object(o) => Dv::Record(
                r.fields
                    .iter()
                    .map(|f| {
                        let v = match (o.get(&f.name), &f.default) {
                            (Some(j), _) | (None, Some(j)) => from_json(j, &f.schema, names)?,
                            (None, None) => return Err(format!("{json} lacks field {}", f.name)),
                        };
                        Ok((f.name.as_str().into(), v))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return wrong("a record"),
        },
        Base::Union(branches) => {
            let mut last = String::new();
            for (i, b) in branches.iter().enumerate() {
                match from_json(json, b, names) {
                    Ok(v) => return Ok(Dv::Union(index(i)?, Box::new(v))),
                    Err(e) => last = e,
                }
            }
            return Err(format!("{json} fits no branch of its union ({last})"));
        }
    })
}

fn index(i: usize) -> Result<u32, String> {
    u32::try_from(i).map_err(|_| "an index over 2^32".into())
}

/// A `bytes`/`fixed` default: each code point (0-255) one byte.
fn code_points(json: &Json) -> Result<Vec<u8>, String> {
    let Json::String(s) = json else {
        return Err(format!("{json} is not a string of bytes"));
    };
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("{c:?} is not a byte")))
        .collect()
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
            Dv::Bytes(b) => super::de::byte_seq(b, visitor),
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
