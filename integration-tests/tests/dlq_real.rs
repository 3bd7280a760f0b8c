//! Dead letters on Apache Kafka: listed with their reasons and decoded payloads (and an
//! undecodable one with its raw bytes and the error), paged newest first, filtered; redriven —
//! one, a selection, all matching — and handled again by the subscriber that dead-lettered them
//! once it is fixed (a handler that stops failing, a schema registered later); the redrive
//! shown by a second replica; who may redrive and how (403, 415, 409, 400, 413); the `choreo
//! dlq` binary against the same API. One broker for the binary: each test has topics and
//! groups of its own.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use choreo_integration_tests::broker::shared_real_broker;
use choreo_integration_tests::dead_letters::{
    DeadLetterWorld, OPERATOR_TOKEN, PATIENCE, VIEWER_TOKEN, get, post, serve_api,
};
use choreo_integration_tests::process::choreo_binary;
use choreo_schemas::SchemaRegistry;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use serde_json::{Value, json};

async fn world() -> DeadLetterWorld {
    let bootstrap = shared_real_broker()
        .await
        .expect("a real broker for the real tier (this tier never skips)");
    DeadLetterWorld::start(&bootstrap)
        .await
        .expect("the dead letters are there")
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_with_their_reasons_and_decoded_payloads() {
    let w = world().await;
    let api = &w.api.url;

    let (status, topics) = get(api, "/api/dlq", VIEWER_TOKEN).await.expect("topics");
    assert_eq!(status, 200, "{topics}");
    let mine = topics["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == w.dlq.as_str())
        .unwrap_or_else(|| panic!("{} listed: {topics}", w.dlq))
        .clone();
    assert_eq!(
        mine,
        json!({"topic": w.dlq, "origin": w.topic, "records": 6})
    );

    let all = w.dead_letters().await.expect("records");
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        [
            "junk-1", "late-1", "poison-1", "poison-2", "poison-3", "poison-4"
        ]
    );
    // A handler's failure: the reason as the handler wrote it, the payload decoded.
    let p = &all["poison-2"];
    assert_eq!(p["kind"], "handler_permanent");
    assert_eq!(
        p["reason"],
        "card processor said \u{1b}[31mno\u{1b}[0m <b>poison-2</b>"
    );
    assert_eq!(p["handler"], "charge");
    assert_eq!(p["group"], w.group.as_str());
    assert_eq!(p["attempts"], 1);
    assert_eq!(p["event_type"], "io.choreo.orders.PaymentAuthorized");
    assert_eq!(p["ce_id"], "poison-2-event");
    assert_eq!(
        p["payload"],
        json!({"order_id": "poison-2", "payment_id": "pay-poison-2",
               "amount": {"amount_minor": 4200, "currency": "EUR"}})
    );
    assert_eq!(p["payload_error"], Value::Null);
    assert_eq!(p["payload_base64"], Value::Null);
    assert_eq!(p["origin"]["topic"], w.topic.as_str());
    assert!(
        p["origin"]["partition"]
            .as_i64()
            .is_some_and(|x| (0..2).contains(&x)),
        "{p}"
    );
    assert!(p["origin"]["offset"].as_i64().is_some(), "{p}");
    assert_eq!(p["headers"]["choreo_dlq_kind"], "handler_permanent");
    assert_eq!(p["headers"]["ce_id"], "poison-2-event");
    assert_eq!(p["redriven"], json!([]));
    assert_eq!(
        id_of(p),
        format!("{}/{}/{}", w.dlq, p["partition"], p["offset"])
    );
    // Not Avro at all: the raw bytes and why.
    let junk = &all["junk-1"];
    assert_eq!(junk["kind"], "wrong_magic_byte");
    assert_eq!(junk["payload"], Value::Null);
    assert_eq!(junk["payload_base64"], "AQID");
    assert!(
        junk["payload_error"]
            .as_str()
            .is_some_and(|e| e.contains("magic")),
        "{junk}"
    );
    // A schema the registry lacked then, and has now: decoded as it reads today, though it
    // was dead-lettered for it.
    let late = &all["late-1"];
    assert_eq!(late["kind"], "unknown_schema_id");
    assert_eq!(late["payload"]["order_id"], "late-1");

    // Newest first across both partitions, in pages that add up to the whole.
    let (_, first) = get(api, &format!("/api/dlq/{}?limit=4", w.dlq), VIEWER_TOKEN)
        .await
        .expect("page");
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = get(
        api,
        &format!("/api/dlq/{}?limit=4&before={next}", w.dlq),
        VIEWER_TOKEN,
    )
    .await
    .expect("page");
    assert_eq!(second["next"], Value::Null, "{second}");
    let pages: Vec<Value> = first["records"]
        .as_array()
        .expect("records")
        .iter()
        .chain(second["records"].as_array().expect("records"))
        .cloned()
        .collect();
    assert_eq!(
        (first["records"].as_array().map(Vec::len), pages.len()),
        (Some(4), 6)
    );
    let ids: BTreeSet<String> = pages.iter().map(id_of).collect();
    assert_eq!(ids.len(), 6, "no record twice");
    let times: Vec<i64> = pages
        .iter()
        .map(|r| r["timestamp_ms"].as_i64().expect("timestamp"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert_eq!(pages[5]["key"], "late-1", "the oldest last");

    // Filters: by kind, by reason text (ignoring case).
    let (_, k) = get(
        api,
        &format!("/api/dlq/{}?kind=handler_permanent", w.dlq),
        VIEWER_TOKEN,
    )
    .await
    .expect("by kind");
    assert_eq!(k["records"].as_array().map(Vec::len), Some(4), "{k}");
    let (_, r) = get(
        api,
        &format!("/api/dlq/{}?reason=POISON-3", w.dlq),
        VIEWER_TOKEN,
    )
    .await
    .expect("by reason");
    let keys: Vec<&str> = r["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(keys, ["poison-3"]);

    // One record; what is not there or not a dead-letter topic is a 404.
    let (status, one) = get(api, &format!("/api/dlq/{}", id_of(p)), VIEWER_TOKEN)
        .await
        .expect("one");
    assert_eq!(status, 200, "{one}");
    assert_eq!(&one, p);
    let (status, _) = get(api, &format!("/api/dlq/{}/0/999999", w.dlq), VIEWER_TOKEN)
        .await
        .expect("missing");
    assert_eq!(status, 404);
    let (status, e) = get(api, &format!("/api/dlq/{}", w.topic), VIEWER_TOKEN)
        .await
        .expect("not a dlq");
    assert_eq!(status, 404);
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a dead-letter topic")),
        "{e}"
    );
    let (status, e) = get(api, &format!("/api/dlq/{}?limit=0", w.dlq), VIEWER_TOKEN)
        .await
        .expect("bad limit");
    assert_eq!(status, 400, "{e}");
    let (status, e) = get(
        api,
        &format!("/api/dlq/{}?before=yesterday", w.dlq),
        VIEWER_TOKEN,
    )
    .await
    .expect("bad cursor");
    assert_eq!(status, 400, "{e}");
    let (status, _) = get(api, "/api/dlq", "not-a-token-of-ours")
        .await
        .expect("401");
    assert_eq!(status, 401);

    // A coordinator's transaction-sweep record (written only to be aborted; a broker that
    // shows aborted records shows it) is no dead letter.
    let raw: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &w.bootstrap)
        .create()
        .expect("producer");
    raw.send(
        rdkafka::producer::FutureRecord::<str, [u8]>::to(&w.dlq)
            .key("choreo.transaction-sweep")
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: choreo_bus::wire::envelope::header::TRANSACTION_SWEEP,
                    value: Some("1"),
                }),
            ),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("sent");
    choreo_integration_tests::dead_letters::wait_for_records(
        &reqwest::Client::new(),
        api,
        &w.dlq,
        7,
    )
    .await
    .expect("the sweep record is in the topic");
    let listed = w.dead_letters().await.expect("records");
    assert_eq!(listed.len(), 6, "{:?}", listed.keys());
    assert!(!listed.contains_key("choreo.transaction-sweep"));
}

