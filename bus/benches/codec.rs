//! Codec micro-benchmarks: choreo's value codec (Avro body + Confluent framing) against
//! `serde_json` on the same events.
//!
//! ```text
//! cargo bench -p choreo-bus --bench codec -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Groups are `<event>/<operation>`, each with a `choreo` and a `serde_json` function, so the
//! report reads side by side. The choreo figures are the per-record codec work of the hot path
//! (the registry lookup is cached and not included): `Codec::encode_with_id` (what
//! `Codec::encode` does once it knows the schema id: the type's specific coder writing behind
//! the framing) to encode, `unframe` + `Codec::decode_framed` (the bus's typed path, planned once
//! per writer schema and type: the specific coder for the pairs it takes) to decode;
//! `<event>/encode+decode` is one of each.
//! `OrderPlaced/decode` also has `choreo v1→v2`: a v1 body resolved into the v2 type (the default
//! `channel` filled in), through the same path, against which `choreo` is the same-version
//! baseline; and `compile + decode v1→v2`, a decoder compiled for the one call.
//! `<event>/choreo breakdown` has the specific coder alone (no framing, no cache lookup), the
//! steps of the compiled codec (compiling, encoding, decoding:
//! the general codec, which reads the pairs the specific coder leaves) and, for comparison, those of apache-avro's generic path the codec used before (a writer or
//! reader per call, a generic `Value`, `Value::resolve`, `from_value`).
//!
//! At the end the run prints the ratios the issue sets targets for, each timed in this run
//! (interleaved, best of several batches): choreo's encode+decode against serde_json's, and the
//! v1→v2 decode against the same-version decode.

use std::hint::black_box;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use choreo_bus::Event;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use choreo_bus::wire::codec::{Codec, Framed, WriterSchema};
use choreo_bus::wire::compiled::{Decoder, Encoder};
use choreo_bus::wire::framing::{frame, unframe};
use choreo_schemas::MemoryRegistry;
use choreo_schemas::event::{LineItem, Money, OrderPlaced, OrderPlacedV1, PaymentAuthorized};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The schema id in the framing of each event's own schema (the benchmark does not consult a
/// registry: the writer schema is handed to the codec as its cache would).
const SCHEMA_ID: u32 = 1;
/// The id of `OrderPlaced` v1's schema.
const V1_SCHEMA_ID: u32 = 2;

/// One codec for the whole run, as a service has one.
static CODEC: LazyLock<Codec> = LazyLock::new(|| Codec::new(Arc::new(MemoryRegistry::new())));

fn eur(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "EUR".into(),
    }
}

fn payment() -> PaymentAuthorized {
    PaymentAuthorized {
        order_id: "order-7f3c2a9e-5b1d-4e8f-9a6c-2d4b8e1f0a37".into(),
        payment_id: "pay-1c9e4b7a-3f2d-4a6b-8e5c-9d0f1a2b3c4d".into(),
        amount: eur(12_999),
    }
}

fn items() -> Vec<LineItem> {
    (1..=5)
        .map(|i| LineItem {
            sku: format!("SKU-{:06}", 4200 + i),
            quantity: i,
            unit_price: eur(499 * i64::from(i)),
        })
        .collect()
}

fn order_v1() -> OrderPlacedV1 {
    OrderPlacedV1 {
        order_id: "order-7f3c2a9e-5b1d-4e8f-9a6c-2d4b8e1f0a37".into(),
        customer_id: "cust-0a1b2c3d-4e5f-6789-abcd-ef0123456789".into(),
        items: items(),
        total: eur(7_485),
        shipping_address: "Hauptstrasse 12, 10115 Berlin, DE".into(),
    }
}

fn order() -> OrderPlaced {
    let v1 = order_v1();
    OrderPlaced {
        order_id: v1.order_id,
        customer_id: v1.customer_id,
        items: v1.items,
        total: v1.total,
        shipping_address: v1.shipping_address,
        channel: "mobile".into(),
    }
}

/// What `Codec::encode` does once the schema id is known: the framing, then the body written by
/// the type's specific coder (or its compiled encoder, for a type without one).
fn choreo_encode<T: Event>(event: &T) -> Vec<u8> {
    CODEC
        .encode_with_id(SCHEMA_ID, event)
        .expect("the event encodes with its schema")
}

