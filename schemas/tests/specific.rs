//! The specific coder's planner: what it takes, what it leaves to the general codec, and how it
//! reads hostile bodies.

use apache_avro::Schema;
use choreo_schemas::Event;
use choreo_schemas::binary::{BinaryError, Coder, write_count, write_long};
use choreo_schemas::event::{InventoryUnavailable, Money, OrderPlaced};

/// Money's fields, declared in another order than its schema's.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct SwappedMoney {
    currency: String,
    amount_minor: i64,
}
choreo_schemas::specific_record!(SwappedMoney {
    currency: String,
    amount_minor: i64
});

/// A record named as Money, with these fields (JSON).
fn money_with(fields: &str) -> Schema {
    Schema::parse_str(&format!(
        r#"{{"type": "record", "name": "Money", "namespace": "io.choreo.orders",
            "fields": [{fields}]}}"#
    ))
    .expect("a schema")
}

/// Money's schema on its own, its amount of `amount_type`.
fn money_schema(amount_type: &str) -> Schema {
    money_with(&format!(
        r#"{{"name": "amount_minor", "type": "{amount_type}"}},
           {{"name": "currency", "type": "string"}}"#
    ))
}

#[test]
fn a_type_whose_fields_are_not_its_schemas_in_order_is_neither_planned_nor_written() {
    let schema = money_schema("long");
    let coder = Coder::<SwappedMoney>::of();
    let why = coder.plan(&schema, &schema).expect_err("not planned");
    assert!(why.contains("are not its schema's"), "{why}");
    assert!(coder.writes(&schema).is_err());
    // Declared in the schema's order, the same fields are.
    let money = Coder::<Money>::of();
    money.writes(&schema).expect("Money writes its schema");
}

#[test]
fn a_promoted_writer_type_is_left_to_the_general_codec() {
    let coder = Coder::<Money>::of();
    let why = coder
        .plan(&money_schema("int"), &money_schema("long"))
        .expect_err("an int writer is not planned for an i64 field");
    assert!(why.contains("promotion"), "{why}");
}

#[test]
fn a_reader_field_without_default_that_the_writer_lacks_is_not_planned() {
    let writer = money_with(r#"{"name": "amount_minor", "type": "long"}"#);
    let why = Coder::<Money>::of()
        .plan(&writer, &money_schema("long"))
        .expect_err("no default for currency");
    assert!(why.contains("currency"), "{why}");
}

#[test]
fn a_writer_field_the_reader_lacks_is_skipped_by_type() {
    // A writer with a union, a map, an enum and a nested record before the reader's fields.
    let writer = money_with(
        r#"{"name": "note", "type": ["null", "string"]},
            {"name": "tags", "type": {"type": "map", "values": "long"}},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "amount_minor", "type": "long"},
            {"name": "extra", "type": {"type": "record", "name": "Extra", "fields": [
                {"name": "f", "type": "float"}, {"name": "d", "type": "double"}]}},
            {"name": "currency", "type": "string"}"#,
    );
    let mut body = Vec::new();
    write_long(&mut body, 1); // note: the string branch
    write_count(&mut body, 2);
    body.extend_from_slice(b"hi");
    write_count(&mut body, 1); // tags: one entry
    write_count(&mut body, 1);
    body.push(b'k');
    write_long(&mut body, 7);
    body.push(0); // end of the map
    write_long(&mut body, 1); // kind: B
    write_long(&mut body, 1234); // amount_minor
    body.extend_from_slice(&1.5f32.to_le_bytes());
    body.extend_from_slice(&2.5f64.to_le_bytes());
    write_count(&mut body, 3);
    body.extend_from_slice(b"EUR");
    let coder = Coder::<Money>::of();
    let plan = coder.plan(&writer, &money_schema("long")).expect("planned");
    assert_eq!(
        coder.read_whole(&body, &plan),
        Ok(Money {
            amount_minor: 1234,
            currency: "EUR".into()
        })
    );
    // An enum index the writer's enum does not have is malformed.
    let mut bad = body.clone();
    bad[9] = 2 * 2; // kind (after note 3 bytes, tags 6): index 2 of 2 symbols, zig-zag
    assert!(matches!(
        coder.read_whole(&bad, &plan),
        Err(BinaryError::Malformed(_))
    ));
}

#[test]
fn an_array_count_is_only_a_claim_until_its_items_are_read() {
    // 16 million items claimed, one sent: an error, after a small allocation.
    let coder = InventoryUnavailable::SPECIFIC.expect("a specific coder");
    let schema = InventoryUnavailable::schema();
    let plan = coder.plan(schema, schema).expect("planned");
    let mut body = Vec::new();
    for s in ["o", "r"] {
        write_count(&mut body, s.len());
        body.extend_from_slice(s.as_bytes());
    }
    write_count(&mut body, 16 * 1024 * 1024);
    write_count(&mut body, 1);
    body.push(b's');
    assert!(matches!(
        coder.read_whole(&body, &plan),
        Err(BinaryError::Truncated(_))
    ));
    // A claim over the limit is refused before anything is read.
    let mut over = body[..4].to_vec();
    write_count(&mut over, 16 * 1024 * 1024 + 1);
    assert!(matches!(
        coder.read_whole(&over, &plan),
        Err(BinaryError::Malformed(m)) if m.contains("over")
    ));
}

#[test]
fn a_string_that_is_not_utf8_is_malformed() {
    let coder = OrderPlaced::SPECIFIC.expect("a specific coder");
    let schema = OrderPlaced::schema();
    let plan = coder.plan(schema, schema).expect("planned");
    let mut body = Vec::new();
    write_count(&mut body, 2);
    body.extend_from_slice(&[0xff, 0xfe]);
    assert!(matches!(
        coder.read_whole(&body, &plan),
        Err(BinaryError::Malformed(m)) if m.contains("UTF-8")
    ));
}
