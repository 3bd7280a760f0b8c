//! `choreo soak`: the order saga for a long while against a real Kafka, with a steady stream of
//! garbage on the saga topics, the schema registry killed and restarted, and the coordinator
//! killed (SIGKILL) and restarted — printing, every minute, orders placed, sagas finished, dead
//! letters and resident memory; at the end it lets the running sagas finish and checks that
//! nothing was lost: every order placed has a saga that ended (its outcome event seen once, or
//! waiting for an operator), and every garbage record was dead-lettered by the coordinator
//! exactly once. The coordinator forgets finished sagas after two minutes, as it would in
//! production after `coordinator.completed_retention`, so its memory can level off. Bounded in time (`--minutes`) and, if asked,
//! in orders (`--max-orders`). Exit code 0 when every check holds, 1 otherwise.
//!
//! The registry (`choreo registry`) and the coordinator (`choreo run`) are child processes of
//! this one (the same binary); the demo services, the order generator and the garbage producer
//! run in this process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::wire::headers::Readable as _;
use choreo_bus::{Bus, BusConfig};
use choreo_coordinator::QuietEof;
use choreo_schemas::ConfluentRegistry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::demo::{Demo, DemoOptions};
use crate::memory::status_figure;

mod outcomes;

use outcomes::{OUTCOMES, Outcomes};

/// `choreo soak`'s knobs.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// A Kafka of its own for the soak (its saga topics must be empty or absent: every saga on
    /// them is counted), e.g. `integration-tests/brokers/kafka.sh --port 19092 --data /tmp/soak`.
    #[arg(long)]
    pub bootstrap_servers: String,
    /// How long orders are placed, in minutes (then the running sagas are let finish).
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Orders placed per second.
    #[arg(long, default_value_t = 5.0)]
    pub orders_per_second: f64,
    /// Stop placing orders after this many.
    #[arg(long)]
    pub max_orders: Option<u64>,
    /// Garbage records sent to the orders topic per second (cycling through kinds of bad input).
    #[arg(long, default_value_t = 2.0)]
    pub garbage_per_second: f64,
    /// Kill and restart the schema registry this often, in minutes (0: never).
    #[arg(long, default_value_t = 7)]
    pub registry_restart_minutes: u64,
    /// Kill (SIGKILL) and restart the coordinator this often, in minutes (0: never).
    #[arg(long, default_value_t = 5)]
    pub coordinator_restart_minutes: u64,
    /// How long, at the end, the running sagas may take to finish, in seconds.
    #[arg(long, default_value_t = 600)]
    pub drain_secs: u64,
    /// Where the children's logs go (default: a new folder under the system's temp dir).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The log level of the registry and the coordinator (`log.level`: an EnvFilter directive,
    /// e.g. `debug` or `warn,choreo_coordinator=debug`).
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

/// A child `choreo` process, restartable.
struct Proc {
    name: &'static str,
    args: Vec<&'static str>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(std::env::current_exe().context("the choreo binary")?)
            .args(&self.args)
            .env_remove("CHOREO_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// A KiB figure of its `/proc/<pid>/status`, while it runs.
    fn status_kib(&self, field: &str) -> Option<u64> {
        status_figure(self.child.as_ref()?.id()?, field)
    }

    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Its anonymous resident memory (RssAnon), in KiB: what it allocated, without the pages of
    /// its binary and libraries that the kernel maps in as more of the code runs.
    fn anon_kib(&self) -> Option<u64> {
        self.status_kib("RssAnon:")
    }

    /// The peak of its resident memory in this life so far (VmHWM), in KiB.
    fn peak_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }
}

/// VmRSS of `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    status_figure(pid, "VmRSS:")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_http(url: &str, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Saga counts per status, from the coordinator's API.
async fn counts(api: &str) -> Option<BTreeMap<String, u64>> {
    let r = reqwest::get(format!("{api}/api/sagas?limit=1"))
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    Some(
        v.get("counts")?
            .as_object()?
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect(),
    )
}

const UNFINISHED: [&str; 3] = ["pending", "running", "compensating"];

/// Records in `topic`'s partitions (high − low watermarks), summed.
fn records_in(bootstrap: &str, topic: &str) -> u64 {
    let Ok(c) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<BaseConsumer>()
    else {
        return 0;
    };
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    (0..partitions)
        .filter_map(|p| {
            let p = i32::try_from(p).ok()?;
            c.fetch_watermarks(topic, p, Duration::from_secs(5)).ok()
        })
        .map(|(lo, hi)| u64::try_from(hi - lo).unwrap_or(0))
        .sum()
}

