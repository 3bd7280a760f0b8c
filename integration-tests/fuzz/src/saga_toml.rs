//! A saga definition file: `Definition::from_toml` with the reference catalog, and what a
//! definition that loads then does.
//!
//! Input: the file's text (inputs that are not UTF-8 are skipped: the loader reads text).
//!
//! What must hold, besides not panicking:
//! - a refused file is refused with a line inside the file (or 0, unknown);
//! - a definition that loads names only catalog events, and runs: driven by the pure state
//!   machine through a success path, a failure of each step and the deadlines of a silent saga,
//!   every event it emits goes to its type's topic and encodes with the type's latest schema
//!   (`Codec::encode_json`, as the coordinator encodes emitted events: one that does not
//!   encode would stop the coordinator).

use choreo_saga::testing::EPOCH;
use choreo_saga::{Action, Definition, Event, Input, Millis, SagaError, SagaState, apply};

use crate::seeds::sample_data;
use crate::wire_decode::{Fixture, fixture};

/// How many deadlines one scenario fires at most (a compensation may be re-emitted
/// `max_retries` times, and that may be billions).
const MAX_DEADLINES: usize = 32;

/// The target.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    match Definition::from_toml("fuzz.toml", text, &f.catalog) {
        Err(SagaError::Definition { line, reason, .. }) => {
            assert!(
                line <= crate::lines_in(text),
                "line {line} of {}: {reason}",
                crate::lines_in(text)
            );
        }
        Err(other) => panic!("a file is refused as a definition error, not {other:?}"),
        Ok(def) => exercise(f, &def),
    }
}

/// Runs a loaded definition through its paths.
fn exercise(f: &Fixture, def: &Definition) {
    for e in def.consumed_events().chain(def.emitted_events()) {
        assert!(f.catalog.event(e).is_some(), "{e} is not in the catalog");
    }
    // Every step succeeds, in order.
    let success: Vec<&str> = def
        .steps()
        .iter()
        .filter_map(|s| s.success.first().map(String::as_str))
        .collect();
    scenario(f, def, &success);
    // Each step fails (after the ones before it succeeded), then its compensations are acked.
    for (i, step) in def.steps().iter().enumerate() {
        if let Some(failure) = step.failure.first() {
            let mut events = success[..i.min(success.len())].to_vec();
            events.push(failure);
            events.extend(
                def.steps()
                    .iter()
                    .filter_map(|s| s.compensation.as_ref()?.ack.as_deref()),
            );
            scenario(f, def, &events);
        }
    }
    // Nothing answers: only deadlines.
    scenario(f, def, &[]);
}

/// Starts a saga, delivers `events` in order, then fires its deadlines; checks every emission.
fn scenario(f: &Fixture, def: &Definition, events: &[&str]) {
    let mut state = SagaState::new(def, "o-1", EPOCH);
    let mut now = EPOCH;
    let step = |state: &mut SagaState, input: &Input, now: Millis| {
        for action in apply(def, state, input, now) {
            if let Action::Emit(e) = action {
                check_emitted(f, &e);
            }
        }
    };
    let start = std::iter::once(def.start_event());
    for (n, event_type) in start.chain(events.iter().copied()).enumerate() {
        let event = Event {
            id: format!("evt-{n}"),
            event_type: event_type.to_owned(),
            correlation_id: "o-1".into(),
            time: now,
            data: sample_data(event_type),
        };
        step(&mut state, &Input::Event(event), now);
    }
    for _ in 0..MAX_DEADLINES {
        let Some(due) = state.deadlines().iter().min_by_key(|d| d.at).cloned() else {
            break;
        };
        now = now.max(due.at);
        step(&mut state, &Input::Deadline { kind: due.kind }, now);
    }
}

fn check_emitted(f: &Fixture, e: &choreo_saga::Emit) {
    let info = f
        .catalog
        .event(&e.event_type)
        .unwrap_or_else(|| panic!("emits {}, not in the catalog", e.event_type));
    assert_eq!(e.topic, info.topic, "{} goes to its topic", e.event_type);
    crate::block_on(
        f.codec
            .encode_json(&e.topic, &f.catalog, &e.event_type, &e.data),
    )
    .unwrap_or_else(|err| {
        panic!(
            "an emitted {} does not encode: {err}; {}",
            e.event_type, e.data
        )
    });
}
