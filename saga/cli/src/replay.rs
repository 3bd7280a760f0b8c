//! `choreo saga replay`: a new version of a saga definition run over the recorded inputs of
//! recent sagas, next to the version that runs now, so that a saga author sees which sagas
//! would end differently — and how — before deploying it.
//!
//! The inputs are read from Kafka, read_committed: the topics of every event either version
//! consumes and the coordinator group's commands topic, from `--since` ago to their ends as
//! they are when the replay starts. The pure part — the state machine over those inputs with a
//! virtual clock, and the comparison — is `choreo_saga::replay`.
//!
//! The baseline (the version that runs now) is `--baseline FILE`; else the same-named saga
//! among the definitions the coordinator's configuration (`--config`) names; else, for the
//! order saga, the reference definition `choreo run` runs when it names none.
//!
//! Exit codes: 0 no saga would end differently; 1 some would; 2 an error.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use choreo_bus::wire::codec::{Codec, WriterSchemaError};
use choreo_bus::wire::envelope::{Envelope, is_transaction_sweep};
use choreo_coordinator::command::CommandRecord;
use choreo_coordinator::config::Config;
use choreo_coordinator::coordinator::{defaults, derived_topic};
use choreo_saga::replay::{self, Recorded, Report};
use choreo_saga::{Definition, Definitions, Millis, parse_duration};
use choreo_schemas::{Catalog, ConfluentRegistry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// No saga would end differently.
pub const EXIT_SAME: u8 = 0;
/// Some sagas would end differently.
pub const EXIT_DIFFERENT: u8 = 1;
/// Bad arguments, an unreadable definition, Kafka or the registry unreachable.
pub const EXIT_ERROR: u8 = 2;

/// `choreo saga replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The new version of the definition (a TOML file).
    #[arg(long)]
    pub definition: PathBuf,
    /// The version that runs now [default: the same-named saga of the coordinator's
    /// configuration (--config), else the reference order saga].
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The coordinator's configuration file: brokers (with [kafka.client] settings), group,
    /// registry, catalog and the definitions it runs.
    #[arg(long, short, env = "CHOREO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers [default: the configuration's].
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// The schema registry's URL (Confluent REST) [default: the configuration's].
    #[arg(long)]
    pub registry: Option<String>,
    /// The coordinator group, whose commands topic holds operator commands [default: the
    /// configuration's, else choreo-coordinator].
    #[arg(long)]
    pub group: Option<String>,
    /// The catalog folder [default: the configuration's, else the reference catalog].
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// How far back to read, e.g. 30m, 1h, 2d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Replay only the N most recent sagas.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the replay, prints the report, and returns the exit code.
pub async fn run(args: ReplayArgs) -> u8 {
    match replay_and_report(&args).await {
        Ok((text, code)) => {
            println!("{}", text.trim_end());
            code
        }
        Err(e) => {
            eprintln!("choreo saga replay: {e:#}");
            EXIT_ERROR
        }
    }
}

/// Where the records come from, and what to run over them.
struct Setup {
    client: ClientConfig,
    registry: String,
    commands_topic: String,
    catalog: Catalog,
    baseline: Definition,
    candidate: Definition,
    timeout: Duration,
}

fn setup(args: &ReplayArgs) -> anyhow::Result<Setup> {
    let cfg = args
        .config
        .as_deref()
        .map(|p| Config::load(Some(p)))
        .transpose()?;
    let catalog = match args
        .catalog
        .clone()
        .or_else(|| cfg.as_ref().and_then(|c| c.coordinator.catalog.clone()))
    {
        Some(dir) => Catalog::load(&dir)?,
        None => Catalog::reference(),
    };
    let candidate = Definition::load(&args.definition, &catalog)?;
    let baseline = match (&args.baseline, &cfg) {
        (Some(file), _) => Definition::load(file, &catalog)?,
        (None, Some(cfg)) if !cfg.coordinator.definitions.is_empty() => {
            let mut all = Definitions::new();
            for p in &cfg.coordinator.definitions {
                let found = if p.is_dir() {
                    Definitions::load_dir(p, &catalog)?
                        .iter()
                        .map(|d| d.as_ref().clone())
                        .collect()
                } else {
                    vec![Definition::load(p, &catalog)?]
                };
                for d in found {
                    all.insert(d)?;
                }
            }
            all.latest(candidate.name())
                .map(|d| d.as_ref().clone())
                .with_context(|| {
                    format!(
                        "the configuration's coordinator.definitions have no saga named {}: pass --baseline <file>",
                        candidate.name()
                    )
                })?
        }
        (None, _) if candidate.name() == "order" => Definition::reference_order_saga(&catalog)?,
        (None, _) => bail!(
            "no baseline for saga {}: pass --baseline <the file the coordinator runs> (or --config <its configuration>)",
            candidate.name()
        ),
    };
    if baseline.name() != candidate.name() {
        bail!(
            "the baseline is saga {}, the new definition saga {}: replay compares two versions of one saga",
            baseline.name(),
            candidate.name()
        );
    }
    let mut kafka = match &cfg {
        Some(c) => c.kafka.bus_config("/choreo/replay"),
        None => choreo_bus::BusConfig::new(""),
    };
    if let Some(b) = &args.bootstrap_servers {
        kafka.bootstrap_servers.clone_from(b);
    }
    if kafka.bootstrap_servers.trim().is_empty() {
        bail!("no brokers: pass --bootstrap-servers (or --config)");
    }
    let registry = args
        .registry
        .clone()
        .or_else(|| cfg.as_ref().and_then(|c| c.registry.url.clone()))
        .or_else(|| {
            cfg.as_ref()
                .and_then(|c| c.registry.listen)
                .map(|a| format!("http://{a}"))
        })
        .context("no schema registry: pass --registry <url> (or --config)")?;
    let group = args
        .group
        .clone()
        .or_else(|| cfg.as_ref().map(|c| c.kafka.group_id.clone()))
        .unwrap_or_else(|| defaults::GROUP_ID.to_owned());
    let commands_topic = cfg
        .as_ref()
        .and_then(|c| c.coordinator.commands_topic.clone())
        .filter(|_| args.group.is_none())
        .unwrap_or_else(|| derived_topic(&group, defaults::COMMANDS_SUFFIX));
    let timeout = cfg
        .as_ref()
        .map_or(defaults::KAFKA_TIMEOUT, |c| c.coordinator.kafka_timeout);
    Ok(Setup {
        client: kafka.consumer_config(),
        registry,
        commands_topic,
        catalog,
        baseline,
        candidate,
        timeout,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What was read.
struct Read {
    records: Vec<Recorded>,
    read: usize,
    undecodable: usize,
}

async fn replay_and_report(args: &ReplayArgs) -> anyhow::Result<(String, u8)> {
    let since = parse_duration(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let s = setup(args)?;
    let until = now_ms();
    let from = until.saturating_sub(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    let mut topics: BTreeSet<String> = BTreeSet::new();
    for d in [&s.baseline, &s.candidate] {
        for t in d.consumed_events() {
            let info = s
                .catalog
                .event(t)
                .with_context(|| format!("event type {t} is not in the catalog"))?;
            topics.insert(info.topic.clone());
        }
    }
    let read = read_records(&s, &topics, from).await?;
    let report = replay::compare(
        &s.baseline,
        &s.candidate,
        &read.records,
        Millis(until),
        args.limit,
    );
    let code = if report.differences.is_empty() {
        EXIT_SAME
    } else {
        EXIT_DIFFERENT
    };
    if args.json {
        let out = serde_json::json!({
            "saga": s.candidate.name(),
            "baseline_version": s.baseline.version(),
            "new_version": s.candidate.version(),
            "from_ms": from,
            "until_ms": until,
            "records_read": read.read,
            "records_undecodable": read.undecodable,
            "report": report,
        });
        return Ok((serde_json::to_string_pretty(&out)?, code));
    }
    Ok((render(&s, &report, &read, from, until), code))
}

/// Reads every partition of `topics` and of the commands topic from `from_ms` to its end as
/// it is now, and decodes what either definition consumes.
async fn read_records(s: &Setup, topics: &BTreeSet<String>, from_ms: u64) -> anyhow::Result<Read> {
    let mut all = topics.clone();
    all.insert(s.commands_topic.clone());
    let (client, timeout) = (s.client.clone(), s.timeout);
    let messages = tokio::task::spawn_blocking(move || read_raw(&client, &all, from_ms, timeout))
        .await
        .context("reader task")??;
    let codec = Codec::new(Arc::new(ConfluentRegistry::new(&s.registry)));
    let wanted = |t: &str| s.baseline.role_of(t).is_some() || s.candidate.role_of(t).is_some();
    let mut out = Read {
        records: Vec::new(),
        read: messages.len(),
        undecodable: 0,
    };
    for m in &messages {
        if is_transaction_sweep(m.headers()) {
            continue;
        }
        let at = Millis(
            m.timestamp()
                .to_millis()
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(from_ms),
        );
        if m.topic() == s.commands_topic {
            match m.payload().map(serde_json::from_slice::<CommandRecord>) {
                Some(Ok(c)) => out.records.push(Recorded::Command {
                    at,
                    definition: c.definition,
                    correlation_id: c.correlation_id,
                    command: c.command,
                }),
                _ => out.undecodable += 1,
            }
            continue;
        }
        let Some(value) = m.payload() else {
            continue;
        };
        match codec
            .decode_json(value, &s.catalog, |t| wanted(t).then_some(()))
            .await
        {
            Ok(Some((event, ()))) => {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let envelope = Envelope::from_headers(m.headers(), key.as_deref());
                let id = if envelope.id.is_empty() {
                    format!("{}/{}/{}", m.topic(), m.partition(), m.offset())
                } else {
                    envelope.id
                };
                out.records.push(Recorded::Event {
                    at,
                    key,
                    id,
                    event_type: event.event_type,
                    data: event.data,
                });
            }
            Ok(None) => {}
            Err(WriterSchemaError::Poison(_)) => out.undecodable += 1,
            Err(WriterSchemaError::Unavailable(e)) => {
                bail!(
                    "the schema registry at {} could not be asked: {e}",
                    s.registry
                )
            }
        }
    }
    Ok(out)
}

/// The records of `topics` from `from_ms` (by timestamp) to each partition's end as it is now.
fn read_raw(
    client: &ClientConfig,
    topics: &BTreeSet<String>,
    from_ms: u64,
    timeout: Duration,
) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "choreo-replay")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a Kafka consumer")?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .context("fetching the cluster's topics")?;
    let mut by_time = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| topics.contains(t.name())) {
        for p in t.partitions() {
            by_time
                .add_partition_offset(
                    t.name(),
                    p.id(),
                    Offset::Offset(i64::try_from(from_ms).unwrap_or(i64::MAX)),
                )
                .context("partition list")?;
        }
    }
    let starts = consumer
        .offsets_for_times(by_time, timeout)
        .context("finding the offsets of --since")?;
    let mut out = Vec::new();
    for e in starts.elements() {
        let (topic, p) = (e.topic().to_owned(), e.partition());
        let (_, end) = consumer
            .fetch_watermarks(&topic, p, timeout)
            .with_context(|| format!("the end of {topic}/{p}"))?;
        let start = match e.offset() {
            Offset::Offset(o) => o,
            _ => continue,
        };
        if start >= end {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Offset(start))
            .context("assigning")?;
        consumer.assign(&tpl).context("assigning")?;
        let mut last = std::time::Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last = std::time::Instant::now();
                    if m.offset() >= end {
                        break;
                    }
                    let done = m.offset() + 1 >= end;
                    out.push(m.detach());
                    if done {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}/{p}")),
                None => {}
            }
            if last.elapsed() > timeout {
                bail!("reading {topic}/{p}: nothing arrived for {timeout:?}");
            }
        }
    }
    let _ = consumer.unassign();
    Ok(out)
}

/// The text report.
fn render(s: &Setup, r: &Report, read: &Read, from: u64, until: u64) -> String {
    use crate::client::format_time;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replayed {} saga(s) of {} (v{} now, v{} new) recorded {} .. {}: {} would end differently ({} with another status)",
        r.replayed,
        s.candidate.name(),
        s.baseline.version(),
        s.candidate.version(),
        format_time(from),
        format_time(until),
        r.differences.len(),
        r.status_changes()
    );
    let status = |o: &replay::Outcome| {
        o.status
            .map_or_else(|| "not started".to_owned(), |s| s.to_string())
    };
    for d in &r.differences {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}/{}  {} -> {}{}",
            s.candidate.name(),
            crate::client::dlq::escaped(&d.correlation_id),
            status(&d.old),
            status(&d.new),
            d.new
                .reason
                .as_deref()
                .filter(|_| d.status_changed())
                .map(|r| format!("  ({})", crate::client::dlq::escaped(r)))
                .unwrap_or_default()
        );
        for c in &d.added {
            let times = if c.count > 1 {
                format!(" ×{}", c.count)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  + {}{times}", c.event);
        }
        for c in &d.removed {
            let times = if c.count > 1 {
                format!(" ×{}", c.count)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  - {}{times}", c.event);
        }
    }
    if r.without_start > 0 || read.undecodable > 0 {
        out.push('\n');
    }
    if r.without_start > 0 {
        let _ = writeln!(
            out,
            "{} correlation id(s) had no start event in the window (started earlier): not replayed; widen --since",
            r.without_start
        );
    }
    if read.undecodable > 0 {
        let _ = writeln!(
            out,
            "{} record(s) could not be decoded and were left out (see choreo dlq)",
            read.undecodable
        );
    }
    out
}
