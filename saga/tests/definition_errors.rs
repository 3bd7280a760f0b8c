//! Every load-time rejection names the file, the line and the reason.

mod common;

use std::time::Duration;

use choreo_saga::{
    CompensationSpec, Definition, Definitions, EmitSpec, SagaError, SagaSpec, StepSpec,
};
use common::*;

const FILE: &str = "saga/definitions/order.toml";

/// The reference definition with `from` (first occurrence) replaced by `to`.
fn mutated(from: &str, to: &str) -> String {
    let text = Definition::reference_order_saga_toml();
    assert!(
        text.contains(from),
        "the reference definition contains {from:?}"
    );
    text.replacen(from, to, 1)
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).expect("needle present");
    text[..at].matches('\n').count() + 1
}

/// Loads `text`, expects a rejection at the line of `at_text` whose reason contains `reason`.
fn rejects(text: &str, at_text: &str, reason: &str) -> String {
    let err = Definition::from_toml(FILE, text, &catalog()).expect_err("must be rejected");
    let SagaError::Definition {
        file,
        line,
        reason: got,
    } = &err
    else {
        panic!("expected a definition error, got {err:?}");
    };
    assert_eq!(file, FILE);
    assert_eq!(
        *line,
        line_of(text, at_text),
        "line of {at_text:?}; error: {err}"
    );
    assert!(
        got.contains(reason),
        "reason {got:?} should contain {reason:?}"
    );
    err.to_string()
}

#[test]
fn the_reference_definition_loads() {
    let def = order();
    assert_eq!(def.name(), "order");
    assert_eq!(def.version(), 1);
    assert_eq!(def.steps().len(), 3);
    assert_eq!(def.steps()[2].after, vec![0, 1]);
    assert_eq!(def.deadline(), Some(Duration::from_secs(120)));
}

#[test]
fn the_definition_file_on_disk_loads_too() {
    let path = format!("{}/definitions/order.toml", manifest_dir());
    let def = Definition::load(path, &catalog()).expect("loads");
    assert_eq!(def, order());
    let all = Definitions::load_dir(format!("{}/definitions", manifest_dir()), &catalog())
        .expect("loads");
    assert_eq!(all.latest("order").map(|d| d.version()), Some(1));
}

#[test]
fn unknown_event_type() {
    let text = mutated(
        "io.choreo.orders.PaymentDeclined",
        "io.choreo.orders.PaymentBounced",
    );
    let shown = rejects(
        &text,
        "io.choreo.orders.PaymentBounced",
        "is not in the event catalog",
    );
    assert!(
        shown.contains("step \"payment\": failure event io.choreo.orders.PaymentBounced"),
        "{shown}"
    );
}

#[test]
fn unknown_start_event() {
    let text = mutated(
        "start = \"io.choreo.orders.OrderPlaced\"",
        "start = \"io.choreo.orders.Nope\"",
    );
    rejects(
        &text,
        "io.choreo.orders.Nope",
        "start event io.choreo.orders.Nope is not in the event catalog",
    );
}

#[test]
fn dependency_cycle() {
    let text = mutated(
        "name = \"payment\"\n",
        "name = \"payment\"\nafter = [\"shipping\"]\n",
    );
    let shown = rejects(&text, "after = [\"shipping\"]", "dependency cycle");
    assert!(shown.contains("payment -> shipping -> payment"), "{shown}");
}

#[test]
fn waits_for_an_unknown_step() {
    let text = mutated(
        "after = [\"payment\", \"inventory\"]",
        "after = [\"payment\", \"invent\"]",
    );
    rejects(
        &text,
        "\"invent\"",
        "step \"shipping\": waits for unknown step \"invent\"",
    );
}

#[test]
fn duplicate_step_name() {
    let text = mutated("name = \"inventory\"", "name = \"payment\"");
    // The second `name = "payment"` is the offending one.
    let first = line_of(&text, "name = \"payment\"");
    let err = Definition::from_toml(FILE, &text, &catalog()).expect_err("rejected");
    let SagaError::Definition { line, reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        *line > first,
        "points at the duplicate, not the first: {err}"
    );
    assert_eq!(text.lines().nth(line - 1), Some("name = \"payment\""));
    assert_eq!(reason, "duplicate step \"payment\"");
}

