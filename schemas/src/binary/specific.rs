//! Specific records: Avro binary written and read by code made for each Rust type, as the Avro
//! project's generated specific records do with their custom coders.
//!
//! [`specific_record!`](crate::specific_record) implements [`Specific`] for a struct from its
//! field list: `write` appends each field in turn, `read` builds the struct straight from the
//! bytes. No serde visitor and no plan interpretation stands between the bytes and the fields.
//!
//! Reading is planned once per (writer schema, reader schema) pair ([`Coder::plan`]):
//! - a writer record whose fields are the reader's, in order, is read field by field (the
//!   common case: the same schema);
//! - otherwise the writer's fields are read in the writer's order, writer fields the reader
//!   lacks are skipped by type, and reader fields the writer lacks get their defaults (written
//!   once into Avro bytes at planning, then read as if written).
//!
//! A pair this planner does not take returns `Err(why)`: type promotions (`int` to `long`,
//! `bytes` to `string`…), unions, enums, maps, aliases, renamed records, a Rust type whose
//! fields are not its schema's in name, order and type. The caller then uses a general codec
//! (the bus's compiled codec, which resolves every case the Avro specification has).
//!
//! Every read is checked as [`Input`] checks it: a body cut short or malformed is an error,
//! never a panic, and nothing is allocated by a length before it is checked.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use apache_avro::Schema;
use serde::de::DeserializeOwned;

use super::names::{Base, Names};
use super::{BinaryError, Input, malformed, write_bytes, write_count, write_long};

/// A type whose Avro binary is written and read by code made for it.
pub trait Specific: Sized {
    /// Appends this value's Avro binary (as written with the type's own schema).
    fn write(&self, out: &mut Vec<u8>);
    /// Reads one value as `plan` (made by [`Specific::plan`]) says.
    fn read(input: &mut Input<'_>, plan: &Plan) -> Result<Self, BinaryError>;
    /// How this type reads data written with `writer` when its own schema is `reader`;
    /// `Err(why)` when it cannot (see the module's documentation).
    fn plan<'s>(writer: &'s Schema, reader: &'s Schema, cx: &Cx<'s>) -> Result<Plan, String>;
}

/// How to read one value: made once per writer and reader schema.
#[derive(Debug)]
pub enum Plan {
    /// A primitive, read as it was written.
    Leaf,
    /// An array, its items read with this plan.
    Array(Box<Plan>),
    /// A record.
    Record(RecordPlan),
}

impl Plan {
    /// The record plan this is (malformed when it is not: a plan made for another type).
    #[inline]
    pub fn record(&self) -> Result<&RecordPlan, BinaryError> {
        match self {
            Plan::Record(r) => Ok(r),
            _ => Err(malformed("a record read with another type's plan")),
        }
    }
}

/// How a record's fields are read.
#[derive(Debug)]
pub struct RecordPlan {
    /// `Some`: the writer's fields are the reader's, in order, each read with its plan.
    in_order: Option<Box<[Plan]>>,
    /// Otherwise: the writer's fields in the writer's order, then the reader's defaults.
    steps: Box<[Step]>,
}

impl RecordPlan {
    /// The plans of the reader's fields when the writer wrote exactly those, in that order.
    #[inline]
    pub fn in_order(&self) -> Option<&[Plan]> {
        self.in_order.as_deref()
    }

    /// What to do, in turn, when the fields are not the reader's in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// One step of reading a record whose writer fields are not the reader's, in order.
#[derive(Debug)]
pub enum Step {
    /// The reader's field of this index, written by the writer: read with the plan.
    Field(usize, Plan),
    /// A writer field the reader lacks: skipped.
    Skip(Skip),
    /// The reader's field of this index, which the writer lacks: its default, as Avro bytes
    /// read with the plan.
    Default(usize, Box<[u8]>, Plan),
}

/// How to pass over a writer value the reader does not have (every read checked).
#[derive(Debug)]
pub enum Skip {
    /// `null`: nothing.
    Null,
    /// A boolean.
    Bool,
    /// An `int` or `long`.
    Varint,
    /// A `float` (4 bytes) or `double` (8) or `fixed` of this size.
    Fixed(usize),
    /// `bytes`.
    Bytes,
    /// A `string` (checked to be UTF-8, as reading it would).
    Str,
    /// An enum of this many symbols.
    Enum(usize),
    /// An array of these items.
    Array(Box<Skip>),
    /// A map of these values.
    Map(Box<Skip>),
    /// A union of these branches.
    Union(Box<[Skip]>),
    /// A record of these fields.
    Record(Box<[Skip]>),
}

impl Skip {
    /// Passes over one value.
    pub fn skip(&self, input: &mut Input<'_>) -> Result<(), BinaryError> {
        input.enter()?;
        self.skip_in(input)?;
        input.leave();
        Ok(())
    }

