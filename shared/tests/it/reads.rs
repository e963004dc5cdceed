//! meshvm reads each cell of the version matrix correctly, against kube-sim: the version each Istio
//! kind is served at (Istio 1.12's WorkloadGroup only at v1alpha3), paged lists, kinds a cluster
//! does not serve, and the legacy identity that must come from the root in `cacerts`.
//! kube-sim answers as the Kubernetes version asks (406 metadata lists before 1.15, the ClusterIP
//! refusal texts and dry-run behaviour per version, ServiceCIDR per version), expires continue
//! tokens on request, and runs Citadel as 1.4 did (CA loaded at start, secrets issued late).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;
use kube_sim::ca::SimCa;
use kube_sim::{Scenario, Server};
use meshvm::args::{BundleArgs, PrepareArgs, RegisterArgs};
use meshvm::bundle::{self, CidrSource};
use meshvm::errors::Diagnose as _;
use meshvm::flags::KubeArgs;
use meshvm::istio::IstioKind;
use meshvm::snapshot::{Kind, Snapshot};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn releases() -> PathBuf {
    repo().join("../shared/conformance/releases")
}

fn yaml_objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(Value::is_object)
        .collect()
}

async fn connect(server: &Server) -> meshvm::kube::Connection {
    let args = KubeArgs {
        kubeconfig: Some(server.kubeconfig_path().to_owned()),
        ..KubeArgs::default()
    };
    meshvm::kube::connect(&args, None).await.unwrap()
}

/// The modern scenario on Istio 1.12's own CRDs (istio/api@1.12.0): its objects moved from the
/// v1 API (which 1.12 does not serve) to v1beta1, on Kubernetes 1.22.
fn istio_1_12() -> Scenario {
    let modern = Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")]).unwrap();
    let mut objects: Vec<Value> = modern
        .objects()
        .iter()
        .cloned()
        .map(|mut o| {
            if o["apiVersion"] == "networking.istio.io/v1" {
                o["apiVersion"] = json!("networking.istio.io/v1beta1");
            }
            o
        })
        .collect();
    objects.extend(yaml_objects(
        &releases().join("istio-api-1.12.0/customresourcedefinitions.gen.yaml"),
    ));
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vm"}}));
    Scenario::empty()
        .with_kube_version("1.22")
        .with_objects(objects)
}

async fn prepare(
    server: &Server,
    extra: &[&str],
) -> (Result<meshvm::errors::Outcome, String>, String) {
    let mut argv = vec![
        "kubectl-meshvm-prepare".to_owned(),
        "--kubeconfig".to_owned(),
        server.kubeconfig_path().display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let opts =
        meshvm::prepare::Options::resolve(PrepareArgs::try_parse_from(argv).unwrap()).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = Box::pin(meshvm::prepare::run(&opts, &mut out, &mut err)).await;
    (
        result.map_err(|e| meshvm::errors::error_chain(&e)),
        String::from_utf8(err).unwrap(),
    )
}

fn bundle_options(server: &Server, dir: &Path, extra: &[&str]) -> bundle::Options {
    let mut argv: Vec<String> = vec![
        "kubectl-meshvm-bundle".into(),
        "--kubeconfig".into(),
        server.kubeconfig_path().display().to_string(),
        "-d".into(),
        dir.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    bundle::Options::resolve(BundleArgs::try_parse_from(argv).unwrap()).unwrap()
}

async fn run_bundle(
    opts: &bundle::Options,
) -> (
    Result<meshvm::errors::Outcome, bundle::Error>,
    String,
    String,
) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = bundle::run(opts, &mut out, &mut err).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Istio 1.12 (group prefers v1beta1, WorkloadGroup only at v1alpha3): prepare writes the
/// WorkloadGroup at v1alpha3, bundle and register find it, register writes the WorkloadEntry at
/// the version the group prefers for it, and doctor lists both kinds.
#[tokio::test(flavor = "multi_thread")]
async fn istio_1_12_workload_groups_are_read_and_written_where_served() {
    let server = Server::start(istio_1_12()).await;
    let conn = connect(&server).await;
    assert_eq!(
        IstioKind::WorkloadGroup
            .served_version(&conn)
            .await
            .unwrap()
            .as_deref(),
        Some("v1alpha3")
    );
    assert_eq!(
        IstioKind::WorkloadEntry
            .served_version(&conn)
            .await
            .unwrap()
            .as_deref(),
        Some("v1beta1")
    );

    let (result, stderr) = prepare(
        &server,
        &[
            "--vm-namespace",
            "vm",
            "-s",
            "vm-sa",
            "--workload-group",
            "vm",
            "--labels",
            "app=vm",
            "--network",
            "vm-net",
            "--yes",
        ],
    )
    .await;
    assert!(result.is_ok(), "{result:?}\n{stderr}");
    let wg = server
        .object("networking.istio.io/v1alpha3", "WorkloadGroup", "vm", "vm")
        .expect("the WorkloadGroup was written at v1alpha3");
    assert_eq!(wg["spec"]["template"]["serviceAccount"], "vm-sa");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let (result, _, stderr) = run_bundle(&bundle_options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "vm",
            "--workload-group",
            "vm",
            "--internal-ip",
            "10.0.0.5",
        ],
    ))
    .await;
    assert!(
        result.is_ok(),
        "{:?}\n{stderr}",
        result.err().map(|e| meshvm::errors::error_chain(&e))
    );
    let env = std::fs::read_to_string(dir.join("cluster.env")).unwrap();
    assert!(
        env.contains("SERVICE_ACCOUNT='vm-sa'") && env.contains("ISTIO_META_NETWORK='vm-net'"),
        "{env}"
    );

    let argv = [
        "kubectl-meshvm-register",
        "--kubeconfig",
        server.kubeconfig_path().to_str().unwrap(),
        "-n",
        "vm",
        "--workload-entry",
        "vm-1",
        "--address",
        "10.0.0.5",
        "--workload-group",
        "vm",
    ];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = meshvm::register::run(
        RegisterArgs::try_parse_from(argv).unwrap(),
        &mut out,
        &mut err,
    )
    .await;
    assert!(
        result.is_ok(),
        "{:?}\n{}",
        result.err().map(|e| meshvm::errors::error_chain(&e)),
        String::from_utf8_lossy(&err)
    );
    let we = server
        .object("networking.istio.io/v1beta1", "WorkloadEntry", "vm", "vm-1")
        .expect("the WorkloadEntry was written");
    assert_eq!(
        we["spec"]["serviceAccount"], "vm-sa",
        "taken from the WorkloadGroup it found"
    );

    let snap = Snapshot::observe(&conn).await.unwrap();
    assert!(snap.knows(Kind::WorkloadGroup) && snap.knows(Kind::WorkloadEntry));
    assert_eq!(
        snap.of(Kind::WorkloadGroup)[0].api_version(),
        "networking.istio.io/v1alpha3"
    );
    assert_eq!(
        snap.networking_version.as_deref(),
        Some("v1beta1"),
        "DestinationRules' version, for --fix"
    );
    assert!(
        !snap.not_served.contains_key(&Kind::WorkloadGroup),
        "{:?}",
        snap.not_served
    );
    assert!(
        snap.not_served.contains_key(&Kind::MeshPolicy),
        "{:?}",
        snap.not_served
    );
}

