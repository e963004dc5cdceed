//! Unit tests of prepare's pure parts: options, plan, the WorkloadGroup shape, deletion plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use serde_json::{Value, json};

use super::delete::{self, Found};
use super::plan::{self as planner, EraSource, Observed, contains, workload_group_object};
use super::*;
use crate::pki::CaPaths;

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/istio-samples")
}

fn options(extra: &[&str]) -> Options {
    let mut argv = vec!["prepare", "--vm-namespace", "expandvm"];
    argv.extend_from_slice(extra);
    Options::resolve(PrepareArgs::try_parse_from(argv).unwrap()).unwrap()
}

fn sample_ca() -> CaMaterial {
    CaPaths::from_dir(samples()).read().unwrap()
}

fn deployment(name: &str, created: &str, restarted: Option<&str>) -> Deployment {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "istio-system", "creationTimestamp": created},
        "spec": {"selector": {}, "template": {"metadata": {}}}
    });
    if let Some(t) = restarted {
        d["spec"]["template"]["metadata"]["annotations"] = json!({planner::RESTARTED_AT: t});
    }
    serde_json::from_value(d).unwrap()
}

fn legacy() -> Observed {
    Observed {
        era: Some(Era::Legacy),
        era_source: Some(EraSource::Detected(vec![
            "istio-citadel".into(),
            "istio-pilot".into(),
        ])),
        deployments: vec![
            deployment("istio-citadel", "2026-01-01T00:00:00Z", None),
            deployment("istio-pilot", "2026-01-01T00:00:00Z", None),
        ],
        istio_namespace: Some(namespace("istio-system", false)),
        ..Observed::default()
    }
}

fn namespace(name: &str, ours: bool) -> Namespace {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    if ours {
        ns["metadata"]["labels"] = json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE});
    }
    serde_json::from_value(ns).unwrap()
}

fn stored_secret(data: &BTreeMap<String, Vec<u8>>, written: &str) -> Secret {
    let mut s = planner::cacerts_secret("istio-system", &sample_ca());
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
            .collect(),
    );
    s.metadata.resource_version = Some("42".into());
    s.metadata.creation_timestamp = serde_json::from_value(json!(written)).unwrap();
    s
}

fn rows(plan: &crate::plan::Plan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| format!("{} {} {}", c.words(), c.kind, c.name))
        .collect()
}

#[test]
fn first_run_creates_everything_in_runbook_order() {
    let opts = options(&["--ca-dir", samples().to_str().unwrap()]);
    let mut obs = legacy();
    obs.istio_namespace = None;
    let prepared = planner::plan(&obs, &opts, Some(&sample_ca())).unwrap();
    assert_eq!(
        rows(&prepared.plan),
        [
            "would create Namespace istio-system",
            "would create Secret cacerts",
            "would create Namespace expandvm",
            "would create ServiceAccount expandvm",
        ]
    );
    assert_eq!(prepared.ca_deployment.as_deref(), Some("istio-citadel"));
    assert!(
        !prepared
            .plan
            .changes
            .iter()
            .any(|c| c.kind == Kind::Deployment),
        "no restart without --restart-control-plane"
    );
}

#[test]
fn cacerts_is_what_kubectl_create_secret_from_file_makes() {
    let ca = sample_ca();
    let secret = serde_json::to_value(planner::cacerts_secret("istio-system", &ca)).unwrap();
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"],
        json!({"name": "cacerts", "namespace": "istio-system"}),
        "no labels or annotations: kubectl adds none"
    );
    let data = secret["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    for key in crate::istio::CACERTS_KEYS {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data[key].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, std::fs::read(samples().join(key)).unwrap(), "{key}");
    }
}

#[test]
fn second_run_is_a_noop() {
    let opts = options(&["--ca-dir", samples().to_str().unwrap()]);
    let mut obs = legacy();
    obs.cacerts = Some(stored_secret(
        &sample_ca().to_secret_data(),
        "2025-12-01T00:00:00Z",
    ));
    obs.vm_namespace = Some(namespace("expandvm", true));
    obs.service_account = Some(ServiceAccount::default());
    let prepared = planner::plan(&obs, &opts, Some(&sample_ca())).unwrap();
    assert!(prepared.plan.is_noop(), "{:?}", rows(&prepared.plan));
    assert!(
        !prepared.restart_due_earlier,
        "Citadel started after cacerts"
    );
    assert!(prepared.plan.changes[1].detail.contains("same CA"));
}

