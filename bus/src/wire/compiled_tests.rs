//! The compiled codec against apache-avro: the same bytes written, the same values read (also
//! across schema versions), and every malformed-input rule.

use apache_avro::Schema;
use apache_avro::writer::datum::GenericDatumWriter;
use choreo_schemas::event::*;
use choreo_schemas::{Catalog, Event};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::compiled::{Decoder, Encoder};
use crate::error::DecodeError;
use crate::wire::codec::{MAX_AVRO_ALLOCATION, decode_value};

/// The zig-zag varint of `v`.
fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes());
    while z >= 0x80 {
        out.push(z.to_le_bytes()[0] | 0x80);
        z >>= 7;
    }
    out.push(z.to_le_bytes()[0]);
}

fn schema(text: &str) -> Schema {
    Schema::parse_str(text).expect("a valid schema")
}

/// What apache-avro writes for `value` with `schema`.
fn avro_bytes<T: Serialize>(schema: &Schema, value: &T) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_ser_to_vec(value))
        .expect("apache-avro writes it")
}

/// apache-avro's generic value of `body`, resolved when the schemas differ.
fn avro_value(
    writer: &Schema,
    reader: &Schema,
    body: &[u8],
) -> Result<apache_avro::types::Value, DecodeError> {
    let reader = (writer.canonical_form() != reader.canonical_form()).then_some(reader);
    decode_value(writer, reader, body)
}

/// What apache-avro reads: the generic value, then serde.
fn avro_read<T: DeserializeOwned>(writer: &Schema, reader: &Schema, body: &[u8]) -> T {
    let value = avro_value(writer, reader, body).expect("apache-avro reads it");
    apache_avro::from_value(&value).expect("apache-avro converts it")
}

fn compiled_read<T: DeserializeOwned>(
    writer: &Schema,
    reader: &Schema,
    body: &[u8],
) -> Result<T, DecodeError> {
    Decoder::new(writer, reader).expect("plans").decode(body)
}

fn eur(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "EUR".into(),
    }
}

fn line(i: i32) -> LineItem {
    LineItem {
        sku: format!("SKU-{i}"),
        quantity: i,
        unit_price: eur(-499 * i64::from(i)),
    }
}

/// Writes `event` both ways, checks the bytes are apache-avro's, reads them back both ways.
fn round_trip<T: Event + PartialEq + std::fmt::Debug>(event: &T) -> String {
    let ours = Encoder::new(T::schema())
        .expect("compiles")
        .encode(event)
        .expect("encodes");
    assert_eq!(
        ours,
        avro_bytes(T::schema(), event),
        "{}: the bytes apache-avro writes",
        T::TYPE
    );
    let back: T = compiled_read(T::schema(), T::schema(), &ours).expect("decodes");
    assert_eq!(&back, event, "{}", T::TYPE);
    assert_eq!(&avro_read::<T>(T::schema(), T::schema(), &ours), event);
    assert_eq!(
        compiled_json(T::schema(), T::schema(), &ours),
        Ok(avro_json(T::schema(), T::schema(), &ours).expect("apache-avro reads it")),
        "{}: as JSON",
        T::TYPE
    );
    T::TYPE.to_owned()
}