/// On Istio 1.4 the VM kinds do not exist: doctor says so, with what discovery found, instead of
/// passing on an empty list.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_which_kinds_the_cluster_does_not_serve() {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")]).unwrap(),
    )
    .await;
    let conn = connect(&server).await;
    let snap = Snapshot::observe(&conn).await.unwrap();
    assert_eq!(
        snap.not_served
            .get(&Kind::WorkloadEntry)
            .map(String::as_str),
        Some("networking.istio.io serves v1alpha3, but none of those versions has workloadentries")
    );
    assert_eq!(
        snap.not_served
            .get(&Kind::PeerAuthentication)
            .map(String::as_str),
        // Istio 1.4.2's crd-14.yaml serves AuthorizationPolicy there, not PeerAuthentication.
        Some(
            "security.istio.io serves v1beta1, but none of those versions has peerauthentications"
        )
    );
    assert!(snap.knows(Kind::MeshPolicy) && snap.knows(Kind::DestinationRule));
    let report = meshvm::doctor::run_all(&[snap], &meshvm::doctor::CheckOptions::default());
    let we = report
        .findings
        .iter()
        .find(|f| f.check == "vm.workloadentry-identity")
        .unwrap();
    assert!(
        we.message
            .contains("does not serve WorkloadEntries: networking.istio.io serves v1alpha3"),
        "{}",
        we.message
    );
}

/// More DestinationRules than one page: doctor reads them all, 500 at a time.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_reads_long_lists_page_by_page() {
    let rules = many_rules(1203);
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")])
            .unwrap()
            .with_objects(rules),
    )
    .await;
    let conn = connect(&server).await;
    server.reset_requests();
    let snap = Snapshot::observe(&conn).await.unwrap();
    let names: Vec<&str> = snap
        .of(Kind::DestinationRule)
        .iter()
        .map(meshvm::snapshot::Obj::name)
        .filter(|n| n.starts_with('r') && n.len() == 5)
        .collect();
    assert_eq!(names.len(), 1203);
    let pages = server
        .requests()
        .records
        .iter()
        .filter(|r| r.path == "/apis/networking.istio.io/v1/destinationrules")
        .count();
    assert!(
        pages >= 3,
        "{pages} list requests for 1203+ objects at 500 per page"
    );
}

/// A legacy cluster whose Citadel the test plays itself: the Istio 1.4 scenario without the
/// istio-citadel Deployment (Pilot still tells the era), so `istio.<sa>` is what the test loads.
async fn legacy_without_citadel() -> Server {
    let base = Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")]).unwrap();
    let mut objects: Vec<Value> = base
        .objects()
        .iter()
        .filter(|o| !(o["kind"] == "Deployment" && o["metadata"]["name"] == "istio-citadel"))
        .cloned()
        .collect();
    objects
        .push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}));
    objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "expandvm", "namespace": "expandvm"}}));
    Server::start(
        Scenario::empty()
            .with_crds("istio-1.4")
            .with_objects(objects),
    )
    .await
}

fn secret(ns: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) -> Value {
    let text: BTreeMap<&str, String> = data
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8(v.clone()).unwrap()))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/key-and-cert",
           "metadata": {"name": name, "namespace": ns}, "stringData": text})
}

