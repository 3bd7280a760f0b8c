//! `choreo saga …`: working with saga definitions — `diagram` (a definition as a Mermaid state
//! diagram) and `replay` (a new version over recorded inputs, see [`crate::replay`]) — and
//! loading definition files as the coordinator does.

use std::path::PathBuf;

use anyhow::Context as _;
use choreo_saga::{Definition, Definitions};
use choreo_schemas::Catalog;

/// The `choreo saga` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SagaCmd {
    /// Print a saga definition as a Mermaid state diagram (steps, dependencies, success,
    /// failure and deadline edges, compensations).
    Diagram {
        /// A definition file or a folder of them; default: the reference order saga.
        #[arg(long)]
        definition: Option<PathBuf>,
        /// The catalog folder the definition is checked against; default: the reference one.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Which saga of a folder (its name); needed when the folder holds several.
        name: Option<String>,
    },
    /// Run a new version of a definition over the recorded inputs of recent sagas (read from
    /// Kafka) next to the version that runs now, and print the sagas that would end
    /// differently: status, emitted events added and removed (exit 0: none, 1: some, 2:
    /// error).
    Replay(crate::replay::ReplayArgs),
}

/// Runs a `choreo saga …` command.
pub async fn run(cmd: SagaCmd) -> std::process::ExitCode {
    match cmd {
        SagaCmd::Diagram {
            definition,
            catalog,
            name,
        } => match diagram(definition, catalog, name) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("choreo: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        SagaCmd::Replay(args) => std::process::ExitCode::from(crate::replay::run(args).await),
    }
}

/// Saga definitions from files and folders (every `*.toml` of a folder); none given: the
/// reference order saga.
pub fn load_definitions(paths: &[PathBuf], catalog: &Catalog) -> anyhow::Result<Definitions> {
    let mut defs = Definitions::new();
    if paths.is_empty() {
        defs.insert(Definition::reference_order_saga(catalog)?)?;
        return Ok(defs);
    }
    for p in paths {
        if p.is_dir() {
            for d in Definitions::load_dir(p, catalog)?.iter() {
                defs.insert(d.as_ref().clone())?;
            }
        } else {
            defs.insert(Definition::load(p, catalog)?)?;
        }
    }
    Ok(defs)
}

/// `choreo saga diagram`.
fn diagram(
    definition: Option<PathBuf>,
    catalog: Option<PathBuf>,
    name: Option<String>,
) -> anyhow::Result<()> {
    let catalog = match &catalog {
        Some(dir) => Catalog::load(dir)?,
        None => Catalog::reference(),
    };
    let defs = load_definitions(definition.as_slice(), &catalog)?;
    let all: Vec<&Definition> = defs.iter().map(AsRef::as_ref).collect();
    let def = match (&name, all.as_slice()) {
        (Some(n), _) => all
            .iter()
            .filter(|d| d.name() == n)
            .max_by_key(|d| d.version())
            .with_context(|| {
                let names: Vec<&str> = all.iter().map(|d| d.name()).collect();
                format!("no saga named {n} (there are: {})", names.join(", "))
            })?,
        (None, [one]) => one,
        (None, _) => anyhow::bail!(
            "several sagas: name one ({})",
            all.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
        ),
    };
    print!("{}", crate::diagram::mermaid(def));
    Ok(())
}
