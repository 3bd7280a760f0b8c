//! Compiling schemas into plans, once: the writer schema resolved against the reader schema into
//! a [`ReadPlan`], and one schema into a [`WritePlan`].
//!
//! Everything that does not depend on a record — field matching, promotions, enum symbol
//! mapping, union branch choice, defaults — is decided here. A writer/reader mismatch that only
//! some records meet (a writer union branch the reader cannot take, an unknown enum symbol
//! without a reader default) becomes a [`Read::Fail`] node: the records that meet it are
//! malformed, the others decode.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;

use super::defaults::{Dv, from_json};
use super::out::{EncodeError, err};
use super::plan::{
    FieldWrite, Num, Read, ReadPlan, RecordRead, RecordWrite, Skip, StaticKey, Step, UnionWrite,
    Write, WritePlan, describe as describe_write,
};
use choreo_schemas::binary::names::{Base, Names, aliased, describe, describe_union, names_match};
use choreo_schemas::binary::{write_bytes as bytes, write_count as count, write_long as long};

/// Compiles `writer` resolved against `reader` into a decode plan.
pub(crate) fn read_plan(writer: &Schema, reader: &Schema) -> Result<ReadPlan, String> {
    let mut c = ReadCompiler {
        w: Names::of(writer)?,
        r: Names::of(reader)?,
        records: Vec::new(),
        record_index: HashMap::new(),
        skips: Vec::new(),
        skip_index: HashMap::new(),
    };
    let root = c.resolve(writer, reader)?;
    Ok(ReadPlan {
        root,
        records: c.records,
        skips: c.skips,
    })
}

struct ReadCompiler<'w, 'r> {
    w: Names<'w>,
    r: Names<'r>,
    records: Vec<RecordRead>,
    record_index: HashMap<(String, String), usize>,
    skips: Vec<Vec<Skip>>,
    skip_index: HashMap<String, usize>,
}

