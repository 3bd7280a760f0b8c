//! The order saga's behaviour beyond the table: emitted data, deadlines, operator commands,
//! compensation order, steps awaited before a cancellation, late and unknown outcomes.

mod common;

use std::time::Duration;

use choreo_saga::testing::SagaTest;
use choreo_saga::{
    Action, Command, CompensationSpec, Definition, EmitKind, EmitSpec, SagaSpec, SagaState, Status,
    StepSpec, StepStatus, UnknownOutcome,
};
use common::*;

#[test]
fn emitted_data_fills_every_schema_field() {
    let t = run(
        &order(),
        &[Ev(PLACED), Ev(AUTHORIZED), Ev(RESERVED), Ev(SHIP_FAILED)],
    );
    let catalog = catalog();
    for e in t.emitted() {
        let info = catalog.event(&e.event_type).expect("in catalog");
        assert_eq!(e.topic, info.topic);
        assert_eq!(e.key, "o-1");
        let obj = e.data.as_object().expect("object");
        let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut want = info.field_names();
        fields.sort_unstable();
        want.sort_unstable();
        assert_eq!(fields, want, "{}", e.event_type);
    }
    let refund = t
        .emitted()
        .iter()
        .find(|e| e.event_type == REFUND)
        .expect("refund emitted");
    assert_eq!(
        refund.data,
        serde_json::json!({
            "order_id": "o-1", "payment_id": "p-1",
            "amount": {"amount_minor": 4200, "currency": "EUR"},
            "reason": "step \"shipping\" failed: io.choreo.orders.ShipmentFailed (address unreachable)"
        })
    );
    let requested = &t.emitted()[0];
    assert_eq!(requested.kind, EmitKind::StepStart);
    assert_eq!(
        requested.data,
        serde_json::json!({"order_id": "o-1", "shipping_address": "1 Main St"})
    );
    assert_eq!(
        refund.event_id,
        choreo_saga::event_id("order/o-1", Some("payment"), EmitKind::Compensation)
    );
}

#[test]
fn order_confirmed_carries_the_collected_ids() {
    let t = run(
        &order(),
        &[Ev(PLACED), Ev(AUTHORIZED), Ev(RESERVED), Ev(SCHEDULED)],
    );
    let confirmed = t.emitted().last().expect("emitted");
    assert_eq!(
        confirmed.data,
        serde_json::json!({"order_id": "o-1", "payment_id": "p-1", "reservation_id": "r-1", "shipment_id": "s-1"})
    );
    assert!(
        t.state().deadlines().is_empty(),
        "a completed saga keeps no deadline"
    );
}

#[test]
fn a_duplicate_leaves_the_state_byte_for_byte_unchanged() {
    let mut t = run(&order(), &[EvId("e1", PLACED), EvId("e2", AUTHORIZED)]);
    let before = t.state().to_json().expect("json");
    let input = choreo_saga::Input::Event(choreo_saga::Event {
        id: "e2".into(),
        event_type: AUTHORIZED.into(),
        correlation_id: "o-1".into(),
        time: t.now(),
        data: data(AUTHORIZED),
    });
    assert!(t.input(&input).is_empty(), "a duplicate yields no action");
    assert_eq!(t.state().to_json().expect("json"), before);
}

#[test]
fn deadlines_are_listed_for_the_runtime_index() {
    let t = run(&order(), &[Ev(PLACED)]);
    let mut kinds: Vec<String> = t
        .state()
        .deadlines()
        .iter()
        .map(|d| format!("{}@{}", d.kind, d.at.since(t.now())))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "deadline of step \"inventory\"@30000",
            "deadline of step \"payment\"@30000",
            "saga deadline@120000",
        ]
    );
}

#[test]
fn stale_deadline_fires_are_ignored() {
    let mut t = run(&order(), &[Ev(PLACED), Ev(AUTHORIZED)]);
    let fire = choreo_saga::Input::Deadline {
        kind: choreo_saga::DeadlineKind::Step("payment".into()),
    };
    assert!(
        t.input(&fire).is_empty(),
        "payment's deadline was cancelled"
    );
    let early = choreo_saga::Input::Deadline {
        kind: choreo_saga::DeadlineKind::Step("inventory".into()),
    };
    assert!(
        t.input(&early).is_empty(),
        "inventory's deadline is not due yet"
    );
    assert_eq!(t.state().status(), Status::Running);
}

