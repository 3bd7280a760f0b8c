//! The seed corpus of every target, made from real inputs: the catalog's events with realistic
//! data (Avro-encoded with each schema version; as CloudEvents requests), envelopes as choreo
//! writes them, the W3C specification's `traceparent` examples, the reference saga definition,
//! `deploy/choreo.example.toml`, and the registry requests the serializers send.
//! A target binary run with `CHOREO_FUZZ_WRITE_SEEDS=<dir>` writes its seeds into `<dir>` as
//! `seed-<name>` files, replacing the seeds written before, and exits (README, "Tests", shows how
//! the committed corpus is made from them).

use choreo_bus::wire::framing::unframe;
use choreo_bus::{Envelope, TraceParent};
use choreo_saga::Definition;
use rdkafka::message::Headers as _;
use serde_json::{Value, json};

use crate::envelope::RawHeader;
use crate::wire_decode::fixture;

/// The reference configuration file.
const EXAMPLE_CONFIG: &str = include_str!("../../../deploy/choreo.example.toml");

/// Realistic data of a catalog event type, fitting its latest schema (for order `o-1`).
pub fn sample_data(event_type: &str) -> Value {
    let money = json!({"amount_minor": 4200, "currency": "EUR"});
    let short = event_type.rsplit('.').next().unwrap_or(event_type);
    match short {
        "OrderPlaced" => json!({
            "order_id": "o-1", "customer_id": "c-42", "shipping_address": "1 Main St",
            "items": [
                {"sku": "BOOK-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}},
                {"sku": "PEN-7", "quantity": 3, "unit_price": {"amount_minor": 733, "currency": "EUR"}}
            ],
            "total": money, "channel": "web"}),
        "OrderConfirmed" => json!({"order_id": "o-1", "payment_id": "p-1",
                                   "reservation_id": "r-1", "shipment_id": "s-1"}),
        "OrderCancelled" => json!({"order_id": "o-1", "reason": "payment declined"}),
        "PaymentAuthorized" => json!({"order_id": "o-1", "payment_id": "p-1", "amount": money}),
        "PaymentDeclined" => json!({"order_id": "o-1", "reason": "insufficient funds"}),
        "RefundPayment" => json!({"order_id": "o-1", "payment_id": "p-1", "amount": money,
                                  "reason": "shipping failed"}),
        "PaymentRefunded" => json!({"order_id": "o-1", "payment_id": "p-1"}),
        "InventoryReserved" => json!({"order_id": "o-1", "reservation_id": "r-1",
                                      "items": [{"sku": "BOOK-1", "quantity": 1}]}),
        "InventoryUnavailable" => json!({"order_id": "o-1", "reason": "out of stock",
                                         "missing_skus": ["PEN-7"]}),
        "ReleaseInventory" => json!({"order_id": "o-1", "reservation_id": "r-1",
                                     "reason": "payment declined"}),
        "InventoryReleased" => json!({"order_id": "o-1", "reservation_id": "r-1"}),
        "ShipmentRequested" => json!({"order_id": "o-1", "shipping_address": "1 Main St"}),
        "ShipmentScheduled" => json!({"order_id": "o-1", "shipment_id": "s-1", "carrier": "dhl",
                                      "estimated_delivery_ms": 1_767_400_000_000_i64}),
        "ShipmentFailed" => json!({"order_id": "o-1", "reason": "address unreachable"}),
        "CancelShipment" => json!({"order_id": "o-1", "shipment_id": "s-1",
                                   "reason": "payment declined"}),
        "ShipmentCancelled" => json!({"order_id": "o-1", "shipment_id": "s-1"}),
        _ => json!({}),
    }
}

/// The sample data of a type as a schema version has it (fields it lacks removed).
fn sample_for_version(event_type: &str, schema: &apache_avro::Schema) -> Value {
    let mut data = sample_data(event_type);
    if let (Value::Object(o), apache_avro::Schema::Record(r)) = (&mut data, schema) {
        o.retain(|k, _| r.fields.iter().any(|f| &f.name == k));
    }
    data
}

/// The variable naming the folder a target binary writes its seeds into, instead of fuzzing.
pub const WRITE_SEEDS_VAR: &str = "CHOREO_FUZZ_WRITE_SEEDS";

/// When [`WRITE_SEEDS_VAR`] is set, writes the seeds of `target` into the folder it names as
/// `seed-<name>` (removing the `seed-` files there before) and exits the process; otherwise
/// does nothing. Called from each target's initialisation.
pub fn write_when_asked(target: &str) {
    let Some(dir) = std::env::var_os(WRITE_SEEDS_VAR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let result = (|| -> std::io::Result<usize> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
            {
                std::fs::remove_file(path)?;
            }
        }
        let seeds = of(target);
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        Ok(seeds.len())
    })();
    match result {
        Ok(n) => {
            eprintln!("{target}: {n} seeds written to {}", dir.display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{target}: cannot write seeds to {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}

/// One seed: its file name and bytes.
pub type Seed = (String, Vec<u8>);

/// The seeds of `target`.
pub fn of(target: &str) -> Vec<Seed> {
    match target {
        "wire_decode" => wire_decode(),
        "envelope" => envelope(),
        "traceparent" => traceparent(),
        "saga_toml" => saga_toml(),
        "config" => config(),
        "registry" => registry(),
        "ingest" => ingest(),
        other => panic!("no target {other}"),
    }
}

fn wire_decode() -> Vec<Seed> {
    let f = fixture();
    let mut out = Vec::new();
    for (i, w) in f.writers.iter().enumerate() {
        let version = f
            .catalog
            .event(&w.event_type)
            .and_then(|e| e.versions.iter().find(|v| v.schema == w.schema))
            .map(|v| v.version);
        let data = sample_for_version(&w.event_type, &w.schema);
        let framed = crate::block_on(f.codec.encode_json_version(
            &w.topic,
            &f.catalog,
            &w.event_type,
            version,
            &data,
        ))
        .expect("a sample encodes");
        let (_, body) = unframe(&framed).expect("framed");
        let mut seed = vec![u8::try_from(i).expect("few writers")];
        seed.extend_from_slice(body);
        let name = w.event_type.rsplit('.').next().unwrap_or_default();
        out.push((format!("{name}-v{}", version.unwrap_or(0)), seed));
        // The framed value itself: read with its own framing (byte 0 picks the first writer).
        out.push((format!("{name}-v{}-framed", version.unwrap_or(0)), framed));
    }
    out
}

fn raw_headers(e: &Envelope) -> Vec<RawHeader> {
    e.to_headers()
        .iter()
        .map(|h| RawHeader {
            name: h.key.as_bytes().to_vec(),
            value: h.value.map(<[u8]>::to_vec),
        })
        .collect()
}

fn envelope() -> Vec<Seed> {
    let trace = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let placed = Envelope::new(
        "0f8b9a1e-6a43-4c7d-9a55-0c2f3c1d2e4f",
        "/shop/checkout",
        "io.choreo.orders.OrderPlaced",
        "o-1",
        None,
        trace,
    );
    let refund = Envelope::caused_by(
        Some(&placed),
        "5d1c7a52-2f0e-5c1b-8a7e-3b9d4f6a1c20",
        "/choreo/sagas/order",
        "io.choreo.orders.RefundPayment",
        "o-1",
    );
    let mut duplicate = raw_headers(&placed);
    duplicate.push(RawHeader {
        name: b"ce_id".to_vec(),
        value: Some(b"second-id".to_vec()),
    });
    let mut not_utf8 = raw_headers(&placed);
    not_utf8[1].value = Some(b"o-\xff\xfe".to_vec());
    let sweep = vec![RawHeader {
        name: b"choreo-transaction-sweep".to_vec(),
        value: Some(b"1".to_vec()),
    }];
    let bare = vec![RawHeader {
        name: b"traceparent".to_vec(),
        value: None,
    }];
    vec![
        (
            "order-placed".into(),
            crate::envelope::unparse(Some(b"o-1"), &raw_headers(&placed)),
        ),
        (
            "refund-caused-by".into(),
            crate::envelope::unparse(Some(b"o-1"), &raw_headers(&refund)),
        ),
        (
            "duplicate-id".into(),
            crate::envelope::unparse(None, &duplicate),
        ),
        (
            "id-not-utf8".into(),
            crate::envelope::unparse(Some(b"o-1"), &not_utf8),
        ),
        ("sweep".into(), crate::envelope::unparse(None, &sweep)),
        (
            "null-value".into(),
            crate::envelope::unparse(Some(b"k"), &bare),
        ),
    ]
}

fn traceparent() -> Vec<Seed> {
    [
        (
            "w3c-sampled",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        (
            "w3c-not-sampled",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00",
        ),
        (
            "surrounding-space",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        ),
        (
            "future-version",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ),
        (
            "zero-trace",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec()))
    .collect()
}

fn saga_toml() -> Vec<Seed> {
    let order = Definition::reference_order_saga_toml();
    let minimal = "name = \"refunds\"\nversion = 2\nstart = \"io.choreo.orders.RefundPayment\"\n\
                   correlation = { field = \"order_id\" }\n\n[[steps]]\nname = \"refund\"\n\
                   success = [\"io.choreo.orders.PaymentRefunded\"]\ndeadline = \"1h\"\n\
                   deadline_from = \"saga\"\n";
    let on_start = "name = \"ship\"\nversion = 1\nstart = \"io.choreo.orders.OrderPlaced\"\n\
                    deadline = \"1d\"\n\n[[steps]]\nname = \"shipping\"\n\
                    success = [\"io.choreo.orders.ShipmentScheduled\"]\n\
                    failure = [\"io.choreo.orders.ShipmentFailed\"]\n\
                    [steps.on_start]\nevent = \"io.choreo.orders.ShipmentRequested\"\n\
                    data = { order_id = \"saga.correlation_id\", shipping_address = \"start.shipping_address\" }\n\
                    [steps.compensation]\nevent = \"io.choreo.orders.CancelShipment\"\n\
                    ack = \"io.choreo.orders.ShipmentCancelled\"\nack_deadline = \"250ms\"\n\
                    max_retries = 2\non_unknown_outcome = \"operator\"\n\
                    data = { order_id = \"saga.correlation_id\", shipment_id = \"shipping.shipment_id\", reason = { value = \"cancelled\" } }\n\n\
                    [on_abort]\nevent = \"io.choreo.orders.OrderCancelled\"\n\
                    data = { order_id = \"saga.correlation_id\", reason = \"saga.reason\" }\n";
    vec![
        ("order".into(), order.as_bytes().to_vec()),
        ("field-correlation".into(), minimal.as_bytes().to_vec()),
        ("on-start-and-abort".into(), on_start.as_bytes().to_vec()),
    ]
}

fn config() -> Vec<Seed> {
    let marker = crate::config::ENV_MARKER;
    let tokens = format!(
        "[kafka]\nbootstrap_servers = \"kafka-0:9092,kafka-1:9092\"\n\
         [kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n\"queue.buffering.max.ms\" = 5\n\
         [coordinator]\nguarantee = \"effectively_once\"\npartitions = 12\n\
         definitions = [\"sagas\"]\n\n[http]\nlisten = \"0.0.0.0:8080\"\n\
         [[http.tokens]]\nname = \"alice\"\nrole = \"operator\"\n\
         sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n\n\
         [ingest]\nlisten = \"0.0.0.0:8090\"\n[[ingest.tokens]]\nname = \"checkout\"\n\
         token_env = \"CHOREO_INGEST_TOKEN_CHECKOUT\"\nsources = [\"/shop/*\"]\n\
         types = [\"io.choreo.orders.OrderPlaced\"]\n\n{marker}\n\
         CHOREO_INGEST_TOKEN_CHECKOUT=checkout-0123456789abcdef\nHOSTNAME=choreo-1\n"
    );
    let env_only = format!(
        "# everything from the environment\n{marker}\n\
         CHOREO__KAFKA__BOOTSTRAP_SERVERS=kafka:9092\n\
         CHOREO__COORDINATOR__GUARANTEE=effectively_once\n\
         CHOREO__COORDINATOR__DEFINITIONS=/etc/choreo/sagas,/etc/choreo/more\n\
         CHOREO__KAFKA__CLIENT__SASL_PASSWORD=secret\n\
         CHOREO__COORDINATOR__BATCH_LINGER=250ms\nCHOREO__LOG__FORMAT=json\n"
    );
    vec![
        ("example".into(), EXAMPLE_CONFIG.as_bytes().to_vec()),
        ("tokens-and-env".into(), tokens.into_bytes()),
        ("env-only".into(), env_only.into_bytes()),
    ]
}

fn registry() -> Vec<Seed> {
    let f = fixture();
    let sep = crate::registry::SEPARATOR;
    let mut out = Vec::new();
    for e in f.catalog.events() {
        let subject = e.subject();
        let mut requests = Vec::new();
        for v in &e.versions {
            requests.push(format!(
                "POST /subjects/{subject}/versions\n{}",
                json!({"schema": v.text, "schemaType": "AVRO"})
            ));
        }
        let latest = &e.latest().text;
        requests.push(format!(
            "POST /compatibility/subjects/{subject}/versions/latest schema\n{latest}"
        ));
        requests.push(format!("POST /subjects/{subject} schema\n{latest}"));
        requests.push(format!("GET /subjects/{subject}/versions/latest\n"));
        let name = e.name.rsplit('.').next().unwrap_or_default();
        out.push((format!("register-{name}"), requests.join(sep).into_bytes()));
    }
    let placed = f
        .catalog
        .event("io.choreo.orders.OrderPlaced")
        .expect("in the catalog");
    let v1 = &placed.versions[0].text;
    let breaking = v1.replace("\"shipping_address\"", "\"address\"");
    let rules = [
        "PUT /config\n{\"compatibility\": \"FULL_TRANSITIVE\"}".to_owned(),
        format!("POST /subjects/orders-io.choreo.orders.OrderPlaced/versions schema\n{v1}"),
        format!(
            "POST /compatibility/subjects/orders-io.choreo.orders.OrderPlaced/versions/1 schema\n{breaking}"
        ),
        "PUT /config/orders-io.choreo.orders.OrderPlaced\n{\"compatibility\": \"NONE\"}".into(),
        format!("POST /subjects/orders-io.choreo.orders.OrderPlaced/versions schema\n{breaking}"),
        "GET /schemas/ids/1/schema\n".into(),
        "GET /subjects\n".into(),
    ];
    out.push(("rules".into(), rules.join(sep).into_bytes()));
    out
}

fn ingest() -> Vec<Seed> {
    let placed = json!({
        "order_id": "my-order-1", "customer_id": "c-42", "shipping_address": "1 Main St",
        "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
        "total": {"amount_minor": 1999, "currency": "EUR"}
    });
    let binary = format!(
        "application/json\nce-specversion: 1.0\nce-id: my-order-1\nce-source: /shop/checkout\n\
         ce-type: io.choreo.orders.OrderPlaced\nce-subject: my-order-1\n\
         traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n\n{placed}"
    );
    let v1 = format!(
        "application/json; charset=utf-8\nce-specversion: 1.0\nce-id: my-order-2\n\
         ce-source: /shop/checkout\nce-type: io.choreo.orders.OrderPlaced\n\
         ce-partitionkey: my-order-2\n\
         ce-dataschema: http://registry:8081/subjects/orders-io.choreo.orders.OrderPlaced/versions/1\n\n{placed}"
    );
    let structured = json!({
        "specversion": "1.0", "id": "pay-1", "source": "/payments", "subject": "o-1",
        "type": "io.choreo.orders.PaymentAuthorized", "time": "2026-12-03T10:00:00Z",
        "datacontenttype": "application/json",
        "data": sample_data("io.choreo.orders.PaymentAuthorized")
    });
    let batch = json!([
        {"specversion": "1.0", "id": "inv-1", "source": "/inventory", "subject": "o-1",
         "type": "io.choreo.orders.InventoryReserved",
         "data": sample_data("io.choreo.orders.InventoryReserved")},
        {"specversion": "1.0", "id": "inv-2", "source": "/inventory", "subject": "o-2",
         "type": "io.choreo.orders.InventoryUnavailable",
         "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "data": {"order_id": "o-2", "reason": "out of stock"}},
        {"specversion": "1.0", "id": "ship-1", "source": "/shipping", "subject": "o-1",
         "type": "io.choreo.orders.ShipmentScheduled",
         "data": sample_data("io.choreo.orders.ShipmentScheduled")}
    ]);
    vec![
        ("binary".into(), binary.into_bytes()),
        ("binary-v1-partitionkey".into(), v1.into_bytes()),
        (
            "structured".into(),
            format!("application/cloudevents+json\n\n{structured}").into_bytes(),
        ),
        (
            "batch".into(),
            format!("application/cloudevents-batch+json\n\n{batch}").into_bytes(),
        ),
    ]
}
