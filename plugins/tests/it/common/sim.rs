//! Helpers for the reliability tests: the verb binaries against kube-sim, the sim's stored
//! objects in comparable form, the plan table parsed back into rows, and a small worker pool.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube_sim::{Fault, FaultKind, Scenario, Server};
use serde_json::{Value, json};

/// The verb binaries, by verb.
pub(crate) const PREPARE: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-prepare");
/// `kubectl-meshvm-bundle`.
pub(crate) const BUNDLE: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-bundle");
/// `kubectl-meshvm-register`.
pub(crate) const REGISTER: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-register");
/// `kubectl-meshvm-doctor`.
pub(crate) const DOCTOR: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-doctor");

/// The workspace root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Istio's sample CA (a root and a signing CA; ca-key.pem is PKCS#1 RSA).
pub(crate) fn samples() -> PathBuf {
    repo().join("tests/fixtures/istio-samples")
}

/// A scenario file of tests/scenarios.
pub(crate) fn scenario(name: &str) -> Scenario {
    Scenario::from_files(&[repo().join("tests/scenarios").join(name)]).expect("scenario loads")
}

/// The runbook's Istio 1.4 cluster.
pub(crate) fn legacy() -> Scenario {
    scenario("legacy-1.4.yaml")
}

/// The runbook's cluster with the VM's namespace and ServiceAccount (as `prepare` leaves them;
/// the sim's Citadel then makes `istio.expandvm`).
pub(crate) fn legacy_with_vm() -> Scenario {
    legacy().with_objects([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
    ])
}

/// The istiod cluster with the east-west gateway.
pub(crate) fn modern() -> Scenario {
    scenario("modern.yaml")
}

/// The istiod cluster with a VM namespace, ServiceAccount and WorkloadGroup (as `prepare
/// --workload-group vm` leaves them).
pub(crate) fn modern_with_vm() -> Scenario {
    modern().with_objects([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vm"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "vm-sa", "namespace": "vm"}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
               "metadata": {"name": "vm", "namespace": "vm"},
               "spec": {"metadata": {"labels": {"app": "vm"}},
                        "template": {"serviceAccount": "vm-sa", "network": "vm-net",
                                     "ports": {"http": 8080}}}}),
    ])
}

/// What one run printed, and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Exit code (-1: killed by a signal).
    pub code: i32,
    /// Stdout, lossy UTF-8.
    pub stdout: String,
    /// Stderr, lossy UTF-8.
    pub stderr: String,
}

impl Run {
    /// A finished process's exit code and output.
    pub(crate) fn from(out: &std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    /// Everything, for assertion messages.
    pub(crate) fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run a verb binary against the sim with `--kubeconfig`, on a blocking thread (the sim serves
/// on this runtime). The environment is cleaned of what could change the output.
pub(crate) async fn run(bin: &'static str, server: &Server, args: &[String]) -> Run {
    run_with(bin, server, args, None).await
}

/// [`run`] with `RUST_LOG` set to `rust_log` (None: unset).
pub(crate) async fn run_with(
    bin: &'static str,
    server: &Server,
    args: &[String],
    rust_log: Option<&str>,
) -> Run {
    let kubeconfig = server.kubeconfig_path().to_owned();
    let args = args.to_vec();
    let rust_log = rust_log.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG");
        if let Some(filter) = &rust_log {
            cmd.env("RUST_LOG", filter);
        }
        Run::from(&cmd.output().expect("run the verb binary"))
    })
    .await
    .expect("the verb binary's thread")
}

/// Owned argument vector.
pub(crate) fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Seconds the injected 429s ask the client to wait.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 1;

/// Make `rate` of all requests fail, split evenly among a 500, a connection reset and (with
/// `throttle`) a 429 with `Retry-After`. The sim tries the rules in order, each with its own
/// draw, so each of the n rules gets `1 - (1 - rate)^(1/n)` to make the union exactly `rate`.
pub(crate) fn inject_faults(server: &Server, seed: u64, rate: f64, throttle: bool) {
    let rules = if throttle { 3.0 } else { 2.0 };
    let each = 1.0 - (1.0 - rate).powf(1.0 / rules);
    server.set_seed(seed);
    server.add_fault(Fault::rate(FaultKind::InternalError, each));
    if throttle {
        server.add_fault(Fault::rate(
            FaultKind::TooManyRequests {
                retry_after_seconds: RETRY_AFTER_SECONDS,
            },
            each,
        ));
    }
    server.add_fault(Fault::rate(FaultKind::ConnectionReset, each));
}

/// How many requests the sim answered with an injected fault (status 0, 429 or 500).
pub(crate) fn injected(server: &Server) -> usize {
    server
        .requests()
        .records
        .iter()
        .filter(|r| matches!(r.status, 0 | 429 | 500))
        .count()
}

/// A stored kind to compare: `apiVersion`, kind, plural.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiKind {
    /// `v1`, `networking.istio.io/v1`, ….
    pub api_version: &'static str,
    /// `Secret`, ….
    pub kind: &'static str,
    /// `secrets`, ….
    pub plural: &'static str,
}

