//! Scenario files: every one loads with its Kubernetes version and CRD set, overlays resolve to
//! their base plus exactly what they declare, and the legacy install is the runbook's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kube_sim::scenario::{Header, identity};
use kube_sim::{Error, Scenario, Server, ServerOptions};
use serde_json::{Value, json};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn load(name: &str) -> Scenario {
    Scenario::from_files(&[dir().join(name)]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

type Id = (String, String, String, String);

fn by_id(s: &Scenario) -> BTreeMap<Id, Value> {
    s.objects()
        .iter()
        .map(|o| (identity(o), o.clone()))
        .collect()
}

fn header(name: &str) -> Header {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    Header::parse(&docs[0]).unwrap()
}

fn object<'a>(s: &'a Scenario, kind: &str, ns: &str, name: &str) -> &'a Value {
    s.objects()
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str().unwrap_or("") == ns
        })
        .unwrap_or_else(|| panic!("{kind} {ns}/{name}"))
}

fn ports(svc: &Value) -> Vec<(u64, String)> {
    svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// (file, Kubernetes version, CRD set, Istio release) of every shipped scenario.
const CELLS: &[(&str, &str, &str, &str)] = &[
    ("legacy-1.4.yaml", "1.14", "istio-1.4", "1.4"),
    ("legacy-1.4-helm.yaml", "1.14", "istio-1.4", "1.4"),
    ("legacy-1.4-strict-ready.yaml", "1.14", "istio-1.4", "1.4"),
    ("broken-expired-cacerts.yaml", "1.14", "istio-1.4", "1.4"),
    (
        "broken-gateway-hostname-only.yaml",
        "1.14",
        "istio-1.4",
        "1.4",
    ),
    (
        "broken-gateway-missing-8060.yaml",
        "1.14",
        "istio-1.4",
        "1.4",
    ),
    ("broken-gateway-no-address.yaml", "1.14", "istio-1.4", "1.4"),
    (
        "broken-local-dr-disable-strict.yaml",
        "1.14",
        "istio-1.4",
        "1.4",
    ),
    (
        "broken-vm-service-no-sa-annotation.yaml",
        "1.14",
        "istio-1.4",
        "1.4",
    ),
    ("modern-1.8.yaml", "1.19", "istio-1.8", "1.8"),
    ("modern-1.12.yaml", "1.22", "istio-1.12", "1.12"),
    ("modern-1.13.yaml", "1.23", "istio-1.13", "1.13"),
    ("modern-1.22.yaml", "1.28", "istio-1.22", "1.22"),
    ("modern.yaml", "1.33", "modern", "1.24"),
];

#[test]
fn every_file_is_a_cell_of_the_matrix() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cells: Vec<String> = CELLS.iter().map(|c| c.0.to_string()).collect();
    cells.sort();
    assert_eq!(files, cells);
    for (file, kube, set, release) in CELLS {
        let s = load(file);
        assert_eq!(s.kube_version(), *kube, "{file}");
        assert!(s.kube_version_declared(), "{file}");
        assert_eq!(s.crd_set().as_deref(), Some(*set), "{file}");
        assert_eq!(s.istio_release().unwrap().to_string(), *release, "{file}");
        // --kube-version overrides the declaration.
        assert_eq!(load(file).with_kube_version("1.16").kube_version(), "1.16");
    }
}

/// Every scenario starts, serves its Kubernetes version and its release's CRDs, and its
/// control plane has done its work (Citadel's secrets, istiod's ConfigMaps).
#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_serves_its_cell() {
    for (file, kube, _, release) in CELLS {
        let server = Server::start(load(file)).await;
        let version = server.client().apiserver_version().await.unwrap();
        assert_eq!(
            format!("{}.{}", version.major, version.minor),
            *kube,
            "{file}"
        );
        let crd = server.object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            "workloadgroups.networking.istio.io",
        );
        if release.starts_with("1.4") {
            assert!(crd.is_none(), "{file}: 1.4 has no WorkloadGroup");
            assert!(
                server
                    .object("v1", "Secret", "sample", "istio.helloworld")
                    .is_some(),
                "{file}: Citadel issued the scenario's identities"
            );
            assert!(
                server
                    .object("v1", "ConfigMap", "sample", "istio-ca-root-cert")
                    .is_none()
            );
        } else {
            let crd = crd.unwrap_or_else(|| panic!("{file}: WorkloadGroup CRD"));
            let served: Vec<&str> = crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["served"] == true)
                .map(|v| v["name"].as_str().unwrap())
                .collect();
            let want: &[&str] = match *release {
                "1.8" | "1.12" => &["v1alpha3"],
                "1.13" => &["v1alpha3", "v1beta1"],
                _ => &["v1", "v1alpha3", "v1beta1"],
            };
            assert_eq!(served, want, "{file}");
            assert!(
                server
                    .object("v1", "ConfigMap", "sample", "istio-ca-root-cert")
                    .is_some(),
                "{file}: istiod published its root"
            );
            assert!(
                server
                    .object("v1", "Secret", "sample", "istio.helloworld")
                    .is_none()
            );
        }
    }
}

