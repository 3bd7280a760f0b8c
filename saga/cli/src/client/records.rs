//! `choreo sagas events` (one saga's timeline merged with its records read back from Kafka,
//! payloads included) and `choreo sagas definitions` (the definitions the coordinator runs,
//! and one's graph or Mermaid diagram): what the console's saga view shows, as text.

use std::fmt::Write as _;

use choreo_coordinator::history::{SagaRecord, SagaRecords};
use choreo_coordinator::http::DefinitionsResponse;
use choreo_saga::diagram::{EdgeKind, Graph};
use choreo_saga::{SagaState, format_duration};

use super::render::{snake, table};
use super::{format_time, get_json, pretty, with_segments};

/// A value from an event, for a terminal: control characters (escape sequences among them)
/// shown as `\u{…}` rather than written to the terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn short(event_type: &str) -> &str {
    event_type.rsplit('.').next().unwrap_or(event_type)
}

/// `choreo sagas events`: the saga's records (and, as text, its timeline).
pub async fn events(
    api: &str,
    definition: &str,
    correlation_id: &str,
    margin: Option<&str>,
    max_records: Option<usize>,
    json: bool,
) -> anyhow::Result<String> {
    let mut url = with_segments(api, &["api", "sagas", definition, correlation_id, "events"])?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(m) = margin {
            q.append_pair("margin", m);
        }
        if let Some(n) = max_records {
            q.append_pair("max_records", &n.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    if json {
        return pretty(&get_json::<serde_json::Value>(&url).await?);
    }
    let records: SagaRecords = get_json(&url).await?;
    let state: SagaState = get_json(&with_segments(
        api,
        &["api", "sagas", definition, correlation_id],
    )?)
    .await?;
    let graph: Option<Graph> = get_json(&with_segments(
        api,
        &[
            "api",
            "definitions",
            &state.definition,
            &state.version.to_string(),
        ],
    )?)
    .await
    .ok();
    Ok(render_events(&state, &records, graph.as_ref()))
}

/// The text of `choreo sagas events`: the timeline's entries and the records, oldest first.
pub fn render_events(state: &SagaState, records: &SagaRecords, graph: Option<&Graph>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "saga {} ({}): {} records of it among {} read from {} partitions, {} to {}",
        state.saga_id,
        state.status,
        records.events.len(),
        records.scanned,
        records.partitions.len(),
        format_time(records.from_ms),
        format_time(records.to_ms)
    );
    if let Some(why) = &records.stopped_early {
        let _ = writeln!(out, "STOPPED EARLY: {why}");
    }
    if state.timeline.dropped > 0 {
        let _ = writeln!(
            out,
            "({} older timeline entries dropped; the records still show)",
            state.timeline.dropped
        );
    }
    out.push('\n');
    let emitted: Vec<&str> = graph
        .map(|g| {
            g.steps
                .iter()
                .flat_map(|s| {
                    s.emits_on_start
                        .iter()
                        .chain(s.compensation.as_ref().map(|c| &c.event))
                })
                .chain(g.on_complete.iter())
                .chain(g.on_abort.iter())
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    enum Item<'a> {
        Entry(&'a choreo_saga::TimelineEntry),
        Record(&'a SagaRecord),
    }
    let mut items: Vec<(i64, u8, Item<'_>)> = state
        .timeline
        .entries
        .iter()
        .map(|e| (i64::try_from(e.at.0).unwrap_or(i64::MAX), 0, Item::Entry(e)))
        .chain(
            records
                .events
                .iter()
                .map(|r| (r.timestamp_ms.unwrap_or(0), 1, Item::Record(r))),
        )
        .collect();
    items.sort_by_key(|(at, order, _)| (*at, *order));
    for (at, _, item) in items {
        let when = format_time(u64::try_from(at).unwrap_or(0));
        match item {
            Item::Entry(e) => {
                let _ = writeln!(out, "{when}  {:<9} {}", snake(&e.kind), e.what);
            }
            Item::Record(r) => {
                let kind = if r.kind == "command" {
                    "command"
                } else if emitted.contains(&r.event_type.as_str()) {
                    "emitted"
                } else {
                    "received"
                };
                let mut line = format!(
                    "{when}  {kind:<9} {}  {}/{}@{}",
                    clean(if r.kind == "command" {
                        &r.event_type
                    } else {
                        short(&r.event_type)
                    }),
                    r.topic,
                    r.partition,
                    r.offset
                );
                if !r.id.is_empty() {
                    let _ = write!(line, "  id {}", clean(&r.id));
                }
                if !r.source.is_empty() {
                    let by = if r.kind == "command" { "by" } else { "source" };
                    let _ = write!(line, "  {by} {}", clean(&r.source));
                }
                if let Some(c) = &r.causation_id {
                    let _ = write!(line, "  caused by {}", clean(c));
                }
                let _ = writeln!(out, "{line}");
                match (&r.payload, &r.payload_error) {
                    // JSON escapes control characters: safe for a terminal as it is.
                    (Some(p), _) => {
                        let _ = writeln!(out, "{:27}{p}", "");
                    }
                    (None, Some(e)) => {
                        let _ = writeln!(out, "{:27}payload not decoded: {}", "", clean(e));
                    }
                    (None, None) => {}
                }
            }
        }
    }
    out
}

/// `choreo sagas definitions [NAME [VERSION]] [--mermaid]`.
pub async fn definitions(
    api: &str,
    name: Option<&str>,
    version: Option<u32>,
    mermaid: bool,
    json: bool,
) -> anyhow::Result<String> {
    let list: DefinitionsResponse = get_json(&with_segments(api, &["api", "definitions"])?).await?;
    let Some(name) = name else {
        return if json {
            pretty(&list)
        } else {
            Ok(render_definitions(&list))
        };
    };
    let version = match version {
        Some(v) => v,
        None => list
            .definitions
            .iter()
            .filter(|d| d.name == name)
            .map(|d| d.version)
            .max()
            .ok_or_else(|| {
                let names: Vec<&str> = list.definitions.iter().map(|d| d.name.as_str()).collect();
                anyhow::anyhow!(
                    "the coordinator runs no definition named {name} (it runs: {})",
                    names.join(", ")
                )
            })?,
    };
    let url = with_segments(api, &["api", "definitions", name, &version.to_string()])?;
    if json {
        return pretty(&get_json::<serde_json::Value>(&url).await?);
    }
    let graph: Graph = get_json(&url).await?;
    if mermaid {
        return Ok(graph.mermaid);
    }
    Ok(render_definition(&graph))
}

/// The text of `choreo sagas definitions`.
pub fn render_definitions(list: &DefinitionsResponse) -> String {
    let rows: Vec<Vec<String>> = list
        .definitions
        .iter()
        .map(|d| {
            let counts = list
                .counts
                .get(&d.name)
                .map(|c| {
                    c.iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(s, n)| format!("{s} {n}"))
                        .collect::<Vec<_>>()
                        .join(" · ")
                })
                .unwrap_or_default();
            vec![
                d.name.clone(),
                format!("v{}{}", d.version, if d.latest { " (newest)" } else { "" }),
                short(&d.start_event).to_owned(),
                d.steps.join(", "),
                counts,
            ]
        })
        .collect();
    if rows.is_empty() {
        return "the coordinator runs no definition\n".into();
    }
    table(
        &[
            "NAME",
            "VERSION",
            "STARTED BY",
            "STEPS",
            "SAGAS (ALL VERSIONS)",
        ],
        &rows,
    )
}

/// The text of `choreo sagas definitions NAME [VERSION]`.
pub fn render_definition(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "saga {} v{}", g.name, g.version);
    let _ = writeln!(out, "started by  {}", g.start_event);
    if let Some(d) = g.deadline_ms {
        let _ = writeln!(
            out,
            "deadline    {}",
            format_duration(std::time::Duration::from_millis(d))
        );
    }
    if let Some(e) = &g.on_complete {
        let _ = writeln!(out, "completed   emits {e}");
    }
    if let Some(e) = &g.on_abort {
        let _ = writeln!(out, "compensated emits {e}");
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = g
        .steps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.after.is_empty() {
                    "-".into()
                } else {
                    s.after.join(", ")
                },
                s.success
                    .iter()
                    .map(|e| short(e))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.failure
                    .iter()
                    .map(|e| short(e))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.deadline.as_ref().map_or("-".into(), |d| {
                    format!(
                        "{} from the {}",
                        format_duration(std::time::Duration::from_millis(d.within_ms)),
                        d.from
                    )
                }),
                s.compensation.as_ref().map_or("-".into(), |c| {
                    format!(
                        "{}{} (unknown outcome: {})",
                        short(&c.event),
                        c.ack
                            .as_ref()
                            .map_or(String::new(), |a| format!(" until {}", short(a))),
                        c.on_unknown_outcome
                    )
                }),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "STEP",
            "AFTER",
            "SUCCESS",
            "FAILURE",
            "DEADLINE",
            "COMPENSATION",
        ],
        &rows,
    ));
    out.push_str("\nEDGES\n");
    for e in &g.edges {
        let kind = match e.kind {
            EdgeKind::Start => "start",
            EdgeKind::Success => "success",
            EdgeKind::Complete => "complete",
            EdgeKind::Failure => "failure",
            EdgeKind::Undo => "undo order",
            EdgeKind::Compensated => "compensated",
            EdgeKind::NeedsOperator => "operator",
        };
        let label = if e.label.is_empty() {
            String::new()
        } else {
            format!("  ({})", e.label)
        };
        let _ = writeln!(out, "  {kind:<11} {} -> {}{label}", e.from, e.to);
    }
    out.push_str("\nMERMAID (choreo sagas definitions NAME --mermaid prints only this)\n");
    out.push_str(&g.mermaid);
    out
}
