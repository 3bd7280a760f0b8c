//! The `choreo sagas` client against the served operator API, and its arguments.

use choreo_cli::client::{self, ListArgs, PageArgs};
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
        client::SagasCommand::List {
            filter: ListArgs {
                definition: None,
                version: None,
                status: Some("running".into()),
                min_age: Some("5m".into()),
                max_age: None,
                stuck: None,
                waiting_on: None,
                search: None,
                limit: Some(3),
            },
            page: PageArgs::default(),
        }
    );
    let Top::Sagas(args) = Cli::try_parse_from([
        "choreo",
        "sagas",
        "list",
        "--version",
        "2",
        "--before",
        "5:order/o-1",
    ])
    .expect("parses")
    .command;
    assert_eq!(
        args.command,
        client::SagasCommand::List {
            filter: ListArgs {
                version: Some(2),
                ..ListArgs::default()
            },
            page: PageArgs {
                before: Some("5:order/o-1".into()),
                all: false
            },
        }
    );
    assert!(
        Cli::try_parse_from(["choreo", "sagas", "list", "--all", "--before", "x"]).is_err(),
        "--all follows every page from the first"
    );
    assert!(
        Cli::try_parse_from(["choreo", "sagas", "definitions", "--mermaid"]).is_err(),
        "--mermaid needs a definition"
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
        &["choreo", "sagas", "list", "--all", "--status", "running"],
        &["choreo", "sagas", "watch", "--status", "needs_operator"],
        &[
            "choreo", "sagas", "events", "order", "o-1", "--margin", "1h",
        ],
        &["choreo", "sagas", "definitions"],
        &["choreo", "sagas", "definitions", "order", "1", "--mermaid"],
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

#[tokio::test]
async fn list_pages_by_cursor_and_all_follows_every_page() {
    let f = fixture();
    let (api, shutdown, task) = served(&f).await;
    let one = ListArgs {
        limit: Some(1),
        ..ListArgs::default()
    };
    let text = client::list(&api, &one).await.expect("list");
    let more = text
        .lines()
        .find(|l| l.starts_with("more: 1 of 4 shown; the next page: --before '"))
        .unwrap_or_else(|| panic!("a next page: {text}"));
    let cursor = more
        .split('\'')
        .nth(1)
        .expect("the cursor between quotes")
        .to_owned();
    assert!(text.contains("order/a/b"), "the newest first: {text}");
    let second = client::list_pages(
        &api,
        &one,
        &PageArgs {
            before: Some(cursor),
            all: false,
        },
        false,
    )
    .await
    .expect("page 2");
    assert!(
        second.contains("refund/r-1") && !second.contains("order/a/b"),
        "{second}"
    );

    let all = client::list_pages(
        &api,
        &one,
        &PageArgs {
            before: None,
            all: true,
        },
        false,
    )
    .await
    .expect("every page");
    let rows: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("order/") || l.starts_with("refund/"))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        rows,
        ["order/a/b", "refund/r-1", "order/order-2", "order/order-1"],
        "{all}"
    );
    assert_eq!(all.matches("SAGA ").count(), 1, "one header: {all}");
    assert!(!all.contains("more: "), "{all}");
    let json = client::list_pages(
        &api,
        &one,
        &PageArgs {
            before: None,
            all: true,
        },
        true,
    )
    .await
    .expect("every page as JSON");
    assert_eq!(json.lines().count(), 4, "one answer per page: {json}");
    let v1 = ListArgs {
        definition: Some("order".into()),
        version: Some(1),
        ..ListArgs::default()
    };
    let text = client::list(&api, &v1).await.expect("list");
    assert!(!text.contains("refund/"), "{text}");
    shutdown.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn events_print_the_timeline_with_each_records_headers_and_payload() {
    let f = fixture();
    let (api, shutdown, task) = served(&f).await;
    let at = f.order_1.created_at.0;
    let record = |offset: i64, at: u64, event_type: &str, payload: Value| SagaRecord {
        kind: "event".into(),
        topic: "orders".into(),
        partition: 1,
        offset,
        timestamp_ms: Some(i64::try_from(at).expect("fits")),
        event_type: event_type.into(),
        id: "e-\u{1b}[31mred".into(),
        source: "/shop".into(),
        causation_id: None,
        time: None,
        schema_id: Some(7),
        payload: Some(payload),
        payload_error: None,
    };
    f.history.records.lock().expect("lock").extend([
        record(
            3,
            at + 5,
            "io.choreo.orders.OrderPlaced",
            json!({"order_id": "order-1", "shipping_address": "<script>alert(1)</script>"}),
        ),
        record(
            9,
            at + 60_000,
            "io.choreo.orders.ShipmentRequested",
            json!({"order_id": "order-1"}),
        ),
    ]);
    let text = client::events(&api, "order", "order-1", None, None, false)
        .await
        .expect("events");
    assert!(
        text.starts_with("saga order/order-1 (running): 2 records of it among 10 read"),
        "{text}"
    );
    let placed = text
        .lines()
        .position(|l| l.contains("received  OrderPlaced  orders/1@3"))
        .unwrap_or_else(|| panic!("{text}"));
    let started = text
        .lines()
        .position(|l| l.contains("OrderPlaced started the saga"))
        .unwrap_or_else(|| panic!("{text}"));
    let requested = text
        .lines()
        .position(|l| l.contains("emitted   ShipmentRequested"))
        .unwrap_or_else(|| panic!("emitted, as the definition says: {text}"));
    assert!(started < placed && placed < requested, "by time: {text}");
    assert!(
        text.contains(r#""shipping_address":"<script>alert(1)</script>""#),
        "the payload: {text}"
    );
    assert!(
        !text.contains('\u{1b}') && text.contains("id e-\\u{1b}[31mred"),
        "no escape sequence reaches the terminal: {text}"
    );
    let json = client::events(&api, "order", "order-1", Some("1h"), Some(50), true)
        .await
        .expect("json");
    assert!(json.contains("\"scanned\": 10"), "{json}");
    let q = f
        .history
        .queries
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("asked");
    assert_eq!(q.max_records, 50);
    shutdown.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn definitions_are_listed_and_one_shows_its_steps_edges_and_mermaid() {
    let f = fixture();
    let (api, shutdown, task) = served(&f).await;
    let text = client::definitions(&api, None, None, false, false)
        .await
        .expect("list");
    assert!(text.starts_with("NAME "), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("order ")
            && l.contains("v1 (newest)")
            && l.contains("payment, inventory, shipping")),
        "{text}"
    );
    let text = client::definitions(&api, Some("order"), None, false, false)
        .await
        .expect("one");
    assert!(text.starts_with("saga order v1\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("shipping ") && l.contains("payment, inventory")),
        "{text}"
    );
    assert!(
        text.contains("undo order  undo:shipping -> undo:payment"),
        "{text}"
    );
    let mermaid = client::definitions(&api, Some("order"), Some(1), true, false)
        .await
        .expect("mermaid");
    assert_eq!(mermaid, choreo_saga::diagram::mermaid(&order_def()));
    let e = client::definitions(&api, Some("refund"), None, false, false)
        .await
        .expect_err("not run");
    assert!(e.to_string().contains("no definition named refund"), "{e}");
    shutdown.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn watch_prints_each_change_with_the_status_before() {
    let f = fixture();
    let (api, shutdown, task) = served(&f).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let filter = ListArgs {
        definition: Some("order".into()),
        ..ListArgs::default()
    };
    let watching = tokio::spawn({
        let api = api.clone();
        async move {
            client::watch(&api, &filter, false, |line| {
                let last = line.contains("compensating -> compensated");
                let _ = tx.send(line.to_owned());
                !last
            })
            .await
        }
    });
    let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        let line = rx.try_recv();
        line.ok()
    };
    // The first message: the counts.
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("counts: pending 0 · running 2"))
    {
        lines.push(
            tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
                .await
                .expect("a line")
                .expect("open"),
        );
    }
    assert!(lines[0].ends_with("watching (Ctrl-C stops)"), "{lines:?}");
    let mut s = f.order_1.clone();
    s.status = Status::Compensating;
    f.state.view.upsert(s.clone());
    let mut seen = String::new();
    while !seen.contains("order/order-1  compensating") {
        let l = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .expect("a line")
            .expect("open");
        seen.push_str(&l);
        seen.push('\n');
    }
    s.status = Status::Compensated;
    f.state.view.upsert(s);
    tokio::time::timeout(std::time::Duration::from_secs(30), watching)
        .await
        .expect("the watch stops when told")
        .expect("joins")
        .expect("watched");
    let mut rest = String::new();
    while let Some(l) = next(&mut rx) {
        rest.push_str(&l);
        rest.push('\n');
    }
    assert!(
        rest.contains("order/order-1  compensating -> compensated"),
        "{seen}{rest}"
    );
    shutdown.cancel();
    task.await.expect("stops");
}