/// `cacerts` as far as bundle reads it: the root Citadel loads at its next start.
fn cacerts(root: &SimCa) -> Value {
    secret(
        "istio-system",
        "cacerts",
        &BTreeMap::from([("root-cert.pem".to_owned(), root.root_pem().into_bytes())]),
    )
}

fn identity(ca: &SimCa) -> Value {
    secret(
        "expandvm",
        "istio.expandvm",
        &ca.issue_workload("cluster.local", "expandvm", "expandvm"),
    )
}

/// `prepare` wrote a new `cacerts`, Citadel has not restarted: the secret carries the old root.
/// With `--wait 0` bundle fails at once, names both roots and prints the fix with the user's
/// connection flags; nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn an_identity_from_the_old_root_is_refused_with_the_fix() {
    let server = legacy_without_citadel().await;
    let (old, new) = (
        SimCa::self_signed("cluster.local"),
        SimCa::self_signed("cluster.local"),
    );
    server.load(vec![cacerts(&new), identity(&old)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let opts = bundle_options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--wait",
            "0",
        ],
    );
    let started = Instant::now();
    let (result, _, _) = run_bundle(&opts).await;
    assert!(
        // The default --wait is 60 s: far below it, with room for a loaded CI machine.
        started.elapsed() < Duration::from_secs(20),
        "--wait 0 does not wait"
    );
    let err = result.unwrap_err();
    let bundle::Error::IdentityOldRoot { restart, .. } = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    assert!(
        text.contains("is issued under root O=cluster.local")
            && text.matches("SHA-256").count() == 2,
        "{text}"
    );
    assert_eq!(
        restart,
        &format!(
            "kubectl rollout restart deployment/istio-citadel -n istio-system --kubeconfig {}",
            server.kubeconfig_path().display()
        )
    );
    assert!(err.hint().unwrap().contains("--restart-control-plane"));
    assert!(!dir.exists(), "nothing written");
}

/// Citadel restarts and re-issues the secret under the new root while bundle waits.
#[tokio::test(flavor = "multi_thread")]
async fn bundle_waits_for_citadel_to_reissue_under_the_new_root() {
    let server = std::sync::Arc::new(legacy_without_citadel().await);
    let (old, new) = (
        SimCa::self_signed("cluster.local"),
        SimCa::self_signed("cluster.local"),
    );
    server.load(vec![cacerts(&new), identity(&old)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let opts = bundle_options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--wait",
            "10s",
        ],
    );
    let citadel = {
        let server = server.clone();
        let reissued = identity(&new);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.load(vec![reissued]).unwrap();
        })
    };
    let started = Instant::now();
    let (result, _, stderr) = run_bundle(&opts).await;
    let elapsed = started.elapsed();
    citadel.await.unwrap();
    assert!(
        result.is_ok(),
        "{:?}\n{stderr}",
        result.err().map(|e| meshvm::errors::error_chain(&e))
    );
    assert!(
        // Not the whole --wait 10s: it stopped when the secret came (room left for a loaded CI).
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(9),
        "{elapsed:?}: waited for the re-issued secret, and not longer"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
        new.root_pem(),
        "the bundle carries the root in cacerts"
    );
}

/// The secret appears only after bundle started (Citadel writes it asynchronously); a secret
/// that never comes is reported after `--wait`, as missing.
#[tokio::test(flavor = "multi_thread")]
async fn bundle_waits_for_the_secret_and_reports_when_it_never_comes() {
    let server = std::sync::Arc::new(legacy_without_citadel().await);
    let ca = SimCa::self_signed("cluster.local");
    server.load(vec![cacerts(&ca)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (result, _, _) = run_bundle(&bundle_options(
        &server,
        &tmp.path().join("never"),
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--wait",
            "1s",
        ],
    ))
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, bundle::Error::IdentityMissing { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("not found after waiting 1s"),
        "{err}"
    );
    assert!(!tmp.path().join("never").exists());

    let later = {
        let server = server.clone();
        let issued = identity(&ca);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            server.load(vec![issued]).unwrap();
        })
    };
    let dir = tmp.path().join("b");
    let (result, _, stderr) = run_bundle(&bundle_options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--wait",
            "10s",
        ],
    ))
    .await;
    later.await.unwrap();
    assert!(
        result.is_ok(),
        "{:?}\n{stderr}",
        result.err().map(|e| meshvm::errors::error_chain(&e))
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
        ca.root_pem()
    );
}

// ---- Waiting for kube-sim features from other branches ----------------------------------------

