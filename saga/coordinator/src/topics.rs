//! Start-up topic management: create what is missing with the right settings, and refuse to run
//! when the topics of one saga are not co-partitioned (one partition must own all of a saga's
//! events — BRIEF decision 2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use choreo_bus::connect::{MetadataClient, denied, is_authorization_error};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::CoordinatorError;

/// A topic the coordinator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions to create it with.
    pub partitions: i32,
    /// Whether it is compacted (the saga state changelog).
    pub compacted: bool,
}

/// The changelog's topic settings: compacted, with compaction that keeps up (the active
/// segment rolls every 10 minutes so that it can be cleaned, a tenth of dirty records is enough
/// to clean, and no record waits more than six hours for it), and tombstones kept a day —
/// longer than any restore takes, so that a restore that reads a saga's state also reads its
/// deletion. A quiet changelog whose segment rolled only hourly left a restore reading up to an
/// hour of superseded states, which a soak's replicas showed as memory growing across restarts.
pub const CHANGELOG_SETTINGS: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.ms", "600000"),
    ("segment.bytes", "67108864"),
    ("min.cleanable.dirty.ratio", "0.1"),
    ("max.compaction.lag.ms", "21600000"),
    ("delete.retention.ms", "86400000"),
];

/// Partition counts of existing topics (absent = the topic does not exist). A topic an ACL
/// hides from this client's principal is an error naming it, not an absent topic; so are a
/// refused login and a failed TLS handshake ([`choreo_bus::connect::MetadataClient`]).
pub fn partition_counts(
    client: &ClientConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, i32>, CoordinatorError> {
    let metadata = MetadataClient::new(client)?;
    let all = metadata.fetch(None, timeout)?;
    let mut counts = BTreeMap::new();
    for name in topics {
        let listed = all.topics().iter().find(|t| t.name() == *name);
        // Kafka leaves a topic the principal may not see out of the full list: asked for by
        // name, it answers whether the topic is missing or denied.
        let asked;
        let topic = match listed {
            Some(t) => t,
            None => {
                asked = metadata.fetch(Some(name), timeout)?;
                match asked.topics().iter().find(|t| t.name() == *name) {
                    Some(t) => t,
                    None => continue,
                }
            }
        };
        match topic.error().map(RDKafkaErrorCode::from) {
            None if !topic.partitions().is_empty() => {
                counts.insert(
                    (*name).to_owned(),
                    i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX),
                );
            }
            Some(code) if is_authorization_error(code) => {
                return Err(choreo_bus::BusError::from(denied(
                    client,
                    format!("topic {name}"),
                    code,
                    "the coordinator needs Describe, Read and Write on it (and Create, to create it)",
                ))
                .into());
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// Creates the topics of `specs` that do not exist yet.
pub async fn ensure_topics(
    client: &ClientConfig,
    specs: &[TopicSpec],
    replication_factor: Option<i32>,
    timeout: Duration,
) -> Result<(), CoordinatorError> {
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let existing = {
        let (client, names) = (
            client.clone(),
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        );
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            partition_counts(&client, &refs, timeout)
        })
        .await
        .map_err(|e| CoordinatorError::Startup(format!("metadata task: {e}")))??
    };
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| CoordinatorError::kafka("creating an admin client", e))?;
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|s| {
            // -1: the cluster's `default.replication.factor` (KIP-464).
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(replication_factor.unwrap_or(-1)),
            );
            if s.compacted {
                CHANGELOG_SETTINGS.iter().fold(t, |t, (k, v)| t.set(k, v))
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| CoordinatorError::kafka("creating topics", e))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => {
                return Err(CoordinatorError::Startup(format!(
                    "cannot create topic {name}: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// Whether `group` has committed an offset on any partition of `topics` (name → partitions):
/// whether it has run before.
pub fn group_has_committed(
    client: &ClientConfig,
    group: &str,
    topics: &BTreeMap<String, i32>,
    timeout: Duration,
) -> Result<bool, CoordinatorError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| CoordinatorError::kafka("creating an offsets client", e))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, n) in topics {
        for p in 0..*n {
            tpl.add_partition(t, p);
        }
    }
    if tpl.count() == 0 {
        return Ok(false);
    }
    let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| {
        CoordinatorError::kafka(format!("fetching the offsets of group {group}"), e)
    })?;
    Ok(committed
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), rdkafka::Offset::Offset(_))))
}