#[test]
fn rejected_commands_say_why() {
    SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .command(Command::Resume)
        .expect_rejected()
        .command(Command::Retry {
            step: "payment".into(),
        })
        .expect_rejected()
        .command(Command::Skip {
            step: "nope".into(),
        })
        .expect_rejected()
        .expect_status(Status::Running);
}

/// A saga built with the Rust API where one step comes after another and a third runs in
/// parallel: compensation goes in reverse order of completion (the dependent first).
fn chained() -> Definition {
    let secs = Duration::from_secs;
    SagaSpec::new("chained", 1, PLACED)
        .deadline(Duration::from_secs(600))
        .step(
            StepSpec::new("payment")
                .success(AUTHORIZED)
                .failure(DECLINED)
                .deadline(secs(30))
                .compensate(
                    CompensationSpec::new(
                        EmitSpec::new(REFUND)
                            .map("order_id", "saga.correlation_id")
                            .map("payment_id", "payment.payment_id")
                            .map("amount", "payment.amount")
                            .map("reason", "saga.reason"),
                    )
                    .acked_by(REFUNDED, secs(30), 1),
                ),
        )
        .step(
            StepSpec::new("shipping")
                .after("payment")
                .success(SCHEDULED)
                .failure(SHIP_FAILED)
                .deadline(secs(60))
                .on_start(
                    EmitSpec::new(REQUESTED)
                        .map("order_id", "start.order_id")
                        .map("shipping_address", "start.shipping_address"),
                )
                .compensate(
                    CompensationSpec::new(
                        EmitSpec::new(CANCEL_SHIPMENT)
                            .map("order_id", "saga.correlation_id")
                            .map("shipment_id", "shipping.shipment_id")
                            .literal("reason", serde_json::json!("order cancelled")),
                    )
                    .acked_by(SHIPMENT_CANCELLED, secs(30), 1),
                ),
        )
        .step(
            StepSpec::new("inventory")
                .success(RESERVED)
                .failure(UNAVAILABLE)
                .deadline_from_saga_start(secs(300)),
        )
        .on_abort(
            EmitSpec::new(CANCELLED)
                .map("order_id", "saga.correlation_id")
                .map("reason", "saga.reason"),
        )
        .build(&catalog())
        .expect("valid")
}

#[test]
fn compensation_runs_in_reverse_order_of_completion() {
    SagaTest::new(chained())
        .event(PLACED, data(PLACED))
        .event(AUTHORIZED, data(AUTHORIZED))
        .expect_emitted_exactly(&[REQUESTED])
        .event(SCHEDULED, data(SCHEDULED))
        .event(UNAVAILABLE, data(UNAVAILABLE))
        // shipping completed after payment: it is compensated first, payment waits.
        .expect_emitted_exactly(&[CANCEL_SHIPMENT])
        .expect_status(Status::Compensating)
        .event(SHIPMENT_CANCELLED, data(SHIPMENT_CANCELLED))
        .expect_emitted_exactly(&[REFUND])
        .event(REFUNDED, data(REFUNDED))
        .expect_emitted_exactly(&[CANCELLED])
        .expect_status(Status::Compensated);
}

#[test]
fn a_stuck_dependent_holds_back_the_steps_before_it() {
    let t = SagaTest::new(chained())
        .event(PLACED, data(PLACED))
        .event(AUTHORIZED, data(AUTHORIZED))
        .event(SCHEDULED, data(SCHEDULED))
        .command(Command::Abort {
            reason: "test".into(),
        })
        .expect_emitted_exactly(&[REQUESTED, CANCEL_SHIPMENT])
        .advance(Duration::from_secs(60))
        .expect_emitted_exactly(&[CANCEL_SHIPMENT])
        .expect_status(Status::NeedsOperator);
    assert_eq!(t.state().needs_operator().len(), 1);
    assert_eq!(t.state().needs_operator()[0].0, "shipping");
    t.command(Command::Skip {
        step: "shipping".into(),
    })
    .expect_emitted_exactly(&[REFUND])
    .expect_status(Status::Compensating);
}

