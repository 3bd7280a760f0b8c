//! Checks of what the collector saw against the orders' paths: exact, in order, committed past,
//! after dedup.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::bail;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;

/// The order saga topics.
use super::collector::Collector;
use super::paths::Path;

/// Checks that every order emitted exactly its path's events (each once).
pub fn check_exact(collector: &Collector, orders: &[(String, Path)]) -> anyhow::Result<()> {
    let by_order = collector.by_order();
    let mut problems = Vec::new();
    for (id, path) in orders {
        let mut got: Vec<String> = by_order.get(id).cloned().unwrap_or_default();
        got.sort();
        if got != path.expected() {
            problems.push(format!(
                "{id} ({path:?}): emitted {got:?}, expected {:?}",
                path.expected()
            ));
        }
    }
    if !problems.is_empty() {
        // One example per path, so a failure shows every kind of problem.
        let mut examples: BTreeMap<String, String> = BTreeMap::new();
        for p in &problems {
            let kind = p.split(['(', ')']).nth(1).unwrap_or_default().to_owned();
            examples.entry(kind).or_insert_with(|| p.clone());
        }
        bail!(
            "{} of {} sagas emitted the wrong events, e.g.:\n{}",
            problems.len(),
            orders.len(),
            examples.into_values().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// Checks the order of every saga's emitted events: a cancellation comes after every
/// compensation (it is emitted only once they are acknowledged), a confirmation after the
/// shipment request.
pub fn check_order(collector: &Collector, orders: &[(String, Path)]) -> anyhow::Result<()> {
    let mut at: HashMap<(String, String), i64> = HashMap::new();
    for e in collector.all() {
        at.entry((e.key, e.event_type)).or_insert(e.timestamp);
    }
    let ts = |o: &str, t: &str| at.get(&(o.to_owned(), t.to_owned())).copied();
    for (id, _) in orders {
        if let Some(cancel) = ts(id, "OrderCancelled") {
            for c in ["RefundPayment", "ReleaseInventory", "CancelShipment"] {
                if let Some(comp) = ts(id, c) {
                    anyhow::ensure!(
                        comp < cancel,
                        "{id}: OrderCancelled (at {cancel}) not after {c} (at {comp})"
                    );
                }
            }
        }
        if let (Some(confirm), Some(ship)) = (ts(id, "OrderConfirmed"), ts(id, "ShipmentRequested"))
        {
            anyhow::ensure!(
                ship < confirm,
                "{id}: OrderConfirmed not after ShipmentRequested"
            );
        }
    }
    Ok(())
}

/// Checks that `group` committed, for every partition of the saga topics, an offset past the
/// last record the collector read there: every input the coordinator consumed was committed
/// with the transaction that decided it, so a restarted replica does not read it again.
pub fn check_committed_past(
    bootstrap: &str,
    group: &str,
    collector: &Collector,
) -> anyhow::Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()?;
    let last = collector.last_offsets();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, p) in last.keys() {
        tpl.add_partition(t, *p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
    let mut behind = Vec::new();
    for el in committed.elements() {
        let at = el.offset().to_raw().unwrap_or(-1);
        let read = last[&(el.topic().to_owned(), el.partition())];
        if at <= read {
            behind.push(format!(
                "{}/{}: committed {at}, last record {read}",
                el.topic(),
                el.partition()
            ));
        }
    }
    anyhow::ensure!(
        behind.is_empty(),
        "the coordinator's committed offsets are behind its inputs: {behind:?}"
    );
    Ok(())
}

/// What a collector saw of the expected effects, counted by saga, event type and event id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records seen.
    pub records: usize,
    /// Expected (saga, event type) pairs with no record.
    pub missing: usize,
    /// Records beyond the first of a (saga, event type) pair.
    pub duplicated: usize,
    /// Records of a type the saga's path does not call for.
    pub unexpected: usize,
    /// (saga, event type) pairs whose records carry more than one event id.
    pub conflicting_ids: usize,
}

/// Counts the collector's records against every order's expected events.
pub fn count_effects(collector: &Collector, orders: &[(String, Path)]) -> Counts {
    let all = collector.all();
    let mut seen: HashMap<&str, HashMap<&str, Vec<&str>>> = HashMap::new();
    for e in &all {
        seen.entry(e.key.as_str())
            .or_default()
            .entry(e.event_type.as_str())
            .or_default()
            .push(e.id.as_str());
    }
    let mut c = Counts {
        records: all.len(),
        ..Counts::default()
    };
    for (id, path) in orders {
        let expected = path.expected();
        let got = seen.remove(id.as_str()).unwrap_or_default();
        for t in &expected {
            match got.get(t) {
                None => c.missing += 1,
                Some(ids) => {
                    c.duplicated += ids.len() - 1;
                    let distinct: std::collections::HashSet<&&str> = ids.iter().collect();
                    if distinct.len() > 1 {
                        c.conflicting_ids += 1;
                    }
                }
            }
        }
        for (t, ids) in &got {
            if !expected.contains(t) {
                c.unexpected += ids.len();
            }
        }
    }
    c
}

/// Checks that every order emitted its path's events at least once and, after deduplication by
/// event id, exactly once; returns how many duplicates were dropped.
pub fn check_after_dedup(
    collector: &Collector,
    orders: &[(String, Path)],
) -> anyhow::Result<usize> {
    let mut by_order: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let all = collector.all();
    let mut ids = std::collections::HashSet::new();
    let mut dups = 0;
    for e in &all {
        if !ids.insert(e.id.clone()) {
            dups += 1;
            continue;
        }
        by_order
            .entry(e.key.clone())
            .or_default()
            .insert(e.id.clone(), e.event_type.clone());
    }
    let mut problems = Vec::new();
    for (id, path) in orders {
        let mut got: Vec<String> = by_order
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        got.sort();
        if got != path.expected() {
            problems.push(format!(
                "{id} ({path:?}): after dedup emitted {got:?}, expected {:?}",
                path.expected()
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} of {} sagas wrong:\n{}",
            problems.len(),
            orders.len(),
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(dups)
}
