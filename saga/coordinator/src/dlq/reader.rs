//! Reading dead-letter topics (blocking; the desk runs it on a blocking thread): the topics of
//! the cluster with their sizes, a page newest first across partitions, one record, and the
//! scan a redrive selects from. Read committed: a dead letter the coordinator wrote in a
//! transaction that aborted is never shown (nor, on a broker that shows aborted records, the
//! coordinator's transaction-sweep records).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use choreo_bus::wire::envelope::is_transaction_sweep;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::record::{Cursor, DlqId, Filter, SCAN_BUDGET, TopicSummary, headers_of, origin_of};
use crate::QuietEof;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such topic (or not a dead-letter topic).
    #[error("{0}")]
    NotFound(String),
    /// The broker could not be asked, or did not answer in time.
    #[error("{0}")]
    Kafka(String),
}

fn kafka(context: &str, e: &KafkaError) -> ReadError {
    ReadError::Kafka(format!("{context}: {e}"))
}

/// Records read per partition and step, at least and at most.
const CHUNK: (usize, usize) = (20, 500);

/// A reader of dead-letter topics (one per request).
pub(crate) struct Reader {
    consumer: BaseConsumer<QuietEof>,
    timeout: Duration,
}

/// One partition read backwards, a chunk at a time.
struct Backwards {
    partition: i32,
    low: i64,
    /// Offsets below this are not read yet.
    unread_below: i64,
    /// Read and not yet taken, oldest first (taken from the end).
    buffer: Vec<OwnedMessage>,
    /// Where the next page of this partition starts (the offset it reads before).
    cursor: i64,
}

impl Reader {
    pub(crate) fn new(client: &ClientConfig, timeout: Duration) -> Result<Self, ReadError> {
        let consumer = choreo_bus::read_back(
            client.clone(),
            choreo_bus::ReadBack::ToEnd,
            "choreo-dlq-reader",
        )
        .create_with_context(QuietEof)
        .map_err(|e| kafka("creating a dead-letter reader", &e))?;
        Ok(Self { consumer, timeout })
    }