/// What apache-avro reads as JSON: its generic value (resolved when the schemas differ),
/// converted.
fn avro_json(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<serde_json::Value, String> {
    let value = avro_value(writer, reader, body).map_err(|e| e.to_string())?;
    serde_json::Value::try_from(value).map_err(|e| e.to_string())
}

fn compiled_json(
    writer: &Schema,
    reader: &Schema,
    body: &[u8],
) -> Result<serde_json::Value, DecodeError> {
    Decoder::new(writer, reader)
        .expect("plans")
        .decode_json(body)
}

/// Every kind of Avro value, read as JSON by the compiled decoder and by apache-avro (its
/// generic value converted), also across schema versions: the same JSON; and a float JSON
/// cannot hold is an error of both.
#[test]
fn one_json_decode_agrees_with_apache_avros_value_turned_to_json() {
    use apache_avro::types::Value as V;
    let all = schema(
        r#"{"type": "record", "name": "All", "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "Suit", "symbols": ["Hearts", "Spades"]}},
        {"name": "arr", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "int"}},
        {"name": "rec", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "x", "type": "int"}, {"name": "y", "type": "string"}]}},
        {"name": "fx", "type": {"type": "fixed", "name": "F2", "size": 2}},
        {"name": "u", "type": ["null", "string", "long"]},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "dt", "type": {"type": "int", "logicalType": "date"}}]}"#,
    );
    let value = |d: f64| {
        V::Record(vec![
            ("n".into(), V::Null),
            ("b".into(), V::Boolean(true)),
            ("i".into(), V::Int(-7)),
            ("l".into(), V::Long(1 << 40)),
            ("f".into(), V::Float(1.5)),
            ("d".into(), V::Double(d)),
            ("by".into(), V::Bytes(vec![255, 0, b'A'])),
            ("s".into(), V::String("dé".into())),
            ("e".into(), V::Enum(1, "Spades".into())),
            ("arr".into(), V::Array(vec![V::Long(1), V::Long(-2)])),
            (
                "m".into(),
                V::Map([("k".to_owned(), V::Int(3))].into_iter().collect()),
            ),
            (
                "rec".into(),
                V::Record(vec![
                    ("x".into(), V::Int(4)),
                    ("y".into(), V::String("why".into())),
                ]),
            ),
            ("fx".into(), V::Fixed(2, vec![1, 2])),
            ("u".into(), V::Union(2, Box::new(V::Long(5)))),
            ("ts".into(), V::TimestampMillis(86_400_000)),
            ("dt".into(), V::Date(19_000)),
        ])
    };
    let write = |v| {
        GenericDatumWriter::builder(&all)
            .build()
            .and_then(|w| w.write_value_to_vec(v))
            .expect("apache-avro writes it")
    };
    let body = write(value(-2.25));
    let json = compiled_json(&all, &all, &body).expect("decodes");
    assert_eq!(Ok(json.clone()), avro_json(&all, &all, &body));
    assert_eq!(json["by"], serde_json::json!([255, 0, 65]));
    assert_eq!(json["u"], serde_json::json!(5));
    assert_eq!(json["e"], serde_json::json!("Spades"));

    // A reader one version on: a field promoted, one dropped, one added with a default.
    let later = schema(
        r#"{"type": "record", "name": "All", "fields": [
        {"name": "i", "type": "long"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "Suit", "symbols": ["Spades", "Clubs"]}},
        {"name": "u", "type": ["null", "string", "long"]},
        {"name": "added", "type": {"type": "array", "items": "string"}, "default": ["a"]},
        {"name": "f", "type": "double"}]}"#,
    );
    let json = compiled_json(&all, &later, &body).expect("decodes");
    assert_eq!(Ok(json.clone()), avro_json(&all, &later, &body));
    assert_eq!(json["added"], serde_json::json!(["a"]));
    assert!(json.get("by").is_none(), "a dropped field is not read");

    let nan = write(value(f64::NAN));
    assert!(avro_json(&all, &all, &nan).is_err());
    assert!(
        matches!(compiled_json(&all, &all, &nan), Err(DecodeError::Malformed(m)) if m.contains("NaN")),
        "a NaN is no JSON number"
    );
}

#[test]
fn every_catalog_event_round_trips_with_apache_avros_bytes() {
    let s = |t: &str| format!("{t}-é✓");
    let mut done = vec![
        round_trip(&OrderPlaced {
            order_id: s("o"),
            customer_id: s("c"),
            items: (1..=3).map(line).collect(),
            total: eur(i64::MIN),
            shipping_address: String::new(),
            channel: s("mobile"),
        }),
        round_trip(&OrderPlacedV1 {
            order_id: s("o"),
            customer_id: s("c"),
            items: vec![],
            total: eur(i64::MAX),
            shipping_address: s("a"),
        }),
        round_trip(&PaymentAuthorized {
            order_id: s("o"),
            payment_id: s("p"),
            amount: eur(0),
        }),
        round_trip(&PaymentDeclined {
            order_id: s("o"),
            reason: s("r"),
        }),
        round_trip(&RefundPayment {
            order_id: s("o"),
            payment_id: s("p"),
            amount: eur(1),
            reason: s("r"),
        }),
        round_trip(&PaymentRefunded {
            order_id: s("o"),
            payment_id: s("p"),
        }),
        round_trip(&InventoryReserved {
            order_id: s("o"),
            reservation_id: s("r"),
            items: vec![
                ReservedItem {
                    sku: s("k"),
                    quantity: i32::MIN,
                },
                ReservedItem {
                    sku: s("l"),
                    quantity: i32::MAX,
                },
            ],
        }),
        round_trip(&InventoryUnavailable {
            order_id: s("o"),
            reason: s("r"),
            missing_skus: vec![s("a"), s("b")],
        }),
        round_trip(&ReleaseInventory {
            order_id: s("o"),
            reservation_id: s("r"),
            reason: s("x"),
        }),
        round_trip(&InventoryReleased {
            order_id: s("o"),
            reservation_id: s("r"),
        }),
        round_trip(&ShipmentRequested {
            order_id: s("o"),
            shipping_address: s("a"),
        }),
        round_trip(&ShipmentScheduled {
            order_id: s("o"),
            shipment_id: s("s"),
            carrier: s("c"),
            estimated_delivery_ms: 1_700_000_000_123,
        }),
        round_trip(&ShipmentFailed {
            order_id: s("o"),
            reason: s("r"),
        }),
        round_trip(&CancelShipment {
            order_id: s("o"),
            shipment_id: s("s"),
            reason: s("r"),
        }),
        round_trip(&ShipmentCancelled {
            order_id: s("o"),
            shipment_id: s("s"),
        }),
        round_trip(&OrderConfirmed {
            order_id: s("o"),
            payment_id: s("p"),
            reservation_id: s("r"),
            shipment_id: s("s"),
        }),
        round_trip(&OrderCancelled {
            order_id: s("o"),
            reason: s("r"),
        }),
    ];
    done.sort();
    done.dedup();
    let mut catalog: Vec<String> = Catalog::reference()
        .events()
        .map(|e| e.name.clone())
        .collect();
    catalog.sort();
    assert_eq!(done, catalog, "every event type of the catalog is covered");
}

