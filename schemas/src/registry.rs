//! The schema registry abstraction and its implementations.
//!
//! - [`SchemaRegistry`]: the two calls the bus needs (register a schema under a subject and get
//!   its id; fetch a schema by id) plus the subject operations the REST server exposes.
//! - [`MemoryRegistry`]: in-process, for tests and the embedded mode; enforces each subject's
//!   compatibility rule like the Confluent registry does.
//! - [`ConfluentRegistry`]: a client of the Confluent REST API (Confluent Schema Registry,
//!   Karapace, Apicurio's compatibility API, or choreo's own server), built on
//!   `schema_registry_converter`.
//! - [`CachedRegistry`]: caches ids and parsed schemas in front of either, so the hot path never
//!   calls the registry twice for the same schema.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use async_trait::async_trait;
use dashmap::DashMap;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::compat::Compatibility;
use crate::error::RegistryError;

/// The most distinct schemas one registry holds (a registration that would add one more is
/// refused with [`RegistryError::LimitReached`]).
pub const MAX_SCHEMAS: usize = 10_000;
/// The most subjects one registry holds.
pub const MAX_SUBJECTS: usize = 10_000;
/// The most versions one subject holds.
pub const MAX_VERSIONS_PER_SUBJECT: usize = 1_000;
/// The largest schema text accepted, in bytes.
pub const MAX_SCHEMA_TEXT_BYTES: usize = 256 * 1024;

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// 1-based version within the subject.
    pub version: u32,
    /// The global schema id.
    pub id: u32,
    /// The schema text.
    pub schema: String,
}

/// A schema registry speaking Confluent's model: subjects, versions, global ids.
#[async_trait]
pub trait SchemaRegistry: Send + Sync + fmt::Debug {
    /// Registers `schema` under `subject` (idempotent) and returns its global id.
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError>;
    /// The schema text registered under `id`.
    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError>;
    /// Registers each `(subject, schema)` in order, as [`Self::register`] does, and returns
    /// their ids. A registry that can write them all at once (choreo's Kafka store: one
    /// transaction) does so.
    async fn register_many(&self, items: &[(String, String)]) -> Result<Vec<u32>, RegistryError> {
        let mut ids = Vec::with_capacity(items.len());
        for (subject, schema) in items {
            ids.push(self.register(subject, schema).await?);
        }
        Ok(ids)
    }
}

/// The largest schema id (ids are positive 31-bit integers, as Java clients read them).
pub const MAX_SCHEMA_ID: u32 = 0x7FFF_FFFF;

/// The id a schema gets from its content: the 64-bit FNV-1a hash of its Parsing Canonical
/// Form, folded to 31 bits (never 0). So an id never depends on the order in which schemas are
/// registered — adding an event type on upgrade re-points nothing — and two registries (two
/// `choreo` processes, or one before and after a restart) give a schema the same id.
pub fn schema_id_of(canonical_form: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical_form.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let folded = u32::try_from((h ^ (h >> 32)) & u64::from(MAX_SCHEMA_ID)).unwrap_or(1);
    folded.max(1)
}

/// The in-process registry. Ids come from the schema's content ([`schema_id_of`]).
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default, Clone)]
struct MemoryState {
    /// Schema texts by id.
    schemas: HashMap<u32, String>,
    /// Parsed canonical form → id, so one schema under two subjects has one id.
    by_canonical: HashMap<String, u32>,
    /// Subject → ids of its versions in order.
    subjects: HashMap<String, Vec<u32>>,
    /// The global compatibility level.
    global: Compatibility,
    /// Per-subject overrides.
    per_subject: HashMap<String, Compatibility>,
}

