//! How `choreo sagas` prints what the API answers: tables, times, ages, one saga.

use std::fmt::Write as _;
use std::time::Duration;

use choreo_coordinator::http::{ALL_STATUSES, ListResponse};
use choreo_saga::{CompensationState, SagaState, format_duration};
use serde::Serialize;

/// A serde enum's name as the API writes it (`needs_operator`, `compensation_ack`).
pub(crate) fn snake<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// `ms` since the epoch as `2026-11-21 10:00:00.123Z` (UTC).
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// A span of `ms` milliseconds, coarse: `42s`, `5m12s`, `3h4m`, `2d3h`.
pub fn format_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

/// Lays out rows as columns separated by two spaces (the last column unpadded).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The text of `choreo sagas list`.
pub fn render_list(answer: &ListResponse, now_ms: u64) -> String {
    let mut out = String::new();
    // In the order a saga goes through them, then any status this client does not know.
    let known: Vec<String> = ALL_STATUSES.iter().map(ToString::to_string).collect();
    let counts: Vec<String> = known
        .iter()
        .filter_map(|s| answer.counts.get(s).map(|n| format!("{s} {n}")))
        .chain(
            answer
                .counts
                .iter()
                .filter(|(s, _)| !known.contains(s))
                .map(|(s, n)| format!("{s} {n}")),
        )
        .collect();
    let total: usize = answer.counts.values().sum();
    let _ = writeln!(out, "{} (total {total})", counts.join(" · "));
    out.push('\n');
    if answer.sagas.is_empty() {
        out.push_str("no saga matches\n");
        return out;
    }
    let rows: Vec<Vec<String>> = answer
        .sagas
        .iter()
        .map(|s| {
            vec![
                s.saga_id.clone(),
                s.status.to_string(),
                format!("v{}", s.version),
                format_age(now_ms.saturating_sub(s.created_at)),
                format!("{} ago", format_age(now_ms.saturating_sub(s.updated_at))),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SAGA", "STATUS", "VERSION", "AGE", "UPDATED"],
        &rows,
    ));
    if let Some(next) = &answer.next {
        let _ = writeln!(
            out,
            "more: {} of {} shown; the next page: --before '{}' (or --all)",
            answer.sagas.len(),
            answer.total,
            next.replace('\'', "'\\''")
        );
    }
    out
}

fn compensation_text(c: &CompensationState) -> String {
    match c {
        CompensationState::NotStarted => "-".into(),
        CompensationState::Emitted { attempts, .. } => {
            format!("emitted, awaiting ack (attempt {attempts})")
        }
        CompensationState::Done { .. } => "done".into(),
        CompensationState::Acknowledged { at, .. } => format!("acknowledged {}", format_time(at.0)),
        CompensationState::Stuck {
            attempts, reason, ..
        } => format!("STUCK after {attempts} attempts: {reason}"),
        CompensationState::Skipped => "skipped by an operator".into(),
    }
}

/// The text of `choreo sagas get`.
pub fn render_saga(s: &SagaState, now_ms: u64) -> String {
    let mut out = String::new();
    let at = |ms: u64| {
        format!(
            "{} ({} ago)",
            format_time(ms),
            format_age(now_ms.saturating_sub(ms))
        )
    };
    let _ = writeln!(out, "saga        {}", s.saga_id);
    let _ = writeln!(out, "status      {}", s.status);
    let _ = writeln!(out, "definition  {} v{}", s.definition, s.version);
    let _ = writeln!(out, "created     {}", at(s.created_at.0));
    if let Some(started) = s.started_at {
        let _ = writeln!(out, "started     {}", at(started.0));
    }
    let _ = writeln!(out, "updated     {}", at(s.updated_at.0));
    if let Some(reason) = &s.abort_reason {
        let _ = writeln!(out, "aborted     {reason}");
    }
    let awaiting = s.awaiting_steps();
    if !awaiting.is_empty() {
        let _ = writeln!(out, "waiting on  {}", awaiting.join(", "));
    }
    if !s.pending.is_empty() {
        let _ = writeln!(
            out,
            "buffered    {} event(s) waiting for the start event",
            s.pending.len()
        );
    }
    for (step, reason) in s.needs_operator() {
        let _ = writeln!(
            out,
            "NEEDS AN OPERATOR: step {step}: {reason} (choreo sagas retry|skip|resume {} {})",
            s.definition, s.correlation_id
        );
    }

    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .steps
        .iter()
        .map(|st| {
            vec![
                if st.late {
                    format!("{} (late)", st.name)
                } else {
                    st.name.clone()
                },
                snake(&st.status),
                st.started_at
                    .map(|t| format_time(t.0))
                    .unwrap_or_else(|| "-".into()),
                st.finished_at
                    .map(|t| format_time(t.0))
                    .unwrap_or_else(|| "-".into()),
                compensation_text(&st.compensation),
            ]
        })
        .collect();
    out.push_str(&table(
        &["STEP", "STATUS", "STARTED", "FINISHED", "COMPENSATION"],
        &rows,
    ));

    out.push_str("\nDEADLINES\n");
    if s.deadlines.is_empty() {
        out.push_str("  none pending\n");
    }
    let mut deadlines: Vec<_> = s.deadlines.iter().collect();
    deadlines.sort_by_key(|d| d.at);
    for d in deadlines {
        let when = if d.at.0 >= now_ms {
            format!(
                "in {}",
                format_duration(
                    Duration::from_millis(d.at.0 - now_ms).max(Duration::from_millis(1))
                )
            )
        } else {
            format!("overdue by {}", format_age(now_ms - d.at.0))
        };
        let _ = writeln!(out, "  {}  {}  {when}", format_time(d.at.0), d.kind);
    }

    out.push_str("\nTIMELINE (oldest first)\n");
    if s.timeline.dropped > 0 {
        let _ = writeln!(out, "  … {} older entries dropped", s.timeline.dropped);
    }
    if s.timeline.entries.is_empty() {
        out.push_str("  empty\n");
    }
    for e in &s.timeline.entries {
        let _ = writeln!(
            out,
            "  {}  {:<9} {}",
            format_time(e.at.0),
            snake(&e.kind),
            e.what
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(format_time(951_782_400_123), "2000-02-29 00:00:00.123Z");
        assert_eq!(format_time(1_795_262_461_005), "2026-11-21 12:01:01.005Z");
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(format_age(250), "250ms");
        assert_eq!(format_age(42_000), "42s");
        assert_eq!(format_age(312_000), "5m12s");
        assert_eq!(format_age(3 * 3_600_000 + 4 * 60_000), "3h4m");
        assert_eq!(format_age(2 * 86_400_000 + 3 * 3_600_000), "2d3h");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
