//! What one input can add to a saga's state is bounded: free text is truncated, long ids are
//! digested, only the data mappings read is kept (and an event whose kept data is too large is
//! rejected), and the lists are capped — so no flood of inputs makes a state grow without bound.

mod common;

use choreo_saga::testing::SagaTest;
use choreo_saga::{
    Action, Command, Event, Input, MAX_COLLECTED_BYTES, MAX_EVENT_ID_BYTES, MAX_PENDING_BYTES,
    MAX_REASON_BYTES, MAX_TIMELINE_TEXT_BYTES, Millis, PENDING_CAPACITY, SEEN_CAPACITY, SagaState,
    Status, StepStatus, TIMELINE_CAPACITY, apply,
};
use common::*;
use serde_json::{Value, json};

fn ev(id: &str, ty: &str, data: Value) -> Input {
    Input::Event(Event {
        id: id.into(),
        event_type: ty.into(),
        correlation_id: "o-1".into(),
        time: Millis(0),
        data,
    })
}

fn timeline_is_bounded(state: &SagaState) {
    assert!(state.timeline.entries.len() <= TIMELINE_CAPACITY);
    for e in &state.timeline.entries {
        assert!(e.what.len() <= MAX_TIMELINE_TEXT_BYTES, "{}", e.what.len());
    }
}

#[test]
fn an_operators_abort_reason_is_truncated() {
    let reason = "réclamation\n".repeat(10_000); // ~130 KB, multibyte, with newlines
    let t = SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .event(AUTHORIZED, data(AUTHORIZED))
        .command(Command::Abort { reason })
        .expect_status(Status::Compensating);
    let kept = t.state().abort_reason.as_deref().expect("aborted");
    let prefix = "aborted by an operator: ";
    assert!(kept.starts_with(prefix), "{kept:.40}");
    assert_eq!(
        kept.len() - prefix.len(),
        MAX_REASON_BYTES,
        "cut at the bound"
    );
    assert!(kept.ends_with('…'));
    assert!(!kept.contains('\n'));
    // What mappings read is the truncated reason.
    let refund = t
        .emitted()
        .iter()
        .find(|e| e.event_type == REFUND)
        .expect("refund");
    assert_eq!(refund.data["reason"], json!(kept));
    timeline_is_bounded(t.state());
}

#[test]
fn a_failure_events_reason_is_truncated() {
    let mut failure = data(UNAVAILABLE);
    failure["reason"] = json!("x".repeat(1_000_000));
    let t = SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .event(UNAVAILABLE, failure);
    let kept = t.state().abort_reason.as_deref().expect("aborted");
    assert!(kept.len() < MAX_REASON_BYTES + 100, "{}", kept.len());
    assert!(kept.ends_with("…)"), "{kept:.80}");
    timeline_is_bounded(t.state());
}

#[test]
fn long_event_ids_are_kept_as_a_digest_and_still_deduplicate() {
    let def = order();
    let mut state = SagaState::new(&def, "o-1", Millis(0));
    let long = "i".repeat(100_000);
    apply(
        &def,
        &mut state,
        &ev("start", PLACED, data(PLACED)),
        Millis(1),
    );
    let first = apply(
        &def,
        &mut state,
        &ev(&long, AUTHORIZED, data(AUTHORIZED)),
        Millis(2),
    );
    assert!(!first.is_empty());
    assert!(state.seen.iter().all(|id| id.len() <= MAX_EVENT_ID_BYTES));
    assert_eq!(
        state.step("payment").map(|s| s.status),
        Some(StepStatus::Completed)
    );
    // The same id again is a duplicate; a different long id is not.
    let again = apply(
        &def,
        &mut state,
        &ev(&long, AUTHORIZED, data(AUTHORIZED)),
        Millis(3),
    );
    assert!(again.is_empty(), "{again:?}");
    let other = format!("{long}2");
    let out = apply(
        &def,
        &mut state,
        &ev(&other, RESERVED, data(RESERVED)),
        Millis(4),
    );
    assert!(!out.is_empty());
    // Ids with control characters are digested too (they would bloat the JSON).
    let odd = "\u{1}".repeat(100);
    apply(
        &def,
        &mut state,
        &ev(&odd, DECLINED, data(DECLINED)),
        Millis(5),
    );
    assert!(state.seen.iter().all(|id| !id.contains('\u{1}')));
    timeline_is_bounded(&state);
}