#[test]
fn a_different_cacerts_is_refused_with_both_roots() {
    let opts = options(&["--ca-dir", samples().to_str().unwrap()]);
    let other =
        crate::pki::testutil::TestCa::flat(crate::pki::testutil::KeyKind::P256, "Other Root");
    let mut data = sample_ca().to_secret_data();
    data.insert("root-cert.pem".into(), other.cert_pem.clone().into_bytes());
    let mut obs = legacy();
    obs.cacerts = Some(stored_secret(&data, "2025-12-01T00:00:00Z"));
    let err = planner::plan(&obs, &opts, Some(&sample_ca())).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::CaDiffers {
                same_root: false,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("in the cluster: CN=Other Root"), "{text}");
    assert!(text.contains(" (SHA-256 "), "{text}");
    assert!(text.contains("CN=Root CA,OU=Test,O=Istio"), "{text}");
    assert!(text.contains("63:72:7A:17:85:CA:B4:7A"), "{text}");
    assert!(err.hint().unwrap().contains("--force"));

    // Same root, different signing key: still refused, and said so.
    let mut data = sample_ca().to_secret_data();
    data.insert("ca-key.pem".into(), b"another key".to_vec());
    obs.cacerts = Some(stored_secret(&data, "2025-12-01T00:00:00Z"));
    let err = planner::plan(&obs, &opts, Some(&sample_ca())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CaDiffers {
                same_root: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("another key"));

    // --force: a guarded replace of exactly the Secret compared.
    let forced = options(&["--ca-dir", samples().to_str().unwrap(), "--force"]);
    let prepared = planner::plan(&obs, &forced, Some(&sample_ca())).unwrap();
    let secret = &prepared.plan.changes[1];
    assert_eq!(secret.action, crate::plan::Action::Update);
    assert_eq!(
        secret.object.as_ref().unwrap()["metadata"]["resourceVersion"],
        "42"
    );
}

#[test]
fn restart_is_planned_after_a_cacerts_change_or_when_still_due() {
    let opts = options(&[
        "--ca-dir",
        samples().to_str().unwrap(),
        "--restart-control-plane",
    ]);
    let prepared = planner::plan(&legacy(), &opts, Some(&sample_ca())).unwrap();
    let last = prepared.plan.changes.last().unwrap();
    assert_eq!(
        (last.kind.name(), last.name.as_str()),
        ("Deployment", "istio-citadel")
    );

    // cacerts written by an earlier run after Citadel started, Citadel not restarted since.
    let mut obs = legacy();
    obs.cacerts = Some(stored_secret(
        &sample_ca().to_secret_data(),
        "2026-02-01T00:00:00Z",
    ));
    let prepared = planner::plan(&obs, &opts, Some(&sample_ca())).unwrap();
    assert!(prepared.restart_due_earlier);
    assert_eq!(prepared.plan.changes.last().unwrap().kind, Kind::Deployment);

    // ...and restarted since (kubectl writes local time with an offset): nothing due.
    obs.deployments[0] = deployment(
        "istio-citadel",
        "2026-01-01T00:00:00Z",
        Some("2026-02-01T02:00:00+01:00"),
    );
    let prepared = planner::plan(&obs, &opts, Some(&sample_ca())).unwrap();
    assert!(!prepared.restart_due_earlier);

    // Timestamps have second resolution. A restart stamped in the second cacerts was written
    // followed the write (prepare writes, then restarts): nothing due.
    obs.deployments[0] = deployment(
        "istio-citadel",
        "2026-01-01T00:00:00Z",
        Some("2026-02-01T00:00:00Z"),
    );
    assert!(
        !planner::plan(&obs, &opts, Some(&sample_ca()))
            .unwrap()
            .restart_due_earlier
    );
    // A Citadel *created* in that second may have started before it: due (a restart is cheap;
    // a bundle from the old root is not).
    obs.deployments[0] = deployment("istio-citadel", "2026-02-01T00:00:00Z", None);
    assert!(
        planner::plan(&obs, &opts, Some(&sample_ca()))
            .unwrap()
            .restart_due_earlier
    );
    assert!(
        prepared
            .plan
            .changes
            .iter()
            .all(|c| c.kind != Kind::Deployment)
    );

    // No control plane yet: it reads cacerts when it starts, so nothing to restart.
    let mut bare = legacy();
    bare.deployments.clear();
    bare.era = None;
    let prepared = planner::plan(&bare, &opts, Some(&sample_ca())).unwrap();
    assert!(prepared.ca_deployment.is_none());
    assert!(
        prepared
            .plan
            .changes
            .iter()
            .all(|c| c.kind != Kind::Deployment)
    );
}

#[test]
fn restart_patch_is_kubectl_rollout_restart() {
    assert_eq!(
        apply::restart_patch("2026-11-26T01:00:00Z"),
        json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-11-26T01:00:00Z"
        }}}}})
    );
}

