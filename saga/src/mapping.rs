//! Filling emitted events: deterministic event ids and the data mapping.

use std::sync::OnceLock;

use serde_json::Value;
use uuid::Uuid;

use crate::definition::{Definition, Emission, SagaField, Source};
use crate::input::EmitKind;
use crate::state::SagaState;

/// The UUIDv5 namespace of every event id choreo's sagas emit.
fn namespace() -> &'static Uuid {
    static NS: OnceLock<Uuid> = OnceLock::new();
    NS.get_or_init(|| Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://choreo.dev/saga/event-id"))
}

/// The deterministic id of an event a saga emits: UUIDv5 of `<saga id>/<step>/<kind>`, where
/// `step` is `saga` for saga-level events. Emitting it again yields the same id, so consumers
/// can deduplicate.
pub fn event_id(saga_id: &str, step: Option<&str>, kind: EmitKind) -> Uuid {
    let name = format!("{saga_id}/{}/{}", step.unwrap_or("saga"), kind.as_str());
    Uuid::new_v5(namespace(), name.as_bytes())
}

/// Renders an emission's data from what the saga collected: a JSON object with every field of
/// the event's latest schema (missing data falls back to the schema default or a zero value).
pub(crate) fn render(emission: &Emission, def: &Definition, state: &SagaState) -> Value {
    let mut out = serde_json::Map::with_capacity(emission.fields.len());
    for field in &emission.fields {
        let value = field
            .source
            .as_ref()
            .and_then(|s| resolve(s, def, state))
            .unwrap_or_else(|| field.fallback.clone());
        out.insert(field.name.clone(), value);
    }
    Value::Object(out)
}

fn resolve(source: &Source, def: &Definition, state: &SagaState) -> Option<Value> {
    match source {
        Source::Literal(v) => Some(v.clone()),
        Source::Start(path) => lookup(state.start_data.as_ref()?, path),
        Source::Step { step, path } => lookup(state.steps.get(*step)?.data.as_ref()?, path),
        Source::Saga(f) => Some(match f {
            SagaField::CorrelationId => Value::String(state.correlation_id.clone()),
            SagaField::Reason => Value::String(state.abort_reason.clone().unwrap_or_default()),
            SagaField::Id => Value::String(state.saga_id.clone()),
            SagaField::Name => Value::String(def.name().to_owned()),
            SagaField::Version => Value::from(def.version()),
        }),
    }
}

fn lookup(data: &Value, path: &[String]) -> Option<Value> {
    let mut at = data;
    for key in path {
        at = at.get(key)?;
    }
    if at.is_null() { None } else { Some(at.clone()) }
}
