//! `choreo run` refuses to serve an operator API nobody guards: without `[[http.tokens]]` and
//! without `http.trusted_network = true` it stops at start-up, before it contacts Kafka, naming
//! the setting.

#[test]
fn run_without_api_tokens_or_a_trusted_network_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .arg("run")
        .env_remove("CHOREO_CONFIG")
        .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
        .output()
        .expect("choreo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("http.tokens") && stderr.contains("http.trusted_network = true"),
        "{stderr}"
    );
}
