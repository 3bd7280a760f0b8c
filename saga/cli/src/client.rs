//! `choreo sagas …`: the command-line client of the operator API (`choreo_coordinator::http`).
//!
//! ```text
//! choreo sagas list [--definition D] [--status S] [--min-age 5m] [--max-age 1h] [--limit N]
//! choreo sagas get DEFINITION CORRELATION_ID
//! choreo sagas abort DEFINITION CORRELATION_ID --reason TEXT
//! choreo sagas retry DEFINITION CORRELATION_ID --step STEP
//! choreo sagas skip DEFINITION CORRELATION_ID --step STEP
//! choreo sagas resume DEFINITION CORRELATION_ID
//! ```
//!
//! Every subcommand takes `--api URL` (default `http://127.0.0.1:8080`, or `$CHOREO_API`),
//! `--json` (print the API's JSON as is) and `--operator NAME` (recorded with a command;
//! default `$CHOREO_OPERATOR`, else `$USER`).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use choreo_saga::{Command, SagaState};

use choreo_coordinator::http::{CommandAccepted, ListResponse, OPERATOR_HEADER};

pub mod dlq;
mod http;
mod render;
pub use http::DEFAULT_API;
use http::{client, get_json, pretty, read_json, unreachable_api, with_query, with_segments};
pub use render::{format_age, format_time, render_list, render_saga};

/// `choreo sagas …`: watch and act on sagas through a coordinator's operator API.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SagasArgs {
    /// The operator API of any coordinator replica.
    #[arg(long, global = true, env = "CHOREO_API", default_value = DEFAULT_API)]
    pub api: String,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who is acting, recorded with a command on an API without tokens [default: $USER] (with
    /// tokens, the token's name is recorded).
    #[arg(long, global = true, env = "CHOREO_OPERATOR")]
    pub operator: Option<String>,
    /// The API's bearer token (a viewer's to read, an operator's to act). Prefer the
    /// environment variable.
    #[arg(long, global = true, env = "CHOREO_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: SagasCommand,
}

/// The `choreo sagas` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first, with the number of sagas in each status.
    List(ListArgs),
    /// Show one saga: status, steps, pending deadlines and timeline.
    Get(SagaRef),
    /// Abort a pending or running saga: its completed steps are compensated.
    Abort {
        /// The saga.
        #[command(flatten)]
        saga: SagaRef,
        /// Why (recorded in the timeline, and available to compensations as `saga.reason`).
        #[arg(long)]
        reason: String,
    },
    /// Emit a step's unacknowledged or stuck compensation again, with a fresh retry budget.
    Retry {
        /// The saga.
        #[command(flatten)]
        saga: SagaRef,
        /// The step whose compensation to retry.
        #[arg(long)]
        step: String,
    },
    /// Running: count a step as done without its success event. Compensating or needing an
    /// operator: count the step's compensation as done (handled by hand).
    Skip {
        /// The saga.
        #[command(flatten)]
        saga: SagaRef,
        /// The step.
        #[arg(long)]
        step: String,
    },
    /// Leave needs_operator: stuck compensations wait for their acknowledgement again.
    Resume(SagaRef),
    /// One command to every saga a filter matches, e.g. `choreo sagas batch --status
    /// needs_operator --definition order --command '{"command":"retry","step":"payment"}'`.
    /// Without --yes it only says how many sagas (and which) it would touch.
    Batch {
        /// Which sagas.
        #[command(flatten)]
        filter: ListArgs,
        /// The command, as the API takes it (JSON).
        #[arg(long)]
        command: String,
        /// Send it (to exactly the number of sagas the dry run just counted).
        #[arg(long)]
        yes: bool,
    },
    /// Complete a started step of a running saga as its success event would (an approval by a
    /// person).
    Approve {
        /// The saga.
        #[command(flatten)]
        saga: SagaRef,
        /// The step.
        #[arg(long)]
        step: String,
        /// Why (recorded in the timeline).
        #[arg(long)]
        reason: String,
    },
    /// Fail a started step of a running saga as its failure event would: the saga aborts and
    /// compensates.
    Reject {
        /// The saga.
        #[command(flatten)]
        saga: SagaRef,
        /// The step.
        #[arg(long)]
        step: String,
        /// Why (recorded, and the abort reason).
        #[arg(long)]
        reason: String,
    },
}

/// One saga, named by its definition and correlation id.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SagaRef {
    /// The saga definition's name, e.g. `order`.
    pub definition: String,
    /// The saga's correlation id, e.g. the order id.
    pub correlation_id: String,
}

