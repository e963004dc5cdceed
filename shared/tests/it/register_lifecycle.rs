//! `register --service-entry` (legacy cluster → VM, istioctl 1.4's `x add-to-mesh external-service`
//! form) and `register --prune`, in-process against kube-sim.

use std::path::Path;

use clap::Parser;
use kube_sim::{Scenario, Server};
use meshvm::args::RegisterArgs;
use meshvm::register::{self, Error};
use serde_json::{Value, json};

fn scenario(file: &str, extra: Vec<Value>) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(file);
    Scenario::from_files(&[path])
        .expect("scenario")
        .with_objects(extra)
}

fn legacy(extra: Vec<Value>) -> Scenario {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vm"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "vm", "namespace": "vm"}}),
    ];
    objects.extend(extra);
    scenario("legacy-1.4.yaml", objects)
}

async fn run(
    sim: &Server,
    line: &[&str],
) -> (Result<meshvm::errors::Outcome, Error>, String, String) {
    let mut argv = vec![
        "kubectl-meshvm-register".to_owned(),
        "--kubeconfig".to_owned(),
        sim.kubeconfig_path().display().to_string(),
    ];
    argv.extend(line.iter().map(|s| (*s).to_owned()));
    let args = RegisterArgs::try_parse_from(argv).expect("flags parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = register::run(args, &mut out, &mut err).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn writes(sim: &Server) -> usize {
    sim.requests()
        .records
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .count()
}

fn entry(sim: &Server) -> Option<Value> {
    sim.object(
        "networking.istio.io/v1alpha3",
        "ServiceEntry",
        "vm",
        "mesh-expansion-vmhttp",
    )
}

fn addresses(entry: &Value) -> Vec<String> {
    entry["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_owned())
        .collect()
}

const REGISTER: [&str; 8] = [
    "--service-entry",
    "vmhttp",
    "203.0.113.7,203.0.113.8",
    "http:9080",
    "tcp:8888",
    "-n",
    "vm",
    "-lapp=vmhttp",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_form_is_made_once_then_changes_nothing() {
    let sim = Server::start(legacy(Vec::new())).await;
    let (result, out, err) = run(&sim, &REGISTER).await;
    result.expect("registered");
    assert!(
        out.contains("ServiceEntry") && out.contains("created"),
        "{out}"
    );
    assert!(
        err.contains("registered 203.0.113.7,203.0.113.8 in serviceentry vm/mesh-expansion-vmhttp"),
        "{err}"
    );
    let se = entry(&sim).expect("the entry exists");
    assert_eq!(se["spec"]["hosts"], json!(["vmhttp.vm.svc.cluster.local"]));
    assert_eq!(se["spec"]["resolution"], "STATIC");
    assert_eq!(addresses(&se), ["203.0.113.7", "203.0.113.8"]);
    assert_eq!(
        se["spec"]["ports"][0],
        json!({"number": 9080, "protocol": "HTTP", "name": "http-9080"})
    );
    assert_eq!(
        se["spec"]["endpoints"][0]["labels"],
        json!({"app": "vmhttp"})
    );
    let svc = sim
        .object("v1", "Service", "vm", "vmhttp")
        .expect("service");
    assert!(svc["spec"].get("selector").is_none(), "{svc}");
    assert_eq!(
        svc["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "vm"
    );
    assert_eq!(
        svc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshvm"
    );

    // A second run: no write at all.
    sim.reset_requests();
    let (result, _, err) = run(&sim, &REGISTER).await;
    result.expect("re-run");
    assert_eq!(writes(&sim), 0, "a second run writes nothing");
    assert!(err.contains("nothing changed"), "{err}");

    // --dry-run with a new IP: says so, writes nothing.
    let mut more = REGISTER;
    more[2] = "203.0.113.9";
    let (result, out, _) = run(&sim, &[&more[..], &["--dry-run"]].concat()).await;
    result.expect("dry run");
    assert!(
        out.contains("would update") && out.contains("added 203.0.113.9"),
        "{out}"
    );
    assert_eq!(writes(&sim), 0);
    let (result, _, _) = run(&sim, &more).await;
    result.expect("added");
    assert_eq!(addresses(&entry(&sim).unwrap()).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_ips_then_what_meshvm_made_and_is_idempotent() {
    let sim = Server::start(legacy(Vec::new())).await;
    run(&sim, &REGISTER).await.0.expect("registered");
    let dereg =
        |ips: &'static str| vec!["--service-entry", "--deregister", "vmhttp", ips, "-n", "vm"];
    let (result, out, _) = run(&sim, &dereg("203.0.113.7")).await;
    result.expect("one out");
    assert!(out.contains("updated"), "{out}");
    assert_eq!(addresses(&entry(&sim).unwrap()), ["203.0.113.8"]);
    let (result, out, _) = run(&sim, &dereg("203.0.113.8")).await;
    result.expect("last out");
    assert!(out.contains("deleted"), "{out}");
    assert!(entry(&sim).is_none(), "the entry meshvm made is gone");
    assert!(
        sim.object("v1", "Service", "vm", "vmhttp").is_none(),
        "and its Service"
    );
    sim.reset_requests();
    let (result, _, err) = run(&sim, &dereg("203.0.113.8")).await;
    result.expect("again");
    assert!(err.contains("nothing to change"), "{err}");
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_meshvm_did_not_make_is_left_alone() {
    let theirs = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "vmhttp", "namespace": "vm", "labels": {"team": "web"}},
        "spec": {"ports": [{"name": "http", "port": 9080}]}});
    let sim = Server::start(legacy(vec![theirs])).await;
    let before = sim.object("v1", "Service", "vm", "vmhttp").unwrap();
    let (result, out, _) = run(&sim, &REGISTER).await;
    result.expect("registered");
    assert!(out.contains("not made by meshvm"), "{out}");
    let (result, _, _) = run(
        &sim,
        &[
            "--service-entry",
            "--deregister",
            "vmhttp",
            "203.0.113.7,203.0.113.8",
            "-n",
            "vm",
        ],
    )
    .await;
    result.expect("deregistered");
    assert!(entry(&sim).is_none());
    let after = sim.object("v1", "Service", "vm", "vmhttp").expect("kept");
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
}

fn modern_entry(name: &str, created: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
           "metadata": {"name": name, "namespace": "vm", "creationTimestamp": created},
           "spec": {"address": "10.0.0.5", "network": "vm-net", "serviceAccount": "vm-sa"}})
}

fn modern() -> Scenario {
    scenario(
        "modern.yaml",
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vm"}}),
            modern_entry("vm-old", "2025-06-01T10:00:00Z"),
            modern_entry("vm-new", "2025-06-01T11:00:00Z"),
            {
                let mut e = modern_entry("vm-auto-10.0.0.9", "2025-06-01T09:00:00Z");
                e["spec"]["address"] = "10.0.0.9".into();
                e["metadata"]["annotations"] = json!({"istio.io/autoRegistrationGroup": "vm"});
                e["status"] = json!({"conditions": [{"type": "Healthy", "status": "False",
                    "lastTransitionTime": "2025-06-01T09:30:00Z"}]});
                e
            },
            {
                let mut e = modern_entry("vm-auto-healthy", "2025-06-01T09:00:00Z");
                e["spec"]["address"] = "10.0.0.10".into();
                e["metadata"]["annotations"] = json!({"istio.io/autoRegistrationGroup": "vm"});
                e["status"] = json!({"conditions": [{"type": "Healthy", "status": "True",
                    "lastTransitionTime": "2025-06-01T09:30:00Z"}]});
                e
            },
        ],
    )
}

fn entry_names(sim: &Server) -> Vec<String> {
    let mut names: Vec<String> = sim
        .objects("networking.istio.io/v1", "WorkloadEntry")
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_names_the_older_duplicate_and_deletes_only_it() {
    let sim = Server::start(modern()).await;
    let before = entry_names(&sim);
    assert_eq!(before.len(), 4, "{before:?}");
    let (result, out, _) = run(&sim, &["--prune", "-n", "vm", "--dry-run=client"]).await;
    result.expect("dry run");
    assert!(
        out.contains("vm-old") && out.contains("would delete"),
        "{out}"
    );
    assert!(
        out.contains("vm-auto-10.0.0.9"),
        "unhealthy since 2025: {out}"
    );
    let named: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(named, ["vm-old", "vm-auto-10.0.0.9"], "{out}");
    assert_eq!(entry_names(&sim), before, "a dry run deletes nothing");

    // Off a terminal without --yes: refused, nothing deleted.
    let (result, _, _) = run(&sim, &["--prune", "-n", "vm"]).await;
    let err = result.expect_err("needs --yes");
    assert!(matches!(err, Error::Prompt(_)), "{err}");
    assert_eq!(entry_names(&sim), before);

    let (result, out, err) = run(&sim, &["--prune", "-n", "vm", "--yes"]).await;
    result.expect("pruned");
    assert!(out.contains("deleted"), "{out}");
    assert!(err.contains("pruned namespace vm"), "{err}");
    assert_eq!(entry_names(&sim), ["vm-auto-healthy", "vm-new"]);

    sim.reset_requests();
    let (result, _, err) = run(&sim, &["--prune", "-n", "vm", "--yes"]).await;
    result.expect("again");
    assert!(err.contains("nothing to prune"), "{err}");
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_repeated_legacy_endpoints_addresses() {
    let sim = Server::start(legacy(vec![
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "expandvm", "namespace": "vm"},
               "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": "expandvm", "namespace": "vm"},
               "subsets": [
                   {"addresses": [{"ip": "192.0.2.1"}], "ports": [{"name": "http", "port": 80}]},
                   {"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}], "ports": [{"name": "http", "port": 80}]}
               ]}),
    ]))
    .await;
    let (result, out, _) = run(&sim, &["--prune", "-n", "vm", "--dry-run=server"]).await;
    result.expect("server dry run");
    assert!(
        out.contains("server dry run") && out.contains("removed repeated 192.0.2.1"),
        "{out}"
    );
    let (result, _, _) = run(&sim, &["--prune", "-n", "vm", "-y"]).await;
    result.expect("pruned");
    let eps = sim.object("v1", "Endpoints", "vm", "expandvm").unwrap();
    let all: Vec<&str> = eps["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["addresses"].as_array().unwrap())
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["192.0.2.1", "192.0.2.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_different_ips_both_land() {
    let sim = Server::start(legacy(Vec::new())).await;
    run(&sim, &REGISTER).await.0.expect("the entry exists");
    sim.set_latency(std::time::Duration::from_millis(3));
    let mut lines = Vec::new();
    for i in 0..4 {
        let mut line: Vec<String> = REGISTER.iter().map(|s| (*s).to_owned()).collect();
        line[2] = format!("198.51.100.{}", i + 1);
        lines.push(line);
    }
    let runs = lines.iter().map(|line| {
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        let sim = &sim;
        async move { run(sim, &line).await.0 }
    });
    for result in futures::future::join_all(runs).await {
        result.expect("each run lands, observing again after a 409");
    }
    let mut all = addresses(&entry(&sim).unwrap());
    all.sort();
    assert_eq!(
        all,
        [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.4",
            "203.0.113.7",
            "203.0.113.8"
        ]
    );
}
