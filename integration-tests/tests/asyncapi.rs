//! The AsyncAPI document in the repository (`schemas/asyncapi.json`, written by `choreo
//! asyncapi`) is current and valid AsyncAPI 3.0 by the AsyncAPI project's own parser, Avro
//! payloads included (`integration-tests/asyncapi/`, installed once from npm).

use std::process::{Command, Stdio};

use choreo_integration_tests::process::{choreo_binary, manifest_dir};

fn validator() -> String {
    let out = Command::new("bash")
        .arg(format!("{}/asyncapi/setup.sh", manifest_dir()))
        .stderr(Stdio::inherit())
        .output()
        .expect("runs asyncapi/setup.sh");
    assert!(out.status.success(), "asyncapi/setup.sh failed (log above)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn document() -> String {
    format!("{}/../schemas/asyncapi.json", manifest_dir())
}

#[test]
fn the_asyncapi_document_in_the_repository_is_current() {
    let out = Command::new(choreo_binary().expect("choreo"))
        .args(["asyncapi", "--check", "--output", &document()])
        .output()
        .expect("choreo asyncapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_asyncapi_document_is_valid_by_the_asyncapi_parser() {
    let out = Command::new(validator())
        .arg(document())
        .output()
        .expect("validator runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(summary["valid"], true);
    assert_eq!(summary["channels"], 4, "{summary}");
    assert_eq!(summary["messages"], 16, "{summary}");
    assert_eq!(summary["operations"], 16, "{summary}");
}

#[test]
fn the_validator_rejects_a_broken_document() {
    // The check can fail: an operation on a channel that does not exist, and an Avro payload
    // whose fields are not a list.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(document()).expect("document"))
            .expect("JSON");
    doc["operations"]["order.send.OrderConfirmed"]["channel"]["$ref"] = "#/channels/nowhere".into();
    doc["components"]["messages"]["io.choreo.orders.OrderPlaced"]["payload"]["schema"]["fields"] =
        "not a list".into();
    let path = std::env::temp_dir().join(format!("asyncapi-broken-{}.json", std::process::id()));
    std::fs::write(&path, doc.to_string()).expect("write");
    let out = Command::new(validator())
        .arg(&path)
        .output()
        .expect("validator runs");
    std::fs::remove_file(&path).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a broken document");
    assert!(stderr.contains("#/channels/nowhere"), "{stderr}");
    assert!(stderr.contains("fields"), "{stderr}");
}
