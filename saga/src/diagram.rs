//! A saga definition as a graph: pure data from a [`Definition`], for people to look at.
//!
//! - [`graph`]: the steps with their dependencies, every edge (start, success, completion,
//!   failure and deadline, the order compensations run in, needing an operator) and each
//!   step's layer (how many steps it waits for in a chain), as data — what the operator
//!   console draws, and `GET /api/definitions/{name}/{version}` answers.
//! - [`mermaid`]: the same as a Mermaid state diagram (`choreo saga diagram`; the console
//!   offers the text too).
//!
//! In the Mermaid diagram the start event forks into the steps that wait for nothing; a step that waits for others
//! starts at their join; each step's success edge names its event, its failure edge names the
//! failure events and the deadline; the terminal steps join into `Completed` (with the
//! completion event). Any failure leads to `Compensating`, drawn as the compensations in the
//! order they run (dependents first), which ends in `Compensated` (with the cancellation event)
//! or, when an acknowledgement never comes or an outcome stays unknown, in `NeedsOperator`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::definition::{DeadlineFrom, Definition, Step, UnknownOutcome};
use crate::time::format_duration;

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

/// A definition as data: what the operator console draws.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// The saga's name.
    pub name: String,
    /// The definition's version.
    pub version: u32,
    /// The event type that starts an instance.
    pub start_event: String,
    /// Within how long the whole saga must finish, in milliseconds, if at all.
    pub deadline_ms: Option<u64>,
    /// The event emitted when every step succeeded, if any.
    pub on_complete: Option<String>,
    /// The event emitted once an aborted saga is compensated, if any.
    pub on_abort: Option<String>,
    /// The steps, in definition order.
    pub steps: Vec<GraphStep>,
    /// Every edge of the diagram, between the node ids named on [`GraphEdge`].
    pub edges: Vec<GraphEdge>,
    /// The same diagram as Mermaid text ([`mermaid`]).
    pub mermaid: String,
}

/// One step of a [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphStep {
    /// The step's name.
    pub name: String,
    /// The steps it waits for (names).
    pub after: Vec<String>,
    /// 0 for a step that starts with the saga, else one more than the highest layer of the
    /// steps it waits for: drawn left to right, a step comes after everything it waits for.
    pub layer: usize,
    /// Its success events.
    pub success: Vec<String>,
    /// Its failure events.
    pub failure: Vec<String>,
    /// Its deadline, if any.
    pub deadline: Option<GraphDeadline>,
    /// The event it emits when it starts, if any.
    pub emits_on_start: Option<String>,
    /// Its compensation, if any.
    pub compensation: Option<GraphCompensation>,
}

/// A step's deadline in a [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDeadline {
    /// How long the step may take, in milliseconds.
    pub within_ms: u64,
    /// Counted from the step's start (`step`) or the saga's (`saga`).
    pub from: String,
}

/// A step's compensation in a [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphCompensation {
    /// The compensating event.
    pub event: String,
    /// The event that acknowledges it, if one is awaited.
    pub ack: Option<String>,
    /// How long each acknowledgement may take, in milliseconds.
    pub ack_deadline_ms: u64,
    /// Re-emissions before the saga needs an operator.
    pub max_retries: u32,
    /// `compensate` or `operator`: what happens when the step's outcome is unknown.
    pub on_unknown_outcome: String,
}

/// What an edge of a [`Graph`] means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// The start event starts a step that waits for nothing.
    Start,
    /// A step's success lets a step that waits for it start.
    Success,
    /// A step nothing waits for succeeded: the saga completes once all have.
    Complete,
    /// A step's failure event or missed deadline aborts the saga.
    Failure,
    /// The order compensations run in: the first undone before the second.
    Undo,
    /// Compensation finished: the saga is compensated.
    Compensated,
    /// A compensation never acknowledged, or an outcome unknown: an operator must act.
    NeedsOperator,
}

