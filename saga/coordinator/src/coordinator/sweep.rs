//! Closing, as aborted, whatever an earlier incarnation of this transactional id left open on
//! a partition.
//!
//! A transaction the broker aborts ends with an abort marker on every partition it wrote to.
//! Apache Kafka can skip a marker: right after an unclean restart, its transaction coordinator
//! loads, aborts a transaction that timed out while the broker was down, and drops the markers
//! of the partitions it finds no leader for yet ("Couldn't find leader endpoint for
//! partitions …", taken for deleted partitions). The records stay open on such a partition:
//! its last stable offset stops there, hiding everything after them from read_committed
//! readers, until the same producer id writes its next marker — and the next marker of this
//! producer id (the transactional id is stable across restarts) is the next batch's *commit*,
//! which closes the aborted batch's records as committed: its effects become visible beside the
//! retried batch's.
//!
//! The group's offsets partition (`__consumer_offsets-<n>`) is one of those partitions: a batch
//! commits its input offsets inside the transaction. Left open there, the offsets stay pending,
//! and every read of the group's committed offsets (a stable read, under read_committed) is
//! answered `UNSTABLE_OFFSET_COMMIT` until the fetch times out: the replica cannot restore.
//!
//! So after every `init_transactions`, before the first batch, the producer writes one record
//! to every partition it can write to, adds the group's offsets to the same transaction, and
//! aborts. That abort marker, of the same producer id, closes whatever was left open there as
//! aborted. No read_committed reader sees the records (a tombstone keyed [`SWEEP_KEY`], with a
//! [`SWEEP_HEADER`] header), and no offset of the sweep is ever committed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use super::CoordinatorOptions;
use super::transaction::is_stale_generation;
use crate::error::CoordinatorError;
use crate::topics::partition_counts;

/// The key of a sweep record (a tombstone, so that even a read_uncommitted reader of the
/// compacted changelog finds nothing in it).
pub(crate) const SWEEP_KEY: &str = "choreo.transaction-sweep";

/// The header every sweep record carries (choreo's readers skip such records).
pub(crate) const SWEEP_HEADER: &str = choreo_bus::wire::envelope::header::TRANSACTION_SWEEP;

const ATTEMPTS: u32 = 5;

