//! The coordinator's configuration: defaults → file → `CHOREO__…` environment, validation, and
//! errors that name the file, the line (or the variable) and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use choreo_coordinator::Guarantee;
use choreo_coordinator::config::{Config, ConfigError, LogFormat};

const EXAMPLE: &str = include_str!("../../../deploy/choreo.example.toml");

fn no_env() -> std::iter::Empty<(String, String)> {
    std::iter::empty()
}

fn env(vars: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect::<Vec<_>>()
        .into_iter()
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str("choreo.toml", text, no_env())
}

fn err(text: &str) -> String {
    load(text)
        .expect_err("the configuration must be rejected")
        .to_string()
}

fn defaults_as(instance_id: &str) -> Config {
    let mut c = Config::default();
    c.coordinator.instance_id = instance_id.into();
    c
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.kafka.bootstrap_servers, "localhost:9092");
    assert_eq!(c.kafka.group_id, "choreo-coordinator");
    assert!(c.kafka.client.is_empty());
    assert_eq!(c.registry.url, None);
    assert_eq!(c.registry.listen, None);
    assert!(c.coordinator.definitions.is_empty());
    assert_eq!(c.coordinator.catalog, None);
    assert_eq!(c.coordinator.guarantee, Guarantee::ExactlyOnce);
    assert_eq!(c.coordinator.partitions, 6);
    // Unset: the cluster's default.replication.factor, and topics named after the group.
    assert_eq!(c.coordinator.replication_factor, None);
    assert_eq!(c.coordinator.changelog_topic, None);
    assert_eq!(c.coordinator.commands_topic, None);
    assert_eq!(c.coordinator.batch_max_records, 500);
    assert_eq!(c.coordinator.batch_linger, Duration::from_millis(2));
    assert_eq!(c.coordinator.completed_retention, Duration::from_secs(3600));
    assert_eq!(c.coordinator.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        c.http.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    c.validate().expect("the defaults are valid");
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(load("").expect("valid"), defaults_as("choreo-0"));
}

#[test]
fn the_example_file_is_the_defaults() {
    let c = Config::from_toml_str(
        "deploy/choreo.example.toml",
        EXAMPLE,
        env(&[("HOSTNAME", "pod-7")]),
    )
    .expect("the example file loads");
    assert_eq!(c, defaults_as("pod-7"));
}

#[test]
fn the_example_file_documents_every_field() {
    // Every field the coordinator writes out appears in the example, set or commented out.
    let mut full = Config::default();
    full.registry.url = Some("http://registry:8081".into());
    full.registry.listen = Some("127.0.0.1:8081".parse().expect("addr"));
    full.coordinator.catalog = Some(PathBuf::from("schemas"));
    let written = full.to_toml().expect("serializes");
    let table: toml::Table = written.parse().expect("valid TOML");
    for (section, fields) in &table {
        assert!(
            EXAMPLE.contains(&format!("[{section}]")),
            "section [{section}] is not in the example"
        );
        for (field, _) in fields.as_table().expect("sections are tables") {
            let set = format!("\n{field} = ");
            let commented = format!("\n# {field} = ");
            assert!(
                EXAMPLE.contains(&set)
                    || EXAMPLE.contains(&commented)
                    || EXAMPLE.contains(&format!("[{section}.{field}]")),
                "{section}.{field} is not in the example"
            );
        }
    }
}

#[test]
fn the_effective_configuration_round_trips() {
    let mut c = defaults_as("x");
    c.kafka
        .client
        .insert("security.protocol".into(), "SASL_SSL".into());
    c.registry.url = Some("http://registry:8081".into());
    c.coordinator.definitions = vec!["sagas".into(), "more/order.toml".into()];
    c.coordinator.guarantee = Guarantee::EffectivelyOnce;
    c.coordinator.batch_linger = Duration::from_millis(250);
    let text = c.to_toml().expect("serializes");
    assert_eq!(load(&text).expect("reloads"), c);
}

