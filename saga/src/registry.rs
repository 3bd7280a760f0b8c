//! [`Definitions`]: every loaded saga definition, keyed by name and version. Existing
//! instances resolve to the version they are pinned to (decision 8); new instances to the
//! newest.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use choreo_schemas::Catalog;

use crate::definition::Definition;
use crate::error::SagaError;
use crate::state::SagaState;
use crate::time::Millis;

/// A registry of saga definitions.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    by_name: BTreeMap<String, BTreeMap<u32, Arc<Definition>>>,
}

impl Definitions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a definition; a second one with the same name and version is refused.
    pub fn insert(&mut self, def: Definition) -> Result<(), SagaError> {
        let versions = self.by_name.entry(def.name().to_owned()).or_default();
        if versions.contains_key(&def.version()) {
            return Err(SagaError::DuplicateVersion {
                name: def.name().to_owned(),
                version: def.version(),
            });
        }
        versions.insert(def.version(), Arc::new(def));
        Ok(())
    }

    /// Loads every `*.toml` file of a folder (sorted by file name).
    pub fn load_dir(dir: impl AsRef<Path>, catalog: &Catalog) -> Result<Self, SagaError> {
        let dir = dir.as_ref();
        let io = |source| SagaError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut out = Definitions::new();
        for f in files {
            out.insert(Definition::load(&f, catalog)?)?;
        }
        Ok(out)
    }

    /// The newest version of a saga (what new instances start with).
    pub fn latest(&self, name: &str) -> Option<&Arc<Definition>> {
        self.by_name.get(name)?.values().next_back()
    }

    /// One exact version.
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<Definition>> {
        self.by_name.get(name)?.get(&version)
    }

    /// The definition an existing instance is pinned to.
    pub fn for_state(&self, state: &SagaState) -> Option<&Arc<Definition>> {
        self.get(&state.definition, state.version)
    }

    /// The definition an existing instance is pinned to, checked to fit the state
    /// ([`SagaState::check_against`]); otherwise one line saying why not (the version is not
    /// loaded, or the definition was edited without a new version). Use it on restore to
    /// report such states instead of feeding them inputs that would all be rejected.
    pub fn checked_for_state(&self, state: &SagaState) -> Result<&Arc<Definition>, String> {
        let def = self.for_state(state).ok_or_else(|| {
            format!(
                "saga {} is pinned to {} v{}, which is not loaded",
                state.saga_id, state.definition, state.version
            )
        })?;
        state.check_against(def)?;
        Ok(def)
    }

    /// A new instance of the newest version of `name`.
    pub fn new_instance(
        &self,
        name: &str,
        correlation_id: impl Into<String>,
        now: Millis,
    ) -> Option<SagaState> {
        self.latest(name)
            .map(|def| SagaState::new(def, correlation_id, now))
    }

    /// Names of the sagas some version of which consumes `event_type`.
    pub fn interested_in(&self, event_type: &str) -> Vec<&str> {
        self.by_name
            .iter()
            .filter(|(_, versions)| versions.values().any(|d| d.role_of(event_type).is_some()))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Every definition, by name then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.by_name.values().flat_map(BTreeMap::values)
    }

    /// Every event type some definition consumes, sorted, without repeats (to subscribe to).
    pub fn consumed_events(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.iter().flat_map(|d| d.consumed_events()).collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}