#[test]
fn a_step_without_compensation_is_not_compensated() {
    SagaTest::new(chained())
        .event(PLACED, data(PLACED))
        .event(RESERVED, data(RESERVED))
        .event(DECLINED, data(DECLINED))
        .expect_emitted_exactly(&[CANCELLED])
        .expect_status(Status::Compensated);
}

/// Every status change of a run, in order.
fn statuses(t: &SagaTest) -> Vec<(Status, Status)> {
    t.actions()
        .iter()
        .filter_map(|a| match a {
            Action::Status { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn issue_9_the_payment_in_flight_is_awaited_and_the_saga_never_flips_back() {
    // Inventory fails while the payment request is in flight.
    let t = run(&order(), &[Ev(PLACED), Ev(UNAVAILABLE)]);
    assert_eq!(t.state().status(), Status::Compensating);
    assert_eq!(t.state().awaiting_steps(), vec!["payment"]);
    assert!(
        t.emitted().is_empty(),
        "no cancellation while payment is in flight"
    );
    // Its deadline stays armed: that is how long the saga waits.
    assert!(
        t.state()
            .deadlines()
            .iter()
            .any(|d| d.kind == choreo_saga::DeadlineKind::Step("payment".into())),
        "{:?}",
        t.state().deadlines()
    );
    // 0.1 s later the payment is authorized: refunded, then cancelled once refunded.
    let t = t
        .advance(Duration::from_millis(100))
        .event(AUTHORIZED, data(AUTHORIZED))
        .expect_emitted_exactly(&[REFUND])
        .expect_status(Status::Compensating)
        .event(REFUNDED, data(REFUNDED))
        .expect_emitted_exactly(&[CANCELLED])
        .expect_status(Status::Compensated);
    assert!(t.state().awaiting_steps().is_empty());
    assert_eq!(
        statuses(&t),
        vec![
            (Status::Pending, Status::Running),
            (Status::Running, Status::Compensating),
            (Status::Compensating, Status::Compensated),
        ]
    );
    assert!(
        t.emitted().iter().all(|e| !e.late_compensation),
        "compensated before the saga was terminal: not a late compensation"
    );
}

#[test]
fn a_late_compensation_is_flagged_and_the_status_stays_terminal() {
    // The start never comes: the saga's deadline aborts it, the buffered payment is refunded,
    // the saga is compensated; then the inventory reports a reservation.
    let t = run(
        &order(),
        &[Ev(AUTHORIZED), Wait(121), Ev(REFUNDED), Ev(RESERVED)],
    );
    assert_eq!(t.state().status(), Status::Compensated);
    let release: Vec<_> = t
        .emitted()
        .iter()
        .filter(|e| e.event_type == RELEASE)
        .collect();
    assert_eq!(release.len(), 1);
    assert!(release[0].late_compensation, "{:?}", release[0]);
    assert_eq!(
        release[0].event_id,
        choreo_saga::event_id("order/o-1", Some("inventory"), EmitKind::Compensation),
        "event ids do not change"
    );
    assert!(
        t.state()
            .timeline
            .entries
            .iter()
            .any(|e| e.what.contains("late compensation of step \"inventory\"")),
        "recorded in the timeline"
    );
    assert!(
        !t.state().is_finished(),
        "a late compensation awaits its acknowledgement"
    );
    // Never acknowledged: re-emitted (not flagged again), then needs an operator; the
    // acknowledgement at last brings it back to compensated, with no second cancellation.
    let t = t
        .advance(Duration::from_secs(120))
        .expect_status(Status::NeedsOperator)
        .event(RELEASED, data(RELEASED))
        .expect_status(Status::Compensated);
    let flagged = t.emitted().iter().filter(|e| e.late_compensation).count();
    assert_eq!(
        flagged, 1,
        "only the first emission counts as a late compensation"
    );
    assert_eq!(
        t.emitted()
            .iter()
            .filter(|e| e.event_type == CANCELLED)
            .count(),
        1
    );
    assert!(t.state().is_finished());
    assert_eq!(
        statuses(&t),
        vec![
            (Status::Pending, Status::Compensating),
            (Status::Compensating, Status::Compensated),
            (Status::Compensated, Status::NeedsOperator),
            (Status::NeedsOperator, Status::Compensated),
        ]
    );
}

#[test]
fn the_unknown_step_is_named_for_the_operator() {
    let t = run(
        &order(),
        &[
            Ev(PLACED),
            Ev(AUTHORIZED),
            Ev(RESERVED),
            abort("customer called"),
            Ev(REFUNDED),
            Ev(RELEASED),
            Wait(100),
        ],
    );
    assert_eq!(t.state().status(), Status::NeedsOperator);
    let ops = t.state().needs_operator();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].0, "shipping");
    assert!(ops[0].1.contains("on_unknown_outcome"), "{}", ops[0].1);
    assert_eq!(
        t.state().step("shipping").map(|s| s.status),
        Some(StepStatus::Unknown)
    );
    // The reason survives a JSON round trip.
    let back = SagaState::from_json(&t.state().to_json().expect("json")).expect("parses");
    assert_eq!(back.needs_operator(), ops);
}

/// A saga whose payment step has no deadline of its own: in flight at an abort, it is awaited
/// up to the saga's deadline.
fn no_step_deadline(on_unknown: UnknownOutcome) -> Definition {
    SagaSpec::new("nodeadline", 1, PLACED)
        .deadline(Duration::from_secs(60))
        .step(
            StepSpec::new("payment")
                .success(AUTHORIZED)
                .failure(DECLINED)
                .compensate(
                    CompensationSpec::new(
                        EmitSpec::new(REFUND)
                            .map("order_id", "saga.correlation_id")
                            .map("payment_id", "payment.payment_id")
                            .map("amount", "payment.amount")
                            .map("reason", "saga.reason"),
                    )
                    .acked_by(REFUNDED, Duration::from_secs(30), 1)
                    .on_unknown_outcome(on_unknown),
                ),
        )
        .step(
            StepSpec::new("inventory")
                .success(RESERVED)
                .failure(UNAVAILABLE),
        )
        .on_abort(
            EmitSpec::new(CANCELLED)
                .map("order_id", "saga.correlation_id")
                .map("reason", "saga.reason"),
        )
        .build(&catalog())
        .expect("valid")
}

#[test]
fn a_step_without_a_deadline_is_awaited_up_to_the_sagas() {
    let t = SagaTest::new(no_step_deadline(UnknownOutcome::Operator))
        .event(PLACED, data(PLACED))
        .advance(Duration::from_secs(10))
        .event(UNAVAILABLE, data(UNAVAILABLE))
        .expect_nothing_emitted()
        .expect_status(Status::Compensating)
        .advance(Duration::from_secs(49))
        .expect_status(Status::Compensating)
        .advance(Duration::from_secs(1))
        // At the saga's deadline the payment's outcome is unknown: not safe, an operator.
        .expect_nothing_emitted()
        .expect_status(Status::NeedsOperator);
    assert_eq!(t.state().needs_operator()[0].0, "payment");
    assert!(
        t.state().needs_operator()[0]
            .1
            .contains("by the saga's deadline"),
        "{:?}",
        t.state().needs_operator()
    );
    // It succeeds after all: now it is known, and compensated.
    t.event(AUTHORIZED, data(AUTHORIZED))
        .expect_emitted_exactly(&[REFUND])
        .expect_status(Status::Compensating)
        .event(REFUNDED, data(REFUNDED))
        .expect_emitted_exactly(&[CANCELLED])
        .expect_status(Status::Compensated);
}

#[test]
fn a_success_after_the_sagas_deadline_is_compensated_exactly_once() {
    // The saga's deadline fires while both steps are in flight. Payment has no deadline of its
    // own, so its outcome is unknown now; its refund is safe for that and goes at once.
    // Inventory has no compensation: whatever it does changes nothing, so it is not awaited.
    let t = SagaTest::new(no_step_deadline(UnknownOutcome::Compensate))
        .event(PLACED, data(PLACED))
        .advance(Duration::from_secs(60))
        .expect_emitted_exactly(&[REFUND])
        .expect_status(Status::Compensating);
    assert!(t.state().awaiting_steps().is_empty());
    let t = t
        .event(REFUNDED, data(REFUNDED))
        .expect_emitted_exactly(&[CANCELLED])
        .expect_status(Status::Compensated)
        // The payment succeeds after all: it was refunded already, not again.
        .event(AUTHORIZED, data(AUTHORIZED))
        .expect_nothing_emitted()
        .expect_status(Status::Compensated)
        // The inventory succeeds after all: nothing to undo; the saga stays compensated.
        .event(RESERVED, data(RESERVED))
        .expect_nothing_emitted()
        .expect_status(Status::Compensated);
    assert_eq!(
        t.state().step("payment").map(|s| s.status),
        Some(StepStatus::Completed)
    );
    assert!(t.state().is_finished());
    assert_eq!(
        statuses(&t),
        vec![
            (Status::Pending, Status::Running),
            (Status::Running, Status::Compensating),
            (Status::Compensating, Status::Compensated),
        ]
    );
}

#[test]
fn states_written_before_steps_were_awaited_still_load_and_stay_terminal() {
    // A compensated saga as the changelog held it before this change: the step in flight at
    // the abort was marked abandoned, and there is no `needs_operator` field on steps.
    let old = r#"{"saga_id":"order/o-1","definition":"order","version":1,"correlation_id":"o-1",
        "status":"compensated","created_at":1000,"started_at":1000,"updated_at":1001,
        "start_data":{"shipping_address":"1 Main St"},
        "abort_reason":"step \"inventory\" failed: io.choreo.orders.InventoryUnavailable (out of stock)",
        "abort_emitted":true,
        "steps":[
          {"name":"payment","status":"abandoned","started_at":1000,"finished_at":null,"completion_rank":null,"late":false,"data":null,"compensation":{"state":"not_started"}},
          {"name":"inventory","status":"failed","started_at":1000,"finished_at":1001,"completion_rank":null,"late":false,"data":null,"compensation":{"state":"not_started"}},
          {"name":"shipping","status":"waiting","started_at":null,"finished_at":null,"completion_rank":null,"late":false,"data":null,"compensation":{"state":"not_started"}}],
        "pending":[],"deadlines":[],"seen":["e1","e2"],"completions":0,
        "timeline":{"entries":[],"dropped":0}}"#;
    let mut state = SagaState::from_json(old.as_bytes()).expect("an old state loads");
    let def = order();
    assert_eq!(state.check_against(&def), Ok(()));
    assert!(state.awaiting_steps().is_empty());
    let late = choreo_saga::Input::Event(choreo_saga::Event {
        id: "e3".into(),
        event_type: AUTHORIZED.into(),
        correlation_id: "o-1".into(),
        time: choreo_saga::Millis(2000),
        data: data(AUTHORIZED),
    });
    let out = state.apply(&def, &late, choreo_saga::Millis(2000));
    let refund = out
        .iter()
        .filter_map(Action::as_emit)
        .find(|e| e.event_type == REFUND)
        .expect("the late payment is refunded");
    assert!(refund.late_compensation);
    assert!(
        out.iter().all(|a| !matches!(a, Action::Status { .. })),
        "the status stays compensated: {out:?}"
    );
    assert_eq!(state.status(), Status::Compensated);
}

#[test]
fn an_approved_step_completes_as_its_success_would_and_the_saga_goes_on() {
    // Payment approved by a person instead of a PaymentAuthorized; inventory answers; shipping
    // starts and completes the saga.
    let t = SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .command(Command::Approve {
            step: "payment".into(),
            reason: "paid by bank transfer, checked by hand".into(),
        })
        .expect_status(Status::Running)
        .expect_nothing_emitted()
        .event(RESERVED, data(RESERVED))
        .expect_emitted_exactly(&[REQUESTED])
        .event(SCHEDULED, data(SCHEDULED))
        .expect_emitted_exactly(&[CONFIRMED])
        .expect_status(Status::Completed);
    let payment = &t.state().steps[0];
    assert_eq!(payment.status, StepStatus::Completed);
    assert!(
        t.state().timeline.entries.iter().any(|e| e
            .what
            .contains("approved by an operator: paid by bank transfer")),
        "the approval and its reason are in the timeline"
    );
    // Its deadline went with it: advancing past it changes nothing.
    let t = t.advance(Duration::from_secs(60)).expect_nothing_emitted();
    assert_eq!(t.state().status(), Status::Completed);
}

#[test]
fn a_rejected_step_fails_as_its_failure_would_and_completed_steps_are_compensated() {
    SagaTest::new(order())
        .event(PLACED, data(PLACED))
        .event(AUTHORIZED, data(AUTHORIZED))
        .command(Command::Reject {
            step: "inventory".into(),
            reason: "address is on the fraud list".into(),
        })
        .expect_emitted_exactly(&[REFUND])
        .expect_status(Status::Compensating)
        .event(REFUNDED, data(REFUNDED))
        .expect_emitted_exactly(&[CANCELLED])
        .expect_status(Status::Compensated);
}

#[test]
fn only_a_started_step_of_a_running_saga_can_be_approved_or_rejected() {
    let approve = |step: &str| Command::Approve {
        step: step.into(),
        reason: "ok".into(),
    };
    SagaTest::new(order())
        .event(PLACED, data(PLACED))
        // shipping waits for payment and inventory: not started yet.
        .command(approve("shipping"))
        .expect_rejected()
        .command(approve("no-such-step"))
        .expect_rejected()
        .event(AUTHORIZED, data(AUTHORIZED))
        // payment already completed.
        .command(Command::Reject {
            step: "payment".into(),
            reason: "too late".into(),
        })
        .expect_rejected()
        .expect_status(Status::Running)
        .event(DECLINED, data(DECLINED))
        .expect_status(Status::Running);
}

/// An operator command carries an id: delivered twice (or retried by a client with the same
/// idempotency key) it acts once; another id is judged on its own.
#[test]
fn a_command_acts_once_per_id() {
    let def = order();
    let mut state = SagaState::new(&def, "o-1", choreo_saga::Millis(0));
    let placed = choreo_saga::Input::Event(choreo_saga::Event {
        id: "placed-1".into(),
        event_type: PLACED.into(),
        correlation_id: "o-1".into(),
        time: choreo_saga::Millis(0),
        data: data(PLACED),
    });
    choreo_saga::apply(&def, &mut state, &placed, choreo_saga::Millis(0));
    let approve = Command::Approve {
        step: "payment".into(),
        reason: "checked by hand".into(),
    };
    let first =
        choreo_saga::apply_command(&def, &mut state, "cmd-1", &approve, choreo_saga::Millis(1));
    assert!(
        !matches!(first.as_slice(), [Action::Rejected { .. }]),
        "{first:?}"
    );
    assert_eq!(
        state.step("payment").map(|s| s.status),
        Some(StepStatus::Completed)
    );
    let before = state.clone();
    let again =
        choreo_saga::apply_command(&def, &mut state, "cmd-1", &approve, choreo_saga::Millis(2));
    assert!(
        matches!(again.as_slice(), [Action::Rejected { reason }] if reason.contains("applied already")),
        "{again:?}"
    );
    assert_eq!(state, before, "a repeated command changes nothing");
    let abort = Command::Abort {
        reason: "customer called".into(),
    };
    let other =
        choreo_saga::apply_command(&def, &mut state, "cmd-2", &abort, choreo_saga::Millis(3));
    assert!(
        !matches!(other.as_slice(), [Action::Rejected { .. }]),
        "another id is another command: {other:?}"
    );
    assert_eq!(state.status, Status::Compensating);
}
