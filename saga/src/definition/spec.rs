//! The author's side: a saga described as plain data ([`SagaSpec`] and friends), written by
//! hand or read from TOML by the loader, and where in a spec a validation error points.

use std::time::Duration;

use serde_json::Value;

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

pub(crate) fn invalid<T>(at: Where, reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        at,
        reason: reason.into(),
    })
}
