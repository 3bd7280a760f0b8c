//! What the dead-letter tests stand on: a topic of their own with its `.dlq`, a bus subscriber
//! that dead-letters some records (a handler that fails until it is fixed, a schema the
//! registry does not have yet, a value that is not Avro), and the operator API serving those
//! dead letters with an operator's and a viewer's token.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use choreo_bus::wire::envelope::Envelope;
use choreo_bus::wire::framing::frame;
use choreo_bus::{Bus, BusConfig, HandlerError, PublishOptions, Subscription};
use choreo_coordinator::api_auth::{ApiAuth, ApiToken, Role};
use choreo_coordinator::dlq::{DeadLetterDesk, DeskOptions};
use choreo_coordinator::http::{self, ApiState, CommandSink};
use choreo_coordinator::view::SagaView;
use choreo_schemas::event::{Money, PaymentAuthorized};
use choreo_schemas::{Event, MemoryRegistry, SchemaRegistry, schema_id_of};
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The operator's token (name `alice`).
pub const OPERATOR_TOKEN: &str = "alice-operator-token-0123456789";
/// The viewer's token (name `victor`).
pub const VIEWER_TOKEN: &str = "victor-viewer-token-0123456789";

/// How long a test waits for something that should happen (a liveness bound).
pub const PATIENCE: Duration = Duration::from_secs(90);

/// A payment of `order`.
pub fn payment(order: &str) -> PaymentAuthorized {
    PaymentAuthorized {
        order_id: order.into(),
        payment_id: format!("pay-{order}"),
        amount: Money {
            amount_minor: 4200,
            currency: "EUR".into(),
        },
    }
}

/// The operator API serving dead letters, on a free port.
#[derive(Debug)]
pub struct ServedApi {
    /// Its base URL.
    pub url: String,
    /// Its dead-letter desk.
    pub desk: Arc<DeadLetterDesk>,
    /// Its coordinator group (the redrive log is named after it).
    pub group: String,
    stop: CancellationToken,
}

impl Drop for ServedApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Commands are not what these tests are about: refused.
struct NoCommands;

impl CommandSink for NoCommands {
    fn send(
        &self,
        _record: choreo_coordinator::command::CommandRecord,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("no commands topic in this test".to_owned()) })
    }
}

/// Serves the operator API with a dead-letter desk of coordinator group `group` (an operator
/// `alice` and a viewer `victor`).
pub async fn serve_api(
    bootstrap: &str,
    group: &str,
    registry: Arc<dyn SchemaRegistry>,
) -> anyhow::Result<ServedApi> {
    let stop = CancellationToken::new();
    let desk = DeadLetterDesk::start(
        DeskOptions {
            kafka: BusConfig::new(bootstrap),
            group_id: group.to_owned(),
            registry,
            timeout: Duration::from_secs(20),
            replication_factor: None,
            create_topic: true,
        },
        stop.clone(),
    )
    .await?;
    let state = ApiState {
        view: Arc::new(SagaView::new()),
        sink: Arc::new(NoCommands),
        ready: Arc::new(|| true),
        metrics: None,
        auth: Arc::new(ApiAuth::Tokens(vec![
            ApiToken::from_secret("alice", Role::Operator, OPERATOR_TOKEN),
            ApiToken::from_secret("victor", Role::Viewer, VIEWER_TOKEN),
        ])),
        dead_letters: Some(Arc::clone(&desk)),
    };
    let (addr, _task) = http::serve(state, "127.0.0.1:0".parse()?, stop.clone()).await?;
    Ok(ServedApi {
        url: format!("http://{addr}"),
        desk,
        group: group.to_owned(),
        stop,
    })
}

