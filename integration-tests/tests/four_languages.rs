//! One order saga across four languages on Apache Kafka, each with its own ecosystem's client,
//! and choreo's coordinator in the middle: Python (confluent-kafka) places the order, Go
//! (franz-go) is the payment service, Node (kafkajs) the inventory service, Java (the Apache
//! Kafka client with Apache Avro) the shipping service. Schemas come from choreo's registry
//! (`choreo registry`, its schemas in Kafka). Each service reads the events choreo's coordinator
//! emits with its stock deserializer, and every language's producer puts a key on the partition
//! choreo's own producer puts it on.
//!
//! The clients live in `integration-tests/clients/<language>/`; each `setup.sh` installs its
//! dependencies once under the cache directory and prints the program to run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use choreo_integration_tests::broker::{free_port, real_broker};
use choreo_integration_tests::process::{Replica, ReplicaConfig, manifest_dir, start_registry};
use choreo_schemas::{Catalog, ConfluentRegistry};
use rdkafka::message::OwnedHeaders;
use serde_json::Value;
use tokio::process::Command;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Runs a client's `setup.sh` (installs once, then answers at once) and returns its program.
fn setup(script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg(format!("{}/{script}", manifest_dir()))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "{script} failed (its log is above)");
    let program = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        Path::new(&program).exists(),
        "{script} printed {program:?}, which is not a program"
    );
    program
}

