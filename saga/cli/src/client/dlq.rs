//! `choreo dlq …`: dead letters through a coordinator's operator API
//! (`choreo_coordinator::dlq`).
//!
//! ```text
//! choreo dlq list
//! choreo dlq show TOPIC [--reason TEXT] [--kind KIND] [--limit N] [--before CURSOR]
//! choreo dlq show ID                                     (orders.dlq/0/5)
//! choreo dlq redrive TOPIC (--id ID… | --reason TEXT | --kind KIND | --all) [--note TEXT] [--yes]
//! ```
//!
//! Without `--yes`, `redrive` prints what it would republish and how many; with it, it runs
//! the dry run, then the redrive of exactly that many (the API answers 409 if the set changed
//! meanwhile), and goes on while the filter matches more than one redrive takes. Every text
//! that came from a record is printed escaped (control characters as `\u{1b}`, `\n`), so a
//! record cannot move the cursor or colour the terminal. `--json` prints the API's answers.
//!
//! Exit codes: 0 done; 1 a redrive left records out or matched none; 2 an error (bad
//! arguments, the API unreachable or refusing).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::http::{
    self, client, get_json, pretty, read_json, unreachable_api, with_query, with_segments,
};
use super::render::{format_age, format_time};
use choreo_coordinator::api_auth::OPERATOR_HEADER;

/// Done.
pub const EXIT_OK: u8 = 0;
/// A redrive left records out, or matched none.
pub const EXIT_PARTIAL: u8 = 1;
/// Bad arguments, or the API unreachable or refusing.
pub const EXIT_ERROR: u8 = 2;

