//! Mapping plans: how each emitted event's fields are filled (from the start event, a step's
//! success, the saga's own fields), checked against the emitted schema at compile time.

use std::collections::{BTreeMap, BTreeSet};

use choreo_schemas::apache_avro::Schema;
use choreo_schemas::{Catalog, EventInfo};
use serde_json::Value;

use super::spec::{EmitSpec, Invalid, MapFrom, Owner, StepSpec, Where, invalid};
use super::{Emission, FieldPlan, SagaField, Source};

/// What mapping plans are checked against: the catalog, the start event, the steps.
pub(super) struct MapCtx<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) start: &'a EventInfo,
    pub(super) steps: &'a [StepSpec],
    pub(super) index: &'a BTreeMap<&'a str, usize>,
}

impl MapCtx<'_> {
    pub(super) fn emission(
        &self,
        spec: &EmitSpec,
        owner: Owner,
        label: &str,
        what: &str,
    ) -> Result<Emission, Invalid> {
        let at_event = Where::Emission { owner, field: None };
        let info = known(
            self.catalog,
            &spec.event,
            at_event.clone(),
            &format!("{label}{what} event"),
        )?;
        let Schema::Record(record) = &info.latest().schema else {
            return invalid(
                at_event,
                format!("{label}{what} event {} is not a record", info.name),
            );
        };
        let mut mapped: BTreeMap<&str, Source> = BTreeMap::new();
        for (field, from) in &spec.data {
            let at = Where::Emission {
                owner,
                field: Some(field.clone()),
            };
            if !info.has_field(field) {
                return invalid(
                    at,
                    format!(
                        "{label}{what} maps field \"{field}\", but {} has no such field",
                        info.name
                    ),
                );
            }
            if mapped.contains_key(field.as_str()) {
                return invalid(at, format!("{label}{what} maps field \"{field}\" twice"));
            }
            let source = self.source(from, label, what, at)?;
            mapped.insert(field.as_str(), source);
        }
        let mut fields = Vec::with_capacity(record.fields.len());
        for f in &record.fields {
            let source = mapped.remove(f.name.as_str());
            if source.is_none() && f.default.is_none() {
                return invalid(
                    at_event,
                    format!(
                        "{label}{what} event {} needs field \"{}\", which is not mapped and has no default",
                        info.name, f.name
                    ),
                );
            }
            fields.push(FieldPlan {
                name: f.name.clone(),
                source,
                fallback: f.default.clone().unwrap_or_else(|| zero_value(&f.schema)),
            });
        }
        Ok(Emission {
            event: info.name.clone(),
            topic: info.topic.clone(),
            fields,
        })
    }

    fn source(
        &self,
        from: &MapFrom,
        label: &str,
        what: &str,
        at: Where,
    ) -> Result<Source, Invalid> {
        let path = match from {
            MapFrom::Literal(v) => return Ok(Source::Literal(v.clone())),
            MapFrom::Path(p) => p,
        };
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts.len() < 2 || parts.iter().any(String::is_empty) {
            return invalid(
                at,
                format!("{label}{what} reads \"{path}\", which is not <start|saga|step>.<field>"),
            );
        }
        let root = parts[0].as_str();
        let field = parts[1].as_str();
        let rest = parts[1..].to_vec();
        match root {
            "saga" => {
                let f = match (field, parts.len()) {
                    ("correlation_id", 2) => SagaField::CorrelationId,
                    ("reason", 2) => SagaField::Reason,
                    ("id", 2) => SagaField::Id,
                    ("name", 2) => SagaField::Name,
                    ("version", 2) => SagaField::Version,
                    _ => {
                        return invalid(
                            at,
                            format!(
                                "{label}{what} reads {path}, but the saga has only correlation_id, reason, id, name and version"
                            ),
                        );
                    }
                };
                Ok(Source::Saga(f))
            }
            "start" => {
                if self.start.has_field(field) {
                    Ok(Source::Start(rest))
                } else {
                    invalid(
                        at,
                        format!(
                            "{label}{what} reads {path}, but the start event {} has no field {field}",
                            self.start.name
                        ),
                    )
                }
            }
            step => {
                let collected = self.index.get(step).is_some_and(|&i| {
                    self.steps[i]
                        .success
                        .iter()
                        .filter_map(|e| self.catalog.event(e))
                        .any(|info| info.has_field(field))
                });
                match self.index.get(step) {
                    Some(&i) if collected => Ok(Source::Step {
                        step: i,
                        path: rest,
                    }),
                    _ => invalid(
                        at,
                        format!("{label}{what} reads {path}, but no step collects it"),
                    ),
                }
            }
        }
    }
}

/// A value of the schema's type, used when mapped data is missing (e.g. a skipped step).
pub(crate) fn zero_value(schema: &Schema) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Bool(false),
        Schema::Int
        | Schema::Long
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Value::from(0),
        Schema::Float | Schema::Double => Value::from(0.0),
        Schema::Bytes
        | Schema::String
        | Schema::Uuid(_)
        | Schema::Fixed(_)
        | Schema::BigDecimal => Value::String(String::new()),
        Schema::Decimal(_) | Schema::Duration(_) => Value::String(String::new()),
        Schema::Array(_) => Value::Array(Vec::new()),
        Schema::Map(_) => Value::Object(serde_json::Map::new()),
        Schema::Union(u) => u.variants().first().map(zero_value).unwrap_or(Value::Null),
        Schema::Record(r) => Value::Object(
            r.fields
                .iter()
                .map(|f| {
                    let v = f.default.clone().unwrap_or_else(|| zero_value(&f.schema));
                    (f.name.clone(), v)
                })
                .collect(),
        ),
        Schema::Enum(e) => e
            .symbols
            .first()
            .map(|s| Value::String(s.clone()))
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Keeps only the top-level fields of `data` that are in `fields` (non-objects are dropped).
pub(crate) fn project(data: &Value, fields: &BTreeSet<String>) -> Value {
    match data {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| fields.contains(k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// The catalog entry of `event`, or an error saying which `what` names an unknown event.
pub(super) fn known<'c>(
    catalog: &'c Catalog,
    event: &str,
    at: Where,
    what: &str,
) -> Result<&'c EventInfo, Invalid> {
    match catalog.event(event) {
        Some(info) => Ok(info),
        None => invalid(at, format!("{what} {event} is not in the event catalog")),
    }
}