fn order_v1() -> OrderPlacedV1 {
    OrderPlacedV1 {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        items: vec![line(1), line(2)],
        total: eur(998),
        shipping_address: "Hauptstrasse 12".into(),
    }
}

#[test]
fn v1_read_as_v2_and_v2_as_v1_as_apache_avro_resolves_them() {
    let (v1, v2) = (OrderPlacedV1::schema(), OrderPlaced::schema());
    let body = Encoder::new(v1)
        .expect("compiles")
        .encode(&order_v1())
        .expect("encodes");
    let up: OrderPlaced = compiled_read(v1, v2, &body).expect("v1 read as v2");
    assert_eq!(
        up.channel, "web",
        "the reader's default fills the field v1 lacks"
    );
    assert_eq!(up, avro_read::<OrderPlaced>(v1, v2, &body));

    let mut newer: OrderPlaced = up;
    newer.channel = "store".into();
    let body = Encoder::new(v2)
        .expect("compiles")
        .encode(&newer)
        .expect("encodes");
    let down: OrderPlacedV1 = compiled_read(v2, v1, &body).expect("v2 read as v1");
    assert_eq!(down, order_v1(), "the field v1 lacks is skipped");
    assert_eq!(down, avro_read::<OrderPlacedV1>(v2, v1, &body));
}

/// A struct declaring its fields in another order than its schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shuffled {
    c: Option<String>,
    a: i64,
    b: Vec<i32>,
}

const SHUFFLED: &str = r#"{"type": "record", "name": "Unrelated", "fields": [
    {"name": "a", "type": "long"},
    {"name": "b", "type": {"type": "array", "items": "int"}},
    {"name": "c", "type": ["null", "string"]}]}"#;

#[test]
fn fields_are_written_in_schema_order_whatever_the_struct_order() {
    let s = schema(SHUFFLED);
    let v = Shuffled {
        c: Some("x".into()),
        a: -3,
        b: vec![1, -1, 300],
    };
    let ours = Encoder::new(&s)
        .expect("compiles")
        .encode(&v)
        .expect("encodes");
    assert_eq!(ours, avro_bytes(&s, &v));
    assert_eq!(ours[0], 5, "a (-3) first");
    assert_eq!(compiled_read::<Shuffled>(&s, &s, &ours), Ok(v.clone()));
    let none = Shuffled { c: None, ..v };
    let ours = Encoder::new(&s)
        .expect("compiles")
        .encode(&none)
        .expect("encodes");
    assert_eq!(ours, avro_bytes(&s, &none));
    assert_eq!(compiled_read::<Shuffled>(&s, &s, &ours), Ok(none));
}

/// One encoder and one decoder of a schema, used alternately for a struct declared in the
/// schema's order (written field by field in turn, read by position) and for one declared in
/// another order (written aside and moved, read by name): neither answer is mistaken for the
/// other's, whichever comes first.
#[test]
fn one_codec_serves_structs_in_and_out_of_schema_order_alternately() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct InOrder {
        a: i64,
        b: Vec<i32>,
        c: Option<String>,
    }
    let s = schema(SHUFFLED);
    let encoder = Encoder::new(&s).expect("compiles");
    let decoder = Decoder::new(&s, &s).expect("plans");
    for i in 0..4 {
        let shuffled = Shuffled {
            c: (i % 2 == 0).then(|| format!("x{i}")),
            a: -i,
            b: (0..i)
                .map(|n| i32::try_from(n * 1000).expect("small"))
                .collect(),
        };
        let in_order = InOrder {
            a: shuffled.a,
            b: shuffled.b.clone(),
            c: shuffled.c.clone(),
        };
        let (first, second) = if i % 2 == 0 {
            let one = encoder.encode(&shuffled).expect("encodes");
            (one, encoder.encode(&in_order).expect("encodes"))
        } else {
            let two = encoder.encode(&in_order).expect("encodes");
            (encoder.encode(&shuffled).expect("encodes"), two)
        };
        assert_eq!(first, avro_bytes(&s, &in_order), "round {i}");
        assert_eq!(second, first, "round {i}");
        if i % 2 == 0 {
            assert_eq!(decoder.decode::<Shuffled>(&first), Ok(shuffled.clone()));
            assert_eq!(decoder.decode::<InOrder>(&first), Ok(in_order.clone()));
        } else {
            assert_eq!(decoder.decode::<InOrder>(&first), Ok(in_order.clone()));
            assert_eq!(decoder.decode::<Shuffled>(&first), Ok(shuffled.clone()));
        }
    }
}