/// Redrives (by the operator) through the API: the dry run, then the run with its count.
async fn redrive(api: &str, dlq: &str, selection: Value) -> Value {
    let path = format!("/api/dlq/{dlq}/redrive");
    let mut dry = selection.clone();
    dry["dry_run"] = json!(true);
    let (status, preview) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &dry.to_string(),
    )
    .await
    .expect("dry run");
    assert_eq!(status, 200, "{preview}");
    let mut run = selection;
    run["expect"] = preview["matched"].clone();
    run["note"] = json!("fixed in release 42");
    let (status, done) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &run.to_string(),
    )
    .await
    .expect("run");
    assert_eq!(status, 202, "{done}");
    done
}

fn redriven_ids(done: &Value) -> BTreeSet<String> {
    done["redriven"]
        .as_array()
        .expect("redriven")
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redriven_records_are_handled_again_by_the_subscriber_once_it_is_fixed() {
    let w = world().await;
    let api = &w.api.url;
    let all = w.dead_letters().await.expect("records");
    // The fix: the handler stops failing (the late schema is registered already).
    w.broken.store(false, Ordering::SeqCst);

    // One.
    let one = id_of(&all["poison-1"]);
    let done = redrive(api, &w.dlq, json!({"ids": [one]})).await;
    assert_eq!(redriven_ids(&done), BTreeSet::from([one.clone()]));
    assert_eq!(done["refused"], json!([]));
    assert_eq!(done["redriven"][0]["to"]["topic"], w.topic.as_str());
    assert_eq!(done["redriven"][0]["again"], false);
    w.wait_handled("poison-1 handled", |h| h.iter().any(|o| o == "poison-1"))
        .await
        .expect("handled");

    // The republished record: the dead letter's key, value and own headers, without the
    // choreo_dlq_* ones, saying where it came from and who sent it.
    let to = &done["redriven"][0]["to"];
    let republished = read_at(
        &w.bootstrap,
        &w.topic,
        to["partition"].as_i64().expect("partition") as i32,
        to["offset"].as_i64().expect("offset"),
    );
    assert_eq!(republished.key(), Some(&b"poison-1"[..]));
    let headers: Vec<(String, String)> = republished
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !headers.iter().any(|(k, _)| k.starts_with("choreo_dlq_")),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("choreo_redriven_from".into(), one.clone())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("choreo_redriven_by".into(), "alice".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("ce_id".into(), "poison-1-event".into())),
        "{headers:?}"
    );
    let dead = read_at(
        &w.bootstrap,
        &w.dlq,
        all["poison-1"]["partition"].as_i64().expect("p") as i32,
        all["poison-1"]["offset"].as_i64().expect("o"),
    );
    assert_eq!(republished.payload(), dead.payload(), "the same value");

    // A selection.
    let two = [id_of(&all["poison-2"]), id_of(&all["poison-3"])];
    let done = redrive(api, &w.dlq, json!({"ids": two})).await;
    assert_eq!(redriven_ids(&done), BTreeSet::from(two.clone()));
    w.wait_handled("poison-2 and poison-3 handled", |h| {
        h.iter().any(|o| o == "poison-2") && h.iter().any(|o| o == "poison-3")
    })
    .await
    .expect("handled");

    // All matching: only what was never redriven (poison-4).
    let done = redrive(
        api,
        &w.dlq,
        json!({"filter": {"kind": "handler_permanent"}}),
    )
    .await;
    assert_eq!(
        redriven_ids(&done),
        BTreeSet::from([id_of(&all["poison-4"])])
    );
    assert_eq!(done["remaining"], 0);
    // And the one a missing schema stopped, now that the schema is registered.
    let done = redrive(
        api,
        &w.dlq,
        json!({"filter": {"kind": "unknown_schema_id"}}),
    )
    .await;
    assert_eq!(redriven_ids(&done), BTreeSet::from([id_of(&all["late-1"])]));
    w.wait_handled("poison-4 and late-1 handled", |h| {
        h.iter().any(|o| o == "poison-4") && h.contains(&w.late_schema_order)
    })
    .await
    .expect("handled");

    // A second redrive of the same record is done, and shown; the subscriber, which handled
    // it since, drops it as the duplicate it is.
    let done = redrive(api, &w.dlq, json!({"ids": [one]})).await;
    assert_eq!(done["redriven"][0]["again"], true, "{done}");
    w.after_everything_of("poison-1")
        .await
        .expect("the sentinel");
    assert_eq!(
        w.handled_count("poison-1"),
        1,
        "a duplicate is not handled twice"
    );
    let listed = w.dead_letters().await.expect("records");
    let redrives = listed["poison-1"]["redriven"].as_array().expect("redriven");
    assert_eq!(redrives.len(), 2, "{redrives:?}");
    assert!(
        redrives
            .iter()
            .all(|r| r["by"] == "alice" && r["note"] == "fixed in release 42"),
        "{redrives:?}"
    );
    // Nothing left that was never redriven but the junk, which a filter by kind still finds.
    let (_, none) = post(
        api,
        &format!("/api/dlq/{}/redrive", w.dlq),
        OPERATOR_TOKEN,
        "application/json",
        &json!({"filter": {"kind": "handler_permanent"}, "dry_run": true}).to_string(),
    )
    .await
    .expect("dry run");
    assert_eq!(none["matched"], 0, "{none}");
    // Every record the handler saw, once each.
    for order in [
        "ok-1", "ok-2", "poison-1", "poison-2", "poison-3", "poison-4", "late-1",
    ] {
        assert_eq!(w.handled_count(order), 1, "{order}");
    }
}