/// The dead letters of `topic` written by coordinator group `group`, counted by their source
/// offset (a dead letter written twice for one record would count once here and show in
/// `letters`).
fn dead_letters_of(bootstrap: &str, topic: &str, group: &str) -> (u64, u64) {
    let Ok(c) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("soak-reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // The end of a partition is how the read stops, not an error to log.
        .create_with_context::<_, BaseConsumer<QuietEof>>(QuietEof)
    else {
        return (0, 0);
    };
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, 0, Offset::Beginning)
        .is_err()
        || c.assign(&tpl).is_err()
    {
        return (0, 0);
    }
    let mut sources = std::collections::HashSet::new();
    let mut letters = 0;
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet = Instant::now();
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.readable()
                            .into_iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                if header("choreo_dlq_group").as_deref() == Some(group) {
                    letters += 1;
                    sources.insert((header("choreo_dlq_partition"), header("choreo_dlq_offset")));
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    (sources.len() as u64, letters)
}

/// One kind of bad record, by turn.
fn garbage(n: u64) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let key = Some(format!("garbage-{n}").into_bytes());
    match n % 6 {
        0 => (key, Some(vec![7, 1, 2, 3])), // wrong magic byte
        1 => (key, Some(vec![0, 0x7f, 0xff, 0xff, 0x01, 2, 4])), // unknown schema id
        2 => (key, Some(vec![0])),          // truncated framing
        3 => (key, None),                   // no value
        4 => (Some(vec![0xff, 0xfe, b'x']), Some(vec![7, 7, 7])), // key not UTF-8
        _ => (
            key,
            Some((0..64u8).map(|i| i.wrapping_mul(37) | 1).collect()),
        ), // random bytes
    }
}