    /// Every dead-letter topic with its partitions.
    fn dlq_partitions(&self, only: Option<&str>) -> Result<BTreeMap<String, Vec<i32>>, ReadError> {
        let md = self
            .consumer
            .fetch_metadata(only, self.timeout)
            .map_err(|e| kafka("fetching the cluster's topics", &e))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && origin_of(t.name()).is_some())
            .filter(|t| only.is_none_or(|o| o == t.name()))
            .map(|t| {
                let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ps.sort_unstable();
                (t.name().to_owned(), ps)
            })
            .filter(|(_, ps)| !ps.is_empty())
            .collect())
    }

    /// The partitions of one dead-letter topic (404 when it does not exist).
    pub(crate) fn partitions(&self, topic: &str) -> Result<Vec<i32>, ReadError> {
        self.dlq_partitions(Some(topic))?
            .remove(topic)
            .ok_or_else(|| ReadError::NotFound(format!("no dead-letter topic {topic}")))
    }

    /// How many partitions a topic has (`None`: it does not exist).
    pub(crate) fn partition_count(&self, topic: &str) -> Result<Option<i32>, ReadError> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|e| kafka(&format!("fetching the metadata of {topic}"), &e))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)))
    }

    /// (low, end) of a partition: the end is what a read_committed reader may read to.
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), ReadError> {
        self.consumer
            .fetch_watermarks(topic, partition, self.timeout)
            .map_err(|e| kafka(&format!("watermarks of {topic}/{partition}"), &e))
    }

    /// Every dead-letter topic of the cluster, by name, with how many records it holds.
    pub(crate) fn topics(&self) -> Result<Vec<TopicSummary>, ReadError> {
        let mut out = Vec::new();
        for (topic, partitions) in self.dlq_partitions(None)? {
            let mut records = 0u64;
            for p in partitions {
                let (low, high) = self.watermarks(&topic, p)?;
                records += u64::try_from(high - low).unwrap_or(0);
            }
            out.push(TopicSummary {
                origin: origin_of(&topic).unwrap_or_default().to_owned(),
                topic,
                records,
            });
        }
        Ok(out)
    }

    /// The records of `[from, to)` of one partition, oldest first (fewer when some are
    /// aborted or compacted away).
    pub(crate) fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<OwnedMessage>, ReadError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| kafka("assigning", &e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka("assigning", &e))?;
        let mut last_progress = Instant::now();
        loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    if m.topic() != topic || m.partition() != partition {
                        continue;
                    }
                    if m.offset() >= to {
                        break;
                    }
                    let done = m.offset() + 1 >= to;
                    // The coordinator's transaction-sweep records (written only to be aborted)
                    // on a broker that shows aborted records: no dead letters.
                    if m.offset() >= from && !is_transaction_sweep(m.headers()) {
                        out.push(m.detach());
                    }
                    if done {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    let _ = self.consumer.unassign();
                    return Err(kafka(&format!("reading {topic}/{partition}"), &e));
                }
                None => {}
            }
            if last_progress.elapsed() > self.timeout {
                let _ = self.consumer.unassign();
                return Err(ReadError::Kafka(format!(
                    "reading {topic}/{partition}: nothing arrived for {:?}",
                    self.timeout
                )));
            }
        }
        let _ = self.consumer.unassign();
        Ok(out)
    }

    /// One record, if the partition still holds it.
    pub(crate) fn read_one(&self, id: &DlqId) -> Result<Option<OwnedMessage>, ReadError> {
        let partitions = self.partitions(&id.topic)?;
        if !partitions.contains(&id.partition) {
            return Ok(None);
        }
        let (low, end) = self.watermarks(&id.topic, id.partition)?;
        if id.offset < low || id.offset >= end {
            return Ok(None);
        }
        Ok(self
            .read_range(&id.topic, id.partition, id.offset, id.offset + 1)?
            .into_iter()
            .find(|m| m.offset() == id.offset))
    }

    /// The records of `topic` these ids name (in id order), each with the record if the
    /// topic still holds it. Ids of one partition close together are read in one range.
    pub(crate) fn read_ids(
        &self,
        topic: &str,
        ids: BTreeSet<DlqId>,
    ) -> Result<Vec<(DlqId, Option<OwnedMessage>)>, ReadError> {
        let partitions = self.partitions(topic)?;
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for id in &ids {
            by_partition
                .entry(id.partition)
                .or_default()
                .push(id.offset);
        }
        let mut found: BTreeMap<(i32, i64), OwnedMessage> = BTreeMap::new();
        for (p, offsets) in by_partition {
            if !partitions.contains(&p) {
                continue;
            }
            let (low, end) = self.watermarks(topic, p)?;
            let wanted: Vec<i64> = offsets
                .into_iter()
                .filter(|o| (low..end).contains(o))
                .collect();
            let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
                continue;
            };
            let ranges: Vec<(i64, i64)> = if last - first < SCAN_BUDGET as i64 {
                vec![(*first, last + 1)]
            } else {
                wanted.iter().map(|o| (*o, o + 1)).collect()
            };
            for (from, to) in ranges {
                for m in self.read_range(topic, p, from, to)? {
                    if wanted.binary_search(&m.offset()).is_ok() {
                        found.insert((p, m.offset()), m);
                    }
                }
            }
        }
        Ok(ids
            .into_iter()
            .map(|id| {
                let m = found.remove(&(id.partition, id.offset));
                (id, m)
            })
            .collect())
    }

    /// Up to `limit` records matching `filter`, newest first across partitions (by
    /// timestamp), before `cursor` (or from the end); reads at most `budget` records. Returns
    /// them and the cursor of the next page (`None`: nothing older is left).
    pub(crate) fn page(
        &self,
        topic: &str,
        filter: &Filter,
        limit: usize,
        cursor: Option<&Cursor>,
        budget: usize,
    ) -> Result<(Vec<OwnedMessage>, Option<Cursor>), ReadError> {
        let chunk = limit.clamp(CHUNK.0, CHUNK.1);
        let mut streams = Vec::new();
        for p in self.partitions(topic)? {
            let (low, end) = self.watermarks(topic, p)?;
            let end = cursor
                .map_or(end, |c| c.0.get(&p).copied().unwrap_or(end).min(end))
                .max(low);
            streams.push(Backwards {
                partition: p,
                low,
                unread_below: end,
                buffer: Vec::new(),
                cursor: end,
            });
        }
        let (mut found, mut scanned) = (Vec::new(), 0usize);
        while found.len() < limit && scanned < budget {
            for s in &mut streams {
                while s.buffer.is_empty() && s.unread_below > s.low {
                    let from = (s.unread_below - chunk as i64).max(s.low);
                    s.buffer = self.read_range(topic, s.partition, from, s.unread_below)?;
                    s.unread_below = from;
                }
            }
            let newest = streams
                .iter_mut()
                .filter(|s| !s.buffer.is_empty())
                .max_by_key(|s| {
                    let ts = s
                        .buffer
                        .last()
                        .and_then(|m| m.timestamp().to_millis())
                        .unwrap_or(i64::MIN);
                    (ts, s.partition)
                });
            let Some(s) = newest else {
                break;
            };
            let Some(m) = s.buffer.pop() else {
                break;
            };
            s.cursor = m.offset();
            scanned += 1;
            if filter.matches(&headers_of(&m)) {
                found.push(m);
            }
        }
        let more = streams
            .iter()
            .any(|s| !s.buffer.is_empty() || s.unread_below > s.low);
        let next = more.then(|| Cursor(streams.iter().map(|s| (s.partition, s.cursor)).collect()));
        Ok((found, next))
    }

    /// Every record of the topic for which `keep` holds, oldest first per partition (partition
    /// by partition), reading at most `budget` records.
    pub(crate) fn scan(
        &self,
        topic: &str,
        budget: usize,
        mut keep: impl FnMut(&OwnedMessage) -> bool,
    ) -> Result<(Vec<OwnedMessage>, bool), ReadError> {
        let (mut out, mut scanned) = (Vec::new(), 0usize);
        for p in self.partitions(topic)? {
            let (low, end) = self.watermarks(topic, p)?;
            let mut from = low;
            while from < end {
                if scanned >= budget {
                    return Ok((out, false));
                }
                let to = (from + CHUNK.1 as i64).min(end);
                for m in self.read_range(topic, p, from, to)? {
                    scanned += 1;
                    if keep(&m) {
                        out.push(m);
                    }
                }
                from = to;
            }
        }
        Ok((out, true))
    }
}
