//! The `choreo sagas` client against the served operator API, and its arguments.

use choreo_cli::client::{self, ListArgs};
use tokio_util::sync::CancellationToken;

#[path = "../../coordinator/tests/support/mod.rs"]
mod support;
use support::*;

/// The fixture's API served on a free port: its URL, the stop signal and the server task.
async fn served(f: &Fixture) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let (addr, task) = http::serve(
        f.state.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        shutdown.clone(),
    )
    .await
    .expect("serves");
    (format!("http://{addr}"), shutdown, task)
}

#[tokio::test]
async fn the_client_talks_to_the_served_api() {
    let f = fixture();
    let (api, shutdown, task) = served(&f).await;

    let text = client::list(&api, &ListArgs::default())
        .await
        .expect("list");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "pending 0 · running 2 · compensating 0 · completed 0 · compensated 1 · needs_operator 1 (total 4)"
    );
    assert!(
        lines[2].starts_with("SAGA ") && lines[2].contains("STATUS"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("order/a/b ") && lines[3].contains("compensated"),
        "{text}"
    );
    assert!(
        lines[6].starts_with("order/order-1 ")
            && lines[6].contains("running")
            && lines[6].contains("10m0s"),
        "{text}"
    );

    let filtered = ListArgs {
        status: Some("needs_operator".into()),
        ..ListArgs::default()
    };
    let text = client::list(&api, &filtered).await.expect("list");
    assert!(
        text.contains("order/order-2") && !text.contains("order/order-1"),
        "{text}"
    );
    let none = ListArgs {
        definition: Some("shipping".into()),
        ..ListArgs::default()
    };
    assert!(
        client::list(&api, &none)
            .await
            .expect("list")
            .contains("no saga matches")
    );

    let bad = ListArgs {
        min_age: Some("soon".into()),
        ..ListArgs::default()
    };
    let e = client::list(&api, &bad)
        .await
        .expect_err("a bad filter")
        .to_string();
    assert!(
        e.starts_with("the API answered 400 Bad Request: min_age: malformed duration"),
        "{e}"
    );

    let text = client::get(&api, "order", "order-1").await.expect("get");
    assert!(text.contains("saga        order/order-1"), "{text}");
    assert!(text.contains("status      running"), "{text}");
    assert!(text.contains("definition  order v1"), "{text}");
    assert!(text.contains("STEP"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("payment ") && l.contains("completed")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("inventory ") && l.contains("running")),
        "{text}"
    );
    assert!(
        text.contains("deadline of step \"inventory\"  in "),
        "{text}"
    );
    assert!(
        text.contains("PaymentAuthorized completed step payment"),
        "{text}"
    );

    let text = client::get(&api, "order", "order-2").await.expect("get");
    assert!(text.contains("aborted     payment declined"), "{text}");
    assert!(
        text.contains("NEEDS AN OPERATOR: step inventory: ReleaseInventory was never acknowledged"),
        "{text}"
    );
    assert!(text.contains("STUCK after 4 attempts"), "{text}");
    assert!(text.contains("none pending"), "{text}");

    let text = client::get(&api, "order", "a/b")
        .await
        .expect("a correlation id with a slash");
    assert!(text.contains("saga        order/a/b"), "{text}");

    let e = client::get(&api, "order", "nope")
        .await
        .expect_err("unknown")
        .to_string();
    assert_eq!(e, "the API answered 404 Not Found: no saga order/nope");

    let text = client::send_command(
        &api,
        "order",
        "order-1",
        Command::Abort {
            reason: "fraud".into(),
        },
    )
    .await
    .expect("abort");
    assert!(
        text.starts_with("abort accepted for order/order-1 (command "),
        "{text}"
    );
    let text = client::send_command_as(&api, "order", "a/b", Command::Resume, Some("bob"))
        .await
        .expect("resume");
    assert!(text.starts_with("resume accepted for order/a/b"), "{text}");
    let sent = f.sink.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].command,
        Command::Abort {
            reason: "fraud".into()
        }
    );
    assert_eq!(sent[1].correlation_id, "a/b");
    assert_eq!(sent[1].operator.as_deref(), Some("bob"));
    assert!(text.contains(&sent[1].id));

    let e = client::send_command(
        &api,
        "order",
        "order-1",
        Command::Retry {
            step: "nope".into(),
        },
    )
    .await
    .expect_err("unknown step")
    .to_string();
    assert!(
        e.starts_with("the API answered 400 Bad Request: saga order/order-1 has no step \"nope\""),
        "{e}"
    );

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the server stops on cancel")
        .expect("the server task ends cleanly");
    let e = client::list(&api, &ListArgs::default())
        .await
        .expect_err("the server is gone");
    assert!(
        format!("{e:#}").contains("cannot reach the choreo API"),
        "{e:#}"
    );
}

