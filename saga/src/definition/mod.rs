//! Saga definitions: the Rust API to describe one ([`SagaSpec`] and friends) and the validated,
//! compiled form the state machine runs ([`Definition`]).
//!
//! A [`SagaSpec`] is plain data, written by hand or read from TOML by the loader;
//! [`SagaSpec::build`] checks it against the event [`Catalog`] and yields a [`Definition`].
//!
//! Rooms, each importing only from those before it: `spec` (the author's data and where an
//! error points), this file (the compiled types), `plans` (mapping plans), `compile`
//! (spec → definition), `loader` (TOML files, errors with file and line; the reference saga).

mod compile;
pub(crate) mod loader;
mod plans;
mod spec;

pub(crate) use plans::project;
pub use spec::{
    CompensationSpec, Correlation, DeadlineFrom, EmitSpec, MapFrom, SagaSpec, StepDeadline,
    StepSpec, UnknownOutcome,
};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

/// What an event consumed by the saga means to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It starts the saga.
    Start,
    /// Step `n` (index into [`Definition::steps`]) succeeded.
    Success(usize),
    /// Step `n` failed.
    Failure(usize),
    /// Step `n`'s compensation was acknowledged.
    Ack(usize),
}

/// A data-collecting saga field readable by mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaField {
    /// The correlation id.
    CorrelationId,
    /// Why the saga was aborted (empty while it runs).
    Reason,
    /// The saga id (`<name>/<correlation id>`).
    Id,
    /// The definition's name.
    Name,
    /// The definition's version.
    Version,
}

/// A parsed [`MapFrom`].
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A path into the start event's data.
    Start(Vec<String>),
    /// A path into a step's success event data.
    Step {
        /// Index into [`Definition::steps`].
        step: usize,
        /// Field path.
        path: Vec<String>,
    },
    /// A saga field.
    Saga(SagaField),
    /// A constant.
    Literal(Value),
}

/// One field of an emitted event, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPlan {
    /// Field name.
    pub name: String,
    /// Where the value comes from; `None` = always the fallback (the schema default).
    pub source: Option<Source>,
    /// Used when the source has no value yet: the schema default, else a zero value of the
    /// field's type, so the data always encodes with the event's latest schema.
    pub fallback: Value,
}

/// An emitted event, compiled: type, topic and a plan for every field of its latest schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    /// Event type.
    pub event: String,
    /// Topic, from the catalog.
    pub topic: String,
    /// One entry per field of the latest schema, in schema order.
    pub fields: Vec<FieldPlan>,
}

/// A compiled compensation.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensation {
    /// The compensating event.
    pub emit: Emission,
    /// Acknowledging event, if any.
    pub ack: Option<String>,
    /// Time allowed for each acknowledgement.
    pub ack_deadline: Duration,
    /// Re-emissions before escalating to an operator.
    pub max_retries: u32,
    /// When the step's outcome is unknown at its deadline.
    pub on_unknown_outcome: UnknownOutcome,
}

/// A compiled step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Name.
    pub name: String,
    /// Success events.
    pub success: Vec<String>,
    /// Failure events.
    pub failure: Vec<String>,
    /// Indices of the steps it waits for.
    pub after: Vec<usize>,
    /// Indices of every step that (transitively) waits for it.
    pub dependents: Vec<usize>,
    /// Top-level fields of its success event that some mapping reads: the only ones the
    /// saga keeps in its state.
    pub collects: BTreeSet<String>,
    /// Deadline.
    pub deadline: Option<StepDeadline>,
    /// Event emitted on start.
    pub on_start: Option<Emission>,
    /// Compensation.
    pub compensation: Option<Compensation>,
}

/// A validated saga definition, ready for [`crate::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    name: String,
    version: u32,
    start: String,
    correlation: Correlation,
    deadline: Option<Duration>,
    steps: Vec<Step>,
    on_complete: Option<Emission>,
    on_abort: Option<Emission>,
    roles: BTreeMap<String, Role>,
    start_collects: BTreeSet<String>,
}

impl Definition {
    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The event type that starts an instance.
    pub fn start_event(&self) -> &str {
        &self.start
    }

    /// Where the correlation id comes from.
    pub fn correlation(&self) -> &Correlation {
        &self.correlation
    }

    /// Overall deadline.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The steps, in definition order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Index of a step by name.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Emitted on completion.
    pub fn on_complete(&self) -> Option<&Emission> {
        self.on_complete.as_ref()
    }

    /// Emitted once an aborted saga is compensated.
    pub fn on_abort(&self) -> Option<&Emission> {
        self.on_abort.as_ref()
    }

    /// What an event type means to this saga (`None`: the saga ignores it).
    pub fn role_of(&self, event_type: &str) -> Option<Role> {
        self.roles.get(event_type).copied()
    }

    /// Every event type this saga consumes, sorted. The runtime subscribes to their topics.
    pub fn consumed_events(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// Every event type this saga may emit, sorted and without repeats.
    pub fn emitted_events(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .steps
            .iter()
            .flat_map(|s| {
                s.on_start
                    .iter()
                    .chain(s.compensation.as_ref().map(|c| &c.emit))
            })
            .chain(self.on_complete.iter())
            .chain(self.on_abort.iter())
            .map(|e| e.event.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Top-level fields of the start event that some mapping reads (the only ones kept).
    pub fn start_collects(&self) -> &BTreeSet<String> {
        &self.start_collects
    }

    /// Records, for the start event and each step, which top-level fields mappings read.
    fn with_collected_fields(mut self) -> Self {
        let mut sources: Vec<Source> = Vec::new();
        for step in &self.steps {
            for e in step
                .on_start
                .iter()
                .chain(step.compensation.as_ref().map(|c| &c.emit))
            {
                sources.extend(e.fields.iter().filter_map(|f| f.source.clone()));
            }
        }
        for e in self.on_complete.iter().chain(self.on_abort.iter()) {
            sources.extend(e.fields.iter().filter_map(|f| f.source.clone()));
        }
        for source in sources {
            match source {
                Source::Start(path) => {
                    if let Some(f) = path.first() {
                        self.start_collects.insert(f.clone());
                    }
                }
                Source::Step { step, path } => {
                    if let (Some(s), Some(f)) = (self.steps.get_mut(step), path.first()) {
                        s.collects.insert(f.clone());
                    }
                }
                Source::Saga(_) | Source::Literal(_) => {}
            }
        }
        self
    }

    /// The correlation id of an event consumed by this saga: the record key, or the configured
    /// field (falling back to the key when the field is absent or not a string).
    pub fn correlation_id(&self, key: Option<&str>, data: &Value) -> Option<String> {
        match &self.correlation {
            Correlation::Key => key.map(str::to_owned),
            Correlation::Field(f) => data
                .get(f)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| key.map(str::to_owned)),
        }
    }
}