/// `choreo dlq …`: dead letters — list them, show them, redrive them.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DlqArgs {
    /// The operator API of any coordinator replica.
    #[arg(long, global = true, env = "CHOREO_API", default_value = http::DEFAULT_API)]
    pub api: String,
    /// Print the API's JSON answers instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who is acting, on an API without tokens [default: $USER] (with tokens, the token's name
    /// is recorded).
    #[arg(long, global = true, env = "CHOREO_OPERATOR")]
    pub operator: Option<String>,
    /// The API's bearer token (a viewer's to read, an operator's to redrive). Prefer the
    /// environment variable.
    #[arg(long, global = true, env = "CHOREO_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// The `choreo dlq` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DlqCommand {
    /// Every dead-letter topic (`*.dlq`) with where its records came from and how many.
    List,
    /// A dead-letter topic's records, newest first (with a topic), or one record with its
    /// headers and payload (with an id such as orders.dlq/0/5).
    Show {
        /// A dead-letter topic (`orders.dlq`) or a record's id (`orders.dlq/0/5`).
        target: String,
        /// Only records whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Only records of this kind (unknown_schema_id, handler_permanent, …).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many records [API default: 50].
        #[arg(long)]
        limit: Option<usize>,
        /// Older than this cursor (the `more:` line of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Republish records of a dead-letter topic to its origin topic. Without --yes it only
    /// says what it would redrive.
    Redrive {
        /// The dead-letter topic, e.g. orders.dlq.
        topic: String,
        /// These records (ids such as orders.dlq/0/5, or 0/5 for a record of TOPIC); may repeat.
        #[arg(long = "id", conflicts_with_all = ["reason", "kind", "all"])]
        ids: Vec<String>,
        /// Every record never redriven whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Every record never redriven of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Every record of the topic never redriven.
        #[arg(long, conflicts_with_all = ["reason", "kind"])]
        all: bool,
        /// Why (kept with the redrive).
        #[arg(long)]
        note: Option<String>,
        /// Redrive them (exactly the records the dry run just counted).
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a `choreo dlq …` command, prints its answer, and returns the exit code.
pub async fn run(args: DlqArgs) -> u8 {
    http::use_token(args.token.as_deref());
    match run_inner(&args).await {
        Ok((text, code)) => {
            println!("{}", text.trim_end());
            code
        }
        Err(e) => {
            eprintln!("choreo dlq: {e:#}");
            EXIT_ERROR
        }
    }
}

async fn run_inner(args: &DlqArgs) -> anyhow::Result<(String, u8)> {
    let api = args.api.as_str();
    match &args.command {
        DlqCommand::List => {
            let answer: Value = get_json(&with_segments(api, &["api", "dlq"])?).await?;
            let text = if args.json {
                pretty(&answer)?
            } else {
                render_topics(&answer)
            };
            Ok((text, EXIT_OK))
        }
        DlqCommand::Show {
            target,
            reason,
            kind,
            limit,
            before,
        } => {
            if target.contains('/') {
                let segments: Vec<&str> = target.rsplitn(3, '/').collect();
                let [offset, partition, topic] = segments.as_slice() else {
                    anyhow::bail!(
                        "\"{target}\" is neither a dead-letter topic nor a record id (orders.dlq/0/5)"
                    );
                };
                let url = with_segments(api, &["api", "dlq", topic, partition, offset])?;
                let record: Value = get_json(&url).await?;
                let text = if args.json {
                    pretty(&record)?
                } else {
                    render_record(&record, now_ms())
                };
                return Ok((text, EXIT_OK));
            }
            let pairs: Vec<(&str, String)> = [
                ("reason", reason.clone()),
                ("kind", kind.clone()),
                ("limit", limit.map(|l| l.to_string())),
                ("before", before.clone()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let url = with_query(with_segments(api, &["api", "dlq", target])?, &pairs);
            let page: Value = get_json(&url).await?;
            let text = if args.json {
                pretty(&page)?
            } else {
                render_page(target, &page, &pairs, now_ms())
            };
            Ok((text, EXIT_OK))
        }
        DlqCommand::Redrive {
            topic,
            ids,
            reason,
            kind,
            all,
            note,
            yes,
        } => {
            let selection = if !ids.is_empty() {
                let full: Vec<String> = ids
                    .iter()
                    .map(|i| {
                        if i.matches('/').count() == 1 {
                            format!("{topic}/{i}")
                        } else {
                            i.clone()
                        }
                    })
                    .collect();
                json!({ "ids": full })
            } else if reason.is_some() || kind.is_some() || *all {
                json!({ "filter": { "reason": reason, "kind": kind } })
            } else {
                anyhow::bail!(
                    "say which records: --id ID (repeatable), --reason TEXT, --kind KIND or --all"
                );
            };
            let operator = args
                .operator
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .filter(|o| !o.trim().is_empty());
            redrive(
                api,
                topic,
                selection,
                note.as_deref(),
                *yes,
                operator.as_deref(),
                args.json,
            )
            .await
        }
    }
}

/// Sends one redrive body (a dry run or a run).
async fn post(
    api: &str,
    topic: &str,
    body: &Value,
    operator: Option<&str>,
) -> anyhow::Result<Value> {
    let url = with_segments(api, &["api", "dlq", topic, "redrive"])?;
    let mut req = client()?.post(url.clone()).json(body);
    if let Some(op) = operator {
        req = req.header(OPERATOR_HEADER, op);
    }
    let resp = req.send().await.with_context_api(api)?;
    read_json(resp, &url).await
}

trait WithContextApi<T> {
    fn with_context_api(self, api: &str) -> anyhow::Result<T>;
}

impl<T> WithContextApi<T> for Result<T, reqwest::Error> {
    fn with_context_api(self, api: &str) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::Error::new(e).context(unreachable_api(api)))
    }
}

/// A dry run; with `yes`, the redrive of what it matched, again while more match.
async fn redrive(
    api: &str,
    topic: &str,
    selection: Value,
    note: Option<&str>,
    yes: bool,
    operator: Option<&str>,
    json_out: bool,
) -> anyhow::Result<(String, u8)> {
    let with = |extra: Value| {
        let mut body = selection.clone();
        if let (Some(o), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
            if let Some(n) = note {
                o.insert("note".into(), json!(n));
            }
        }
        body
    };
    let preview = post(api, topic, &with(json!({"dry_run": true})), operator).await?;
    let matched = preview["matched"].as_u64().unwrap_or(0);
    if !yes {
        let code = if matched == 0 { EXIT_PARTIAL } else { EXIT_OK };
        if json_out {
            return Ok((pretty(&preview)?, code));
        }
        return Ok((render_preview(topic, &preview), code));
    }
    if matched == 0 {
        let text = if json_out {
            pretty(&preview)?
        } else {
            render_preview(topic, &preview)
        };
        return Ok((text, EXIT_PARTIAL));
    }
    let mut runs: Vec<Value> = Vec::new();
    let mut expect = matched;
    loop {
        let done = post(api, topic, &with(json!({"expect": expect})), operator).await?;
        let remaining = done["remaining"].as_u64().unwrap_or(0);
        let progressed = done["redriven"].as_array().is_some_and(|a| !a.is_empty());
        runs.push(done);
        if remaining == 0 || !progressed {
            break;
        }
        let next = post(api, topic, &with(json!({"dry_run": true})), operator).await?;
        expect = next["matched"].as_u64().unwrap_or(0);
        if expect == 0 {
            break;
        }
    }
    let refused: usize = runs
        .iter()
        .map(|r| r["refused"].as_array().map_or(0, Vec::len))
        .sum();
    let code = if refused > 0 { EXIT_PARTIAL } else { EXIT_OK };
    if json_out {
        let out = if runs.len() == 1 {
            runs.remove(0)
        } else {
            Value::Array(runs)
        };
        return Ok((pretty(&out)?, code));
    }
    Ok((render_done(topic, &runs), code))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Text that came from a record, safe for a terminal: control characters (escape sequences,
/// newlines) written as escapes.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON string field as escaped text (`-` when absent or empty).
fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) if !s.is_empty() => escaped(s),
        Value::Null => "-".into(),
        Value::String(_) => "-".into(),
        other => escaped(&other.to_string()),
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count()) + 2));
            }
        }
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