impl MemoryState {
    /// Whether one more version of `subject` (with this canonical form) fits the limits.
    fn room_for(&self, subject: &str, canonical: &str) -> Result<(), RegistryError> {
        if !self.by_canonical.contains_key(canonical) && self.schemas.len() >= MAX_SCHEMAS {
            return Err(RegistryError::LimitReached(format!(
                "it holds {MAX_SCHEMAS} distinct schemas"
            )));
        }
        match self.subjects.get(subject) {
            None if self.subjects.len() >= MAX_SUBJECTS => Err(RegistryError::LimitReached(
                format!("it holds {MAX_SUBJECTS} subjects"),
            )),
            Some(v) if v.len() >= MAX_VERSIONS_PER_SUBJECT => Err(RegistryError::LimitReached(
                format!("subject {subject} has {MAX_VERSIONS_PER_SUBJECT} versions"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks `schema` against the subject's versions under the subject's rule.
    fn check(&self, subject: &str, schema: &Schema) -> Result<(), RegistryError> {
        let rule = self
            .per_subject
            .get(subject)
            .copied()
            .unwrap_or(self.global);
        let previous: Vec<Schema> = self
            .subjects
            .get(subject)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| Schema::parse_str(self.schemas.get(id)?).ok())
                    .collect()
            })
            .unwrap_or_default();
        let previous: Vec<&Schema> = previous.iter().collect();
        rule.check(&previous, schema)
            .map_err(|reason| RegistryError::Incompatible {
                subject: subject.to_owned(),
                rule: rule.to_string(),
                reason,
            })
    }
}

impl MemoryRegistry {
    /// An empty registry with the BACKWARD global rule.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock only means another thread panicked mid-call; the maps stay consistent
        // because every mutation below happens after all checks.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers under the subject's rule; the bus and the REST server both come here.
    pub fn register_schema(
        &self,
        subject: &str,
        text: &str,
    ) -> Result<SubjectVersion, RegistryError> {
        if text.len() > MAX_SCHEMA_TEXT_BYTES {
            return Err(RegistryError::InvalidSchema(format!(
                "the schema is {} bytes, more than {MAX_SCHEMA_TEXT_BYTES}",
                text.len()
            )));
        }
        let schema =
            Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        let canonical = schema.canonical_form();
        let mut st = self.lock();
        if let Some(&id) = st.by_canonical.get(&canonical)
            && let Some(pos) = st
                .subjects
                .get(subject)
                .and_then(|v| v.iter().position(|x| *x == id))
        {
            return Ok(SubjectVersion {
                subject: subject.to_owned(),
                version: u32::try_from(pos + 1).unwrap_or(u32::MAX),
                id,
                schema: st.schemas.get(&id).cloned().unwrap_or_default(),
            });
        }
        st.check(subject, &schema)?;
        st.room_for(subject, &canonical)?;
        let id = match st.by_canonical.get(&canonical) {
            Some(&id) => id,
            None => {
                let mut id = schema_id_of(&canonical);
                // Another schema with the same fingerprint (about one in two billion per pair):
                // the next free id. Only then does an id depend on what was registered before.
                while st.schemas.contains_key(&id) {
                    id = if id >= MAX_SCHEMA_ID { 1 } else { id + 1 };
                }
                st.schemas.insert(id, text.to_owned());
                st.by_canonical.insert(canonical, id);
                id
            }
        };
        let versions = st.subjects.entry(subject.to_owned()).or_default();
        versions.push(id);
        let version = u32::try_from(versions.len()).unwrap_or(u32::MAX);
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version,
            id,
            schema: text.to_owned(),
        })
    }

    /// What registering each `(subject, text)` in order would give, without registering
    /// anything: each one's version (planned after those before it) and whether it is new
    /// (`false`: registered already).
    pub fn plan_register_all(
        &self,
        items: &[(String, String)],
    ) -> Result<Vec<(SubjectVersion, bool)>, RegistryError> {
        let before = self.lock().clone();
        let scratch = MemoryRegistry {
            inner: Mutex::new(before),
        };
        items
            .iter()
            .map(|(subject, text)| {
                let known = scratch.lock().subjects.get(subject).map_or(0, Vec::len);
                let v = scratch.register_schema(subject, text)?;
                let new = usize::try_from(v.version).unwrap_or(usize::MAX) > known;
                Ok((v, new))
            })
            .collect()
    }

