//! Reading the configuration's sources: where each key of the file is written (for errors that
//! name the line), environment overrides as paths and values, and the serde forms of
//! durations and librdkafka settings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use choreo_saga::{format_duration, parse_duration};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

use super::{ConfigError, ENV_PREFIX};

/// The 1-based line of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A `toml` error's message, prefixed by the path of the field it concerns when known.
pub(super) fn describe_toml_error(e: &toml::de::Error) -> String {
    // Without its input, `Display` renders the message and then "in `a.b`" (the field's
    // path); `keys` has no accessor of its own.
    let mut bare = e.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    let path = rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
        .filter(|p| !p.is_empty());
    let message = e.message().trim_end();
    match path {
        Some(p) => format!("{p}: {message}"),
        None => message.to_owned(),
    }
}

pub(super) fn file_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError::File {
        file: file.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: describe_toml_error(e),
    }
}

/// Where each `section.key` (and `kafka.client.<name>`) of the file is written: `file:line`.
pub(super) fn file_origins(
    file: &str,
    text: &str,
    doc: &toml::Spanned<toml::de::DeTable<'_>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (section, value) in doc.get_ref() {
        let Some(table) = value.get_ref().as_table() else {
            continue;
        };
        for (key, value) in table {
            let path = format!("{}.{}", section.get_ref(), key.get_ref());
            let line = line_of(text, key.span().start);
            out.insert(path.clone(), format!("{file}:{line}"));
            if let Some(inner) = value.get_ref().as_table() {
                for (k, _) in inner {
                    let line = line_of(text, k.span().start);
                    out.insert(format!("{path}.{}", k.get_ref()), format!("{file}:{line}"));
                }
            }
            // [[section.key]] entries: `section.key[i].field`.
            if let Some(entries) = value.get_ref().as_array() {
                for (i, entry) in entries.iter().enumerate() {
                    for (k, _) in entry.get_ref().as_table().into_iter().flatten() {
                        let line = line_of(text, k.span().start);
                        out.insert(
                            format!("{path}[{i}].{}", k.get_ref()),
                            format!("{file}:{line}"),
                        );
                    }
                }
            }
        }
    }
    out
}

/// `CHOREO__KAFKA__BOOTSTRAP_SERVERS` → `["kafka", "bootstrap_servers"]`;
/// `CHOREO__KAFKA__CLIENT__SASL_PASSWORD` → `["kafka", "client", "sasl.password"]`.
pub(super) fn env_path(var: &str) -> Result<Vec<String>, ConfigError> {
    let rest = var.strip_prefix(ENV_PREFIX).unwrap_or(var);
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let bad = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    if parts.iter().any(String::is_empty) {
        return Err(bad(format!(
            "expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. CHOREO__KAFKA__BOOTSTRAP_SERVERS"
        )));
    }
    match parts.as_slice() {
        [_, _] => Ok(parts),
        [section, key, name] if section == "kafka" && (key == "client" || key == "consumer") => {
            Ok(vec![section.clone(), key.clone(), name.replace('_', ".")])
        }
        _ => Err(bad(format!(
            "expected {ENV_PREFIX}<SECTION>__<KEY> (or CHOREO__KAFKA__CLIENT__<SETTING>, CHOREO__KAFKA__CONSUMER__<SETTING>), e.g. CHOREO__KAFKA__BOOTSTRAP_SERVERS"
        ))),
    }
}

/// The readings of an override's value, in the order they are tried: as TOML, as a plain
/// string, as a comma-separated list of strings.
pub(super) fn env_candidates(raw: &str) -> Vec<toml::Value> {
    let mut out = Vec::with_capacity(3);
    if let Ok(mut t) = format!("v = {raw}").parse::<toml::Table>()
        && let Some(v) = t.remove("v")
        && !v.is_str()
    {
        out.push(v);
    }
    out.push(toml::Value::String(raw.to_owned()));
    out.push(toml::Value::Array(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_owned()))
            .collect(),
    ));
    out
}

pub(super) fn insert_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table in the configuration file"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration written as a string, e.g. \"10ms\", \"30s\", \"5m\", \"1h\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(|_| {
                let digits = s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
                if digits.parse::<u64>() == Ok(0) {
                    E::custom(format!("\"{s}\" must be greater than zero"))
                } else {
                    E::custom(format!(
                        "\"{s}\" is not a duration (write an integer and a unit: 250ms, 30s, 5m, 1h, 2d)"
                    ))
                }
            })
        }
    }
    d.deserialize_str(V)
}

pub(super) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// `kafka.client`: a table of strings; numbers and booleans are accepted and kept as text.
pub(super) fn de_client_settings<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Setting>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Setting::Text(s) => s,
                Setting::Int(i) => i.to_string(),
                Setting::Float(f) => f.to_string(),
                Setting::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