/// The text of `choreo dlq list`.
pub fn render_topics(answer: &Value) -> String {
    let topics = answer["topics"].as_array().cloned().unwrap_or_default();
    if topics.is_empty() {
        return "no dead-letter topics\n".into();
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                field(t, "topic"),
                field(t, "origin"),
                t["records"].as_u64().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    table(&["TOPIC", "ORIGIN", "RECORDS"], &rows)
}

/// When a record was dead-lettered, with its age.
fn when(v: &Value, now_ms: u64) -> String {
    match v["timestamp_ms"].as_u64() {
        Some(ms) => format!(
            "{} ({} ago)",
            format_time(ms),
            format_age(now_ms.saturating_sub(ms))
        ),
        None => "-".into(),
    }
}

/// The short name of an event type (`OrderPlaced` for `io.choreo.orders.OrderPlaced`).
fn short_type(v: &Value) -> String {
    let t = field(v, "event_type");
    t.rsplit('.').next().unwrap_or(&t).to_owned()
}

/// The text of `choreo dlq show TOPIC`.
pub fn render_page(topic: &str, page: &Value, query: &[(&str, String)], now_ms: u64) -> String {
    let records = page["records"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no dead letter matches\n");
    } else {
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                let redriven = r["redriven"].as_array().map_or(0, Vec::len);
                vec![
                    field(r, "id"),
                    when(r, now_ms),
                    field(r, "kind"),
                    short_type(r),
                    short(&field(r, "key"), 40),
                    if redriven == 0 {
                        "-".into()
                    } else {
                        format!("{redriven}×")
                    },
                    short(&field(r, "reason"), 100),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ID",
                "DEAD-LETTERED",
                "KIND",
                "EVENT",
                "KEY",
                "REDRIVEN",
                "REASON",
            ],
            &rows,
        ));
    }
    if let Some(next) = page["next"].as_str() {
        let mut more = format!("more: choreo dlq show {topic}");
        for (k, v) in query.iter().filter(|(k, _)| *k != "before") {
            let _ = write!(more, " --{k} {}", shell_word(v));
        }
        let _ = writeln!(more, " --before {next}");
        out.push_str(&more);
    }
    out
}

/// `text` as one shell word (quoted when it needs to be).
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | ','))
    {
        return text.to_owned();
    }
    format!("'{}'", escaped(text).replace('\'', r"'\''"))
}

