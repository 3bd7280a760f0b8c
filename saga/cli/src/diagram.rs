//! `choreo saga diagram`: a saga definition as a Mermaid state diagram.
//!
//! The start event forks into the steps that wait for nothing; a step that waits for others
//! starts at their join; each step's success edge names its event, its failure edge names the
//! failure events and the deadline; the terminal steps join into `Completed` (with the
//! completion event). Any failure leads to `Compensating`, drawn as the compensations in the
//! order they run (dependents first), which ends in `Compensated` (with the cancellation event)
//! or, when an acknowledgement never comes or an outcome stays unknown, in `NeedsOperator`.

use std::fmt::Write as _;

use choreo_saga::{Definition, Step, UnknownOutcome, format_duration};

fn short(event: &str) -> &str {
    event.rsplit('.').next().unwrap_or(event)
}

/// A Mermaid state id: letters, digits and `_` only.
fn id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}{clean}")
}

/// Text inside a Mermaid label: no characters that end or nest it.
fn label(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' | ';' | '{' | '}' | '"' | '<' | '>' | '#' => ' ',
            c => c,
        })
        .collect()
}

fn events(list: &[String]) -> String {
    list.iter()
        .map(|e| short(e))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn failure_label(s: &Step) -> Option<String> {
    let mut why = Vec::new();
    if !s.failure.is_empty() {
        why.push(events(&s.failure));
    }
    if let Some(d) = &s.deadline {
        why.push(format!("no answer within {}", format_duration(d.within)));
    }
    (!why.is_empty()).then(|| why.join(" or "))
}

/// The Mermaid `stateDiagram-v2` of `def`.
pub fn mermaid(def: &Definition) -> String {
    let steps = def.steps();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "---\ntitle: saga {} v{}\n---", def.name(), def.version());
    let _ = writeln!(w, "stateDiagram-v2");
    let _ = writeln!(w, "    direction LR");
    for s in steps {
        let mut text = s.name.clone();
        if let Some(e) = &s.on_start {
            text.push_str(&format!(" (emits {})", short(&e.event)));
        }
        let _ = writeln!(w, "    {} : {}", id("step_", &s.name), label(&text));
    }
    // Start: the steps that wait for nothing.
    let first: Vec<&Step> = steps.iter().filter(|s| s.after.is_empty()).collect();
    let start = label(short(def.start_event()));
    if first.len() > 1 {
        let _ = writeln!(w, "    state fork_start <<fork>>");
        let _ = writeln!(w, "    [*] --> fork_start : {start}");
        for s in &first {
            let _ = writeln!(w, "    fork_start --> {}", id("step_", &s.name));
        }
    } else if let Some(s) = first.first() {
        let _ = writeln!(w, "    [*] --> {} : {start}", id("step_", &s.name));
    } else {
        let _ = writeln!(w, "    [*] --> Completed : {start}");
    }
    // Success edges: into the dependents (through a join when they wait for several), or into
    // the completion (through a join when several steps end the saga).
    let joins_at_end = steps.iter().filter(|t| t.dependents.is_empty()).count() > 1;
    for (i, s) in steps.iter().enumerate() {
        let ok = label(&events(&s.success));
        for d in steps.iter().filter(|d| d.after.contains(&i)) {
            let target = if d.after.len() > 1 {
                id("join_", &d.name)
            } else {
                id("step_", &d.name)
            };
            let _ = writeln!(w, "    {} --> {target} : {ok}", id("step_", &s.name));
        }
        if s.dependents.is_empty() {
            let target = if joins_at_end {
                "join_complete"
            } else {
                "Completed"
            };
            let _ = writeln!(w, "    {} --> {target} : {ok}", id("step_", &s.name));
        }
    }
    for d in steps.iter().filter(|d| d.after.len() > 1) {
        let _ = writeln!(w, "    state {} <<join>>", id("join_", &d.name));
        let _ = writeln!(
            w,
            "    {} --> {}",
            id("join_", &d.name),
            id("step_", &d.name)
        );
    }
    if joins_at_end {
        let _ = writeln!(w, "    state join_complete <<join>>");
        let _ = writeln!(w, "    join_complete --> Completed");
    }
    let done = def
        .on_complete()
        .map_or(String::new(), |e| format!(" : emits {}", short(&e.event)));
    let _ = writeln!(w, "    Completed --> [*]{done}");

    // Failures: every step can abort the saga.
    for s in steps {
        if let Some(why) = failure_label(s) {
            let _ = writeln!(
                w,
                "    {} --> Compensating : {}",
                id("step_", &s.name),
                label(&why)
            );
        }
    }
    if let Some(d) = def.deadline() {
        let _ = writeln!(
            w,
            "    note right of Compensating : the whole saga must finish within {}",
            format_duration(d)
        );
    }
    // Compensations, dependents first.
    let compensated: Vec<&Step> = steps.iter().filter(|s| s.compensation.is_some()).collect();
    let _ = writeln!(w, "    state Compensating {{");
    let _ = writeln!(w, "        direction LR");
    for s in &compensated {
        if let Some(c) = &s.compensation {
            let ack = c
                .ack
                .as_ref()
                .map_or(String::new(), |a| format!(", until {}", short(a)));
            let _ = writeln!(
                w,
                "        {} : undo {} (emits {}{ack})",
                id("undo_", &s.name),
                label(&s.name),
                short(&c.emit.event)
            );
        }
    }
    let mut has_inner = false;
    for (i, s) in steps.iter().enumerate() {
        if s.compensation.is_none() {
            continue;
        }
        has_inner = true;
        // Undone after the compensated steps that waited for it, before the ones it waited for.
        let undone_before: Vec<&Step> = steps
            .iter()
            .filter(|d| d.after.contains(&i) && d.compensation.is_some())
            .collect();
        if undone_before.is_empty() {
            let _ = writeln!(w, "        [*] --> {}", id("undo_", &s.name));
        }
        for d in undone_before {
            let _ = writeln!(
                w,
                "        {} --> {}",
                id("undo_", &d.name),
                id("undo_", &s.name)
            );
        }
        let waits_for_compensated = s
            .after
            .iter()
            .any(|&p| steps.get(p).is_some_and(|p| p.compensation.is_some()));
        if !waits_for_compensated {
            let _ = writeln!(w, "        {} --> [*]", id("undo_", &s.name));
        }
    }
    if !has_inner {
        let _ = writeln!(w, "        [*] --> [*]");
    }
    let _ = writeln!(w, "    }}");
    let cancelled = def
        .on_abort()
        .map_or(String::new(), |e| format!(" : emits {}", short(&e.event)));
    let _ = writeln!(w, "    Compensating --> Compensated{cancelled}");
    let _ = writeln!(w, "    Compensated --> [*]");
    let mut stuck = Vec::new();
    for s in &compensated {
        if let Some(c) = &s.compensation {
            if c.ack.is_some() {
                stuck.push(format!(
                    "{} unacknowledged after {} retries",
                    short(&c.emit.event),
                    c.max_retries
                ));
            }
            if c.on_unknown_outcome == UnknownOutcome::Operator {
                stuck.push(format!("{} outcome unknown", s.name));
            }
        }
    }
    if !stuck.is_empty() {
        let _ = writeln!(
            w,
            "    Compensating --> NeedsOperator : {}",
            label(&stuck.join(", "))
        );
        let _ = writeln!(
            w,
            "    NeedsOperator --> Compensating : operator retry, skip or resume"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_schemas::Catalog;

    fn order() -> String {
        mermaid(&Definition::reference_order_saga(&Catalog::reference()).expect("order saga"))
    }

    #[test]
    fn the_order_saga_forks_joins_and_compensates_dependents_first() {
        let d = order();
        assert!(d.contains("stateDiagram-v2"), "{d}");
        assert!(d.contains("[*] --> fork_start : OrderPlaced"), "{d}");
        assert!(d.contains("fork_start --> step_payment"), "{d}");
        assert!(d.contains("fork_start --> step_inventory"), "{d}");
        assert!(
            d.contains("step_payment --> join_shipping : PaymentAuthorized"),
            "{d}"
        );
        assert!(
            d.contains("step_inventory --> join_shipping : InventoryReserved"),
            "{d}"
        );
        assert!(d.contains("state join_shipping <<join>>"), "{d}");
        assert!(
            d.contains("step_shipping : shipping (emits ShipmentRequested)"),
            "{d}"
        );
        assert!(
            d.contains("step_shipping --> Completed : ShipmentScheduled"),
            "{d}"
        );
        assert!(
            d.contains("Completed --> [*] : emits OrderConfirmed"),
            "{d}"
        );
        assert!(
            d.contains("step_payment --> Compensating : PaymentDeclined or no answer within 30s"),
            "{d}"
        );
        assert!(d.contains("undo_shipping --> undo_payment"), "{d}");
        assert!(d.contains("undo_shipping --> undo_inventory"), "{d}");
        assert!(d.contains("[*] --> undo_shipping"), "{d}");
        assert!(
            d.contains("Compensating --> Compensated : emits OrderCancelled"),
            "{d}"
        );
        assert!(d.contains("shipping outcome unknown"), "{d}");
        assert!(
            !d.contains("payment outcome unknown"),
            "payment compensates when unknown: {d}"
        );
    }

    #[test]
    fn every_state_line_is_mermaid_syntax() {
        for line in order().lines().skip(4) {
            let line = line.trim();
            let ok = line.is_empty()
                || line.starts_with("direction ")
                || line.starts_with("state ")
                || line.starts_with("note ")
                || line == "}"
                || line.contains(" --> ")
                || line.split_once(" : ").is_some_and(|(id, _)| {
                    id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            assert!(ok, "not a Mermaid state line: {line}");
        }
    }
}
