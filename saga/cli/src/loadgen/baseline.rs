//! The baseline: the same records through a plain consume → produce pipe with no saga logic,
//! one transaction per batch (or an idempotent producer and offsets committed after the
//! deliveries), on the same broker in the same run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::wire::envelope::{Envelope, now_rfc3339};
use choreo_bus::{Bus, BusConfig, TraceParent};
use choreo_schemas::Event;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::plan::{Figures, LoadgenArgs, Setup, create_topics, drive, figures, saga_inputs};
use super::watcher::{Decision, Progress, await_watcher, watch, watch_consumer};
use choreo_coordinator::topics::TopicSpec;

/// One encoded input of the baseline.
pub(super) struct RawInput {
    topic: usize,
    event_type: &'static str,
    value: Vec<u8>,
}

pub(super) async fn encode<T: Event>(
    bus: &Bus,
    topic: usize,
    event: &T,
) -> anyhow::Result<RawInput> {
    Ok(RawInput {
        topic,
        event_type: T::TYPE,
        value: bus.codec().encode(T::TOPIC, event).await?,
    })
}

pub(super) async fn send_raw(
    bus: &Bus,
    topics: &[String],
    key: &str,
    input: &RawInput,
) -> anyhow::Result<Instant> {
    let envelope = Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        source: bus.config().source.clone(),
        event_type: input.event_type.to_owned(),
        time: now_rfc3339(),
        correlation_id: key.to_owned(),
        causation_id: None,
        traceparent: Some(TraceParent::new_root()),
    };
    let topic = &topics[input.topic];
    bus.send_raw(topic, Some(key), &input.value, envelope.to_headers())
        .await
        .with_context(|| format!("publishing to {topic} for {key}"))?;
    Ok(Instant::now())
}