    fn skip_in(&self, input: &mut Input<'_>) -> Result<(), BinaryError> {
        match self {
            Skip::Null => {}
            Skip::Bool => {
                input.boolean()?;
            }
            Skip::Varint => {
                input.long()?;
            }
            Skip::Fixed(n) => {
                input.take(*n, "a fixed-size value")?;
            }
            Skip::Bytes => {
                input.bytes()?;
            }
            Skip::Str => {
                input.str()?;
            }
            Skip::Enum(n) => {
                input
                    .branch(*n)
                    .map_err(|_| malformed("enum index out of range"))?;
            }
            Skip::Array(item) | Skip::Map(item) => {
                input.each_item(matches!(self, Skip::Map(_)), |input| item.skip(input))?;
            }
            Skip::Union(branches) => {
                let i = input.branch(branches.len())?;
                branches[i].skip(input)?;
            }
            Skip::Record(fields) => {
                for f in fields {
                    f.skip(input)?;
                }
            }
        }
        Ok(())
    }
}

/// How deep a plan may nest: a recursive type is left to the general codec.
const MAX_PLAN_DEPTH: u32 = 32;

/// The writer's and the reader's named types, while a plan is made.
#[derive(Debug)]
pub struct Cx<'s> {
    writer: Names<'s>,
    reader: Names<'s>,
    depth: Cell<u32>,
}

impl<'s> Cx<'s> {
    fn new(writer: &'s Schema, reader: &'s Schema) -> Result<Self, String> {
        Ok(Cx {
            writer: Names::of(writer)?,
            reader: Names::of(reader)?,
            depth: Cell::new(0),
        })
    }

    /// The reader's names on both sides: for planning how a default, written with the
    /// reader's schema, is read.
    fn own(&self) -> Self {
        Cx {
            writer: self.reader.clone(),
            reader: self.reader.clone(),
            depth: Cell::new(self.depth.get()),
        }
    }

    fn bases(
        &self,
        writer: &'s Schema,
        reader: &'s Schema,
    ) -> Result<(Base<'s>, Base<'s>), String> {
        Ok((self.writer.base(writer)?, self.reader.base(reader)?))
    }

    fn enter(&self) -> Result<(), String> {
        let d = self.depth.get() + 1;
        if d > MAX_PLAN_DEPTH {
            return Err(format!("types nested over {MAX_PLAN_DEPTH} deep"));
        }
        self.depth.set(d);
        Ok(())
    }

    fn leave(&self) {
        self.depth.set(self.depth.get() - 1);
    }

    /// How to pass over a writer value of `schema`.
    fn skip(&self, schema: &'s Schema) -> Result<Skip, String> {
        self.enter()?;
        let skip = match self.writer.base(schema)? {
            Base::Null => Skip::Null,
            Base::Bool => Skip::Bool,
            Base::Int | Base::Long => Skip::Varint,
            Base::Float => Skip::Fixed(4),
            Base::Double => Skip::Fixed(8),
            Base::Fixed(n, _) => Skip::Fixed(n),
            Base::Bytes => Skip::Bytes,
            Base::Str => Skip::Str,
            Base::Enum(e) => Skip::Enum(e.symbols.len()),
            Base::Array(item) => Skip::Array(Box::new(self.skip(item)?)),
            Base::Map(value) => Skip::Map(Box::new(self.skip(value)?)),
            Base::Union(branches) => Skip::Union(
                branches
                    .iter()
                    .map(|b| self.skip(b))
                    .collect::<Result<_, _>>()?,
            ),
            Base::Record(r) => Skip::Record(
                r.fields
                    .iter()
                    .map(|f| self.skip(&f.schema))
                    .collect::<Result<_, _>>()?,
            ),
        };
        self.leave();
        Ok(skip)
    }