    /// Puts a version exactly as a durable store recorded it (id, version, text), without
    /// checks; applying one twice changes nothing.
    pub fn restore(&self, v: &SubjectVersion) -> Result<(), RegistryError> {
        let canonical = Schema::parse_str(&v.schema)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?
            .canonical_form();
        let mut st = self.lock();
        st.schemas.entry(v.id).or_insert_with(|| v.schema.clone());
        st.by_canonical.entry(canonical).or_insert(v.id);
        let versions = st.subjects.entry(v.subject.clone()).or_default();
        let at = usize::try_from(v.version)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        if at >= versions.len() {
            versions.push(v.id);
        }
        Ok(())
    }

    /// Every subject, sorted.
    pub fn subjects(&self) -> Vec<String> {
        let mut s: Vec<String> = self.lock().subjects.keys().cloned().collect();
        s.sort();
        s
    }

    /// The versions of a subject, oldest first.
    pub fn versions(&self, subject: &str) -> Result<Vec<SubjectVersion>, RegistryError> {
        let st = self.lock();
        let ids = st
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::UnknownSubject(subject.to_owned()))?;
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| SubjectVersion {
                subject: subject.to_owned(),
                version: u32::try_from(i + 1).unwrap_or(u32::MAX),
                id: *id,
                schema: st.schemas.get(id).cloned().unwrap_or_default(),
            })
            .collect())
    }

    /// The version of `subject` whose schema is `text`, if registered.
    pub fn lookup(
        &self,
        subject: &str,
        text: &str,
    ) -> Result<Option<SubjectVersion>, RegistryError> {
        let canonical = Schema::parse_str(text)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?
            .canonical_form();
        let id = self.lock().by_canonical.get(&canonical).copied();
        Ok(self
            .versions(subject)?
            .into_iter()
            .find(|v| Some(v.id) == id))
    }

    /// Whether `text` could be registered under `subject` now.
    pub fn check(&self, subject: &str, text: &str) -> Result<(), RegistryError> {
        let schema =
            Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        self.lock().check(subject, &schema)
    }

    /// The rule in force for a subject (or the global one).
    pub fn compatibility(&self, subject: Option<&str>) -> Compatibility {
        let st = self.lock();
        subject
            .and_then(|s| st.per_subject.get(s).copied())
            .unwrap_or(st.global)
    }

    /// Sets the rule for a subject (or the global one).
    pub fn set_compatibility(&self, subject: Option<&str>, rule: Compatibility) {
        let mut st = self.lock();
        match subject {
            Some(s) => {
                st.per_subject.insert(s.to_owned(), rule);
            }
            None => st.global = rule,
        }
    }

    /// The schema text of an id.
    pub fn get(&self, id: u32) -> Option<String> {
        self.lock().schemas.get(&id).cloned()
    }
}

/// Where a registry keeps its schemas: reads come from an in-process view, writes go through
/// the store (in memory, or a durable log such as a Kafka topic) before the view shows them.
#[async_trait]
pub trait RegistryStore: Send + Sync + fmt::Debug {
    /// The current view (every read is served from it).
    fn view(&self) -> &MemoryRegistry;
    /// Registers `text` under `subject` under the subject's rule; durable before it returns.
    async fn register_version(
        &self,
        subject: &str,
        text: &str,
    ) -> Result<SubjectVersion, RegistryError>;
    /// Sets a subject's rule (or the global one); durable before it returns.
    async fn set_rule(
        &self,
        subject: Option<&str>,
        rule: Compatibility,
    ) -> Result<(), RegistryError>;
    /// Brings the view up to date with the store (before answering "not found").
    async fn refresh(&self) -> Result<(), RegistryError> {
        Ok(())
    }
}

#[async_trait]
impl RegistryStore for MemoryRegistry {
    fn view(&self) -> &MemoryRegistry {
        self
    }

    async fn register_version(
        &self,
        subject: &str,
        text: &str,
    ) -> Result<SubjectVersion, RegistryError> {
        self.register_schema(subject, text)
    }

    async fn set_rule(
        &self,
        subject: Option<&str>,
        rule: Compatibility,
    ) -> Result<(), RegistryError> {
        self.set_compatibility(subject, rule);
        Ok(())
    }
}

