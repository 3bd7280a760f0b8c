//! The encoder: a `serde::Serializer` that walks a [`WritePlan`] and writes Avro binary as
//! apache-avro writes it (the same bytes for the same value and schema).
//!
//! A record's fields are written in schema order: a field that comes in that order goes
//! straight to the output (the fast path, when the Rust struct declares its fields as the schema
//! does); one that comes early is written aside and moved into place when its turn comes; one
//! that never comes gets the schema's default. An `Option` is the null branch or the other
//! branch of `["null", T]`; a Rust enum's unit variant is its symbol's index; a value for any
//! other union takes the first branch of its type. An array or map of known length is one block
//! (then the 0 block); of unknown length, written aside and then one block.

use serde::ser::{self, Serialize};

use super::key::Key;
use super::out::{EncodeError, err};
use super::plan::{FieldWrite, RecordWrite, UnionWrite, Write, WritePlan, describe};
use choreo_schemas::binary::{write_bytes as bytes, write_count as count, write_long as long};

/// The kinds of serde call a union branch is chosen by.
#[derive(Clone, Copy, Debug)]
enum Kind<'a> {
    Bool,
    Int(i64),
    Long,
    Float,
    Double,
    Str(&'a str),
    Bytes(usize),
    Null,
    Seq,
    Map,
    Record(&'a str),
}

/// Serializes one value of `node` into `out`.
pub(crate) struct Ser<'p, 'o> {
    pub(crate) plan: &'p WritePlan,
    pub(crate) node: &'p Write,
    pub(crate) out: &'o mut Vec<u8>,
}

impl<'p, 'o> Ser<'p, 'o> {
    /// The node to write a value of `kind` with: a union writes the index of the first branch
    /// that takes it, and that branch is the node.
    #[inline]
    fn node(&mut self, kind: Kind<'_>) -> Result<&'p Write, EncodeError> {
        match self.node {
            Write::Union(u) => self.branch(u, kind),
            node => Ok(node),
        }
    }

    fn branch(&mut self, u: &'p UnionWrite, kind: Kind<'_>) -> Result<&'p Write, EncodeError> {
        let i = pick(self.plan, u, kind)
            .ok_or_else(|| EncodeError(format!("no branch of the union takes a {kind:?}")))?;
        long(self.out, i64::from(i));
        Ok(&u.branches[i as usize])
    }

    fn mismatch<T>(&self, what: &str) -> Result<T, EncodeError> {
        err(format!(
            "a {what} cannot be written as {}",
            describe(self.plan, self.node)
        ))
    }

    fn int(mut self, v: i64, what: &str) -> Result<(), EncodeError> {
        match self.node(Kind::Int(v))? {
            Write::Int => match i32::try_from(v) {
                Ok(i) => long(self.out, i64::from(i)),
                Err(_) => return err(format!("{v} is out of range for an int")),
            },
            Write::Long => long(self.out, v),
            node => return Ser { node, ..self }.mismatch(what),
        }
        Ok(())
    }
}

fn pick(plan: &WritePlan, u: &UnionWrite, kind: Kind<'_>) -> Option<u32> {
    let first = |f: &dyn Fn(&Write) -> bool| {
        u.branches
            .iter()
            .position(f)
            .and_then(|i| u32::try_from(i).ok())
    };
    match kind {
        Kind::Null => u.null,
        Kind::Bool => first(&|b| matches!(b, Write::Bool)),
        Kind::Int(v) if i32::try_from(v).is_ok() => {
            first(&|b| matches!(b, Write::Int)).or_else(|| first(&|b| matches!(b, Write::Long)))
        }
        Kind::Int(_) | Kind::Long => first(&|b| matches!(b, Write::Long)),
        Kind::Float => {
            first(&|b| matches!(b, Write::Float)).or_else(|| first(&|b| matches!(b, Write::Double)))
        }
        Kind::Double => first(&|b| matches!(b, Write::Double)),
        Kind::Str(s) => first(&|b| matches!(b, Write::Str))
            .or_else(|| first(&|b| matches!(b, Write::Enum(sym) if sym.iter().any(|x| &**x == s))))
            .or_else(|| first(&|b| matches!(b, Write::Bytes))),
        Kind::Bytes(n) => first(&|b| matches!(b, Write::Bytes))
            .or_else(|| first(&|b| matches!(b, Write::Fixed(m) if *m == n))),
        Kind::Seq => first(&|b| matches!(b, Write::Array(_))),
        Kind::Map => first(&|b| matches!(b, Write::Map(_)))
            .or_else(|| first(&|b| matches!(b, Write::Record(_)))),
        Kind::Record(name) => {
            first(&|b| matches!(b, Write::Record(r) if &*plan.records[*r].name == name))
                .or_else(|| first(&|b| matches!(b, Write::Record(_))))
                .or_else(|| first(&|b| matches!(b, Write::Map(_))))
        }
    }
}

impl<'p, 'o> ser::Serializer for Ser<'p, 'o> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Items<'p, 'o>;
    type SerializeTuple = Items<'p, 'o>;
    type SerializeTupleStruct = Items<'p, 'o>;
    type SerializeTupleVariant = Items<'p, 'o>;
    type SerializeMap = Entries<'p, 'o>;
    type SerializeStruct = Fields<'p, 'o>;
    type SerializeStructVariant = Fields<'p, 'o>;

    fn serialize_bool(mut self, v: bool) -> Result<(), EncodeError> {
        match self.node(Kind::Bool)? {
            Write::Bool => self.out.push(u8::from(v)),
            node => return Ser { node, ..self }.mismatch("bool"),
        }
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.int(i64::from(v), "i8")
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.int(i64::from(v), "i16")
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.int(i64::from(v), "i32")
    }
    fn serialize_i64(mut self, v: i64) -> Result<(), EncodeError> {
        match self.node(Kind::Long)? {
            Write::Long => long(self.out, v),
            node => return Ser { node, ..self }.int(v, "i64"),
        }
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.int(i64::from(v), "u8")
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.int(i64::from(v), "u16")
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.int(i64::from(v), "u32")
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        match i64::try_from(v) {
            Ok(v) => self.serialize_i64(v),
            Err(_) => err(format!("{v} is out of range for a long")),
        }
    }

    fn serialize_f32(mut self, v: f32) -> Result<(), EncodeError> {
        match self.node(Kind::Float)? {
            Write::Float => self.out.extend_from_slice(&v.to_le_bytes()),
            Write::Double => self.out.extend_from_slice(&f64::from(v).to_le_bytes()),
            node => return Ser { node, ..self }.mismatch("f32"),
        }
        Ok(())
    }

    fn serialize_f64(mut self, v: f64) -> Result<(), EncodeError> {
        match self.node(Kind::Double)? {
            Write::Double => self.out.extend_from_slice(&v.to_le_bytes()),
            node => return Ser { node, ..self }.mismatch("f64"),
        }
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(mut self, v: &str) -> Result<(), EncodeError> {
        match self.node(Kind::Str(v))? {
            Write::Str | Write::Bytes => bytes(self.out, v.as_bytes()),
            Write::Enum(symbols) => match symbols.iter().position(|s| &**s == v) {
                Some(i) => count(self.out, i),
                None => return err(format!("{v:?} is not a symbol of the enum")),
            },
            node => return Ser { node, ..self }.mismatch("string"),
        }
        Ok(())
    }

    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), EncodeError> {
        match self.node(Kind::Bytes(v.len()))? {
            Write::Bytes | Write::Str => bytes(self.out, v),
            Write::Fixed(n) if *n == v.len() => self.out.extend_from_slice(v),
            node => return Ser { node, ..self }.mismatch("byte array"),
        }
        Ok(())
    }

    fn serialize_none(mut self) -> Result<(), EncodeError> {
        match self.node(Kind::Null)? {
            Write::Null => Ok(()),
            node => Ser { node, ..self }.mismatch("None"),
        }
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), EncodeError> {
        match self.node {
            Write::Union(u) if u.option_of.is_some() => {
                let i = u.option_of.unwrap_or_default();
                long(self.out, i64::from(i));
                value.serialize(Ser {
                    node: &u.branches[i as usize],
                    ..self
                })
            }
            _ => value.serialize(self),
        }
    }

    fn serialize_unit(mut self) -> Result<(), EncodeError> {
        match self.node(Kind::Null)? {
            Write::Null => Ok(()),
            node => Ser { node, ..self }.mismatch("unit"),
        }
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        match self.node {
            Write::Enum(symbols) => {
                let i = match symbols.get(index as usize) {
                    Some(s) if &**s == variant => index as usize,
                    _ => symbols
                        .iter()
                        .position(|s| &**s == variant)
                        .ok_or_else(|| {
                            EncodeError(format!("{variant:?} is not a symbol of the enum"))
                        })?,
                };
                count(self.out, i);
                Ok(())
            }
            Write::Union(u) => match u.branches.get(index as usize) {
                Some(Write::Null) => {
                    long(self.out, i64::from(index));
                    Ok(())
                }
                _ => self.serialize_str(variant),
            },
            _ => self.serialize_str(variant),
        }
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        let Write::Union(u) = self.node else {
            return self.mismatch(&format!("variant {variant}"));
        };
        let Some(node) = u.branches.get(index as usize) else {
            return err(format!(
                "variant {index} ({variant}) is not a branch of the union"
            ));
        };
        long(self.out, i64::from(index));
        value.serialize(Ser { node, ..self })
    }

    fn serialize_seq(mut self, len: Option<usize>) -> Result<Items<'p, 'o>, EncodeError> {
        match self.node(Kind::Seq)? {
            Write::Array(item) => Ok(Items::new(self.plan, item, self.out, len)),
            node => Ser { node, ..self }.mismatch("sequence"),
        }
    }

    fn serialize_tuple(self, len: usize) -> Result<Items<'p, 'o>, EncodeError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Items<'p, 'o>, EncodeError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Items<'p, 'o>, EncodeError> {
        let Write::Union(u) = self.node else {
            return self.mismatch(&format!("variant {variant}"));
        };
        let Some(node) = u.branches.get(index as usize) else {
            return err(format!(
                "variant {index} ({variant}) is not a branch of the union"
            ));
        };
        long(self.out, i64::from(index));
        Ser { node, ..self }.serialize_seq(Some(len))
    }

    fn serialize_map(mut self, len: Option<usize>) -> Result<Entries<'p, 'o>, EncodeError> {
        match self.node(Kind::Map)? {
            Write::Map(value) => Ok(Entries::Map {
                items: Items::new(self.plan, value, self.out, len),
            }),
            Write::Record(i) => Ok(Entries::Record {
                fields: Fields::new(self.plan, &self.plan.records[*i], self.out),
                key: None,
            }),
            node => Ser { node, ..self }.mismatch("map"),
        }
    }

    fn serialize_struct(
        mut self,
        name: &'static str,
        _len: usize,
    ) -> Result<Fields<'p, 'o>, EncodeError> {
        match self.node(Kind::Record(name))? {
            Write::Record(i) => Ok(Fields::new(self.plan, &self.plan.records[*i], self.out)),
            node => Ser { node, ..self }.mismatch(&format!("struct {name}")),
        }
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Fields<'p, 'o>, EncodeError> {
        let Write::Union(u) = self.node else {
            return self.mismatch(&format!("variant {variant}"));
        };
        let Some(node) = u.branches.get(index as usize) else {
            return err(format!(
                "variant {index} ({variant}) is not a branch of the union"
            ));
        };
        long(self.out, i64::from(index));
        Ser { node, ..self }.serialize_struct(variant, len)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The items of an array (or the entries of a map): one block straight into the output when the
/// length is known, else written aside and then one block.
pub(crate) struct Items<'p, 'o> {
    plan: &'p WritePlan,
    item: &'p Write,
    out: &'o mut Vec<u8>,
    /// Unknown length: the items so far, and how many.
    aside: Option<(Vec<u8>, usize)>,
}

impl<'p, 'o> Items<'p, 'o> {
    fn new(plan: &'p WritePlan, item: &'p Write, out: &'o mut Vec<u8>, len: Option<usize>) -> Self {
        let aside = match len {
            Some(0) => None,
            Some(n) => {
                count(out, n);
                None
            }
            None => Some((Vec::new(), 0)),
        };
        Items {
            plan,
            item,
            out,
            aside,
        }
    }

    fn sink(&mut self) -> &mut Vec<u8> {
        match &mut self.aside {
            Some((buf, n)) => {
                *n += 1;
                buf
            }
            None => self.out,
        }
    }

    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        let (plan, item) = (self.plan, self.item);
        value.serialize(Ser {
            plan,
            node: item,
            out: self.sink(),
        })
    }

    fn finish(self) -> Result<(), EncodeError> {
        if let Some((buf, n)) = self.aside
            && n > 0
        {
            count(self.out, n);
            self.out.extend_from_slice(&buf);
        }
        self.out.push(0);
        Ok(())
    }
}

impl ser::SerializeSeq for Items<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Items<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Items<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Items<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

/// A serde map: an Avro map (keys as strings), or a record (keys as field names).
pub(crate) enum Entries<'p, 'o> {
    Map {
        items: Items<'p, 'o>,
    },
    Record {
        fields: Fields<'p, 'o>,
        key: Option<String>,
    },
}

impl ser::SerializeMap for Entries<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), EncodeError> {
        let k = key.serialize(Key)?;
        match self {
            Entries::Map { items } => bytes(items.sink(), k.as_bytes()),
            Entries::Record { key, .. } => *key = Some(k),
        }
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        match self {
            Entries::Map { items } => {
                let (plan, item) = (items.plan, items.item);
                let out = match &mut items.aside {
                    Some((buf, _)) => buf,
                    None => &mut *items.out,
                };
                value.serialize(Ser {
                    plan,
                    node: item,
                    out,
                })
            }
            Entries::Record { fields, key } => {
                let k = key
                    .take()
                    .ok_or_else(|| EncodeError("a value without its key".into()))?;
                fields.field(&k, value)
            }
        }
    }

    fn end(self) -> Result<(), EncodeError> {
        match self {
            Entries::Map { items } => items.finish(),
            Entries::Record { fields, .. } => fields.finish(),
        }
    }
}