/// How a struct asked for its fields was handed them: `seq` (by position) or `map` (by name).
#[derive(Debug, PartialEq)]
struct HandedAs(&'static str);

/// Asks for a struct with `FIELDS` and notes how the fields came.
fn handed_as<'de, D: serde::Deserializer<'de>>(
    d: D,
    fields: &'static [&'static str],
) -> Result<HandedAs, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = HandedAs;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a struct")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<HandedAs, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(HandedAs("seq"))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<HandedAs, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(HandedAs("map"))
        }
    }
    d.deserialize_struct("S", fields, V)
}

/// A struct is handed the record's fields by position only when it lists them as the record
/// hands them over (the writer's it has, in order, then the defaults); any other order, or a
/// list with a field more or less, is handed them by name. Asked alternately, each list keeps
/// its own answer.
#[test]
fn a_struct_is_handed_its_fields_by_position_only_when_it_lists_them_in_order() {
    macro_rules! listing {
        ($name:ident, $fields:expr) => {
            struct $name(HandedAs);
            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    handed_as(d, $fields).map($name)
                }
            }
        };
    }
    listing!(InOrder, &["a", "b", "c"]);
    listing!(OtherOrder, &["c", "a", "b"]);
    listing!(Fewer, &["a", "b"]);
    // How each of the three lists is handed the record `body`.
    let handed = |decoder: &Decoder, body: &[u8]| {
        (
            decoder.decode::<InOrder>(body).map(|v| v.0.0),
            decoder.decode::<OtherOrder>(body).map(|v| v.0.0),
            decoder.decode::<Fewer>(body).map(|v| v.0.0),
        )
    };
    let s = schema(SHUFFLED);
    let body = Encoder::new(&s)
        .expect("compiles")
        .encode(&Shuffled {
            c: Some("x".into()),
            a: 1,
            b: vec![2],
        })
        .expect("encodes");
    let decoder = Decoder::new(&s, &s).expect("plans");
    for _ in 0..2 {
        assert_eq!(handed(&decoder, &body), (Ok("seq"), Ok("map"), Ok("map")));
    }
    // A reader field the writer lacks comes last, with its default.
    let writer = schema(
        r#"{"type": "record", "name": "Unrelated", "fields": [
        {"name": "a", "type": "long"},
        {"name": "b", "type": {"type": "array", "items": "int"}}]}"#,
    );
    let reader = schema(
        r#"{"type": "record", "name": "Unrelated", "fields": [
        {"name": "c", "type": ["null", "string"], "default": null},
        {"name": "a", "type": "long"},
        {"name": "b", "type": {"type": "array", "items": "int"}}]}"#,
    );
    let body = [2, 2, 4, 0];
    let decoder = Decoder::new(&writer, &reader).expect("plans");
    assert_eq!(handed(&decoder, &body), (Ok("seq"), Ok("map"), Ok("map")));
}

/// A writer with fields the reader lacks between those it has, and a reader field the writer
/// lacks at the end: a struct in the reader's order is handed the values it has, skipping the
/// others, then the default, by position.
#[test]
fn a_struct_read_by_position_skips_writer_fields_and_gets_defaults() {
    let writer = schema(
        r#"{"type": "record", "name": "R", "fields": [
        {"name": "gone", "type": "string"},
        {"name": "a", "type": "long"},
        {"name": "also_gone", "type": {"type": "array", "items": "double"}},
        {"name": "b", "type": "string"}]}"#,
    );
    let reader = schema(
        r#"{"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"},
        {"name": "b", "type": "string"},
        {"name": "c", "type": "int", "default": 42}]}"#,
    );
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct R {
        a: i64,
        b: String,
        c: i32,
    }
    let mut body = vec![2, b'g'];
    long(&mut body, -7);
    body.extend([2, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 4, b'h', b'i']);
    let want = R {
        a: -7,
        b: "hi".into(),
        c: 42,
    };
    assert_eq!(compiled_read::<R>(&writer, &reader, &body), Ok(want));
    assert_eq!(
        avro_read::<R>(&writer, &reader, &body),
        R {
            a: -7,
            b: "hi".into(),
            c: 42
        }
    );
}