#[async_trait]
impl SchemaRegistry for MemoryRegistry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.register_schema(subject, schema).map(|v| v.id)
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        self.get(id).ok_or(RegistryError::UnknownId(id))
    }
}

/// A client of a registry speaking the Confluent REST API.
pub struct ConfluentRegistry {
    url: String,
    settings: SrSettings,
}

impl fmt::Debug for ConfluentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfluentRegistry")
            .field("url", &self.url)
            .finish()
    }
}

impl ConfluentRegistry {
    /// A client of the registry at `url` (e.g. `http://localhost:8081`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            settings: SrSettings::new(url.to_owned()),
        }
    }

    /// A client with basic authentication (Confluent Cloud's API key and secret).
    pub fn with_basic_auth(url: &str, user: &str, password: &str) -> Result<Self, RegistryError> {
        let settings = SrSettings::new_builder(url.to_owned())
            .set_basic_authorization(user, Some(password))
            .build()
            .map_err(|e| RegistryError::Transport {
                message: e.error,
                retryable: false,
            })?;
        Ok(Self {
            url: url.to_owned(),
            settings,
        })
    }
}

fn transport(e: schema_registry_converter::error::SRCError) -> RegistryError {
    let message = match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    };
    RegistryError::Transport {
        message,
        retryable: e.retriable,
    }
}

#[async_trait]
impl SchemaRegistry for ConfluentRegistry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        post_schema(&self.settings, subject.to_owned(), supplied)
            .await
            .map(|r| r.id)
            .map_err(transport)
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        get_schema_by_id(id, &self.settings)
            .await
            .map(|r| r.schema)
            .map_err(|e| match transport(e) {
                // The Confluent API answers an unknown id with 404 / error code 40403.
                RegistryError::Transport { message, .. } if message.contains("40403") => {
                    RegistryError::UnknownId(id)
                }
                other => other,
            })
    }
}

/// A schema text and the id it was registered with.
type TextId = (Box<str>, u32);

/// Caches ids and parsed schemas in front of a registry. An id the registry does not know is
/// asked again every time: it may be registered a moment later (a late registration, a
/// registry replica catching up).
#[derive(Debug, Clone)]
pub struct CachedRegistry {
    inner: Arc<dyn SchemaRegistry>,
    /// Per subject, the (text, id) pairs registered through this cache. Looked up by `&str`
    /// and the few texts of a subject compared, so a publish neither copies nor hashes the
    /// schema text (a key of (subject, text) copied both and hashed the whole text, 0.4–2 KB,
    /// for every event).
    ids: Arc<DashMap<String, Vec<TextId>>>,
    schemas: Arc<DashMap<u32, Arc<Schema>>>,
}

impl CachedRegistry {
    /// Wraps a registry.
    pub fn new(inner: Arc<dyn SchemaRegistry>) -> Self {
        Self {
            inner,
            ids: Arc::default(),
            schemas: Arc::default(),
        }
    }

    /// The registry behind the cache.
    pub fn inner(&self) -> &Arc<dyn SchemaRegistry> {
        &self.inner
    }

    /// Registers (once per subject and text) and returns the id.
    pub async fn id_for(&self, subject: &str, text: &str) -> Result<u32, RegistryError> {
        if let Some(id) = self
            .ids
            .get(subject)
            .and_then(|texts| texts.iter().find(|(t, _)| **t == *text).map(|(_, id)| *id))
        {
            return Ok(id);
        }
        let id = self.inner.register(subject, text).await?;
        let mut texts = self.ids.entry(subject.to_owned()).or_default();
        if !texts.iter().any(|(t, _)| **t == *text) {
            texts.push((text.into(), id));
        }
        Ok(id)
    }

    /// The parsed schema of an id (fetched once).
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.schemas.get(&id) {
            return Ok(Arc::clone(&s));
        }
        let text = self.inner.schema_by_id(id).await?;
        let schema = Arc::new(
            Schema::parse_str(&text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?,
        );
        self.schemas.insert(id, Arc::clone(&schema));
        Ok(schema)
    }

    /// The parsed schema of an id if it is already cached (no I/O).
    pub fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.schemas.get(&id).map(|s| Arc::clone(&s))
    }
}
