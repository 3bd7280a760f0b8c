//! Table-driven tests of the reference order saga: each case is a script of inputs and the
//! exact list of event types it must emit, and the status it must end in.

mod common;

use std::time::Duration;

use choreo_saga::testing::SagaTest;
use choreo_saga::{
    Command, CompensationSpec, Definition, EmitKind, EmitSpec, SagaSpec, Status, StepSpec,
};
use common::*;

/// One scripted input.
#[derive(Debug, Clone)]
enum Do {
    /// An event with a fresh id and the sample data of its type.
    Ev(&'static str),
    /// An event with this id (to send duplicates).
    EvId(&'static str, &'static str),
    /// Advance the virtual clock by this many seconds.
    Wait(u64),
    /// An operator command.
    Cmd(Command),
}
use Do::*;

struct Case {
    name: &'static str,
    script: Vec<Do>,
    emitted: Vec<&'static str>,
    status: Status,
    /// Part of the abort reason (or of the stuck reason), when there is one.
    reason: Option<&'static str>,
}

fn run(def: &Definition, script: &[Do]) -> SagaTest {
    let mut t = SagaTest::new(def.clone());
    for step in script {
        t = match step {
            Ev(ty) => t.event(ty, data(ty)),
            EvId(id, ty) => t.event_with_id(id, ty, data(ty)),
            Wait(s) => t.advance(Duration::from_secs(*s)),
            Cmd(c) => t.command(c.clone()),
        };
    }
    t
}

fn abort(reason: &str) -> Do {
    Cmd(Command::Abort {
        reason: reason.into(),
    })
}
fn retry(step: &str) -> Do {
    Cmd(Command::Retry { step: step.into() })
}
fn skip(step: &str) -> Do {
    Cmd(Command::Skip { step: step.into() })
}

/// Inputs that leave the payment's refund unacknowledged until the saga needs an operator.
fn stuck_refund() -> Vec<Do> {
    vec![
        Ev(PLACED),
        Ev(AUTHORIZED),
        Ev(UNAVAILABLE),
        Wait(30),
        Wait(30),
        Wait(30),
        Wait(30),
    ]
}

fn with(mut base: Vec<Do>, more: Vec<Do>) -> Vec<Do> {
    base.extend(more);
    base
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "happy path",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(RESERVED), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "happy path, inventory first",
            script: vec![Ev(PLACED), Ev(RESERVED), Ev(AUTHORIZED), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "payment declined: nothing completed, nothing compensated",
            script: vec![Ev(PLACED), Ev(DECLINED)],
            emitted: vec![CANCELLED],
            status: Status::Compensated,
            reason: Some(
                "step \"payment\" failed: io.choreo.orders.PaymentDeclined (insufficient funds)",
            ),
        },
        Case {
            name: "payment declined after inventory reserved",
            script: vec![Ev(PLACED), Ev(RESERVED), Ev(DECLINED), Ev(RELEASED)],
            emitted: vec![RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("PaymentDeclined"),
        },
        Case {
            name: "inventory unavailable after payment",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(UNAVAILABLE), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some(
                "step \"inventory\" failed: io.choreo.orders.InventoryUnavailable (out of stock)",
            ),
        },
        Case {
            name: "the start event never arrives: the buffered payment is refunded",
            script: vec![Ev(AUTHORIZED), Wait(121), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "an acknowledgement before its compensation (a repeated decision) counts",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(REFUNDED), Ev(UNAVAILABLE)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "inventory unavailable, refund not yet acknowledged",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(UNAVAILABLE)],
            emitted: vec![REFUND],
            status: Status::Compensating,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "shipping failed: payment and inventory compensated in parallel",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Ev(SHIP_FAILED),
                Ev(RELEASED),
                Ev(REFUNDED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" failed"),
        },
        Case {
            name: "payment deadline missed",
            script: vec![Ev(PLACED), Ev(RESERVED), Wait(30), Ev(RELEASED)],
            emitted: vec![RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"payment\" missed its deadline (30s)"),
        },
        Case {
            name: "payment deadline not yet missed",
            script: vec![Ev(PLACED), Ev(RESERVED), Wait(29)],
            emitted: vec![],
            status: Status::Running,
            reason: None,
        },
        Case {
            name: "inventory deadline missed",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Wait(30), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"inventory\" missed its deadline (30s)"),
        },
        Case {
            name: "shipping deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" missed its deadline (100s)"),
        },
        Case {
            name: "overall deadline missed (shipping started late)",
            script: vec![
                Ev(PLACED),
                Wait(25),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(95),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("the saga missed its deadline (2m)"),
        },
        Case {
            name: "late success after abort is compensated",
            script: vec![Ev(PLACED), Ev(DECLINED), Ev(RESERVED), Ev(RELEASED)],
            emitted: vec![CANCELLED, RELEASE],
            status: Status::Compensated,
            reason: Some("PaymentDeclined"),
        },
        Case {
            name: "late success after a deadline, while compensating",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Wait(30),
                Ev(RESERVED),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"inventory\" missed its deadline"),
        },
        Case {
            name: "late shipping success after shipping's deadline",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(SCHEDULED),
                Ev(REFUNDED),
                Ev(RELEASED),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCEL_SHIPMENT, CANCELLED],
            status: Status::Compensated,
            reason: Some("shipping"),
        },
        Case {
            name: "duplicates change nothing",
            script: vec![
                EvId("e1", PLACED),
                EvId("e1", PLACED),
                EvId("e2", AUTHORIZED),
                EvId("e2", AUTHORIZED),
                EvId("e3", RESERVED),
                EvId("e3", RESERVED),
                EvId("e2", AUTHORIZED),
                EvId("e4", SCHEDULED),
                EvId("e4", SCHEDULED),
            ],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "a second success event with a new id is ignored",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Ev(SCHEDULED),
            ],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "duplicate failure and duplicate ack",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                EvId("x", UNAVAILABLE),
                EvId("x", UNAVAILABLE),
                EvId("y", REFUNDED),
                EvId("y", REFUNDED),
            ],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "successes before the start event are buffered",
            script: vec![Ev(AUTHORIZED), Ev(RESERVED)],
            emitted: vec![],
            status: Status::Pending,
            reason: None,
        },
        Case {
            name: "out of order: successes before the start event",
            script: vec![Ev(AUTHORIZED), Ev(RESERVED), Ev(PLACED), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "out of order: shipment scheduled before everything",
            script: vec![Ev(SCHEDULED), Ev(RESERVED), Ev(PLACED), Ev(AUTHORIZED)],
            emitted: vec![CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "out of order: failure before the start event",
            script: vec![Ev(AUTHORIZED), Ev(UNAVAILABLE), Ev(PLACED), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "compensation never acknowledged",
            script: stuck_refund(),
            emitted: vec![REFUND, REFUND, REFUND, REFUND],
            status: Status::NeedsOperator,
            reason: Some(
                "io.choreo.orders.RefundPayment was not acknowledged by io.choreo.orders.PaymentRefunded after 4 emissions",
            ),
        },
        Case {
            name: "compensation acknowledged after one re-emission",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(UNAVAILABLE),
                Wait(30),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "ack arriving after the saga needs an operator settles it",
            script: with(stuck_refund(), vec![Ev(REFUNDED)]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator abort while running",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                abort("customer called"),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("aborted by an operator: customer called"),
        },
        Case {
            name: "operator abort before the start event compensates buffered successes",
            script: vec![Ev(AUTHORIZED), abort("never started"), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("never started"),
        },
        Case {
            name: "operator abort of a completed saga is rejected",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Ev(SCHEDULED),
                abort("too late"),
            ],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "operator retry of a stuck compensation",
            script: with(stuck_refund(), vec![retry("payment"), Ev(REFUNDED)]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator retry, then never acknowledged again",
            script: with(
                stuck_refund(),
                vec![retry("payment"), Wait(30), Wait(30), Wait(30), Wait(30)],
            ),
            emitted: vec![REFUND; 8],
            status: Status::NeedsOperator,
            reason: Some("not acknowledged"),
        },
        Case {
            name: "operator skip of a stuck compensation",
            script: with(stuck_refund(), vec![skip("payment")]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator skip of a running step",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), skip("inventory"), Ev(SCHEDULED)],
            emitted: vec![REQUESTED, CONFIRMED],
            status: Status::Completed,
            reason: None,
        },
        Case {
            name: "operator resume waits for the acknowledgement again",
            script: with(stuck_refund(), vec![Cmd(Command::Resume), Ev(REFUNDED)]),
            emitted: vec![REFUND, REFUND, REFUND, REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "operator resume, then the retry budget runs out again",
            script: with(
                stuck_refund(),
                vec![Cmd(Command::Resume), Wait(30), Wait(30), Wait(30), Wait(30)],
            ),
            emitted: vec![REFUND; 7],
            status: Status::NeedsOperator,
            reason: Some("not acknowledged"),
        },
        Case {
            name: "operator resume of a running saga is rejected",
            script: vec![Ev(PLACED), Cmd(Command::Resume)],
            emitted: vec![],
            status: Status::Running,
            reason: None,
        },
    ]
}

#[test]
fn order_saga_table() {
    let def = order();
    for case in cases() {
        let t = run(&def, &case.script);
        let got: Vec<&str> = t.emitted().iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(got, case.emitted, "case {:?}: emitted events", case.name);
        assert_eq!(
            t.state().status(),
            case.status,
            "case {:?}: status",
            case.name
        );
        let reason = t
            .state()
            .abort_reason
            .clone()
            .into_iter()
            .chain(
                t.state()
                    .needs_operator()
                    .iter()
                    .map(|(_, r)| r.to_string()),
            )
            .collect::<Vec<_>>()
            .join("; ");
        match case.reason {
            Some(want) => assert!(
                reason.contains(want),
                "case {:?}: reason {reason:?} should contain {want:?}",
                case.name
            ),
            None => assert!(
                reason.is_empty(),
                "case {:?}: unexpected reason {reason:?}",
                case.name
            ),
        }
        // Every emission of one (step, kind) carries one event id; re-emissions repeat it.
        for a in t.emitted() {
            for b in t.emitted() {
                if a.step == b.step && a.kind == b.kind {
                    assert_eq!(a.event_id, b.event_id, "case {:?}", case.name);
                }
            }
        }
        // The state survives a JSON round trip.
        let json = t.state().to_json().expect("serializes");
        let back = choreo_saga::SagaState::from_json(&json).expect("deserializes");
        assert_eq!(&back, t.state(), "case {:?}: JSON round trip", case.name);
    }
}

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
