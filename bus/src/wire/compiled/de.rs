//! The decoder: a `serde::Deserializer` that walks a [`ReadPlan`] over an Avro body, handing
//! serde each value as the reader's schema has it (promoted, mapped, defaulted) with no generic
//! value in between. Strings and bytes are borrowed from the body.
//!
//! The plan says what comes next, so the format is self-describing to serde: every
//! `deserialize_*` call is answered by the plan's node (`deserialize_any`), except an `Option`
//! (a null union branch is `None`), an enum (its symbol, or a union branch by index), a struct
//! whose fields are the record's in order (a sequence, by position) and an ignored value
//! (skipped by type).

use serde::de::{self, DeserializeSeed, Visitor};

use super::default_de::{DvDe, byte_seq};
use super::malformed;
use super::plan::{Num, Read, ReadPlan, Skip, Step};
use crate::error::DecodeError;
use choreo_schemas::binary::Input;

/// Deserializes one value of `node` from `input`.
pub(crate) struct De<'p, 'i, 'de> {
    pub(crate) plan: &'p ReadPlan,
    pub(crate) node: &'p Read,
    pub(crate) input: &'i mut Input<'de>,
}

impl<'p, 'de> De<'p, '_, 'de> {
    fn at<'j>(&'j mut self, node: &'p Read) -> De<'p, 'j, 'de> {
        De {
            plan: self.plan,
            node,
            input: self.input,
        }
    }

    /// Reads record `i` of the plan: its fields as a sequence, by position (`by_position`: the
    /// struct's fields are the record's, in order, see
    /// [`RecordRead::in_order`](super::plan::RecordRead::in_order)), or as a map, by name.
    fn record<V: Visitor<'de>>(
        self,
        i: usize,
        by_position: bool,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let record = &self.plan.records[i];
        if let Some(why) = &record.fail {
            return Err(malformed(why.as_ref()));
        }
        self.input.enter()?;
        let mut fields = Fields {
            plan: self.plan,
            input: &mut *self.input,
            steps: record.steps.iter(),
            defaults: record.defaults.iter(),
            next: Next::None,
        };
        let v = if by_position {
            visitor
                .visit_seq(&mut fields)
                .and_then(|v| fields.rest().map(|()| v))
        } else {
            visitor.visit_map(fields)
        };
        self.input.leave();
        v
    }

    /// Follows a writer union to its branch (reading the index), repeatedly.
    #[inline]
    fn branch(&mut self) -> Result<&'p Read, DecodeError> {
        match self.node {
            Read::WriterUnion(_) => self.branch_of_union(),
            node => Ok(node),
        }
    }

    fn branch_of_union(&mut self) -> Result<&'p Read, DecodeError> {
        let mut node = self.node;
        while let Read::WriterUnion(branches) = node {
            node = &branches[self.input.branch(branches.len())?];
        }
        Ok(node)
    }
}

fn number<'de, V: Visitor<'de>>(num: Num, i: i64, visitor: V) -> Result<V::Value, DecodeError> {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    match num {
        Num::I32 => match i32::try_from(i) {
            Ok(v) => visitor.visit_i32(v),
            Err(_) => Err(malformed(format!("{i} is out of range for an int"))),
        },
        Num::I64 => visitor.visit_i64(i),
        Num::F32 => visitor.visit_f32(i as f32),
        Num::F64 => visitor.visit_f64(i as f64),
    }
}

