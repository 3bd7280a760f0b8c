//! JSON data, as a person writes it, checked against an Avro schema: the first mismatch is
//! named by its path (`items[2].unit_price.amount_minor: expected a whole number (long), got
//! "12.5"`).
//!
//! "As a person writes it": a nullable field is its value or `null` (never Avro's JSON union
//! wrapping, `{"string": "…"}`), a missing field that has a default takes it, an enum is its
//! symbol, `bytes` and `fixed` are strings.

use std::collections::HashMap;

use choreo_schemas::apache_avro::Schema;
use serde_json::Value;

/// Checks `data` against `schema`; the error names the path of the first field that does not
/// fit, and why.
pub fn check(schema: &Schema, data: &Value) -> Result<(), String> {
    walk(schema, data, &mut String::new(), schema)
}

fn collect_named<'s>(schema: &'s Schema, out: &mut HashMap<String, &'s Schema>) {
    match schema {
        Schema::Record(r) => {
            out.insert(r.name.fullname(None), schema);
            for f in &r.fields {
                collect_named(&f.schema, out);
            }
        }
        Schema::Enum(e) => {
            out.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            out.insert(f.name.fullname(None), schema);
        }
        Schema::Array(a) => collect_named(&a.items, out),
        Schema::Map(m) => collect_named(&m.types, out),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_named(v, out);
            }
        }
        _ => {}
    }
}

