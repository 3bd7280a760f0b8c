//! `choreo sagas watch`: follows `GET /api/sagas/live` (server-sent events) and prints a line
//! per saga that changed — its new status, and the one before when this watch saw it — and the
//! counts, until stopped. A lost connection is opened again.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use choreo_coordinator::http::live::{KEEP_ALIVE, LiveMessage};

use super::{ListArgs, format_time, now_ms, query_url, read_json, streaming_client};

/// The most sagas a watch remembers the status of (to print "was …"); beyond, it starts over.
const REMEMBERED: usize = 100_000;

/// Follows live updates of the sagas `filter` matches, handing each printable line to
/// `emit` (one JSON message per line with `json`) until `emit` answers false.
pub async fn watch(
    api: &str,
    filter: &ListArgs,
    json: bool,
    mut emit: impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    let url = query_url(api, &["api", "sagas", "live"], filter, None)?;
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut first = true;
    loop {
        match follow(&url, json, &mut seen, &mut first, &mut emit).await {
            Ok(Stop::Asked) => return Ok(()),
            Ok(Stop::Ended) => {
                if !emit("the live stream ended; opening it again") {
                    return Ok(());
                }
            }
            Err(e) if first => return Err(e),
            Err(e) => {
                if !emit(&format!(
                    "live updates interrupted ({e:#}); opening them again"
                )) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

enum Stop {
    Asked,
    Ended,
}

async fn follow(
    url: &reqwest::Url,
    json: bool,
    seen: &mut HashMap<String, String>,
    first: &mut bool,
    emit: &mut impl FnMut(&str) -> bool,
) -> anyhow::Result<Stop> {
    let mut resp = streaming_client()?
        .get(url.clone())
        .send()
        .await
        .with_context(|| super::unreachable_api(url.origin().ascii_serialization().as_str()))?;
    if !resp.status().is_success() {
        // The error answer, as every other command reports it.
        read_json::<serde_json::Value>(resp, url).await?;
        bail!("the live stream was refused");
    }
    let mut buffer = String::new();
    loop {
        let chunk = tokio::time::timeout(KEEP_ALIVE * 3, resp.chunk())
            .await
            .context("nothing arrived, not even a keep-alive")?
            .context("reading the live stream")?;
        let Some(chunk) = chunk else {
            return Ok(Stop::Ended);
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n");
            if data.is_empty() {
                continue;
            }
            let lines = if json {
                vec![data]
            } else {
                let m: LiveMessage =
                    serde_json::from_str(&data).context("a live message that is not JSON")?;
                render(&m, seen, *first)
            };
            *first = false;
            for line in lines {
                if !emit(&line) {
                    return Ok(Stop::Asked);
                }
            }
        }
    }
}

fn counts_line(m: &LiveMessage) -> String {
    let known = choreo_coordinator::http::ALL_STATUSES.map(|s| s.to_string());
    let parts: Vec<String> = known
        .iter()
        .map(|s| format!("{s} {}", m.counts.get(s).copied().unwrap_or(0)))
        .collect();
    format!("counts: {}", parts.join(" · "))
}

fn render(m: &LiveMessage, seen: &mut HashMap<String, String>, first: bool) -> Vec<String> {
    let now = format_time(now_ms());
    let mut out = Vec::new();
    if first {
        out.push(format!("{now}  watching (Ctrl-C stops)"));
    }
    if m.reset {
        out.push(format!(
            "{now}  more changed than a message lists; `choreo sagas list` shows where things stand"
        ));
        seen.clear();
    }
    if seen.len() > REMEMBERED {
        seen.clear();
    }
    for s in m.changed.iter().rev() {
        let status = s.status.to_string();
        let line = match seen.insert(s.saga_id.clone(), status.clone()) {
            Some(before) if before != status => {
                format!("{now}  {}  {before} -> {status}", s.saga_id)
            }
            Some(_) => format!("{now}  {}  {status} (changed)", s.saga_id),
            None => format!("{now}  {}  {status}", s.saga_id),
        };
        out.push(line);
    }
    for id in &m.left {
        seen.remove(id);
        out.push(format!("{now}  {id}  no longer matches (or was forgotten)"));
    }
    out.push(format!("{now}  {}", counts_line(m)));
    out
}