#[test]
fn a_file_sets_any_field() {
    let c = load(
        r#"
[kafka]
bootstrap_servers = "k1:9092,k2:9092"
[kafka.client]
"security.protocol" = "SASL_SSL"
"queue.buffering.max.ms" = 5
"enable.ssl.certificate.verification" = false

[registry]
url = "https://registry.example:8081"
listen = "0.0.0.0:8081"

[coordinator]
definitions = ["sagas", "extra/refund.toml"]
catalog = "schemas"
guarantee = "effectively_once"
instance_id = "coord-a"
partitions = 12
replication_factor = 3
batch_max_records = 100
batch_linger = "250ms"
completed_retention = "2d"
drain_timeout = "1m"

[http]
listen = "0.0.0.0:9090"

[log]
level = "debug,rdkafka=warn"
format = "json"
"#,
    )
    .expect("valid");
    assert_eq!(c.kafka.bootstrap_servers, "k1:9092,k2:9092");
    assert_eq!(
        c.kafka.group_id, "choreo-coordinator",
        "unset fields keep their default"
    );
    assert_eq!(c.kafka.client["security.protocol"], "SASL_SSL");
    assert_eq!(c.kafka.client["queue.buffering.max.ms"], "5");
    assert_eq!(
        c.kafka.client["enable.ssl.certificate.verification"],
        "false"
    );
    assert_eq!(
        c.registry.url.as_deref(),
        Some("https://registry.example:8081")
    );
    assert_eq!(
        c.registry.listen,
        Some("0.0.0.0:8081".parse().expect("addr"))
    );
    assert_eq!(
        c.coordinator.definitions,
        vec![PathBuf::from("sagas"), PathBuf::from("extra/refund.toml")]
    );
    assert_eq!(c.coordinator.catalog, Some(PathBuf::from("schemas")));
    assert_eq!(c.coordinator.guarantee, Guarantee::EffectivelyOnce);
    assert_eq!(c.coordinator.instance_id, "coord-a");
    assert_eq!(c.coordinator.partitions, 12);
    assert_eq!(c.coordinator.replication_factor, Some(3));
    assert_eq!(c.coordinator.batch_max_records, 100);
    assert_eq!(c.coordinator.batch_linger, Duration::from_millis(250));
    assert_eq!(
        c.coordinator.completed_retention,
        Duration::from_secs(2 * 86_400)
    );
    assert_eq!(c.coordinator.drain_timeout, Duration::from_secs(60));
    assert_eq!(
        c.http.listen,
        "0.0.0.0:9090".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.log.level, "debug,rdkafka=warn");
    assert_eq!(c.log.format, LogFormat::Json);

    let bus = c.kafka.bus_config("/choreo/coordinator");
    assert_eq!(bus.bootstrap_servers, "k1:9092,k2:9092");
    assert_eq!(bus.source, "/choreo/coordinator");
    assert_eq!(bus.client, c.kafka.client);
}

#[test]
fn instance_id_defaults_to_hostname() {
    let c = Config::from_toml_str("choreo.toml", "", env(&[("HOSTNAME", "coordinator-2")]))
        .expect("valid");
    assert_eq!(c.coordinator.instance_id, "coordinator-2");
    let c = Config::from_toml_str(
        "choreo.toml",
        "[coordinator]\ninstance_id = \"fixed\"\n",
        env(&[("HOSTNAME", "coordinator-2")]),
    )
    .expect("valid");
    assert_eq!(
        c.coordinator.instance_id, "fixed",
        "the file wins over $HOSTNAME"
    );
}

#[test]
fn unknown_fields_are_rejected_with_the_line() {
    let text = "[kafka]\nbootstrap_servers = \"k:9092\"\n\n[coordinator]\npartitions = 3\n\ngurantee = \"exactly_once\"\n";
    let e = err(text);
    assert!(e.starts_with("choreo.toml:7: "), "{e}");
    assert!(e.contains("unknown field `gurantee`"), "{e}");
    assert!(
        e.contains("guarantee"),
        "the expected names are listed: {e}"
    );

    let e = err("[kafak]\nbootstrap_servers = \"x\"\n");
    assert!(e.starts_with("choreo.toml:1: "), "{e}");
    assert!(e.contains("unknown field `kafak`"), "{e}");
}

#[test]
fn bad_durations_name_the_field_and_the_value() {
    let text = "[coordinator]\npartitions = 3\nbatch_linger = \"10 parsecs\"\n";
    let e = err(text);
    assert!(
        e.starts_with("choreo.toml:3: coordinator.batch_linger: "),
        "{e}"
    );
    assert!(e.contains("\"10 parsecs\" is not a duration"), "{e}");

    let e = err("[coordinator]\ndrain_timeout = \"0s\"\n");
    assert!(
        e.starts_with("choreo.toml:2: coordinator.drain_timeout: "),
        "{e}"
    );
    assert!(e.contains("greater than zero"), "{e}");

    let e = err("[coordinator]\ndrain_timeout = 30\n");
    assert!(
        e.starts_with("choreo.toml:2: coordinator.drain_timeout: "),
        "{e}"
    );
    assert!(e.contains("a duration written as a string"), "{e}");
}