impl<'w, 'r> ReadCompiler<'w, 'r> {
    fn resolve(&mut self, w: &'w Schema, r: &'r Schema) -> Result<Read, String> {
        let wb = self.w.base(w)?;
        let rb = self.r.base(r)?;
        if let Base::Union(branches) = wb {
            let plans = branches
                .iter()
                .map(|b| self.resolve(b, r))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Read::WriterUnion(plans.into()));
        }
        if let Base::Union(branches) = rb {
            // The first reader branch of the writer's exact type, else the first it promotes to.
            let mut chosen = None;
            for exact in [true, false] {
                for (i, b) in branches.iter().enumerate() {
                    let bb = self.r.base(b)?;
                    if self.matches(&wb, &bb, exact) {
                        chosen = Some((i, b, matches!(bb, Base::Null)));
                        break;
                    }
                }
                if chosen.is_some() {
                    break;
                }
            }
            let Some((index, branch, null)) = chosen else {
                return Ok(fail(format!(
                    "no branch of the reader's union {} takes the writer's {}",
                    describe_union(branches),
                    describe(&wb)
                )));
            };
            let inner = self.resolve(w, branch)?;
            let index = u32::try_from(index).map_err(|_| "a union of over 2^32 branches")?;
            return Ok(Read::ReaderUnion {
                index,
                null,
                inner: Box::new(inner),
            });
        }
        Ok(match (wb, rb) {
            (Base::Null, Base::Null) => Read::Null,
            (Base::Bool, Base::Bool) => Read::Bool,
            (Base::Int, Base::Int) => Read::Int(Num::I32),
            (Base::Int, Base::Long) => Read::Int(Num::I64),
            (Base::Int, Base::Float) => Read::Int(Num::F32),
            (Base::Int, Base::Double) => Read::Int(Num::F64),
            (Base::Long, Base::Long) => Read::Long(Num::I64),
            (Base::Long, Base::Float) => Read::Long(Num::F32),
            (Base::Long, Base::Double) => Read::Long(Num::F64),
            (Base::Float, Base::Float) => Read::Float(Num::F32),
            (Base::Float, Base::Double) => Read::Float(Num::F64),
            (Base::Double, Base::Double) => Read::Double,
            (Base::Bytes, Base::Bytes) => Read::Bytes { as_str: false },
            (Base::Bytes, Base::Str) => Read::Bytes { as_str: true },
            (Base::Str, Base::Str) => Read::Str { as_bytes: false },
            (Base::Str, Base::Bytes) => Read::Str { as_bytes: true },
            (Base::Fixed(ws, _), Base::Fixed(rs, _)) if ws == rs => Read::Fixed(ws),
            (Base::Enum(we), Base::Enum(re)) => {
                let map = we
                    .symbols
                    .iter()
                    .map(|s| {
                        if re.symbols.contains(s) {
                            Ok(s.as_str().into())
                        } else if let Some(d) = &re.default {
                            Ok(d.as_str().into())
                        } else {
                            Err(format!(
                                "the writer's symbol {s:?} is not one of the reader's enum {} \
                                 and the reader has no default symbol",
                                re.name
                            )
                            .into())
                        }
                    })
                    .collect::<Vec<_>>();
                Read::Enum(map.into())
            }
            (Base::Array(wi), Base::Array(ri)) => Read::Array(Box::new(self.resolve(wi, ri)?)),
            (Base::Map(wv), Base::Map(rv)) => Read::Map(Box::new(self.resolve(wv, rv)?)),
            (Base::Record(wr), Base::Record(rr))
                if names_match(&wr.name, &rr.name) || aliased(&wr.name, rr.aliases.as_ref()) =>
            {
                Read::Record(self.record(wr, rr)?)
            }
            (wb, rb) => fail(format!(
                "the writer's {} cannot be read as the reader's {}",
                describe(&wb),
                describe(&rb)
            )),
        })
    }

    /// Whether a writer type is read by a reader union branch: `exact`, the same type (named
    /// types by name), else by promotion.
    fn matches(&self, w: &Base<'_>, r: &Base<'_>, exact: bool) -> bool {
        match (w, r) {
            (Base::Null, Base::Null)
            | (Base::Bool, Base::Bool)
            | (Base::Int, Base::Int)
            | (Base::Long, Base::Long)
            | (Base::Float, Base::Float)
            | (Base::Double, Base::Double)
            | (Base::Bytes, Base::Bytes)
            | (Base::Str, Base::Str)
            | (Base::Array(_), Base::Array(_))
            | (Base::Map(_), Base::Map(_)) => true,
            (Base::Fixed(ws, wn), Base::Fixed(rs, rn)) => ws == rs && wn == rn,
            (Base::Enum(we), Base::Enum(re)) => names_match(&we.name, &re.name),
            (Base::Record(wr), Base::Record(rr)) => {
                names_match(&wr.name, &rr.name) || aliased(&wr.name, rr.aliases.as_ref())
            }
            (Base::Int, Base::Long | Base::Float | Base::Double)
            | (Base::Long, Base::Float | Base::Double)
            | (Base::Float, Base::Double)
            | (Base::Str, Base::Bytes)
            | (Base::Bytes, Base::Str) => !exact,
            _ => false,
        }
    }

    /// The plan of a writer record read as a reader record (planned once per pair, so that a
    /// recursive type refers to its own plan).
    fn record(&mut self, wr: &'w RecordSchema, rr: &'r RecordSchema) -> Result<usize, String> {
        let key = (wr.name.fullname(None), rr.name.fullname(None));
        if let Some(&i) = self.record_index.get(&key) {
            return Ok(i);
        }
        let index = self.records.len();
        self.records.push(RecordRead::default());
        self.record_index.insert(key, index);
        let mut plan = RecordRead::default();
        let mut taken = vec![false; rr.fields.len()];
        for wf in &wr.fields {
            let found = rr
                .fields
                .iter()
                .position(|rf| rf.name == wf.name)
                .or_else(|| {
                    rr.fields
                        .iter()
                        .position(|rf| rf.aliases.contains(&wf.name))
                });
            match found {
                Some(i) if !taken[i] => {
                    taken[i] = true;
                    let rf = &rr.fields[i];
                    plan.steps.push(Step::Read(
                        rf.name.as_str().into(),
                        self.resolve(&wf.schema, &rf.schema)?,
                    ));
                }
                _ => plan.steps.push(Step::Skip(self.skip(&wf.schema)?)),
            }
        }
        for (rf, _) in rr.fields.iter().zip(&taken).filter(|(_, t)| !**t) {
            // A default that does not fit its field fails the records that need it, not the plan.
            match &rf.default {
                Some(json) => match from_json(json, &rf.schema, &self.r) {
                    Ok(dv) => plan.defaults.push((rf.name.as_str().into(), dv)),
                    Err(e) => {
                        plan.fail = Some(
                            format!(
                                "the writer lacks field {} of {} and its default does not fit \
                                 it: {e}",
                                rf.name, rr.name
                            )
                            .into(),
                        );
                    }
                },
                None => {
                    plan.fail = Some(
                        format!(
                            "the reader's field {} of {} has no default and the writer lacks it",
                            rf.name, rr.name
                        )
                        .into(),
                    );
                }
            }
        }
        self.records[index] = plan;
        Ok(index)
    }

    /// How to skip a writer value.
    fn skip(&mut self, w: &'w Schema) -> Result<Skip, String> {
        Ok(match self.w.base(w)? {
            Base::Null => Skip::Null,
            Base::Bool => Skip::Bool,
            Base::Int => Skip::Int,
            Base::Long => Skip::Long,
            Base::Float => Skip::Float,
            Base::Double => Skip::Double,
            Base::Bytes => Skip::Bytes { utf8: false },
            Base::Str => Skip::Bytes { utf8: true },
            Base::Fixed(n, _) => Skip::Fixed(n),
            Base::Enum(e) => Skip::Enum(e.symbols.len()),
            Base::Array(i) => Skip::Array(Box::new(self.skip(i)?)),
            Base::Map(v) => Skip::Map(Box::new(self.skip(v)?)),
            Base::Union(bs) => Skip::Union(
                bs.iter()
                    .map(|b| self.skip(b))
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            Base::Record(r) => {
                let key = r.name.fullname(None);
                if let Some(&i) = self.skip_index.get(&key) {
                    return Ok(Skip::Record(i));
                }
                let index = self.skips.len();
                self.skips.push(Vec::new());
                self.skip_index.insert(key, index);
                let fields = r
                    .fields
                    .iter()
                    .map(|f| self.skip(&f.schema))
                    .collect::<Result<Vec<_>, _>>()?;
                self.skips[index] = fields;
                Skip::Record(index)
            }
        })
    }
}