#[tokio::test]
async fn the_cli_arguments_parse() {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }
    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Sagas(client::SagasArgs),
    }

    let Top::Sagas(args) = Cli::try_parse_from([
        "choreo",
        "sagas",
        "list",
        "--status",
        "running",
        "--min-age",
        "5m",
        "--limit",
        "3",
        "--api",
        "http://x:1",
    ])
    .expect("parses")
    .command;
    assert_eq!(args.api, "http://x:1");
    assert_eq!(
        args.command,
        client::SagasCommand::List(ListArgs {
            definition: None,
            status: Some("running".into()),
            min_age: Some("5m".into()),
            max_age: None,
            stuck: None,
            waiting_on: None,
            search: None,
            limit: Some(3),
        })
    );

    let Top::Sagas(args) = Cli::try_parse_from([
        "choreo", "sagas", "abort", "order", "o-1", "--reason", "fraud",
    ])
    .expect("parses")
    .command;
    assert_eq!(
        args.command,
        client::SagasCommand::Abort {
            saga: client::SagaRef {
                definition: "order".into(),
                correlation_id: "o-1".into()
            },
            reason: "fraud".into()
        }
    );
    for argv in [
        &[
            "choreo", "sagas", "retry", "order", "o-1", "--step", "payment",
        ][..],
        &[
            "choreo", "sagas", "skip", "order", "o-1", "--step", "payment",
        ],
        &["choreo", "sagas", "resume", "order", "o-1"],
        &["choreo", "sagas", "get", "order", "o-1", "--json"],
    ] {
        Cli::try_parse_from(argv).expect("parses");
    }
    assert!(
        Cli::try_parse_from(["choreo", "sagas", "abort", "order", "o-1"]).is_err(),
        "--reason is required"
    );
    assert!(
        Cli::try_parse_from(["choreo", "sagas", "retry", "order", "o-1"]).is_err(),
        "--step is required"
    );
}

#[tokio::test]
async fn batch_shows_what_it_would_touch_and_sends_only_with_yes() {
    let f = fixture();
    let (api, shutdown, task) = served(&f).await;
    let filter = ListArgs {
        status: Some("running".into()),
        ..ListArgs::default()
    };
    let command = r#"{"command":"abort","reason":"supplier gone"}"#;
    let dry = client::batch(&api, &filter, command, false, Some("ops"), false)
        .await
        .expect("dry run");
    assert!(dry.starts_with("abort would go to 2 saga(s):"), "{dry}");
    assert!(
        dry.contains("order/order-1") && dry.contains("refund/r-1"),
        "{dry}"
    );
    assert!(dry.contains("nothing sent"), "{dry}");
    assert!(f.sink.sent().is_empty());
    let done = client::batch(&api, &filter, command, true, Some("ops"), false)
        .await
        .expect("run");
    assert_eq!(done, "abort sent to 2 of 2 saga(s)");
    assert_eq!(f.sink.sent().len(), 2);
    let bad = client::batch(
        &api,
        &filter,
        "{\"command\":\"explode\"}",
        true,
        None,
        false,
    )
    .await
    .expect_err("not a command");
    assert!(bad.to_string().contains("is not a command"), "{bad}");
    shutdown.cancel();
    task.await.expect("stops");
}
