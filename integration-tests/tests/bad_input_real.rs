//! The coordinator's bad-input matrix on Apache Kafka: every kind of bad record on a saga topic
//! goes to `<topic>.dlq` with its kind, the original key, value and headers, and where it came
//! from; the partition moves on; the replica stays up; a saga placed after all of it
//! completes. Events whose start never comes are held up to `coordinator.max_pending_sagas`
//! sagas, and dead-lettered as `no_saga` beyond it.
//!
//! (A correctly framed event of a type no saga consumes is another service's event on a shared
//! topic: the coordinator skips it, it is not poison. The bus subscribers' matrix, which does
//! dead-letter it, is `poison_goes_to_the_dead_letter_topic` in `bus_real.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use choreo_bus::dead_letter::header as dlq;
use choreo_bus::wire::envelope::header;
use choreo_integration_tests::process::Replica;
use choreo_integration_tests::saga_scenarios::{Path, order, start_services};
use choreo_integration_tests::scenarios::Env;
use choreo_integration_tests::world::World;
use choreo_schemas::event::{Money, PaymentAuthorized};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn text(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_bad_input_is_dead_lettered_and_a_saga_beside_it_completes() {
    let world = World::real_with_saga_topics().await;
    let mut cfg = world.replica_config("exactly_once", 60);
    cfg.env
        .push(("CHOREO__COORDINATOR__MAX_PENDING_SAGAS".into(), "2".into()));
    let mut replica = Replica::start(&cfg, "bad-input-0").await.expect("replica");
    replica
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("ready");
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");
    let reader = Env {
        bootstrap: world.broker.bootstrap.clone(),
        registry: world.registry.clone(),
        embedded: None,
    };

    // A good order first: the schema is registered and its bytes are real.
    Path::Happy.drive(&bus, "good-first").await.expect("inputs");
    let good = bus
        .codec()
        .encode("orders", &order("o-bad"))
        .await
        .expect("encoded");
    let id = u32::from_be_bytes([good[1], good[2], good[3], good[4]]);
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 9;
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&(id ^ 0x5a5a_5a5a).to_be_bytes());
    let truncated = good[..good.len() / 2].to_vec();
    let mut absurd = good[..5].to_vec();
    let mut n: u64 = (1u64 << 40) << 1; // zig-zag: the first string claims 2^40 bytes
    while n >= 0x80 {
        absurd.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    absurd.push(n as u8);
    absurd.extend_from_slice(b"o-bad");
    let random: Vec<u8> = (0u32..200)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8 | 0x80)
        .collect();
    type Case = (
        &'static str,
        &'static str,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<(&'static str, Vec<u8>)>,
    );
    let key = || Some(b"o-bad".to_vec());
    let cases: Vec<Case> = vec![
        (
            "wrong_magic",
            "wrong_magic_byte",
            key(),
            Some(wrong_magic),
            None,
        ),
        (
            "unknown_schema",
            "unknown_schema_id",
            key(),
            Some(unknown_id),
            None,
        ),
        ("truncated", "truncated", key(), Some(truncated), None),
        ("absurd_length", "malformed_avro", key(), Some(absurd), None),
        (
            "random_bytes",
            "wrong_magic_byte",
            key(),
            Some(random),
            None,
        ),
        ("null_value", "truncated", key(), None, None),
        ("missing_key", "missing_key", None, Some(good.clone()), None),
        (
            "invalid_key",
            "invalid_key",
            Some(vec![0xff, 0x00, 0xfe]),
            Some(good.clone()),
            None,
        ),
        (
            "invalid_header",
            "invalid_header",
            key(),
            Some(good.clone()),
            Some((header::ID, vec![0xc3, 0x28])),
        ),
    ];
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &world.broker.bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for (case, _, k, v, h) in &cases {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "case",
            value: Some(*case),
        });
        if let Some((name, value)) = h {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let mut rec = FutureRecord::<[u8], [u8]>::to("orders").headers(headers);
        if let Some(k) = k {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = v {
            rec = rec.payload(v.as_slice());
        }
        raw.send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("sent");
    }

    // Payments for orders never placed: two wait for their start, the third is refused.
    let stray = |n: u32| PaymentAuthorized {
        order_id: format!("never-placed-{n}"),
        payment_id: format!("stray-{n}"),
        amount: Money {
            amount_minor: 1,
            currency: "EUR".into(),
        },
    };
    bus.publish(&stray(1)).await.expect("stray 1");
    bus.publish(&stray(2)).await.expect("stray 2");
    let deadline = Instant::now() + Duration::from_secs(60);
    while replica.counter("choreo_sagas_pending").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "two sagas never waited for their start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bus.publish(&stray(3)).await.expect("stray 3");

    // A saga after all of it completes.
    Path::Happy.drive(&bus, "good-after").await.expect("inputs");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s: Option<serde_json::Value> =
            match reqwest::get(format!("{}/api/sagas/order/good-after", replica.api)).await {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
        if s.as_ref().is_some_and(|s| s["status"] == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the saga after the bad input: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(replica.is_running(), "the replica is still up");

    let dead = reader
        .read("orders.dlq", cases.len())
        .await
        .expect("dead letters");
    let by_case: BTreeMap<String, &OwnedMessage> = dead
        .iter()
        .filter_map(|m| Some((text(m, "case")?, m)))
        .collect();
    for (case, kind, k, v, h) in &cases {
        let m = by_case
            .get(*case)
            .unwrap_or_else(|| panic!("{case} is dead-lettered; got {:?}", by_case.keys()));
        assert_eq!(text(m, dlq::KIND).as_deref(), Some(*kind), "{case}: kind");
        assert_eq!(m.key(), k.as_deref(), "{case}: key kept");
        assert_eq!(m.payload(), v.as_deref(), "{case}: value kept");
        if let Some((name, value)) = h {
            let kept = m
                .headers()
                .and_then(|hs| hs.iter().find(|x| x.key == *name).and_then(|x| x.value));
            assert_eq!(kept, Some(value.as_slice()), "{case}: header {name} kept");
        }
        assert_eq!(text(m, dlq::TOPIC).as_deref(), Some("orders"), "{case}");
        assert!(
            text(m, dlq::REASON).is_some_and(|r| !r.is_empty()),
            "{case}: a reason"
        );
        assert_eq!(
            text(m, dlq::HANDLER).as_deref(),
            Some("saga-coordinator"),
            "{case}"
        );
    }
    let refused = reader
        .read("payments.dlq", 1)
        .await
        .expect("the third stray")
        .remove(0);
    assert_eq!(text(&refused, dlq::KIND).as_deref(), Some("no_saga"));
    assert_eq!(refused.key(), Some(b"never-placed-3".as_slice()));
    assert!(
        text(&refused, dlq::REASON).is_some_and(|r| r.contains("max_pending_sagas")),
        "{:?}",
        text(&refused, dlq::REASON)
    );

    services.shutdown().await.expect("services stop");
    replica.stop().await.expect("stops");
}