/// Refuses to start when an ACL denies this client's principal the consumer `group`
/// ([`choreo_bus::connect::check_group`]: its committed offsets on `topics`, name →
/// partitions, need Describe on the group). Other failures are left to the consumer, which
/// reports and retries them.
pub fn check_group_access(
    client: &ClientConfig,
    group: &str,
    topics: &BTreeMap<String, i32>,
    timeout: Duration,
) -> Result<(), CoordinatorError> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, n) in topics {
        for p in 0..*n {
            tpl.add_partition(t, p);
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    // Not a stable read: a transaction left open on the offsets partition (closed later by the
    // transaction sweep) would hold a stable read up until the timeout.
    let mut settings = client.clone();
    settings.set("isolation.level", "read_uncommitted");
    match choreo_bus::connect::check_group(
        &settings,
        group,
        &tpl,
        timeout,
        "the coordinator needs Describe and Read on its group and on its input topics",
    ) {
        Ok(()) => Ok(()),
        Err(e @ choreo_bus::BusError::Refused(_)) => Err(e.into()),
        Err(e) => {
            tracing::debug!(error = %e, group, "could not check access to the group; the consumer will report it");
            Ok(())
        }
    }
}

/// Refuses a changelog whose `cleanup.policy` is not `compact`: with `delete`, the broker
/// drops sagas older than the topic's retention and a restore would silently miss them. A
/// broker that does not describe configs (librdkafka's mock cluster) is let through with a
/// warning.
pub async fn check_changelog_policy(
    client: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<(), CoordinatorError> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| CoordinatorError::kafka("creating an admin client", e))?;
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let answer = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await;
    let policy = match answer.as_deref() {
        Ok([Ok(resource)]) => resource.get("cleanup.policy").and_then(|e| e.value.clone()),
        Ok(other) => {
            tracing::warn!(topic, answer = ?other.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>(), "could not read the changelog's cleanup.policy; not checked");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(topic, error = %e, "could not read the changelog's cleanup.policy; not checked");
            return Ok(());
        }
    };
    match policy {
        Some(p) if p.split(',').any(|x| x.trim() == "compact") => Ok(()),
        Some(p) => Err(CoordinatorError::Startup(format!(
            "the changelog topic {topic} has cleanup.policy={p}: the broker would delete saga states older than its retention and a restore would lose them. Make it compacted (kafka-configs.sh --bootstrap-server <brokers> --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact) or name another changelog (coordinator.changelog_topic)"
        ))),
        None => Ok(()),
    }
}

/// Checks that every topic of each group has the same number of partitions.
pub fn check_copartitioned(
    groups: &[(String, Vec<String>)],
    counts: &BTreeMap<String, i32>,
) -> Result<(), CoordinatorError> {
    for (saga, topics) in groups {
        let mut seen: Vec<(String, i32)> = Vec::new();
        for t in topics {
            match counts.get(t) {
                Some(n) => seen.push((t.clone(), *n)),
                None => {
                    return Err(CoordinatorError::Startup(format!(
                        "saga {saga}: topic {t} does not exist (create it, or let choreo create it)"
                    )));
                }
            }
        }
        let distinct: BTreeSet<i32> = seen.iter().map(|(_, n)| *n).collect();
        if distinct.len() > 1 {
            let list: Vec<String> = seen.iter().map(|(t, n)| format!("{t}={n}")).collect();
            return Err(CoordinatorError::Startup(format!(
                "saga {saga}: its topics are not co-partitioned ({}); every topic of a saga needs the same partition count so that one coordinator partition owns all of a saga's events",
                list.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_named_after_a_group_are_valid_topic_names() {
        use crate::coordinator::derived_topic;
        assert_eq!(
            derived_topic("choreo-coordinator", "saga-state"),
            "choreo-coordinator.saga-state"
        );
        assert_eq!(
            derived_topic("team a/orders:v2", "saga-commands"),
            "team_a_orders_v2.saga-commands"
        );
        let long = derived_topic(&"g".repeat(400), "saga-state");
        assert_eq!(long.len(), 249);
        assert!(long.ends_with(".saga-state"));
    }

    #[test]
    fn copartitioning_is_checked_per_saga() {
        let counts: BTreeMap<String, i32> = [("orders", 6), ("payments", 6), ("shipping", 3)]
            .iter()
            .map(|(t, n)| ((*t).to_owned(), *n))
            .collect();
        let ok = vec![(
            "order".to_owned(),
            vec!["orders".to_owned(), "payments".to_owned()],
        )];
        assert!(check_copartitioned(&ok, &counts).is_ok());
        let bad = vec![(
            "order".to_owned(),
            vec!["orders".to_owned(), "shipping".to_owned()],
        )];
        let err = check_copartitioned(&bad, &counts)
            .expect_err("not co-partitioned")
            .to_string();
        assert!(
            err.contains("orders=6") && err.contains("shipping=3"),
            "{err}"
        );
        let missing = vec![("order".to_owned(), vec!["nope".to_owned()])];
        assert!(
            check_copartitioned(&missing, &counts)
                .expect_err("missing")
                .to_string()
                .contains("nope")
        );
    }
}
