//! The event catalog: which event types exist, the topic each travels on, and its schema versions.
//!
//! The catalog is data (`schemas/catalog.toml` plus the `.avsc` files beside it). The reference
//! order domain is compiled in ([`Catalog::reference`]); [`Catalog::load`] reads another folder
//! of the same shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use serde::Deserialize;

use crate::compat::Compatibility;
use crate::error::SchemaError;

/// One event type of the catalog.
#[derive(Debug, Clone)]
pub struct EventInfo {
    /// Avro full name, e.g. `io.choreo.orders.OrderPlaced`; also the CloudEvents `ce_type`.
    pub name: String,
    /// The topic this event travels on.
    pub topic: String,
    /// Every version of the schema, oldest first; the last one is the current reader schema.
    pub versions: Vec<SchemaVersion>,
}

/// One version of one event's schema.
#[derive(Debug, Clone)]
pub struct SchemaVersion {
    /// 1-based version number, in catalog order.
    pub version: u32,
    /// The file it was read from, relative to the catalog folder.
    pub file: String,
    /// The schema text as written.
    pub text: String,
    /// The parsed schema.
    pub schema: Schema,
}

impl EventInfo {
    /// The newest schema version (the one writers use and readers resolve to).
    pub fn latest(&self) -> &SchemaVersion {
        self.versions
            .last()
            .expect("an event has at least one version")
    }

    /// Subject under TopicRecordNameStrategy: `<topic>-<full name>`.
    pub fn subject(&self) -> String {
        format!("{}-{}", self.topic, self.name)
    }

    /// Top-level field names of the newest schema.
    pub fn field_names(&self) -> Vec<&str> {
        match &self.latest().schema {
            Schema::Record(r) => r.fields.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the newest schema has a top-level field of this name.
    pub fn has_field(&self, field: &str) -> bool {
        self.field_names().contains(&field)
    }
}

/// The set of known event types.
#[derive(Debug, Clone)]
pub struct Catalog {
    compatibility: Compatibility,
    events: BTreeMap<String, EventInfo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    compatibility: Option<Compatibility>,
    events: BTreeMap<String, CatalogEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogEntry {
    topic: String,
    versions: Vec<String>,
}

/// The reference order domain, compiled in.
const REFERENCE_CATALOG: &str = include_str!("../catalog.toml");
const REFERENCE_SCHEMAS: &[(&str, &str)] = &[
    (
        "cancel_shipment.v1.avsc",
        include_str!("../avro/cancel_shipment.v1.avsc"),
    ),
    (
        "inventory_released.v1.avsc",
        include_str!("../avro/inventory_released.v1.avsc"),
    ),
    (
        "inventory_reserved.v1.avsc",
        include_str!("../avro/inventory_reserved.v1.avsc"),
    ),
    (
        "inventory_unavailable.v1.avsc",
        include_str!("../avro/inventory_unavailable.v1.avsc"),
    ),
    (
        "order_cancelled.v1.avsc",
        include_str!("../avro/order_cancelled.v1.avsc"),
    ),
    (
        "order_confirmed.v1.avsc",
        include_str!("../avro/order_confirmed.v1.avsc"),
    ),
    (
        "order_placed.v1.avsc",
        include_str!("../avro/order_placed.v1.avsc"),
    ),
    (
        "order_placed.v2.avsc",
        include_str!("../avro/order_placed.v2.avsc"),
    ),
    (
        "payment_authorized.v1.avsc",
        include_str!("../avro/payment_authorized.v1.avsc"),
    ),
    (
        "payment_declined.v1.avsc",
        include_str!("../avro/payment_declined.v1.avsc"),
    ),
    (
        "payment_refunded.v1.avsc",
        include_str!("../avro/payment_refunded.v1.avsc"),
    ),
    (
        "refund_payment.v1.avsc",
        include_str!("../avro/refund_payment.v1.avsc"),
    ),
    (
        "release_inventory.v1.avsc",
        include_str!("../avro/release_inventory.v1.avsc"),
    ),
    (
        "shipment_cancelled.v1.avsc",
        include_str!("../avro/shipment_cancelled.v1.avsc"),
    ),
    (
        "shipment_failed.v1.avsc",
        include_str!("../avro/shipment_failed.v1.avsc"),
    ),
    (
        "shipment_requested.v1.avsc",
        include_str!("../avro/shipment_requested.v1.avsc"),
    ),
    (
        "shipment_scheduled.v1.avsc",
        include_str!("../avro/shipment_scheduled.v1.avsc"),
    ),
];

impl Catalog {
    /// The reference order domain (`schemas/` of this repository), compiled into the binary.
    pub fn reference() -> Catalog {
        Self::parse("schemas/catalog.toml", REFERENCE_CATALOG, |file| {
            REFERENCE_SCHEMAS
                .iter()
                .find(|(name, _)| *name == file)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| format!("{file} is not compiled in"))
        })
        .expect("the compiled-in reference catalog is valid (checked by tests)")
    }

    /// Reads `catalog.toml` from `dir` and the schema files it names from `dir/avro/`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Catalog, SchemaError> {
        let dir = dir.as_ref();
        let path = dir.join("catalog.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::Io {
            path: path.clone(),
            source: e,
        })?;
        let avro_dir: PathBuf = dir.join("avro");
        Self::parse(&path.display().to_string(), &text, |file| {
            std::fs::read_to_string(avro_dir.join(file))
                .map_err(|e| format!("{}: {e}", avro_dir.join(file).display()))
        })
    }