/// The goldens of `istioctl x workload group create` (CASES.yaml), by their command line.
fn istioctl_goldens() -> BTreeMap<String, String> {
    let path = kube_sim::testenv::conformance("workload-entry-configure/CASES.yaml");
    let text = std::fs::read_to_string(&path).expect("CASES.yaml from ../shared/conformance");
    let cases: Value = serde_saphyr::from_str(&text).unwrap();
    cases["group_create_expected_stdout"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

#[test]
fn workload_group_matches_istioctl_byte_for_byte() {
    let goldens = istioctl_goldens();
    let plain = WorkloadGroupOptions {
        name: "foo".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        ports: BTreeMap::new(),
        network: None,
        weight: None,
    };
    let yaml = crate::output::to_yaml(&workload_group_object(
        "networking.istio.io/v1",
        "bar",
        "default",
        &plain,
    ))
    .unwrap();
    assert_eq!(yaml, goldens["group create --name foo --namespace bar"]);

    let opts = Options::resolve(
        PrepareArgs::try_parse_from([
            "prepare",
            "--vm-namespace",
            "bar",
            "--workload-group",
            "foo",
            "--labels",
            "app=foo,bar=baz",
            "--annotations",
            "annotation=foobar",
            "--ports",
            "grpc=3550,http=8080",
            "-s",
            "test",
            "--weight",
            "100",
        ])
        .unwrap(),
    )
    .unwrap();
    let full = workload_group_object(
        "networking.istio.io/v1",
        "bar",
        opts.service_account.as_deref().unwrap(),
        opts.workload_group.as_ref().unwrap(),
    );
    assert_eq!(
        crate::output::to_yaml(&full).unwrap(),
        goldens["group create --name foo --namespace bar --labels app=foo,bar=baz --annotations annotation=foobar --ports grpc=3550,http=8080 --serviceAccount test --weight 100"]
    );
}

#[test]
fn workload_group_defaults_to_preparess_service_account_and_network() {
    let opts = options(&["--workload-group", "vm", "--network", "vm-net"]);
    let mut obs = legacy();
    obs.era = Some(Era::Modern);
    obs.networking_version = Some("v1".into());
    let prepared = planner::plan(&obs, &opts, None).unwrap();
    let wg = prepared.plan.changes.last().unwrap();
    assert_eq!(wg.kind, Kind::WorkloadGroup);
    let spec = &wg.object.as_ref().unwrap()["spec"];
    assert_eq!(spec["template"]["serviceAccount"], "expandvm");
    assert!(
        wg.detail.contains("istioctl's default is \"default\""),
        "{}",
        wg.detail
    );
    assert_eq!(spec["template"]["network"], "vm-net");
    assert!(
        !prepared.plan.changes.iter().any(|c| c.kind == Kind::Secret),
        "no CA given: cacerts is left alone"
    );

    // Existing with the same fields (plus ones others set): unchanged; different: update.
    let mut existing =
        kube::api::DynamicObject::new("vm", &crate::istio::IstioKind::WorkloadGroup.resource("v1"));
    existing.data = json!({"spec": {"metadata": {}, "template": {"serviceAccount": "expandvm", "network": "vm-net"}, "probe": {"periodSeconds": 5}}});
    obs.workload_group = Some(existing.clone());
    let prepared = planner::plan(&obs, &opts, None).unwrap();
    assert_eq!(
        prepared.plan.changes.last().unwrap().action,
        crate::plan::Action::Unchanged
    );
    existing.data["spec"]["template"]["network"] = json!("other");
    obs.workload_group = Some(existing);
    let prepared = planner::plan(&obs, &opts, None).unwrap();
    assert_eq!(
        prepared.plan.changes.last().unwrap().action,
        crate::plan::Action::Update
    );
}

#[test]
fn workload_group_needs_the_modern_era() {
    let opts = options(&["--workload-group", "vm"]);
    let err = planner::plan(&legacy(), &opts, None).unwrap_err();
    assert!(
        matches!(err, Error::WorkloadGroupNeedsModern { .. }),
        "{err}"
    );
    let mut unknown = legacy();
    unknown.era = None;
    let err = planner::plan(&unknown, &opts, None).unwrap_err();
    assert!(err.hint().unwrap().contains("--era modern"), "{err}");
}

#[test]
fn a_terminating_namespace_is_reported_not_written_into() {
    let opts = options(&[]);
    let mut obs = legacy();
    let mut ns = namespace("expandvm", true);
    ns.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
        phase: Some("Terminating".into()),
        ..Default::default()
    });
    obs.vm_namespace = Some(ns);
    let err = planner::plan(&obs, &opts, None).unwrap_err();
    assert!(matches!(err, Error::NamespaceTerminating { .. }), "{err}");
}