/// One record of `topic` at `partition`/`offset`, read_committed.
fn read_at(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> rdkafka::message::OwnedMessage {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "dlq-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
            && m.offset() == offset
        {
            return m.detach();
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}/{offset} readable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_replica_shows_the_redrive() {
    let w = world().await;
    w.broken.store(false, Ordering::SeqCst);
    let all = w.dead_letters().await.expect("records");
    let one = id_of(&all["poison-1"]);
    let done = redrive(&w.api.url, &w.dlq, json!({"ids": [one]})).await;
    let to = done["redriven"][0]["to"].clone();
    // Another replica of the same coordinator group: its own desk, its own reader of the
    // redrive log.
    let other = serve_api(
        &w.bootstrap,
        &w.api.group,
        w.registry.clone() as std::sync::Arc<dyn SchemaRegistry>,
    )
    .await
    .expect("a second replica");
    let path = format!("/api/dlq/{one}");
    let deadline = Instant::now() + PATIENCE;
    let shown = loop {
        let (status, v) = get(&other.url, &path, VIEWER_TOKEN).await.expect("get");
        assert_eq!(status, 200, "{v}");
        if v["redriven"].as_array().is_some_and(|r| !r.is_empty()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the second replica never showed the redrive: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = &shown["redriven"][0];
    assert_eq!(r["by"], "alice");
    assert_eq!(r["to"], to);
    assert!(r["at_ms"].as_u64().is_some(), "{r}");
    // Its filter leaves the redriven record out too.
    let (_, preview) = post(
        &other.url,
        &format!("/api/dlq/{}/redrive", w.dlq),
        OPERATOR_TOKEN,
        "application/json",
        &json!({"filter": {"kind": "handler_permanent"}, "dry_run": true}).to_string(),
    )
    .await
    .expect("dry run");
    assert_eq!(preview["matched"], 3, "{preview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_operator_redrives_with_json_and_the_count_its_dry_run_saw() {
    let w = world().await;
    let api = &w.api.url;
    let path = format!("/api/dlq/{}/redrive", w.dlq);
    let body = json!({"filter": {"kind": "handler_permanent"}, "dry_run": true}).to_string();
    // A viewer reads, and may not redrive.
    let (status, e) = post(api, &path, VIEWER_TOKEN, "application/json", &body)
        .await
        .expect("viewer");
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("operator")),
        "{e}"
    );
    // No token at all.
    let (status, _) = post(api, &path, "", "application/json", &body)
        .await
        .expect("anonymous");
    assert_eq!(status, 401);
    // Not JSON (what a cross-site form could send).
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, e) = post(api, &path, OPERATOR_TOKEN, ct, &body).await.expect(ct);
        assert_eq!(status, 415, "{ct}: {e}");
    }
    // The run needs the dry run's count; a changed set is a conflict and nothing is sent.
    let (status, preview) = post(api, &path, OPERATOR_TOKEN, "application/json", &body)
        .await
        .expect("dry run");
    assert_eq!(
        (status, preview["matched"].clone()),
        (200, json!(4)),
        "{preview}"
    );
    let run = |expect: Value| {
        json!({"filter": {"kind": "handler_permanent"}, "expect": expect}).to_string()
    };
    let (status, e) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &json!({"filter": {"kind": "handler_permanent"}}).to_string(),
    )
    .await
    .expect("no expect");
    assert_eq!(status, 400, "{e}");
    let (status, e) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &run(json!(5)),
    )
    .await
    .expect("stale count");
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("4 records match now, not 5")),
        "{e}"
    );
    assert!(
        w.dead_letters()
            .await
            .expect("records")
            .values()
            .all(|r| r["redriven"] == json!([])),
        "nothing was redriven"
    );
    // Bodies and texts have limits; ids must be of this topic and name a record.
    let big = format!("{{\"ids\": [\"{}\"]}}", "x".repeat(200 * 1024));
    let (status, _) = post(api, &path, OPERATOR_TOKEN, "application/json", &big)
        .await
        .expect("too large");
    assert_eq!(status, 413);
    let (status, e) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &json!({"filter": {"reason": "r".repeat(300)}, "dry_run": true}).to_string(),
    )
    .await
    .expect("long filter");
    assert_eq!(status, 400, "{e}");
    let (status, e) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &json!({"ids": ["orders.dlq/0/1"], "dry_run": true}).to_string(),
    )
    .await
    .expect("another topic's id");
    assert_eq!(status, 400, "{e}");
    let (status, e) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &json!({"ids": [format!("{}/0/999999", w.dlq)], "dry_run": true}).to_string(),
    )
    .await
    .expect("a missing id");
    assert_eq!((status, e["matched"].clone()), (200, json!(0)), "{e}");
    assert!(
        e["refused"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no such record")),
        "{e}"
    );
    let (status, e) = post(
        api,
        &path,
        OPERATOR_TOKEN,
        "application/json",
        &json!({"ids": [], "filter": {}, "dry_run": true}).to_string(),
    )
    .await
    .expect("both");
    assert_eq!(status, 400, "{e}");
}

