//! `meshvm::register::run` in-process against kube-sim: output, bounded conflict retries, refusals.

use std::path::Path;

use clap::Parser;
use kube_sim::{Scenario, Server};
use meshvm::args::RegisterArgs;
use meshvm::errors::Diagnose;
use meshvm::register::{self, Error};
use serde_json::{Value, json};

fn cluster(extra: Vec<Value>) -> Scenario {
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/legacy-1.4.yaml");
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
    ];
    objects.extend(extra);
    Scenario::from_files(&[legacy])
        .expect("legacy scenario")
        .with_objects(objects)
}

fn registered() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "expandvm", "namespace": "expandvm",
                            "annotations": {"alpha.istio.io/kubernetes-serviceaccounts": "expandvm"}},
               "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": "expandvm", "namespace": "expandvm"},
               "subsets": [{"addresses": [{"ip": "192.0.2.1"}],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]}),
    ]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_summary_then_a_noop_rerun() {
    let sim = Server::start(cluster(Vec::new())).await;
    let line = [
        "expandvm",
        "203.0.113.7",
        "80",
        "-n",
        "expandvm",
        "-s",
        "expandvm",
    ];
    let (result, out, err) = run(&sim, &line).await;
    result.expect("registered");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["KIND", "NAMESPACE", "NAME", "ACTION", "DETAIL"],
        "{out}"
    );
    assert_eq!(
        rows[1][..4],
        ["Service", "expandvm", "expandvm", "created"],
        "{out}"
    );
    assert_eq!(
        rows[2][..4],
        ["Endpoints", "expandvm", "expandvm", "created"],
        "{out}"
    );
    assert_eq!(
        err.trim(),
        "registered 203.0.113.7 in service expandvm/expandvm (http:80) (2 created)"
    );

    let (result, out, err) = run(&sim, &[&line[..], &["-o", "json"]].concat()).await;
    result.expect("re-run");
    let list: Value = serde_json::from_str(&out).expect("a List");
    assert_eq!(list["items"], json!([]), "nothing would be written");
    assert!(
        err.contains("already an endpoint") && err.contains("nothing changed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_conflicts_end_in_a_clear_error_after_bounded_rounds() {
    let sim = Server::start(cluster(registered())).await;
    // Another writer always changes the Endpoints between meshvm's read and its write: every
    // read-modify-write round meets a newer resourceVersion and gets 409 Conflict (the sim's
    // fault answers as the apiserver does, without racing a thread against the scheduler).
    for verb in ["update", "patch"] {
        sim.add_fault(kube_sim::Fault::on(
            kube_sim::FaultKind::Conflict,
            verb,
            "/api/v1/namespaces/expandvm/endpoints/expandvm",
        ));
    }
    let (result, out, _) = run(
        &sim,
        &[
            "expandvm",
            "203.0.113.7",
            "80",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
        ],
    )
    .await;
    let err = result.expect_err("cannot win against a constant writer");
    assert!(
        matches!(
            err,
            Error::TooManyConflicts {
                rounds: register::MAX_ROUNDS,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("Endpoints expandvm/expandvm") && text.contains("409 Conflict"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("run the same command again"));
    assert!(!err.is_usage());
    assert!(
        out.is_empty(),
        "no table for a run that wrote nothing: {out}"
    );
    // Bounded: one write per round, then the error.
    let endpoints = "/api/v1/namespaces/expandvm/endpoints/expandvm";
    let log = sim.requests();
    assert_eq!(
        log.count("update", endpoints) + log.count("patch", endpoints),
        register::MAX_ROUNDS as usize,
        "{:?}",
        log.counts()
    );
    let stored = sim
        .object("v1", "Endpoints", "expandvm", "expandvm")
        .unwrap();
    assert!(!stored.to_string().contains("203.0.113.7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_says_what_was_not_written() {
    let sim = Server::start(cluster(Vec::new())).await;
    sim.deny("create", "endpoints", Some("expandvm"));
    let (result, out, _) = run(
        &sim,
        &[
            "expandvm",
            "203.0.113.7",
            "80",
            "-n",
            "expandvm",
            "-s",
            "expandvm",
        ],
    )
    .await;
    let err = result.expect_err("endpoints creation is forbidden");
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert!(err.hint().unwrap().contains("Role"), "{:?}", err.hint());
    assert!(out.contains("Service") && out.contains("created"), "{out}");
    assert!(out.contains("failed to create"), "{out}");
    assert!(
        sim.object("v1", "Endpoints", "expandvm", "expandvm")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_service_is_refused_and_left_alone() {
    let mut objects = registered();
    objects[0]["spec"]["selector"] = json!({"app": "web"});
    objects.pop();
    let sim = Server::start(cluster(objects)).await;
    sim.reset_requests();
    let (result, _, _) = run(&sim, &["expandvm", "203.0.113.7", "80", "-n", "expandvm"]).await;
    let err = result.expect_err("selector");
    assert!(
        err.to_string().contains("has a selector (app=web)"),
        "{err}"
    );
    let writes = sim
        .requests()
        .records
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list"))
        .count();
    assert_eq!(writes, 0);
}