/// Runs the soak; answers the process exit code.
pub async fn run(args: SoakArgs) -> anyhow::Result<u8> {
    let bootstrap = args.bootstrap_servers.clone();
    let existing: u64 = ["orders", "payments", "inventory", "shipping"]
        .iter()
        .map(|t| records_in(&bootstrap, t))
        .sum();
    if existing > 0 {
        bail!(
            "the saga topics on {bootstrap} hold {existing} records already; the soak counts every saga, so it needs a Kafka of its own (e.g. integration-tests/brokers/kafka.sh --port 19092 --data /tmp/soak-kafka)"
        );
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("choreo-soak-{id}")),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let group = format!("soak-{id}");
    let (registry_port, api_port) = (free_port()?, free_port()?);
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    let api = format!("http://127.0.0.1:{api_port}");
    let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = vec![
            (
                "CHOREO__KAFKA__BOOTSTRAP_SERVERS".to_owned(),
                bootstrap.clone(),
            ),
            ("CHOREO__LOG__LEVEL".to_owned(), args.log_level.clone()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let mut registry = Proc {
        name: "schema registry",
        args: vec!["registry"],
        env: common(&[
            (
                "CHOREO__REGISTRY__LISTEN",
                format!("127.0.0.1:{registry_port}"),
            ),
            (
                "CHOREO__REGISTRY__TOPIC",
                format!("_choreo_schemas_{group}"),
            ),
        ]),
        log: dir.join("registry.log"),
        child: None,
    };
    let mut coordinator = Proc {
        name: "coordinator",
        args: vec!["run"],
        env: common(&[
            ("CHOREO__KAFKA__GROUP_ID", group.clone()),
            ("CHOREO__REGISTRY__URL", registry_url.clone()),
            ("CHOREO__HTTP__LISTEN", format!("127.0.0.1:{api_port}")),
            ("CHOREO__HTTP__TRUSTED_NETWORK", "true".into()),
            ("CHOREO__COORDINATOR__INSTANCE_ID", "soak-0".into()),
            // Finished sagas are forgotten soon, as in production after the retention; the
            // soak counts them from their outcome events.
            ("CHOREO__COORDINATOR__COMPLETED_RETENTION", "2m".into()),
        ]),
        log: dir.join("coordinator.log"),
        child: None,
    };
    registry.start()?;
    wait_http(
        &format!("{registry_url}/subjects"),
        Duration::from_secs(120),
    )
    .await?;
    coordinator.start()?;
    wait_http(&format!("{api}/readyz"), Duration::from_secs(180)).await?;
    let catalog = choreo_schemas::Catalog::reference();
    let mut outcome_topics: Vec<&str> = OUTCOMES
        .iter()
        .filter_map(|o| catalog.event(o).map(|e| e.topic.as_str()))
        .collect();
    outcome_topics.dedup();
    let outcomes = Outcomes::start(&bootstrap, &outcome_topics)?;
    println!(
        "choreo soak: {} minutes on {bootstrap}, {} orders/s, {} garbage records/s, registry restarted every {} min, coordinator killed every {} min; logs in {}",
        args.minutes,
        args.orders_per_second,
        args.garbage_per_second,
        args.registry_restart_minutes,
        args.coordinator_restart_minutes,
        dir.display()
    );

    let bus = Bus::new(
        BusConfig::new(&bootstrap).with_source("/choreo/soak"),
        Arc::new(ConfluentRegistry::new(&registry_url)),
    )?;
    let stop_orders = CancellationToken::new();
    let demo = Demo::start(
        &bus,
        DemoOptions {
            orders_per_second: args.orders_per_second,
            max_orders: args.max_orders,
            shutdown: stop_orders.clone(),
            ..DemoOptions::default()
        },
    )
    .await?;
    let sent = Arc::new(AtomicU64::new(0));
    let garbage_task = {
        let (sent, stop, rate, bootstrap) = (
            Arc::clone(&sent),
            stop_orders.clone(),
            args.garbage_per_second,
            bootstrap.clone(),
        );
        tokio::spawn(async move {
            if rate <= 0.0 {
                return;
            }
            let Ok(producer) = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("partitioner", "murmur2_random")
                .create::<FutureProducer>()
            else {
                return;
            };
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let n = sent.load(Ordering::SeqCst);
                let (key, value) = garbage(n);
                let mut rec = FutureRecord::<[u8], [u8]>::to("orders");
                if let Some(k) = &key {
                    rec = rec.key(k.as_slice());
                }
                if let Some(v) = &value {
                    rec = rec.payload(v.as_slice());
                }
                if producer.send(rec, Duration::from_secs(30)).await.is_ok() {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    let started = Instant::now();
    let own_pid = std::process::id();
    let mut minute = tokio::time::interval(Duration::from_secs(60));
    minute.tick().await;
    let (mut last_registry, mut last_coordinator) = (Instant::now(), Instant::now());
    println!(
        "minute  placed  finished  running  dead-letters  garbage  rss-coordinator  anon-coordinator  peak-coordinator  rss-registry  rss-soak  restarts"
    );
    let mut restarts = String::new();
    let mut rss_soak = Vec::new();
    // The coordinator's resident memory just before each kill: the end of a life, past its
    // start-up (restore and the catch-up after the previous kill).
    let mut rss_coordinator_lives = Vec::new();
    let mut anon_coordinator_lives = Vec::new();
    // The peak of each life (VmHWM): its start-up included.
    let mut peak_coordinator_lives = Vec::new();
    for m in 1..=args.minutes {
        minute.tick().await;
        if args.registry_restart_minutes > 0
            && last_registry.elapsed() >= Duration::from_secs(60 * args.registry_restart_minutes)
        {
            registry.kill().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            registry.start()?;
            last_registry = Instant::now();
            restarts.push_str(" registry");
        }
        if args.coordinator_restart_minutes > 0
            && last_coordinator.elapsed()
                >= Duration::from_secs(60 * args.coordinator_restart_minutes)
        {
            rss_coordinator_lives.extend(coordinator.rss_kib());
            anon_coordinator_lives.extend(coordinator.anon_kib());
            peak_coordinator_lives.extend(coordinator.peak_kib());
            coordinator.kill().await;
            coordinator.start()?;
            last_coordinator = Instant::now();
            restarts.push_str(" coordinator(SIGKILL)");
        }
        let c = counts(&api).await.unwrap_or_default();
        let finished = outcomes.counts().0 + c.get("needs_operator").copied().unwrap_or(0);
        let running: u64 = UNFINISHED
            .iter()
            .map(|s| c.get(*s).copied().unwrap_or(0))
            .sum();
        let soak_rss = rss_kib(own_pid).unwrap_or(0);
        rss_soak.push(soak_rss);
        println!(
            "{m:>6}  {:>6}  {finished:>8}  {running:>7}  {:>12}  {:>7}  {:>12} KiB  {:>13} KiB  {:>13} KiB  {:>9} KiB  {soak_rss:>5} KiB {restarts}",
            demo.orders_placed(),
            records_in(&bootstrap, "orders.dlq"),
            sent.load(Ordering::SeqCst),
            coordinator.rss_kib().unwrap_or(0),
            coordinator.anon_kib().unwrap_or(0),
            coordinator.peak_kib().unwrap_or(0),
            registry.rss_kib().unwrap_or(0),
        );
        restarts.clear();
        if started.elapsed() > Duration::from_secs(60 * (args.minutes + 1)) {
            break;
        }
    }

    // Stop placing orders and garbage; let the running sagas finish.
    stop_orders.cancel();
    let _ = garbage_task.await;
    let placed = demo.orders_placed();
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    let mut last = BTreeMap::new();
    loop {
        if let Some(c) = counts(&api).await {
            let running: u64 = UNFINISHED
                .iter()
                .map(|s| c.get(*s).copied().unwrap_or(0))
                .sum();
            last = c;
            if running == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    demo.shutdown().await;
    let garbage_sent = sent.load(Ordering::SeqCst);
    let (dead_sources, dead_letters) = dead_letters_of(&bootstrap, "orders.dlq", &group);
    coordinator.kill().await;
    registry.kill().await;

    let needs_operator = last.get("needs_operator").copied().unwrap_or(0);
    let (outcome_orders, repeated) = outcomes.counts();
    drop(outcomes);
    let ended = outcome_orders + needs_operator;
    let unfinished: u64 = UNFINISHED
        .iter()
        .map(|s| last.get(*s).copied().unwrap_or(0))
        .sum();
    println!("orders placed {placed}; sagas {last:?}");
    println!(
        "garbage sent {garbage_sent}; dead-lettered by the coordinator: {dead_letters} letters for {dead_sources} records"
    );
    if let (Some(first), Some(end)) = (
        rss_soak.get(rss_soak.len().min(5).saturating_sub(1)),
        rss_soak.last(),
    ) {
        println!(
            "soak process RSS: {first} KiB at minute {} → {end} KiB at the end",
            rss_soak.len().min(5)
        );
    }
    let mib = |kib: &[u64]| {
        kib.iter()
            .map(|k| format!("{} MiB", k / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !rss_coordinator_lives.is_empty() {
        println!(
            "coordinator RSS at the end of each life (before its SIGKILL): {}",
            mib(&rss_coordinator_lives)
        );
        println!(
            "coordinator anonymous RSS at the end of each life (RssAnon): {}",
            mib(&anon_coordinator_lives)
        );
        println!(
            "coordinator peak RSS of each life (VmHWM, start-up included): {}",
            mib(&peak_coordinator_lives)
        );
    }
    let mut ok = true;
    let mut check = |holds: bool, what: String| {
        println!("{} {what}", if holds { "ok  " } else { "FAIL" });
        ok &= holds;
    };
    check(
        ended == placed && unfinished == 0,
        format!(
            "every order placed has a saga that ended ({ended} of {placed}: {outcome_orders} with their outcome event, {needs_operator} waiting for an operator; {unfinished} unfinished)"
        ),
    );
    check(
        repeated == 0,
        format!(
            "each ended order's outcome event was written once ({repeated} orders with more than one)"
        ),
    );
    check(
        dead_sources == garbage_sent && dead_letters == garbage_sent,
        format!(
            "every garbage record dead-lettered once by the coordinator ({dead_letters} letters, {dead_sources} records, {garbage_sent} sent)"
        ),
    );
    write_summary(&dir, ok)?;
    Ok(u8::from(!ok))
}

fn write_summary(dir: &Path, ok: bool) -> anyhow::Result<()> {
    std::fs::write(dir.join("result"), if ok { "ok\n" } else { "failed\n" })
        .with_context(|| format!("writing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_cycles_through_every_kind_of_bad_record() {
        let kinds: std::collections::HashSet<_> = (0..12)
            .map(|n| {
                let (k, v) = garbage(n);
                (
                    k.as_deref().map(|k| std::str::from_utf8(k).is_ok()),
                    v.as_ref().map(|v| (v.first().copied(), v.len() > 1)),
                )
            })
            .collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        for n in 0..12 {
            let (_, v) = garbage(n);
            assert!(
                v.is_none_or(|v| v.first() != Some(&0)
                    || v.len() < 5
                    || v[1..5] == [0x7f, 0xff, 0xff, 0x01]),
                "no garbage record is a valid framing of a known schema"
            );
        }
    }
}