/// Shorthand for a [`ApiKind`].
pub(crate) const fn kind(
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> ApiKind {
    ApiKind {
        api_version,
        kind,
        plural,
    }
}

/// Namespaces.
pub(crate) const NAMESPACE: ApiKind = kind("v1", "Namespace", "namespaces");
/// ServiceAccounts.
pub(crate) const SERVICE_ACCOUNT: ApiKind = kind("v1", "ServiceAccount", "serviceaccounts");
/// Secrets.
pub(crate) const SECRET: ApiKind = kind("v1", "Secret", "secrets");
/// Services.
pub(crate) const SERVICE: ApiKind = kind("v1", "Service", "services");
/// Endpoints.
pub(crate) const ENDPOINTS: ApiKind = kind("v1", "Endpoints", "endpoints");

/// Every stored object of these kinds (all namespaces), keyed `ApiKind ns/name` as the plan
/// table's rows name them, with what the server sets on each write stripped (resourceVersion,
/// uid, timestamps, managedFields, generation) and the sim Citadel's freshly generated keys
/// replaced by their names, and the `kubernetes` Service and Endpoints (the sim's own random
/// port) left out. Faults must be cleared first (the listing goes through the sim).
pub(crate) async fn stored(server: &Server, kinds: &[ApiKind]) -> BTreeMap<String, Value> {
    let client = server.client();
    let mut out = BTreeMap::new();
    for k in kinds {
        let (group, version) = k
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", k.api_version));
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(group, version, k.kind),
            k.plural,
        );
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {}: {e}", k.plural));
        for item in list.items {
            let mut v = serde_json::to_value(&item).expect("object as JSON");
            normalize(&mut v);
            let ns = item.metadata.namespace.clone();
            let name = item.metadata.name.clone().unwrap_or_default();
            let key = match ns {
                Some(ns) => format!("{} {ns}/{name}", k.kind),
                None => format!("{} {name}", k.kind),
            };
            // The `kubernetes` Service and Endpoints point at the sim's own port.
            if key.ends_with(" default/kubernetes") {
                continue;
            }
            // Citadel issues `istio.<sa>` on its own schedule (asynchronously, as its informer
            // does): not what a verb wrote, and not yet there when a verb has just returned.
            if v.get("type").and_then(Value::as_str) == Some("istio.io/key-and-cert") {
                continue;
            }
            out.insert(key, v);
        }
    }
    out
}

/// Strip what differs between two equal histories (see [`stored`]).
pub(crate) fn normalize(v: &mut Value) {
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
    }
    // What the sim's Citadel generates afresh in every sim: workload secrets, its self-signed CA
    // (`istio-ca-secret`, type istio.io/ca-root) and the root it publishes in `istio-security`.
    if matches!(
        v.get("type").and_then(Value::as_str),
        Some("istio.io/key-and-cert" | "istio.io/ca-root")
    ) && let Some(Value::Object(data)) = v.get_mut("data")
    {
        for value in data.values_mut() {
            *value = Value::String("<generated by the sim's Citadel>".into());
        }
    }
    if v.get("kind").and_then(Value::as_str) == Some("ConfigMap")
        && v.pointer("/metadata/name").and_then(Value::as_str) == Some("istio-security")
        && let Some(Value::Object(data)) = v.get_mut("data")
        && let Some(root) = data.get_mut("caTLSRootCert")
    {
        *root = Value::String("<generated by the sim's Citadel>".into());
    }
}

