//! The definitions the coordinator runs: a list with their sagas' counts, and one version's
//! graph (steps, dependencies, edges, compensations and its Mermaid text) for the console to
//! draw.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use choreo_saga::diagram::{Graph, graph};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, status_counts};
use crate::api_auth::Role;

/// One definition version in `GET /api/definitions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionSummary {
    /// The saga's name.
    pub name: String,
    /// The version.
    pub version: u32,
    /// Whether new sagas of this name start on this version (the newest).
    pub latest: bool,
    /// The event that starts a saga.
    pub start_event: String,
    /// Its steps' names, in definition order.
    pub steps: Vec<String>,
}

/// The answer to `GET /api/definitions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionsResponse {
    /// Every definition version, by name then version.
    pub definitions: Vec<DefinitionSummary>,
    /// The sagas in the view per definition name and status (every version).
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
}

pub(super) async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<DefinitionsResponse>, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
    let mut definitions: Vec<DefinitionSummary> = s
        .definitions
        .iter()
        .map(|d| DefinitionSummary {
            name: d.name().to_owned(),
            version: d.version(),
            latest: s
                .definitions
                .latest(d.name())
                .is_some_and(|l| l.version() == d.version()),
            start_event: d.start_event().to_owned(),
            steps: d.steps().iter().map(|st| st.name.clone()).collect(),
        })
        .collect();
    definitions.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    let counts = s
        .view
        .counts_by_definition()
        .iter()
        .map(|(d, c)| (d.clone(), status_counts(c)))
        .collect();
    Ok(Json(DefinitionsResponse {
        definitions,
        counts,
    }))
}

pub(super) async fn one(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Graph>, ApiError> {
    s.auth.check(&headers, Role::Viewer)?;
    let v: u32 = version
        .trim_start_matches('v')
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("\"{version}\" is not a version number")))?;
    let def = s.definitions.get(&name, v).ok_or_else(|| {
        let known: Vec<String> = s
            .definitions
            .iter()
            .map(|d| format!("{} v{}", d.name(), d.version()))
            .collect();
        ApiError::NotFound(format!(
            "no definition {name} v{v} (this coordinator runs {})",
            known.join(", ")
        ))
    })?;
    Ok(Json(graph(def)))
}
