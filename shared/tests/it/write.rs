//! The write executor against kube-sim: server-side apply at the version each object carries,
//! the create/update fallback (guarded, merging what others set, unchanged when nothing
//! differs), server dry run, and the whole of prepare and doctor --fix on a Kubernetes 1.14 cell.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use kube_sim::{Scenario, Server};
use meshvm::kube::Connection;
use meshvm::plan::write::{self, Kind, Write};
use meshvm::plan::{Action, Change, Plan, State};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scenario(name: &str) -> Scenario {
    Scenario::from_files(&[repo().join("tests/scenarios").join(name)]).expect("scenario")
}

fn connection(server: &Server) -> Connection {
    Connection::from_client(server.client(), "default", "https://kube-sim")
}

fn namespace(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn group(version: &str, labels: &Value) -> Value {
    json!({"apiVersion": format!("networking.istio.io/{version}"), "kind": "WorkloadGroup",
           "metadata": {"name": "vm", "namespace": "vm"},
           "spec": {"metadata": {"labels": labels}, "template": {"serviceAccount": "vm"}}})
}

fn apply_row(action: Action, kind: Kind, ns: Option<&str>, name: &str, object: Value) -> Change {
    Change::new(action, kind, ns, name).write(Write::apply(kind, object))
}

/// Writes (not reads) the sim saw: `METHOD path -> status`.
fn writes(server: &Server) -> Vec<String> {
    server
        .requests()
        .records
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_writes_each_object_at_its_own_version() {
    let server = Server::start(scenario("modern.yaml")).await;
    let conn = connection(&server);
    server.reset_requests();
    let mut plan = Plan::default();
    plan.push(apply_row(
        Action::Create,
        Kind::Namespace,
        None,
        "vm",
        namespace("vm", &json!({"app.kubernetes.io/managed-by": "meshvm"})),
    ));
    plan.push(apply_row(
        Action::Create,
        Kind::WorkloadGroup,
        Some("vm"),
        "vm",
        group("v1alpha3", &json!({"app": "vm"})),
    ));
    write::execute(&conn, &mut plan, meshvm::flags::DryRun::None)
        .await
        .expect("written");
    assert_eq!(
        writes(&server),
        [
            "PATCH /api/v1/namespaces/vm -> 201",
            "PATCH /apis/networking.istio.io/v1alpha3/namespaces/vm/workloadgroups/vm -> 201",
        ]
    );
    assert_eq!(write::server_side_apply(&conn), Some(true));
    let words: Vec<String> = plan.changes.iter().map(Change::words).collect();
    assert_eq!(words, ["created", "created"]);
    let stored = server
        .object("networking.istio.io/v1alpha3", "WorkloadGroup", "vm", "vm")
        .expect("stored");
    assert_eq!(stored["spec"]["metadata"]["labels"]["app"], "vm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_side_apply_it_creates_then_updates_guarded_and_keeps_what_others_set() {
    let server = Server::start(scenario("modern.yaml")).await;
    let conn = connection(&server);
    write::assume_no_server_side_apply(&conn);
    let run = |object: Value, action| {
        let conn = conn.clone();
        async move {
            let mut plan = Plan::default();
            plan.push(apply_row(action, Kind::Namespace, None, "vm", object));
            write::execute(&conn, &mut plan, meshvm::flags::DryRun::None)
                .await
                .expect("written");
            plan.changes[0].words()
        }
    };
    server.reset_requests();
    let mine = namespace("vm", &json!({"app.kubernetes.io/managed-by": "meshvm"}));
    assert_eq!(run(mine.clone(), Action::Create).await, "created");
    assert_eq!(writes(&server), ["POST /api/v1/namespaces -> 201"]);

    // Another manager labels it; meshvm then adds a label of its own.
    let mut theirs = server.object("v1", "Namespace", "", "vm").unwrap();
    theirs["metadata"]["labels"]["team"] = json!("platform");
    server.load([theirs]).unwrap();
    let before = server.object("v1", "Namespace", "", "vm").unwrap();
    server.reset_requests();
    let more = namespace(
        "vm",
        &json!({"app.kubernetes.io/managed-by": "meshvm", "istio-injection": "disabled"}),
    );
    assert_eq!(run(more.clone(), Action::Update).await, "updated");
    assert_eq!(writes(&server), ["PUT /api/v1/namespaces/vm -> 200"]);
    let after = server.object("v1", "Namespace", "", "vm").unwrap();
    let labels = &after["metadata"]["labels"];
    assert_eq!(
        labels["team"], "platform",
        "another manager's label stays: {after}"
    );
    assert_eq!(labels["istio-injection"], "disabled", "{after}");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meshvm", "{after}");
    assert_ne!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    // Nothing differs: a read, no write.
    server.reset_requests();
    assert_eq!(run(more, Action::Update).await, "unchanged");
    assert!(writes(&server).is_empty(), "{:?}", writes(&server));
    assert_eq!(write::server_side_apply(&conn), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_side_apply_a_server_dry_run_stores_nothing() {
    let server = Server::start(scenario("modern.yaml")).await;
    let conn = connection(&server);
    write::assume_no_server_side_apply(&conn);
    let count = server.object_count();
    server.reset_requests();
    let mut plan = Plan::default();
    plan.push(apply_row(
        Action::Create,
        Kind::Namespace,
        None,
        "vm",
        namespace("vm", &json!({})),
    ));
    write::execute(&conn, &mut plan, meshvm::flags::DryRun::Server)
        .await
        .expect("validated");
    assert_eq!(plan.changes[0].state, State::ServerDryRun);
    let log = server.requests();
    let post = log
        .records
        .iter()
        .find(|r| r.method == "POST")
        .expect("a create");
    assert!(post.query.contains("dryRun=All"), "{post:?}");
    assert_eq!(server.object_count(), count, "nothing stored");
}

fn samples() -> String {
    repo()
        .join("tests/fixtures/istio-samples")
        .display()
        .to_string()
}

async fn prepare(
    server: &Server,
    extra: &[&str],
) -> (Result<meshvm::errors::Outcome, String>, String, String) {
    let mut argv = vec![
        "kubectl-meshvm-prepare".to_owned(),
        "--kubeconfig".to_owned(),
        server.kubeconfig_path().display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let args = meshvm::args::PrepareArgs::try_parse_from(argv).expect("flags parse");
    let opts = meshvm::prepare::Options::resolve(args).expect("flags valid");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = Box::pin(meshvm::prepare::run(&opts, &mut out, &mut err))
        .await
        .map_err(|e| e.to_string());
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_control_plane_waits_for_the_rollout_and_says_so() {
    let server = Server::start(scenario("legacy-1.4.yaml")).await;
    let dir = samples();
    let (result, out, err) = Box::pin(prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--restart-control-plane",
            "--yes",
            "--timeout",
            "30s",
        ],
    ))
    .await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    let row = out
        .lines()
        .find(|l| l.contains("istio-citadel"))
        .unwrap_or_default();
    assert!(
        row.contains("done") && row.contains("rolled out with the new CA key"),
        "{out}"
    );
    assert!(
        err.contains("note: Deployment istio-system/istio-citadel rolled out with the new CA key"),
        "{err}"
    );
    // The wait read the Deployment after the restart was sent.
    let log = server.requests();
    let patched = log
        .records
        .iter()
        .position(|r| r.method == "PATCH" && r.path.ends_with("/deployments/istio-citadel"))
        .expect("restart sent");
    assert!(
        log.records[patched..]
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/deployments/istio-citadel")),
        "{:?}",
        log.records
    );
}

/// prepare and doctor --fix on Kubernetes 1.14, which refuses server-side apply with 415:
/// prepare knows the release from /version (read with its first reads) and creates by POST from
/// what it read, without asking for an apply or reading again; so does doctor --fix, whose
/// snapshot reads /version beside its lists; a re-run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_and_doctor_fix_on_kubernetes_1_14_fall_back_from_server_side_apply() {
    let server = Server::start(scenario("legacy-1.4.yaml").with_kube_version("1.14")).await;
    let dir = samples();
    server.reset_requests();
    let args = ["--vm-namespace", "expandvm", "--ca-dir", dir.as_str()];
    let (result, out, err) = Box::pin(prepare(&server, &args)).await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    let log = server.requests();
    // Reads: Deployments, istio-system, cacerts, expandvm, the ServiceAccounts prepare made
    // there (the one ServiceAccount rule), its ServiceAccount (6); writes: a POST each for
    // cacerts, the namespace and the ServiceAccount (3).
    assert_eq!(log.api_calls(), 9, "{:?}", log.counts());
    assert_eq!(log.count("get", "/version"), 1, "{:?}", log.counts());
    assert!(
        log.records.iter().all(|r| r.method != "PATCH"),
        "no apply asked of 1.14: {:?}",
        log.records
    );
    assert!(server.object("v1", "Namespace", "", "expandvm").is_some());
    assert!(
        server
            .object("v1", "ServiceAccount", "expandvm", "expandvm")
            .is_some()
    );
    let created = |table: &str, kind: &str| {
        table
            .lines()
            .filter(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&kind) && words.contains(&"created")
            })
            .count()
    };
    assert_eq!(created(&out, "Namespace"), 1, "{out}");
    assert_eq!(created(&out, "ServiceAccount"), 1, "{out}");
    assert_eq!(created(&out, "Secret"), 1, "{out}");
    let (again, out, err) = Box::pin(prepare(&server, &args)).await;
    again.unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    assert!(err.contains("nothing to change"), "{err}");

    server.reset_requests();
    let argv = [
        "kubectl-meshvm-doctor",
        "--kubeconfig",
        &server.kubeconfig_path().display().to_string(),
        "--fix",
        "--yes",
    ];
    let opts = meshvm::doctor::DoctorOptions::resolve(
        meshvm::args::DoctorArgs::try_parse_from(argv).expect("flags parse"),
    )
    .expect("flags valid");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    meshvm::doctor::run(&opts, &mut out, &mut err, false)
        .await
        .expect("doctor ran");
    let err = String::from_utf8(err).unwrap();
    assert!(created(&err, "DestinationRule") >= 1, "{err}");
    let log = server.requests();
    assert_eq!(log.count("get", "/version"), 1, "{:?}", log.counts());
    assert!(
        log.records
            .iter()
            .all(|r| r.status != 415 && r.method != "PATCH"),
        "no apply asked of 1.14: {:?}",
        log.records
    );
    assert!(
        server
            .object(
                "networking.istio.io/v1alpha3",
                "DestinationRule",
                "istio-system",
                "meshexpansion-dr-citadel"
            )
            .is_some(),
        "{err}"
    );
}
