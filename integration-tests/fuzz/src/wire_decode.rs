//! Record values as a consumer reads them: the Confluent framing (`choreo_bus::wire::framing`)
//! and the Avro body decoded by `choreo_bus::wire::codec` with every schema of
//! `Catalog::reference()` as the writer, resolved to the latest version of its type, to JSON
//! (`Codec::decode_json`, the coordinator's path) and into the Rust types of
//! `choreo_schemas::event` (`Codec::decode`, a subscriber's path).
//!
//! Input: byte 0 picks a writer schema (modulo the catalog's 17 schema versions) and the rest
//! is its Avro body, framed with that schema's id; the whole input is also read as a record
//! value as it stands (its own framing, almost always an unknown id).
//!
//! What must hold, besides not panicking:
//! - the framing splits into the id and the body it was made of;
//! - a body decodes with resolution exactly when it decodes as written (every catalog version
//!   is readable by its latest, so resolution never refuses what decodes), and the JSON and
//!   typed paths agree with the generic decoding on whether it decodes;
//! - what decodes survives a round trip: the JSON re-encoded with the latest schema
//!   (`Codec::encode_json`) decodes to the same JSON, a typed event re-encoded (`Codec::encode`)
//!   decodes to the same event.

use std::sync::{Arc, OnceLock};

use apache_avro::Schema;
use choreo_bus::wire::codec::{Codec, WriterSchemaError, decode_value};
use choreo_bus::wire::framing::{frame, unframe};
use choreo_bus::{DecodeError, Event};
use choreo_schemas::event::{
    CancelShipment, InventoryReleased, InventoryReserved, InventoryUnavailable, OrderCancelled,
    OrderConfirmed, OrderPlaced, OrderPlacedV1, PaymentAuthorized, PaymentDeclined,
    PaymentRefunded, RefundPayment, ReleaseInventory, ShipmentCancelled, ShipmentFailed,
    ShipmentRequested, ShipmentScheduled,
};
use choreo_schemas::{Catalog, MemoryRegistry};

/// One schema version of the catalog as a writer.
#[derive(Debug)]
pub struct Writer {
    /// The event type (Avro full name).
    pub event_type: String,
    /// Its topic.
    pub topic: String,
    /// The registry id the in-memory registry gives it.
    pub id: u32,
    /// The writer schema.
    pub schema: Schema,
    /// The latest schema of its type (the reader).
    pub latest: Schema,
}

/// The catalog, a registry holding every schema of it, a codec over that registry, and the
/// writers in catalog order.
#[derive(Debug)]
pub struct Fixture {
    /// `Catalog::reference()`.
    pub catalog: Catalog,
    /// A codec over an in-memory registry holding every catalog schema.
    pub codec: Codec,
    /// Every schema version of the catalog.
    pub writers: Vec<Writer>,
}

/// The process-wide fixture (built on first use).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let catalog = Catalog::reference();
        let registry = Arc::new(MemoryRegistry::new());
        let mut writers = Vec::new();
        for e in catalog.events() {
            for v in &e.versions {
                let registered = registry
                    .register_schema(&e.subject(), &v.text)
                    .expect("the catalog's schemas register");
                writers.push(Writer {
                    event_type: e.name.clone(),
                    topic: e.topic.clone(),
                    id: registered.id,
                    schema: v.schema.clone(),
                    latest: e.latest().schema.clone(),
                });
            }
        }
        let codec = Codec::new(registry);
        Fixture {
            catalog,
            codec,
            writers,
        }
    })
}

/// The target.
pub fn run(data: &[u8]) {
    let f = fixture();
    check_value(f, data);
    if let Some((&pick, body)) = data.split_first() {
        let w = &f.writers[usize::from(pick) % f.writers.len()];
        let value = frame(w.id, body);
        assert_eq!(unframe(&value), Ok((w.id, body)), "framing round trip");
        check_value(f, &value);
    }
}

