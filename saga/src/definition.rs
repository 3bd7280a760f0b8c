//! Saga definitions: the Rust API to describe one ([`SagaSpec`] and friends) and the validated,
//! compiled form the state machine runs ([`Definition`]).
//!
//! A [`SagaSpec`] is plain data, written by hand or read from TOML by [`crate::loader`];
//! [`SagaSpec::build`] checks it against the event [`Catalog`] and yields a [`Definition`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use choreo_schemas::apache_avro::Schema;
use choreo_schemas::{Catalog, EventInfo};
use serde_json::Value;

use crate::deadlines::format_duration;
use crate::error::SagaError;
use crate::state::MAX_STEP_NAME_BYTES;

/// Where a saga's correlation id comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Correlation {
    /// The Kafka record key (decision 2; the default).
    #[default]
    Key,
    /// A top-level string field of the event's data; the key is used when the field is absent.
    Field(String),
}

/// Relative to what a step's deadline is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadlineFrom {
    /// From the moment the step starts (the default).
    #[default]
    StepStart,
    /// From the moment the saga starts.
    SagaStart,
}

/// A step's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDeadline {
    /// How long the step may take.
    pub within: Duration,
    /// From when it is counted.
    pub from: DeadlineFrom,
}

/// Where one field of an emitted event takes its value.
#[derive(Debug, Clone, PartialEq)]
pub enum MapFrom {
    /// A path into data the saga collected: `start.<field>[.<sub>...]` (the start event),
    /// `<step>.<field>[...]` (that step's success event), or `saga.correlation_id`,
    /// `saga.reason` (why the saga was aborted), `saga.id`, `saga.name`, `saga.version`.
    Path(String),
    /// A constant.
    Literal(Value),
}

/// An event the saga emits, with its data mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct EmitSpec {
    /// The event type (Avro full name), which must be in the catalog.
    pub event: String,
    /// Field of the emitted event → where its value comes from. Fields of the schema left out
    /// take the schema's default.
    pub data: Vec<(String, MapFrom)>,
}

impl EmitSpec {
    /// An event of this type with no mapping yet.
    pub fn new(event: impl Into<String>) -> Self {
        EmitSpec {
            event: event.into(),
            data: Vec::new(),
        }
    }

    /// Fills `field` from a path such as `payment.payment_id` (see [`MapFrom::Path`]).
    pub fn map(mut self, field: impl Into<String>, path: impl Into<String>) -> Self {
        self.data.push((field.into(), MapFrom::Path(path.into())));
        self
    }

    /// Fills `field` with a constant.
    pub fn literal(mut self, field: impl Into<String>, value: Value) -> Self {
        self.data.push((field.into(), MapFrom::Literal(value)));
        self
    }
}

/// What happens to a started step that has not answered by its deadline (success and failure
/// unknown) once the saga is aborted: is its compensation emitted anyway?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownOutcome {
    /// The saga needs an operator, naming the step (the default: compensating something that
    /// may never have happened is only right when the compensation is written for it).
    #[default]
    Operator,
    /// The compensation is emitted anyway: it is safe when the step did nothing (e.g. a refund
    /// the payment service looks up by order id and acknowledges even when it charged nothing).
    Compensate,
}

impl UnknownOutcome {
    /// The value written in definition files (`on_unknown_outcome = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownOutcome::Operator => "operator",
            UnknownOutcome::Compensate => "compensate",
        }
    }
}

/// How a completed step is undone when the saga is aborted.
#[derive(Debug, Clone, PartialEq)]
pub struct CompensationSpec {
    /// The compensating event to emit.
    pub emit: EmitSpec,
    /// The event that acknowledges it; without one, emitting is enough.
    pub ack: Option<String>,
    /// How long to wait for the acknowledgement before re-emitting (same event id).
    pub ack_deadline: Duration,
    /// How many times to re-emit before the saga needs an operator.
    pub max_retries: u32,
    /// When the step's outcome is unknown at its deadline: compensate anyway, or ask an
    /// operator (the default).
    pub on_unknown_outcome: UnknownOutcome,
}