#[test]
fn a_field_the_value_lacks_gets_its_default_and_one_without_is_an_error() {
    #[derive(Serialize)]
    struct OnlyA {
        a: i64,
    }
    let with_default = schema(
        r#"{"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": "dflt"}]}"#,
    );
    let ours = Encoder::new(&with_default)
        .expect("compiles")
        .encode(&OnlyA { a: 1 })
        .expect("encodes");
    assert_eq!(ours, avro_bytes(&with_default, &OnlyA { a: 1 }));
    assert_eq!(ours, [2, 8, b'd', b'f', b'l', b't']);
    let e = Encoder::new(&schema(SHUFFLED))
        .expect("compiles")
        .encode(&OnlyA { a: 1 });
    assert!(e.is_err_and(|e| e.0.contains("no default")));
}

/// A reader type with a field of every kind, each of which the writer lacks.
#[derive(Debug, PartialEq, Deserialize)]
struct Defaults {
    id: String,
    n: (),
    b: bool,
    i: i32,
    l: i64,
    f: f32,
    d: f64,
    s: String,
    e: Suit,
    arr: Vec<i64>,
    m: std::collections::BTreeMap<String, i32>,
    rec: Inner,
    opt: Option<String>,
    opt_some: Option<i64>,
    ts: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Suit {
    Hearts,
    Spades,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Inner {
    x: i32,
    y: String,
}

const DEFAULTS: &str = r#"{"type": "record", "name": "D", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "null", "default": null},
    {"name": "b", "type": "boolean", "default": true},
    {"name": "i", "type": "int", "default": -7},
    {"name": "l", "type": "long", "default": 9007199254740993},
    {"name": "f", "type": "float", "default": 1.5},
    {"name": "d", "type": "double", "default": -2.25},
    {"name": "by", "type": "bytes", "default": "\u00ff\u0000A"},
    {"name": "s", "type": "string", "default": "dé"},
    {"name": "e", "type": {"type": "enum", "name": "Suit", "symbols": ["Hearts", "Spades"]}, "default": "Spades"},
    {"name": "arr", "type": {"type": "array", "items": "long"}, "default": [1, 2]},
    {"name": "m", "type": {"type": "map", "values": "int"}, "default": {"k": 3}},
    {"name": "rec", "type": {"type": "record", "name": "Inner", "fields": [
        {"name": "x", "type": "int"}, {"name": "y", "type": "string", "default": "why"}]},
     "default": {"x": 4}},
    {"name": "fx", "type": {"type": "fixed", "name": "F2", "size": 2}, "default": "\u0001\u0002"},
    {"name": "opt", "type": ["null", "string"], "default": null},
    {"name": "opt_some", "type": ["long", "null"], "default": 5},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 86400000}]}"#;

