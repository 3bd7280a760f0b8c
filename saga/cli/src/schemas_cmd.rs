//! `choreo schemas check|register`: a folder of schemas and its catalog against a registry, for
//! a pipeline.
//!
//! - `check` loads the catalog (file and line on a bad entry), checks each event type's versions
//!   against one another under the catalog's compatibility rule, and, with `--registry`, asks the
//!   registry for each version whether it is registered already and, if not, whether its
//!   compatibility rule accepts it (`POST /compatibility/subjects/{subject}/versions/latest`).
//! - `register` runs the same check and, only when everything passes, registers the versions
//!   the registry lacks, oldest first.
//!
//! The registry is any speaker of the Confluent REST API: choreo's own, Confluent Schema
//! Registry, Karapace, Apicurio. Exit codes: 0 all good, 1 a schema is incompatible (nothing is
//! registered), 2 the catalog, the registry or the arguments are wrong.

use std::path::PathBuf;

use choreo_schemas::{Catalog, EventInfo, SchemaVersion};
use serde_json::{Value, json};

/// Every check passed (and, for `register`, every missing version was registered).
pub const EXIT_OK: u8 = 0;
/// A schema breaks a compatibility rule: the catalog's, or the registry's.
pub const EXIT_INCOMPATIBLE: u8 = 1;
/// The catalog cannot be loaded, the registry cannot be reached or refused, or bad arguments.
pub const EXIT_ERROR: u8 = 2;

/// `choreo schemas …`.
#[derive(clap::Args, Debug)]
pub struct SchemasArgs {
    #[command(subcommand)]
    command: SchemasCmd,
}

#[derive(clap::Subcommand, Debug)]
enum SchemasCmd {
    /// Check the catalog's schemas (and, with --registry, against the registry); registers
    /// nothing.
    Check(Target),
    /// Check, then register the versions the registry lacks, oldest first; nothing is registered
    /// when a check fails.
    Register(Target),
}

#[derive(clap::Args, Debug)]
struct Target {
    /// The catalog folder (catalog.toml and avro/).
    #[arg(long, default_value = "schemas")]
    catalog: PathBuf,
    /// The registry's URL (Confluent REST API). Required by `register`.
    #[arg(long, env = "CHOREO_REGISTRY_URL")]
    registry: Option<String>,
    /// An environment variable holding the registry's bearer token (choreo's
    /// `registry.write_token_env`, or a gateway's).
    #[arg(long)]
    token_env: Option<String>,
}

/// What the registry says about one version of one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The registry has it, with this id.
    Registered(u32),
    /// Not in the registry; its rule accepts it.
    New,
    /// Not in the registry; its rule refuses it, for this reason.
    Incompatible(String),
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Line {
    /// The subject (`<topic>-<full name>`).
    pub subject: String,
    /// The version's number in the catalog.
    pub version: u32,
    /// Its file.
    pub file: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Runs the command; returns the exit code.
pub async fn run(args: SchemasArgs) -> u8 {
    let (target, register) = match args.command {
        SchemasCmd::Check(t) => (t, false),
        SchemasCmd::Register(t) => (t, true),
    };
    match run_target(&target, register).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("choreo schemas: {e:#}");
            EXIT_ERROR
        }
    }
}

async fn run_target(t: &Target, register: bool) -> anyhow::Result<u8> {
    let catalog = Catalog::load(&t.catalog)?;
    let local = check_catalog(&catalog);
    for problem in &local {
        println!("INCOMPATIBLE  {problem}");
    }
    let Some(url) = &t.registry else {
        if register {
            anyhow::bail!("register needs --registry (or CHOREO_REGISTRY_URL)");
        }
        let n: usize = catalog.events().map(|e| e.versions.len()).sum();
        println!(
            "{} event types, {n} schema versions, rule {}: {}",
            catalog.events().count(),
            catalog.compatibility(),
            if local.is_empty() {
                "consistent"
            } else {
                "incompatible"
            }
        );
        return Ok(if local.is_empty() {
            EXIT_OK
        } else {
            EXIT_INCOMPATIBLE
        });
    };
    let token = match &t.token_env {
        Some(var) => {
            Some(std::env::var(var).map_err(|_| anyhow::anyhow!("--token-env: {var} is not set"))?)
        }
        None => None,
    };
    let registry = Registry::new(url, token);
    let lines = against_registry(&catalog, &registry).await?;
    for l in &lines {
        let what = match &l.verdict {
            Verdict::Registered(id) => format!("registered   id {id}"),
            Verdict::New => "new          compatible".to_owned(),
            Verdict::Incompatible(why) => format!("INCOMPATIBLE {why}"),
        };
        println!("{:<60} v{} {:<32} {what}", l.subject, l.version, l.file);
    }
    let refused = lines
        .iter()
        .filter(|l| matches!(l.verdict, Verdict::Incompatible(_)))
        .count();
    let new: Vec<&Line> = lines.iter().filter(|l| l.verdict == Verdict::New).collect();
    if refused > 0 || !local.is_empty() {
        println!("{} incompatible; nothing registered", refused + local.len());
        return Ok(EXIT_INCOMPATIBLE);
    }
    if !register {
        println!(
            "{} registered, {} new and compatible",
            lines.len() - new.len(),
            new.len()
        );
        return Ok(EXIT_OK);
    }
    for l in &new {
        let text = version_text(&catalog, &l.subject, l.version)?;
        let id = registry.register(&l.subject, text).await?;
        println!(
            "registered {} v{} ({}) as id {id}",
            l.subject, l.version, l.file
        );
    }
    println!(
        "{} registered now, {} already",
        new.len(),
        lines.len() - new.len()
    );
    Ok(EXIT_OK)
}

