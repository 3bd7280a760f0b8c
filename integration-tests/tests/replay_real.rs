//! `choreo saga replay` on Apache Kafka (a broker of its own: the saga topics have fixed
//! names): order sagas run through a coordinator — some paid at once, some paid seconds
//! later, one declined — then replayed from the topics with a new version whose payment
//! deadline is shorter than the slow payments took: exactly the slow sagas are reported, each
//! completed now and not with the new version; replayed with the unchanged definition, none.

use std::time::{Duration, Instant};

use choreo_integration_tests::broker::real_broker;
use choreo_integration_tests::process::{Replica, choreo_binary};
use choreo_integration_tests::saga_scenarios::{Path, order, start_services};
use choreo_integration_tests::world::World;
use choreo_schemas::event::{InventoryReserved, Money, PaymentAuthorized};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

/// `choreo saga replay <args>`: (exit code, stdout, stderr).
async fn replay(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(choreo_binary().expect("the choreo binary"))
        .args(["saga", "replay"])
        .args(args)
        .env_remove("CHOREO_CONFIG")
        .output()
        .await
        .expect("choreo runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_reports_exactly_the_sagas_a_shorter_payment_deadline_would_change() {
    let world = World::new(real_broker().await.expect("a real broker"))
        .await
        .expect("world");
    // Steps get 30 s: every payment below makes it in time.
    let cfg = world.replica_config("exactly_once", 30);
    let mut replica = Replica::start(&cfg, "replay-0").await.expect("replica");
    replica.wait_ready(PATIENCE).await.expect("ready");
    let bus = world.bus().expect("bus");
    let services = start_services(&bus).expect("services");

    let fast = ["happy-fast-1", "happy-fast-2", "happy-fast-3"];
    let slow = ["happy-slow-1", "happy-slow-2", "happy-slow-3"];
    let declined = "declined-1";
    for id in fast {
        Path::Happy.drive(&bus, id).await.expect("driven");
    }
    Path::PaymentDeclined
        .drive(&bus, declined)
        .await
        .expect("driven");
    // Slow payments: placed and reserved now, paid four seconds later.
    for id in slow {
        bus.publish(&order(id)).await.expect("order");
        bus.publish(&InventoryReserved {
            order_id: id.into(),
            reservation_id: format!("res-{id}"),
            items: vec![],
        })
        .await
        .expect("reservation");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in slow {
        bus.publish(&PaymentAuthorized {
            order_id: id.into(),
            payment_id: format!("pay-{id}"),
            amount: Money {
                amount_minor: 1000,
                currency: "EUR".into(),
            },
        })
        .await
        .expect("payment");
    }
    let deadline = Instant::now() + PATIENCE;
    for (id, status) in fast
        .iter()
        .chain(slow.iter())
        .map(|id| (*id, "completed"))
        .chain([(declined, "compensated")])
    {
        loop {
            let v: Value = reqwest::get(format!("{}/api/sagas/order/{id}", replica.api))
                .await
                .expect("api")
                .json()
                .await
                .unwrap_or(Value::Null);
            if v["status"] == status {
                break;
            }
            assert!(Instant::now() < deadline, "order/{id} {status}: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The new version: payment gets two seconds.
    let baseline = cfg.definition.display().to_string();
    let text = std::fs::read_to_string(&cfg.definition).expect("definition");
    let at = text
        .find("deadline = \"30s\"")
        .expect("the payment step's deadline");
    let new_text = format!(
        "{}deadline = \"2s\"{}",
        &text[..at],
        &text[at + "deadline = \"30s\"".len()..]
    )
    .replace("version = 1", "version = 2");
    let new = world.dir.join("order-v2.toml");
    std::fs::write(&new, new_text).expect("written");
    let common = [
        "--baseline",
        baseline.as_str(),
        "--bootstrap-servers",
        world.broker.bootstrap.as_str(),
        "--registry",
        world.registry_url.as_str(),
        "--group",
        cfg.group.as_str(),
        "--since",
        "30m",
    ];
    let new_path = new.display().to_string();

    let mut args = vec!["--definition", new_path.as_str(), "--json"];
    args.extend(common);
    let (code, out, err) = replay(&args).await;
    assert_eq!(code, 1, "some sagas would end differently: {out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let report = &v["report"];
    assert_eq!(report["replayed"], 7, "{out}");
    assert_eq!(v["baseline_version"], 1);
    assert_eq!(v["new_version"], 2);
    let differ: Vec<&str> = report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .filter_map(|d| d["correlation_id"].as_str())
        .collect();
    let mut sorted = differ.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, slow, "exactly the slow payments: {out}");
    for d in report["differences"].as_array().expect("differences") {
        assert_eq!(d["old"]["status"], "completed", "{d}");
        assert_ne!(d["new"]["status"], "completed", "{d}");
        assert!(
            d["added"].as_array().is_some_and(|a| a
                .iter()
                .any(|c| c["event_type"] == "io.choreo.orders.RefundPayment")),
            "{d}"
        );
        assert!(
            d["removed"].as_array().is_some_and(|a| a
                .iter()
                .any(|c| c["event_type"] == "io.choreo.orders.OrderConfirmed")),
            "{d}"
        );
    }

    // The same, as text.
    let mut args = vec!["--definition", new_path.as_str()];
    args.extend(common);
    let (code, out, _) = replay(&args).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("3 would end differently (3 with another status)"),
        "{out}"
    );
    assert!(out.contains("order/happy-slow-1  completed -> "), "{out}");
    assert!(
        out.contains("  + RefundPayment (step payment, compensate)"),
        "{out}"
    );
    assert!(out.contains("  - OrderConfirmed (completed)"), "{out}");

    // The unchanged definition: nothing would change.
    let mut args = vec!["--definition", baseline.as_str()];
    args.extend(common);
    let (code, out, err) = replay(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 7 saga(s) of order"), "{out}");
    assert!(out.contains(": 0 would end differently"), "{out}");

    // A definition of another saga than its baseline is refused.
    let other = world.dir.join("refund.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&new)
            .expect("new")
            .replace("name = \"order\"", "name = \"refund\""),
    )
    .expect("written");
    let other = other.display().to_string();
    let mut args = vec!["--definition", other.as_str()];
    args.extend(common);
    let (code, _, err) = replay(&args).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("replay compares two versions of one saga"),
        "{err}"
    );

    services.shutdown().await.expect("services stop");
    replica.stop().await.expect("stops");
}