impl<'de> de::Deserializer<'de> for De<'_, '_, 'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        let node = self.branch()?;
        let input = &mut *self.input;
        match node {
            Read::Null => visitor.visit_unit(),
            Read::Bool => visitor.visit_bool(input.boolean()?),
            Read::Int(num) => number(*num, i64::from(input.int()?), visitor),
            Read::Long(num) => number(*num, input.long()?, visitor),
            Read::Float(Num::F64) => visitor.visit_f64(f64::from(input.float()?)),
            Read::Float(_) => visitor.visit_f32(input.float()?),
            Read::Double => visitor.visit_f64(input.double()?),
            Read::Bytes { as_str: false } | Read::Str { as_bytes: true } => {
                visitor.visit_borrowed_bytes(input.bytes()?)
            }
            Read::Bytes { as_str: true } | Read::Str { as_bytes: false } => {
                visitor.visit_borrowed_str(input.str()?)
            }
            Read::Fixed(n) => visitor.visit_borrowed_bytes(input.take(*n, "a fixed")?),
            Read::Enum(symbols) => visitor.visit_str(symbol(input, symbols)?),
            Read::Array(item) => {
                input.enter()?;
                let v = visitor.visit_seq(Block::new(self.plan, item, input));
                self.input.leave();
                v
            }
            Read::Map(value) => {
                input.enter()?;
                let v = visitor.visit_map(Block::new(self.plan, value, input));
                self.input.leave();
                v
            }
            Read::Record(i) => self.record(*i, false, visitor),
            Read::ReaderUnion { inner, .. } => self.at(inner).deserialize_any(visitor),
            Read::Fail(why) => Err(malformed(why.as_ref())),
            Read::WriterUnion(_) => Err(malformed("a union directly inside a union")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.branch()? {
            Read::Null => visitor.visit_none(),
            Read::ReaderUnion { null: true, .. } => visitor.visit_none(),
            Read::ReaderUnion { inner, .. } => visitor.visit_some(self.at(inner)),
            node => visitor.visit_some(self.at(node)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.branch()? {
            Read::Enum(symbols) => visitor.visit_enum(de::value::StrDeserializer::new(symbol(
                self.input, symbols,
            )?)),
            Read::Str { as_bytes: false } => {
                visitor.visit_enum(de::value::BorrowedStrDeserializer::new(self.input.str()?))
            }
            Read::ReaderUnion { index, inner, .. } => visitor.visit_enum(Variant {
                index: *index,
                de: self.at(inner),
            }),
            node => self.at(node).deserialize_any(visitor).map_err(|e| match e {
                DecodeError::Malformed(m) => {
                    malformed(format!("{m} (read as enum {name} of {variants:?})"))
                }
                e => e,
            }),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.branch()? {
            Read::Record(i) => {
                let by_position = self.plan.records[*i].in_order(fields);
                self.record(*i, by_position, visitor)
            }
            Read::ReaderUnion { inner, .. } => {
                self.at(inner).deserialize_struct(name, fields, visitor)
            }
            node => self.at(node).deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_str<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.branch()? {
            // A reader type that wants text gets bytes as text, checked.
            Read::Bytes { .. } | Read::Str { .. } => visitor.visit_borrowed_str(self.input.str()?),
            Read::Fixed(n) => {
                let b = self.input.take(*n, "a fixed")?;
                visitor.visit_borrowed_str(
                    std::str::from_utf8(b)
                        .map_err(|e| malformed(format!("a fixed that is not UTF-8: {e}")))?,
                )
            }
            node => self.at(node).deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.branch()? {
            Read::Bytes { .. } | Read::Str { .. } => {
                visitor.visit_borrowed_bytes(self.input.bytes()?)
            }
            node => self.at(node).deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.branch()? {
            // A sequence type (`Vec<u8>`) reading bytes gets them one by one.
            Read::Bytes { .. } | Read::Str { .. } => byte_seq(self.input.bytes()?, visitor),
            Read::Fixed(n) => byte_seq(self.input.take(*n, "a fixed")?, visitor),
            node => self.at(node).deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        skip_read(self.plan, self.node, self.input)?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        unit unit_struct tuple_struct map identifier
    }
}

/// An enum's symbol, by the writer's index.
fn symbol<'p>(
    input: &mut Input<'_>,
    symbols: &'p [Result<Box<str>, Box<str>>],
) -> Result<&'p str, DecodeError> {
    let i = input.long()?;
    match usize::try_from(i).ok().and_then(|i| symbols.get(i)) {
        Some(Ok(s)) => Ok(s),
        Some(Err(why)) => Err(malformed(why.as_ref())),
        None => Err(malformed(format!(
            "enum index {i} out of range (0..{})",
            symbols.len()
        ))),
    }
}

/// A reader union branch as a Rust enum variant, identified by its index.
struct Variant<'p, 'i, 'de> {
    index: u32,
    de: De<'p, 'i, 'de>,
}

impl<'p, 'i, 'de> de::EnumAccess<'de> for Variant<'p, 'i, 'de> {
    type Error = DecodeError;
    type Variant = De<'p, 'i, 'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DecodeError> {
        let v = seed.deserialize(de::value::U32Deserializer::<DecodeError>::new(self.index))?;
        Ok((v, self.de))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_, '_, 'de> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<(), DecodeError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

/// The items of an array (or entries of a map), block by block.
struct Block<'p, 'i, 'de> {
    plan: &'p ReadPlan,
    item: &'p Read,
    input: &'i mut Input<'de>,
    /// Items left in the current block.
    left: usize,
    total: usize,
    done: bool,
}

impl<'p, 'i, 'de> Block<'p, 'i, 'de> {
    fn new(plan: &'p ReadPlan, item: &'p Read, input: &'i mut Input<'de>) -> Self {
        Block {
            plan,
            item,
            input,
            left: 0,
            total: 0,
            done: false,
        }
    }

    /// Whether another item follows (reading the next block's count when one is used up).
    fn more(&mut self) -> Result<bool, DecodeError> {
        while self.left == 0 {
            if self.done {
                return Ok(false);
            }
            self.left = self.input.block(&mut self.total)?;
            if self.left == 0 {
                self.done = true;
            }
        }
        self.left -= 1;
        Ok(true)
    }

    fn value(&mut self) -> De<'p, '_, 'de> {
        De {
            plan: self.plan,
            node: self.item,
            input: self.input,
        }
    }
}

impl<'de> de::SeqAccess<'de> for Block<'_, '_, 'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        if !self.more()? {
            return Ok(None);
        }
        seed.deserialize(self.value()).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // The current block's count, only ever a hint (serde caps what it preallocates).
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Block<'_, '_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        if !self.more()? {
            return Ok(None);
        }
        let key = self.input.str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        seed.deserialize(self.value())
    }
}

