//! A schema as the plans see it: each type reduced to its underlying type (a logical type to
//! the type it annotates) with references followed through the schema's named types, and how
//! named types match across two schemas.

use apache_avro::Schema;
use apache_avro::schema::{
    Alias, EnumSchema, InnerDecimalSchema, Name, NamesRef, RecordSchema, ResolvedSchema, UuidSchema,
};

/// A schema with its logical type reduced to the underlying type and its `Ref` followed.
#[derive(Debug)]
pub enum Base<'s> {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize, &'s str),
    Enum(&'s EnumSchema),
    Array(&'s Schema),
    Map(&'s Schema),
    Union(&'s [Schema]),
    Record(&'s RecordSchema),
}

/// The named types of one schema, by full name.
#[derive(Debug, Clone)]
pub struct Names<'s>(NamesRef<'s>);

impl<'s> Names<'s> {
    /// The named types of `schema` (an error when a name does not resolve).
    pub fn of(schema: &'s Schema) -> Result<Self, String> {
        ResolvedSchema::new(schema)
            .map(|r| Names(r.get_names().clone()))
            .map_err(|e| format!("the schema's names do not resolve: {e}"))
    }

    /// `schema` reduced to its underlying type, a reference followed.
    pub fn base(&self, schema: &'s Schema) -> Result<Base<'s>, String> {
        Ok(match schema {
            Schema::Null => Base::Null,
            Schema::Boolean => Base::Bool,
            Schema::Int | Schema::Date | Schema::TimeMillis => Base::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Base::Long,
            Schema::Float => Base::Float,
            Schema::Double => Base::Double,
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => Base::Bytes,
            Schema::String | Schema::Uuid(UuidSchema::String) => Base::Str,
            Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Fixed(f) | Schema::Duration(f) => {
                Base::Fixed(f.size, f.name.name())
            }
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => Base::Bytes,
                InnerDecimalSchema::Fixed(f) => Base::Fixed(f.size, f.name.name()),
            },
            Schema::Enum(e) => Base::Enum(e),
            Schema::Array(a) => Base::Array(&a.items),
            Schema::Map(m) => Base::Map(&m.types),
            Schema::Union(u) => Base::Union(u.variants()),
            Schema::Record(r) => Base::Record(r),
            Schema::Ref { name } => {
                let target = self
                    .0
                    .get(name)
                    .ok_or_else(|| format!("the schema names an unknown type {name:?}"))?;
                if matches!(target, Schema::Ref { .. }) {
                    return Err(format!("{name:?} refers to a reference"));
                }
                return self.base(target);
            }
        })
    }
}

/// Whether a reader named type takes a writer named type of `name`: the same unqualified name,
/// or one of the reader's aliases.
pub fn names_match(writer: &Name, reader: &Name) -> bool {
    writer == reader || writer.name() == reader.name()
}

/// Whether `writer` is one of a reader type's `aliases`.
pub fn aliased(writer: &Name, aliases: Option<&Vec<Alias>>) -> bool {
    aliases.is_some_and(|a| a.iter().any(|a| a.name() == writer.name()))
}

/// The type's name, for errors.
pub fn describe(b: &Base<'_>) -> String {
    match b {
        Base::Null => "null".into(),
        Base::Bool => "boolean".into(),
        Base::Int => "int".into(),
        Base::Long => "long".into(),
        Base::Float => "float".into(),
        Base::Double => "double".into(),
        Base::Bytes => "bytes".into(),
        Base::Str => "string".into(),
        Base::Fixed(n, name) => format!("fixed {name} of {n} bytes"),
        Base::Enum(e) => format!("enum {}", e.name),
        Base::Array(_) => "array".into(),
        Base::Map(_) => "map".into(),
        Base::Union(_) => "union".into(),
        Base::Record(r) => format!("record {}", r.name),
    }
}

/// A union, for errors.
pub fn describe_union(branches: &[Schema]) -> String {
    format!("of {} branches", branches.len())
}