/// An edge of a [`Graph`]. Node ids: `start`, `step:<name>`, `completed`, `compensating`,
/// `undo:<name>` (a step's compensation), `compensated`, `needs_operator`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    /// Where it leaves.
    pub from: String,
    /// Where it arrives.
    pub to: String,
    /// What it means.
    pub kind: EdgeKind,
    /// The events (short names) or the condition written on it.
    pub label: String,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Each step's layer: 0 when it waits for nothing, else one more than the highest layer among
/// the steps it waits for (definitions are acyclic, checked at load).
fn layers(steps: &[Step]) -> Vec<usize> {
    let mut layer = vec![0usize; steps.len()];
    // At most one pass per step settles every chain.
    for _ in 0..steps.len() {
        let mut changed = false;
        for (i, s) in steps.iter().enumerate() {
            let l = s
                .after
                .iter()
                .filter_map(|&p| layer.get(p).map(|l| l + 1))
                .max()
                .unwrap_or(0);
            if l != layer[i] {
                layer[i] = l;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// The graph of `def`.
pub fn graph(def: &Definition) -> Graph {
    let steps = def.steps();
    let layer = layers(steps);
    let node = |s: &Step| format!("step:{}", s.name);
    let undo = |s: &Step| format!("undo:{}", s.name);
    let edge = |from: String, to: String, kind: EdgeKind, label: String| GraphEdge {
        from,
        to,
        kind,
        label,
    };
    let mut edges = Vec::new();
    let start = short(def.start_event()).to_owned();
    for s in steps.iter().filter(|s| s.after.is_empty()) {
        edges.push(edge(
            "start".into(),
            node(s),
            EdgeKind::Start,
            start.clone(),
        ));
    }
    if steps.is_empty() {
        edges.push(edge(
            "start".into(),
            "completed".into(),
            EdgeKind::Start,
            start,
        ));
    }
    for (i, s) in steps.iter().enumerate() {
        let ok = events(&s.success);
        for d in steps.iter().filter(|d| d.after.contains(&i)) {
            edges.push(edge(node(s), node(d), EdgeKind::Success, ok.clone()));
        }
        if s.dependents.is_empty() {
            edges.push(edge(node(s), "completed".into(), EdgeKind::Complete, ok));
        }
    }
    for s in steps {
        if let Some(why) = failure_label(s) {
            edges.push(edge(node(s), "compensating".into(), EdgeKind::Failure, why));
        }
    }
    // Compensations run dependents first: the undo of a step that waited for another comes
    // before that other's.
    for (i, s) in steps.iter().enumerate() {
        if s.compensation.is_none() {
            continue;
        }
        for d in steps
            .iter()
            .filter(|d| d.after.contains(&i) && d.compensation.is_some())
        {
            edges.push(edge(undo(d), undo(s), EdgeKind::Undo, String::new()));
        }
    }
    let cancelled = def
        .on_abort()
        .map_or(String::new(), |e| format!("emits {}", short(&e.event)));
    edges.push(edge(
        "compensating".into(),
        "compensated".into(),
        EdgeKind::Compensated,
        cancelled,
    ));
    let operator: Vec<String> = steps
        .iter()
        .filter_map(|s| {
            let c = s.compensation.as_ref()?;
            let mut why = Vec::new();
            if c.ack.is_some() {
                why.push(format!(
                    "{} unacknowledged after {} retries",
                    short(&c.emit.event),
                    c.max_retries
                ));
            }
            if c.on_unknown_outcome == UnknownOutcome::Operator {
                why.push(format!("{} outcome unknown", s.name));
            }
            (!why.is_empty()).then(|| why.join(", "))
        })
        .collect();
    if !operator.is_empty() {
        edges.push(edge(
            "compensating".into(),
            "needs_operator".into(),
            EdgeKind::NeedsOperator,
            operator.join(", "),
        ));
    }
    Graph {
        name: def.name().to_owned(),
        version: def.version(),
        start_event: def.start_event().to_owned(),
        deadline_ms: def.deadline().map(millis),
        on_complete: def.on_complete().map(|e| e.event.clone()),
        on_abort: def.on_abort().map(|e| e.event.clone()),
        steps: steps
            .iter()
            .zip(&layer)
            .map(|(s, &layer)| GraphStep {
                name: s.name.clone(),
                after: s
                    .after
                    .iter()
                    .filter_map(|&p| steps.get(p).map(|p| p.name.clone()))
                    .collect(),
                layer,
                success: s.success.clone(),
                failure: s.failure.clone(),
                deadline: s.deadline.map(|d| GraphDeadline {
                    within_ms: millis(d.within),
                    from: match d.from {
                        DeadlineFrom::StepStart => "step".into(),
                        DeadlineFrom::SagaStart => "saga".into(),
                    },
                }),
                emits_on_start: s.on_start.as_ref().map(|e| e.event.clone()),
                compensation: s.compensation.as_ref().map(|c| GraphCompensation {
                    event: c.emit.event.clone(),
                    ack: c.ack.clone(),
                    ack_deadline_ms: millis(c.ack_deadline),
                    max_retries: c.max_retries,
                    on_unknown_outcome: c.on_unknown_outcome.as_str().to_owned(),
                }),
            })
            .collect(),
        edges,
        mermaid: mermaid(def),
    }
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

    #[test]
    fn the_graph_layers_steps_after_what_they_wait_for_and_names_every_edge() {
        let g = graph(&Definition::reference_order_saga(&Catalog::reference()).expect("order"));
        assert_eq!((g.name.as_str(), g.version), ("order", 1));
        let layer = |n: &str| g.steps.iter().find(|s| s.name == n).map(|s| s.layer);
        assert_eq!(layer("payment"), Some(0));
        assert_eq!(layer("inventory"), Some(0));
        assert_eq!(layer("shipping"), Some(1));
        let shipping = g
            .steps
            .iter()
            .find(|s| s.name == "shipping")
            .expect("shipping");
        assert_eq!(shipping.after, ["payment", "inventory"]);
        assert_eq!(
            shipping.emits_on_start.as_deref(),
            Some("io.choreo.orders.ShipmentRequested")
        );
        let payment = g
            .steps
            .iter()
            .find(|s| s.name == "payment")
            .expect("payment");
        let c = payment.compensation.as_ref().expect("compensated");
        assert_eq!(c.event, "io.choreo.orders.RefundPayment");
        assert_eq!(c.on_unknown_outcome, "compensate");
        assert_eq!(
            payment.deadline,
            Some(GraphDeadline {
                within_ms: 30_000,
                from: "step".into()
            })
        );
        let has = |from: &str, to: &str, kind: EdgeKind| {
            g.edges
                .iter()
                .any(|e| e.from == from && e.to == to && e.kind == kind)
        };
        assert!(has("start", "step:payment", EdgeKind::Start));
        assert!(has("start", "step:inventory", EdgeKind::Start));
        assert!(!has("start", "step:shipping", EdgeKind::Start));
        assert!(has("step:payment", "step:shipping", EdgeKind::Success));
        assert!(has("step:shipping", "completed", EdgeKind::Complete));
        assert!(!has("step:payment", "completed", EdgeKind::Complete));
        assert!(has("step:payment", "compensating", EdgeKind::Failure));
        assert!(has("undo:shipping", "undo:payment", EdgeKind::Undo));
        assert!(has("undo:shipping", "undo:inventory", EdgeKind::Undo));
        assert!(has("compensating", "compensated", EdgeKind::Compensated));
        assert!(has(
            "compensating",
            "needs_operator",
            EdgeKind::NeedsOperator
        ));
        let failure = g
            .edges
            .iter()
            .find(|e| e.from == "step:payment" && e.kind == EdgeKind::Failure)
            .expect("failure edge");
        assert_eq!(failure.label, "PaymentDeclined or no answer within 30s");
        assert_eq!(
            g.mermaid,
            mermaid(&Definition::reference_order_saga(&Catalog::reference()).expect("order"))
        );
    }
}