/// What a record's next value is.
enum Next<'p> {
    None,
    Read(&'p Read),
    Default(&'p super::defaults::Dv),
}

/// A record's fields: the writer's in order (skipping those the reader lacks), then the
/// reader's defaults; handed over as a map (by name) or, to a struct whose fields they are in
/// order, as a sequence (by position).
struct Fields<'p, 'i, 'de> {
    plan: &'p ReadPlan,
    input: &'i mut Input<'de>,
    steps: std::slice::Iter<'p, Step>,
    defaults: std::slice::Iter<'p, (Box<str>, super::defaults::Dv)>,
    next: Next<'p>,
}

impl<'p, 'de> Fields<'p, '_, 'de> {
    /// The next field the reader has: its name and where its value comes from (skipping the
    /// writer fields before it that the reader lacks).
    #[inline]
    fn field(&mut self) -> Result<Option<(&'p str, Next<'p>)>, DecodeError> {
        for step in self.steps.by_ref() {
            match step {
                Step::Skip(s) => skip(self.plan, s, self.input)?,
                Step::Read(name, node) => return Ok(Some((name, Next::Read(node)))),
            }
        }
        Ok(self
            .defaults
            .next()
            .map(|(name, dv)| (&**name, Next::Default(dv))))
    }

    fn value<V: DeserializeSeed<'de>>(
        &mut self,
        next: Next<'p>,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        match next {
            Next::Read(node) => seed.deserialize(De {
                plan: self.plan,
                node,
                input: self.input,
            }),
            Next::Default(dv) => seed.deserialize(DvDe(dv)),
            Next::None => Err(malformed("a record value asked for before its field")),
        }
    }

    /// Reads past the fields a struct read by position did not take (the writer fields the
    /// reader lacks after its last one).
    fn rest(&mut self) -> Result<(), DecodeError> {
        while let Some((_, next)) = self.field()? {
            if let Next::Read(node) = next {
                skip_read(self.plan, node, self.input)?;
            }
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for Fields<'_, '_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some((name, next)) = self.field()? else {
            return Ok(None);
        };
        self.next = next;
        seed.deserialize(de::value::StrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let next = std::mem::replace(&mut self.next, Next::None);
        self.value(next, seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.steps.len() + self.defaults.len())
    }
}

impl<'de> de::SeqAccess<'de> for Fields<'_, '_, 'de> {
    type Error = DecodeError;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.field()? {
            Some((_, next)) => self.value(next, seed).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.steps.len() + self.defaults.len())
    }
}