#[test]
fn only_the_fields_mappings_read_are_kept() {
    let mut payment = data(AUTHORIZED);
    payment["blob"] = json!("b".repeat(1_000_000));
    let mut placed = data(PLACED);
    placed["items"] = json!(vec![json!({"sku": "s", "quantity": 1}); 50_000]);
    let t = SagaTest::new(order())
        .event(PLACED, placed)
        .event(AUTHORIZED, payment);
    let json = t.state().to_json().expect("json");
    assert!(json.len() < 16 * 1024, "{} bytes", json.len());
    assert_eq!(
        t.state().step("payment").and_then(|s| s.data.clone()),
        Some(json!({"payment_id": "p-1", "amount": {"amount_minor": 4200, "currency": "EUR"}}))
    );
}

#[test]
fn an_event_whose_kept_data_is_too_large_is_rejected() {
    let def = order();
    let mut state = SagaState::new(&def, "o-1", Millis(0));
    apply(
        &def,
        &mut state,
        &ev("start", PLACED, data(PLACED)),
        Millis(1),
    );
    let mut huge = data(AUTHORIZED);
    huge["payment_id"] = json!("p".repeat(MAX_COLLECTED_BYTES + 1));
    let out = apply(
        &def,
        &mut state,
        &ev("big", AUTHORIZED, huge.clone()),
        Millis(2),
    );
    match out.as_slice() {
        [Action::Rejected { reason }] => {
            assert!(
                reason.contains(&MAX_COLLECTED_BYTES.to_string()),
                "{reason}"
            );
        }
        other => panic!("not rejected: {other:?}"),
    }
    assert_eq!(
        state.step("payment").map(|s| s.status),
        Some(StepStatus::Running),
        "the step is not completed with truncated data"
    );
    assert!(state.to_json().expect("json").len() < 16 * 1024);
    // Not remembered: a redelivery is rejected again (the runtime dead-letters it).
    let out = apply(&def, &mut state, &ev("big", AUTHORIZED, huge), Millis(3));
    assert!(
        matches!(out.as_slice(), [Action::Rejected { .. }]),
        "{out:?}"
    );
    // A sane event for the step is still used.
    apply(
        &def,
        &mut state,
        &ev("ok", AUTHORIZED, data(AUTHORIZED)),
        Millis(4),
    );
    assert_eq!(
        state.step("payment").map(|s| s.status),
        Some(StepStatus::Completed)
    );
}

#[test]
fn the_buffer_before_the_start_event_is_bounded_in_bytes() {
    let def = order();
    let mut state = SagaState::new(&def, "o-1", Millis(0));
    let mut big = data(AUTHORIZED);
    big["payment_id"] = json!("p".repeat(MAX_COLLECTED_BYTES - 200));
    let mut rejected = 0;
    for n in 0..PENDING_CAPACITY {
        let out = apply(
            &def,
            &mut state,
            &ev(&format!("e{n}"), AUTHORIZED, big.clone()),
            Millis(1),
        );
        if matches!(out.as_slice(), [Action::Rejected { .. }]) {
            rejected += 1;
        }
    }
    assert!(rejected > 0, "the byte budget is reached before the count");
    let kept: usize = state
        .pending
        .iter()
        .map(|e| serde_json::to_vec(&e.data).expect("json").len())
        .sum();
    assert!(kept <= MAX_PENDING_BYTES, "{kept}");
}

#[test]
fn commands_naming_huge_steps_are_rejected_with_bounded_text() {
    let t = SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .command(Command::Retry {
            step: "s".repeat(1_000_000),
        })
        .expect_rejected()
        .command(Command::Skip {
            step: "s".repeat(1_000_000),
        })
        .expect_rejected();
    timeline_is_bounded(t.state());
    assert!(t.state().to_json().expect("json").len() < 16 * 1024);
}