/// A record's fields, written in schema order whatever order they come in.
pub(crate) struct Fields<'p, 'o> {
    plan: &'p WritePlan,
    record: &'p RecordWrite,
    out: &'o mut Vec<u8>,
    /// The schema index of the field to write next.
    next: usize,
    /// Fields that came before their turn, written aside (by schema index).
    early: Vec<Option<Vec<u8>>>,
}

impl<'p, 'o> Fields<'p, 'o> {
    fn new(plan: &'p WritePlan, record: &'p RecordWrite, out: &'o mut Vec<u8>) -> Self {
        Fields {
            plan,
            record,
            out,
            next: 0,
            early: Vec::new(),
        }
    }

    /// A field passed with a `&'static str` key (a struct's): the field in its turn is
    /// recognised by the key's address after the first record.
    #[inline]
    fn static_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        if let Some(f) = self.record.fields.get(self.next)
            && f.key.is(&f.name, key)
        {
            return self.in_turn(f, value);
        }
        self.out_of_turn(key, value)
    }

    /// A field passed with any key (a map's).
    fn field<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), EncodeError> {
        if let Some(f) = self.record.fields.get(self.next)
            && &*f.name == key
        {
            return self.in_turn(f, value);
        }
        self.out_of_turn(key, value)
    }

    /// Writes the field whose turn it is straight to the output.
    #[inline]
    fn in_turn<T: ?Sized + Serialize>(
        &mut self,
        f: &'p FieldWrite,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(Ser {
            plan: self.plan,
            node: &f.plan,
            out: self.out,
        })?;
        self.next += 1;
        if self.early.is_empty() {
            return Ok(());
        }
        self.catch_up()
    }

    /// Writes a field that came before its turn aside.
    fn out_of_turn<T: ?Sized + Serialize>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), EncodeError> {
        let fields = &self.record.fields;
        let Some(i) = fields.iter().position(|f| &*f.name == key) else {
            return err(format!(
                "field {key} is not in the schema of record {}",
                self.record.name
            ));
        };
        if self.early.is_empty() {
            self.early.resize_with(fields.len(), || None);
        }
        if i < self.next || self.early[i].is_some() {
            return err(format!("field {key} given twice"));
        }
        let mut buf = Vec::new();
        value.serialize(Ser {
            plan: self.plan,
            node: &fields[i].plan,
            out: &mut buf,
        })?;
        self.early[i] = Some(buf);
        Ok(())
    }

    /// Writes the fields written aside whose turn has come.
    #[cold]
    fn catch_up(&mut self) -> Result<(), EncodeError> {
        if self.early.is_empty() {
            return Ok(());
        }
        while let Some(Some(buf)) = self.early.get_mut(self.next).map(Option::take) {
            self.out.extend_from_slice(&buf);
            self.next += 1;
        }
        Ok(())
    }

    #[inline]
    fn finish(self) -> Result<(), EncodeError> {
        if self.next == self.record.fields.len() {
            return Ok(());
        }
        self.fill()
    }

    /// Writes the fields that have not come: those written aside, and the defaults of the rest.
    #[cold]
    fn fill(mut self) -> Result<(), EncodeError> {
        self.catch_up()?;
        while let Some(f) = self.record.fields.get(self.next) {
            match &f.default {
                Some(d) => self.out.extend_from_slice(d),
                None => {
                    return err(format!(
                        "field {} of record {} is missing and has no default",
                        f.name, self.record.name
                    ));
                }
            }
            self.next += 1;
            self.catch_up()?;
        }
        Ok(())
    }
}

impl ser::SerializeStruct for Fields<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.static_field(key, value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), EncodeError> {
        // Its default is written in its place at the end.
        Ok(())
    }

    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Fields<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.static_field(key, value)
    }

    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}
