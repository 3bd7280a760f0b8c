//! Table-driven tests of the reference order saga: each case is a script of inputs and the
//! exact list of event types it must emit, and the status it must end in.

mod common;

use std::time::Duration;

use choreo_saga::testing::SagaTest;
use choreo_saga::{
    Action, Command, CompensationSpec, Definition, EmitKind, EmitSpec, SagaSpec, SagaState, Status,
    StepSpec, StepStatus, UnknownOutcome,
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
            // Changed: inventory is in flight when the payment is declined; it is awaited, and
            // its failure needs nothing (it used to be cancelled at once, inventory unknown).
            name: "payment declined: nothing completed, nothing compensated",
            script: vec![Ev(PLACED), Ev(DECLINED), Ev(UNAVAILABLE)],
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
            // Changed: the payment's outcome is unknown at its deadline; its refund is safe for
            // that, so it is refunded too (it used to be taken as not having happened).
            name: "payment deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(RESERVED),
                Wait(30),
                Ev(RELEASED),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, RELEASE, CANCELLED],
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
            // Changed: the inventory's outcome is unknown; its release is safe for that.
            name: "inventory deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Wait(30),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"inventory\" missed its deadline (30s)"),
        },
        Case {
            // Changed: the shipment's outcome is unknown, and cancelling it blind is not safe:
            // the saga needs an operator for shipping (it used to be cancelled).
            name: "shipping deadline missed",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE],
            status: Status::NeedsOperator,
            reason: Some(
                "step \"shipping\" missed its deadline (100s); no answer by its deadline (100s), so its outcome is unknown",
            ),
        },
        Case {
            name: "shipping deadline missed, the operator skips it (nothing was shipped)",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
                skip("shipping"),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" missed its deadline (100s)"),
        },
        Case {
            name: "shipping deadline missed, the operator retries it (cancel it anyway)",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(100),
                Ev(REFUNDED),
                Ev(RELEASED),
                retry("shipping"),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCEL_SHIPMENT, CANCELLED],
            status: Status::Compensated,
            reason: Some("step \"shipping\" missed its deadline (100s)"),
        },
        Case {
            // Changed: shipping is in flight at the saga's deadline; it is awaited (up to its
            // own deadline, at 125 s) and its failure ends the wait.
            name: "overall deadline missed (shipping started late)",
            script: vec![
                Ev(PLACED),
                Wait(25),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                Wait(95),
                Ev(REFUNDED),
                Ev(RELEASED),
                Ev(SHIP_FAILED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("the saga missed its deadline (2m)"),
        },
        Case {
            // Changed: the cancellation now comes after the release (inventory was in flight
            // at the abort, so it was awaited); it used to come first.
            name: "a success of a step in flight at the abort is compensated before the cancellation",
            script: vec![Ev(PLACED), Ev(DECLINED), Ev(RESERVED), Ev(RELEASED)],
            emitted: vec![RELEASE, CANCELLED],
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
            // Changed: inventory is in flight at the abort; it is awaited until it answers.
            name: "operator abort while running",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(UNAVAILABLE),
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
        // Issue 9: a failure while another step is in flight.
        Case {
            name: "failure while payment is in flight: the saga waits for it",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE)],
            emitted: vec![],
            status: Status::Compensating,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "failure while payment is in flight, its success after the abort",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Ev(AUTHORIZED), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "failure while payment is in flight, its success before the abort",
            script: vec![Ev(PLACED), Ev(AUTHORIZED), Ev(UNAVAILABLE), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "failure while payment is in flight, its failure after the abort",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Ev(DECLINED)],
            emitted: vec![CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight payment is awaited up to its deadline",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Wait(29)],
            emitted: vec![],
            status: Status::Compensating,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight payment's deadline passes: its refund is safe, so it is refunded",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), Wait(30), Ev(REFUNDED)],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight payment succeeds after its deadline: refunded once, not twice",
            script: vec![
                Ev(PLACED),
                Ev(UNAVAILABLE),
                Wait(30),
                Ev(AUTHORIZED),
                Ev(REFUNDED),
            ],
            emitted: vec![REFUND, CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        Case {
            name: "in-flight shipping's deadline passes: cancelling it is not safe, operator",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(99),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE],
            status: Status::Compensating,
            reason: Some("customer called"),
        },
        Case {
            name: "in-flight shipping's deadline passed: needs an operator, naming it",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(100),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE],
            status: Status::NeedsOperator,
            reason: Some(
                "customer called; no answer by its deadline (100s), so its outcome is unknown",
            ),
        },
        Case {
            name: "in-flight shipping needing an operator succeeds late: it is cancelled",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(100),
                Ev(SCHEDULED),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCEL_SHIPMENT, CANCELLED],
            status: Status::Compensated,
            reason: Some("customer called"),
        },
        Case {
            name: "in-flight shipping needing an operator fails late: nothing to undo",
            script: vec![
                Ev(PLACED),
                Ev(AUTHORIZED),
                Ev(RESERVED),
                abort("customer called"),
                Ev(REFUNDED),
                Ev(RELEASED),
                Wait(100),
                Ev(SHIP_FAILED),
            ],
            emitted: vec![REQUESTED, REFUND, RELEASE, CANCELLED],
            status: Status::Compensated,
            reason: Some("customer called"),
        },
        Case {
            name: "operator skip of an awaited step ends the wait",
            script: vec![Ev(PLACED), Ev(UNAVAILABLE), skip("payment")],
            emitted: vec![CANCELLED],
            status: Status::Compensated,
            reason: Some("InventoryUnavailable"),
        },
        // A success after the saga's own deadline, once it is terminal.
        Case {
            name: "a success after the saga's deadline and its cancellation: a late compensation",
            script: vec![
                Ev(AUTHORIZED),
                Wait(121),
                Ev(REFUNDED),
                Ev(RESERVED),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, CANCELLED, RELEASE],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "a late compensation in flight leaves the saga compensated",
            script: vec![Ev(AUTHORIZED), Wait(121), Ev(REFUNDED), Ev(RESERVED)],
            emitted: vec![REFUND, CANCELLED, RELEASE],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "a late compensation never acknowledged needs an operator",
            script: vec![
                Ev(AUTHORIZED),
                Wait(121),
                Ev(REFUNDED),
                Ev(RESERVED),
                Wait(120),
            ],
            emitted: vec![REFUND, CANCELLED, RELEASE, RELEASE, RELEASE, RELEASE],
            status: Status::NeedsOperator,
            reason: Some("io.choreo.orders.ReleaseInventory was not acknowledged"),
        },
        Case {
            name: "a late compensation acknowledged at last: compensated again, no second cancellation",
            script: vec![
                Ev(AUTHORIZED),
                Wait(121),
                Ev(REFUNDED),
                Ev(RESERVED),
                Wait(120),
                Ev(RELEASED),
            ],
            emitted: vec![REFUND, CANCELLED, RELEASE, RELEASE, RELEASE, RELEASE],
            status: Status::Compensated,
            reason: Some("the start event never arrived"),
        },
        Case {
            name: "a success of a step that never started, after the cancellation",
            script: vec![
                Ev(PLACED),
                Ev(DECLINED),
                Ev(UNAVAILABLE),
                Ev(SCHEDULED),
                Ev(SHIPMENT_CANCELLED),
            ],
            emitted: vec![CANCELLED, CANCEL_SHIPMENT],
            status: Status::Compensated,
            reason: Some("PaymentDeclined"),
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
        let back = SagaState::from_json(&json).expect("deserializes");
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
