//! exploration

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo_integration_tests::broker::{
    SCRAM_RESTRICTED_USER, SCRAM_USER, TestBroker, shared_secure_broker,
};
use choreo_integration_tests::process::{Replica, ReplicaConfig};
use choreo_integration_tests::saga_scenarios::fast_order_saga_toml_with_acks;
use choreo_schemas::MemoryRegistry;

struct Scratch {
    dir: PathBuf,
    registry_url: String,
    _registry: Arc<MemoryRegistry>,
}

async fn scratch() -> Scratch {
    let registry = Arc::new(MemoryRegistry::new());
    let (addr, _server) = choreo_schemas::server::serve(
        Arc::clone(&registry) as Arc<dyn choreo_schemas::RegistryStore>,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("registry");
    let dir = std::env::temp_dir().join(format!("choreo-sec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    Scratch {
        dir,
        registry_url: format!("http://{addr}"),
        _registry: registry,
    }
}

fn config(s: &Scratch, broker: &TestBroker, settings: &[(String, String)]) -> ReplicaConfig {
    let definition = s.dir.join("order.toml");
    std::fs::write(&definition, fast_order_saga_toml_with_acks(30, 300)).expect("definition");
    let mut cfg = ReplicaConfig {
        bootstrap: broker.bootstrap.clone(),
        registry: s.registry_url.clone(),
        guarantee: "exactly_once",
        definition,
        group: format!("secure-{}", uuid::Uuid::new_v4().simple()),
        partitions: 4,
        mock: false,
        log_dir: s.dir.clone(),
        env: vec![("CHOREO__LOG__LEVEL".into(), "debug".into())],
    };
    cfg.use_client_settings(settings);
    cfg.env.push(("CHOREO__KAFKA__CLIENT__DEBUG".into(), "all".into()));
    cfg
}

async fn outcome(cfg: &ReplicaConfig, name: &str) {
    let mut r = Replica::start(cfg, name).await.expect("start");
    let res = r.wait_exit(Duration::from_secs(120)).await;
    eprintln!("=== {name}: {res:?}");
    let log = r.log_text();
    eprintln!("lines: {}", log.lines().count());
    for l in log.lines().filter(|l| !l.contains("DEBUG")) {
        eprintln!("{l}");
    }
    for (_, pw) in [SCRAM_USER, SCRAM_RESTRICTED_USER] {
        eprintln!("contains {pw}: {}", log.contains(pw));
    }
    eprintln!("contains wrong: {}", log.contains("wrong-password-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explore() {
    let broker = shared_secure_broker().await.expect("broker");
    let s = scratch().await;
    let ok = broker.scram_settings(SCRAM_USER).expect("settings");
    let mut cfg = config(&s, broker, &ok);
    let mut r = Replica::start(&cfg, "ok").await.expect("start");
    r.wait_ready(Duration::from_secs(120)).await.expect("ready");
    r.stop().await.expect("stop");
    let log = std::fs::read_to_string(s.dir.join("ok.log")).expect("log");
    eprintln!("ok lines {} contains pw {}", log.lines().count(), log.contains(SCRAM_USER.1));

    let wrong = broker
        .scram_settings((SCRAM_USER.0, "wrong-password-0"))
        .expect("settings");
    cfg = config(&s, broker, &wrong);
    outcome(&cfg, "wrong").await;

    let restricted = broker.scram_settings(SCRAM_RESTRICTED_USER).expect("s");
    cfg = config(&s, broker, &restricted);
    broker
        .deny(SCRAM_RESTRICTED_USER.0, &["--group", &cfg.group])
        .await
        .expect("acl");
    outcome(&cfg, "group").await;

    cfg = config(&s, broker, &restricted);
    let topic = format!("{}.saga-state", cfg.group);
    broker
        .deny(SCRAM_RESTRICTED_USER.0, &["--topic", &topic])
        .await
        .expect("acl");
    outcome(&cfg, "topic").await;

    let mut bad_ca = ok.clone();
    for (k, v) in &mut bad_ca {
        if k == "ssl.ca.location" {
            *v = broker.tls_files().expect("f").other_ca.display().to_string();
        }
    }
    cfg = config(&s, broker, &bad_ca);
    outcome(&cfg, "ca").await;
    eprintln!("dir {}", s.dir.display());
}