fn fail(msg: String) -> Read {
    Read::Fail(msg.into())
}

/// Compiles `schema` into an encode plan.
pub(crate) fn write_plan(schema: &Schema) -> Result<WritePlan, String> {
    let names = Names::of(schema)?;
    let mut c = WriteCompiler {
        names: &names,
        records: Vec::new(),
        record_index: HashMap::new(),
        defaults: Vec::new(),
    };
    let root = c.compile(schema)?;
    let defaults = std::mem::take(&mut c.defaults);
    let mut plan = WritePlan {
        root,
        records: c.records,
    };
    // Defaults are written with the finished plan (a default may hold a record of the schema).
    for (record, field, dv) in defaults {
        let mut out = Vec::new();
        let node = &plan.records[record].fields[field].plan;
        // A default that does not fit is no default: only a value without the field fails.
        if write_value(&plan, node, &dv, &mut out).is_ok() {
            plan.records[record].fields[field].default = Some(out.into());
        }
    }
    Ok(plan)
}

struct WriteCompiler<'s, 'n> {
    names: &'n Names<'s>,
    records: Vec<RecordWrite>,
    record_index: HashMap<String, usize>,
    /// (record, field, default) to encode once the plan is complete.
    defaults: Vec<(usize, usize, Dv)>,
}

