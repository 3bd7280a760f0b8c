//! The deployment files of `deploy/` as the tests read them: the Dockerfile's runtime stage,
//! the Compose project as the Compose loader normalises it, and the Kubernetes manifests — and
//! what each hands a `choreo` process (its arguments and its whole environment), so that a test
//! can start exactly that process against its own Apache Kafka.
//!
//! The validators come from the registries, installed once under the cache directory by
//! `deploy/check/` (compose-go through the Go module proxy; hadolint and kubernetes-validate
//! from PyPI) and promtool from Debian (`deploy/prometheus/install-promtool.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(crate::manifest_dir()).join("..").join(path)
}

/// Runs an install script of the repository (once-installs a tool) and returns what it printed
/// (the tool's path); fails with the script's own words when it cannot.
pub fn install(script: &str) -> anyhow::Result<String> {
    let out = Command::new("bash")
        .arg(repo(script))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed (its log is above)");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A command's status and its standard output and error together.
pub fn run_tool(cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// The Compose project of `file` as `docker compose config` sees it (compose-go: schema,
/// interpolation, normalisation, consistency), loaded with an empty environment so that the
/// file's own defaults are what is read. `Err` carries the loader's message.
pub fn compose_project(file: &Path) -> anyhow::Result<Value> {
    let tool = install("deploy/check/install-compose-config.sh")?;
    let (ok, text) = run_tool(
        Command::new(tool)
            .arg("-f")
            .arg(file)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
    )?;
    if !ok {
        bail!("{}", text.trim());
    }
    serde_json::from_str(&text).context("compose-config printed no JSON")
}

/// The documents of YAML files as JSON (PyYAML of the validators' environment).
pub fn yaml_documents(files: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let bin = install("deploy/check/install-python-tools.sh")?;
    let (ok, text) = run_tool(
        Command::new(format!("{bin}/python"))
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
                 docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
                 print(json.dumps(docs))",
            )
            .args(files),
    )?;
    if !ok {
        bail!("reading YAML: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// The Kubernetes manifests of `deploy/kubernetes/`, every document of every file.
pub fn kubernetes_manifests() -> anyhow::Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    yaml_documents(&files)
}

/// The object of `kind` named `name` among `docs`.
pub fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in the manifests"))
}

/// What the runtime stage of `deploy/Dockerfile` gives every container: its `ENV`, `CMD`,
/// `ENTRYPOINT`, `USER` and the `HEALTHCHECK` command.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// The base image of the runtime stage.
    pub from: String,
    /// `ENV` settings.
    pub env: BTreeMap<String, String>,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// `USER`.
    pub user: String,
    /// The `HEALTHCHECK … CMD` (exec form).
    pub healthcheck: Vec<String>,
}

/// Reads the last stage of `deploy/Dockerfile`.
pub fn image() -> anyhow::Result<Image> {
    let text = std::fs::read_to_string(repo("deploy/Dockerfile"))?;
    // Continuation lines joined, comments dropped.
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') && current.is_empty() {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(t);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .context("no FROM in the Dockerfile")?;
    let exec_form = |s: &str| -> anyhow::Result<Vec<String>> {
        serde_json::from_str(s.trim()).with_context(|| format!("not an exec-form array: {s}"))
    };
    let mut image = Image::default();
    for l in &lines[last_from..] {
        let (word, rest) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        match word {
            "FROM" => {
                image.from = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            "ENV" => {
                let (k, v) = rest.split_once('=').context("ENV without key=value")?;
                image.env.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            "ENTRYPOINT" => image.entrypoint = exec_form(rest)?,
            "CMD" => image.cmd = exec_form(rest)?,
            "USER" => rest.trim().clone_into(&mut image.user),
            "HEALTHCHECK" => {
                let (_, cmd) = rest
                    .split_once(" CMD ")
                    .context("HEALTHCHECK without CMD")?;
                image.healthcheck = exec_form(cmd)?;
            }
            _ => {}
        }
    }
    Ok(image)
}

/// One `choreo` process as a deployment file describes it: the arguments after the binary and
/// its whole environment.
#[derive(Debug, Clone)]
pub struct Process {
    /// Where it came from, for messages (`compose service coordinator-1`).
    pub name: String,
    /// Arguments (`run`, `registry`, `demo …`).
    pub args: Vec<String>,
    /// The environment: the image's `ENV` overlaid with the file's.
    pub env: BTreeMap<String, String>,
    /// The keys a test replaced, with the value the file gave.
    pub replaced: BTreeMap<String, String>,
}

impl Process {
    /// Replaces the value of `key`, which the file must set (a test replaces only what it
    /// names); returns the file's value.
    pub fn replace(&mut self, key: &str, value: &str) -> String {
        let old = self
            .env
            .insert(key.to_owned(), value.to_owned())
            .unwrap_or_else(|| panic!("{}: sets no {key}", self.name));
        self.replaced.insert(key.to_owned(), old.clone());
        old
    }

    /// The file's value of `key`.
    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{}: sets no {key}", self.name))
    }

    /// Starts it: the `choreo` binary of this workspace with these arguments and exactly this
    /// environment (nothing inherited but PATH), its output appended to `log`.
    pub fn spawn(&self, log: &Path) -> anyhow::Result<tokio::process::Child> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        tokio::process::Command::new(crate::process::choreo_binary()?)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.name))
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The process of compose service `service`: its `command` (else the image's `CMD`), the image's
/// `ENV` overlaid with its `environment`.
pub fn compose_process(project: &Value, service: &str, image: &Image) -> anyhow::Result<Process> {
    let s = &project["services"][service];
    if s.is_null() {
        bail!("compose.yaml has no service {service}");
    }
    let args = match s["command"].as_array() {
        Some(a) => a.iter().map(text_of).collect(),
        None => image.cmd.clone(),
    };
    let mut env = image.env.clone();
    for (k, v) in s["environment"].as_object().into_iter().flatten() {
        env.insert(k.clone(), text_of(v));
    }
    Ok(Process {
        name: format!("compose service {service}"),
        args,
        env,
        replaced: BTreeMap::new(),
    })
}

/// The data of a ConfigMap or a Secret (`stringData`, else base64 `data` is refused: the
/// shipped Secrets are written as text).
fn data_of<'a>(docs: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    let o = object(docs, kind, name)?;
    let field = if kind == "Secret" {
        "stringData"
    } else {
        "data"
    };
    Ok(&o[field])
}

/// The process of container `container` of pod `pod_name` of workload `kind`/`name`: its `args`
/// (else the image's `CMD`), the image's `ENV` overlaid with `envFrom` (in order) and `env`
/// (values, `fieldRef` metadata.name, ConfigMap and Secret keys), as the kubelet resolves them.
pub fn kubernetes_process(
    docs: &[Value],
    kind: &str,
    name: &str,
    container: &str,
    pod_name: &str,
    image: &Image,
) -> anyhow::Result<Process> {
    let workload = object(docs, kind, name)?;
    let c = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .with_context(|| format!("{kind} {name} has no container {container}"))?;
    let args = match c["args"].as_array() {
        Some(a) => a.iter().map(text_of).collect(),
        None => image.cmd.clone(),
    };
    let mut env = image.env.clone();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let (k, r) = if from["configMapRef"].is_object() {
            ("ConfigMap", &from["configMapRef"])
        } else {
            ("Secret", &from["secretRef"])
        };
        let data = data_of(docs, k, r["name"].as_str().unwrap_or_default())?;
        for (key, v) in data.as_object().into_iter().flatten() {
            env.insert(key.clone(), text_of(v));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let key = text_of(&e["name"]);
        let from = &e["valueFrom"];
        let value = if from.is_null() {
            text_of(&e["value"])
        } else if from["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_owned()
        } else if let Some(r) = from["configMapKeyRef"].as_object() {
            text_of(&data_of(docs, "ConfigMap", &text_of(&r["name"]))?[text_of(&r["key"])])
        } else if let Some(r) = from["secretKeyRef"].as_object() {
            text_of(&data_of(docs, "Secret", &text_of(&r["name"]))?[text_of(&r["key"])])
        } else {
            bail!("{kind} {name}: env {key} comes from {from}, which this reader does not know");
        };
        env.insert(key, value);
    }
    Ok(Process {
        name: format!("{kind} {name} pod {pod_name}"),
        args,
        env,
        replaced: BTreeMap::new(),
    })
}

/// `host:port` of an address or URL, e.g. `http://registry:8081/x` → `("registry", 8081)`.
pub fn host_port(address: &str) -> anyhow::Result<(String, u16)> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or_default();
    let (host, port) = hostport
        .rsplit_once(':')
        .with_context(|| format!("{address}: no port"))?;
    Ok((host.to_owned(), port.parse()?))
}
