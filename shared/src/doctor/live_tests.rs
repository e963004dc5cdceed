//! Doctor against kube-sim: the scenarios in tests/scenarios, `--fix`, and paging at scale.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;
use crate::args::DoctorArgs;
use clap::Parser as _;
use kube_sim::{Scenario, Server};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(name)
}

async fn sim(files: &[&str]) -> Server {
    let paths: Vec<PathBuf> = files.iter().map(|f| scenario(f)).collect();
    Server::start(Scenario::from_files(&paths).unwrap()).await
}

fn opts(server: &Server, extra: &[&str]) -> DoctorOptions {
    let kubeconfig = server.kubeconfig_path().to_str().unwrap().to_string();
    let mut argv = vec![
        "kubectl-meshvm-doctor",
        "--kubeconfig",
        kubeconfig.as_str(),
        "-o",
        "json",
    ];
    argv.extend_from_slice(extra);
    DoctorOptions::resolve(DoctorArgs::try_parse_from(argv).unwrap()).unwrap()
}

async fn doctor(server: &Server, extra: &[&str]) -> (Outcome, serde_json::Value, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run(&opts(server, extra), &mut out, &mut err, false)
        .await
        .unwrap();
    (
        outcome,
        serde_json::from_slice(&out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn with(report: &serde_json::Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_scenario_fails_then_fix_makes_it_pass() {
    let server = sim(&["legacy-1.4.yaml"]).await;
    let (outcome, report, _) = doctor(&server, &[]).await;
    assert_eq!(outcome, Outcome::Findings, "{report:#}");
    assert_eq!(report["era"], "legacy");
    assert_eq!(report["autoMtls"], false);
    let failed = with(&report, "fail");
    assert!(
        failed.contains(&"mtls.default-dr".into())
            && failed.contains(&"mtls.control-plane-plaintext".into()),
        "{report:#}"
    );

    let (outcome, report, err) = doctor(&server, &["--fix", "--yes"]).await;
    assert!(
        err.lines()
            .any(|l| l.contains("meshexpansion-dr-citadel") && l.contains("created")),
        "{err}"
    );
    assert_eq!(outcome, Outcome::Success, "{report:#}\n{err}");
    // Applied as additive objects, owned by meshvm: a second --fix has nothing to do.
    let (_, _, err) = doctor(&server, &["--fix", "--yes"]).await;
    assert!(err.contains("nothing to apply"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_ready_overlay_passes() {
    let server = sim(&["legacy-1.4.yaml", "legacy-1.4-strict-ready.yaml"]).await;
    let (_, report, _) = doctor(&server, &[]).await;
    let failed = with(&report, "fail");
    assert!(!failed.contains(&"mtls.default-dr".into()), "{report:#}");
    // The runbook's Citadel rule is there; only Pilot's 15011 (forwarded as raw TCP by the
    // mesh-expansion Gateway) may still be named.
    for f in report["findings"].as_array().unwrap() {
        if f["check"] == "mtls.control-plane-plaintext" && f["severity"] == "fail" {
            assert_eq!(f["object"], "Service istio-system/istio-pilot", "{f:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_scenarios_name_their_check() {
    let cases = [
        ("broken-gateway-no-address.yaml", "gateway.address", "fail"),
        (
            "broken-gateway-hostname-only.yaml",
            "gateway.address",
            "warn",
        ),
        ("broken-gateway-missing-8060.yaml", "gateway.ports", "fail"),
        (
            "broken-local-dr-disable-strict.yaml",
            "mtls.policy-consistency",
            "fail",
        ),
        (
            "broken-vm-service-no-sa-annotation.yaml",
            "vm.registered-identity",
            "fail",
        ),
        ("broken-expired-cacerts.yaml", "ca.valid", "fail"),
    ];
    for (file, check, severity) in cases {
        let server = sim(&[file]).await;
        let (_, report, _) = doctor(&server, &[]).await;
        assert!(
            with(&report, severity).contains(&check.to_string()),
            "{file}: {report:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_scenario_is_read_and_judged() {
    let server = sim(&["modern.yaml"]).await;
    let (_, report, _) = doctor(&server, &[]).await;
    assert_eq!(report["era"], "modern", "{report:#}");
    assert_eq!(report["autoMtls"], true);
    for check in ["mtls.default-dr", "gateway.address", "gateway.ports"] {
        assert!(
            !with(&report, "fail").contains(&check.to_string()),
            "{check}: {report:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The issue asks for the run time to be noted: print it with `--nocapture`.
#[allow(clippy::print_stderr)]
async fn ten_thousand_rules_one_paged_list_per_kind() {
    let rules = (0..10_000).map(|i| {
        serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "DestinationRule",
            "metadata": {"name": format!("r{i}"), "namespace": "sample"},
            "spec": {"host": format!("svc{i}.sample.svc.cluster.local"), "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
        })
    });
    let paths = [scenario("legacy-1.4.yaml")];
    let server = Server::start(Scenario::from_files(&paths).unwrap().with_objects(rules)).await;
    server.reset_requests();
    let conn = crate::kube::connect(
        &KubeArgs {
            kubeconfig: Some(server.kubeconfig_path().to_path_buf()),
            ..KubeArgs::default()
        },
        None,
    )
    .await
    .unwrap();
    let start = Instant::now();
    let snap = Snapshot::observe(&conn).await.unwrap();
    let observed = start.elapsed();
    let report = run_all(&[snap], &CheckOptions::default());
    let total = start.elapsed();
    let log = server.requests();
    let drs = log.count(
        "list",
        "/apis/networking.istio.io/v1alpha3/destinationrules",
    );
    // The scenario's own rules (the three the 1.4 install ships) come on top of the 10 000.
    let total_rules: usize = 10_000 + 3;
    assert_eq!(
        drs,
        total_rules.div_ceil(500),
        "10 003 rules in pages of 500"
    );
    // Every other kind is one page; the only GETs of single objects are the CA's two Secrets
    // and the ConfigMaps the checks read, by name rather than listing every Secret and
    // ConfigMap (the other non-discovery GETs are lists of kinds the 1.4 API does not serve,
    // answered 404).
    let by_name = |p: &str| {
        matches!(
            p,
            "/api/v1/namespaces/istio-system/secrets/cacerts"
                | "/api/v1/namespaces/istio-system/secrets/istio-ca-secret"
                | "/api/v1/namespaces/istio-system/configmaps/istio-sidecar-injector"
                | "/api/v1/namespaces/kube-system/configmaps/kube-dns"
                | "/api/v1/namespaces/kube-system/configmaps/coredns"
        )
    };
    assert!(
        log.records
            .iter()
            .all(|r| r.verb != "get" || discovery(&r.path) || r.status == 404 || by_name(&r.path)),
        "{:?}",
        log.counts()
    );
    let lists = log.records.iter().filter(|r| r.verb == "list").count();
    // 20 more DestinationRule pages; Pods asked as metadata first (406 on this 1.14 cluster);
    // ConfigMaps listed by name three times instead of once.
    assert!(lists <= 16 + 20 + 1 + 2, "{:?}", log.counts());
    assert!(report.findings.iter().any(|f| f.check == "mtls.dr-overlap"));
    eprintln!(
        "10 003 DestinationRules: observe {observed:?}, observe + checks {total:?}, {lists} list requests"
    );
}

fn discovery(path: &str) -> bool {
    kube_sim::levers::is_discovery_path(path)
}

/// The bundle `kubectl meshvm bundle` writes passes doctor's bundle checks against its cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_bundle_from_the_bundle_verb_passes() {
    let server = sim(&["legacy-1.4.yaml", "legacy-1.4-strict-ready.yaml"]).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("expandvm");
    let archive = dir.path().join("expandvm.tar.gz");
    let kubeconfig = server.kubeconfig_path().to_str().unwrap().to_string();
    let bundle_args = crate::args::BundleArgs::try_parse_from([
        "kubectl-meshvm-bundle",
        "--kubeconfig",
        kubeconfig.as_str(),
        "--vm-namespace",
        "sample",
        "-s",
        "helloworld",
        "--inbound-ports",
        "80",
        "-d",
        out_dir.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
    ])
    .unwrap();
    let bundle_opts = crate::bundle::Options::resolve(bundle_args).unwrap();
    crate::bundle::run(&bundle_opts, &mut Vec::new(), &mut Vec::new())
        .await
        .unwrap();
    for bundle in [&out_dir, &archive] {
        let (_, report, _) = doctor(&server, &["--bundle", bundle.to_str().unwrap()]).await;
        let checked: Vec<_> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"].as_str().unwrap().starts_with("bundle."))
            .collect();
        assert_eq!(checked.len(), 4);
        for f in checked {
            assert_eq!(f["severity"], "pass", "{}: {f:#}", bundle.display());
        }
    }
}

/// RBAC that forbids listing Secrets makes the CA checks skip with the reason, not fail the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_kinds_skip_their_checks() {
    let server = sim(&["legacy-1.4.yaml"]).await;
    server.deny("list", "secrets", None);
    server.deny("get", "secrets", None);
    let (_, report, _) = doctor(&server, &[]).await;
    let plugged = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "ca.plugged")
        .unwrap();
    assert_eq!(plugged["severity"], "skip", "{plugged:#}");
    assert!(
        plugged["message"]
            .as_str()
            .unwrap()
            .contains("cannot read Secrets"),
        "{plugged:#}"
    );
}

/// Rename the sim's single context/cluster/user to `name` in its kubeconfig.
fn kubeconfig_entry(
    server: &Server,
    name: &str,
) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut cluster = v["clusters"][0].clone();
    cluster["name"] = name.into();
    let mut user = v["users"][0].clone();
    user["name"] = name.into();
    let mut context = v["contexts"][0].clone();
    context["name"] = name.into();
    context["context"]["cluster"] = name.into();
    context["context"]["user"] = name.into();
    (cluster, user, context)
}

/// Two clusters: each is checked, findings carry their context, and the roots are compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_contexts_are_checked_and_cross_checked() {
    let east = sim(&["legacy-1.4.yaml"]).await;
    let west = sim(&["legacy-1.4.yaml"]).await;
    let (ce, ue, xe) = kubeconfig_entry(&east, "east");
    let (cw, uw, xw) = kubeconfig_entry(&west, "west");
    let merged = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [ce, cw], "users": [ue, uw], "contexts": [xe, xw],
        "current-context": "east",
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, serde_json::to_string(&merged).unwrap()).unwrap();
    let argv = [
        "x",
        "--kubeconfig",
        path.to_str().unwrap(),
        "--context",
        "east",
        "--context",
        "west",
        "-o",
        "json",
    ];
    let o = DoctorOptions::resolve(DoctorArgs::try_parse_from(argv).unwrap()).unwrap();
    let mut out = Vec::new();
    run(&o, &mut out, &mut Vec::new(), false).await.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let findings = report["findings"].as_array().unwrap();
    for context in ["east", "west"] {
        for check in checks::ALL {
            assert!(
                findings
                    .iter()
                    .any(|f| f["check"] == check.id() && f["context"] == context),
                "{context} {}",
                check.id()
            );
        }
    }
    // The context is a field, not part of the message; every kubectl command in a hint
    // targets the finding's context.
    for f in findings {
        let context = f["context"]
            .as_str()
            .expect("each finding names its context");
        assert!(!f["message"].as_str().unwrap().starts_with('['), "{f:#}");
        let hint = f["hint"].as_str().unwrap();
        let commands = hint.matches("kubectl ").count();
        assert_eq!(
            hint.matches(&format!("--context {context}")).count(),
            commands,
            "{f:#}"
        );
    }
    // west's `kubectl meshvm doctor --fix` hint, run as printed (plus the kubeconfig and
    // --yes), fixes west and leaves east (the current context) alone.
    let west_fix = findings
        .iter()
        .find(|f| {
            f["context"] == "west" && f["check"] == "mtls.default-dr" && f["severity"] == "fail"
        })
        .expect("west lacks the mesh-wide rule");
    let hint = west_fix["hint"].as_str().unwrap();
    let command = hint
        .split('`')
        .find(|c| c.starts_with("kubectl meshvm doctor"))
        .unwrap_or_else(|| panic!("{hint}"));
    let mut argv: Vec<&str> = command.split_whitespace().skip(2).collect();
    argv[0] = "kubectl-meshvm-doctor";
    // The hint names the kubeconfig the run was given (this run's own); give it when it does not.
    if !argv.contains(&"--kubeconfig") {
        argv.extend(["--kubeconfig", path.to_str().unwrap()]);
    }
    argv.extend(["-o", "json"]);
    if !argv.contains(&"--yes") {
        argv.push("--yes");
    }
    let o = DoctorOptions::resolve(DoctorArgs::try_parse_from(&argv).unwrap()).unwrap();
    let mut out = Vec::new();
    let outcome = run(&o, &mut out, &mut Vec::new(), false).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Success,
        "{}",
        String::from_utf8_lossy(&out)
    );
    let rules = |server: &Server| {
        server
            .requests()
            .records
            .iter()
            .filter(|r| {
                matches!(r.verb.as_str(), "create" | "patch" | "update")
                    && (200..300).contains(&r.status)
                    && r.path.contains("destinationrules")
                    && !r.query.contains("dryRun")
            })
            .count()
    };
    assert!(rules(&west) > 0, "west got the rules");
    assert_eq!(rules(&east), 0, "east, the current context, is untouched");
    // Each sim's Citadel made its own root: the pair is reported once, from east.
    let cross: Vec<_> = findings
        .iter()
        .filter(|f| f["check"] == "ca.root-consistent" && f["severity"] == "fail")
        .collect();
    assert_eq!(cross.len(), 1, "{cross:#?}");
    assert!(
        cross[0]["message"]
            .as_str()
            .unwrap()
            .contains("context west"),
        "{:#}",
        cross[0]
    );
}

/// A cluster without Istio: the mTLS checks skip instead of reporting a missing mesh-wide rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_istio_skips_mtls_checks() {
    let server = Server::start(Scenario::empty()).await;
    let (_, report, _) = doctor(&server, &[]).await;
    for f in report["findings"].as_array().unwrap() {
        if f["check"].as_str().unwrap().starts_with("mtls.") {
            assert_eq!(f["severity"], "skip", "{f:#}");
        }
    }
    assert_eq!(report["era"], "unknown");
}

/// The modern bundle (token, mesh.yaml, root) passes against its cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_bundle_from_the_bundle_verb_passes() {
    let server = sim(&["modern.yaml"]).await;
    server
        .load([serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadGroup",
            "metadata": {"name": "vm", "namespace": "sample"},
            "spec": {"metadata": {"labels": {"app": "vm"}}, "template": {"serviceAccount": "default", "network": "vm-net"}},
        })])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("vm");
    let kubeconfig = server.kubeconfig_path().to_str().unwrap().to_string();
    let bundle_args = crate::args::BundleArgs::try_parse_from([
        "kubectl-meshvm-bundle",
        "--kubeconfig",
        kubeconfig.as_str(),
        "--vm-namespace",
        "sample",
        "--workload-group",
        "vm",
        "-d",
        out_dir.to_str().unwrap(),
    ])
    .unwrap();
    let bundle_opts = crate::bundle::Options::resolve(bundle_args).unwrap();
    crate::bundle::run(&bundle_opts, &mut Vec::new(), &mut Vec::new())
        .await
        .unwrap();
    let (_, report, _) = doctor(&server, &["--bundle", out_dir.to_str().unwrap()]).await;
    for f in report["findings"].as_array().unwrap() {
        if f["check"].as_str().unwrap().starts_with("bundle.") {
            assert_eq!(f["severity"], "pass", "{f:#}");
        }
    }
}

/// A wrong `--istio-namespace` is an error naming where the control plane is, not a report
/// about objects that do not exist; the right one (not the default) is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_istio_namespace_is_an_error() {
    let server = sim(&["legacy-1.4.yaml"]).await;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let e = run(
        &opts(&server, &["--istio-namespace", "istio"]),
        &mut out,
        &mut err,
        false,
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("no Istio control plane in namespace istio (context "),
        "{e}"
    );
    assert_eq!(
        e.hint().unwrap(),
        "found one in istio-system: pass --istio-namespace istio-system (or drop the flag: doctor finds it)"
    );
    assert!(!e.is_usage(), "exit 1, not 2");
    assert!(out.is_empty(), "no report");
    // A cluster without Istio: the error says so, with the hint to pass the right one.
    let empty = Server::start(Scenario::empty()).await;
    let e = run(
        &opts(&empty, &["--istio-namespace", "istio"]),
        &mut Vec::new(),
        &mut Vec::new(),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        e.hint()
            .unwrap()
            .contains("no Istio control plane in any namespace"),
        "{e}"
    );
}