#[test]
fn compensation_reads_data_no_step_collects() {
    let text = mutated(
        "payment_id = \"payment.payment_id\"",
        "payment_id = \"payment.foo\"",
    );
    let line = line_of(&text, "payment.foo");
    let shown = rejects(&text, "payment.foo", "no step collects it");
    assert_eq!(
        shown,
        format!(
            "{FILE}:{line}: step \"payment\": compensation reads payment.foo, but no step collects it"
        )
    );
}

#[test]
fn mapping_reads_an_unknown_step() {
    let text = mutated(
        "shipment_id = \"shipping.shipment_id\"",
        "shipment_id = \"billing.shipment_id\"",
    );
    rejects(
        &text,
        "billing.shipment_id",
        "compensation reads billing.shipment_id, but no step collects it",
    );
}

#[test]
fn mapping_reads_a_field_the_start_event_lacks() {
    let text = mutated("start.shipping_address", "start.billing_address");
    rejects(
        &text,
        "start.billing_address",
        "step \"shipping\": on_start reads start.billing_address, but the start event io.choreo.orders.OrderPlaced has no field billing_address",
    );
}

#[test]
fn mapping_leaves_a_required_field_unmapped() {
    let text = mutated(", reason = \"saga.reason\" }", " }");
    rejects(
        &text,
        "event = \"io.choreo.orders.RefundPayment\"",
        "needs field \"reason\", which is not mapped and has no default",
    );
}

#[test]
fn mapping_fills_a_field_the_event_lacks() {
    let text = mutated(
        "order_id = \"saga.correlation_id\", payment_id",
        "order_ref = \"saga.correlation_id\", payment_id",
    );
    rejects(
        &text,
        "order_ref",
        "maps field \"order_ref\", but io.choreo.orders.RefundPayment has no such field",
    );
}

#[test]
fn malformed_duration() {
    let text = mutated("deadline = \"30s\"", "deadline = \"30 seconds\"");
    let shown = rejects(&text, "\"30 seconds\"", "malformed duration \"30 seconds\"");
    assert!(
        shown.contains("step \"payment\": malformed duration"),
        "{shown}"
    );
    for bad in ["5x", "1.5m", "m", "0s"] {
        let text = mutated("deadline = \"2m\"", &format!("deadline = \"{bad}\""));
        rejects(&text, &format!("\"{bad}\""), bad);
    }
}

#[test]
fn unknown_key_and_bad_toml() {
    let text = mutated("deadline_from = \"step\"", "deadline_form = \"step\"");
    rejects(&text, "deadline_form", "unknown field `deadline_form`");
    let text = mutated("deadline_from = \"step\"", "deadline_from = \"later\"");
    rejects(
        &text,
        "\"later\"",
        "deadline_from must be \"step\" or \"saga\"",
    );
}

#[test]
fn an_event_may_play_one_role() {
    let text = mutated(
        "success = [\"io.choreo.orders.InventoryReserved\"]",
        "success = [\"io.choreo.orders.PaymentAuthorized\"]",
    );
    let err = Definition::from_toml(FILE, &text, &catalog()).expect_err("rejected");
    assert!(
        err.to_string()
            .contains("is already used as the success event of step \"payment\""),
        "{err}"
    );
}

#[test]
fn the_builder_reports_errors_without_a_file() {
    let err = SagaSpec::new("broken", 1, PLACED)
        .step(StepSpec::new("a").success(AUTHORIZED).after("b"))
        .step(StepSpec::new("b").success(RESERVED).after("a"))
        .build(&catalog())
        .expect_err("cycle");
    assert_eq!(
        err.to_string(),
        "saga \"broken\": step \"a\": dependency cycle a -> b -> a"
    );
    let err = SagaSpec::new("broken", 1, PLACED)
        .step(
            StepSpec::new("payment")
                .success(AUTHORIZED)
                .compensate(CompensationSpec::new(
                    EmitSpec::new(REFUND)
                        .map("order_id", "saga.correlation_id")
                        .map("payment_id", "payment.foo")
                        .map("amount", "payment.amount")
                        .map("reason", "saga.reason"),
                )),
        )
        .build(&catalog())
        .expect_err("bad mapping");
    assert_eq!(
        err.to_string(),
        "saga \"broken\": step \"payment\": compensation reads payment.foo, but no step collects it"
    );
}

