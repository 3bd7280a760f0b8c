//! `choreo run` refuses to serve an operator API nobody guards: without `[[http.tokens]]` and
//! without `http.trusted_network = true` it stops at start-up, before it contacts Kafka, naming
//! the setting. Its logs, written to a file, carry no terminal colour codes.

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

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let log = std::env::temp_dir().join(format!("choreo-log-{}.txt", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .arg("run")
        .env_remove("CHOREO_CONFIG")
        .env_remove("RUST_LOG")
        .env("CHOREO__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
        .env("CHOREO__HTTP__TRUSTED_NETWORK", "true")
        .env("CHOREO__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("choreo runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("operator API without tokens") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_file(&log).ok();
    assert!(text.contains("operator API without tokens"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log file: {text:?}"
    );
}