/// Runs `program args…` to the end; its one JSON line.
async fn run_json<S: AsRef<std::ffi::OsStr>>(name: &str, program: &str, args: &[S]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new(program)
            .args(args)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not finish within 180 s"))
    .unwrap_or_else(|e| panic!("{name} did not run: {e}"));
    assert!(
        out.status.success(),
        "{name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    serde_json::from_str(line.unwrap_or_default())
        .unwrap_or_else(|e| panic!("{name} printed no JSON line ({e}): {stdout}"))
}

fn trace_id(traceparent: &Value) -> &str {
    traceparent
        .as_str()
        .and_then(|t| t.split('-').nth(1))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_saga_runs_across_python_go_node_and_java_with_choreo_in_the_middle() {
    // The four clients install (once) while the broker starts.
    let installs = tokio::task::spawn_blocking(|| {
        [
            "python/setup.sh",
            "clients/go/setup.sh",
            "clients/node/setup.sh",
            "clients/java/setup.sh",
        ]
        .map(setup)
    });
    let broker = real_broker().await.expect("a real broker");
    let [python, go, node, java] = installs.await.expect("client setup");
    let bootstrap = broker.bootstrap.clone();
    let dir = std::env::temp_dir().join(format!("choreo-4lang-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    let port = free_port().expect("port");
    let _registry = start_registry(&bootstrap, port, &dir.join("registry.log"), &[])
        .await
        .expect("choreo registry");
    let registry = format!("http://127.0.0.1:{port}");
    let catalog = Catalog::load(format!("{}/../schemas", manifest_dir())).expect("catalog");
    catalog
        .register_all(&ConfluentRegistry::new(&registry))
        .await
        .expect("the catalog registers in choreo's registry");
    broker
        .create_topics(&[
            ("orders", 3),
            ("payments", 3),
            ("inventory", 3),
            ("shipping", 3),
            ("keys", 12),
        ])
        .await
        .expect("topics");

    let cfg = ReplicaConfig {
        bootstrap: bootstrap.clone(),
        registry: registry.clone(),
        guarantee: "exactly_once",
        definition: format!("{}/../saga/definitions/order.toml", manifest_dir()).into(),
        group: "coordinator-4lang".into(),
        partitions: 3,
        mock: false,
        log_dir: dir.clone(),
        env: Vec::new(),
    };
    let mut coordinator = Replica::start(&cfg, "4lang-0").await.expect("choreo run");
    coordinator
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("the coordinator is ready");

    // The services wait for their input; Python places the order.
    let order = "order-4lang-1";
    let script = format!("{}/python/cross_language.py", manifest_dir());
    let serve = |name: &'static str, program: &String| {
        let program = program.clone();
        let args = ["serve", &bootstrap, &registry, order].map(str::to_owned);
        tokio::spawn(async move { run_json(name, &program, &args).await })
    };
    let payment = serve("go payment", &go);
    let inventory = serve("node inventory", &node);
    let shipping = serve("java shipping", &java);
    let placed = Command::new(&python)
        .args([&script, "produce", &bootstrap, &registry, order])
        .output()
        .await
        .expect("python runs");
    assert!(
        placed.status.success(),
        "python produce: {}",
        String::from_utf8_lossy(&placed.stderr)
    );
    let confirmed_py = run_json(
        "python confirmed",
        &python,
        &[&script, "confirmed", &bootstrap, &registry, order],
    )
    .await;
    let payment = payment.await.expect("go task");
    let inventory = inventory.await.expect("node task");
    let shipping = shipping.await.expect("java task");

    // Go and Node read Python's order, its trace continued.
    for (who, out) in [("go", &payment), ("node", &inventory)] {
        let received = &out["received"];
        assert_eq!(received["value"]["order_id"], order, "{who}: {out}");
        assert_eq!(received["value"]["channel"], "python", "{who}: {out}");
        assert_eq!(
            received["headers"]["ce_source"], "/services/orders-python",
            "{who}"
        );
        assert_eq!(
            trace_id(&received["headers"]["traceparent"]),
            TRACE_ID,
            "{who}"
        );
    }
    assert_eq!(
        inventory["received"]["value"]["items"][0]["sku"], "sku-py",
        "{inventory}"
    );
    // Java read the coordinator's ShipmentRequested, caused by the Go or the Node event (the one
    // that completed the second step), with the shipping address of Python's order.
    let requested = &shipping["received"];
    assert_eq!(requested["value"]["order_id"], order, "{shipping}");
    assert_eq!(requested["value"]["shipping_address"], "1 Python Street");
    assert_eq!(
        requested["headers"]["ce_type"],
        "io.choreo.orders.ShipmentRequested"
    );
    let cause = &requested["headers"]["ce_causationid"];
    assert!(
        *cause == payment["produced"]["ce_id"] || *cause == inventory["produced"]["ce_id"],
        "ShipmentRequested caused by {cause}, neither Go's nor Node's event: {shipping}"
    );
    assert_eq!(trace_id(&requested["headers"]["traceparent"]), TRACE_ID);

    // Every language read the coordinator's OrderConfirmed alike: the three services' ids, on
    // the partition of the order's key, caused by Java's ShipmentScheduled.
    let confirmed = &confirmed_py["value"];
    assert_eq!(confirmed["order_id"], order);
    assert_eq!(confirmed["payment_id"], format!("pay-go-{order}"));
    assert_eq!(confirmed["reservation_id"], format!("res-node-{order}"));
    assert_eq!(confirmed["shipment_id"], format!("ship-java-{order}"));
    assert_eq!(
        confirmed_py["headers"]["ce_causationid"],
        shipping["produced"]["ce_id"]
    );
    for (who, out) in [("go", &payment), ("node", &inventory), ("java", &shipping)] {
        let c = &out["confirmed"];
        assert_eq!(&c["value"], confirmed, "{who} decoded OrderConfirmed alike");
        assert_eq!(c["schema_id"], confirmed_py["schema_id"], "{who}");
        assert_eq!(c["partition"], confirmed_py["partition"], "{who}");
        assert_eq!(c["headers"]["ce_type"], "io.choreo.orders.OrderConfirmed");
        assert_eq!(c["headers"]["ce_correlationid"], order, "{who}");
        assert_eq!(
            out["produced"]["partition"], confirmed_py["partition"],
            "{who} produced on the order's partition"
        );
    }
    let saga: Value = reqwest::get(format!("{}/api/sagas/order/{order}", coordinator.api))
        .await
        .expect("operator API")
        .json()
        .await
        .expect("saga JSON");
    assert_eq!(saga["status"], "completed", "{saga}");

    // Each language's producer puts a key where choreo's puts it (12 partitions, 48 keys).
    let keys: Vec<String> = (0..48)
        .map(|i| format!("order-{i:03}-{}", i * 7919))
        .collect();
    let bus = choreo_bus::Bus::new(
        choreo_bus::BusConfig::new(&bootstrap).with_source("/tests/keys"),
        std::sync::Arc::new(ConfluentRegistry::new(&registry)),
    )
    .expect("bus");
    let mut choreo = BTreeMap::new();
    for k in &keys {
        let (partition, _) = bus
            .send_raw("keys", Some(k), k.as_bytes(), OwnedHeaders::new())
            .await
            .expect("choreo produces");
        choreo.insert(k.clone(), Value::from(partition));
    }
    let spread: std::collections::BTreeSet<_> = choreo.values().map(ToString::to_string).collect();
    assert!(spread.len() > 6, "48 keys over 12 partitions: {choreo:?}");
    let mut args = vec!["partitions", bootstrap.as_str(), "keys"];
    args.extend(keys.iter().map(String::as_str));
    for (who, program, prefix) in [
        ("python", &python, Some(script.as_str())),
        ("go", &go, None),
        ("node", &node, None),
        ("java", &java, None),
    ] {
        let argv: Vec<&str> = prefix.into_iter().chain(args.iter().copied()).collect();
        let landed = run_json(&format!("{who} partitions"), program, &argv).await;
        let landed: BTreeMap<String, Value> =
            serde_json::from_value(landed).expect("a key → partition map");
        assert_eq!(
            landed, choreo,
            "{who}'s producer partitions keys like choreo's"
        );
    }

    coordinator.stop().await.expect("coordinator stops");
    std::fs::remove_dir_all(&dir).ok();
}