impl CompensationSpec {
    /// Default time to wait for an acknowledgement.
    pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(30);
    /// Default number of re-emissions.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;

    /// A compensation that emits this event and needs no acknowledgement.
    pub fn new(emit: EmitSpec) -> Self {
        CompensationSpec {
            emit,
            ack: None,
            ack_deadline: Self::DEFAULT_ACK_DEADLINE,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            on_unknown_outcome: UnknownOutcome::Operator,
        }
    }

    /// What to do when the step's outcome is unknown at its deadline (see [`UnknownOutcome`]).
    pub fn on_unknown_outcome(mut self, what: UnknownOutcome) -> Self {
        self.on_unknown_outcome = what;
        self
    }

    /// Waits for `event` within `deadline`, re-emitting up to `max_retries` times.
    pub fn acked_by(
        mut self,
        event: impl Into<String>,
        deadline: Duration,
        max_retries: u32,
    ) -> Self {
        self.ack = Some(event.into());
        self.ack_deadline = deadline;
        self.max_retries = max_retries;
        self
    }
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// Unique within the saga; also names the step's collected data in mappings.
    pub name: String,
    /// Events that mean the step succeeded (at least one).
    pub success: Vec<String>,
    /// Events that mean the step failed (the saga is then aborted).
    pub failure: Vec<String>,
    /// Steps that must complete before this one starts; steps without any start with the saga.
    pub after: Vec<String>,
    /// Optional deadline.
    pub deadline: Option<StepDeadline>,
    /// Event to emit when the step starts.
    pub on_start: Option<EmitSpec>,
    /// How to undo the step.
    pub compensation: Option<CompensationSpec>,
}

impl StepSpec {
    /// A step with this name and nothing else yet.
    pub fn new(name: impl Into<String>) -> Self {
        StepSpec {
            name: name.into(),
            success: Vec::new(),
            failure: Vec::new(),
            after: Vec::new(),
            deadline: None,
            on_start: None,
            compensation: None,
        }
    }

    /// Adds an event that means success.
    pub fn success(mut self, event: impl Into<String>) -> Self {
        self.success.push(event.into());
        self
    }

    /// Adds an event that means failure.
    pub fn failure(mut self, event: impl Into<String>) -> Self {
        self.failure.push(event.into());
        self
    }

    /// Waits for another step to complete first.
    pub fn after(mut self, step: impl Into<String>) -> Self {
        self.after.push(step.into());
        self
    }

    /// The step must succeed within `within` of its own start.
    pub fn deadline(mut self, within: Duration) -> Self {
        self.deadline = Some(StepDeadline {
            within,
            from: DeadlineFrom::StepStart,
        });
        self
    }

    /// The step must succeed within `within` of the saga's start.
    pub fn deadline_from_saga_start(mut self, within: Duration) -> Self {
        self.deadline = Some(StepDeadline {
            within,
            from: DeadlineFrom::SagaStart,
        });
        self
    }

    /// Emits an event when the step starts.
    pub fn on_start(mut self, emit: EmitSpec) -> Self {
        self.on_start = Some(emit);
        self
    }

    /// Sets the step's compensation.
    pub fn compensate(mut self, compensation: CompensationSpec) -> Self {
        self.compensation = Some(compensation);
        self
    }
}

/// A whole saga, not yet validated. Build it with the methods below (or read it from TOML with
/// [`Definition::from_toml`]), then [`SagaSpec::build`] it against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaSpec {
    /// The saga's name.
    pub name: String,
    /// Its version (≥ 1); running instances stay on the version they started with.
    pub version: u32,
    /// The event that starts an instance.
    pub start: String,
    /// Where the correlation id comes from.
    pub correlation: Correlation,
    /// Overall deadline, from the saga's start.
    pub deadline: Option<Duration>,
    /// The steps.
    pub steps: Vec<StepSpec>,
    /// Emitted when every step has completed.
    pub on_complete: Option<EmitSpec>,
    /// Emitted when the saga was aborted and every completed step is compensated.
    pub on_abort: Option<EmitSpec>,
}