/// A topic whose subscriber dead-letters some of what it reads, and the API over its
/// dead letters.
#[derive(Debug)]
pub struct DeadLetterWorld {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// The origin topic (2 partitions).
    pub topic: String,
    /// Its dead-letter topic (2 partitions).
    pub dlq: String,
    /// The registry (in process; every bus and desk of the test shares it).
    pub registry: Arc<MemoryRegistry>,
    /// A bus publishing to the topic.
    pub bus: Bus,
    /// The subscriber's group.
    pub group: String,
    /// Order ids the handler handled, in order (repeats included); a payment whose id starts
    /// with `sentinel` as `sentinel:<order id>`.
    pub handled: Arc<Mutex<Vec<String>>>,
    /// While set, the handler fails permanently for orders whose id starts with `poison-`.
    pub broken: Arc<AtomicBool>,
    /// The id of the value framed with a schema the registry did not have.
    pub late_schema_order: String,
    /// The API with its desk (coordinator group `dlq-api-<run>`).
    pub api: ServedApi,
    _subscription: Subscription,
}

impl DeadLetterWorld {
    /// Sets everything up and waits until the 6 dead letters are there: `late-1` (framed with
    /// a schema id the registry lacked then: `unknown_schema_id`), `poison-1..4` (the handler
    /// failed: `handler_permanent`), and `junk-1` (not Avro: `wrong_magic_byte`); `ok-1` and
    /// `ok-2` were handled.
    pub async fn start(bootstrap: &str) -> anyhow::Result<DeadLetterWorld> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let topic = format!("dlq-pay-{run}");
        let dlq = format!("{topic}.dlq");
        crate::broker::create_topics(bootstrap, &[(&topic, 2), (&dlq, 2)]).await?;
        let registry = Arc::new(MemoryRegistry::new());
        let bus = Bus::new(
            BusConfig::new(bootstrap).with_source("/tests/dead-letters"),
            Arc::clone(&registry) as Arc<dyn SchemaRegistry>,
        )?;
        let handled: Arc<Mutex<Vec<String>>> = Arc::default();
        let broken = Arc::new(AtomicBool::new(true));
        let group = format!("payments-{run}");
        let (sink, fail) = (Arc::clone(&handled), Arc::clone(&broken));
        let subscription = bus
            .subscriber(&group)
            .client_setting("session.timeout.ms", "6000")
            .handle_on(&topic, "charge", move |e: PaymentAuthorized, _ctx| {
                let (sink, fail) = (Arc::clone(&sink), Arc::clone(&fail));
                async move {
                    if fail.load(Ordering::SeqCst) && e.order_id.starts_with("poison-") {
                        // Text from the handler lands in the reason header: markup and a
                        // terminal escape, which every client must show as text.
                        return Err(HandlerError::permanent(format!(
                            "card processor said \u{1b}[31mno\u{1b}[0m <b>{}</b>",
                            e.order_id
                        )));
                    }
                    let seen = if e.payment_id.starts_with("sentinel") {
                        format!("sentinel:{}", e.order_id)
                    } else {
                        e.order_id
                    };
                    sink.lock()
                        .map_err(|_| HandlerError::permanent("lock"))?
                        .push(seen);
                    Ok(())
                }
            })
            .start()?;
        let raw: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        // Framed with the schema's content-derived id before anyone registered it.
        let late = "late-1".to_owned();
        let schema = PaymentAuthorized::schema();
        let id = schema_id_of(&schema.canonical_form());
        let body = choreo_bus::wire::codec::encode_body(schema, &payment(&late))
            .map_err(|e| anyhow::anyhow!(e))?;
        send_raw(&raw, &topic, Some(&late), &frame(id, &body), "late-1-event").await?;
        let world_dlq = dlq.clone();
        let api = serve_api(
            bootstrap,
            &format!("dlq-api-{run}"),
            Arc::clone(&registry) as Arc<dyn SchemaRegistry>,
        )
        .await?;
        let http = reqwest::Client::new();
        wait_for_records(&http, &api.url, &world_dlq, 1).await?;
        // Now the schema exists (the first publish registers it).
        for order in [
            "ok-1", "poison-1", "poison-2", "poison-3", "poison-4", "ok-2",
        ] {
            bus.publish_with(
                &payment(order),
                PublishOptions::default()
                    .with_topic(&topic)
                    .with_id(format!("{order}-event")),
            )
            .await?;
        }
        send_raw(&raw, &topic, Some("junk-1"), &[1, 2, 3], "junk-1-event").await?;
        wait_for_records(&http, &api.url, &world_dlq, 6).await?;
        let world = DeadLetterWorld {
            bootstrap: bootstrap.to_owned(),
            topic,
            dlq,
            registry,
            bus,
            group,
            handled,
            broken,
            late_schema_order: late,
            api,
            _subscription: subscription,
        };
        world
            .wait_handled("ok-1 and ok-2 handled", |h| {
                h.iter().any(|o| o == "ok-1") && h.iter().any(|o| o == "ok-2")
            })
            .await?;
        Ok(world)
    }

    /// Waits until the handled orders satisfy `cond`.
    pub async fn wait_handled(
        &self,
        what: &str,
        cond: impl Fn(&[String]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now: Vec<String> = self.handled.lock().map(|h| h.clone()).unwrap_or_default();
            if cond(&now) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for: {what} (handled: {now:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes a sentinel payment of `order` (same key, so the same partition, after what is
    /// there) and waits until it is handled: everything before it on that partition was
    /// handled (or dropped) by then.
    pub async fn after_everything_of(&self, order: &str) -> anyhow::Result<()> {
        let mut p = payment(order);
        p.payment_id = format!("sentinel-{}", uuid::Uuid::new_v4().simple());
        self.bus
            .publish_with(&p, PublishOptions::default().with_topic(&self.topic))
            .await?;
        let mark = format!("sentinel:{order}");
        let before = self.handled_count(&mark);
        self.wait_handled(&format!("the sentinel of {order}"), |h| {
            h.iter().filter(|o| **o == mark).count() > before
        })
        .await
    }

    /// How often `order` was handled.
    pub fn handled_count(&self, order: &str) -> usize {
        self.handled
            .lock()
            .map(|h| h.iter().filter(|o| *o == order).count())
            .unwrap_or(0)
    }

    /// Every dead letter of the topic, by order id (the record key).
    pub async fn dead_letters(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let page: Value = get(
            &self.api.url,
            &format!("/api/dlq/{}?limit=500", self.dlq),
            VIEWER_TOKEN,
        )
        .await?
        .1;
        let mut out = BTreeMap::new();
        for r in page["records"].as_array().cloned().unwrap_or_default() {
            let key = r["key"].as_str().unwrap_or_default().to_owned();
            out.insert(key, r);
        }
        Ok(out)
    }
}

/// Sends one raw record with a CloudEvents envelope of id `ce_id`.
pub async fn send_raw(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &[u8],
    ce_id: &str,
) -> anyhow::Result<()> {
    let envelope = Envelope::new(
        ce_id,
        "/tests/raw",
        "io.choreo.orders.PaymentAuthorized",
        key.unwrap_or_default(),
        None,
        None,
    );
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .payload(value)
        .headers(envelope.to_headers());
    if let Some(k) = key {
        record = record.key(k);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .context("sending a raw record")?;
    Ok(())
}

/// `GET` with a bearer token: the status and the JSON answer.
pub async fn get(api: &str, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .get(format!("{api}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// `POST` of `body` with a bearer token and a content type: the status and the JSON answer.
pub async fn post(
    api: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{api}{path}"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Waits until the API lists at least `n` records in `dlq`.
pub async fn wait_for_records(
    http: &reqwest::Client,
    api: &str,
    dlq: &str,
    n: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed: Option<u64> = async {
            let v: Value = http
                .get(format!("{api}/api/dlq"))
                .bearer_auth(VIEWER_TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["topics"]
                .as_array()?
                .iter()
                .find(|t| t["topic"] == dlq)
                .and_then(|t| t["records"].as_u64())
        }
        .await;
        if listed.is_some_and(|l| l >= n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{dlq}: {listed:?} dead letters listed, waiting for {n}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