/// An overlay is its base plus exactly what it declares: its objects, patches and deletions; every
/// other object is the base's, unchanged.
#[test]
fn overlays_differ_from_their_base_in_what_they_declare() {
    let overlays = CELLS
        .iter()
        .map(|c| c.0)
        .filter(|f| header(f).base.is_some());
    let mut checked = 0;
    for file in overlays {
        let h = header(file);
        let base = by_id(&load(h.base.as_deref().unwrap()));
        let overlay = by_id(&load(file));
        let text = std::fs::read_to_string(dir().join(file)).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let mut declared: BTreeSet<Id> = docs[1..].iter().map(identity).collect();
        for p in &h.patches {
            let hit: Vec<&Id> = base
                .iter()
                .filter(|(_, o)| p.selector.matches(o))
                .map(|(id, _)| id)
                .collect();
            assert_eq!(hit.len(), 1, "{file}: patch {} hits one object", p.selector);
            declared.insert(hit[0].clone());
        }
        let mut deleted = BTreeSet::new();
        for d in &h.delete {
            let hit: Vec<&Id> = base
                .iter()
                .filter(|(_, o)| d.matches(o))
                .map(|(id, _)| id)
                .collect();
            assert_eq!(hit.len(), 1, "{file}: delete {d} hits one object");
            deleted.insert(hit[0].clone());
        }
        for (id, o) in &base {
            if deleted.contains(id) {
                assert!(!overlay.contains_key(id), "{file}: {id:?} deleted");
            } else if !declared.contains(id) {
                assert_eq!(overlay.get(id), Some(o), "{file}: {id:?} is the base's");
            } else {
                assert_ne!(
                    overlay.get(id),
                    Some(o),
                    "{file}: {id:?} declared but unchanged"
                );
            }
        }
        for id in overlay.keys() {
            assert!(
                base.contains_key(id) || declared.contains(id),
                "{file}: {id:?} from nowhere"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 12, "overlays checked");
}

#[test]
fn an_overlay_after_its_base_is_the_overlay_alone() {
    let both = Scenario::from_files(&[
        dir().join("legacy-1.4.yaml"),
        dir().join("legacy-1.4-strict-ready.yaml"),
    ])
    .unwrap();
    let alone = load("legacy-1.4-strict-ready.yaml");
    assert_eq!(by_id(&both), by_id(&alone));
    assert_eq!(both.kube_version(), "1.14");
    // A later overlay may override the base's version.
    let s = Scenario::from_files(&[dir().join("legacy-1.4.yaml")])
        .unwrap()
        .with_yaml("apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"1.16\"\n")
        .unwrap();
    assert_eq!(s.kube_version(), "1.16");
}

/// The runbook's install: operator 1.4.2 ports, not the helm chart's; the helm variant has its own.
#[test]
fn legacy_gateways_have_their_variants_ports() {
    let operator = load("legacy-1.4.yaml");
    let svc = object(&operator, "Service", "istio-system", "istio-ingressgateway");
    let names: Vec<u64> = ports(svc).into_iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            15020, 80, 443, 15029, 15030, 15031, 15032, 15443, 15011, 8060, 853
        ]
    );
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.10"
    );
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "istio-ingressgateway"})
    );
    let gw = object(
        &operator,
        "Gateway",
        "istio-system",
        "meshexpansion-gateway",
    );
    let servers: Vec<u64> = gw["spec"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"]["number"].as_u64().unwrap())
        .collect();
    assert_eq!(servers, [15011, 8060]);
    assert!(
        !operator
            .objects()
            .iter()
            .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "cacerts"),
        "the Gotcha state has no cacerts"
    );
    assert!(
        !operator
            .objects()
            .iter()
            .any(|o| o["metadata"]["name"] == "istio-egressgateway")
    );

    let helm = load("legacy-1.4-helm.yaml");
    let svc = object(&helm, "Service", "istio-system", "istio-ingressgateway");
    let names: Vec<u64> = ports(svc).into_iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            15020, 80, 443, 31400, 15029, 15030, 15031, 15032, 15443, 15011, 15004, 8060, 853
        ]
    );
    let gw = object(&helm, "Gateway", "istio-system", "meshexpansion-gateway");
    let servers: Vec<u64> = gw["spec"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"]["number"].as_u64().unwrap())
        .collect();
    assert_eq!(servers, [15011, 8060, 15004]);
    object(&helm, "Deployment", "istio-system", "istio-egressgateway");
    object(&helm, "ServiceAccount", "istio-system", "istio-multi");
}

fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k == key || has_key(v, key)),
        Value::Array(a) => a.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

