//! Walks `schemas/`: every schema parses, a sample of each round-trips through Avro binary, every
//! Rust type round-trips through its schema, and each new version is checked against the previous
//! ones under the catalog's compatibility rule (override with `CHOREO_SCHEMA_COMPATIBILITY`,
//! e.g. `FULL_TRANSITIVE`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use choreo_schemas::binary::BinaryError;
use choreo_schemas::event::*;
use choreo_schemas::{Catalog, Compatibility, Event};

/// The crate's folder, as the running test sees it (not as it was when compiled: a build
/// shared between two checkouts must read the one under test).
fn folder() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
}

/// A value that fills every field of `schema` with something non-trivial.
fn sample(schema: &Schema, depth: u32) -> Value {
    use apache_avro::schema::Schema as S;
    match schema {
        S::Null => Value::Null,
        S::Boolean => Value::Boolean(true),
        S::Int => Value::Int(7),
        S::Long => Value::Long(1_700_000_000_000),
        S::Float => Value::Float(1.5),
        S::Double => Value::Double(2.5),
        S::String => Value::String(format!("s{depth}")),
        S::Bytes => Value::Bytes(vec![1, 2, 3]),
        S::TimestampMillis => Value::TimestampMillis(1_700_000_000_000),
        S::Array(a) => Value::Array(vec![
            sample(&a.items, depth + 1),
            sample(&a.items, depth + 2),
        ]),
        S::Map(m) => Value::Map([("k".to_owned(), sample(&m.types, depth + 1))].into()),
        S::Union(u) => {
            let v = &u.variants()[u.variants().len() - 1];
            Value::Union(
                (u.variants().len() - 1) as u32,
                Box::new(sample(v, depth + 1)),
            )
        }
        S::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, depth + 1)))
                .collect(),
        ),
        S::Enum(e) => Value::Enum(0, e.symbols[0].clone()),
        S::Ref { .. } => Value::Record(vec![
            ("amount_minor".into(), Value::Long(1999)),
            ("currency".into(), Value::String("EUR".into())),
        ]),
        other => panic!("sample() does not cover {other:?}; extend it"),
    }
}

fn roundtrip_value(schema: &Schema, value: Value) -> Value {
    let bytes = GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("encode");
    GenericDatumReader::builder(schema)
        .build()
        .expect("reader")
        .read_value(&mut bytes.as_slice())
        .expect("decode")
}

#[test]
fn every_schema_file_is_listed_parses_and_round_trips_a_sample() {
    let catalog = Catalog::load(folder()).expect("catalog loads");
    let listed: BTreeSet<String> = catalog
        .events()
        .flat_map(|e| e.versions.iter().map(|v| v.file.clone()))
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(folder().join("avro"))
        .expect("avro folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    assert_eq!(
        listed, on_disk,
        "every .avsc file is in catalog.toml and vice versa"
    );
    for event in catalog.events() {
        for v in &event.versions {
            let value = sample(&v.schema, 0);
            let back = roundtrip_value(&v.schema, value.clone());
            assert_eq!(back, value, "{} round-trips", v.file);
        }
    }
}