/// The writer schema of each id, as the registry cache holds it.
fn writer_of(id: u32, schema: &Arc<apache_avro::Schema>) -> WriterSchema {
    WriterSchema {
        id,
        schema: Arc::clone(schema),
    }
}

fn choreo_decode<T: Event>(value: &[u8], writer: &Arc<apache_avro::Schema>) -> T {
    let (id, body) = unframe(value).expect("a framed value");
    let framed = Framed {
        writer: writer_of(id, writer),
        body,
    };
    CODEC
        .decode_framed::<T>(&framed)
        .expect("the value decodes")
}

/// Encode and decode groups for one event type, choreo and serde_json side by side.
fn bench_event<T: Event + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    c: &mut Criterion,
    name: &str,
    event: &T,
) {
    let avro = choreo_encode(event);
    let own = Arc::new(T::schema().clone());
    let json = serde_json::to_vec(event).expect("serde_json encodes");
    assert_eq!(&choreo_decode::<T>(&avro, &own), event, "choreo round trip");
    assert_eq!(
        &serde_json::from_slice::<T>(&json).expect("serde_json decodes"),
        event
    );
    println!(
        "encoded size of {name}: choreo {} bytes (5 framing + {} Avro), serde_json {} bytes",
        avro.len(),
        avro.len() - 5,
        json.len()
    );

    let mut g = c.benchmark_group(format!("{name}/encode"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("choreo", |b| b.iter(|| choreo_encode(black_box(event))));
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(event)).expect("serde_json encodes"));
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{name}/decode"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("choreo", |b| {
        b.iter(|| choreo_decode::<T>(black_box(&avro), &own))
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::from_slice::<T>(black_box(&json)).expect("serde_json decodes"));
    });
    if name == "OrderPlaced" {
        // A v1 producer's bytes read by a v2 consumer: schema resolution fills `channel`.
        let v1_schema = Arc::new(OrderPlacedV1::schema().clone());
        let v1_encoder = Encoder::new(OrderPlacedV1::schema()).expect("v1 compiles");
        let body = v1_encoder.encode(&order_v1()).expect("v1 encodes");
        let v1 = frame(V1_SCHEMA_ID, &body);
        let planned = |value: &[u8]| choreo_decode::<OrderPlaced>(value, &v1_schema);
        let unplanned = |value: &[u8]| {
            let (_, body) = unframe(value).expect("a framed value");
            Decoder::new(OrderPlacedV1::schema(), OrderPlaced::schema())
                .and_then(|d| d.decode::<OrderPlaced>(body))
                .expect("v1 resolves to v2")
        };
        assert_eq!(planned(&v1).channel, "web", "v1→v2 fills the default");
        assert_eq!(unplanned(&v1), planned(&v1));
        println!("encoded size of OrderPlaced v1: choreo {} bytes", v1.len());
        g.bench_function("choreo v1→v2", |b| b.iter(|| planned(black_box(&v1))));
        g.bench_function("compile + decode v1→v2", |b| {
            b.iter(|| unplanned(black_box(&v1)))
        });
        g.finish();
        ratio(
            "OrderPlaced decode v1→v2 / same-version decode (target <= 1.2)",
            ("v1→v2", &mut || drop(black_box(planned(black_box(&v1))))),
            ("same version", &mut || {
                drop(black_box(choreo_decode::<T>(black_box(&avro), &own)))
            }),
        );
    } else {
        g.finish();
    }

    let mut g = c.benchmark_group(format!("{name}/encode+decode"));
    g.throughput(Throughput::Elements(1));
    let choreo_both = || choreo_decode::<T>(&choreo_encode(black_box(event)), &own);
    let json_both = || {
        let bytes = serde_json::to_vec(black_box(event)).expect("serde_json encodes");
        serde_json::from_slice::<T>(&bytes).expect("serde_json decodes")
    };
    g.bench_function("choreo", |b| b.iter(choreo_both));
    g.bench_function("serde_json", |b| b.iter(json_both));
    g.finish();
    ratio(
        &format!("{name} encode+decode: serde_json / choreo (target >= 3)"),
        ("serde_json", &mut || drop(black_box(json_both()))),
        ("choreo", &mut || drop(black_box(choreo_both()))),
    );

    // Where the time goes: the compiled codec's steps, then apache-avro's generic path (what the
    // codec did before: a writer per encode call, a generic `Value` read, resolved against the
    // reader schema, then converted to `T` through serde).
    let schema = T::schema();
    let encoder = Encoder::new(schema).expect("the schema compiles");
    let decoder = Decoder::new(schema, schema).expect("the schema compiles");
    let writer = GenericDatumWriter::builder(schema)
        .build()
        .expect("a writer");
    let reader = GenericDatumReader::builder(schema)
        .reader_schema(schema)
        .build()
        .expect("a reader");
    let plain = GenericDatumReader::builder(schema)
        .build()
        .expect("a reader");
    let body = &avro[5..];
    let value = reader.read_value(&mut &body[..]).expect("a value");
    let mut g = c.benchmark_group(format!("{name}/choreo breakdown"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("compiled: Encoder::new (once per type)", |b| {
        b.iter(|| Encoder::new(black_box(schema)).expect("compiles"));
    });
    g.bench_function(
        "compiled: Decoder::new (once per writer id and type)",
        |b| {
            b.iter(|| Decoder::new(black_box(schema), schema).expect("compiles"));
        },
    );
    if let Some(coder) = T::SPECIFIC {
        let plan = coder
            .plan(schema, schema)
            .expect("the type plans its schema");
        g.bench_function("specific: write (the coder alone)", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(body.len());
                (coder.write)(black_box(event), &mut out);
                out
            });
        });
        g.bench_function("specific: read_whole (the coder alone)", |b| {
            b.iter(|| coder.read_whole(black_box(body), &plan).expect("decodes"));
        });
    }
    g.bench_function("compiled: Encoder::encode", |b| {
        b.iter(|| encoder.encode(black_box(event)).expect("encodes"));
    });
    g.bench_function("compiled: Decoder::decode", |b| {
        b.iter(|| decoder.decode::<T>(black_box(body)).expect("decodes"));
    });
    g.bench_function("encode: writer setup", |b| {
        b.iter(|| {
            GenericDatumWriter::builder(black_box(schema))
                .build()
                .expect("a writer")
        });
    });
    g.bench_function("encode: write_ser_to_vec, writer reused", |b| {
        b.iter(|| writer.write_ser_to_vec(black_box(event)).expect("encodes"));
    });
    g.bench_function("decode: reader setup (writer + reader schema)", |b| {
        b.iter(|| {
            GenericDatumReader::builder(black_box(schema))
                .reader_schema(schema)
                .build()
                .expect("a reader")
        });
    });
    g.bench_function("decode: read_value + resolve, reader reused", |b| {
        b.iter(|| reader.read_value(&mut black_box(body)).expect("a value"));
    });
    g.bench_function("decode: read_value, no resolve, reader reused", |b| {
        b.iter(|| plain.read_value(&mut black_box(body)).expect("a value"));
    });
    g.bench_function("decode: from_value (Value → T)", |b| {
        b.iter(|| apache_avro::from_value::<T>(black_box(&value)).expect("converts"));
    });
    g.bench_function("decode: read_deser, same schema, reader reused", |b| {
        b.iter(|| {
            plain
                .read_deser::<T>(&mut black_box(body))
                .expect("decodes")
        });
    });
    g.finish();
}

/// Prints how many times longer `top` takes than `bottom`, both timed here: interleaved batches,
/// the best batch of each.
fn ratio(what: &str, top: (&str, &mut dyn FnMut()), bottom: (&str, &mut dyn FnMut())) {
    const BATCH: u32 = 20_000;
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..BATCH {
            f();
        }
        start.elapsed() / BATCH
    };
    let (mut best_top, mut best_bottom) = (Duration::MAX, Duration::MAX);
    for _ in 0..15 {
        best_top = best_top.min(time(top.1));
        best_bottom = best_bottom.min(time(bottom.1));
    }
    println!(
        "ratio {what}: {:.2} ({} {} ns/op = {:.2} M/s, {} {} ns/op = {:.2} M/s)",
        best_top.as_secs_f64() / best_bottom.as_secs_f64(),
        top.0,
        best_top.as_nanos(),
        1e-6 / best_top.as_secs_f64(),
        bottom.0,
        best_bottom.as_nanos(),
        1e-6 / best_bottom.as_secs_f64(),
    );
}

fn codec(c: &mut Criterion) {
    bench_event(c, "PaymentAuthorized", &payment());
    bench_event(c, "OrderPlaced", &order());
}

criterion_group!(benches, codec);
criterion_main!(benches);