#[test]
fn bad_values_name_the_field() {
    let e = err("\n[coordinator]\nguarantee = \"exactly_onec\"\n");
    assert!(
        e.starts_with("choreo.toml:3: coordinator.guarantee: "),
        "{e}"
    );
    assert!(
        e.contains("exactly_once") && e.contains("effectively_once"),
        "{e}"
    );

    let e = err("[coordinator]\npartitions = \"six\"\n");
    assert!(
        e.starts_with("choreo.toml:2: coordinator.partitions: "),
        "{e}"
    );

    let e = err("[http]\nlisten = \"localhost\"\n");
    assert!(e.starts_with("choreo.toml:2: http.listen: "), "{e}");

    let e = err("[log]\nformat = \"yaml\"\n");
    assert!(e.starts_with("choreo.toml:2: log.format: "), "{e}");
}

#[test]
fn syntax_errors_have_a_line() {
    let e = err("[kafka]\nbootstrap_servers = \"unterminated\n");
    assert!(e.starts_with("choreo.toml:2: "), "{e}");
}

#[test]
fn validation_names_where_the_value_came_from() {
    let e = err("[coordinator]\n\npartitions = 0\n");
    assert_eq!(
        e,
        "choreo.toml:3: coordinator.partitions: must be at least 1 (got 0)"
    );

    let e = err("[coordinator]\nchangelog_topic = \"saga state\"\n");
    assert!(
        e.starts_with("choreo.toml:2: coordinator.changelog_topic: "),
        "{e}"
    );

    let e = err(
        "[coordinator]\nchangelog_topic = \"choreo.saga-state\"\ncommands_topic = \"choreo.saga-state\"\n",
    );
    assert!(
        e.starts_with("choreo.toml:3: coordinator.commands_topic: must differ"),
        "{e}"
    );

    let e = err("[coordinator]\nbatch_max_records = 0\n");
    assert!(
        e.starts_with("choreo.toml:2: coordinator.batch_max_records: "),
        "{e}"
    );

    let e = err("[kafka.client]\n\"transactional.id\" = \"mine\"\n");
    assert!(
        e.starts_with("choreo.toml:2: kafka.client.transactional.id: is set by the coordinator"),
        "{e}"
    );

    let e = err("[registry]\nurl = \"registry:8081\"\n");
    assert!(e.starts_with("choreo.toml:2: registry.url: "), "{e}");

    let e = err("[log]\nlevel = \"info,=,[\"\n");
    assert!(e.starts_with("choreo.toml:2: log.level: "), "{e}");

    let e = err("[kafka]\nbootstrap_servers = \" \"\n");
    assert_eq!(
        e,
        "choreo.toml:2: kafka.bootstrap_servers: must not be empty"
    );

    let e = Config::from_toml_str(
        "choreo.toml",
        "",
        env(&[("CHOREO__COORDINATOR__PARTITIONS", "-1")]),
    )
    .expect_err("invalid")
    .to_string();
    assert_eq!(
        e,
        "environment variable CHOREO__COORDINATOR__PARTITIONS: coordinator.partitions: must be at least 1 (got -1)"
    );
}