/// Filters of `choreo sagas list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ListArgs {
    /// Only sagas of this definition.
    #[arg(long)]
    pub definition: Option<String>,
    /// Only sagas in this status: pending, running, compensating, completed, compensated,
    /// needs_operator.
    #[arg(long)]
    pub status: Option<String>,
    /// Only sagas created at least this long ago, e.g. `5m`.
    #[arg(long)]
    pub min_age: Option<String>,
    /// Only sagas created at most this long ago, e.g. `1h`.
    #[arg(long)]
    pub max_age: Option<String>,
    /// Only stuck sagas: neither completed nor compensated, and unchanged this long, e.g. `10m`.
    #[arg(long)]
    pub stuck: Option<String>,
    /// Only sagas waiting on this step (started, not answered yet).
    #[arg(long)]
    pub waiting_on: Option<String>,
    /// Only sagas whose correlation id contains this text.
    #[arg(long)]
    pub search: Option<String>,
    /// At most this many sagas [API default: 100].
    #[arg(long)]
    pub limit: Option<usize>,
}

impl ListArgs {
    /// The filters that are set, as the API names them (query string, batch filter).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("definition", self.definition.clone()),
            ("status", self.status.clone()),
            ("min_age", self.min_age.clone()),
            ("max_age", self.max_age.clone()),
            ("stuck", self.stuck.clone()),
            ("waiting_on", self.waiting_on.clone()),
            ("search", self.search.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// Runs a `choreo sagas …` command and prints its answer.
pub async fn run(args: SagasArgs) -> anyhow::Result<()> {
    http::use_token(args.token.as_deref());
    let api = args.api.as_str();
    let operator = args
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|o| !o.trim().is_empty());
    let out = match &args.command {
        SagasCommand::List(q) if args.json => {
            pretty(&get_json::<serde_json::Value>(&list_url(api, q)?).await?)?
        }
        SagasCommand::List(q) => list(api, q).await?,
        SagasCommand::Get(s) if args.json => pretty(
            &get_json::<serde_json::Value>(&saga_url(
                api,
                &s.definition,
                &s.correlation_id,
                false,
            )?)
            .await?,
        )?,
        SagasCommand::Get(s) => get(api, &s.definition, &s.correlation_id).await?,
        SagasCommand::Abort { saga, reason } => {
            act(
                &args,
                operator.as_deref(),
                saga,
                Command::Abort {
                    reason: reason.clone(),
                },
            )
            .await?
        }
        SagasCommand::Retry { saga, step } => {
            act(
                &args,
                operator.as_deref(),
                saga,
                Command::Retry { step: step.clone() },
            )
            .await?
        }
        SagasCommand::Skip { saga, step } => {
            act(
                &args,
                operator.as_deref(),
                saga,
                Command::Skip { step: step.clone() },
            )
            .await?
        }
        SagasCommand::Resume(saga) => {
            act(&args, operator.as_deref(), saga, Command::Resume).await?
        }
        SagasCommand::Batch {
            filter,
            command,
            yes,
        } => batch(api, filter, command, *yes, operator.as_deref(), args.json).await?,
        SagasCommand::Approve { saga, step, reason } => {
            let command = Command::Approve {
                step: step.clone(),
                reason: reason.clone(),
            };
            act(&args, operator.as_deref(), saga, command).await?
        }
        SagasCommand::Reject { saga, step, reason } => {
            let command = Command::Reject {
                step: step.clone(),
                reason: reason.clone(),
            };
            act(&args, operator.as_deref(), saga, command).await?
        }
    };
    println!("{}", out.trim_end());
    Ok(())
}

async fn act(
    args: &SagasArgs,
    operator: Option<&str>,
    saga: &SagaRef,
    command: Command,
) -> anyhow::Result<String> {
    let (api, def, id) = (
        args.api.as_str(),
        saga.definition.as_str(),
        saga.correlation_id.as_str(),
    );
    if args.json {
        pretty(&post_command(api, def, id, &command, operator).await?)
    } else {
        send_command_as(api, def, id, command, operator).await
    }
}

/// `choreo sagas list`: the matching sagas as a table, after the count of sagas per status.
pub async fn list(api: &str, query: &ListArgs) -> anyhow::Result<String> {
    let answer: ListResponse = get_json(&list_url(api, query)?).await?;
    Ok(render_list(&answer, now_ms()))
}

/// `choreo sagas get`: one saga's status, steps, pending deadlines and timeline.
pub async fn get(api: &str, definition: &str, correlation_id: &str) -> anyhow::Result<String> {
    let state: SagaState = get_json(&saga_url(api, definition, correlation_id, false)?).await?;
    Ok(render_saga(&state, now_ms()))
}

/// Sends an operator command (without an operator name); answers what was accepted.
pub async fn send_command(
    api: &str,
    definition: &str,
    correlation_id: &str,
    command: Command,
) -> anyhow::Result<String> {
    send_command_as(api, definition, correlation_id, command, None).await
}

/// Sends an operator command on behalf of `operator`; answers what was accepted.
pub async fn send_command_as(
    api: &str,
    definition: &str,
    correlation_id: &str,
    command: Command,
    operator: Option<&str>,
) -> anyhow::Result<String> {
    let accepted = post_command(api, definition, correlation_id, &command, operator).await?;
    Ok(format!(
        "{} accepted for {definition}/{correlation_id} (command {}); it shows in the saga's timeline \
         once applied: choreo sagas get {definition} {correlation_id}",
        command.name(),
        accepted.command_id
    ))
}

async fn post_command(
    api: &str,
    definition: &str,
    correlation_id: &str,
    command: &Command,
    operator: Option<&str>,
) -> anyhow::Result<CommandAccepted> {
    let url = saga_url(api, definition, correlation_id, true)?;
    let mut req = client()?.post(url.clone()).json(command);
    if let Some(op) = operator {
        req = req.header(OPERATOR_HEADER, op);
    }
    let resp = req.send().await.with_context(|| unreachable_api(api))?;
    read_json(resp, &url).await
}

/// `choreo sagas batch`: a dry run, then (with `yes`) the run on that many sagas; the text (or
/// JSON) to print.
pub async fn batch(
    api: &str,
    filter: &ListArgs,
    command: &str,
    yes: bool,
    operator: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let command: Command = serde_json::from_str(command).with_context(|| {
        format!("--command {command:?} is not a command, e.g. {{\"command\":\"retry\",\"step\":\"payment\"}}")
    })?;
    let url = with_segments(api, &["api", "sagas", "batch"])?;
    let f: serde_json::Map<String, serde_json::Value> = filter
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let send = |body: serde_json::Value| {
        let url = url.clone();
        async move {
            let mut req = client()?.post(url.clone()).json(&body);
            if let Some(op) = operator {
                req = req.header(OPERATOR_HEADER, op);
            }
            let resp = req.send().await.with_context(|| unreachable_api(api))?;
            read_json::<serde_json::Value>(resp, &url).await
        }
    };
    let preview =
        send(serde_json::json!({"filter": f, "command": command, "dry_run": true})).await?;
    let matched = preview["matched"].as_u64().unwrap_or(0);
    if !yes {
        if json {
            return pretty(&preview);
        }
        if matched == 0 {
            return Ok(format!(
                "{} would go to no saga: nothing matches",
                command.name()
            ));
        }
        let ids: Vec<&str> = preview["saga_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        return Ok(format!(
            "{} would go to {matched} saga(s):\n{}\n(nothing sent: add --yes to send it)",
            command.name(),
            ids.join("\n")
        ));
    }
    let done =
        send(serde_json::json!({"filter": f, "command": command, "expect": matched})).await?;
    if json {
        return pretty(&done);
    }
    let mut out = format!(
        "{} sent to {} of {matched} saga(s)",
        command.name(),
        done["published"]
    );
    for r in done["refused"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  not sent to {}: {}",
            r["saga_id"].as_str().unwrap_or("?"),
            r["error"].as_str().unwrap_or("?")
        ));
    }
    Ok(out)
}

fn list_url(api: &str, q: &ListArgs) -> anyhow::Result<reqwest::Url> {
    Ok(with_query(
        with_segments(api, &["api", "sagas"])?,
        &q.pairs(),
    ))
}

fn saga_url(
    api: &str,
    definition: &str,
    correlation_id: &str,
    commands: bool,
) -> anyhow::Result<reqwest::Url> {
    let mut segments = vec!["api", "sagas", definition, correlation_id];
    if commands {
        segments.push("commands");
    }
    with_segments(api, &segments)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_filters() {
        let url = saga_url("http://h:1/base/", "order", "a/b c", true).expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/base/api/sagas/order/a%2Fb%20c/commands"
        );
        let q = ListArgs {
            status: Some("needs_operator".into()),
            limit: Some(5),
            ..ListArgs::default()
        };
        let url = list_url("http://h:1", &q).expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/api/sagas?status=needs_operator&limit=5"
        );
        let url = list_url("http://h:1", &ListArgs::default()).expect("url");
        assert_eq!(url.as_str(), "http://h:1/api/sagas");
    }
}