impl SagaSpec {
    /// A saga started by `start`, with no steps yet.
    pub fn new(name: impl Into<String>, version: u32, start: impl Into<String>) -> Self {
        SagaSpec {
            name: name.into(),
            version,
            start: start.into(),
            correlation: Correlation::Key,
            deadline: None,
            steps: Vec::new(),
            on_complete: None,
            on_abort: None,
        }
    }

    /// Sets where the correlation id comes from.
    pub fn correlate_by(mut self, correlation: Correlation) -> Self {
        self.correlation = correlation;
        self
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, within: Duration) -> Self {
        self.deadline = Some(within);
        self
    }

    /// Adds a step.
    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }

    /// Sets the event emitted on completion.
    pub fn on_complete(mut self, emit: EmitSpec) -> Self {
        self.on_complete = Some(emit);
        self
    }

    /// Sets the event emitted once an aborted saga is fully compensated.
    pub fn on_abort(mut self, emit: EmitSpec) -> Self {
        self.on_abort = Some(emit);
        self
    }

    /// Validates against the catalog and compiles.
    pub fn build(self, catalog: &Catalog) -> Result<Definition, SagaError> {
        let name = self.name.clone();
        compile(self, catalog).map_err(|e| SagaError::Invalid {
            saga: name,
            reason: e.reason,
        })
    }
}

/// Which part of a spec a validation error is about; the loader turns it into a line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Where {
    /// A top-level key (`name`, `version`, `start`, `deadline`, `steps`).
    Top(&'static str),
    /// A step's `name`.
    StepName(usize),
    /// An element of a step's list (`success`, `failure`, `after`).
    StepList {
        step: usize,
        key: &'static str,
        index: usize,
    },
    /// A step's compensation `ack`.
    StepAck(usize),
    /// An emission's `event` (field `None`) or one mapped field.
    Emission { owner: Owner, field: Option<String> },
}

/// Which emission a [`Where::Emission`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    OnComplete,
    OnAbort,
    StepStart(usize),
    Compensation(usize),
}

/// A validation failure before it is given a file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) at: Where,
    pub(crate) reason: String,
}

fn invalid<T>(at: Where, reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        at,
        reason: reason.into(),
    })
}

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