#[test]
fn every_kind_of_default_fills_a_field_the_writer_lacks_as_apache_avro_does() {
    let writer =
        schema(r#"{"type": "record", "name": "D", "fields": [{"name": "id", "type": "string"}]}"#);
    let reader = schema(DEFAULTS);
    let body = [4, b'i', b'd'];
    let ours: Defaults = compiled_read(&writer, &reader, &body).expect("decodes");
    assert_eq!(ours, avro_read::<Defaults>(&writer, &reader, &body));
    // Byte defaults are code points 0-255 as the specification has it (apache-avro 0.22 takes
    // their UTF-8 instead, and cannot hand bytes to a `Vec<u8>`).
    #[derive(Debug, PartialEq, Deserialize)]
    struct Bytes {
        by: Vec<u8>,
        fx: Vec<u8>,
    }
    let bytes: Bytes = compiled_read(&writer, &reader, &body).expect("decodes");
    assert_eq!(
        bytes,
        Bytes {
            by: vec![255, 0, b'A'],
            fx: vec![1, 2]
        }
    );
    assert_eq!(
        (ours.e, ours.opt_some, ours.rec.y.as_str()),
        (Suit::Spades, Some(5), "why")
    );
    assert_eq!(ours.l, 9_007_199_254_740_993);
}

#[test]
fn enum_symbols_map_by_name_to_the_readers_default_or_fail() {
    let w = schema(r#"{"type": "enum", "name": "Suit", "symbols": ["Clubs", "Spades", "Hearts"]}"#);
    let with_default = schema(
        r#"{"type": "enum", "name": "Suit", "symbols": ["Hearts", "Spades"], "default": "Hearts"}"#,
    );
    let without = schema(r#"{"type": "enum", "name": "Suit", "symbols": ["Hearts", "Spades"]}"#);
    // Spades is index 1 for the writer, 1 for the reader; Hearts 2 and 0.
    assert_eq!(compiled_read::<Suit>(&w, &without, &[2]), Ok(Suit::Spades));
    assert_eq!(compiled_read::<Suit>(&w, &without, &[4]), Ok(Suit::Hearts));
    assert_eq!(
        compiled_read::<Suit>(&w, &with_default, &[0]),
        Ok(Suit::Hearts),
        "Clubs: the default"
    );
    assert_eq!(avro_read::<Suit>(&w, &with_default, &[0]), Suit::Hearts);
    let e = compiled_read::<Suit>(&w, &without, &[0]);
    assert!(
        matches!(&e, Err(DecodeError::Malformed(m)) if m.contains("Clubs")),
        "{e:?}"
    );
    let e = compiled_read::<Suit>(&w, &without, &[6]);
    assert!(
        matches!(&e, Err(DecodeError::Malformed(m)) if m.contains("out of range")),
        "{e:?}"
    );
    let bytes = Encoder::new(&w)
        .expect("compiles")
        .encode(&Suit::Hearts)
        .expect("encodes");
    assert_eq!(bytes, [4]);
    assert_eq!(bytes, avro_bytes(&w, &Suit::Hearts));
}

#[test]
fn unions_resolve_on_either_side_with_promotions() {
    let opt_int = schema(r#"["null", "int"]"#);
    let opt_long = schema(r#"["null", "long"]"#);
    let int = schema(r#""int""#);
    let enc = |s: &Schema, v: &Option<i32>| {
        Encoder::new(s)
            .expect("compiles")
            .encode(v)
            .expect("encodes")
    };
    assert_eq!(enc(&opt_int, &Some(-2)), avro_bytes(&opt_int, &Some(-2)));
    assert_eq!(enc(&opt_int, &None), [0]);
    let some = enc(&opt_int, &Some(-2));
    assert_eq!(
        compiled_read::<Option<i64>>(&opt_int, &opt_long, &some),
        Ok(Some(-2))
    );
    assert_eq!(
        compiled_read::<Option<i64>>(&opt_int, &opt_long, &[0]),
        Ok(None)
    );
    // A plain writer read by a reader union: its first matching branch.
    assert_eq!(
        compiled_read::<Option<i64>>(&int, &opt_long, &[3]),
        Ok(Some(-2))
    );
    let to_double = schema(r#"["string", "double"]"#);
    assert_eq!(compiled_read::<f64>(&int, &to_double, &[3]), Ok(-2.0));
    assert_eq!(avro_read::<f64>(&int, &to_double, &[3]), -2.0);
    // A writer union read by a plain reader: the null branch cannot be read.
    assert_eq!(
        compiled_read::<i64>(&opt_int, &schema(r#""long""#), &[2, 3]),
        Ok(-2)
    );
    assert!(matches!(
        compiled_read::<i64>(&opt_int, &schema(r#""long""#), &[0]),
        Err(DecodeError::Malformed(_))
    ));
    // string <-> bytes.
    let text = enc_str(&schema(r#""string""#), "hé");
    assert_eq!(
        compiled_read::<Vec<u8>>(&schema(r#""string""#), &schema(r#""bytes""#), &text),
        Ok("hé".as_bytes().to_vec())
    );
    assert_eq!(
        compiled_read::<String>(&schema(r#""bytes""#), &schema(r#""string""#), &text),
        Ok("hé".into())
    );
}

fn enc_str(s: &Schema, v: &str) -> Vec<u8> {
    Encoder::new(s)
        .expect("compiles")
        .encode(v)
        .expect("encodes")
}

/// A recursive type: a list of ints.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    value: i32,
    next: Option<Box<Node>>,
    tags: std::collections::BTreeMap<String, f64>,
}

const NODE: &str = r#"{"type": "record", "name": "Node", "namespace": "a.b", "fields": [
    {"name": "value", "type": "int"},
    {"name": "next", "type": ["null", "a.b.Node"]},
    {"name": "tags", "type": {"type": "map", "values": "double"}}]}"#;

fn list() -> Node {
    let tail = Node {
        value: 2,
        next: None,
        tags: [("t".to_owned(), 0.5)].into(),
    };
    Node {
        value: 1,
        next: Some(Box::new(tail)),
        tags: Default::default(),
    }
}

#[test]
fn recursive_records_and_maps_round_trip_with_apache_avros_bytes() {
    let s = schema(NODE);
    let ours = Encoder::new(&s)
        .expect("compiles")
        .encode(&list())
        .expect("encodes");
    assert_eq!(ours, avro_bytes(&s, &list()));
    assert_eq!(compiled_read::<Node>(&s, &s, &ours), Ok(list()));
}

#[test]
fn a_writer_field_the_reader_lacks_is_skipped_whatever_its_type() {
    let writer = schema(r#"{"type": "record", "name": "R", "fields": [
        {"name": "gone", "type": {"type": "array", "items": ["null", "a.b.Node2", {"type": "map", "values": "string"}]}},
        {"name": "id", "type": "string"},
        {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}}]}"#.replace("\"a.b.Node2\"", NODE).as_str());
    let reader =
        schema(r#"{"type": "record", "name": "R", "fields": [{"name": "id", "type": "string"}]}"#);
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct R {
        id: String,
    }
    let mut body = vec![6, 0, 2];
    body.extend(
        Encoder::new(&schema(NODE))
            .expect("compiles")
            .encode(&list())
            .expect("encodes"),
    );
    body.extend([4, 2, 2, b'k', 2, b'v', 0, 0, 4, b'i', b'd', 7, 8, 9]);
    assert_eq!(
        compiled_read::<R>(&writer, &reader, &body),
        Ok(R { id: "id".into() })
    );
    assert_eq!(
        avro_read::<R>(&writer, &reader, &body),
        R { id: "id".into() }
    );
}

fn payment_body() -> Vec<u8> {
    let p = PaymentDeclined {
        order_id: "o-1".into(),
        reason: "card".into(),
    };
    Encoder::new(PaymentDeclined::schema())
        .expect("compiles")
        .encode(&p)
        .expect("encodes")
}

fn read_payment(body: &[u8]) -> Result<PaymentDeclined, DecodeError> {
    compiled_read(PaymentDeclined::schema(), PaymentDeclined::schema(), body)
}

#[test]
fn a_body_that_ends_early_is_truncated_also_inside_a_string() {
    let good = payment_body();
    for cut in 1..good.len() {
        let r = read_payment(&good[..good.len() - cut]);
        assert!(
            matches!(r, Err(DecodeError::Truncated(_))),
            "cut {cut}: {r:?}"
        );
    }
    let r = read_payment(&[]);
    assert!(matches!(r, Err(DecodeError::Truncated(_))), "{r:?}");
}

#[test]
fn bytes_left_over_are_malformed() {
    let mut body = payment_body();
    body.push(0);
    assert_eq!(
        read_payment(&body),
        Err(DecodeError::Malformed(
            "1 bytes left over after the Avro body".into()
        ))
    );
}

#[test]
fn a_bad_union_index_is_malformed() {
    let s = schema(SHUFFLED);
    for index in [4u8, 1, 0x7f] {
        // a = 0, b = [], c: union index 2, -1, -64
        let r = compiled_read::<Shuffled>(&s, &s, &[0, 0, index, 2, b'x']);
        assert!(
            matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("union index")),
            "{index}: {r:?}"
        );
    }
}

#[test]
fn negative_and_huge_lengths_are_malformed_before_anything_is_allocated() {
    let r = read_payment(&[1, b'x']);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("negative length")),
        "{r:?}"
    );
    let mut huge = Vec::new();
    long(
        &mut huge,
        i64::try_from(MAX_AVRO_ALLOCATION).expect("fits") + 1,
    );
    let r = read_payment(&huge);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("over the limit")),
        "{r:?}"
    );
    // An array claiming more items than the limit, in one block or over two.
    let s = schema(SHUFFLED);
    let mut body = vec![0];
    body.extend(&huge);
    let r = compiled_read::<Shuffled>(&s, &s, &body);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("items")),
        "{r:?}"
    );
    let mut half = Vec::new();
    long(
        &mut half,
        i64::try_from(MAX_AVRO_ALLOCATION / 2 + 1).expect("fits"),
    );
    let mut body = vec![0];
    body.extend(&half);
    let r = compiled_read::<Shuffled>(&s, &s, &body);
    assert!(
        matches!(r, Err(DecodeError::Truncated(_))),
        "a block of half the limit is read as far as it goes: {r:?}"
    );
    // A varint of more than 10 bytes.
    let r = read_payment(&[0xff; 11]);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("varint")),
        "{r:?}"
    );
}

#[test]
fn a_string_that_is_not_utf8_is_malformed_also_when_skipped() {
    let r = read_payment(&[2, 0xff, 0]);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("UTF-8")),
        "{r:?}"
    );
    // OrderPlaced v2's channel, skipped by a v1 reader.
    let mut newer = OrderPlaced {
        order_id: "o".into(),
        customer_id: "c".into(),
        items: vec![],
        total: eur(1),
        shipping_address: "a".into(),
        channel: "é".into(),
    };
    let mut body = Encoder::new(OrderPlaced::schema())
        .expect("compiles")
        .encode(&newer)
        .expect("encodes");
    let last = body.len() - 1;
    body[last] = 0xff;
    let r: Result<OrderPlacedV1, _> =
        compiled_read(OrderPlaced::schema(), OrderPlacedV1::schema(), &body);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("UTF-8")),
        "{r:?}"
    );
    newer.channel.clear();
    assert!(
        decode_value(OrderPlaced::schema(), Some(OrderPlacedV1::schema()), &body).is_err(),
        "apache-avro agrees"
    );
}

