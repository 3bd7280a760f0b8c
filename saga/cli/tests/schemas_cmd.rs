//! `choreo schemas check|register` as a pipeline runs it: the binary against choreo's registry
//! served over the Confluent REST API, its exit codes and its report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use choreo_schemas::{MemoryRegistry, RegistryStore, SchemaRegistry};

const TOKEN: &str = "schemas-write-token-42";

async fn registry(token: Option<&str>) -> (String, Arc<MemoryRegistry>) {
    let memory = Arc::new(MemoryRegistry::new());
    let app = choreo_schemas::server::router_with_token(
        Arc::clone(&memory) as Arc<dyn RegistryStore>,
        token.map(str::to_owned),
    );
    let (addr, _task) =
        choreo_schemas::server::serve_app(app, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("registry");
    (format!("http://{addr}"), memory)
}

fn reference_catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// A copy of the reference catalog in a scratch folder, to change.
fn catalog_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("choreo-schemas-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("avro")).expect("dir");
    let src = reference_catalog();
    std::fs::copy(src.join("catalog.toml"), dir.join("catalog.toml")).expect("catalog");
    for f in std::fs::read_dir(src.join("avro")).expect("avro") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dir.join("avro").join(f.file_name().expect("name"))).expect("copy");
    }
    dir
}