/// Skips a writer value the reader does not have.
pub(crate) fn skip(plan: &ReadPlan, s: &Skip, input: &mut Input<'_>) -> Result<(), DecodeError> {
    input.enter()?;
    skip_in(plan, s, input)?;
    input.leave();
    Ok(())
}

fn skip_in(plan: &ReadPlan, s: &Skip, input: &mut Input<'_>) -> Result<(), DecodeError> {
    match s {
        Skip::Null => {}
        Skip::Bool => {
            input.boolean()?;
        }
        Skip::Int => {
            input.int()?;
        }
        Skip::Long => {
            input.long()?;
        }
        Skip::Float => {
            input.take(4, "a float")?;
        }
        Skip::Double => {
            input.take(8, "a double")?;
        }
        Skip::Bytes { utf8: false } => {
            input.bytes()?;
        }
        Skip::Bytes { utf8: true } => {
            input.str()?;
        }
        Skip::Fixed(n) => {
            input.take(*n, "a fixed")?;
        }
        Skip::Enum(n) => {
            input
                .branch(*n)
                .map_err(|_| malformed("enum index out of range"))?;
        }
        Skip::Array(item) | Skip::Map(item) => {
            input.each_item(matches!(s, Skip::Map(_)), |input| skip(plan, item, input))?;
        }
        Skip::Union(branches) => {
            let i = input.branch(branches.len())?;
            skip(plan, &branches[i], input)?;
        }
        Skip::Record(i) => {
            for f in &plan.skips[*i] {
                skip(plan, f, input)?;
            }
        }
    }
    Ok(())
}

/// Skips a value the reader has but the Rust type ignores (read as a writer value, checked).
fn skip_read(plan: &ReadPlan, node: &Read, input: &mut Input<'_>) -> Result<(), DecodeError> {
    input.enter()?;
    skip_read_in(plan, node, input)?;
    input.leave();
    Ok(())
}

fn skip_read_in(plan: &ReadPlan, node: &Read, input: &mut Input<'_>) -> Result<(), DecodeError> {
    match node {
        Read::Null | Read::ReaderUnion { null: true, .. } => {}
        Read::Bool => skip(plan, &Skip::Bool, input)?,
        Read::Int(_) => skip(plan, &Skip::Int, input)?,
        Read::Long(_) => skip(plan, &Skip::Long, input)?,
        Read::Float(_) => skip(plan, &Skip::Float, input)?,
        Read::Double => skip(plan, &Skip::Double, input)?,
        Read::Bytes { as_str } => skip(plan, &Skip::Bytes { utf8: *as_str }, input)?,
        Read::Str { .. } => skip(plan, &Skip::Bytes { utf8: true }, input)?,
        Read::Fixed(n) => skip(plan, &Skip::Fixed(*n), input)?,
        Read::Enum(symbols) => {
            symbol(input, symbols)?;
        }
        Read::Array(item) | Read::Map(item) => {
            input.each_item(matches!(node, Read::Map(_)), |input| {
                skip_read(plan, item, input)
            })?;
        }
        Read::Record(i) => {
            let record = &plan.records[*i];
            if let Some(why) = &record.fail {
                return Err(malformed(why.as_ref()));
            }
            for step in &record.steps {
                match step {
                    Step::Read(_, node) => skip_read(plan, node, input)?,
                    Step::Skip(s) => skip(plan, s, input)?,
                }
            }
        }
        Read::WriterUnion(branches) => {
            let i = input.branch(branches.len())?;
            skip_read(plan, &branches[i], input)?;
        }
        Read::ReaderUnion { inner, .. } => skip_read(plan, inner, input)?,
        Read::Fail(why) => return Err(malformed(why.as_ref())),
    }
    Ok(())
}
