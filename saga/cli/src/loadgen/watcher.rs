//! The watcher: a read_committed consumer that counts each key's decision (the coordinator's
//! `OrderConfirmed`, or the baseline pipe's n-th output) and when it was seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::wire::envelope::header;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// What a watcher counts as a key's decision.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// The first record of this `ce_type` for the key; records of `failure` are counted apart.
    Type { success: String, failure: String },
    /// The `count`-th distinct record (by `ce_id`) for the key.
    Count(usize),
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) done: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) first_failure: std::sync::Mutex<Option<Vec<u8>>>,
}

pub(crate) fn header_str<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads `topic` (read_committed, from `start`) until every one of `n` keys has its decision;
/// returns when each was seen.
pub(crate) async fn watch(
    consumer: StreamConsumer,
    prefix: String,
    n: usize,
    decision: Decision,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Instant>> {
    let mut seen: Vec<Option<Instant>> = vec![None; n];
    let mut ids: Vec<Vec<String>> = match decision {
        Decision::Count(_) => vec![Vec::new(); n],
        Decision::Type { .. } => Vec::new(),
    };
    let mut failed = vec![false; n];
    loop {
        let m = match consumer.recv().await {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "loadgen watcher");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let now = Instant::now();
        let Some(i) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(prefix.as_str()))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|i| *i < n)
        else {
            continue;
        };
        if seen[i].is_some() || failed[i] {
            continue;
        }
        let decided = match &decision {
            Decision::Type { success, failure } => match header_str(&m, header::TYPE) {
                Some(t) if t == success => true,
                Some(t) if t == failure => {
                    failed[i] = true;
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    let mut first = progress
                        .first_failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = m.payload().map(<[u8]>::to_vec);
                    }
                    false
                }
                _ => false,
            },
            Decision::Count(count) => {
                let id = header_str(&m, header::ID).unwrap_or_default().to_owned();
                if !ids[i].contains(&id) {
                    ids[i].push(id);
                }
                ids[i].len() >= *count
            }
        };
        if decided {
            seen[i] = Some(now);
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        let done = progress.done.load(Ordering::Relaxed);
        if done + progress.failed.load(Ordering::Relaxed) >= n {
            if done < n {
                bail!("{} of {n} sagas did not complete", n - done);
            }
            return Ok(seen.into_iter().map(|s| s.unwrap_or(now)).collect());
        }
    }
}

/// A read_committed consumer assigned to every partition of `topic` from the current end (or
/// from the beginning of a fresh topic).
pub(crate) fn watch_consumer(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the measuring consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) =
            tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, p, timeout))
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .context("measuring consumer assignment")?;
    }
    consumer
        .assign(&tpl)
        .context("assigning the measuring consumer")?;
    Ok(consumer)
}

/// Waits for a watcher, failing on timeout or when `alive` says the system under test stopped.
pub(crate) async fn await_watcher(
    watcher: &mut tokio::task::JoinHandle<anyhow::Result<Vec<Instant>>>,
    progress: &Progress,
    n: usize,
    deadline: Instant,
    what: &str,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Instant>> {
    loop {
        tokio::select! {
            r = &mut *watcher => return r.context("the measuring task failed")?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let (done, failed) = (
            progress.done.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
        );
        if let Err(e) = alive() {
            watcher.abort();
            return Err(e.context(format!(
                "{what}: stopped with {done} of {n} decisions seen ({failed} failed)"
            )));
        }
        if Instant::now() > deadline {
            watcher.abort();
            bail!(
                "{what}: only {done} of {n} decisions seen before the timeout ({failed} failed, {} missing)",
                n - done - failed
            );
        }
    }
}
