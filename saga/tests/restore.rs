//! A state restored from the changelog meets a definition that was edited without a new
//! version: `check_against` says what does not match, and `apply` rejects every input (never
//! a panic, the state unchanged).

mod common;

use std::time::Duration;

use choreo_saga::{
    Action, Command, CompensationSpec, CompensationState, Deadline, DeadlineKind, Definition,
    Definitions, EmitSpec, Event, Input, Millis, SagaSpec, SagaState, StepSpec, apply,
};
use common::*;

fn refund(step: &str) -> CompensationSpec {
    CompensationSpec::new(
        EmitSpec::new(REFUND)
            .map("order_id", "saga.correlation_id")
            .map("payment_id", format!("{step}.payment_id"))
            .map("amount", format!("{step}.amount"))
            .map("reason", "saga.reason"),
    )
    .acked_by(REFUNDED, Duration::from_secs(30), 1)
}

fn inventory() -> StepSpec {
    StepSpec::new("inventory")
        .success(RESERVED)
        .failure(UNAVAILABLE)
        .deadline(Duration::from_secs(30))
}

/// `order` v1 with the steps given (same name and version as the reference).
fn edited(steps: Vec<StepSpec>) -> Definition {
    let mut spec = SagaSpec::new("order", 1, PLACED).deadline(Duration::from_secs(120));
    for s in steps {
        spec = spec.step(s);
    }
    spec.on_abort(
        EmitSpec::new(CANCELLED)
            .map("order_id", "saga.correlation_id")
            .map("reason", "saga.reason"),
    )
    .build(&catalog())
    .expect("valid")
}

fn payment(name: &str) -> StepSpec {
    StepSpec::new(name)
        .success(AUTHORIZED)
        .failure(DECLINED)
        .deadline(Duration::from_secs(30))
        .compensate(refund(name))
}

fn ev(id: &str, ty: &str) -> Input {
    Input::Event(Event {
        id: id.into(),
        event_type: ty.into(),
        correlation_id: "o-1".into(),
        time: Millis(0),
        data: data(ty),
    })
}

/// A v1 order saga in flight: payment authorized (and, with `aborted`, inventory failed and the
/// refund emitted, awaiting its acknowledgement).
fn in_flight(aborted: bool) -> SagaState {
    let def = order();
    let mut state = SagaState::new(&def, "o-1", Millis(1_000));
    apply(&def, &mut state, &ev("e1", PLACED), Millis(1_000));
    apply(&def, &mut state, &ev("e2", AUTHORIZED), Millis(1_001));
    if aborted {
        apply(&def, &mut state, &ev("e3", UNAVAILABLE), Millis(1_002));
        assert!(matches!(
            state.step("payment").map(|s| &s.compensation),
            Some(CompensationState::Emitted { .. })
        ));
    }
    state
}

/// Every input a runtime could feed a saga of `defs`.
fn every_input(defs: &[&Definition], state: &SagaState) -> Vec<Input> {
    let mut out = Vec::new();
    let mut n = 0;
    for def in defs {
        for ty in def.consumed_events() {
            n += 1;
            out.push(ev(&format!("x{n}"), ty));
        }
        for step in def.steps() {
            out.push(Input::Deadline {
                kind: DeadlineKind::Step(step.name.clone()),
            });
            out.push(Input::Deadline {
                kind: DeadlineKind::CompensationAck(step.name.clone()),
            });
            out.push(Input::Command(Command::Retry {
                step: step.name.clone(),
            }));
            out.push(Input::Command(Command::Skip {
                step: step.name.clone(),
            }));
        }
    }
    for d in state.deadlines() {
        out.push(Input::Deadline {
            kind: d.kind.clone(),
        });
    }
    out.push(Input::Deadline {
        kind: DeadlineKind::Saga,
    });
    out.push(Input::Command(Command::Abort {
        reason: "operator".into(),
    }));
    out.push(Input::Command(Command::Resume));
    out
}

/// Applies every input (far in the future, so every deadline is due) and expects each to be
/// rejected with `why`, the state unchanged.
fn rejects_everything(def: &Definition, state: &SagaState, why: &str) {
    let original = order();
    for input in every_input(&[&original, def], state) {
        let mut s = state.clone();
        let out = apply(def, &mut s, &input, Millis(10_000_000));
        match out.as_slice() {
            [Action::Rejected { reason }] => {
                assert!(reason.contains(why), "{reason:?} should say {why:?}");
            }
            other => panic!("{input:?} was not rejected: {other:?}"),
        }
        assert_eq!(&s, state, "{input:?} changed the state");
    }
}