/// Each event type's versions against the earlier ones, under the catalog's rule.
pub fn check_catalog(catalog: &Catalog) -> Vec<String> {
    let rule = catalog.compatibility();
    let mut problems = Vec::new();
    for e in catalog.events() {
        for (i, v) in e.versions.iter().enumerate().skip(1) {
            let previous: Vec<_> = e.versions[..i].iter().map(|p| &p.schema).collect();
            if let Err(why) = rule.check(&previous, &v.schema) {
                problems.push(format!(
                    "{} v{} ({}): {why} (catalog rule {rule})",
                    e.subject(),
                    v.version,
                    v.file
                ));
            }
        }
    }
    problems
}

/// Each version of each event type, as the registry sees it. A version checked as new is
/// assumed registered for the check of the next one (the registry checks against its latest).
pub async fn against_registry(catalog: &Catalog, registry: &Registry) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for e in catalog.events() {
        let mut pending_new = false;
        for v in &e.versions {
            let verdict = match registry.lookup(&e.subject(), &v.text).await? {
                Some(id) => Verdict::Registered(id),
                // The catalog's own chain covers a version after a new one.
                None if pending_new => Verdict::New,
                None => match registry.compatible(&e.subject(), &v.text).await? {
                    None => Verdict::New,
                    Some(why) => Verdict::Incompatible(why),
                },
            };
            pending_new |= verdict == Verdict::New;
            lines.push(line(e, v, verdict));
        }
    }
    Ok(lines)
}

fn line(e: &EventInfo, v: &SchemaVersion, verdict: Verdict) -> Line {
    Line {
        subject: e.subject(),
        version: v.version,
        file: v.file.clone(),
        verdict,
    }
}

fn version_text<'a>(catalog: &'a Catalog, subject: &str, version: u32) -> anyhow::Result<&'a str> {
    catalog
        .events()
        .find(|e| e.subject() == subject)
        .and_then(|e| e.versions.iter().find(|v| v.version == version))
        .map(|v| v.text.as_str())
        .ok_or_else(|| anyhow::anyhow!("{subject} v{version} is not in the catalog"))
}

/// A minimal Confluent REST client for the three calls the command makes.
pub struct Registry {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Registry {
    /// A client of the registry at `url`, sending `token` as a bearer token when given.
    pub fn new(url: &str, token: Option<String>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, schema: &str) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&json!({ "schema": schema }));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("the registry at {} did not answer: {e}", self.url))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    fn refused(&self, what: &str, status: u16, body: &Value) -> anyhow::Error {
        anyhow::anyhow!(
            "the registry at {} refused {what}: {status} {}",
            self.url,
            body.get("message").and_then(Value::as_str).unwrap_or("")
        )
    }

    /// The id the registry gave this schema under `subject`, if it has it.
    pub async fn lookup(&self, subject: &str, schema: &str) -> anyhow::Result<Option<u32>> {
        match self.post(&format!("/subjects/{subject}"), schema).await? {
            (200, body) => Ok(body["id"].as_u64().and_then(|id| u32::try_from(id).ok())),
            (404, _) => Ok(None),
            (status, body) => Err(self.refused(&format!("the lookup in {subject}"), status, &body)),
        }
    }

    /// `None` when the registry's rule accepts `schema` as the next version of `subject` (or
    /// the subject is new), otherwise why not.
    pub async fn compatible(&self, subject: &str, schema: &str) -> anyhow::Result<Option<String>> {
        let path = format!("/compatibility/subjects/{subject}/versions/latest");
        match self.post(&path, schema).await? {
            (200, body) if body["is_compatible"] == true => Ok(None),
            (200, body) => Ok(Some(
                body["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "the registry's compatibility rule refuses it".into()),
            )),
            // No version yet: anything goes.
            (404, _) => Ok(None),
            (status, body) => Err(self.refused(
                &format!("the compatibility check in {subject}"),
                status,
                &body,
            )),
        }
    }

    /// Registers `schema` under `subject`; its id.
    pub async fn register(&self, subject: &str, schema: &str) -> anyhow::Result<u32> {
        match self
            .post(&format!("/subjects/{subject}/versions"), schema)
            .await?
        {
            (200, body) => body["id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| anyhow::anyhow!("the registry answered no id: {body}")),
            (status, body) => {
                Err(self.refused(&format!("registering in {subject}"), status, &body))
            }
        }
    }
}