    /// A leaf: the writer's and the reader's type are both the one the Rust type is (`is`),
    /// named `what` in the error.
    pub fn leaf(
        &self,
        writer: &'s Schema,
        reader: &'s Schema,
        is: fn(&Base<'_>) -> bool,
        what: &str,
    ) -> Result<Plan, String> {
        let (w, r) = self.bases(writer, reader)?;
        if !is(&r) {
            return Err(format!(
                "a Rust {what} read as the schema's {}",
                super::names::describe(&r)
            ));
        }
        if !is(&w) {
            return Err(format!(
                "a {what} written as {} (a promotion, left to the general codec)",
                super::names::describe(&w)
            ));
        }
        Ok(Plan::Leaf)
    }
}

/// How a record type whose fields are `fields` (their names, in order) reads a writer record:
/// `plans[i]` plans field `i`'s type, `defaults[i]` writes its default.
pub fn record_plan<'s>(
    writer: &'s Schema,
    reader: &'s Schema,
    cx: &Cx<'s>,
    fields: &[&str],
    plans: &[PlanFn],
    defaults: &[DefaultFn],
) -> Result<Plan, String> {
    let (Base::Record(w), Base::Record(r)) = cx.bases(writer, reader)? else {
        return Err("a Rust struct read as a schema that is not a record".into());
    };
    if w.name.name() != r.name.name() {
        return Err(format!(
            "record {} read as {} (a renamed record, left to the general codec)",
            w.name, r.name
        ));
    }
    let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
    if names != fields {
        return Err(format!(
            "the type's fields {fields:?} are not its schema's {names:?}"
        ));
    }
    if r.fields.iter().any(|f| !f.aliases.is_empty()) {
        return Err("a reader field has aliases (left to the general codec)".into());
    }
    cx.enter()?;
    let mut steps = Vec::with_capacity(w.fields.len());
    let mut written = vec![false; fields.len()];
    for wf in &w.fields {
        match fields.iter().position(|n| *n == wf.name) {
            Some(i) if !written[i] => {
                written[i] = true;
                steps.push(Step::Field(
                    i,
                    plans[i](&wf.schema, &r.fields[i].schema, cx)?,
                ));
            }
            Some(_) => return Err(format!("the writer has field {} twice", wf.name)),
            None => steps.push(Step::Skip(cx.skip(&wf.schema)?)),
        }
    }
    for (i, f) in r.fields.iter().enumerate().filter(|(i, _)| !written[*i]) {
        let default = f.default.as_ref().ok_or_else(|| {
            format!(
                "the reader's field {} has no default and the writer lacks it",
                f.name
            )
        })?;
        let (bytes, plan) = defaults[i](default, &f.schema, &cx.own())?;
        steps.push(Step::Default(i, bytes, plan));
    }
    cx.leave();
    let in_order = steps.len() == fields.len()
        && steps
            .iter()
            .enumerate()
            .all(|(k, s)| matches!(s, Step::Field(i, _) if *i == k));
    Ok(Plan::Record(if in_order {
        RecordPlan {
            in_order: Some(
                steps
                    .into_iter()
                    .filter_map(|s| match s {
                        Step::Field(_, p) => Some(p),
                        _ => None,
                    })
                    .collect(),
            ),
            steps: Box::default(),
        }
    } else {
        RecordPlan {
            in_order: None,
            steps: steps.into(),
        }
    }))
}

/// Plans one field's type (a type's [`Specific::plan`]).
pub type PlanFn = for<'s> fn(&'s Schema, &'s Schema, &Cx<'s>) -> Result<Plan, String>;

/// Writes one field's default (given as the schema's JSON) into Avro bytes, with the plan that
/// reads them back ([`default_of`]).
pub type DefaultFn =
    for<'s> fn(&serde_json::Value, &'s Schema, &Cx<'s>) -> Result<(Box<[u8]>, Plan), String>;

/// A field's default of type `T`: the JSON value read as `T`, written as Avro, and the plan
/// that reads it back.
pub fn default_of<'s, T: Specific + DeserializeOwned>(
    json: &serde_json::Value,
    schema: &'s Schema,
    cx: &Cx<'s>,
) -> Result<(Box<[u8]>, Plan), String> {
    let plan = T::plan(schema, schema, cx)?;
    let value: T = serde_json::from_value(json.clone())
        .map_err(|e| format!("the default {json} does not fit the field's type: {e}"))?;
    let mut out = Vec::new();
    value.write(&mut out);
    Ok((out.into(), plan))
}

/// A type's specific coder, as a value: what the bus keeps per event type.
pub struct Coder<T> {
    /// Appends a value's Avro binary (with the type's own schema).
    pub write: fn(&T, &mut Vec<u8>),
    read: fn(&mut Input<'_>, &Plan) -> Result<T, BinaryError>,
    plan: PlanFn,
}

impl<T> std::fmt::Debug for Coder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coder")
    }
}

impl<T> Clone for Coder<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Coder<T> {}

impl<T: Specific> Coder<T> {
    /// The coder of `T`.
    pub const fn of() -> Self {
        Coder {
            write: T::write,
            read: T::read,
            plan: T::plan,
        }
    }
}