/// Kubernetes 1.14 serves no `meta.k8s.io/v1` metadata lists: era detection (bundle) and
/// `prepare --delete` offer plain JSON as the second choice of the same request, so 1.14 answers
/// with the full list at once — no 406, no second request.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_1_14_metadata_lists_fall_back_to_full_lists() {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")])
            .unwrap()
            .with_kube_version("1.14"),
    )
    .await;
    let conn = connect(&server).await;
    assert_eq!(
        meshvm::istio::detect_era(&conn, "istio-system")
            .await
            .unwrap(),
        Some(meshvm::istio::Era::Legacy)
    );
    assert_eq!(
        meshvm::istio::detect_era(&conn, "istio-system")
            .await
            .unwrap(),
        Some(meshvm::istio::Era::Legacy)
    );
    let log = server.requests();
    let lists: Vec<_> = log
        .records
        .iter()
        .filter(|r| r.path == "/apis/apps/v1/namespaces/istio-system/deployments")
        .collect();
    assert!(
        lists.len() == 2 && lists.iter().all(|r| r.status == 200),
        "one list per detection, none refused: {lists:#?}"
    );
    assert_eq!(
        lists[0].accept,
        meshvm::read::METADATA_OR_FULL_LIST,
        "metadata where served, else the full list"
    );
    let (result, stderr) = prepare(
        &server,
        &[
            "--delete",
            "--vm-namespace",
            "sample",
            "--force",
            "--dry-run=server",
            "--yes",
        ],
    )
    .await;
    assert!(result.is_ok(), "{result:?}\n{stderr}");
}

fn many_rules(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": format!("r{i:04}"), "namespace": "istio-system"},
                   "spec": {"host": format!("svc{i}.default.svc.cluster.local")}})
        })
        .collect()
}

/// A continue token that expires mid-list (etcd compacted): doctor starts the list over once and
/// reads everything.
#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_continue_token_restarts_doctors_list_once() {
    let server = std::sync::Arc::new(
        Server::start(
            Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")])
                .unwrap()
                .with_objects(many_rules(1100)),
        )
        .await,
    );
    let conn = connect(&server).await;
    server.reset_requests();
    server.set_latency(Duration::from_millis(100));
    // With simver's lever: the third page of a list (its second continue) is refused …
    server.expire_continue_tokens(kube_sim::ContinueExpiry::AfterPages(1));
    // … until the first 410 was answered (then compaction is over).
    let lift = {
        let server = server.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !server.requests().records.iter().any(|r| r.status == 410)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server.expire_continue_tokens(kube_sim::ContinueExpiry::Never);
        })
    };
    let snap = Snapshot::observe(&conn).await.unwrap();
    lift.await.unwrap();
    assert!(snap.of(Kind::DestinationRule).len() >= 1100);
    let pages: Vec<(String, u16)> = server
        .requests()
        .records
        .iter()
        .filter(|r| r.path == "/apis/networking.istio.io/v1/destinationrules")
        .map(|r| (r.query.clone(), r.status))
        .collect();
    assert_eq!(
        pages
            .iter()
            .filter(|(q, _)| !q.contains("continue="))
            .count(),
        2,
        "the list started over once: {pages:?}"
    );
}

/// A continue token that expires again after the restart: a clear error, not a partial list.
#[tokio::test(flavor = "multi_thread")]
async fn a_continue_token_that_keeps_expiring_is_a_clear_error() {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")])
            .unwrap()
            .with_objects(many_rules(1100)),
    )
    .await;
    server.expire_continue_tokens(kube_sim::ContinueExpiry::AfterPages(1));
    let conn = connect(&server).await;
    let err = Snapshot::observe(&conn).await.unwrap_err();
    let text = meshvm::errors::error_chain(&err);
    assert!(
        text.contains("its continue token expired twice, 410 Expired"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("run the command again"));
}

/// A cluster where `bundle` (legacy era) finds the VM's identity, on Kubernetes `version`: the
/// Istio 1.4 scenario up to 1.21 (its CRDs are apiextensions v1beta1), beyond that the modern
/// scenario with `--era legacy` and a Citadel-style `istio.expandvm` the test issues itself. The
/// Service range is a /12, so a range the API server names differs from the /16 guess.
async fn legacy_bundle_cluster(version: &str) -> (Server, Vec<&'static str>) {
    let vm = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
    ];
    let minor: u32 = version.trim_start_matches("1.").parse().unwrap();
    if minor <= 21 {
        let text = std::fs::read_to_string(repo().join("tests/scenarios/legacy-1.4.yaml"))
            .unwrap()
            .replace("serviceCIDR: 172.16.0.0/16", "serviceCIDR: 172.16.0.0/12");
        let server = Server::start(
            Scenario::from_yaml(&text)
                .unwrap()
                .with_kube_version(version)
                .with_objects(vm),
        )
        .await;
        wait_for_secret(&server, "expandvm", "istio.expandvm").await;
        return (server, vec![]);
    }
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")])
            .unwrap()
            .with_kube_version(version)
            .with_objects(vm),
    )
    .await;
    let ca = match server.object("v1", "Secret", "istio-system", "cacerts") {
        Some(cacerts) => {
            let secret: k8s_openapi::api::core::v1::Secret =
                serde_json::from_value(cacerts).unwrap();
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            SimCa::from_cacerts(&data).unwrap()
        }
        None => SimCa::self_signed("cluster.local"),
    };
    server.load(vec![identity(&ca)]).unwrap();
    (
        server,
        vec!["--era", "legacy", "--gateway-ip", "203.0.113.10"],
    )
}

