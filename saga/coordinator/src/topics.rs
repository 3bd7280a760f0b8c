//! Start-up topic management: create what is missing with the right settings, and refuse to run
//! when the topics of one saga are not co-partitioned (one partition must own all of a saga's
//! events — BRIEF decision 2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

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

/// Partition counts of existing topics (absent = the topic does not exist).
pub fn partition_counts(
    client: &ClientConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, i32>, CoordinatorError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| CoordinatorError::kafka("creating a metadata client", e))?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| CoordinatorError::kafka("fetching cluster metadata", e))?;
    let wanted: BTreeSet<&str> = topics.iter().copied().collect();
    Ok(md
        .topics()
        .iter()
        .filter(|t| wanted.contains(t.name()) && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| {
            (
                t.name().to_owned(),
                i32::try_from(t.partitions().len()).unwrap_or(i32::MAX),
            )
        })
        .collect())
}

/// Creates the topics of `specs` that do not exist yet.
pub async fn ensure_topics(
    client: &ClientConfig,
    specs: &[TopicSpec],
    replication_factor: i32,
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
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(replication_factor),
            );
            if s.compacted {
                t.set("cleanup.policy", "compact")
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
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => {
                return Err(CoordinatorError::Startup(format!(
                    "cannot create topic {name}: {e}"
                )));
            }
        }
    }
    Ok(())
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
