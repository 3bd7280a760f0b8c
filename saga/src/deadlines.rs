//! What a fired deadline does (decision 5: deadlines are data; the vocabulary of time —
//! [`Millis`](crate::Millis), [`Deadline`](crate::Deadline), durations — is in `time`).
//!
//! The runtime keeps an index of every owned saga's [`Deadline`]s (rebuilt on restore from
//! [`crate::SagaState::deadlines`]), and when one is due feeds [`crate::Input::Deadline`] back
//! into [`crate::apply`]. A deadline that fires after it was cancelled or moved is ignored, so
//! the index may be lazy.

use crate::apply::Cx;
use crate::state::{Status, StepStatus, TimelineKind};
use crate::time::{DeadlineKind, describe};

impl Cx<'_> {
    /// A deadline fired: acts on it if it is still pending and due, else ignores it.
    pub(crate) fn on_deadline(&mut self, kind: &DeadlineKind) {
        let due = self
            .state
            .deadlines
            .iter()
            .any(|d| &d.kind == kind && d.at <= self.now);
        if !due {
            return; // cancelled, moved, or not yet due: the runtime's index may be stale
        }
        self.state.deadlines.retain(|d| &d.kind != kind);
        self.note(TimelineKind::Deadline, format!("{kind} passed"));
        match kind {
            DeadlineKind::Saga => {
                let within = describe(self.def.deadline().unwrap_or(crate::DEFAULT_START_WITHIN));
                match self.state.status {
                    Status::Running => {
                        self.abort(format!("the saga missed its deadline ({within})"));
                    }
                    Status::Pending => self.abort(format!(
                        "the start event never arrived within the saga's deadline ({within})"
                    )),
                    _ => {}
                }
            }
            DeadlineKind::Step(name) => {
                let Some(i) = self.def.step_index(name) else {
                    return;
                };
                let step = self.state.steps[i].status;
                let done = matches!(step, StepStatus::Completed | StepStatus::Skipped);
                match self.state.status {
                    Status::Running if !done => {
                        let within = self.def.steps()[i]
                            .deadline
                            .map(|d| describe(d.within))
                            .unwrap_or_default();
                        // A started step that did not answer: its outcome is unknown.
                        self.abort_with(
                            format!("step \"{name}\" missed its deadline ({within})"),
                            Some(i),
                        );
                    }
                    Status::Compensating | Status::NeedsOperator if step == StepStatus::Running => {
                        // An awaited step did not answer in time.
                        self.outcome_unknown(i, true);
                        self.advance_compensation();
                    }
                    _ => {}
                }
            }
            DeadlineKind::CompensationAck(name) => {
                if let Some(i) = self.def.step_index(name) {
                    self.on_ack_deadline(i);
                }
            }
        }
    }
}
