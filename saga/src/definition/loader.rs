//! Reading saga definitions from TOML (`saga/definitions/*.toml`), with errors that name the
//! file, the line and the reason.
//!
//! The file format mirrors [`crate::SagaSpec`]; `saga/definitions/order.toml` is the commented
//! reference. Mapping values are strings naming a path (`payment.payment_id`, `start.total`,
//! `saga.reason`) or `{ value = <constant> }`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use choreo_schemas::Catalog;
use serde::Deserialize;
use toml::Spanned;

use super::Definition;
use super::compile::compile;
use super::spec::{
    CompensationSpec, Correlation, DeadlineFrom, EmitSpec, Invalid, MapFrom, Owner, SagaSpec,
    StepDeadline, StepSpec, UnknownOutcome, Where,
};
use crate::error::SagaError;
use crate::time::parse_duration;

/// The reference order saga, compiled in.
const ORDER_SAGA: &str = include_str!("../../definitions/order.toml");
/// The name the compiled-in order saga reports in errors.
const ORDER_SAGA_FILE: &str = "saga/definitions/order.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSaga {
    name: Spanned<String>,
    version: Spanned<u32>,
    start: Spanned<String>,
    #[serde(default)]
    correlation: Option<Spanned<RawCorrelation>>,
    #[serde(default)]
    deadline: Option<Spanned<String>>,
    #[serde(default)]
    steps: Option<Spanned<Vec<RawStep>>>,
    #[serde(default)]
    on_complete: Option<RawEmit>,
    #[serde(default)]
    on_abort: Option<RawEmit>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCorrelation {
    Named(String),
    Field { field: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    success: Vec<Spanned<String>>,
    #[serde(default)]
    failure: Vec<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    #[serde(default)]
    deadline: Option<Spanned<String>>,
    #[serde(default)]
    deadline_from: Option<Spanned<String>>,
    #[serde(default)]
    on_start: Option<RawEmit>,
    #[serde(default)]
    compensation: Option<RawCompensation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmit {
    event: Spanned<String>,
    #[serde(default)]
    data: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompensation {
    event: Spanned<String>,
    #[serde(default)]
    data: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    ack: Option<Spanned<String>>,
    #[serde(default)]
    ack_deadline: Option<Spanned<String>>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    on_unknown_outcome: Option<Spanned<String>>,
}

impl Definition {
    /// The reference order saga (`saga/definitions/order.toml`), compiled in, checked against
    /// `catalog` (normally [`Catalog::reference`]).
    pub fn reference_order_saga(catalog: &Catalog) -> Result<Definition, SagaError> {
        Definition::from_toml(ORDER_SAGA_FILE, ORDER_SAGA, catalog)
    }

    /// The text of the reference order saga's definition file.
    pub fn reference_order_saga_toml() -> &'static str {
        ORDER_SAGA
    }

    /// Reads and validates one definition file.
    pub fn load(path: impl AsRef<Path>, catalog: &Catalog) -> Result<Definition, SagaError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SagaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Definition::from_toml(&path.display().to_string(), &text, catalog)
    }

    /// Parses and validates definition text; `file` is only used in error messages.
    pub fn from_toml(file: &str, text: &str, catalog: &Catalog) -> Result<Definition, SagaError> {
        let fail = |span: Option<Range<usize>>, reason: String| SagaError::Definition {
            file: file.to_owned(),
            line: span.map(|s| line_of(text, s.start)).unwrap_or(0),
            reason,
        };
        let raw: RawSaga =
            toml::from_str(text).map_err(|e| fail(e.span(), e.message().trim().to_owned()))?;
        let spec = to_spec(&raw).map_err(|(span, reason)| fail(Some(span), reason))?;
        compile(spec, catalog).map_err(|Invalid { at, reason }| fail(span_of(&raw, &at), reason))
    }
}

type Located = (Range<usize>, String);

fn duration(d: &Spanned<String>, label: &str) -> Result<Duration, Located> {
    parse_duration(d.get_ref()).map_err(|e| (d.span(), format!("{label}{e}")))
}

fn to_spec(raw: &RawSaga) -> Result<SagaSpec, Located> {
    let correlation = match &raw.correlation {
        None => Correlation::Key,
        Some(c) => match c.get_ref() {
            RawCorrelation::Named(n) if n == "key" => Correlation::Key,
            RawCorrelation::Named(n) => {
                return Err((
                    c.span(),
                    format!("correlation must be \"key\" or {{ field = \"...\" }}, not \"{n}\""),
                ));
            }
            RawCorrelation::Field { field } => Correlation::Field(field.clone()),
        },
    };
    let deadline = match &raw.deadline {
        Some(d) => Some(duration(d, "")?),
        None => None,
    };
    let mut steps = Vec::new();
    for s in raw.steps.iter().flat_map(|s| s.get_ref()) {
        let label = format!("step \"{}\": ", s.name.get_ref());
        let from = match &s.deadline_from {
            None => DeadlineFrom::StepStart,
            Some(f) => match f.get_ref().as_str() {
                "step" => DeadlineFrom::StepStart,
                "saga" => DeadlineFrom::SagaStart,
                other => {
                    return Err((
                        f.span(),
                        format!(
                            "{label}deadline_from must be \"step\" or \"saga\", not \"{other}\""
                        ),
                    ));
                }
            },
        };
        let deadline = match &s.deadline {
            Some(d) => Some(StepDeadline {
                within: duration(d, &label)?,
                from,
            }),
            None => None,
        };
        let compensation = match &s.compensation {
            None => None,
            Some(c) => Some(CompensationSpec {
                on_unknown_outcome: match &c.on_unknown_outcome {
                    None => UnknownOutcome::default(),
                    Some(v) => match v.get_ref().as_str() {
                        "operator" => UnknownOutcome::Operator,
                        "compensate" => UnknownOutcome::Compensate,
                        other => {
                            return Err((
                                v.span(),
                                format!(
                                    "{label}on_unknown_outcome must be \"compensate\" or \"operator\", not \"{other}\""
                                ),
                            ));
                        }
                    },
                },
                emit: emit_spec(&c.event, &c.data),
                ack: c.ack.as_ref().map(|a| a.get_ref().clone()),
                ack_deadline: match &c.ack_deadline {
                    Some(d) => duration(d, &label)?,
                    None => CompensationSpec::DEFAULT_ACK_DEADLINE,
                },
                max_retries: c
                    .max_retries
                    .unwrap_or(CompensationSpec::DEFAULT_MAX_RETRIES),
            }),
        };
        steps.push(StepSpec {
            name: s.name.get_ref().clone(),
            success: strings(&s.success),
            failure: strings(&s.failure),
            after: strings(&s.after),
            deadline,
            on_start: s.on_start.as_ref().map(|e| emit_spec(&e.event, &e.data)),
            compensation,
        });
    }
    Ok(SagaSpec {
        name: raw.name.get_ref().clone(),
        version: *raw.version.get_ref(),
        start: raw.start.get_ref().clone(),
        correlation,
        deadline,
        steps,
        on_complete: raw
            .on_complete
            .as_ref()
            .map(|e| emit_spec(&e.event, &e.data)),
        on_abort: raw.on_abort.as_ref().map(|e| emit_spec(&e.event, &e.data)),
    })
}

fn strings(list: &[Spanned<String>]) -> Vec<String> {
    list.iter().map(|s| s.get_ref().clone()).collect()
}

fn emit_spec(event: &Spanned<String>, data: &BTreeMap<String, Spanned<toml::Value>>) -> EmitSpec {
    EmitSpec {
        event: event.get_ref().clone(),
        data: data
            .iter()
            .map(|(field, v)| (field.clone(), map_from(v.get_ref())))
            .collect(),
    }
}

fn map_from(v: &toml::Value) -> MapFrom {
    match v {
        toml::Value::String(path) => MapFrom::Path(path.clone()),
        toml::Value::Table(t) if t.len() == 1 && t.contains_key("value") => {
            MapFrom::Literal(t.get("value").map(toml_to_json).unwrap_or_default())
        }
        other => MapFrom::Literal(toml_to_json(other)),
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn span_of(raw: &RawSaga, at: &Where) -> Option<Range<usize>> {
    let step = |i: usize| raw.steps.as_ref().and_then(|s| s.get_ref().get(i));
    match at {
        Where::Top("name") => Some(raw.name.span()),
        Where::Top("version") => Some(raw.version.span()),
        Where::Top("start") => Some(raw.start.span()),
        Where::Top("deadline") => raw.deadline.as_ref().map(Spanned::span),
        Where::Top(_) => raw.steps.as_ref().map(Spanned::span),
        Where::StepName(i) => step(*i).map(|s| s.name.span()),
        Where::StepList {
            step: i,
            key,
            index,
        } => step(*i).and_then(|s| {
            let list = match *key {
                "success" => &s.success,
                "failure" => &s.failure,
                _ => &s.after,
            };
            list.get(*index).map(Spanned::span)
        }),
        Where::StepAck(i) => step(*i).and_then(|s| {
            let c = s.compensation.as_ref()?;
            Some(c.ack.as_ref().map_or_else(|| c.event.span(), Spanned::span))
        }),
        Where::Emission { owner, field } => {
            let (event, data) = match owner {
                Owner::OnComplete => raw.on_complete.as_ref().map(|e| (&e.event, &e.data))?,
                Owner::OnAbort => raw.on_abort.as_ref().map(|e| (&e.event, &e.data))?,
                Owner::StepStart(i) => step(*i)?.on_start.as_ref().map(|e| (&e.event, &e.data))?,
                Owner::Compensation(i) => step(*i)?
                    .compensation
                    .as_ref()
                    .map(|c| (&c.event, &c.data))?,
            };
            match field {
                None => Some(event.span()),
                Some(f) => data.get(f).map(Spanned::span).or(Some(event.span())),
            }
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
