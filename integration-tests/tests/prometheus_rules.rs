//! The alerting and recording rules of `deploy/prometheus/` pass `promtool check rules` and their
//! unit tests (`promtool test rules`: the burn-rate alerts fire on a fast and a slow burn and stay
//! quiet on a short spike, and every other alert fires on its cause and not before), and the
//! rules and the Grafana dashboard name only metrics choreo exports. promtool comes from
//! Debian's prometheus package, installed once under the cache directory.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use choreo_bus::telemetry as bus;
use choreo_coordinator::telemetry as coordinator;

fn repo(path: &str) -> String {
    format!("{}/../{path}", choreo_integration_tests::manifest_dir())
}

fn promtool() -> String {
    let out = Command::new("bash")
        .arg(repo("deploy/prometheus/install-promtool.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("runs install-promtool.sh");
    assert!(
        out.status.success(),
        "install-promtool.sh failed (log above)"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn run(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_rules_load_and_their_unit_tests_pass() {
    let checked = run(&["check", "rules", "choreo.rules.yml"]);
    assert!(checked.contains("SUCCESS: 14 rules found"), "{checked}");
    let tested = run(&["test", "rules", "choreo.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every metric name the code defines.
fn exported() -> BTreeSet<&'static str> {
    [
        coordinator::SAGAS_STARTED,
        coordinator::SAGAS_COMPLETED,
        coordinator::SAGAS_COMPENSATED,
        coordinator::SAGAS_NEEDS_OPERATOR,
        coordinator::LATE_COMPENSATIONS,
        coordinator::MISMATCHED_STATES,
        coordinator::SAGAS_IN_FLIGHT,
        coordinator::DEADLINE_LATENESS_SECONDS,
        coordinator::TRANSACTION_COMMIT_SECONDS,
        coordinator::TRANSACTION_ABORTS,
        coordinator::RESTORE_SECONDS,
        coordinator::RESTORED_SAGAS,
        coordinator::BATCH_RECORDS,
        coordinator::INPUTS,
        coordinator::DEAD_LETTERED,
        choreo_coordinator::ingest::EVENTS,
        choreo_coordinator::http::OPERATOR_COMMANDS,
        bus::PUBLISHED,
        bus::PUBLISH_FAILED,
        bus::CONSUMED,
        bus::HANDLER_SECONDS,
        bus::RETRIES,
        bus::DEAD_LETTERED,
        bus::DUPLICATES,
        bus::CONSUMER_LAG,
        bus::REGISTRY_WAITS,
    ]
    .into_iter()
    .collect()
}

/// The `choreo_…` metric names a file mentions (histogram series reduced to their metric).
fn mentioned(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("choreo_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b':');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(base.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_choreo_exports() {
    let exported = exported();
    for file in [
        "deploy/prometheus/choreo.rules.yml",
        "deploy/prometheus/choreo.rules.test.yml",
        "deploy/grafana/choreo.json",
    ] {
        let text = std::fs::read_to_string(repo(file)).expect("file");
        let names = mentioned(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !exported.contains(n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics choreo does not export: {unknown:?}"
        );
    }
    // The dashboard's SLO panels read recording rules the rules file records.
    let rules = std::fs::read_to_string(repo("deploy/prometheus/choreo.rules.yml")).expect("rules");
    let dashboard = std::fs::read_to_string(repo("deploy/grafana/choreo.json")).expect("dashboard");
    let recorded: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("choreo:"))
        .collect();
    assert!(recorded.len() >= 3, "the dashboard has SLO panels");
    for r in recorded {
        assert!(
            rules.contains(&format!("record: {r}\n")),
            "{r} is not recorded by the rules"
        );
    }
    // The check can fail.
    assert_eq!(
        mentioned(
            "rate(choreo_sagas_finished_total[5m]) + choreo:x + choreo_restore_seconds_bucket"
        ),
        BTreeSet::from([
            "choreo_sagas_finished_total".to_owned(),
            "choreo_restore_seconds".to_owned()
        ])
    );
}
