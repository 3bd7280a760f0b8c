//! Compiled plans: what the decoder reads and hands serde ([`ReadPlan`]: a writer schema
//! resolved against a reader schema) and what the encoder writes ([`WritePlan`]: one schema),
//! made once by [`super::compile`]. A named type is an index into its plan's table of records,
//! so a recursive type refers to its own plan.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::defaults::Dv;

/// What serde is handed for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Num {
    I32,
    I64,
    F32,
    F64,
}

/// One node of a decode plan: what to read (the writer's type) and what serde gets (the
/// reader's).
#[derive(Debug)]
pub(crate) enum Read {
    Null,
    Bool,
    /// An `int`, handed over as the reader's number type.
    Int(Num),
    /// A `long`, handed over as the reader's number type.
    Long(Num),
    /// A `float`, handed over as `f32` or (promoted) `f64`.
    Float(Num),
    Double,
    /// Bytes (`as_str`: read by a `string` reader, so UTF-8 checked).
    Bytes {
        as_str: bool,
    },
    /// A string (`as_bytes`: read by a `bytes` reader).
    Str {
        as_bytes: bool,
    },
    Fixed(usize),
    /// An enum: per writer symbol index, the reader symbol handed to serde, or why it has none.
    Enum(Box<[Result<Box<str>, Box<str>>]>),
    Array(Box<Read>),
    Map(Box<Read>),
    /// A record: an index into [`ReadPlan::records`].
    Record(usize),
    /// A writer union: the branch index is read, then the branch's plan.
    WriterUnion(Box<[Read]>),
    /// A writer value read by the reader union's branch `index` (`null`: that branch is null).
    ReaderUnion {
        index: u32,
        null: bool,
        inner: Box<Read>,
    },
    /// The writer's data cannot be read as the reader's: a record that gets here is malformed.
    Fail(Box<str>),
}

/// One writer field of a record decode plan, in writer order.
#[derive(Debug)]
pub(crate) enum Step {
    /// A field the reader has: its name (the reader's) and plan.
    Read(Box<str>, Read),
    /// A field the reader does not have: skipped by type.
    Skip(Skip),
}

/// A record's decode plan.
#[derive(Debug, Default)]
pub(crate) struct RecordRead {
    pub(crate) steps: Vec<Step>,
    /// The reader's fields the writer lacks, with their defaults.
    pub(crate) defaults: Vec<(Box<str>, Dv)>,
    /// Why the writer's record cannot be read as the reader's (a reader field without a default
    /// that the writer lacks).
    pub(crate) fail: Option<Box<str>>,
    /// Which struct field lists this record hands over in their order (see
    /// [`RecordRead::in_order`]).
    pub(crate) order: FieldOrder,
}

/// The last struct field list (by address) found to be, and not to be, the order in which a
/// record hands over its fields.
#[derive(Debug, Default)]
pub(crate) struct FieldOrder {
    yes: AtomicUsize,
    no: AtomicUsize,
}

impl RecordRead {
    /// Whether this record hands over exactly `fields`, in that order: its read steps in the
    /// writer's order, then its defaults. A struct whose `Deserialize` lists its fields so is
    /// given them as a sequence (by position, as a derived `Deserialize` takes them) instead of
    /// as a map whose every key is matched by name. The answer is remembered by the list's
    /// address (a derived `Deserialize` passes the same static list every time).
    #[inline]
    pub(crate) fn in_order(&self, fields: &'static [&'static str]) -> bool {
        let at = fields.as_ptr() as usize;
        if !fields.is_empty() {
            if self.order.yes.load(Ordering::Relaxed) == at {
                return true;
            }
            if self.order.no.load(Ordering::Relaxed) == at {
                return false;
            }
        }
        let names = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Read(name, _) => Some(&**name),
                Step::Skip(_) => None,
            })
            .chain(self.defaults.iter().map(|(name, _)| &**name));
        let same = names.eq(fields.iter().copied());
        if same {
            self.order.yes.store(at, Ordering::Relaxed);
        } else {
            self.order.no.store(at, Ordering::Relaxed);
        }
        same
    }
}

