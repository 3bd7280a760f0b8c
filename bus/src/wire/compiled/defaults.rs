//! Field defaults: a schema's default JSON turned once, at planning, into a value typed by the
//! field's schema ([`Dv`]), which the decoder hands serde for a field the writer lacks
//! (`default_de`) and the encoder writes for a field the value lacks (`compile`).
//!
//! As the Avro specification has it: a `bytes` or `fixed` default is a string of code points
//! 0-255, one byte each; a union's default is a value of its first branch (a later branch is
//! taken too, as apache-avro's parser accepts it); a record's default fills its own fields'
//! defaults.

use apache_avro::Schema;
use serde_json::Value as Json;

use choreo_schemas::binary::names::{Base, Names};

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