/// Objects carry only fields their Kubernetes version has.
#[test]
fn objects_carry_only_fields_of_their_kubernetes() {
    // (field found anywhere in an object, first Kubernetes minor that has it)
    let fields: &[(&str, u32)] = &[
        ("clusterIPs", 20),
        ("ipFamilies", 20),
        ("ipFamilyPolicy", 20),
        ("allocateLoadBalancerNodePorts", 20),
        ("internalTrafficPolicy", 22),
        ("kubernetes.io/metadata.name", 21),
        ("ipMode", 29),
    ];
    for (file, kube, ..) in CELLS {
        let minor: u32 = kube.trim_start_matches("1.").parse().unwrap();
        let s = load(file);
        for o in s.objects() {
            for (field, since) in fields {
                assert!(
                    minor >= *since || !has_key(o, field),
                    "{file} (Kubernetes {kube}): {} {} has {field} (Kubernetes 1.{since}+)",
                    o["kind"],
                    o["metadata"]["name"]
                );
            }
            if o["kind"] == "ServiceCIDR" {
                assert!(minor >= 33, "{file}: ServiceCIDR on Kubernetes {kube}");
            }
        }
    }
}

/// Istio 1.4's (and 1.8's) apiextensions v1beta1 CRDs on Kubernetes 1.22+ are refused, as the
/// real apiserver no longer serves that API.
#[tokio::test(flavor = "multi_thread")]
async fn v1beta1_crds_are_refused_from_kubernetes_1_22() {
    for (file, bad, good) in [
        ("legacy-1.4.yaml", "1.22", "1.21"),
        ("modern-1.8.yaml", "1.33", "1.21"),
    ] {
        let e = Server::try_start(load(file).with_kube_version(bad), ServerOptions::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{file} on {bad} refused"));
        assert!(matches!(e, Error::CrdVersion { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("apiextensions.k8s.io/v1beta1")
                && text.contains("1.22")
                && text.contains("--kube-version 1.21"),
            "{text}"
        );
        Server::try_start(load(file).with_kube_version(good), ServerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{file} on {good}: {e}"));
    }
    // A legacy cluster built in code without a version gets the newest Kubernetes that serves it.
    let ad_hoc = Scenario::empty()
        .with_objects([json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istio-citadel", "namespace": "istio-system"}})]);
    assert_eq!(ad_hoc.kube_version(), "1.21");
    assert_eq!(Scenario::empty().kube_version(), "1.32");
}

#[test]
fn bad_overlays_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let legacy = dir().join("legacy-1.4.yaml");
    let head = |extra: &str| {
        format!(
            "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nbase: {}\n{extra}",
            legacy.display()
        )
    };
    let cases = [
        (
            head("delete:\n- {kind: Service, namespace: istio-system, name: nope}\n"),
            "delete: Service istio-system/nope is not in the base",
        ),
        (
            head("patches:\n- {kind: Service, name: nope, patch: {spec: {}}}\n"),
            "patches: Service nope is not in the base",
        ),
        (head("colour: blue\n"), "unknown field \"colour\""),
        (
            head("patches:\n- {kind: Service, name: x, patch: {}, type: json}\n"),
            "type \"json\" is not merge or strategic",
        ),
        (
            "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\n".into(),
            "declares its Kubernetes version",
        ),
        (
            "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"2\"\n".into(),
            "kubeVersion \"2\" is not of the form 1.NN",
        ),
        (head("crds: istio-9\n"), "unknown CRD set \"istio-9\""),
        (
            format!(
                "{}---\napiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"1.3\"\n",
                head("")
            ),
            "header may only be the first document",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = write(&format!("bad{i}.yaml"), text);
        let e = Scenario::from_files(&[&p]).unwrap_err().to_string();
        assert!(e.contains(want), "{text}\n→ {e}");
        if !want.starts_with("unknown CRD set") {
            assert!(
                e.contains(&format!("bad{i}.yaml")),
                "the error names the file: {e}"
            );
        }
    }
    // A base chain that loops.
    let a = write(
        "a.yaml",
        "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nbase: b.yaml\n",
    );
    write(
        "b.yaml",
        "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nbase: a.yaml\n",
    );
    let e = Scenario::from_files(&[&a]).unwrap_err().to_string();
    assert!(e.contains("base chain loops"), "{e}");
    let e = Scenario::from_files(&[tmp.path().join("missing.yaml")]).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e}");
    // A relative base is found next to the overlay, whatever the working directory.
    let o = write(
        "o.yaml",
        &format!(
            "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nbase: {}\n",
            pathdiff(&legacy, tmp.path())
        ),
    );
    assert_eq!(
        by_id(&Scenario::from_files(&[&o]).unwrap()),
        by_id(&load("legacy-1.4.yaml"))
    );
}

/// `to` relative to `from` (both absolute).
fn pathdiff(to: &Path, from: &Path) -> String {
    let to = to.canonicalize().unwrap();
    let from = from.canonicalize().unwrap();
    let ups = from.components().count();
    let mut s = "../".repeat(ups - 1);
    s.push_str(to.strip_prefix("/").unwrap().to_str().unwrap());
    s
}