#[test]
fn a_flood_of_hostile_inputs_keeps_the_state_bounded() {
    let def = order();
    let mut state = SagaState::new(&def, "o-1", Millis(0));
    // Quotes and backslashes: the worst case for JSON escaping; longer than every bound.
    let quotes = "\"\\".repeat(8 * 1024);
    let mut now = 0;
    let mut inputs: Vec<Input> = Vec::new();
    // Before the start: fill the buffer.
    for n in 0..200 {
        let mut d = data(RESERVED);
        d["reservation_id"] = json!("r".repeat(MAX_COLLECTED_BYTES - 100));
        inputs.push(ev(&format!("{n}{}", "i".repeat(1_000)), RESERVED, d));
    }
    inputs.push(ev("start", PLACED, data(PLACED)));
    for n in 0..400 {
        let mut d = data(DECLINED);
        d["reason"] = json!(quotes);
        inputs.push(ev(&format!("{n}{quotes}"), DECLINED, d));
        inputs.push(Input::Command(Command::Abort {
            reason: quotes.clone(),
        }));
        inputs.push(Input::Command(Command::Skip {
            step: quotes.clone(),
        }));
        inputs.push(ev(
            &format!("u{n}"),
            "io.choreo.Unknown",
            json!({"x": quotes}),
        ));
    }
    let mut max = 0;
    for (n, input) in inputs.iter().enumerate() {
        now += 1;
        apply(&def, &mut state, input, Millis(now));
        if n % 16 == 0 || n == 200 {
            max = max.max(state.to_json().expect("json").len());
        }
    }
    max = max.max(state.to_json().expect("json").len());
    assert!(state.seen.len() <= SEEN_CAPACITY);
    timeline_is_bounded(&state);
    // The documented bound: about 512 KiB plus 8 KiB per step (and the start event).
    assert!(max < 512 * 1024 + 4 * 8 * 1024, "{max} bytes");
    println!("largest state during the flood: {max} bytes of JSON");
}

/// A saga whose start event never comes does not wait forever, even when its definition sets
/// no saga deadline: it gives up `DEFAULT_START_WITHIN` after its first event (and is then
/// tombstoned like any finished saga). A saga that did start has no such deadline left.
#[test]
fn a_start_event_that_never_comes_is_waited_for_a_bounded_time() {
    let text = choreo_saga::Definition::reference_order_saga_toml();
    let without = text.replacen("\ndeadline = \"2m\"", "\n", 1);
    assert_ne!(without, text, "the saga deadline is removed");
    let def = choreo_saga::Definition::from_toml("no-deadline.toml", &without, &catalog())
        .expect("loads");
    assert!(def.deadline().is_none());
    let within = u64::try_from(choreo_saga::DEFAULT_START_WITHIN.as_millis()).expect("ms");

    let mut stray = SagaState::new(&def, "o-1", Millis(0));
    apply(
        &def,
        &mut stray,
        &ev("p1", AUTHORIZED, data(AUTHORIZED)),
        Millis(10),
    );
    assert_eq!(stray.status, Status::Pending);
    let due: Vec<Millis> = stray.deadlines.iter().map(|d| d.at).collect();
    assert_eq!(
        due,
        vec![Millis(10 + within)],
        "waits DEFAULT_START_WITHIN for its start"
    );
    let fired = apply(
        &def,
        &mut stray,
        &Input::Deadline {
            kind: choreo_saga::DeadlineKind::Saga,
        },
        Millis(10 + within),
    );
    assert!(!fired.is_empty());
    assert!(
        !matches!(stray.status, Status::Pending | Status::Running),
        "it gave up: {:?}",
        stray.status
    );

    let mut started = SagaState::new(&def, "o-1", Millis(0));
    apply(
        &def,
        &mut started,
        &ev("p1", AUTHORIZED, data(AUTHORIZED)),
        Millis(10),
    );
    apply(
        &def,
        &mut started,
        &ev("o1", PLACED, data(PLACED)),
        Millis(20),
    );
    assert_eq!(started.status, Status::Running);
    assert!(
        started
            .deadlines
            .iter()
            .all(|d| d.kind != choreo_saga::DeadlineKind::Saga),
        "no wait for a start that came: {:?}",
        started.deadlines
    );
}
