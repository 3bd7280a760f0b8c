//! `choreo registry` on Apache Kafka: schemas kept in a compacted topic. Two instances answer
//! alike, either can write (the other is fenced and catches up), writes need the token, and an
//! instance killed with SIGKILL and started again resolves every id to the same schema. Two
//! writers racing on one subject never give one version two schemas (with a writer id of its
//! own for one of them — no fencing — the same test finds a version written twice).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use choreo_integration_tests::broker::{free_port, real_broker};
use choreo_integration_tests::process::start_registry;
use choreo_schemas::Catalog;
use serde_json::{Value, json};
use tokio::process::Child;

const TOKEN: &str = "registry-write-token-0123";

struct Instance {
    url: String,
    port: u16,
    child: Child,
}

async fn start(bootstrap: &str, port: u16, dir: &std::path::Path, name: &str) -> Instance {
    let child = start_registry(
        bootstrap,
        port,
        &dir.join(format!("{name}.log")),
        &[
            ("CHOREO__REGISTRY__WRITE_TOKEN_ENV", "TEST_REGISTRY_TOKEN"),
            ("TEST_REGISTRY_TOKEN", TOKEN),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    Instance {
        url: format!("http://127.0.0.1:{port}"),
        port,
        child,
    }
}

async fn register(url: &str, token: Option<&str>, subject: &str, schema: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({ "schema": schema }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, path: &str) -> Value {
    reqwest::get(format!("{url}{path}"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("json")
}

/// Every subject's versions, each with its id and schema, as an instance answers them.
async fn everything(url: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for s in get(url, "/subjects").await.as_array().expect("subjects") {
        let s = s.as_str().expect("subject");
        let mut versions = Vec::new();
        for v in get(url, &format!("/subjects/{s}/versions"))
            .await
            .as_array()
            .expect("versions")
        {
            versions.push(get(url, &format!("/subjects/{s}/versions/{v}")).await);
        }
        out.insert(s.to_owned(), versions);
    }
    out
}

fn parsed(text: &str) -> String {
    choreo_schemas::apache_avro::Schema::parse_str(text)
        .expect("schema")
        .canonical_form()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_agree_on_every_id_and_a_killed_one_comes_back_with_the_same_ids() {
    let broker = real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    let dir =
        std::env::temp_dir().join(format!("choreo-registry-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let a = start(&broker.bootstrap, free_port().expect("port"), &dir, "a").await;
    let b = start(&broker.bootstrap, free_port().expect("port"), &dir, "b").await;

    // The catalog through A.
    let catalog = Catalog::reference();
    let mut ids = BTreeMap::new();
    for e in catalog.events() {
        for v in &e.versions {
            let (status, body) = register(&a.url, Some(TOKEN), &e.subject(), &v.text).await;
            assert_eq!(status, 200, "{}: {body}", e.subject());
            ids.insert(body["id"].as_u64().expect("id"), parsed(&v.text));
        }
    }
    // Writes need the token.
    let (status, _) = register(
        &a.url,
        None,
        "x-new.Event",
        r#"{"type":"record","name":"Event","namespace":"new","fields":[]}"#,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = register(
        &a.url,
        Some("registry-write-token-wrong"),
        "x-new.Event",
        r#"{"type":"record","name":"Event","namespace":"new","fields":[]}"#,
    )
    .await;
    assert_eq!(status, 401);

    // B, which never wrote, serves the same ids.
    for (id, canonical) in &ids {
        let got = get(&b.url, &format!("/schemas/ids/{id}")).await;
        assert_eq!(
            &parsed(got["schema"].as_str().expect("schema")),
            canonical,
            "id {id} on B"
        );
    }
    // B writes (A's writer is fenced); A sees it; then A writes again.
    let new_schema = r#"{"type":"record","name":"GiftWrapped","namespace":"io.choreo.orders","fields":[{"name":"order_id","type":"string"}]}"#;
    let (status, body) = register(
        &b.url,
        Some(TOKEN),
        "orders-io.choreo.orders.GiftWrapped",
        new_schema,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let gift = body["id"].as_u64().expect("id");
    let on_a = get(&a.url, &format!("/schemas/ids/{gift}")).await;
    assert_eq!(
        parsed(on_a["schema"].as_str().expect("schema")),
        parsed(new_schema)
    );
    let v2 = r#"{"type":"record","name":"GiftWrapped","namespace":"io.choreo.orders","fields":[{"name":"order_id","type":"string"},{"name":"note","type":"string","default":""}]}"#;
    let (status, body) = register(
        &a.url,
        Some(TOKEN),
        "orders-io.choreo.orders.GiftWrapped",
        v2,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    ids.insert(gift, parsed(new_schema));
    ids.insert(body["id"].as_u64().expect("id"), parsed(v2));
    // Compatibility holds across instances: B refuses what breaks A's version.
    let breaking = r#"{"type":"record","name":"GiftWrapped","namespace":"io.choreo.orders","fields":[{"name":"order_id","type":"int"}]}"#;
    let (status, body) = register(
        &b.url,
        Some(TOKEN),
        "orders-io.choreo.orders.GiftWrapped",
        breaking,
    )
    .await;
    assert_eq!(status, 409, "{body}");

    let before = everything(&a.url).await;
    assert_eq!(
        everything(&b.url).await,
        before,
        "both instances answer alike"
    );
    assert_eq!(before["orders-io.choreo.orders.GiftWrapped"].len(), 2);

    // A dies without warning and starts again: every id means the same schema.
    let (port, mut child) = (a.port, a.child);
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let a = start(&broker.bootstrap, port, &dir, "a").await;
    for (id, canonical) in &ids {
        let got = get(&a.url, &format!("/schemas/ids/{id}")).await;
        assert_eq!(
            &parsed(got["schema"].as_str().expect("schema")),
            canonical,
            "id {id} after the restart"
        );
    }
    assert_eq!(
        everything(&a.url).await,
        before,
        "subjects and versions survive the restart"
    );
    drop(b);
    std::fs::remove_dir_all(&dir).ok();
}

/// A schema no other round or writer uses: a record with one field named after both.
fn race_schema(round: usize, writer: &str) -> String {
    json!({"type": "record", "name": "Race", "namespace": "io.choreo.tests",
           "fields": [{"name": format!("f_{round}_{writer}"), "type": "string", "default": ""}]})
    .to_string()
}

/// A Kafka-backed store on `topic`, writing through `<topic>-writer` (the one transactional id
/// every instance shares); `follow`: with the background reader.
async fn open_store(
    bootstrap: &str,
    topic: &str,
    follow: bool,
) -> std::sync::Arc<choreo_bus::schema_store::KafkaSchemaStore> {
    use choreo_bus::BusConfig;
    use choreo_bus::schema_store::{KafkaSchemaStore, SchemaTopic};
    let mut cfg = SchemaTopic::new(BusConfig::new(bootstrap));
    cfg.topic = topic.to_owned();
    cfg.writer_id = format!("{topic}-writer");
    cfg.follow = follow;
    KafkaSchemaStore::open(cfg).await.expect("a schema store")
}

/// Every record of the schema topic: key → the distinct values written under it.
fn topic_history(bootstrap: &str, topic: &str) -> BTreeMap<String, Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "registry-race-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let values = history.entry(key).or_default();
                if !values.contains(&value) {
                    values.push(value);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return history,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => assert!(Instant::now() < deadline, "{topic} never reached its end"),
        }
    }
}

/// No subject version of `topic` was ever written with two different schemas.
fn assert_one_schema_per_version(bootstrap: &str, topic: &str) {
    let history = topic_history(bootstrap, topic);
    let two_meanings: Vec<_> = history.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        two_meanings.is_empty(),
        "subject versions written with two schemas: {two_meanings:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_view_is_behind_reads_the_topic_before_it_writes() {
    use choreo_schemas::{RegistryStore, compat::Compatibility};

    let bootstrap = choreo_integration_tests::broker::shared_real_broker()
        .await
        .expect("a real broker");
    let topic = format!("_schemas-behind-{}", uuid::Uuid::new_v4().simple());
    let a = open_store(&bootstrap, &topic, true).await;
    // No background reader: b's view stays as it was at open until b reads the topic again,
    // so only the read every write starts with can tell b what a wrote.
    let b = open_store(&bootstrap, &topic, false).await;
    let subject = "behind-io.choreo.tests.Race";
    a.set_rule(Some(subject), Compatibility::None)
        .await
        .expect("rule");
    let first = a
        .register_version(subject, &race_schema(0, "a"))
        .await
        .expect("a registers");
    let second = b
        .register_version(subject, &race_schema(0, "b"))
        .await
        .expect("b registers");
    assert_eq!(
        (first.version, second.version),
        (1, 2),
        "b's write comes after a's"
    );
    assert_one_schema_per_version(&bootstrap, &topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_at_once_never_give_one_subject_version_two_schemas() {
    use choreo_schemas::{RegistryStore, compat::Compatibility};

    let bootstrap = choreo_integration_tests::broker::shared_real_broker()
        .await
        .expect("a real broker");
    let topic = format!("_schemas-race-{}", uuid::Uuid::new_v4().simple());
    // Both instances share the writer's transactional id, as every `choreo registry` does.
    let a = open_store(&bootstrap, &topic, true).await;
    let b = open_store(&bootstrap, &topic, true).await;
    let subject = "race-io.choreo.tests.Race";
    a.set_rule(Some(subject), Compatibility::None)
        .await
        .expect("rule");

    // Each round both instances register a different new version of the same subject at once;
    // the store tries a fenced write again itself, and a writer still refused retries, as a
    // client does.
    let rounds = 8;
    let mut answers = Vec::new();
    let mut fenced = 0;
    for round in 0..rounds {
        let write = |store: std::sync::Arc<choreo_bus::schema_store::KafkaSchemaStore>,
                     schema: String| async move {
            let mut refused = 0;
            loop {
                match store.register_version(subject, &schema).await {
                    Ok(v) => return (v, refused),
                    Err(e) if refused < 10 => {
                        assert!(e.to_string().contains("schema topic"), "{e}");
                        refused += 1;
                    }
                    Err(e) => panic!("never registered: {e}"),
                }
            }
        };
        let (ra, rb) = tokio::join!(
            write(a.clone(), race_schema(round, "a")),
            write(b.clone(), race_schema(round, "b")),
        );
        fenced += ra.1 + rb.1;
        answers.push(ra.0);
        answers.push(rb.0);
    }

    // The topic gives each subject version one schema, and every answer is what it says.
    assert_one_schema_per_version(&bootstrap, &topic);
    let mut versions: Vec<u32> = answers.iter().map(|v| v.version).collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=2 * rounds as u32).collect::<Vec<_>>(),
        "each answer a version of its own"
    );
    a.refresh().await.expect("refresh a");
    b.refresh().await.expect("refresh b");
    let (va, vb) = (
        a.view().versions(subject).expect("a's versions"),
        b.view().versions(subject).expect("b's versions"),
    );
    assert_eq!(va, vb, "both instances serve the same history");
    for answer in &answers {
        assert_eq!(
            va[answer.version as usize - 1].schema,
            answer.schema,
            "version {} is what its writer was told",
            answer.version
        );
    }
    eprintln!("{rounds} rounds of two writers: {fenced} writes refused and retried");
    // The store tries a fenced write again itself: without that, 8 rounds had 24 writes
    // refused to their callers; with it, none in five runs.
    assert!(
        fenced <= 2,
        "{fenced} writes were refused to their callers: the store should try fenced writes again"
    );
}

/// Three replicas starting together each register the whole catalog, as `choreo run` does at
/// start-up, through one transactional id. They used to fence each other in turn: 35–51 fenced
/// attempts per coordinator and 35–104 s to start, in the Kubernetes test's logs. Now the
/// catalog is one write, and a fenced replica waits as long as its own attempt took before it
/// tries again. With that wait cut to the plain backoff, this test saw 17 and 19 fenced
/// attempts; with the catalog written one schema per write, 5 to 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_registering_the_catalog_together_fence_each_other_a_few_times_only() {
    use choreo_schemas::{RegistryStore, SchemaRegistry};

    let bootstrap = choreo_integration_tests::broker::shared_real_broker()
        .await
        .expect("a real broker");
    let topic = format!("_schemas-start-{}", uuid::Uuid::new_v4().simple());
    let catalog =
        Catalog::load(format!("{}/../schemas", env!("CARGO_MANIFEST_DIR"))).expect("catalog");
    let schemas: usize = catalog.events().map(|e| e.versions.len()).sum();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(open_store(&bootstrap, &topic, true).await);
    }
    let started = Instant::now();
    let registrations = stores.iter().map(|store| {
        let (store, catalog) = (std::sync::Arc::clone(store), &catalog);
        async move {
            catalog
                .register_all(store.as_ref() as &dyn SchemaRegistry)
                .await
        }
    });
    for result in futures::future::join_all(registrations).await {
        result.expect("every replica registers the catalog without a refusal");
    }
    let took = started.elapsed();
    let fenced: Vec<u64> = stores.iter().map(|s| s.fenced_writes()).collect();
    eprintln!("3 replicas registered {schemas} schemas in {took:?}; fenced attempts {fenced:?}");

    let history = topic_history(&bootstrap, &topic);
    let two_meanings: Vec<_> = history.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        two_meanings.is_empty(),
        "versions with two schemas: {two_meanings:#?}"
    );
    let written = history.keys().filter(|k| k.contains("\"schema\"")).count();
    assert_eq!(written, schemas, "each catalog schema written once");
    for store in &stores {
        store.refresh().await.expect("refresh");
        for e in catalog.events() {
            assert_eq!(
                store.view().versions(&e.subject()).expect("versions").len(),
                e.versions.len(),
                "{} in every replica",
                e.subject()
            );
        }
    }
    // Each losing replica is fenced about once, while the first writer writes the catalog;
    // with each fenced replica trying again before the writer could finish, they took turns
    // fencing each other for every schema.
    let total: u64 = fenced.iter().sum();
    assert!(
        total <= 4,
        "{total} fenced attempts ({fenced:?}) for {schemas} schemas: replicas kept fencing each other"
    );
}

/// A store decides on what its view holds when there is nothing to write, but never refuses on
/// it: its view may not have a rule another instance set. Refusing on the view alone, this
/// store answered "incompatible" to a schema the subject's rule (NONE) allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_view_is_behind_does_not_refuse_what_a_newer_rule_allows() {
    use choreo_schemas::{RegistryStore, compat::Compatibility};

    let bootstrap = choreo_integration_tests::broker::shared_real_broker()
        .await
        .expect("a real broker");
    let topic = format!("_schemas-rule-{}", uuid::Uuid::new_v4().simple());
    let subject = "rule-io.choreo.tests.Race";
    let a = open_store(&bootstrap, &topic, true).await;
    a.register_version(subject, &race_schema(0, "a"))
        .await
        .expect("v1");
    // b reads the topic at open (v1, the global BACKWARD) and then no more on its own.
    let b = open_store(&bootstrap, &topic, false).await;
    a.set_rule(Some(subject), Compatibility::None)
        .await
        .expect("rule");
    // A field without a default: BACKWARD refuses it, NONE allows it.
    let breaking = json!({"type": "record", "name": "Race", "namespace": "io.choreo.tests",
        "fields": [{"name": "required_now", "type": "string"}]})
    .to_string();
    let v2 = b
        .register_version(subject, &breaking)
        .await
        .expect("the subject's rule is NONE: registered");
    assert_eq!(v2.version, 2);
}

/// A writer keeps its transactional producer after a commit and writes its next change with it
/// straight away, deciding on its view without reading the topic first. That is safe only
/// because any other writer in between had to take the shared transactional id, which fences
/// the held producer: its commit fails, and the writer reads the topic and decides again. Here
/// `b` writes v1 and holds its producer, `a` writes v2, and `b` — its view still at v1 — writes
/// again: it must be fenced once and get v3. With a writer id of its own for `a` (nothing
/// fences `b`), `b` wrote a second version 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_writer_whose_view_is_behind_is_fenced_and_decides_again() {
    use choreo_schemas::{RegistryStore, compat::Compatibility};

    let bootstrap = choreo_integration_tests::broker::shared_real_broker()
        .await
        .expect("a real broker");
    let topic = format!("_schemas-held-{}", uuid::Uuid::new_v4().simple());
    // No background readers: each view changes only through its own writes and reads.
    let a = open_store(&bootstrap, &topic, false).await;
    let b = open_store(&bootstrap, &topic, false).await;
    let subject = "held-io.choreo.tests.Race";
    b.set_rule(Some(subject), Compatibility::None)
        .await
        .expect("rule");
    let first = b
        .register_version(subject, &race_schema(0, "b"))
        .await
        .expect("b registers v1");
    let second = a
        .register_version(subject, &race_schema(1, "a"))
        .await
        .expect("a registers v2");
    let fenced_before = b.fenced_writes();
    let third = b
        .register_version(subject, &race_schema(2, "b"))
        .await
        .expect("b registers again");
    assert_eq!(
        (first.version, second.version, third.version),
        (1, 2, 3),
        "b's second write comes after a's"
    );
    assert_eq!(
        b.fenced_writes() - fenced_before,
        1,
        "b wrote with the producer it held, was fenced once, and read the topic again"
    );
    assert_one_schema_per_version(&bootstrap, &topic);
}