async fn wait_for_secret(server: &Server, ns: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.object("v1", "Secret", ns, name).is_none() {
        assert!(Instant::now() < deadline, "{ns}/{name} never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per Kubernetes version, where ISTIO_SERVICE_CIDR comes from when the ServiceCIDR API cannot
/// be read: the refusal of the probe Service names the range, checked on a dry run from 1.23
/// and only on a real create before (which the API server refuses too: nothing is created).
/// 1.33's MultiCIDR allocator names one ServiceCIDR's range on a dry run
/// (k/k cidrallocator.go `MetaAllocator.DryRun`): bundle warns it may be one of several.
#[tokio::test(flavor = "multi_thread")]
async fn service_cidr_from_the_apiservers_refusal_per_version() {
    for (version, cidr, dry_run_only) in [
        ("1.14", "172.16.0.0/12", false),
        ("1.16", "172.16.0.0/12", false),
        ("1.22", "10.96.0.0/12", false),
        ("1.28", "10.96.0.0/12", true),
        ("1.33", "10.96.0.0/12", true),
    ] {
        let (server, extra) = legacy_bundle_cluster(version).await;
        // A namespace-scoped user: the cluster-scoped ServiceCIDR is not readable.
        server.deny("get", "servicecidrs.networking.k8s.io", None);
        server.reset_requests();
        let tmp = tempfile::tempdir().unwrap();
        let mut flags = vec![
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "-o",
            "json",
        ];
        flags.extend(&extra);
        let (result, stdout, stderr) =
            run_bundle(&bundle_options(&server, &tmp.path().join("b"), &flags)).await;
        assert!(
            result.is_ok(),
            "{version}: {:?}\n{stderr}",
            result.err().map(|e| meshvm::errors::error_chain(&e))
        );
        let v: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            v["serviceCidr"]["source"],
            serde_json::to_value(CidrSource::ApiserverRefusal).unwrap(),
            "{version}: {stderr}"
        );
        assert_eq!(
            v["serviceCidr"]["cidr"], cidr,
            "{version}: not the /16 guess"
        );
        let env = std::fs::read_to_string(tmp.path().join("b/cluster.env")).unwrap();
        assert!(
            env.contains(&format!("ISTIO_SERVICE_CIDR={cidr}\n")),
            "{version}: {env}"
        );
        let log = server.requests();
        // One create on every release: a dry run where it is range-checked (1.23+), else — the
        // release known from /version — the real create the API server refuses.
        let creates: Vec<_> = log
            .records
            .iter()
            .filter(|r| r.verb == "create" && r.path == "/api/v1/namespaces/expandvm/services")
            .collect();
        assert_eq!(creates.len(), 1, "{version}: {creates:#?}");
        assert_eq!(
            creates[0].query.contains("dryRun=All"),
            dry_run_only,
            "{version}: {creates:#?}"
        );
        assert!(
            !log.records.iter().any(|r| r.verb == "delete"
                && r.path.starts_with("/api/v1/namespaces/expandvm/services/")),
            "{version}: no probe Service was ever created"
        );
        assert!(
            server.object_count() > 0 && !stderr.contains("was deleted at once"),
            "{version}: {stderr}"
        );
        assert_eq!(
            stderr.contains("may hold several ServiceCIDRs"),
            version == "1.33",
            "{version}: {stderr}"
        );
    }
}

/// Kubernetes 1.31–1.32 with the beta API enabled serve the ServiceCIDR only at v1beta1: bundle
/// and doctor read it there.
#[tokio::test(flavor = "multi_thread")]
async fn service_cidr_api_at_v1beta1() {
    let (server, extra) = legacy_bundle_cluster("1.31").await;
    // `kube-apiserver --runtime-config networking.k8s.io/v1beta1=true`.
    server.set_runtime_config(kube_sim::version::RuntimeConfig {
        service_cidr_beta: true,
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--vm-namespace",
        "expandvm",
        "--inbound-ports",
        "80",
        "-o",
        "json",
    ];
    flags.extend(&extra);
    let (result, stdout, stderr) =
        run_bundle(&bundle_options(&server, &tmp.path().join("b"), &flags)).await;
    assert!(result.is_ok(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["serviceCidr"]["source"], "service-cidr-api", "{stderr}");
    assert_eq!(v["serviceCidr"]["cidr"], "10.96.0.0/12");
    assert!(
        v["serviceCidr"]["detail"]
            .as_str()
            .unwrap()
            .contains("networking.k8s.io/v1beta1"),
        "{v}"
    );
    let snap = Snapshot::observe(&connect(&server).await).await.unwrap();
    assert_eq!(
        snap.of(Kind::ServiceCidr)[0].api_version(),
        "networking.k8s.io/v1beta1"
    );
}

/// The runbook's order on a real Citadel: `prepare` plugs in a new CA, Citadel keeps its old one
/// until restarted and writes `istio.<sa>` late; `bundle` refuses the old root, then after
/// `prepare --restart-control-plane` waits for the re-issued secret.
#[tokio::test(flavor = "multi_thread")]
async fn prepare_then_bundle_on_a_citadel_that_loads_its_ca_at_start() {
    // Both legacy cells: Kubernetes 1.14 (no server-side apply) and 1.16.
    for kube in ["1.14", "1.16"] {
        citadel_flow_at(kube).await;
    }
}

async fn citadel_flow_at(kube: &str) {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")])
            .unwrap()
            .with_kube_version(kube),
    )
    .await;
    let ca_dir = releases().join("../certs/samples");
    // Timestamps have second resolution: let Citadel's start be a second older than cacerts, as
    // on a real cluster, so prepare can tell that the restart is due.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (result, stderr) = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--yes",
        ],
    )
    .await;
    assert!(result.is_ok(), "{result:?}\n{stderr}");
    let tmp = tempfile::tempdir().unwrap();
    let (result, _, _) = run_bundle(&bundle_options(
        &server,
        &tmp.path().join("b"),
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--wait",
            "3s",
        ],
    ))
    .await;
    // Citadel started before cacerts existed: its secret carries its self-signed root.
    let err = result.unwrap_err();
    assert!(
        matches!(err, bundle::Error::IdentityOldRoot { .. }),
        "{kube}: {err}"
    );
    let hint = meshvm::errors::Diagnose::hint(&err).unwrap_or_default();
    assert!(
        hint.contains("kubectl rollout restart deployment/istio-citadel -n istio-system")
            && hint.contains("--restart-control-plane"),
        "{kube}: the error says to restart Citadel: {err}\nhint: {hint}"
    );
    let (result, stderr) = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--restart-control-plane",
            "--yes",
        ],
    )
    .await;
    assert!(result.is_ok(), "{result:?}\n{stderr}");
    assert!(
        stderr.contains("istio-citadel"),
        "the restart was planned: {stderr}"
    );
    let dir = tmp.path().join("ok");
    let (result, _, stderr) = run_bundle(&bundle_options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--wait",
            "60s",
        ],
    ))
    .await;
    assert!(
        result.is_ok(),
        "{:?} {stderr}",
        result.err().map(|e| meshvm::errors::error_chain(&e))
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
        std::fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap()
    );
}