impl<'s> WriteCompiler<'s, '_> {
    fn compile(&mut self, s: &'s Schema) -> Result<Write, String> {
        Ok(match self.names.base(s)? {
            Base::Null => Write::Null,
            Base::Bool => Write::Bool,
            Base::Int => Write::Int,
            Base::Long => Write::Long,
            Base::Float => Write::Float,
            Base::Double => Write::Double,
            Base::Bytes => Write::Bytes,
            Base::Str => Write::Str,
            Base::Fixed(n, _) => Write::Fixed(n),
            Base::Enum(e) => Write::Enum(e.symbols.iter().map(|s| s.as_str().into()).collect()),
            Base::Array(i) => Write::Array(Box::new(self.compile(i)?)),
            Base::Map(v) => Write::Map(Box::new(self.compile(v)?)),
            Base::Union(bs) => {
                let branches = bs
                    .iter()
                    .map(|b| self.compile(b))
                    .collect::<Result<Vec<_>, _>>()?;
                let null = branches.iter().position(|b| matches!(b, Write::Null));
                let option_of = match (null, branches.len()) {
                    (Some(n), 2) => Some(1 - n),
                    _ => None,
                };
                let index =
                    |i: usize| u32::try_from(i).map_err(|_| "a union of over 2^32 branches");
                Write::Union(Box::new(UnionWrite {
                    null: null.map(index).transpose()?,
                    option_of: option_of.map(index).transpose()?,
                    branches,
                }))
            }
            Base::Record(r) => {
                let key = r.name.fullname(None);
                if let Some(&i) = self.record_index.get(&key) {
                    return Ok(Write::Record(i));
                }
                let index = self.records.len();
                self.records.push(RecordWrite::default());
                self.record_index.insert(key, index);
                let mut fields = Vec::with_capacity(r.fields.len());
                for (i, f) in r.fields.iter().enumerate() {
                    if let Some(Ok(dv)) = f
                        .default
                        .as_ref()
                        .map(|json| from_json(json, &f.schema, self.names))
                    {
                        self.defaults.push((index, i, dv));
                    }
                    fields.push(FieldWrite {
                        name: f.name.as_str().into(),
                        plan: self.compile(&f.schema)?,
                        default: None,
                        key: StaticKey::default(),
                    });
                }
                self.records[index] = RecordWrite {
                    name: r.name.name().into(),
                    fields,
                };
                Write::Record(index)
            }
        })
    }
}

/// Writes a default value of `node` (at planning, for a field's default).
pub(crate) fn write_value(
    plan: &WritePlan,
    node: &Write,
    dv: &Dv,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match (node, dv) {
        (Write::Null, Dv::Null) => {}
        (Write::Bool, Dv::Bool(b)) => out.push(u8::from(*b)),
        (Write::Int, Dv::Int(i)) => long(out, i64::from(*i)),
        (Write::Long, Dv::Long(i)) => long(out, *i),
        (Write::Float, Dv::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Write::Double, Dv::Double(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Write::Bytes, Dv::Bytes(b)) => bytes(out, b),
        (Write::Fixed(_), Dv::Bytes(b)) => out.extend_from_slice(b),
        (Write::Str, Dv::Str(s)) => bytes(out, s.as_bytes()),
        (Write::Enum(_), Dv::Enum(i, _)) => long(out, i64::from(*i)),
        (Write::Array(item), Dv::Array(items)) => {
            if !items.is_empty() {
                count(out, items.len());
                for v in items {
                    write_value(plan, item, v, out)?;
                }
            }
            out.push(0);
        }
        (Write::Map(value), Dv::Map(entries)) => {
            if !entries.is_empty() {
                count(out, entries.len());
                for (k, v) in entries {
                    bytes(out, k.as_bytes());
                    write_value(plan, value, v, out)?;
                }
            }
            out.push(0);
        }
        (Write::Record(r), Dv::Record(fields)) => {
            for (f, (_, v)) in plan.records[*r].fields.iter().zip(fields) {
                write_value(plan, &f.plan, v, out)?;
            }
        }
        (Write::Union(u), Dv::Union(i, v)) => {
            let branch = u
                .branches
                .get(*i as usize)
                .ok_or_else(|| EncodeError("a default's branch is not in the union".into()))?;
            long(out, i64::from(*i));
            write_value(plan, branch, v, out)?;
        }
        (node, _) => {
            return err(format!(
                "a default that is not a {}",
                describe_write(plan, node)
            ));
        }
    }
    Ok(())
}