#[test]
fn compiled_in_catalog_matches_the_folder() {
    let disk = Catalog::load(folder()).expect("catalog loads");
    let built = Catalog::reference();
    let names = |c: &Catalog| {
        c.events()
            .map(|e| (e.name.clone(), e.topic.clone(), e.versions.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&disk), names(&built));
}

#[test]
fn each_new_version_is_compatible_with_the_previous_ones() {
    let catalog = Catalog::load(folder()).expect("catalog loads");
    let rule: Compatibility = match std::env::var("CHOREO_SCHEMA_COMPATIBILITY") {
        Ok(s) => s
            .parse()
            .expect("CHOREO_SCHEMA_COMPATIBILITY is a compatibility level"),
        Err(_) => catalog.compatibility(),
    };
    let mut evolved = 0;
    for event in catalog.events() {
        for n in 1..event.versions.len() {
            let previous: Vec<&Schema> = event.versions[..n].iter().map(|v| &v.schema).collect();
            if let Err(why) = rule.check(&previous, &event.versions[n].schema) {
                panic!(
                    "{} ({}) breaks {rule}: {why}",
                    event.versions[n].file, event.name
                );
            }
            evolved += 1;
        }
    }
    assert!(evolved >= 1, "at least one event exists in two versions");
}

#[test]
fn a_breaking_change_is_reported_with_the_field_that_breaks_it() {
    let v1 = Schema::parse_str(OrderPlacedV1::schema_text()).expect("v1");
    // v2 without the default on `channel`: a v2 reader cannot read v1 data.
    let broken_text = OrderPlaced::schema_text().replace("\"default\": \"web\",", "");
    assert_ne!(
        broken_text,
        OrderPlaced::schema_text(),
        "the default was removed"
    );
    let broken = Schema::parse_str(&broken_text).expect("still valid Avro");
    let err = Compatibility::Backward
        .check(&[&v1], &broken)
        .expect_err("must break BACKWARD");
    assert!(err.contains("channel"), "names the field: {err}");
    // Adding a field with a default is BACKWARD and FORWARD compatible, so FULL too.
    let v2 = Schema::parse_str(OrderPlaced::schema_text()).expect("v2");
    Compatibility::FullTransitive
        .check(&[&v1], &v2)
        .expect("FULL_TRANSITIVE holds");
    // Without the default, FORWARD still holds (an old reader ignores the new field).
    Compatibility::Forward
        .check(&[&v1], &broken)
        .expect("FORWARD holds");
}

fn typed_roundtrip<T: Event + PartialEq + std::fmt::Debug>(event: T) {
    let bytes = GenericDatumWriter::builder(T::schema())
        .build()
        .expect("writer")
        .write_ser_to_vec(&event)
        .unwrap_or_else(|e| panic!("{} encodes: {e}", T::TYPE));
    let value = GenericDatumReader::builder(T::schema())
        .build()
        .expect("reader")
        .read_value(&mut bytes.as_slice())
        .unwrap_or_else(|e| panic!("{} decodes: {e}", T::TYPE));
    let back: T =
        apache_avro::from_value(&value).unwrap_or_else(|e| panic!("{} maps: {e}", T::TYPE));
    assert_eq!(back, event);
    // The specific coder writes the same bytes and reads them back; every shorter body and a
    // longer one are errors, not values or panics.
    let coder = T::SPECIFIC.unwrap_or_else(|| panic!("{} has a specific coder", T::TYPE));
    let mut written = Vec::new();
    (coder.write)(&event, &mut written);
    assert_eq!(
        written,
        bytes,
        "{}: the specific coder writes apache-avro's bytes",
        T::TYPE
    );
    let plan = coder
        .plan(T::schema(), T::schema())
        .unwrap_or_else(|e| panic!("{} plans its own schema: {e}", T::TYPE));
    assert_eq!(
        coder.read_whole(&bytes, &plan).as_ref(),
        Ok(&event),
        "{}",
        T::TYPE
    );
    for end in 0..bytes.len() {
        assert!(
            coder.read_whole(&bytes[..end], &plan).is_err(),
            "{}: a body cut at {end} of {} bytes is an error",
            T::TYPE,
            bytes.len()
        );
    }
    let mut longer = bytes;
    longer.push(0);
    assert!(
        matches!(coder.read_whole(&longer, &plan), Err(BinaryError::Malformed(m)) if m.contains("left over")),
        "{}: a byte left over is malformed",
        T::TYPE
    );
    let catalog = Catalog::reference();
    let info = catalog
        .event(T::TYPE)
        .unwrap_or_else(|| panic!("{} in catalog", T::TYPE));
    assert_eq!(info.topic, T::TOPIC, "{} topic", T::TYPE);
}

fn eur(cents: i64) -> Money {
    Money {
        amount_minor: cents,
        currency: "EUR".into(),
    }
}

#[test]
fn every_rust_type_round_trips_through_its_schema() {
    let id = || "order-1".to_owned();
    typed_roundtrip(OrderPlaced {
        order_id: id(),
        customer_id: "c-1".into(),
        items: vec![LineItem {
            sku: "sku-1".into(),
            quantity: 2,
            unit_price: eur(1000),
        }],
        total: eur(2000),
        shipping_address: "1 Main St".into(),
        channel: "mobile".into(),
    });
    typed_roundtrip(OrderPlacedV1 {
        order_id: id(),
        customer_id: "c-1".into(),
        items: vec![],
        total: eur(0),
        shipping_address: "1 Main St".into(),
    });
    typed_roundtrip(PaymentAuthorized {
        order_id: id(),
        payment_id: "p".into(),
        amount: eur(5),
    });
    typed_roundtrip(PaymentDeclined {
        order_id: id(),
        reason: "card expired".into(),
    });
    typed_roundtrip(RefundPayment {
        order_id: id(),
        payment_id: "p".into(),
        amount: eur(5),
        reason: "r".into(),
    });
    typed_roundtrip(PaymentRefunded {
        order_id: id(),
        payment_id: "p".into(),
    });
    typed_roundtrip(InventoryReserved {
        order_id: id(),
        reservation_id: "r".into(),
        items: vec![ReservedItem {
            sku: "s".into(),
            quantity: 1,
        }],
    });
    typed_roundtrip(InventoryUnavailable {
        order_id: id(),
        reason: "r".into(),
        missing_skus: vec!["s".into()],
    });
    typed_roundtrip(ReleaseInventory {
        order_id: id(),
        reservation_id: "r".into(),
        reason: "r".into(),
    });
    typed_roundtrip(InventoryReleased {
        order_id: id(),
        reservation_id: "r".into(),
    });
    typed_roundtrip(ShipmentRequested {
        order_id: id(),
        shipping_address: "a".into(),
    });
    typed_roundtrip(ShipmentScheduled {
        order_id: id(),
        shipment_id: "s".into(),
        carrier: "dhl".into(),
        estimated_delivery_ms: 1_700_000_000_000,
    });
    typed_roundtrip(ShipmentFailed {
        order_id: id(),
        reason: "r".into(),
    });
    typed_roundtrip(CancelShipment {
        order_id: id(),
        shipment_id: "s".into(),
        reason: "r".into(),
    });
    typed_roundtrip(ShipmentCancelled {
        order_id: id(),
        shipment_id: "s".into(),
    });
    typed_roundtrip(OrderConfirmed {
        order_id: id(),
        payment_id: "p".into(),
        reservation_id: "r".into(),
        shipment_id: "s".into(),
    });
    typed_roundtrip(OrderCancelled {
        order_id: id(),
        reason: "r".into(),
    });
}

#[test]
fn a_v1_record_reads_as_v2_with_the_default() {
    let old = OrderPlacedV1 {
        order_id: "o".into(),
        customer_id: "c".into(),
        items: vec![],
        total: eur(1),
        shipping_address: "a".into(),
    };
    let bytes = GenericDatumWriter::builder(OrderPlacedV1::schema())
        .build()
        .expect("writer")
        .write_ser_to_vec(&old)
        .expect("encode");
    let value = GenericDatumReader::builder(OrderPlacedV1::schema())
        .reader_schema(OrderPlaced::schema())
        .build()
        .expect("reader")
        .read_value(&mut bytes.as_slice())
        .expect("resolves");
    let new: OrderPlaced = apache_avro::from_value(&value).expect("maps");
    assert_eq!(new.channel, "web");
    assert_eq!(new.order_id, "o");

    // The specific coder plans the pair (the default written once) and reads the same value.
    let coder = OrderPlaced::SPECIFIC.expect("a specific coder");
    let plan = coder
        .plan(OrderPlacedV1::schema(), OrderPlaced::schema())
        .expect("v1 → v2 is planned");
    assert_eq!(coder.read_whole(&bytes, &plan), Ok(new.clone()));

    // And the other way: a v1 reader skips the v2 writer's channel.
    let mut v2_bytes = Vec::new();
    (coder.write)(&new, &mut v2_bytes);
    let v1 = OrderPlacedV1::SPECIFIC.expect("a specific coder");
    let plan = v1
        .plan(OrderPlaced::schema(), OrderPlacedV1::schema())
        .expect("v2 → v1 is planned");
    assert_eq!(v1.read_whole(&v2_bytes, &plan), Ok(old));
}

#[test]
fn a_broken_catalog_is_rejected_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("choreo-catalog-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("avro")).expect("tmp");
    std::fs::write(
        dir.join("catalog.toml"),
        "compatibility = \"BACKWARD\"\n\n[events.\"x.Y\"]\ntopic = \"t\"\nversions = [\"y.avsc\"]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("avro/y.avsc"),
        r#"{"type":"record","name":"Z","namespace":"x","fields":[]}"#,
    )
    .expect("write");
    let err = Catalog::load(&dir).expect_err("name mismatch").to_string();
    assert!(err.contains("catalog.toml:3:"), "{err}");
    assert!(err.contains("defines x.Z"), "{err}");
    std::fs::write(dir.join("catalog.toml"), "compatibility = \"SIDEWAYS\"\n").expect("write");
    let err = Catalog::load(&dir).expect_err("bad level").to_string();
    assert!(err.contains("catalog.toml:1:"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