fn got(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

fn at(path: &str) -> &str {
    if path.is_empty() { "the data" } else { path }
}

/// `root` is the whole schema, searched for a named type only when a reference needs it.
fn walk(schema: &Schema, v: &Value, path: &mut String, named: &Schema) -> Result<(), String> {
    let mismatch =
        |want: &str, path: &str| format!("{}: expected {want}, got {}", at(path), got(v));
    let whole = |v: &Value, lo: i64, hi: i64| v.as_i64().is_some_and(|n| (lo..=hi).contains(&n));
    match schema {
        Schema::Null => v
            .is_null()
            .then_some(())
            .ok_or_else(|| mismatch("null", path)),
        Schema::Boolean => v
            .is_boolean()
            .then_some(())
            .ok_or_else(|| mismatch("true or false", path)),
        Schema::Int | Schema::Date | Schema::TimeMillis => {
            whole(v, i64::from(i32::MIN), i64::from(i32::MAX))
                .then_some(())
                .ok_or_else(|| mismatch("a whole number (int, 32 bits)", path))
        }
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => whole(v, i64::MIN, i64::MAX)
            .then_some(())
            .ok_or_else(|| mismatch("a whole number (long)", path)),
        Schema::Float | Schema::Double => v
            .is_number()
            .then_some(())
            .ok_or_else(|| mismatch("a number", path)),
        Schema::String | Schema::Bytes | Schema::BigDecimal | Schema::Decimal(_) => v
            .is_string()
            .then_some(())
            .ok_or_else(|| mismatch("a string", path)),
        Schema::Uuid(_) => match v.as_str().map(uuid::Uuid::parse_str) {
            Some(Ok(_)) => Ok(()),
            _ => Err(mismatch("a UUID string", path)),
        },
        Schema::Fixed(f) | Schema::Duration(f) => match v.as_str() {
            Some(s) if s.len() == f.size => Ok(()),
            _ => Err(mismatch(&format!("a string of {} bytes", f.size), path)),
        },
        Schema::Enum(e) => match v.as_str() {
            Some(s) if e.symbols.iter().any(|x| x == s) => Ok(()),
            _ => Err(mismatch(&format!("one of {}", e.symbols.join(", ")), path)),
        },
        Schema::Array(a) => {
            let items = v.as_array().ok_or_else(|| mismatch("an array", path))?;
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(&a.items, item, path, named)?;
                path.truncate(len);
            }
            Ok(())
        }
        Schema::Map(m) => {
            let entries = v.as_object().ok_or_else(|| mismatch("an object", path))?;
            for (k, item) in entries {
                let len = path.len();
                path.push_str(&format!("[{k:?}]"));
                walk(&m.types, item, path, named)?;
                path.truncate(len);
            }
            Ok(())
        }
        Schema::Union(u) => {
            if u.variants()
                .iter()
                .any(|s| walk(s, v, &mut path.clone(), named).is_ok())
            {
                return Ok(());
            }
            // The message of the one non-null branch says most; several list what fits.
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|s| !matches!(s, Schema::Null))
                .collect();
            match non_null.as_slice() {
                [only] => walk(only, v, path, named).map_err(|e| {
                    if u.variants().len() > non_null.len() {
                        format!("{e} (or null)")
                    } else {
                        e
                    }
                }),
                _ => Err(mismatch("a value of one of the union's types", path)),
            }
        }
        Schema::Record(r) => {
            let fields = v.as_object().ok_or_else(|| mismatch("an object", path))?;
            for f in &r.fields {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&f.name);
                match fields.get(&f.name) {
                    Some(x) => walk(&f.schema, x, path, named)?,
                    None if f.default.is_some() => {}
                    None => return Err(format!("{path}: missing (required, no default)")),
                }
                path.truncate(len);
            }
            if let Some(extra) = fields
                .keys()
                .find(|k| !r.fields.iter().any(|f| &f.name == *k))
            {
                let name = if path.is_empty() {
                    extra.clone()
                } else {
                    format!("{path}.{extra}")
                };
                return Err(format!("{name}: not a field of {}", r.name.fullname(None)));
            }
            Ok(())
        }
        Schema::Ref { name } => {
            let mut types = HashMap::new();
            collect_named(named, &mut types);
            match types.get(&name.fullname(None)) {
                Some(s) => walk(s, v, path, named),
                None => Err(format!(
                    "{}: the schema refers to an unknown type {}",
                    at(path),
                    name.fullname(None)
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_placed() -> Schema {
        choreo_schemas::Catalog::reference()
            .event("io.choreo.orders.OrderPlaced")
            .expect("in the catalog")
            .latest()
            .schema
            .clone()
    }

    fn good() -> Value {
        json!({
            "order_id": "o-1", "customer_id": "c-1",
            "items": [{"sku": "A", "quantity": 2, "unit_price": {"amount_minor": 500, "currency": "EUR"}}],
            "total": {"amount_minor": 1000, "currency": "EUR"},
            "shipping_address": "1 Main St"
        })
    }

    #[test]
    fn plain_json_fits_and_a_default_fills_a_missing_field() {
        assert_eq!(check(&order_placed(), &good()), Ok(()));
    }

    #[test]
    fn a_wrong_type_deep_in_the_data_is_named_by_its_path() {
        let mut d = good();
        d["items"][0]["unit_price"]["amount_minor"] = json!("12.5");
        assert_eq!(
            check(&order_placed(), &d),
            Err(
                "items[0].unit_price.amount_minor: expected a whole number (long), got \"12.5\""
                    .into()
            )
        );
    }

    #[test]
    fn a_missing_required_field_and_an_unknown_field_are_named() {
        let mut d = good();
        d.as_object_mut().map(|o| o.remove("customer_id"));
        assert_eq!(
            check(&order_placed(), &d),
            Err("customer_id: missing (required, no default)".into())
        );
        let mut d = good();
        d["colour"] = json!("red");
        assert_eq!(
            check(&order_placed(), &d),
            Err("colour: not a field of io.choreo.orders.OrderPlaced".into())
        );
    }

    #[test]
    fn a_nullable_field_is_its_value_or_null() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"note","type":["null","string"],"default":null}]}"#,
        )
        .expect("schema");
        assert_eq!(check(&s, &json!({"note": null})), Ok(()));
        assert_eq!(check(&s, &json!({"note": "hi"})), Ok(()));
        assert_eq!(check(&s, &json!({})), Ok(()));
        assert_eq!(
            check(&s, &json!({"note": 3})),
            Err("note: expected a string, got 3 (or null)".into())
        );
        // Avro's JSON encoding of a union is not what a person writes.
        assert!(check(&s, &json!({"note": {"string": "hi"}})).is_err());
    }

    #[test]
    fn an_int_out_of_range_is_refused() {
        let mut d = good();
        d["items"][0]["quantity"] = json!(4_000_000_000u64);
        assert!(
            check(&order_placed(), &d)
                .is_err_and(|e| e.starts_with("items[0].quantity: expected a whole number (int"))
        );
    }
}
