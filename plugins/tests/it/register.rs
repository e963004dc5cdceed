//! `kubectl-meshvm-register` end to end against kube-sim, with real kubectl reading back what it wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube_sim::{Fault, FaultKind, Scenario, Server};
use serde_json::{Value, json};

const REGISTER: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-register");
const SA_ANNOTATION: &str = "alpha.istio.io/kubernetes-serviceaccounts";

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(name)
}

/// The runbook's cluster plus what `kubectl meshvm prepare` (or the runbook's
/// `kubectl create ns expandvm` / service account) made for the VM.
fn legacy_cluster() -> Scenario {
    Scenario::from_files(&[scenario_path("legacy-1.4.yaml")])
        .expect("legacy scenario")
        .with_objects([
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
        ])
}

fn modern_cluster() -> Scenario {
    Scenario::from_files(&[scenario_path("modern.yaml")])
        .expect("modern scenario")
        .with_objects([
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

/// Run the plugin against the sim; blocking, so call it from `spawn_blocking`.
fn register(sim: &Path, args: &[&str]) -> Output {
    Command::new(REGISTER)
        .arg("--kubeconfig")
        .arg(sim)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run kubectl-meshvm-register")
}

async fn run(sim: &Server, args: &[&str]) -> Output {
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        register(&kubeconfig, &args)
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `kubectl get … -o json` with the real kubectl; `None` when it reports NotFound.
async fn kubectl_get(sim: &Server, what: &[&str]) -> Option<Value> {
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let cache = tempfile::tempdir().expect("cache dir");
    let mut args: Vec<String> = vec!["get".into()];
    args.extend(what.iter().map(|s| (*s).to_owned()));
    args.extend(["-o".into(), "json".into()]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    })
    .await
    .expect("join");
    if !out.status.success() {
        let err = text(&out.stderr);
        assert!(err.contains("NotFound"), "kubectl failed: {err}");
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
}

fn addresses(endpoints: &Value) -> Vec<String> {
    let mut all: Vec<String> = endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| a["ip"].as_str().unwrap_or_default().to_owned())
        .collect();
    all.sort();
    all
}

fn writes(sim: &Server) -> usize {
    sim.requests()
        .records
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_registration_matches_istioctl_1_4_and_reruns_change_nothing() {
    let sim = Server::start(legacy_cluster()).await;
    // The runbook: istioctl register expandvm -s expandvm -n expandvm <ip> 80
    let out = run(
        &sim,
        &[
            "expandvm",
            "-s",
            "expandvm",
            "-n",
            "expandvm",
            "35.187.36.54",
            "80",
        ],
    )
    .await;
    assert_ok(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("registered 35.187.36.54"), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Service") && stdout.contains("created"),
        "{stdout}"
    );

    // What istioctl 1.4 sent: Service{name, labels {}, annotations {sa}, ports [{http 80}]},
    // Endpoints{name, same labels/annotations, subsets [{addresses [{ip}], ports [{http 80}]}]},
    // as the API server stores it (protocol TCP, targetPort = port, type ClusterIP).
    let svc = kubectl_get(&sim, &["service", "expandvm", "-n", "expandvm"])
        .await
        .expect("service stored");
    assert_eq!(svc["metadata"]["name"], "expandvm");
    assert_eq!(svc["metadata"]["namespace"], "expandvm");
    assert_eq!(
        svc["metadata"]["annotations"],
        json!({SA_ANNOTATION: "expandvm"})
    );
    assert!(
        svc["metadata"]["labels"]
            .as_object()
            .is_none_or(serde_json::Map::is_empty),
        "istioctl set no labels: {svc}"
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}])
    );
    assert!(
        svc["spec"].get("selector").is_none(),
        "selector-less: {svc}"
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
    );

    let ep = kubectl_get(&sim, &["endpoints", "expandvm", "-n", "expandvm"])
        .await
        .expect("endpoints stored");
    assert_eq!(
        ep["metadata"]["annotations"],
        json!({SA_ANNOTATION: "expandvm"})
    );
    assert!(
        ep["metadata"]["labels"]
            .as_object()
            .is_none_or(serde_json::Map::is_empty)
    );
    assert_eq!(
        ep["subsets"],
        json!([{"addresses": [{"ip": "35.187.36.54"}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}])
    );

    // A re-run is a no-op that says so, and sends no write.
    sim.reset_requests();
    let again = run(
        &sim,
        &[
            "expandvm",
            "-s",
            "expandvm",
            "-n",
            "expandvm",
            "35.187.36.54",
            "80",
        ],
    )
    .await;
    assert_ok(&again);
    assert!(
        text(&again.stderr).contains("already an endpoint"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(writes(&sim), 0, "{:?}", sim.requests().counts());
    let ep2 = kubectl_get(&sim, &["endpoints", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    assert_eq!(
        ep["metadata"]["resourceVersion"],
        ep2["metadata"]["resourceVersion"]
    );
    let svc2 = kubectl_get(&sim, &["service", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    assert_eq!(
        svc["metadata"]["resourceVersion"],
        svc2["metadata"]["resourceVersion"]
    );
}

/// Start `n` register processes at once, one IP each; returns the wall time until all ended.
async fn register_concurrently(sim: &Server, n: u8) -> Duration {
    let kubeconfig = sim.kubeconfig_path().to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let children: Vec<_> = (1..=n)
            .map(|i| {
                let child = Command::new(REGISTER)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["expandvm", "-s", "expandvm", "-n", "expandvm"])
                    .arg(format!("198.51.100.{i}"))
                    .arg("80")
                    .env_remove("KUBECONFIG")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                (i, child)
            })
            .collect();
        for (i, child) in children {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "process {i} failed:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        started.elapsed()
    })
    .await
    .expect("join")
}

const SEED: u64 = 7;

async fn twenty_processes(faults: bool) {
    let sim = Server::start(legacy_cluster()).await;
    if faults {
        sim.set_seed(SEED);
        sim.add_fault(Fault::rate(FaultKind::InternalError, 0.04));
        sim.add_fault(Fault::rate(
            FaultKind::TooManyRequests {
                retry_after_seconds: 1,
            },
            0.03,
        ));
        sim.add_fault(Fault::rate(FaultKind::ConnectionReset, 0.03));
    }
    let took = register_concurrently(&sim, 20).await;
    let log = sim.requests();
    sim.clear_faults();
    let ep = kubectl_get(&sim, &["endpoints", "expandvm", "-n", "expandvm"])
        .await
        .expect("endpoints");
    let want: Vec<String> = {
        let mut v: Vec<String> = (1..=20).map(|i| format!("198.51.100.{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(addresses(&ep), want, "{ep}");
    assert_eq!(
        ep["subsets"].as_array().map(Vec::len),
        Some(1),
        "one subset for one port set"
    );
    let svc = kubectl_get(&sim, &["service", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    assert_eq!(svc["spec"]["ports"].as_array().map(Vec::len), Some(1));
    let faulted = log
        .records
        .iter()
        .filter(|r| matches!(r.status, 0 | 429 | 500))
        .count();
    let conflicts = log.records.iter().filter(|r| r.status == 409).count();
    if faults {
        assert!(
            faulted * 20 >= log.total(),
            "at least 5% of the requests failed: {faulted}/{}",
            log.total()
        );
    }
    eprintln!(
        "20 concurrent register processes{}: {took:?} wall, {} requests, {faulted} faulted, {conflicts} answered 409",
        if faults {
            " with 10% injected faults"
        } else {
            ""
        },
        log.total()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_processes_keep_twenty_addresses() {
    twenty_processes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_processes_keep_twenty_addresses_under_faults() {
    twenty_processes(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_exactly_one_address() {
    let sim = Server::start(legacy_cluster()).await;
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert_ok(
            &run(
                &sim,
                &["expandvm", ip, "80", "-n", "expandvm", "-s", "expandvm"],
            )
            .await,
        );
    }
    // A second port set lands in its own subset; deregister clears the address from both.
    assert_ok(
        &run(
            &sim,
            &[
                "expandvm",
                "192.0.2.2",
                "80",
                "grpc:9090",
                "-n",
                "expandvm",
                "-s",
                "expandvm",
                "--update-service",
            ],
        )
        .await,
    );
    // Through the dispatcher, as `kubectl meshvm deregister …` reaches it.
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kubectl-meshvm"))
            .args([
                "deregister",
                "expandvm",
                "192.0.2.2",
                "-n",
                "expandvm",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl-meshvm")
    })
    .await
    .unwrap();
    assert_ok(&out);
    assert!(
        text(&out.stderr).contains("deregistered 192.0.2.2"),
        "{}",
        text(&out.stderr)
    );
    let ep = kubectl_get(&sim, &["endpoints", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    assert_eq!(addresses(&ep), ["192.0.2.1", "192.0.2.3"]);
    assert_eq!(
        ep["subsets"].as_array().map(Vec::len),
        Some(1),
        "the emptied subset is dropped: {ep}"
    );
    assert!(
        kubectl_get(&sim, &["service", "expandvm", "-n", "expandvm"])
            .await
            .is_some(),
        "the service stays"
    );
    // A second run is idempotent: nothing to change, exit 0, naming what is missing, no write.
    sim.reset_requests();
    let again = run(
        &sim,
        &["--deregister", "expandvm", "192.0.2.2", "-n", "expandvm"],
    )
    .await;
    assert_ok(&again);
    let err = text(&again.stderr);
    assert!(
        err.contains("nothing to change: 192.0.2.2 is not an endpoint of service expandvm/expandvm (its addresses: 192.0.2.1, 192.0.2.3)")
            && err.contains("-n expandvm")
            && !err.contains("--vm-namespace"),
        "{err}"
    );
    assert_eq!(writes(&sim), 0, "{:?}", sim.requests().counts());
    // Down to the last address: the table says "1 address left", then "0 addresses left".
    let one = run(
        &sim,
        &["--deregister", "expandvm", "192.0.2.1", "-n", "expandvm"],
    )
    .await;
    assert_ok(&one);
    assert!(
        text(&one.stdout).contains("removed 192.0.2.1 (1 address left)"),
        "{}",
        text(&one.stdout)
    );
    // A Service that does not exist is named as the missing thing.
    let none = run(
        &sim,
        &["--deregister", "nosuch", "192.0.2.3", "-n", "expandvm"],
    )
    .await;
    assert_ok(&none);
    assert!(
        text(&none.stderr).contains("nothing to change: service expandvm/nosuch does not exist"),
        "{}",
        text(&none.stderr)
    );
}

/// The Service and Endpoints `register` left, by name, from the sim's store.
fn stored_service(sim: &Server, ns: &str, name: &str) -> Option<Value> {
    sim.object("v1", "Service", ns, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_before_prepare_is_refused_before_any_write_with_the_fix_that_works() {
    // The runbook's cluster before `prepare`: no expandvm namespace.
    let sim = Server::start(
        Scenario::from_files(&[scenario_path("legacy-1.4.yaml")]).expect("legacy scenario"),
    )
    .await;
    let objects_before = sim.object_count();
    let out = run(&sim, &["expandvm", "192.0.2.10", "80", "-n", "expandvm"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: namespace expandvm does not exist: nothing was written"),
        "{err}"
    );
    assert_eq!(writes(&sim), 0, "{:?}", sim.requests().counts());
    assert_eq!(sim.object_count(), objects_before);
    // The hint's command, run as printed (plus this sim's kubeconfig), fixes it.
    let fix = err
        .split('`')
        .nth(1)
        .expect("the hint quotes a command")
        .to_owned();
    assert_eq!(fix, "kubectl meshvm prepare -n expandvm");
    let words: Vec<&str> = fix.split_whitespace().skip(3).collect();
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    let prepared = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kubectl-meshvm-prepare"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&words)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_ok(&prepared);
    // Now it registers, and without -s the VM runs as the ServiceAccount prepare made (the
    // runbook's expandvm), not istioctl's `default`.
    let out = run(&sim, &["expandvm", "192.0.2.10", "80", "-n", "expandvm"]).await;
    assert_ok(&out);
    let svc = stored_service(&sim, "expandvm", "expandvm").expect("service");
    assert_eq!(svc["metadata"]["annotations"][SA_ANNOTATION], "expandvm");

    // A namespace without the VM's ServiceAccount (prepare never ran there): the same refusal.
    sim.load([json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})])
        .unwrap();
    sim.reset_requests();
    let out = run(&sim, &["other", "192.0.2.11", "80", "-n", "other"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("serviceaccount other/other does not exist")
            && err.contains("`kubectl meshvm prepare -n other`"),
        "{err}"
    );
    assert_eq!(writes(&sim), 0, "{:?}", sim.requests().counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_bundle_and_prepare_share_the_service_account_rule() {
    let sim = Server::start(
        Scenario::from_files(&[scenario_path("legacy-1.4.yaml")]).expect("legacy scenario"),
    )
    .await;
    // prepare with -s: it labels the account it makes, and register finds it without -s.
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let prepared = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kubectl-meshvm-prepare"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["-n", "expandvm", "-s", "vm-sa"])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_ok(&prepared);
    let out = run(&sim, &["expandvm", "192.0.2.10", "80", "-n", "expandvm"]).await;
    assert_ok(&out);
    let svc = stored_service(&sim, "expandvm", "expandvm").expect("service");
    assert_eq!(svc["metadata"]["annotations"][SA_ANNOTATION], "vm-sa");
    // A later registration as another account is told to use -s, not --update-service (which
    // would widen the service's identity to vm-sa,default).
    let out = run(
        &sim,
        &[
            "expandvm",
            "192.0.2.11",
            "80",
            "-n",
            "expandvm",
            "-s",
            "default",
        ],
    )
    .await;
    assert_ok(&out);
    let err = text(&out.stderr);
    assert!(err.contains("(vm-sa,default)"), "-s chose it: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_n_register_uses_the_contexts_namespace_and_says_so_for_default() {
    let sim = Server::start(legacy_cluster()).await;
    // The sim's context names `default`: nothing meshvm made is there, so one line says so.
    let out = run(&sim, &["--deregister", "expandvm", "192.0.2.1"]).await;
    assert_ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("note: working in namespace default (the namespace of context kube-sim), where nothing meshvm made is: name the VM's namespace with -n NS"),
        "{err}"
    );
    // Registering there (the newcomer's `register SERVICE IP PORT` without -n) is refused
    // before any write: exit 2, with the -n that names it on purpose, which then works.
    sim.reset_requests();
    let out = run(&sim, &["web", "192.0.2.7", "80"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing was written")
            && text(&out.stderr).contains("pass -n default to register there on purpose"),
        "{}",
        text(&out.stderr)
    );
    let log = sim.requests();
    assert!(
        log.records
            .iter()
            .all(|r| matches!(r.verb.as_str(), "get" | "list" | "watch")),
        "{:?}",
        log.counts()
    );
    let out = run(&sim, &["web", "192.0.2.7", "80", "-n", "default"]).await;
    assert_ok(&out);
    // A context naming the VM's namespace: used as kubectl would, and no note.
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    let text_kc = std::fs::read_to_string(sim.kubeconfig_path()).unwrap();
    std::fs::write(
        &kc,
        text_kc.replace("namespace: default", "namespace: expandvm"),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || register(&kc, &["expandvm", "192.0.2.9", "80"]))
        .await
        .unwrap();
    assert_ok(&out);
    assert!(
        !text(&out.stderr).contains("note: working in"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("in service expandvm/expandvm"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_service_ports_change_only_with_update_service() {
    let sim = Server::start(legacy_cluster()).await;
    assert_ok(
        &run(
            &sim,
            &[
                "expandvm",
                "192.0.2.1",
                "80",
                "-n",
                "expandvm",
                "-s",
                "expandvm",
            ],
        )
        .await,
    );
    let out = run(
        &sim,
        &[
            "expandvm",
            "192.0.2.9",
            "80",
            "grpc:9090",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("port 9090 (grpc) is missing") && err.contains("--update-service"),
        "{err}"
    );
    let svc = kubectl_get(&sim, &["service", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    assert_eq!(
        svc["spec"]["ports"].as_array().map(Vec::len),
        Some(1),
        "unchanged"
    );

    let out = run(
        &sim,
        &[
            "expandvm",
            "192.0.2.9",
            "80",
            "grpc:9090",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
            "--update-service",
        ],
    )
    .await;
    assert_ok(&out);
    let svc = kubectl_get(&sim, &["service", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [80, 9090]);
    let ep = kubectl_get(&sim, &["endpoints", "expandvm", "-n", "expandvm"])
        .await
        .unwrap();
    assert_eq!(
        ep["subsets"].as_array().map(Vec::len),
        Some(2),
        "new port set, new subset: {ep}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_write_nothing() {
    let sim = Server::start(legacy_cluster()).await;
    let before = sim.object_count();
    sim.reset_requests();
    let out = run(
        &sim,
        &[
            "expandvm",
            "192.0.2.1",
            "80",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
    )
    .await;
    assert_ok(&out);
    assert_eq!(writes(&sim), 0, "client dry run sends no write");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("kind: List")
            && stdout.contains("kind: Endpoints")
            && stdout.contains("192.0.2.1"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("dry run: registered"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        &sim,
        &[
            "expandvm",
            "192.0.2.1",
            "80",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
            "--dry-run=server",
            "-o",
            "json",
        ],
    )
    .await;
    assert_ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    assert!(
        writes(&sim) >= 2,
        "server dry run sends the writes with dryRun=All"
    );
    assert_eq!(sim.object_count(), before, "nothing stored");
    assert!(
        sim.object("v1", "Service", "expandvm", "expandvm")
            .is_none()
    );
    assert!(
        sim.object("v1", "Endpoints", "expandvm", "expandvm")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_entry_in_the_modern_scenario() {
    let sim = Server::start(modern_cluster()).await;
    let args = [
        "--workload-entry",
        "vm-1",
        "--address",
        "10.0.0.5",
        "-n",
        "vm",
        "--workload-group",
        "vm",
        "--service",
        "vm",
    ];
    let out = run(&sim, &args).await;
    assert_ok(&out);
    let we = kubectl_get(
        &sim,
        &["workloadentries.networking.istio.io", "vm-1", "-n", "vm"],
    )
    .await
    .expect("entry stored");
    assert_eq!(we["apiVersion"], "networking.istio.io/v1");
    assert_eq!(
        we["spec"],
        json!({"address": "10.0.0.5", "labels": {"app": "vm"}, "ports": {"http": 8080},
               "serviceAccount": "vm-sa", "network": "vm-net"})
    );
    let applied = sim.requests().records.iter().any(|r| {
        r.verb == "patch"
            && r.path.ends_with("/namespaces/vm/workloadentries/vm-1")
            && r.query.contains("fieldManager=meshvm")
    });
    assert!(
        applied,
        "server-side apply as meshvm: {:?}",
        sim.requests().counts()
    );
    let svc = kubectl_get(&sim, &["service", "vm", "-n", "vm"])
        .await
        .expect("service stored");
    assert_eq!(svc["spec"]["selector"], json!({"app": "vm"}));
    assert_eq!(svc["spec"]["ports"][0]["name"], "http");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);

    sim.reset_requests();
    let again = run(&sim, &args).await;
    assert_ok(&again);
    assert!(
        text(&again.stderr).contains("nothing changed"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(writes(&sim), 0);

    // A Service whose selector misses the entry is reported.
    let out = run(
        &sim,
        &[
            "--workload-entry",
            "vm-2",
            "--address",
            "10.0.0.6",
            "-n",
            "vm",
            "-s",
            "vm-sa",
            "-l",
            "app=other",
            "--service",
            "vm",
        ],
    )
    .await;
    assert_ok(&out);
    assert!(
        text(&out.stderr).contains("would not select workloadentry vm-2"),
        "{}",
        text(&out.stderr)
    );

    // The ServiceAccount must exist.
    let out = run(
        &sim,
        &[
            "--workload-entry",
            "vm-3",
            "--address",
            "10.0.0.7",
            "-n",
            "vm",
            "-s",
            "nobody",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("serviceaccount vm/nobody does not exist"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        &sim,
        &["--deregister", "--workload-entry", "vm-2", "-n", "vm"],
    )
    .await;
    assert_ok(&out);
    assert!(
        kubectl_get(
            &sim,
            &["workloadentries.networking.istio.io", "vm-2", "-n", "vm"]
        )
        .await
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_entry_on_istio_1_4_is_refused_with_the_legacy_form_as_hint() {
    let sim = Server::start(legacy_cluster()).await;
    let out = run(
        &sim,
        &[
            "--workload-entry",
            "vm-1",
            "--address",
            "10.0.0.5",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("serves no workloadentries.networking.istio.io"),
        "{err}"
    );
    assert!(
        err.contains("hint: on Istio 1.4 register the legacy way"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_before_any_connection() {
    let cases: &[(&[&str], &str)] = &[
        (&["expandvm", "169.254.0.9", "80"], "link-local"),
        (&["expandvm", "10.0.0.1", "http"], "not a port number"),
        (&["expandvm", "10.0.0.1", "0"], "outside 1-65535"),
        (&["Expand_VM", "10.0.0.1", "80"], "DNS-1123"),
        (
            &["expandvm", "10.0.0.1", "80", "-l", "novalue"],
            "KEY=VALUE",
        ),
        (
            &["--workload-entry", "vm-1", "--address", "::"],
            "unspecified",
        ),
        (
            &["--workload-entry", "vm-1", "--address", "ff02::1"],
            "multicast",
        ),
        (
            &[
                "--workload-entry",
                "vm-1",
                "--address",
                "10.0.0.1",
                "--ports",
                "http=99999",
            ],
            "1-65535",
        ),
    ];
    for (args, part) in cases {
        // A kubeconfig that does not exist: resolving fails first, so it is never read.
        let out = register(Path::new("/nonexistent/kubeconfig"), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(part),
            "{args:?}: {err}"
        );
        assert!(err.contains("hint: "), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_form_end_to_end_with_kubectl() {
    let sim = Server::start(legacy_cluster()).await;
    // istioctl 1.4: istioctl x add-to-mesh external-service vmhttp 203.0.113.7 http:9080 -n expandvm
    let line = [
        "--service-entry",
        "vmhttp",
        "203.0.113.7",
        "http:9080",
        "-n",
        "expandvm",
    ];
    let out = run(&sim, &line).await;
    assert_ok(&out);
    let se = kubectl_get(
        &sim,
        &["serviceentry", "mesh-expansion-vmhttp", "-n", "expandvm"],
    )
    .await
    .expect("kubectl reads the entry");
    assert_eq!(
        se["spec"]["hosts"],
        json!(["vmhttp.expandvm.svc.cluster.local"])
    );
    assert_eq!(se["spec"]["resolution"], "STATIC");
    assert_eq!(se["spec"]["endpoints"], json!([{"address": "203.0.113.7"}]));
    let svc = kubectl_get(&sim, &["service", "vmhttp", "-n", "expandvm"])
        .await
        .expect("the service");
    assert_eq!(
        svc["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "expandvm"
    );
    assert_eq!(svc["spec"]["ports"][0]["name"], "http-9080");

    sim.reset_requests();
    let again = run(&sim, &line).await;
    assert_ok(&again);
    assert_eq!(writes(&sim), 0, "{}", text(&again.stderr));

    let dereg = [
        "--service-entry",
        "--deregister",
        "vmhttp",
        "203.0.113.7",
        "-n",
        "expandvm",
    ];
    assert_ok(&run(&sim, &dereg).await);
    assert!(
        kubectl_get(
            &sim,
            &["serviceentry", "mesh-expansion-vmhttp", "-n", "expandvm"]
        )
        .await
        .is_none()
    );
    assert!(
        kubectl_get(&sim, &["service", "vmhttp", "-n", "expandvm"])
            .await
            .is_none()
    );
    sim.reset_requests();
    let again = run(&sim, &dereg).await;
    assert_ok(&again);
    assert_eq!(writes(&sim), 0);
    assert!(text(&again.stderr).contains("nothing to change"));
}

fn entry_at(name: &str, created: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
           "metadata": {"name": name, "namespace": "vm", "creationTimestamp": created},
           "spec": {"address": "10.0.0.5", "network": "vm-net", "serviceAccount": "vm-sa"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_the_older_of_two_entries_with_one_address_and_network() {
    let sim = Server::start(modern_cluster().with_objects([
        entry_at("vm-1", "2025-03-01T08:00:00Z"),
        entry_at("vm-2", "2025-03-02T08:00:00Z"),
    ]))
    .await;
    let names = |v: Option<Value>| -> Vec<String> {
        let mut n: Vec<String> = v.expect("a list")["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let dry = run(&sim, &["--prune", "-n", "vm", "--dry-run=client"]).await;
    assert_ok(&dry);
    let table = text(&dry.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert_eq!(
        rows[0][..4],
        ["WorkloadEntry", "vm", "vm-1", "would"],
        "{table}"
    );
    assert_eq!(
        names(kubectl_get(&sim, &["workloadentries", "-n", "vm"]).await),
        ["vm-1", "vm-2"]
    );

    // Off a terminal, without --yes: refused with the flag to add, nothing deleted.
    let refused = run(&sim, &["--prune", "-n", "vm"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--yes"));
    assert_eq!(
        names(kubectl_get(&sim, &["workloadentries", "-n", "vm"]).await),
        ["vm-1", "vm-2"]
    );

    let pruned = run(&sim, &["--prune", "-n", "vm", "--yes"]).await;
    assert_ok(&pruned);
    assert!(text(&pruned.stdout).contains("deleted"));
    assert_eq!(
        names(kubectl_get(&sim, &["workloadentries", "-n", "vm"]).await),
        ["vm-2"]
    );
}