/// Validates and compiles a spec; errors say where (for the loader) and why.
pub(crate) fn compile(spec: SagaSpec, catalog: &Catalog) -> Result<Definition, Invalid> {
    if spec.name.trim().is_empty() {
        return invalid(Where::Top("name"), "the saga needs a non-empty name");
    }
    if spec.version == 0 {
        return invalid(Where::Top("version"), "version must be 1 or more");
    }
    if spec.deadline == Some(Duration::ZERO) {
        return invalid(
            Where::Top("deadline"),
            "the deadline must be greater than zero",
        );
    }
    let start_info = known(catalog, &spec.start, Where::Top("start"), "start event")?;
    if spec.steps.is_empty() {
        return invalid(Where::Top("steps"), "a saga needs at least one step");
    }

    // Step names.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in spec.steps.iter().enumerate() {
        if s.name.trim().is_empty() || s.name.contains('.') {
            return invalid(
                Where::StepName(i),
                format!(
                    "step name \"{}\" must be non-empty and contain no '.'",
                    s.name
                ),
            );
        }
        if s.name.len() > MAX_STEP_NAME_BYTES {
            return invalid(
                Where::StepName(i),
                format!(
                    "step name \"{}\" is longer than {MAX_STEP_NAME_BYTES} bytes",
                    crate::state::bounded(&s.name, 40)
                ),
            );
        }
        if matches!(s.name.as_str(), "start" | "saga") {
            return invalid(
                Where::StepName(i),
                format!("step name \"{}\" is reserved for mappings", s.name),
            );
        }
        if index.insert(s.name.as_str(), i).is_some() {
            return invalid(Where::StepName(i), format!("duplicate step \"{}\"", s.name));
        }
    }

    // Consumed events and their roles.
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    roles.insert(spec.start.clone(), Role::Start);
    owner_of.insert(spec.start.clone(), "the start event".into());
    let mut claim = |event: &str, role: Role, what: String, at: Where| -> Result<(), Invalid> {
        if let Some(first) = owner_of.get(event) {
            return invalid(at, format!("{what} {event} is already used as {first}"));
        }
        roles.insert(event.to_owned(), role);
        owner_of.insert(event.to_owned(), what);
        Ok(())
    };
    for (i, s) in spec.steps.iter().enumerate() {
        let step = &s.name;
        if s.success.is_empty() {
            return invalid(
                Where::StepName(i),
                format!("step \"{step}\": needs at least one success event"),
            );
        }
        for (key, list) in [("success", &s.success), ("failure", &s.failure)] {
            for (j, event) in list.iter().enumerate() {
                let at = Where::StepList {
                    step: i,
                    key,
                    index: j,
                };
                let what = format!("step \"{step}\": {key} event");
                known(catalog, event, at.clone(), &what)?;
                let role = if key == "success" {
                    Role::Success(i)
                } else {
                    Role::Failure(i)
                };
                claim(
                    event,
                    role,
                    format!("the {key} event of step \"{step}\""),
                    at,
                )?;
            }
        }
        if let Some(ack) = s.compensation.as_ref().and_then(|c| c.ack.as_ref()) {
            let what = format!("step \"{step}\": compensation acknowledgement");
            known(catalog, ack, Where::StepAck(i), &what)?;
            claim(
                ack,
                Role::Ack(i),
                format!("the acknowledgement of step \"{step}\"'s compensation"),
                Where::StepAck(i),
            )?;
        }
        if let Some(d) = &s.deadline
            && d.within.is_zero()
        {
            return invalid(
                Where::StepName(i),
                format!("step \"{step}\": the deadline must be greater than zero"),
            );
        }
        if let Some(c) = &s.compensation
            && c.ack.is_some()
            && c.ack_deadline.is_zero()
        {
            return invalid(
                Where::StepAck(i),
                format!("step \"{step}\": the acknowledgement deadline must be greater than zero"),
            );
        }
    }

    // Dependencies.
    let mut after: Vec<Vec<usize>> = Vec::with_capacity(spec.steps.len());
    for (i, s) in spec.steps.iter().enumerate() {
        let mut deps = Vec::new();
        for (j, dep) in s.after.iter().enumerate() {
            let at = Where::StepList {
                step: i,
                key: "after",
                index: j,
            };
            match index.get(dep.as_str()) {
                Some(&d) if d == i => {
                    return invalid(at, format!("step \"{}\": waits for itself", s.name));
                }
                Some(&d) => deps.push(d),
                None => {
                    return invalid(
                        at,
                        format!("step \"{}\": waits for unknown step \"{dep}\"", s.name),
                    );
                }
            }
        }
        after.push(deps);
    }
    if let Some(mut path) = find_cycle(&after) {
        // Report the cycle from its first-defined step, at its `after` entry for the next.
        path.pop();
        let min = path
            .iter()
            .enumerate()
            .min_by_key(|&(_, &k)| k)
            .map_or(0, |(at, _)| at);
        path.rotate_left(min);
        let i = path[0];
        let next = path.get(1).copied().unwrap_or(i);
        let j = after[i].iter().position(|&d| d == next).unwrap_or(0);
        path.push(i);
        let names: Vec<&str> = path.iter().map(|&k| spec.steps[k].name.as_str()).collect();
        return invalid(
            Where::StepList {
                step: i,
                key: "after",
                index: j,
            },
            format!(
                "step \"{}\": dependency cycle {}",
                spec.steps[i].name,
                names.join(" -> ")
            ),
        );
    }
    let dependents: Vec<Vec<usize>> = (0..spec.steps.len())
        .map(|i| transitive_dependents(&after, i))
        .collect();

    // Emissions.
    let ctx = MapCtx {
        catalog,
        start: start_info,
        steps: &spec.steps,
        index: &index,
    };
    let mut steps = Vec::with_capacity(spec.steps.len());
    for (i, s) in spec.steps.iter().enumerate() {
        let label = format!("step \"{}\": ", s.name);
        let on_start = match &s.on_start {
            Some(e) => Some(ctx.emission(e, Owner::StepStart(i), &label, "on_start")?),
            None => None,
        };
        let compensation = match &s.compensation {
            Some(c) => Some(Compensation {
                emit: ctx.emission(&c.emit, Owner::Compensation(i), &label, "compensation")?,
                ack: c.ack.clone(),
                ack_deadline: c.ack_deadline,
                max_retries: c.max_retries,
                on_unknown_outcome: c.on_unknown_outcome,
            }),
            None => None,
        };
        steps.push(Step {
            name: s.name.clone(),
            success: s.success.clone(),
            failure: s.failure.clone(),
            after: after[i].clone(),
            dependents: dependents[i].clone(),
            collects: BTreeSet::new(),
            deadline: s.deadline,
            on_start,
            compensation,
        });
    }
    let on_complete = match &spec.on_complete {
        Some(e) => Some(ctx.emission(e, Owner::OnComplete, "", "on_complete")?),
        None => None,
    };
    let on_abort = match &spec.on_abort {
        Some(e) => Some(ctx.emission(e, Owner::OnAbort, "", "on_abort")?),
        None => None,
    };
    Ok(Definition {
        name: spec.name,
        version: spec.version,
        start: spec.start,
        correlation: spec.correlation,
        deadline: spec.deadline,
        steps,
        on_complete,
        on_abort,
        roles,
        start_collects: BTreeSet::new(),
    }
    .with_collected_fields())
}