/// How to skip a writer value the reader does not want (checked, never allocated).
#[derive(Debug)]
pub(crate) enum Skip {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    /// Bytes (`utf8`: a string, checked as the full read would).
    Bytes {
        utf8: bool,
    },
    Fixed(usize),
    /// An enum of this many symbols.
    Enum(usize),
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Box<[Skip]>),
    /// A record: an index into [`ReadPlan::skips`].
    Record(usize),
}

/// A decode plan: a writer schema resolved against a reader schema.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    pub(crate) root: Read,
    pub(crate) records: Vec<RecordRead>,
    pub(crate) skips: Vec<Vec<Skip>>,
}

/// One node of an encode plan: the writer schema's type.
#[derive(Debug)]
pub(crate) enum Write {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    /// An enum's symbols, in index order.
    Enum(Box<[Box<str>]>),
    Array(Box<Write>),
    Map(Box<Write>),
    Union(Box<UnionWrite>),
    /// A record: an index into [`WritePlan::records`].
    Record(usize),
}

/// A union's branches, with the index of its null branch and, for `["null", T]` (either
/// order), the index of `T` (what an `Option` writes).
#[derive(Debug)]
pub(crate) struct UnionWrite {
    pub(crate) branches: Vec<Write>,
    pub(crate) null: Option<u32>,
    pub(crate) option_of: Option<u32>,
}

/// A record's encode plan: its fields in schema order.
#[derive(Debug, Default)]
pub(crate) struct RecordWrite {
    pub(crate) name: Box<str>,
    pub(crate) fields: Vec<FieldWrite>,
}

/// One field of a record's encode plan.
#[derive(Debug)]
pub(crate) struct FieldWrite {
    pub(crate) name: Box<str>,
    pub(crate) plan: Write,
    /// The field's default, as Avro (written when the value does not have the field).
    pub(crate) default: Option<Box<[u8]>>,
    /// The address of a `&'static str` key a serializer has already passed for this field
    /// (0: none yet): the same key comes again without comparing its text.
    pub(crate) key: StaticKey,
}

/// The address of a `&'static str` already found equal to a name, so that the same key (a
/// derived `Serialize` passes the same literal every time) is recognised by its address alone.
#[derive(Debug, Default)]
pub(crate) struct StaticKey(AtomicUsize);

impl StaticKey {
    /// Whether `key` is `name`: by address when `key` was seen before, else by text (and then
    /// remembered).
    #[inline]
    pub(crate) fn is(&self, name: &str, key: &'static str) -> bool {
        let at = key.as_ptr() as usize;
        if self.0.load(Ordering::Relaxed) == at && key.len() == name.len() {
            return true;
        }
        let same = name == key;
        if same {
            self.0.store(at, Ordering::Relaxed);
        }
        same
    }
}

/// An encode plan of one schema.
#[derive(Debug)]
pub(crate) struct WritePlan {
    pub(crate) root: Write,
    pub(crate) records: Vec<RecordWrite>,
}

/// A node's type, for errors.
pub(crate) fn describe(plan: &WritePlan, node: &Write) -> String {
    match node {
        Write::Null => "null".into(),
        Write::Bool => "boolean".into(),
        Write::Int => "int".into(),
        Write::Long => "long".into(),
        Write::Float => "float".into(),
        Write::Double => "double".into(),
        Write::Bytes => "bytes".into(),
        Write::Str => "string".into(),
        Write::Fixed(n) => format!("fixed of {n} bytes"),
        Write::Enum(_) => "enum".into(),
        Write::Array(_) => "array".into(),
        Write::Map(_) => "map".into(),
        Write::Union(_) => "union".into(),
        Write::Record(i) => format!("record {}", plan.records[*i].name),
    }
}