#[test]
fn a_step_removed_without_a_new_version() {
    let def = edited(vec![payment("payment"), inventory()]);
    for state in [in_flight(false), in_flight(true)] {
        let why = state.check_against(&def).expect_err("does not fit");
        assert_eq!(
            why,
            "saga order/o-1 has 3 steps, but order v1 defines 2: the definition changed without a new version"
        );
        rejects_everything(&def, &state, &why);
    }
}

#[test]
fn a_step_added_without_a_new_version() {
    let shipping = StepSpec::new("shipping")
        .after("payment")
        .success(SCHEDULED)
        .failure(SHIP_FAILED);
    let extra = StepSpec::new("extra").success(RELEASED);
    let def = edited(vec![payment("payment"), inventory(), shipping, extra]);
    let state = in_flight(true);
    let why = state.check_against(&def).expect_err("does not fit");
    assert!(why.contains("has 3 steps, but order v1 defines 4"), "{why}");
    rejects_everything(&def, &state, &why);
}

#[test]
fn a_step_renamed_or_moved_without_a_new_version() {
    let shipping = || {
        StepSpec::new("shipping")
            .after("inventory")
            .success(SCHEDULED)
            .failure(SHIP_FAILED)
    };
    let renamed = edited(vec![payment("billing"), inventory(), shipping()]);
    let state = in_flight(true);
    let why = state.check_against(&renamed).expect_err("does not fit");
    assert_eq!(
        why,
        "saga order/o-1: step 1 is \"payment\", but in order v1 it is \"billing\": the definition changed without a new version"
    );
    rejects_everything(&renamed, &state, &why);

    let moved = edited(vec![inventory(), payment("payment"), shipping()]);
    let why = state.check_against(&moved).expect_err("does not fit");
    assert!(why.contains("step 1 is \"payment\""), "{why}");
    rejects_everything(&moved, &state, &why);
}

#[test]
fn a_compensation_removed_without_a_new_version() {
    let no_refund = StepSpec::new("payment")
        .success(AUTHORIZED)
        .failure(DECLINED)
        .deadline(Duration::from_secs(30));
    let shipping = StepSpec::new("shipping")
        .after("payment")
        .success(SCHEDULED)
        .failure(SHIP_FAILED);
    let def = edited(vec![no_refund, inventory(), shipping]);
    assert_eq!(
        in_flight(false).check_against(&def),
        Ok(()),
        "nothing in progress"
    );
    let state = in_flight(true);
    let why = state.check_against(&def).expect_err("does not fit");
    assert_eq!(
        why,
        "saga order/o-1: step \"payment\" has a compensation in progress, but order v1 defines none for it"
    );
    rejects_everything(&def, &state, &why);
}

#[test]
fn a_deadline_of_an_unknown_step() {
    let def = order();
    let mut state = in_flight(false);
    state.deadlines.push(Deadline {
        kind: DeadlineKind::CompensationAck("billing".into()),
        at: Millis(2_000),
    });
    let why = state.check_against(&def).expect_err("does not fit");
    assert_eq!(
        why,
        "saga order/o-1 has a pending acknowledgement deadline of step \"billing\"'s compensation, but order v1 has no such step"
    );
    rejects_everything(&def, &state, &why);
}

#[test]
fn a_fitting_state_passes_and_the_registry_checks_too() {
    let def = order();
    let state = in_flight(true);
    assert_eq!(state.check_against(&def), Ok(()));
    let mut defs = Definitions::new();
    defs.insert(def).expect("inserted");
    assert!(defs.checked_for_state(&state).is_ok());

    let mut edited_defs = Definitions::new();
    edited_defs
        .insert(edited(vec![payment("payment"), inventory()]))
        .expect("inserted");
    let why = edited_defs.checked_for_state(&state).expect_err("edited");
    assert!(why.contains("defines 2"), "{why}");
    assert!(!why.contains('\n'), "one line: {why}");

    let mut other = state;
    other.version = 7;
    let why = defs.checked_for_state(&other).expect_err("not loaded");
    assert_eq!(
        why,
        "saga order/o-1 is pinned to order v7, which is not loaded"
    );
}