/// Runs `choreo schemas <args>`: (exit code, stdout, stderr).
async fn schemas(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("schemas")
        .args(args)
        .env_remove("CHOREO_REGISTRY_URL");
    if let Some(t) = token {
        cmd.env("TEST_SCHEMAS_TOKEN", t);
    }
    let out = cmd.output().await.expect("choreo runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn versions(memory: &MemoryRegistry) -> usize {
    memory
        .subjects()
        .iter()
        .map(|s| memory.versions(s).map_or(0, |v| v.len()))
        .sum()
}

#[tokio::test]
async fn check_register_then_check_again_exits_zero_and_registers_every_version_once() {
    let (url, memory) = registry(None).await;
    let catalog = reference_catalog();
    let catalog = catalog.to_str().expect("path");
    let (code, out, err) =
        schemas(&["check", "--catalog", catalog, "--registry", &url], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("new          compatible").count(), 17, "{out}");
    assert_eq!(versions(&memory), 0, "check registers nothing");

    let (code, out, err) = schemas(
        &["register", "--catalog", catalog, "--registry", &url],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("17 registered now, 0 already"), "{out}");
    assert_eq!(versions(&memory), 17);
    // The id is the one every choreo registry gives that schema.
    let placed_v2 = std::fs::read_to_string(reference_catalog().join("avro/order_placed.v2.avsc"))
        .expect("schema");
    let id = memory
        .register("orders-io.choreo.orders.OrderPlaced", &placed_v2)
        .await
        .expect("same schema, same id");
    assert!(out.contains(&format!("as id {id}")), "{out}");

    let (code, out, _) = schemas(&["check", "--catalog", catalog, "--registry", &url], None).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("registered   id").count(), 17, "{out}");
    let (code, out, _) = schemas(
        &["register", "--catalog", catalog, "--registry", &url],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 registered now, 17 already"), "{out}");
    assert_eq!(versions(&memory), 17);
}

#[tokio::test]
async fn a_version_the_catalog_rule_refuses_fails_check_and_register_registers_nothing() {
    // v3 of OrderPlaced adds a field without a default: a v3 reader cannot read v2 data, so the
    // catalog's BACKWARD rule refuses it.
    let dir = catalog_copy();
    let v2 = std::fs::read_to_string(dir.join("avro/order_placed.v2.avsc")).expect("v2");
    let mut v3: serde_json::Value = serde_json::from_str(&v2).expect("json");
    v3["fields"]
        .as_array_mut()
        .expect("fields")
        .push(serde_json::json!({"name": "loyalty_tier", "type": "string"}));
    std::fs::write(dir.join("avro/order_placed.v3.avsc"), v3.to_string()).expect("v3");
    let toml = std::fs::read_to_string(dir.join("catalog.toml")).expect("toml").replace(
        r#"versions = ["order_placed.v1.avsc", "order_placed.v2.avsc"]"#,
        r#"versions = ["order_placed.v1.avsc", "order_placed.v2.avsc", "order_placed.v3.avsc"]"#,
    );
    std::fs::write(dir.join("catalog.toml"), toml).expect("toml");
    let catalog = dir.to_str().expect("path");

    let (code, out, _) = schemas(&["check", "--catalog", catalog], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("orders-io.choreo.orders.OrderPlaced v3 (order_placed.v3.avsc)")
            && out.contains("loyalty_tier"),
        "{out}"
    );
    let (url, memory) = registry(None).await;
    let (code, out, _) = schemas(
        &["register", "--catalog", catalog, "--registry", &url],
        None,
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing registered"), "{out}");
    assert_eq!(versions(&memory), 0, "nothing registered");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_version_the_registry_rule_refuses_fails_check_naming_the_registrys_reason() {
    // The registry already holds an OrderConfirmed whose order_id is an int: the catalog's (a
    // string) cannot read that data, which the registry's BACKWARD rule refuses.
    let (url, memory) = registry(None).await;
    memory
        .register(
            "orders-io.choreo.orders.OrderConfirmed",
            r#"{"type":"record","name":"OrderConfirmed","namespace":"io.choreo.orders",
                "fields":[{"name":"order_id","type":"int"}]}"#,
        )
        .await
        .expect("seed");
    let catalog = reference_catalog();
    let catalog = catalog.to_str().expect("path");
    let (code, out, _) = schemas(&["check", "--catalog", catalog], None).await;
    assert_eq!(code, 0, "the catalog alone is consistent: {out}");
    let (code, out, _) = schemas(&["check", "--catalog", catalog, "--registry", &url], None).await;
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("orders-io.choreo.orders.OrderConfirmed"))
        .expect("a line for OrderConfirmed");
    assert!(
        line.contains("INCOMPATIBLE") && line.contains("order_id"),
        "{line}"
    );
    let (code, _, _) = schemas(
        &["register", "--catalog", catalog, "--registry", &url],
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(versions(&memory), 1, "nothing registered");
}

#[tokio::test]
async fn register_needs_the_registrys_token_and_says_so() {
    let (url, memory) = registry(Some(TOKEN)).await;
    let catalog = reference_catalog();
    let catalog = catalog.to_str().expect("path");
    let args = [
        "register",
        "--catalog",
        catalog,
        "--registry",
        &url,
        "--token-env",
        "TEST_SCHEMAS_TOKEN",
    ];
    let (code, out, err) = schemas(&args, Some("not-the-token")).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("refused registering") && err.contains("401"),
        "{err}"
    );
    let (code, _, err) = schemas(&args, None).await;
    assert_eq!(code, 2);
    assert!(err.contains("TEST_SCHEMAS_TOKEN is not set"), "{err}");
    assert_eq!(versions(&memory), 0);
    let (code, out, err) = schemas(&args, Some(TOKEN)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(versions(&memory), 17);
}

#[tokio::test]
async fn a_bad_catalog_or_an_unreachable_registry_exits_two_with_the_reason() {
    let dir = catalog_copy();
    std::fs::write(
        dir.join("catalog.toml"),
        "compatibility = \"BACKWARD\"\n\n[events.\"io.choreo.orders.OrderPlaced\"]\ntopic = 7\n",
    )
    .expect("toml");
    let (code, _, err) = schemas(&["check", "--catalog", dir.to_str().expect("path")], None).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("catalog.toml:4:") && err.contains("expected a string"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();

    let catalog = reference_catalog();
    let (code, _, err) = schemas(
        &[
            "check",
            "--catalog",
            catalog.to_str().expect("path"),
            "--registry",
            "http://127.0.0.1:9",
        ],
        None,
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("did not answer"), "{err}");
}