/// The differences between two stored sets, one line per object, for assertion messages.
pub(crate) fn diff(left: &BTreeMap<String, Value>, right: &BTreeMap<String, Value>) -> String {
    let mut lines = Vec::new();
    for (k, v) in left {
        match right.get(k) {
            None => lines.push(format!("only in the first: {k}")),
            Some(w) if w != v => lines.push(format!("differs: {k}\n  first:  {v}\n  second: {w}")),
            Some(_) => {}
        }
    }
    for k in right.keys().filter(|k| !left.contains_key(*k)) {
        lines.push(format!("only in the second: {k}"));
    }
    lines.join("\n")
}

/// One row of a verb's plan table (KIND NAMESPACE NAME ACTION DETAIL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// KIND.
    pub kind: String,
    /// NAMESPACE ("" for cluster scope).
    pub namespace: String,
    /// NAME.
    pub name: String,
    /// ACTION: "created", "not created", "failed to create", "unchanged", ….
    pub action: String,
}

impl Row {
    /// `ApiKind ns/name`, as [`stored`] keys objects.
    pub(crate) fn key(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Parse the plan table the verbs print on stdout; None when stdout holds no such table.
pub(crate) fn plan_rows(stdout: &str) -> Option<Vec<Row>> {
    let mut lines = stdout.lines();
    let header = lines.find(|l| l.starts_with("KIND") && l.contains("ACTION"))?;
    let starts: Vec<usize> = ["KIND", "NAMESPACE", "NAME", "ACTION", "DETAIL"]
        .iter()
        .map(|c| find_column(header, c))
        .collect::<Option<_>>()?;
    let cell = |line: &str, i: usize| -> String {
        let from = starts[i].min(line.len());
        let to = starts
            .get(i + 1)
            .map_or(line.len(), |e| (*e).min(line.len()));
        line.get(from..to).unwrap_or("").trim().to_owned()
    };
    Some(
        lines
            .take_while(|l| !l.trim().is_empty())
            .map(|l| Row {
                kind: cell(l, 0),
                namespace: cell(l, 1),
                name: cell(l, 2),
                action: cell(l, 3),
            })
            .collect(),
    )
}

/// The byte offset of a whole-word column title in a header line.
fn find_column(header: &str, title: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = header[from..].find(title) {
        let at = from + i;
        let end = at + title.len();
        let before_ok = at == 0 || header.as_bytes()[at - 1] == b' ';
        let after_ok = end == header.len() || header.as_bytes()[end] == b' ';
        if before_ok && after_ok {
            return Some(at);
        }
        from = end;
    }
    None
}

/// What an ACTION cell says about the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// It was written ("created", "updated", "deleted", "done").
    Written,
    /// It was not touched ("not created", "unchanged", …).
    Untouched,
    /// The write failed: it may or may not have landed (a reset after the server committed).
    Unknown,
}

/// Classify an ACTION cell; None for words a real (not dry) run must not print.
pub(crate) fn said(action: &str) -> Option<Said> {
    match action {
        "created" | "updated" | "deleted" | "done" => Some(Said::Written),
        "unchanged" | "not created" | "not updated" | "not deleted" | "not done" => {
            Some(Said::Untouched)
        }
        a if a.starts_with("failed") => Some(Said::Unknown),
        _ => None,
    }
}

/// Run `jobs` on `workers` concurrent tasks (each job gets its index); results in index order.
pub(crate) async fn pool<T, F, Fut>(jobs: usize, workers: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let next = next.clone();
        let f = f.clone();
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= jobs {
                    break done;
                }
                done.push((i, f(i).await));
            }
        });
    }
    let mut all = Vec::with_capacity(jobs);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(done) => all.extend(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("worker: {e}"),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table_parses_back() {
        let table = "KIND             NAMESPACE      NAME       ACTION             DETAIL\n\
                     Secret           istio-system   cacerts    created            plugged-in CA\n\
                     Namespace                       expandvm   not created\n\
                     ServiceAccount   expandvm       expandvm   failed to create   boom\n";
        let rows = plan_rows(table).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].key(), "Secret istio-system/cacerts");
        assert_eq!(rows[1].key(), "Namespace expandvm");
        assert_eq!(rows[1].action, "not created");
        assert_eq!(rows[2].action, "failed to create");
        assert_eq!(said(&rows[2].action), Some(Said::Unknown));
        assert_eq!(plan_rows("FILE SIZE\n"), None);
    }
}