fn known<'c>(
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

/// Finds a dependency cycle: the steps on it, the first repeated at the end.
fn find_cycle(after: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit(
        n: usize,
        after: &[Vec<usize>],
        color: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        color[n] = 1;
        stack.push(n);
        for &d in &after[n] {
            if color[d] == 1 {
                let from = stack.iter().position(|&k| k == d).unwrap_or(0);
                let mut path: Vec<usize> = stack[from..].to_vec();
                path.push(d);
                return Some(path);
            }
            if color[d] == 0
                && let Some(found) = visit(d, after, color, stack)
            {
                return Some(found);
            }
        }
        stack.pop();
        color[n] = 2;
        None
    }
    let mut color = vec![0u8; after.len()];
    for n in 0..after.len() {
        if color[n] == 0 {
            let mut stack = Vec::new();
            if let Some(found) = visit(n, after, &mut color, &mut stack) {
                return Some(found);
            }
        }
    }
    None
}

fn transitive_dependents(after: &[Vec<usize>], of: usize) -> Vec<usize> {
    let mut found: BTreeSet<usize> = BTreeSet::new();
    let mut frontier = vec![of];
    while let Some(n) = frontier.pop() {
        for (k, deps) in after.iter().enumerate() {
            if deps.contains(&n) && found.insert(k) {
                frontier.push(k);
            }
        }
    }
    found.into_iter().collect()
}

struct MapCtx<'a> {
    catalog: &'a Catalog,
    start: &'a EventInfo,
    steps: &'a [StepSpec],
    index: &'a BTreeMap<&'a str, usize>,
}

impl MapCtx<'_> {
    fn emission(
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

/// Describes a duration for error messages and timelines.
pub(crate) fn describe(d: Duration) -> String {
    format_duration(d)
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