#[test]
fn environment_overrides_the_file() {
    let text = "[kafka]\nbootstrap_servers = \"file:9092\"\n[coordinator]\npartitions = 3\n";
    let c = Config::from_toml_str(
        "choreo.toml",
        text,
        env(&[
            ("CHOREO__KAFKA__BOOTSTRAP_SERVERS", "env-1:9092,env-2:9092"),
            ("CHOREO__COORDINATOR__GUARANTEE", "effectively_once"),
            ("CHOREO__COORDINATOR__PARTITIONS", "24"),
            ("CHOREO__COORDINATOR__INSTANCE_ID", "42"),
            ("CHOREO__COORDINATOR__BATCH_LINGER", "5ms"),
            ("CHOREO__COORDINATOR__DEFINITIONS", "/etc/sagas, /opt/more"),
            ("CHOREO__KAFKA__CLIENT__SASL_PASSWORD", "s3cret"),
            ("CHOREO__KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_SSL"),
            ("CHOREO__REGISTRY__LISTEN", "0.0.0.0:8081"),
            ("CHOREO__HTTP__LISTEN", "0.0.0.0:80"),
            ("CHOREO__LOG__FORMAT", "json"),
            ("CHOREO_API", "http://ignored"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.kafka.bootstrap_servers, "env-1:9092,env-2:9092");
    assert_eq!(c.coordinator.guarantee, Guarantee::EffectivelyOnce);
    assert_eq!(c.coordinator.partitions, 24);
    assert_eq!(
        c.coordinator.instance_id, "42",
        "a number is kept as text where text is expected"
    );
    assert_eq!(c.coordinator.batch_linger, Duration::from_millis(5));
    assert_eq!(
        c.coordinator.definitions,
        vec![PathBuf::from("/etc/sagas"), PathBuf::from("/opt/more")]
    );
    assert_eq!(c.kafka.client["sasl.password"], "s3cret");
    assert_eq!(c.kafka.client["security.protocol"], "SASL_SSL");
    assert_eq!(
        c.registry.listen,
        Some("0.0.0.0:8081".parse().expect("addr"))
    );
    assert_eq!(
        c.http.listen,
        "0.0.0.0:80".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.log.format, LogFormat::Json);

    let c = Config::from_toml_str(
        "choreo.toml",
        "",
        env(&[("CHOREO__COORDINATOR__DEFINITIONS", r#"["a.toml", "b"]"#)]),
    )
    .expect("valid");
    assert_eq!(
        c.coordinator.definitions,
        vec![PathBuf::from("a.toml"), PathBuf::from("b")]
    );
}

#[test]
fn environment_errors_name_the_variable() {
    let e = |k: &str, v: &str| {
        Config::from_toml_str("choreo.toml", "", env(&[(k, v)]))
            .expect_err("rejected")
            .to_string()
    };
    let got = e("CHOREO__COORDINATOR__GURANTEE", "exactly_once");
    assert!(
        got.starts_with("environment variable CHOREO__COORDINATOR__GURANTEE: "),
        "{got}"
    );
    assert!(got.contains("unknown field `gurantee`"), "{got}");

    let got = e("CHOREO__COORDINATOR__BATCH_LINGER", "10 parsecs");
    assert!(
        got.starts_with("environment variable CHOREO__COORDINATOR__BATCH_LINGER: coordinator.batch_linger: \"10 parsecs\" is not a duration"),
        "{got}"
    );

    let got = e("CHOREO__COORDINATOR__PARTITIONS", "many");
    assert!(
        got.starts_with(
            "environment variable CHOREO__COORDINATOR__PARTITIONS: coordinator.partitions: "
        ),
        "{got}"
    );

    let got = e("CHOREO__COORDINATOR__GUARANTEE", "twice");
    assert!(got.contains("exactly_once"), "{got}");

    let got = e("CHOREO__NOSECTION__KEY", "1");
    assert!(
        got.starts_with("environment variable CHOREO__NOSECTION__KEY: "),
        "{got}"
    );
    assert!(got.contains("unknown field `nosection`"), "{got}");

    let got = e("CHOREO__KAFKA", "x");
    assert!(
        got.starts_with("environment variable CHOREO__KAFKA: expected CHOREO__<SECTION>__<KEY>"),
        "{got}"
    );
}

#[test]
fn load_reads_a_file_and_names_it() {
    let dir = std::env::temp_dir().join(format!("choreo-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("choreo.toml");
    std::fs::write(&path, "[coordinator]\npartitions = 2\n").expect("write");
    let c = Config::load(Some(&path)).expect("loads");
    assert_eq!(c.coordinator.partitions, 2);

    std::fs::write(&path, "[coordinator]\n\nbatch_linger = \"soon\"\n").expect("write");
    let e = Config::load(Some(&path)).expect_err("rejected").to_string();
    assert!(
        e.starts_with(&format!("{}:3: coordinator.batch_linger: ", path.display())),
        "{e}"
    );

    let missing = dir.join("missing.toml");
    let e = Config::load(Some(&missing))
        .expect_err("missing")
        .to_string();
    assert!(e.starts_with(&missing.display().to_string()), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_ingest_without_tokens_is_refused_at_load_unless_anonymous_is_allowed() {
    let text = "[ingest]\nlisten = \"127.0.0.1:8090\"\n";
    let e = err(text);
    assert!(
        e.starts_with("choreo.toml:2: ingest.listen: the ingest has no [[ingest.tokens]]"),
        "{e}"
    );
    let c = load(&format!("{text}allow_anonymous = true\n")).expect("valid");
    assert_eq!(
        c.ingest.listen,
        Some("127.0.0.1:8090".parse().expect("addr"))
    );
    assert!(matches!(
        c.ingest.auth(&|_| None),
        Ok(choreo_coordinator::ingest::auth::Auth::Off)
    ));
}

#[test]
fn an_ingest_token_is_read_from_its_variable_and_checked_at_load() {
    let text = r#"
[ingest]
listen = "127.0.0.1:8090"

[[ingest.tokens]]
name = "checkout"
token_env = "CHECKOUT_TOKEN"
sources = ["/shop/checkout"]
types = ["io.choreo.orders.*"]
"#;
    let e = Config::from_toml_str("choreo.toml", text, no_env())
        .expect_err("the variable is not set")
        .to_string();
    assert_eq!(
        e,
        "choreo.toml:5: ingest.tokens[0].token_env: environment variable CHECKOUT_TOKEN is not set"
    );
    let short = Config::from_toml_str("choreo.toml", text, env(&[("CHECKOUT_TOKEN", "abc")]))
        .expect_err("too short")
        .to_string();
    assert!(short.contains("use at least 16"), "{short}");
    let c = Config::from_toml_str(
        "choreo.toml",
        text,
        env(&[("CHECKOUT_TOKEN", "0123456789abcdef-secret")]),
    )
    .expect("valid");
    let auth = c
        .ingest
        .auth(&|v| (v == "CHECKOUT_TOKEN").then(|| "0123456789abcdef-secret".to_owned()))
        .expect("auth");
    assert!(matches!(auth, choreo_coordinator::ingest::auth::Auth::Tokens(g) if g.len() == 1));
    let no_sources = text.replace("sources = [\"/shop/checkout\"]\n", "");
    let e = Config::from_toml_str(
        "choreo.toml",
        &no_sources,
        env(&[("CHECKOUT_TOKEN", "0123456789abcdef-secret")]),
    )
    .expect_err("no sources")
    .to_string();
    assert!(
        e.contains("ingest.tokens[0].sources: must list at least one"),
        "{e}"
    );
}

#[test]
fn operator_api_tokens_are_kept_as_hashes_and_run_needs_them_or_a_trusted_network() {
    use choreo_coordinator::api_auth::ApiAuth;
    let none = Config::from_toml_str("choreo.toml", "", no_env()).expect("loads");
    let (field, reason) = none.http.auth().expect_err("no tokens, not trusted");
    assert_eq!(field, "http.tokens");
    assert!(reason.contains("trusted_network"), "{reason}");
    let trusted =
        Config::from_toml_str("choreo.toml", "[http]\ntrusted_network = true\n", no_env())
            .expect("loads");
    assert!(matches!(trusted.http.auth(), Ok(ApiAuth::Open)));

    let text = r#"[http]
listen = "0.0.0.0:8080"

[[http.tokens]]
name = "alice"
role = "operator"
sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"

[[http.tokens]]
name = "victor"
role = "viewer"
sha256 = "c0ffee"
"#;
    let e = Config::from_toml_str("choreo.toml", text, no_env())
        .expect_err("a short hash")
        .to_string();
    assert!(
        e.starts_with("choreo.toml:12: http.tokens[1].sha256: must be the token's SHA-256"),
        "{e}"
    );
    let fixed = text.replace(
        "\"c0ffee\"",
        "\"fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9\"",
    );
    let c = Config::from_toml_str("choreo.toml", &fixed, no_env()).expect("loads");
    assert!(matches!(c.http.auth(), Ok(ApiAuth::Tokens(t)) if t.len() == 2));
    let e = Config::from_toml_str(
        "choreo.toml",
        &fixed.replace("role = \"viewer\"", "role = \"admin\""),
        no_env(),
    )
    .expect_err("an unknown role")
    .to_string();
    assert!(e.contains("admin") && e.contains("viewer"), "{e}");
}