#[test]
fn record_names_need_not_match_rust_type_names() {
    // `Shuffled` reads a record named `Unrelated`; `OrderPlacedV1` reads `OrderPlaced`.
    let s = schema(SHUFFLED);
    let v = Shuffled {
        c: None,
        a: 1,
        b: vec![],
    };
    let body = Encoder::new(&s)
        .expect("compiles")
        .encode(&v)
        .expect("encodes");
    assert_eq!(compiled_read::<Shuffled>(&s, &s, &body), Ok(v));
}

/// A tiny xorshift generator: the same inputs every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_mutated_bodies_never_panic_and_agree_with_apache_avro_on_decoding() {
    let (v1, v2) = (OrderPlacedV1::schema(), OrderPlaced::schema());
    let good = Encoder::new(v1)
        .expect("compiles")
        .encode(&order_v1())
        .expect("encodes");
    let node = schema(NODE);
    let typed = Decoder::new(v1, v2).expect("plans");
    let nodes = Decoder::new(&node, &node).expect("plans");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let body: Vec<u8> = if round % 2 == 0 {
            let len = usize::try_from(rng.next() % 48).expect("small");
            (0..len).map(|_| rng.next().to_le_bytes()[0]).collect()
        } else {
            let mut b = good.clone();
            for _ in 0..=rng.next() % 3 {
                let at = usize::try_from(rng.next()).expect("fits") % b.len();
                b[at] = rng.next().to_le_bytes()[0];
            }
            b.truncate(b.len() - usize::try_from(rng.next() % 3).expect("small"));
            b
        };
        let ours = typed.decode::<OrderPlaced>(&body);
        let generic = decode_value(v1, Some(v2), &body).and_then(|v| {
            apache_avro::from_value::<OrderPlaced>(&v)
                .map_err(|e| DecodeError::Malformed(e.to_string()))
        });
        assert_eq!(
            ours.is_ok(),
            generic.is_ok(),
            "{body:?}: {ours:?} / {generic:?}"
        );
        if let (Ok(a), Ok(b)) = (&ours, &generic) {
            assert_eq!(a, b);
        }
        let _ = nodes.decode::<Node>(&body);
    }
}