#[test]
fn registry_pins_versions() {
    let v1 = order();
    let v2_text = Definition::reference_order_saga_toml().replacen("version = 1", "version = 2", 1);
    let v2 = Definition::from_toml("order.v2.toml", &v2_text, &catalog()).expect("v2");
    let mut defs = Definitions::new();
    defs.insert(v1.clone()).expect("v1");
    defs.insert(v2).expect("v2");
    assert!(matches!(
        defs.insert(v1.clone()),
        Err(SagaError::DuplicateVersion { version: 1, .. })
    ));
    let old = choreo_saga::SagaState::new(&v1, "o-1", choreo_saga::Millis(0));
    assert_eq!(defs.for_state(&old).map(|d| d.version()), Some(1));
    let new = defs
        .new_instance("order", "o-2", choreo_saga::Millis(0))
        .expect("known");
    assert_eq!(new.version, 2);
    assert_eq!(defs.interested_in(REFUNDED), vec!["order"]);
    assert!(
        defs.interested_in(REFUND).is_empty(),
        "emitted, not consumed"
    );
    // Applying an input with the wrong version's definition is rejected.
    let mut state = old;
    let v2 = defs.get("order", 2).expect("v2");
    let out = choreo_saga::apply(
        v2,
        &mut state,
        &choreo_saga::Input::Command(choreo_saga::Command::Resume),
        choreo_saga::Millis(1),
    );
    assert!(matches!(
        out.as_slice(),
        [choreo_saga::Action::Rejected { .. }]
    ));
}

#[test]
fn bad_on_unknown_outcome() {
    let text = mutated(
        "\non_unknown_outcome = \"compensate\"",
        "\non_unknown_outcome = \"maybe\"",
    );
    let line = line_of(&text, "\"maybe\"");
    let shown = rejects(
        &text,
        "\"maybe\"",
        "on_unknown_outcome must be \"compensate\" or \"operator\", not \"maybe\"",
    );
    assert_eq!(
        shown,
        format!(
            "{FILE}:{line}: step \"payment\": on_unknown_outcome must be \"compensate\" or \"operator\", not \"maybe\""
        )
    );
    // Not a string: the TOML reader's own error, still at its line.
    let text = mutated(
        "\non_unknown_outcome = \"compensate\"",
        "\non_unknown_outcome = true",
    );
    rejects(&text, "on_unknown_outcome = true", "invalid type");
    // Misspelt key.
    let text = mutated(
        "\non_unknown_outcome = \"compensate\"",
        "\non_unknown = \"compensate\"",
    );
    rejects(&text, "on_unknown =", "unknown field `on_unknown`");
}

#[test]
fn on_unknown_outcome_defaults_to_an_operator() {
    use choreo_saga::UnknownOutcome;
    let def = order();
    let of = |d: &Definition, i: usize| {
        d.steps()[i]
            .compensation
            .as_ref()
            .map(|c| c.on_unknown_outcome)
    };
    assert_eq!(of(&def, 0), Some(UnknownOutcome::Compensate), "payment");
    assert_eq!(of(&def, 1), Some(UnknownOutcome::Compensate), "inventory");
    assert_eq!(
        of(&def, 2),
        Some(UnknownOutcome::Operator),
        "shipping, by default"
    );
    let text = mutated("\non_unknown_outcome = \"compensate\"\n", "\n");
    let def = Definition::from_toml(FILE, &text, &catalog()).expect("loads");
    assert_eq!(of(&def, 0), Some(UnknownOutcome::Operator));
    let spec = CompensationSpec::new(EmitSpec::new(REFUND));
    assert_eq!(spec.on_unknown_outcome, UnknownOutcome::Operator);
}

#[test]
fn a_step_name_too_long() {
    let long = "s".repeat(choreo_saga::MAX_STEP_NAME_BYTES + 1);
    let text = mutated("name = \"inventory\"", &format!("name = \"{long}\""));
    rejects(&text, &long, "is longer than 128 bytes");
}

/// The package folder as the running test sees it (not as it was when compiled: a build shared
/// between two checkouts must use the one under test).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