// ---- Lean reads: Pods as metadata, ConfigMaps by name (issue 18) ------------------------------

/// `count` injected pods of ReplicaSet `<app>-<hash>` in `ns`, as the Deployment controller and
/// the injector leave them: one template, so only the first needs reading in full.
fn replica_pods(ns: &str, app: &str, hash: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{app}-{hash}-{i:05}"), "namespace": ns,
                    "labels": {"app": app, "pod-template-hash": hash, "security.istio.io/tlsMode": "istio"},
                    "annotations": {"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                        "uid": format!("uid-{app}-{hash}"), "controller": true}]},
                "spec": {"containers": [
                    {"name": app, "image": format!("example.com/{app}:1"),
                     "ports": [{"name": "http-web", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0"}]}})
        })
        .collect()
}

/// The shop: three Deployments of 7 pods behind Services with a named targetPort, a
/// StatefulSet mid-rollout (two revisions), a pod of one ReplicaSet that was not injected, and
/// a bare pod: 7 pod templates in all.
fn shop() -> (Vec<Value>, Vec<&'static str>) {
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}})];
    for (app, hash) in [
        ("cart", "6d4cf56db6"),
        ("web", "7f9c8b6d5e"),
        ("pay", "5b8d7c9f4a"),
    ] {
        objects.extend(replica_pods("shop", app, hash, 7));
        objects.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": app, "namespace": "shop"},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http-web"}]}}));
    }
    // A pod the injector skipped (created while the webhook was down): a template of its own.
    let mut plain = replica_pods("shop", "web", "7f9c8b6d5e", 8).pop().unwrap();
    plain["metadata"]["annotations"] = json!({});
    plain["spec"]["containers"].as_array_mut().unwrap().pop();
    objects.push(plain);
    for (i, rev) in ["db-5d8f7", "db-5d8f7", "db-7c6b9"].iter().enumerate() {
        let mut pod = replica_pods("shop", "db", "x", 1).pop().unwrap();
        pod["metadata"]["name"] = json!(format!("db-{i}"));
        pod["metadata"]["labels"] = json!({"app": "db", "controller-revision-hash": rev});
        pod["metadata"]["ownerReferences"][0]["kind"] = json!("StatefulSet");
        pod["metadata"]["ownerReferences"][0]["name"] = json!("db");
        objects.push(pod);
    }
    let mut bare = replica_pods("shop", "debug", "x", 1).pop().unwrap();
    bare["metadata"]["name"] = json!("debug");
    bare["metadata"]["ownerReferences"] = json!(null);
    objects.push(bare);
    let read_in_full = vec![
        "/api/v1/namespaces/shop/pods/cart-6d4cf56db6-00000",
        "/api/v1/namespaces/shop/pods/db-0",
        "/api/v1/namespaces/shop/pods/db-2",
        "/api/v1/namespaces/shop/pods/debug",
        "/api/v1/namespaces/shop/pods/pay-5b8d7c9f4a-00000",
        "/api/v1/namespaces/shop/pods/web-7f9c8b6d5e-00000",
        "/api/v1/namespaces/shop/pods/web-7f9c8b6d5e-00007",
    ];
    (objects, read_in_full)
}