pub(super) async fn baseline_phase(setup: &Setup, args: &LoadgenArgs) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + setup.timeout;
    let n = args.sagas;
    let base = format!("choreo.loadgen-{}.baseline", setup.run);
    let inputs: Vec<String> = ["orders", "payments", "inventory", "shipping"]
        .iter()
        .map(|t| format!("{base}.{t}"))
        .collect();
    let output = format!("{base}.out");
    let specs: Vec<TopicSpec> = inputs
        .iter()
        .chain(std::iter::once(&output))
        .map(|name| TopicSpec {
            name: name.clone(),
            partitions: args.partitions,
            compacted: false,
        })
        .collect();
    let client = setup.client();
    create_topics(setup.embedded.as_ref(), &client, &specs, setup.timeout).await?;

    // The same encoded values as the coordinator phase, in the same pattern.
    let bus = &setup.bus;
    let mut records: Vec<(String, [RawInput; 4])> = Vec::with_capacity(n);
    for i in 0..n {
        let s = saga_inputs(&setup.run, i);
        let key = s.placed.order_id.clone();
        records.push((
            key,
            [
                encode(bus, 0, &s.placed).await?,
                encode(bus, 1, &s.payment).await?,
                encode(bus, 2, &s.inventory).await?,
                encode(bus, 3, &s.shipment).await?,
            ],
        ));
    }

    let transactional = args.guarantee.transactional();
    let pipe_group = format!("choreo-loadgen-{}-pipe", setup.run);
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", &pipe_group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .context("creating the pipe's consumer")?;
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .context("subscribing the pipe's consumer")?;
    let producer: FutureProducer = {
        let mut c = BusConfig::new(&setup.bootstrap).client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000");
        if transactional {
            c.set("transactional.id", format!("{pipe_group}-0"))
                .set("transaction.timeout.ms", "60000");
        }
        c.create().context("creating the pipe's producer")?
    };
    if transactional {
        let (p, t) = (producer.clone(), setup.timeout);
        tokio::task::spawn_blocking(move || p.init_transactions(Timeout::After(t)))
            .await
            .context("init_transactions task")?
            .context("the broker refused transactions (try --guarantee effectively_once)")?;
    }
    let watch_c = watch_consumer(
        &client,
        &format!("choreo-loadgen-{}-watch-baseline", setup.run),
        &output,
        args.partitions,
        setup.timeout,
    )?;

    let cancel = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut pipe = tokio::spawn(run_pipe(Pipe {
        consumer,
        producer,
        output,
        transactional,
        await_before_commit: !args.baseline_commit_in_flight,
        linger: Duration::from_millis(args.batch_linger_ms),
        timeout: Duration::from_secs(30),
        ready: Arc::clone(&ready),
        cancel: cancel.clone(),
    }));
    while !ready.load(Ordering::Acquire) {
        if pipe.is_finished() {
            let r = (&mut pipe).await;
            bail!("the baseline pipe stopped during start-up: {r:?}");
        }
        if Instant::now() > deadline {
            cancel.cancel();
            bail!("the baseline pipe did not join its group in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let progress = Arc::new(Progress::default());
    let mut watcher = tokio::spawn(watch(
        watch_c,
        setup.prefix(),
        n,
        Decision::Count(4),
        Arc::clone(&progress),
    ));
    let topics = &inputs;
    let published = drive(n, args.concurrency, args.rate, |i| {
        let (key, r) = &records[i];
        async move {
            send_raw(bus, topics, key, &r[0]).await?;
            let (a, b, c) = tokio::try_join!(
                send_raw(bus, topics, key, &r[1]),
                send_raw(bus, topics, key, &r[2]),
                send_raw(bus, topics, key, &r[3]),
            )?;
            Ok(a.max(b).max(c))
        }
    })
    .await;
    let (started, acks) = match published {
        Ok(x) => x,
        Err(e) => {
            watcher.abort();
            cancel.cancel();
            return Err(e);
        }
    };
    let seen = await_watcher(
        &mut watcher,
        &progress,
        n,
        deadline,
        "baseline phase",
        || {
            if pipe.is_finished() {
                bail!("the baseline pipe stopped");
            }
            Ok(())
        },
    )
    .await;
    cancel.cancel();
    let stopped = pipe.await.context("the baseline pipe task")?;
    let seen = seen?;
    stopped.context("the baseline pipe")?;
    Ok(figures(started, &acks, &seen, 4 * n))
}

/// The baseline: consume → produce, one output record per input, no saga logic.
pub(super) struct Pipe {
    consumer: StreamConsumer,
    producer: FutureProducer,
    output: String,
    transactional: bool,
    await_before_commit: bool,
    linger: Duration,
    timeout: Duration,
    ready: Arc<AtomicBool>,
    cancel: CancellationToken,
}

pub(super) const BATCH_MAX_RECORDS: usize = 500;

impl Pipe {
    /// Up to `BATCH_MAX_RECORDS`: waits up to 100 ms for the first, then lingers for more
    /// (`--batch-linger-ms`, as the coordinator).
    async fn collect(&self) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let first = tokio::select! {
            () = self.cancel.cancelled() => return batch,
            r = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()) => r,
        };
        match first {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "baseline pipe consumer");
                return batch;
            }
            Err(_) => return batch,
        }
        let until = tokio::time::Instant::now() + self.linger;
        while batch.len() < BATCH_MAX_RECORDS {
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "baseline pipe consumer");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    async fn process(&self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        if self.transactional {
            self.producer
                .begin_transaction()
                .context("begin_transaction")?;
        }
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let mut rec = FutureRecord::<[u8], [u8]>::to(&self.output);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(v) = m.payload() {
                rec = rec.payload(v);
            }
            if let Some(h) = m.headers() {
                rec = rec.headers(h.clone());
            }
            let f = self
                .producer
                .send_result(rec)
                .map_err(|(e, _)| e)
                .context("enqueueing an output record")?;
            deliveries.push(f);
            next.insert((m.topic(), m.partition()), m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), offset) in &next {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))
                .context("offset list")?;
        }
        let timeout = Timeout::After(self.timeout);
        if self.transactional {
            if self.await_before_commit {
                await_deliveries(deliveries).await?;
                // The delivery reports are consumed; wait (briefly) until librdkafka has
                // released them too, so that the flush in `commit_transaction` finds nothing.
                for _ in 0..200 {
                    if self.producer.in_flight_count() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
            }
            let cgm = self
                .consumer
                .group_metadata()
                .context("no consumer group metadata")?;
            tokio::task::block_in_place(|| {
                self.producer
                    .send_offsets_to_transaction(&tpl, &cgm, timeout)
            })
            .context("send_offsets_to_transaction")?;
            tokio::task::block_in_place(|| self.producer.commit_transaction(timeout))
                .context("commit_transaction")?;
        } else {
            await_deliveries(deliveries).await?;
            tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync))
                .context("committing offsets")?;
        }
        Ok(())
    }
}

pub(super) async fn await_deliveries(deliveries: Vec<DeliveryFuture>) -> anyhow::Result<()> {
    for d in futures::future::join_all(deliveries).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e).context("delivering an output record"),
            Err(_) => bail!("an output delivery was cancelled"),
        }
    }
    Ok(())
}

pub(super) async fn run_pipe(pipe: Pipe) -> anyhow::Result<()> {
    while !pipe.cancel.is_cancelled() {
        if !pipe.ready.load(Ordering::Relaxed)
            && pipe.consumer.assignment().is_ok_and(|a| a.count() > 0)
        {
            pipe.ready.store(true, Ordering::Release);
        }
        let batch = pipe.collect().await;
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = pipe.process(&batch).await {
            if pipe.transactional {
                let _ = tokio::task::block_in_place(|| {
                    pipe.producer
                        .abort_transaction(Timeout::After(pipe.timeout))
                });
            }
            return Err(e);
        }
    }
    Ok(())
}