    fn parse(
        origin: &str,
        text: &str,
        mut read: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<Catalog, SchemaError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| SchemaError::Catalog {
            file: origin.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            reason: e.message().to_owned(),
        })?;
        let mut events = BTreeMap::new();
        for (name, entry) in file.events {
            let line = text
                .find(&format!("\"{name}\""))
                .map(|at| line_of(text, at))
                .unwrap_or(0);
            let catalog_err = |reason: String| SchemaError::Catalog {
                file: origin.to_owned(),
                line,
                reason,
            };
            if entry.versions.is_empty() {
                return Err(catalog_err(format!(
                    "event {name} lists no schema versions"
                )));
            }
            let mut versions = Vec::new();
            for (i, schema_file) in entry.versions.iter().enumerate() {
                let text = read(schema_file).map_err(catalog_err)?;
                let schema = Schema::parse_str(&text).map_err(|e| SchemaError::Parse {
                    file: schema_file.clone(),
                    reason: e.to_string(),
                })?;
                let full = schema_full_name(&schema);
                if full.as_deref() != Some(name.as_str()) {
                    return Err(catalog_err(format!(
                        "{schema_file} defines {} but the catalog lists it under {name}",
                        full.unwrap_or_else(|| "no named record".into())
                    )));
                }
                versions.push(SchemaVersion {
                    version: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    file: schema_file.clone(),
                    text,
                    schema,
                });
            }
            events.insert(
                name.clone(),
                EventInfo {
                    name,
                    topic: entry.topic,
                    versions,
                },
            );
        }
        Ok(Catalog {
            compatibility: file.compatibility.unwrap_or_default(),
            events,
        })
    }

    /// The compatibility rule declared for every subject of the catalog.
    pub fn compatibility(&self) -> Compatibility {
        self.compatibility
    }

    /// Looks up one event type by its Avro full name.
    pub fn event(&self, name: &str) -> Option<&EventInfo> {
        self.events.get(name)
    }

    /// Every event type, ordered by name.
    pub fn events(&self) -> impl Iterator<Item = &EventInfo> {
        self.events.values()
    }

    /// Registers every schema version of every event under its subject, oldest first, so that
    /// services in any language find them in the registry.
    pub async fn register_all(
        &self,
        registry: &dyn crate::SchemaRegistry,
    ) -> Result<(), crate::RegistryError> {
        let items: Vec<(String, String)> = self
            .events()
            .flat_map(|e| e.versions.iter().map(|v| (e.subject(), v.text.clone())))
            .collect();
        registry.register_many(&items).await.map(drop)
    }

    /// Every topic the catalog names, sorted and without repeats.
    pub fn topics(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.events.values().map(|e| e.topic.as_str()).collect();
        t.sort_unstable();
        t.dedup();
        t
    }
}

/// The full name (`namespace.name`) of a record schema.
pub fn schema_full_name(schema: &Schema) -> Option<String> {
    schema.name().map(|n| n.fullname(None))
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