impl<T> Coder<T> {
    /// How data written with `writer` is read as `T`, whose schema is `reader`; `Err(why)`
    /// when this coder does not take the pair (a general codec then must).
    pub fn plan(&self, writer: &Schema, reader: &Schema) -> Result<Plan, String> {
        let cx = Cx::new(writer, reader)?;
        (self.plan)(writer, reader, &cx)
    }

    /// Whether this coder writes `schema`'s data: the type's fields are the schema's in name,
    /// order and type (planning the schema against itself succeeds).
    pub fn writes(&self, schema: &Schema) -> Result<(), String> {
        self.plan(schema, schema).map(drop)
    }

    /// Reads the whole of `body` as `plan` says (bytes left over are malformed).
    #[inline]
    pub fn read_whole(&self, body: &[u8], plan: &Plan) -> Result<T, BinaryError> {
        let mut input = Input::new(body);
        let value = (self.read)(&mut input, plan)?;
        if !input.rest.is_empty() {
            return Err(malformed(format!(
                "{} bytes left over after the Avro body",
                input.rest.len()
            )));
        }
        Ok(value)
    }
}

/// A type's specific coder checked to write the type's own schema, kept once per type (see
/// [`Event::specific_writer`](crate::Event::specific_writer)): what publishing uses with no
/// lookup at all.
#[derive(Debug)]
pub struct SpecificWriter<T> {
    coder: Coder<T>,
    /// The longest body written so far (at least 64): the next output's capacity.
    longest: AtomicUsize,
}

impl<T> SpecificWriter<T> {
    /// `coder`, when it writes `schema` (the type's fields are the schema's in name, order and
    /// type); `None`, with a warning naming `event_type` and why, when it does not (the general
    /// codec then writes the type).
    pub fn checked(coder: Coder<T>, schema: &Schema, event_type: &str) -> Option<Self> {
        match coder.writes(schema) {
            Ok(()) => Some(SpecificWriter {
                coder,
                longest: AtomicUsize::new(64),
            }),
            Err(why) => {
                tracing::warn!(event_type, %why,
                    "the type's specific coder does not write its schema; the general codec does");
                None
            }
        }
    }

    /// Appends `value`'s Avro body to `out`.
    #[inline]
    pub fn write(&self, value: &T, out: &mut Vec<u8>) {
        let start = out.len();
        (self.coder.write)(value, out);
        self.longest.fetch_max(out.len() - start, Ordering::Relaxed);
    }

    /// The longest body written so far (at least 64): a good capacity for the next one.
    #[inline]
    pub fn capacity_hint(&self) -> usize {
        self.longest.load(Ordering::Relaxed)
    }
}

impl Specific for String {
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        write_bytes(out, self.as_bytes());
    }

    #[inline]
    fn read(input: &mut Input<'_>, _: &Plan) -> Result<Self, BinaryError> {
        input.str().map(str::to_owned)
    }

    fn plan<'s>(writer: &'s Schema, reader: &'s Schema, cx: &Cx<'s>) -> Result<Plan, String> {
        cx.leaf(writer, reader, |b| matches!(b, Base::Str), "String")
    }
}

macro_rules! leaf {
    ($t:ty, $base:pat, $what:literal, |$v:ident, $out:ident| $write:expr, |$input:ident| $read:expr) => {
        impl Specific for $t {
            #[inline]
            fn write(&self, $out: &mut Vec<u8>) {
                let $v = *self;
                $write
            }

            #[inline]
            fn read($input: &mut Input<'_>, _: &Plan) -> Result<Self, BinaryError> {
                $read
            }

            fn plan<'s>(
                writer: &'s Schema,
                reader: &'s Schema,
                cx: &Cx<'s>,
            ) -> Result<Plan, String> {
                cx.leaf(writer, reader, |b| matches!(b, $base), $what)
            }
        }
    };
}

leaf!(
    i32,
    Base::Int,
    "i32",
    |v, out| write_long(out, i64::from(v)),
    |input| input.int()
);
leaf!(
    i64,
    Base::Long,
    "i64",
    |v, out| write_long(out, v),
    |input| input.long()
);
leaf!(
    bool,
    Base::Bool,
    "bool",
    |v, out| out.push(u8::from(v)),
    |input| input.boolean()
);
leaf!(
    f32,
    Base::Float,
    "f32",
    |v, out| out.extend_from_slice(&v.to_le_bytes()),
    |input| input.float()
);
leaf!(
    f64,
    Base::Double,
    "f64",
    |v, out| out.extend_from_slice(&v.to_le_bytes()),
    |input| input.double()
);