#[test]
fn contains_compares_only_what_we_set() {
    assert!(contains(
        &json!({"a": 1, "b": {"c": 2, "d": 3}}),
        &json!({"b": {"c": 2}})
    ));
    assert!(contains(&json!({}), &json!({"metadata": {}})));
    assert!(!contains(&json!({"b": {"c": 2}}), &json!({"b": {"c": 3}})));
    assert!(!contains(
        &json!({"ports": {"http": 80}}),
        &json!({"ports": {"grpc": 90}})
    ));
}

#[test]
fn era_line_says_how_it_was_found() {
    let opts = options(&[]);
    assert_eq!(
        era_line(&legacy(), &opts),
        "era: legacy (Istio 1.4: istio-citadel, istio-pilot in istio-system)"
    );
    let mut forced = legacy();
    forced.era_source = Some(EraSource::Forced);
    assert_eq!(era_line(&forced, &opts), "era: legacy (--era)");
    assert!(era_line(&Observed::default(), &opts).starts_with("era: unknown"));
}

#[test]
fn invalid_ca_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for key in crate::istio::CACERTS_KEYS {
        std::fs::copy(samples().join(key), dir.path().join(key)).unwrap();
    }
    std::fs::write(dir.path().join("cert-chain.pem"), b"").unwrap();
    let opts = options(&["--ca-dir", dir.path().to_str().unwrap()]);
    let mut err_out = Vec::new();
    let err = load_ca(
        opts.ca.as_ref().unwrap(),
        &opts,
        SystemTime::now(),
        &mut err_out,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cert-chain.pem"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[test]
fn delete_lists_contents_and_refuses_foreign_namespaces() {
    let opts = options(&["--delete", "--include-ca"]);
    let found = Found {
        namespace: Some(namespace("expandvm", true)),
        contents: vec![
            (Kind::ServiceAccount, "expandvm".into()),
            (Kind::Service, "expandvm".into()),
            (Kind::WorkloadGroup, "vm".into()),
            (Kind::ServiceEntry, "httpbin-bar-global".into()),
        ],
        cacerts: Some(Secret::default()),
        networking_version: Some("v1beta1".into()),
        service_entry_version: Some("v1alpha3".into()),
        exposed: Vec::new(),
    };
    let plan = delete::plan(&found, &opts).unwrap();
    assert_eq!(
        rows(&plan),
        [
            "would delete ServiceAccount expandvm",
            "would delete Service expandvm",
            "would delete WorkloadGroup vm",
            "would delete ServiceEntry httpbin-bar-global",
            "would delete Namespace expandvm",
            "would delete Secret cacerts",
        ]
    );
    assert_eq!(
        plan.changes[0].object.as_ref().unwrap()["apiVersion"],
        "v1",
        "core kinds"
    );
    assert_eq!(
        plan.changes[2].object.as_ref().unwrap()["apiVersion"],
        "networking.istio.io/v1beta1",
        "the version the cluster serves"
    );
    assert_eq!(
        plan.changes[3].object.as_ref().unwrap()["apiVersion"],
        "networking.istio.io/v1alpha3",
        "ServiceEntry at its own served version"
    );
    let foreign = Found {
        namespace: Some(namespace("expandvm", false)),
        ..Found::default()
    };
    let err = delete::plan(&foreign, &options(&["--delete"])).unwrap_err();
    assert!(matches!(err, Error::NotMadeByPrepare { .. }), "{err}");
    assert!(delete::plan(&foreign, &options(&["--delete", "--force"])).is_ok());
    assert!(
        delete::plan(&Found::default(), &opts)
            .unwrap()
            .changes
            .is_empty()
    );
}

#[test]
fn restart_without_ca_files_restarts_only_when_cacerts_is_newer() {
    let opts = options(&["--restart-control-plane", "--yes"]);
    assert!(opts.ca.is_none());
    let is_restart = |p: &planner::Prepared| {
        p.plan
            .changes
            .iter()
            .any(|c| c.kind == Kind::Deployment && c.write.is_some())
    };
    // cacerts written after Citadel started: the restart is due and planned, with no CA files.
    let mut obs = legacy();
    obs.cacerts = Some(stored_secret(
        &sample_ca().to_secret_data(),
        "2026-02-01T00:00:00Z",
    ));
    let prepared = planner::plan(&obs, &opts, None).unwrap();
    assert!(prepared.restart_due_earlier && is_restart(&prepared));
    assert!(
        prepared.plan.changes.iter().all(|c| c.kind != Kind::Secret),
        "cacerts is left alone"
    );
    // Restarted since: nothing to restart.
    obs.deployments[0] = deployment(
        "istio-citadel",
        "2026-01-01T00:00:00Z",
        Some("2026-02-01T01:00:00Z"),
    );
    let prepared = planner::plan(&obs, &opts, None).unwrap();
    assert!(!is_restart(&prepared));
    assert!(super::nothing_to_restart(&obs, &opts).contains("started after cacerts"));
    // Modern: istiod is the CA.
    let mut modern = obs.clone();
    modern.era = Some(Era::Modern);
    modern.deployments = vec![deployment("istiod", "2026-01-01T00:00:00Z", None)];
    let prepared = planner::plan(&modern, &opts, None).unwrap();
    assert_eq!(prepared.ca_deployment.as_deref(), Some("istiod"));
    assert!(is_restart(&prepared));
    // No cacerts: nothing to restart, and it says why.
    modern.cacerts = None;
    assert!(!is_restart(&planner::plan(&modern, &opts, None).unwrap()));
    assert!(super::nothing_to_restart(&modern, &opts).contains("has no cacerts secret"));
    assert_eq!(
        super::restart_command(&opts),
        "kubectl meshvm prepare -n expandvm --restart-control-plane"
    );
}

#[test]
fn changing_the_groups_ports_names_the_stale_entries() {
    let opts = options(&[
        "--workload-group",
        "vm",
        "--ports",
        "http=9090",
        "--labels",
        "app=vm",
    ]);
    let group: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
        "metadata": {"name": "vm", "namespace": "expandvm"},
        "spec": {"metadata": {"labels": {"app": "vm"}},
                 "template": {"serviceAccount": "expandvm", "ports": {"http": 8080}}}
    }))
    .unwrap();
    let entry = |name: &str, labels: Value, annotations: Value| -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": "expandvm", "annotations": annotations},
            "spec": {"address": "10.0.0.5", "labels": labels}
        }))
        .unwrap()
    };
    let mut obs = legacy();
    obs.era = Some(Era::Modern);
    obs.workload_group = Some(group);
    obs.workload_entries = vec![
        entry("vm-1", json!({"app": "vm"}), json!({})),
        entry(
            "auto-1",
            json!({}),
            json!({planner::AUTO_REGISTRATION_GROUP: "vm"}),
        ),
        entry("other", json!({"app": "db"}), json!({})),
    ];
    let warnings = planner::stale_from_group(&obs, &opts);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(w.contains("ports http=8080 → http=9090"), "{w}");
    assert!(w.contains("workloadentries vm-1, auto-1"), "{w}");
    assert!(!w.contains("other"), "{w}");
    assert!(
        w.contains("`kubectl meshvm register --workload-entry vm-1 --address 10.0.0.5 -n expandvm --workload-group vm`"),
        "{w}"
    );
    assert!(
        w.contains("`kubectl meshvm bundle -n expandvm --workload-group vm -d DIR --force`"),
        "{w}"
    );
    // The same ports and labels: nothing is stale.
    let same = options(&[
        "--workload-group",
        "vm",
        "--ports",
        "http=8080",
        "--labels",
        "app=vm",
    ]);
    assert!(planner::stale_from_group(&obs, &same).is_empty());
}
