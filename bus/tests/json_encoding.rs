//! The JSON entry point's compiled encoder against apache-avro's schema resolution, which it
//! must agree with wherever it takes the data (`Codec::encode_json` falls back to the latter
//! where the compiled encoder refuses). For every schema version of the catalog: a sample of
//! the data, then the sample with each field removed, set to `null`, and replaced by values of
//! every JSON kind — whatever the compiled encoder accepts, apache-avro accepts too, with the
//! same bytes; and the plain samples are accepted by both.

use apache_avro::Schema;
use choreo_bus::wire::codec::{encode_json_compiled, encode_json_generic};
use choreo_schemas::Catalog;
use serde_json::{Value as J, json};

/// A JSON value of `schema` as a person writes it (a union as its first non-null branch).
fn sample(schema: &Schema, names: &std::collections::HashMap<String, Schema>) -> J {
    match schema {
        Schema::Null => J::Null,
        Schema::Boolean => json!(true),
        Schema::Int | Schema::Date | Schema::TimeMillis => json!(7),
        Schema::Long
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimeMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => json!(1_700_000_000_000_i64),
        Schema::Float | Schema::Double => json!(2.5),
        Schema::String | Schema::Uuid(_) => json!("text"),
        Schema::Bytes => json!("ab"),
        Schema::Array(a) => json!([sample(&a.items, names), sample(&a.items, names)]),
        Schema::Map(m) => json!({ "k": sample(&m.types, names) }),
        Schema::Union(u) => u
            .variants()
            .iter()
            .find(|v| !matches!(v, Schema::Null))
            .map_or(J::Null, |v| sample(v, names)),
        Schema::Record(r) => J::Object(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, names)))
                .collect(),
        ),
        Schema::Enum(e) => json!(e.symbols[0]),
        Schema::Ref { name } => names
            .get(&name.fullname(None))
            .map_or(J::Null, |s| sample(s, names)),
        other => panic!("no sample for {other:?}"),
    }
}

fn named(schema: &Schema, into: &mut std::collections::HashMap<String, Schema>) {
    match schema {
        Schema::Record(r) => {
            into.insert(r.name.fullname(None), schema.clone());
            for f in &r.fields {
                named(&f.schema, into);
            }
        }
        Schema::Enum(e) => {
            into.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Array(a) => named(&a.items, into),
        Schema::Map(m) => named(&m.types, into),
        Schema::Union(u) => u.variants().iter().for_each(|v| named(v, into)),
        _ => {}
    }
}

/// Every variation of `data` the test feeds both encoders: each top-level field (and each
/// field of a nested record) removed, `null`, and each JSON kind.
fn variations(data: &J) -> Vec<J> {
    let kinds = [
        J::Null,
        json!(true),
        json!(-3),
        json!(4_000_000_000_i64),
        json!(1.5),
        json!("s"),
        json!([]),
        json!({}),
    ];
    let mut out = Vec::new();
    let J::Object(fields) = data else {
        return out;
    };
    for (name, value) in fields {
        let mut without = fields.clone();
        without.remove(name);
        out.push(J::Object(without));
        for k in &kinds {
            let mut with = fields.clone();
            with.insert(name.clone(), k.clone());
            out.push(J::Object(with));
        }
        for nested in variations(value) {
            let mut with = fields.clone();
            with.insert(name.clone(), nested);
            out.push(J::Object(with));
        }
    }
    let mut extra = fields.clone();
    extra.insert("not_in_the_schema".into(), json!(1));
    out.push(J::Object(extra));
    out
}

#[test]
fn the_compiled_json_encoder_writes_what_apache_avro_writes_or_refuses() {
    let catalog = Catalog::reference();
    let (mut compared, mut refused_by_both, mut left_to_apache_avro) = (0, 0, 0);
    for event in catalog.events() {
        for version in &event.versions {
            let mut names = std::collections::HashMap::new();
            named(&version.schema, &mut names);
            let data = sample(&version.schema, &names);
            let ours = encode_json_compiled(&version.schema, &data);
            let theirs = encode_json_generic(&version.schema, &data);
            assert!(
                ours.is_ok() && ours == theirs,
                "{} v{}: the sample {data} encodes the same both ways: {ours:?} / {theirs:?}",
                event.name,
                version.version
            );
            for d in variations(&data) {
                let ours = encode_json_compiled(&version.schema, &d);
                let theirs = encode_json_generic(&version.schema, &d);
                match (&ours, &theirs) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "{} v{}: {d}", event.name, version.version);
                        compared += 1;
                    }
                    (Ok(_), Err(e)) => panic!(
                        "{} v{}: the compiled encoder took {d}, which apache-avro refuses: {e}",
                        event.name, version.version
                    ),
                    (Err(_), Ok(_)) => left_to_apache_avro += 1,
                    (Err(_), Err(_)) => refused_by_both += 1,
                }
            }
        }
    }
    eprintln!(
        "{compared} variations encoded identically, {refused_by_both} refused by both, {left_to_apache_avro} left to apache-avro"
    );
    assert!(compared > 0 && refused_by_both > 0);
}