/// Writes one record to every partition of every topic the coordinator writes to, adds the
/// group's offsets partition, in one transaction, and aborts it. Returns the number of
/// partitions swept (the offsets partition included).
pub(crate) async fn abort_leftovers(
    producer: &FutureProducer,
    opts: &CoordinatorOptions,
) -> Result<usize, CoordinatorError> {
    let wanted: BTreeSet<String> = opts
        .required_topics()?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let started = Instant::now();
        match sweep_once(producer, opts, &wanted).await {
            Ok(n) => {
                tracing::info!(
                    partitions = n,
                    seconds = started.elapsed().as_secs_f64(),
                    "closed, as aborted, anything an earlier producer with this transactional id left open"
                );
                return Ok(n);
            }
            Err(SweepError::Fatal(why)) => return Err(CoordinatorError::Fenced(why)),
            Err(SweepError::Again(why)) => {
                tracing::warn!(reason = %why, attempt, "sweeping the partitions for open transactions failed; retrying");
                last = why;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
    Err(CoordinatorError::Startup(format!(
        "could not close what an earlier producer with transactional id {:?} may have left open ({last}); stopping rather than committing over it",
        opts.transactional_id()
    )))
}

enum SweepError {
    /// Aborted (or never begun): the sweep can run again.
    Again(String),
    /// The producer cannot go on.
    Fatal(String),
}

async fn sweep_once(
    producer: &FutureProducer,
    opts: &CoordinatorOptions,
    wanted: &BTreeSet<String>,
) -> Result<usize, SweepError> {
    let timeout = opts.kafka_timeout;
    let partitions: Vec<(String, i32)> = {
        let (client, names) = (opts.kafka.consumer_config(), wanted.clone());
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            partition_counts(&client, &refs, timeout)
        })
        .await
        .map_err(|e| SweepError::Again(format!("metadata task: {e}")))?
        .map_err(|e| SweepError::Again(e.to_string()))?
        .into_iter()
        .flat_map(|(topic, n)| (0..n).map(move |p| (topic.clone(), p)))
        .collect()
    };
    let step = |what: &'static str| {
        move |e: rdkafka::error::KafkaError| {
            let fatal = matches!(&e, rdkafka::error::KafkaError::Transaction(t) if t.is_fatal());
            let why = format!("{what}: {e}");
            if fatal {
                SweepError::Fatal(why)
            } else {
                SweepError::Again(why)
            }
        }
    };
    blocking(producer, timeout, |p, _| p.begin_transaction())
        .await
        .map_err(step("begin_transaction"))?;
    let mut failed = add_group_offsets(producer, opts).await;
    let mut deliveries = Vec::with_capacity(partitions.len());
    for (topic, p) in &partitions {
        if failed.is_some() {
            break;
        }
        let rec = FutureRecord::<str, [u8]>::to(topic)
            .key(SWEEP_KEY)
            .partition(*p)
            .headers(OwnedHeaders::new().insert(Header {
                key: SWEEP_HEADER,
                value: Some("1"),
            }));
        match producer.send_result(rec) {
            Ok(d) => deliveries.push(d),
            Err((e, _)) => {
                failed = Some(format!("enqueue to {topic}/{p}: {e}"));
                break;
            }
        }
    }
    for d in futures::future::join_all(deliveries).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => failed = failed.or(Some(format!("delivery: {e}"))),
            Err(_) => failed = failed.or(Some("delivery cancelled".to_owned())),
        }
    }
    // The abort is the point of the sweep: every partition whose record was written now holds
    // an abort marker of this producer id. One that was not written is swept again.
    let mut attempt = 0;
    loop {
        match blocking(producer, timeout, |p, t| p.abort_transaction(t)).await {
            Ok(()) => break,
            Err(rdkafka::error::KafkaError::Transaction(e))
                if e.is_retriable() && !e.is_fatal() && attempt < 20 =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(step("abort_transaction")(e)),
        }
    }
    match failed {
        Some(why) => Err(SweepError::Again(why)),
        None => Ok(partitions.len() + 1),
    }
}

/// Adds the group's offsets partition to the open transaction, through the offset of one input
/// partition (which the abort discards). The broker adds the partition (`AddOffsetsToTxn`)
/// before the group checks the commit (`TxnOffsetCommit`): a group that refuses it, since this
/// is not one of its members, leaves the partition in the transaction all the same. `None` when
/// the partition is in; otherwise why not.
async fn add_group_offsets(producer: &FutureProducer, opts: &CoordinatorOptions) -> Option<String> {
    let topic = match opts.input_topics() {
        Ok(topics) => topics.into_iter().next()?,
        Err(e) => return Some(format!("input topics: {e}")),
    };
    // A consumer that never joins: only its group id goes into the commit.
    let outsider: BaseConsumer = match opts
        .kafka
        .consumer_config()
        .set("group.id", &opts.group_id)
        .create()
    {
        Ok(c) => c,
        Err(e) => return Some(format!("creating the group's client: {e}")),
    };
    let Some(group) = outsider.group_metadata() else {
        return Some("no group metadata".to_owned());
    };
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(&topic, 0, Offset::Offset(0)) {
        return Some(format!("offsets: {e}"));
    }
    match blocking(producer, opts.kafka_timeout, move |p, t| {
        p.send_offsets_to_transaction(&tpl, &group, t)
    })
    .await
    {
        Ok(()) => None,
        // The group coordinator's answer to a commit from outside the group, which comes only
        // once the offsets partition is in the transaction.
        Err(e) if is_stale_generation(&e) => None,
        Err(e) => Some(format!("send_offsets_to_transaction: {e}")),
    }
}

async fn blocking<R: Send + 'static>(
    producer: &FutureProducer,
    timeout: Duration,
    f: impl FnOnce(&FutureProducer, Timeout) -> Result<R, rdkafka::error::KafkaError> + Send + 'static,
) -> Result<R, rdkafka::error::KafkaError> {
    let p = producer.clone();
    match tokio::task::spawn_blocking(move || f(&p, Timeout::After(timeout))).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "transaction task failed");
            Err(rdkafka::error::KafkaError::Canceled)
        }
    }
}