#[test]
fn a_body_nested_deeper_than_the_limit_is_malformed_not_a_stack_overflow() {
    let node = schema(NODE);
    let deep: Vec<u8> = [0u8, 2].repeat(100_000);
    let r = compiled_read::<Node>(&node, &node, &deep);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("nested")),
        "{r:?}"
    );
    // The same, skipped: a writer field the reader lacks.
    let writer = schema(&format!(
        r#"{{"type": "record", "name": "R", "fields": [{{"name": "n", "type": {NODE}}}]}}"#
    ));
    let reader = schema(r#"{"type": "record", "name": "R", "fields": []}"#);
    #[derive(Debug, Deserialize)]
    struct R {}
    let r = compiled_read::<R>(&writer, &reader, &deep);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("nested")),
        "{r:?}"
    );
    // And ignored by the Rust type.
    let r = compiled_read::<R>(&writer, &writer, &deep);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("nested")),
        "{r:?}"
    );
    // A list 100 deep is fine.
    let mut ok = [0u8, 2].repeat(100);
    ok.extend([0, 0, 0]);
    ok.extend([0].repeat(100));
    assert!(compiled_read::<Node>(&node, &node, &ok).is_ok());
}

#[test]
fn a_default_that_does_not_fit_fails_only_the_values_that_need_it() {
    // U+2713 is no byte: apache-avro's parser takes the schema, and so does the codec.
    let s = schema(
        r#"{"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": "bytes", "default": "✓"}]}"#,
    );
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Full {
        a: i64,
        b: Vec<u8>,
    }
    #[derive(Serialize)]
    struct OnlyA {
        a: i64,
    }
    let encoder = Encoder::new(&s).expect("compiles");
    assert!(
        encoder
            .encode(&OnlyA { a: 1 })
            .is_err_and(|e| e.0.contains("no default"))
    );
    let writer =
        schema(r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}"#);
    let r = compiled_read::<Full>(&writer, &s, &[2]);
    assert!(
        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("default")),
        "{r:?}"
    );
    assert_eq!(
        compiled_read::<Full>(&s, &s, &[2, 2, 7]),
        Ok(Full { a: 1, b: vec![7] })
    );
}