impl<T: Specific> Specific for Vec<T> {
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        if !self.is_empty() {
            write_count(out, self.len());
            for item in self {
                item.write(out);
            }
        }
        out.push(0);
    }

    fn read(input: &mut Input<'_>, plan: &Plan) -> Result<Self, BinaryError> {
        let Plan::Array(item) = plan else {
            return Err(malformed("an array read with another type's plan"));
        };
        input.enter()?;
        let mut items = Vec::new();
        let mut total = 0;
        loop {
            let n = input.block(&mut total)?;
            if n == 0 {
                break;
            }
            // A count is only a claim until its items are read: reserve a little at a time.
            items.reserve(n.min(64));
            for _ in 0..n {
                items.push(T::read(input, item)?);
            }
        }
        input.leave();
        Ok(items)
    }

    fn plan<'s>(writer: &'s Schema, reader: &'s Schema, cx: &Cx<'s>) -> Result<Plan, String> {
        match cx.bases(writer, reader)? {
            (Base::Array(w), Base::Array(r)) => {
                cx.enter()?;
                let item = T::plan(w, r, cx)?;
                cx.leave();
                Ok(Plan::Array(Box::new(item)))
            }
            (_, Base::Array(_)) => Err("an array written as another type".into()),
            (_, r) => Err(format!(
                "a Rust Vec read as the schema's {}",
                super::names::describe(&r)
            )),
        }
    }
}

/// Implements [`Specific`](crate::binary::Specific) for a struct from its fields, given in the
/// order of its schema's (a type whose fields are not its schema's is refused when planned, and
/// the bus then uses its general codec):
///
/// ```text
/// choreo_schemas::specific_record!(Money { amount_minor: i64, currency: String });
/// ```
///
/// Every field's type must implement `Specific` and `serde::Deserialize` (for its default).
#[macro_export]
macro_rules! specific_record {
    ($ty:ident { $($f:ident : $t:ty),* $(,)? }) => {
        impl $crate::binary::Specific for $ty {
            #[inline]
            fn write(&self, out: &mut ::std::vec::Vec<u8>) {
                $( <$t as $crate::binary::Specific>::write(&self.$f, out); )*
            }

            fn read(
                input: &mut $crate::binary::Input<'_>,
                plan: &$crate::binary::Plan,
            ) -> ::std::result::Result<Self, $crate::binary::BinaryError> {
                #[allow(non_camel_case_types, dead_code)]
                enum Field { $($f),* }
                let record = plan.record()?;
                input.enter()?;
                let value = if let ::std::option::Option::Some(plans) = record.in_order() {
                    Self {
                        $( $f: <$t as $crate::binary::Specific>::read(
                            input,
                            &plans[Field::$f as usize],
                        )?, )*
                    }
                } else {
                    $( let mut $f: ::std::option::Option<$t> = ::std::option::Option::None; )*
                    for step in record.steps() {
                        match step {
                            $crate::binary::specific::Step::Skip(s) => s.skip(input)?,
                            $crate::binary::specific::Step::Field(i, p) => {
                                $( if *i == Field::$f as usize {
                                    $f = ::std::option::Option::Some(
                                        <$t as $crate::binary::Specific>::read(input, p)?,
                                    );
                                    continue;
                                } )*
                            }
                            $crate::binary::specific::Step::Default(i, bytes, p) => {
                                let mut default = $crate::binary::Input::new(bytes);
                                $( if *i == Field::$f as usize {
                                    $f = ::std::option::Option::Some(
                                        <$t as $crate::binary::Specific>::read(&mut default, p)?,
                                    );
                                    continue;
                                } )*
                            }
                        }
                    }
                    Self {
                        $( $f: $f.ok_or_else(|| {
                            $crate::binary::malformed(concat!("no value for field ", stringify!($f)))
                        })?, )*
                    }
                };
                input.leave();
                ::std::result::Result::Ok(value)
            }

            fn plan<'s>(
                writer: &'s $crate::apache_avro::Schema,
                reader: &'s $crate::apache_avro::Schema,
                cx: &$crate::binary::specific::Cx<'s>,
            ) -> ::std::result::Result<$crate::binary::Plan, ::std::string::String> {
                $crate::binary::specific::record_plan(
                    writer,
                    reader,
                    cx,
                    &[$(stringify!($f)),*],
                    &[$(<$t as $crate::binary::Specific>::plan),*],
                    &[$($crate::binary::specific::default_of::<$t>),*],
                )
            }
        }
    };
}