/// The text of `choreo dlq show ID`.
pub fn render_record(r: &Value, now_ms: u64) -> String {
    let mut out = String::new();
    let o = &r["origin"];
    let origin = format!(
        "{}/{}/{}",
        field(o, "topic"),
        o["partition"]
            .as_i64()
            .map_or("?".into(), |p| p.to_string()),
        o["offset"].as_i64().map_or("?".into(), |p| p.to_string())
    );
    for (label, value) in [
        ("dead letter", field(r, "id")),
        ("dead-lettered", when(r, now_ms)),
        ("kind", field(r, "kind")),
        ("reason", field(r, "reason")),
        ("handler", field(r, "handler")),
        ("group", field(r, "group")),
        ("origin", origin),
        ("attempts", r["attempts"].as_u64().unwrap_or(0).to_string()),
        ("event type", field(r, "event_type")),
        ("ce_id", field(r, "ce_id")),
        ("key", field(r, "key")),
    ] {
        let _ = writeln!(out, "{label:<14}{value}");
    }
    for d in r["redriven"].as_array().into_iter().flatten() {
        let to = &d["to"];
        let note = d["note"]
            .as_str()
            .map(|n| format!(" ({})", escaped(n)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<14}{} by {} to {}/{}/{}{note}",
            "redriven",
            d["at_ms"].as_u64().map_or("?".into(), format_time),
            field(d, "by"),
            field(to, "topic"),
            to["partition"],
            to["offset"]
        );
    }
    out.push_str("\nHEADERS\n");
    if let Some(h) = r["headers"].as_object() {
        for (k, v) in h {
            let _ = writeln!(
                out,
                "  {}: {}",
                escaped(k),
                v.as_str().map_or_else(String::new, escaped)
            );
        }
    }
    match (&r["payload"], r["payload_error"].as_str()) {
        (Value::Null, error) => {
            let _ = writeln!(
                out,
                "\nPAYLOAD (not decoded: {})",
                error.map_or_else(|| "-".into(), escaped)
            );
            if let Some(b) = r["payload_base64"].as_str() {
                let _ = writeln!(out, "  base64: {}", escaped(b));
            }
        }
        (payload, _) => {
            out.push_str("\nPAYLOAD\n");
            let text = serde_json::to_string_pretty(payload).unwrap_or_default();
            for line in text.lines() {
                let _ = writeln!(out, "  {}", escaped(line));
            }
        }
    }
    out
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).map(escaped).collect())
        .unwrap_or_default()
}

fn refusals(v: &Value, out: &mut String) {
    let refused = v["refused"].as_array().cloned().unwrap_or_default();
    if refused.is_empty() {
        return;
    }
    out.push_str("left out:\n");
    for r in &refused {
        let _ = writeln!(out, "  {}: {}", field(r, "id"), field(r, "reason"));
    }
}

/// The text of a redrive's dry run.
pub fn render_preview(topic: &str, p: &Value) -> String {
    let matched = p["matched"].as_u64().unwrap_or(0);
    let again = ids(p, "already_redriven");
    let listed = ids(p, "ids");
    let mut out = String::new();
    if matched == 0 {
        out.push_str("nothing to redrive: no record matches\n");
    } else {
        let _ = writeln!(
            out,
            "would redrive {matched} record(s) of {} to {}:",
            escaped(topic),
            escaped(topic.strip_suffix(".dlq").unwrap_or(topic))
        );
        for id in &listed {
            let mark = if again.contains(id) {
                " (redriven before)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {id}{mark}");
        }
        if (listed.len() as u64) < matched {
            let _ = writeln!(
                out,
                "  … and {} more (redriven in further rounds)",
                matched - listed.len() as u64
            );
        }
    }
    refusals(p, &mut out);
    if matched > 0 {
        out.push_str("(nothing sent: add --yes to redrive them)\n");
    }
    out
}

/// The text of a redrive that ran (one answer per round).
pub fn render_done(topic: &str, runs: &[Value]) -> String {
    let mut out = String::new();
    let total: usize = runs
        .iter()
        .map(|r| r["redriven"].as_array().map_or(0, Vec::len))
        .sum();
    let _ = writeln!(out, "redrove {total} record(s) of {}:", escaped(topic));
    for run in runs {
        for d in run["redriven"].as_array().into_iter().flatten() {
            let to = &d["to"];
            let again = if d["again"].as_bool() == Some(true) {
                " (again)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {} -> {}/{}/{}{again}",
                field(d, "id"),
                field(to, "topic"),
                to["partition"],
                to["offset"]
            );
        }
    }
    for run in runs {
        refusals(run, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_text_cannot_drive_the_terminal() {
        assert_eq!(escaped("a\u{1b}[31mred\nx"), "a\\u{1b}[31mred\\nx");
        assert_eq!(escaped("plain é"), "plain é");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("orders.dlq"), "orders.dlq");
        assert_eq!(shell_word("it's bad"), r"'it'\''s bad'");
    }
}