/// Reads `value` as a consumer would, and checks the paths against each other.
fn check_value(f: &Fixture, value: &[u8]) {
    let read = crate::block_on(f.codec.read(value));
    let framed = match (unframe(value), read) {
        (Err(bad), Err(WriterSchemaError::Poison(e))) => {
            assert_eq!(bad, e, "the framing error is the one unframe names");
            return;
        }
        (Ok((id, _)), Err(WriterSchemaError::Poison(e))) => {
            assert_eq!(e, DecodeError::UnknownSchemaId(id), "{id}");
            assert!(f.writers.iter().all(|w| w.id != id));
            return;
        }
        (Ok((id, body)), Ok(framed)) => {
            assert_eq!((framed.writer.id, framed.body), (id, body));
            framed
        }
        (framing, read) => panic!("framing {framing:?} but read {read:?}"),
    };
    let w = f
        .writers
        .iter()
        .find(|w| w.id == framed.writer.id)
        .expect("a schema the registry knows is one of the catalog's");
    let as_written = decode_value(&w.schema, None, framed.body);
    let resolved = decode_value(&w.schema, Some(&w.latest), framed.body);
    assert_eq!(
        as_written.is_ok(),
        resolved.is_ok(),
        "resolution to the latest schema changed whether the body decodes: {as_written:?} / {resolved:?}"
    );
    let json = crate::block_on(f.codec.decode_json(value, &f.catalog, |_| Some(())));
    let json = match json {
        Ok(Some((event, ()))) => {
            assert!(resolved.is_ok(), "JSON decoded what Avro did not");
            assert_eq!(event.event_type, w.event_type);
            Some(event.data)
        }
        Ok(None) => unreachable!("every event is wanted"),
        Err(WriterSchemaError::Poison(e)) => {
            assert!(resolved.is_err(), "JSON refused what Avro decoded: {e}");
            None
        }
        Err(WriterSchemaError::Unavailable(e)) => {
            panic!("an in-memory registry is unavailable: {e}")
        }
    };
    if let Some(data) = json {
        let again =
            crate::block_on(
                f.codec
                    .encode_json(&w.topic, &f.catalog, &w.event_type, &data),
            )
            .unwrap_or_else(|e| panic!("decoded JSON does not encode again: {e}; {data}"));
        let back = crate::block_on(f.codec.decode_json(&again, &f.catalog, |_| Some(())))
            .unwrap_or_else(|e| panic!("re-encoded JSON does not decode: {e:?}"))
            .expect("wanted");
        assert_eq!(back.0.data, data, "JSON round trip");
    }
    typed(f, &w.event_type, value, resolved.is_ok());
}

/// Decodes `value` into the Rust type(s) of its event type.
fn typed(f: &Fixture, event_type: &str, value: &[u8], decodes: bool) {
    macro_rules! each {
        ($($t:ty),* $(,)?) => {
            $(if event_type == <$t>::TYPE { typed_as::<$t>(f, value, decodes); })*
        };
    }
    each!(
        OrderPlaced,
        OrderPlacedV1,
        OrderConfirmed,
        OrderCancelled,
        PaymentAuthorized,
        PaymentDeclined,
        RefundPayment,
        PaymentRefunded,
        InventoryReserved,
        InventoryUnavailable,
        ReleaseInventory,
        InventoryReleased,
        ShipmentRequested,
        ShipmentScheduled,
        ShipmentFailed,
        CancelShipment,
        ShipmentCancelled,
    );
}

fn typed_as<T: Event + PartialEq + std::fmt::Debug>(f: &Fixture, value: &[u8], decodes: bool) {
    let event = crate::block_on(f.codec.decode::<T>(value));
    match event {
        Ok(event) => {
            assert!(decodes, "typed decoding took what Avro refused: {event:?}");
            let again = crate::block_on(f.codec.encode(T::TOPIC, &event))
                .unwrap_or_else(|e| panic!("a decoded {} does not encode: {e}", T::TYPE));
            let back = crate::block_on(f.codec.decode::<T>(&again))
                .unwrap_or_else(|e| panic!("a re-encoded {} does not decode: {e}", T::TYPE));
            assert_eq!(back, event, "typed round trip");
        }
        Err(e) => assert!(!decodes, "typed decoding into {} refused: {e}", T::TYPE),
    }
}