/// The doctor report of one snapshot, as `-o json` writes it.
fn report_json(snap: Snapshot) -> String {
    let report = meshvm::doctor::run_all(
        &[snap],
        &meshvm::doctor::CheckOptions {
            now: Some(1_800_000_000),
            ..meshvm::doctor::CheckOptions::default()
        },
    );
    let mut out = Vec::new();
    report
        .write(&mut out, meshvm::args::DoctorOutput::Json, false)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Kubernetes ≥ 1.15: doctor lists every Pod as metadata only and GETs one pod per template
/// (the one the workload checks judge, and whose ports its siblings share); no ConfigMap list
/// without a name. The report is the one full Pod lists give (GETs refused → full lists).
#[tokio::test(flavor = "multi_thread")]
async fn doctor_reads_pods_as_metadata_and_one_pod_per_template_in_full() {
    let (objects, read_in_full) = shop();
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")])
            .unwrap()
            .with_objects(objects),
    )
    .await;
    let conn = connect(&server).await;
    server.reset_requests();
    let lean = Snapshot::observe(&conn).await.unwrap();
    let log = server.requests();
    let pod_lists: Vec<_> = log
        .records
        .iter()
        .filter(|r| r.verb == "list" && r.path == "/api/v1/pods")
        .collect();
    assert!(!pod_lists.is_empty());
    for r in &pod_lists {
        assert!(
            r.status == 200
                && r.accept
                    .contains("as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            "a Pod list not as metadata: {r:?}"
        );
    }
    let got: Vec<&str> = log
        .records
        .iter()
        .filter(|r| r.verb == "get" && r.path.contains("/pods/"))
        .map(|r| r.path.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, read_in_full, "one GET per pod template");
    for r in &log.records {
        if r.path == "/api/v1/configmaps" {
            assert!(
                r.query.contains("fieldSelector=metadata.name%3D")
                    || r.query.contains("fieldSelector=metadata.name="),
                "an unfiltered ConfigMap list: {r:?}"
            );
        }
    }
    let shop: Vec<&meshvm::snapshot::Obj> = lean
        .of(Kind::Pod)
        .iter()
        .filter(|p| p.namespace() == "shop")
        .collect();
    assert_eq!(shop.len(), 21 + 1 + 3 + 1, "every pod is read");
    let sibling = shop
        .iter()
        .find(|p| p.name() == "cart-6d4cf56db6-00003")
        .unwrap();
    let judged = shop
        .iter()
        .find(|p| p.name() == "cart-6d4cf56db6-00000")
        .unwrap();
    // A sibling shares the spec of its template's pod read in full (one copy, not one each),
    // and keeps its own name.
    assert!(std::ptr::eq(
        sibling.pod_spec().unwrap(),
        judged.pod_spec().unwrap()
    ));
    assert_eq!(
        sibling.to_value()["spec"]["containers"][0]["ports"],
        json!([{"name": "http-web", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        sibling.to_value()["metadata"]["name"],
        "cart-6d4cf56db6-00003"
    );
    assert_eq!(
        judged.to_value()["spec"]["containers"][0]["image"],
        "example.com/cart:1"
    );
    assert!(lean.knows(Kind::ConfigMap));
    let cms: Vec<String> = lean
        .of(Kind::ConfigMap)
        .iter()
        .map(meshvm::snapshot::Obj::ns_name)
        .collect();
    assert!(
        cms.contains(&"istio-system/istio".to_string())
            && cms.contains(&"istio-system/istio-sidecar-injector".to_string()),
        "{cms:?}"
    );

    // The same cluster read with full Pod lists (a role without `get pods`) reports the same.
    server.deny("get", "pods", None);
    server.reset_requests();
    let full = Snapshot::observe(&connect(&server).await).await.unwrap();
    assert!(
        server
            .requests()
            .records
            .iter()
            .any(|r| r.verb == "list" && r.path == "/api/v1/pods" && !r.accept.contains("as=")),
        "a refused GET falls back to the full list"
    );
    assert_eq!(full.of(Kind::Pod).len(), lean.of(Kind::Pod).len());
    assert_eq!(report_json(lean), report_json(full));
}

/// Kubernetes 1.14 serves no `meta.k8s.io/v1` metadata list (its v1beta1 one carries no
/// continue token): asked for metadata or else JSON, it sends full pages, 500 at a time, and
/// doctor GETs no pod.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_lists_pods_in_full_on_kubernetes_1_14() {
    let mut pods = replica_pods("sample", "web", "7f9c8b6d5e", 520);
    pods.extend(replica_pods("sample", "cart", "6d4cf56db6", 3));
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")])
            .unwrap()
            .with_kube_version("1.14")
            .with_objects(pods),
    )
    .await;
    let conn = connect(&server).await;
    server.reset_requests();
    let snap = Snapshot::observe(&conn).await.unwrap();
    let log = server.requests();
    let lists: Vec<(u16, bool)> = log
        .records
        .iter()
        .filter(|r| r.verb == "list" && r.path == "/api/v1/pods")
        .map(|r| (r.status, r.accept.contains("as=PartialObjectMetadataList")))
        .collect();
    // Metadata or else plain JSON, in one request per page: 1.14 answers with full pages at
    // once (no 406 and no second list), and no pod is read again.
    assert!(
        lists.len() >= 2 && lists.iter().all(|l| *l == (200, true)),
        "full pages, each asked for as metadata or JSON: {lists:?}"
    );
    assert!(
        log.records
            .iter()
            .filter(|r| r.path == "/api/v1/pods")
            .all(|r| r.accept.ends_with(",application/json")),
        "every page offers plain JSON as the second choice"
    );
    assert_eq!(
        log.records
            .iter()
            .filter(|r| r.verb == "get" && r.path.contains("/pods/"))
            .count(),
        0
    );
    let sample: Vec<_> = snap
        .of(Kind::Pod)
        .iter()
        .filter(|p| p.namespace() == "sample" && p.label("pod-template-hash").is_some())
        .collect();
    assert_eq!(sample.len(), 523);
    assert!(
        sample
            .iter()
            .all(|p| p.to_value()["spec"]["containers"][0]["readinessProbe"].is_object()),
        "full specs"
    );
    // Read whole, the pods of one template still hold one spec between them, as the pods of a
    // metadata list do.
    let web: Vec<_> = sample
        .iter()
        .filter(|p| p.label("app") == Some("web"))
        .collect();
    assert!(
        web.iter()
            .all(|p| std::ptr::eq(p.pod_spec().unwrap(), web[0].pod_spec().unwrap()))
    );
    assert!(!std::ptr::eq(
        web[0].pod_spec().unwrap(),
        sample
            .iter()
            .find(|p| p.label("app") == Some("cart"))
            .unwrap()
            .pod_spec()
            .unwrap()
    ));
    assert_eq!(web[1].name(), "web-7f9c8b6d5e-00001");
}

/// A role that may not list ConfigMaps by name still reads the injector by GET: ConfigMaps stay
/// known, and a note says what is left out and where the role is; with no ConfigMap read at all
/// they are refused, as a refused list was.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_config_map_read_leaves_out_only_what_it_reads() {
    let server =
        Server::start(Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")]).unwrap())
            .await;
    server.deny("list", "configmaps", None);
    let snap = Snapshot::observe(&connect(&server).await).await.unwrap();
    assert!(snap.knows(Kind::ConfigMap) && !snap.refused.contains_key(&Kind::ConfigMap));
    let names: Vec<&str> = snap
        .of(Kind::ConfigMap)
        .iter()
        .map(meshvm::snapshot::Obj::name)
        .collect();
    assert_eq!(names, ["istio-sidecar-injector"]);
    let notes: Vec<String> = snap.notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes[0].starts_with("ConfigMaps named istio not read, so the mesh config")
            && notes[0].contains("forbidden")
            && notes[0]
                .ends_with("`kubectl meshvm doctor --print-rbac` prints the role doctor needs"),
        "{notes:?}"
    );
    server.deny("get", "configmaps", None);
    let snap = Snapshot::observe(&connect(&server).await).await.unwrap();
    assert!(!snap.knows(Kind::ConfigMap));
    assert!(
        snap.refused[&Kind::ConfigMap].contains("forbidden"),
        "{:?}",
        snap.refused
    );
    assert!(snap.notes.is_empty(), "{:?}", snap.notes);
}

/// ConfigMaps are read by name: a revision's mesh config and injector (from its `istiod-<rev>`
/// Deployment), every namespace's `istio-ca-root-cert`; no other ConfigMap is transferred.
#[tokio::test(flavor = "multi_thread")]
async fn config_maps_are_read_by_name_revisions_included() {
    let cm = |ns: &str, name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {"mesh": "rootNamespace: istio-system\n"}})
    };
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")])
            .unwrap()
            .with_objects(vec![
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "istiod-canary", "namespace": "istio-system"},
                    "spec": {"selector": {"matchLabels": {"app": "istiod"}},
                        "template": {"metadata": {"labels": {"app": "istiod"}},
                            "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.24.0"}]}}}}),
                cm("istio-system", "istio-canary"),
                cm("istio-system", "istio-sidecar-injector-canary"),
                cm("istio-system", "istio-leader"),
                cm("sample", "istio-ca-root-cert"),
                cm("sample", "app-config"),
                cm("sample", "istio-sidecar-injector"),
            ]),
    )
    .await;
    server.reset_requests();
    let snap = Snapshot::observe(&connect(&server).await).await.unwrap();
    let names: Vec<String> = snap
        .of(Kind::ConfigMap)
        .iter()
        .map(meshvm::snapshot::Obj::ns_name)
        .collect();
    for want in [
        "istio-system/istio",
        "istio-system/istio-sidecar-injector",
        "istio-system/istio-canary",
        "istio-system/istio-sidecar-injector-canary",
        "sample/istio-ca-root-cert",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    for never in [
        "sample/app-config",
        "istio-system/istio-leader",
        "sample/istio-sidecar-injector",
    ] {
        assert!(!names.iter().any(|n| n == never), "{never} in {names:?}");
    }
    let reads: BTreeSet<String> = server
        .requests()
        .records
        .iter()
        .filter(|r| r.path.ends_with("/configmaps") || r.path.contains("/configmaps/"))
        .map(|r| format!("{} {}?{}", r.verb, r.path, r.query))
        .collect();
    assert_eq!(
        reads.into_iter().collect::<Vec<_>>(),
        [
            "get /api/v1/namespaces/istio-system/configmaps/istio-canary?",
            "get /api/v1/namespaces/istio-system/configmaps/istio-sidecar-injector-canary?",
            "get /api/v1/namespaces/istio-system/configmaps/istio-sidecar-injector?",
            "list /api/v1/configmaps?&fieldSelector=metadata.name%3Distio&limit=500",
            "list /api/v1/configmaps?&fieldSelector=metadata.name%3Distio-ca-root-cert&limit=500",
            "list /api/v1/configmaps?&fieldSelector=metadata.name%3Dprometheus&limit=500",
        ]
    );
}