/// Runs `choreo dlq <args>` against `api`: (exit code, stdout, stderr).
async fn cli(api: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(choreo_binary().expect("the choreo binary"))
        .arg("dlq")
        .args(args)
        .arg("--api")
        .arg(api)
        .env("CHOREO_API_TOKEN", token)
        .env_remove("CHOREO_API")
        .output()
        .await
        .expect("choreo runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_lists_shows_and_redrives_like_the_api() {
    let w = world().await;
    let api = w.api.url.as_str();
    let all = w.dead_letters().await.expect("records");

    let (code, out, err) = cli(api, VIEWER_TOKEN, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{} ", w.dlq)))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(&w.topic) && line.trim_end().ends_with(" 6"),
        "{line}"
    );

    let (code, out, err) = cli(
        api,
        VIEWER_TOKEN,
        &["show", &w.dlq, "--kind", "handler_permanent"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("handler_permanent"))
            .count(),
        4,
        "{out}"
    );
    // What came from a record is text: the escape sequence is shown, not obeyed.
    assert!(
        !out.contains('\u{1b}'),
        "a raw escape character in the output: {out:?}"
    );
    assert!(out.contains("said \\u{1b}[31mno"), "{out}");

    let (code, out, _) = cli(api, VIEWER_TOKEN, &["show", &w.dlq, "--limit", "2"]).await;
    assert_eq!(code, 0);
    let more = out
        .lines()
        .find(|l| l.starts_with("more: choreo dlq show "))
        .unwrap_or_else(|| panic!("a more: line: {out}"));
    assert!(more.contains("--limit 2 --before "), "{more}");

    let poison = id_of(&all["poison-1"]);
    let (code, out, err) = cli(api, VIEWER_TOKEN, &["show", &poison]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kind          handler_permanent"), "{out}");
    assert!(out.contains("\"order_id\": \"poison-1\""), "{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    let (code, out, _) = cli(api, VIEWER_TOKEN, &["show", &id_of(&all["junk-1"])]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("PAYLOAD (not decoded: ") && out.contains("base64: AQID"),
        "{out}"
    );
    let (code, json_out, _) = cli(api, VIEWER_TOKEN, &["show", &poison, "--json"]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&json_out).expect("--json prints JSON");
    assert_eq!(v["id"], poison.as_str());

    // A viewer may not redrive: the API's 403, exit 2.
    let (code, _, err) = cli(
        api,
        VIEWER_TOKEN,
        &["redrive", &w.dlq, "--id", &poison, "--yes"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("403"), "{err}");
    // Without --yes: what it would do, nothing sent.
    w.broken.store(false, Ordering::SeqCst);
    let (code, out, err) = cli(
        api,
        OPERATOR_TOKEN,
        &["redrive", &w.dlq, "--kind", "handler_permanent"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("would redrive 4 record(s) of"), "{out}");
    assert!(out.contains("nothing sent"), "{out}");
    assert!(
        w.dead_letters()
            .await
            .expect("records")
            .values()
            .all(|r| r["redriven"] == json!([]))
    );
    // One by its short id, then the rest by reason text.
    let short = poison.trim_start_matches(&format!("{}/", w.dlq)).to_owned();
    let (code, out, err) = cli(
        api,
        OPERATOR_TOKEN,
        &[
            "redrive",
            &w.dlq,
            "--id",
            &short,
            "--yes",
            "--note",
            "retry after fix",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("redrove 1 record(s)"), "{out}");
    let (code, out, err) = cli(
        api,
        OPERATOR_TOKEN,
        &["redrive", &w.dlq, "--reason", "card processor", "--yes"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("redrove 3 record(s)"), "{out}");
    w.wait_handled("every poison handled", |h| {
        (1..=4).all(|i| h.iter().any(|o| *o == format!("poison-{i}")))
    })
    .await
    .expect("handled");
    // Nothing left to redrive by that filter: exit 1.
    let (code, out, _) = cli(
        api,
        OPERATOR_TOKEN,
        &["redrive", &w.dlq, "--reason", "card processor", "--yes"],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    // Shown as redriven, by whom.
    let (_, out, _) = cli(api, VIEWER_TOKEN, &["show", &poison]).await;
    assert!(
        out.lines().any(|l| l.starts_with("redriven")
            && l.contains("by alice")
            && l.contains("(retry after fix)")),
        "{out}"
    );
    // Bad arguments and an unknown API: exit 2.
    let (code, _, _) = cli(api, OPERATOR_TOKEN, &["redrive", &w.dlq]).await;
    assert_eq!(code, 2);
    let (code, _, err) = cli("http://127.0.0.1:9", VIEWER_TOKEN, &["list"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach the choreo API"), "{err}");
}
