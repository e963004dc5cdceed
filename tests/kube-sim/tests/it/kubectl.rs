//! Real kubectl (1.27, 1.32, 1.33) against a fresh sim: the verbs meshvm's users run, also
//! against old Kubernetes versions (1.14, 1.19) the way the dispatcher runs them.
//!
//! These tests need the kubectl dispatcher and its `kubectl.1.NN` binaries on PATH and fail
//! without them; `MESHVM_ALLOW_MISSING_TOOLS=1` (and nothing else) lets them return early,
//! saying why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use kube_sim::{Scenario, Server};

/// The folder holding `kubectl.1.NN` (where the dispatcher on PATH resolves), or `None` only
/// with `MESHVM_ALLOW_MISSING_TOOLS=1` (see `kube_sim::testenv`).
fn kubectl_dir() -> Option<PathBuf> {
    kube_sim::testenv::require_kubectl().and_then(|p| p.parent().map(Path::to_path_buf))
}

/// `kubectl.1.<minor>`, or `None` only with `MESHVM_ALLOW_MISSING_TOOLS=1`.
fn kubectl_bin(minor: &str) -> Option<PathBuf> {
    kube_sim::testenv::require_kubectl_minor(&format!("1.{minor}"))
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: matrix\ndata:\n  mesh: \"1\"\n";
const CM_SSA: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-ssa\n  namespace: matrix\ndata:\n  mesh: \"1\"\n";
const DR_BAD: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: bad\n  namespace: matrix\nspec:\n  host: x.matrix.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: BOGUS\n";
const DR_GOOD: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: good\n  namespace: matrix\nspec:\n  host: x.matrix.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n";

fn matrix(minor: &str) {
    let Some(bin) = kubectl_bin(minor) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Server::start(
        Scenario::empty().with_kube_version(&format!("1.{minor}")),
    ));
    let k = Kubectl {
        bin,
        kubeconfig: server.kubeconfig_path().to_path_buf(),
        cache: tempfile::tempdir().unwrap(),
    };
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };

    let ns = k.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "get ns lacks {n}: {ns}");
    }
    assert!(
        k.ok(&["create", "ns", "matrix"])
            .contains("namespace/matrix created")
    );
    assert!(
        k.ok(&["create", "sa", "expandvm", "-n", "matrix"])
            .contains("serviceaccount/expandvm created")
    );

    let payload = write(
        "root-cert.pem",
        "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n",
    );
    let from_file = format!("--from-file={payload}");
    assert!(
        k.ok(&[
            "create", "secret", "generic", "bundle", &from_file, "-n", "matrix"
        ])
        .contains("secret/bundle created")
    );
    let data = k.ok(&[
        "get",
        "secret",
        "bundle",
        "-n",
        "matrix",
        "-o",
        "jsonpath={.data.root-cert\\.pem}",
    ]);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .unwrap();
    assert_eq!(decoded, std::fs::read(&payload).unwrap());

    let cm = write("cm.yaml", CM);
    assert!(
        k.ok(&["apply", "-f", &cm])
            .contains("configmap/cfg created")
    );
    assert!(
        k.ok(&["apply", "-f", &cm])
            .contains("configmap/cfg unchanged")
    );
    let ssa = write("cm-ssa.yaml", CM_SSA);
    assert!(
        k.ok(&["apply", "--server-side", "-f", &ssa])
            .contains("configmap/cfg-ssa serverside-applied")
    );
    let managers = k.ok(&[
        "get",
        "cm",
        "cfg-ssa",
        "-n",
        "matrix",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    assert!(managers.contains("kubectl"), "managedFields: {managers}");

    let good = write("dr-good.yaml", DR_GOOD);
    assert!(
        k.ok(&["apply", "-f", &good])
            .contains("destinationrule.networking.istio.io/good created")
    );
    let listed = k.ok(&["get", "destinationrules.networking.istio.io", "-A"]);
    assert!(
        listed.contains("matrix") && listed.contains("good"),
        "{listed}"
    );
    // Short name, and server-side printing with the CRD's printer columns.
    let table = k.ok(&["get", "dr", "-n", "matrix"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "HOST", "AGE"], "{table}");
    assert!(
        table.contains("good") && table.contains("x.matrix.svc.cluster.local"),
        "{table}"
    );

    let bad = write("dr-bad.yaml", DR_BAD);
    let out = k.run(&["apply", "-f", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "invalid DR accepted: {err}");
    assert!(
        err.contains("spec.trafficPolicy.tls.mode") && err.contains("BOGUS"),
        "{err}"
    );

    let token = k.ok(&[
        "create",
        "token",
        "expandvm",
        "-n",
        "matrix",
        "--audience",
        "istio-ca",
    ]);
    let claims = token.trim().split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], serde_json::json!(["istio-ca"]));
    assert_eq!(claims["sub"], "system:serviceaccount:matrix:expandvm");

    // A Deployment made by a typed client (protobuf), restarted and waited for.
    assert!(
        k.ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--port=80",
            "-n",
            "matrix"
        ])
        .contains("deployment.apps/web created")
    );
    assert!(
        k.ok(&["rollout", "restart", "deployment/web", "-n", "matrix"])
            .contains("restarted")
    );
    let annotations = k.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "matrix",
        "-o",
        "jsonpath={.spec.template.metadata.annotations}",
    ]);
    assert!(
        annotations.contains("kubectl.kubernetes.io/restartedAt"),
        "{annotations}"
    );
    assert!(
        k.ok(&[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "matrix",
            "--timeout=10s"
        ])
        .contains("successfully rolled out")
    );
    assert!(
        k.ok(&["scale", "deployment/web", "--replicas=3", "-n", "matrix"])
            .contains("scaled")
    );

    assert!(
        k.ok(&["delete", "dr", "good", "-n", "matrix"])
            .contains("deleted")
    );
    assert!(
        k.ok(&["delete", "ns", "matrix"])
            .contains("namespace \"matrix\" deleted")
    );
    assert!(
        !k.run(&["get", "sa", "expandvm", "-n", "matrix"])
            .status
            .success(),
        "namespace contents survive"
    );
    assert!(
        k.ok(&["get", "ns"])
            .lines()
            .all(|l| !l.starts_with("matrix "))
    );
    drop(server);
}

#[test]
fn kubectl_1_27() {
    matrix("27");
}

#[test]
fn kubectl_1_32() {
    matrix("32");
}

#[test]
fn kubectl_1_33() {
    matrix("33");
}

/// The minors between, present on the same machines: the same matrix must hold.
#[test]
fn kubectl_1_28_to_1_31() {
    for minor in ["28", "29", "30", "31"] {
        matrix(minor);
    }
}

/// The kubectl dispatcher on PATH picks kubectl.1.NN from /version, so kube-version steers it.
#[test]
fn dispatcher_follows_reported_version() {
    let Some(dir) = kubectl_dir() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Server::start(Scenario::empty().with_kube_version("1.27")));
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        v["serverVersion"]["gitVersion"],
        "v1.27.0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        v["clientVersion"]["minor"], "27",
        "dispatcher did not pick kubectl.1.27"
    );
}

/// `kubectl auth can-i` answers from the denial lever.
#[test]
fn auth_can_i_reflects_denials() {
    let Some(dir) = kubectl_dir() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Server::start(Scenario::empty().with_denial(
        "create",
        "secrets",
        Some("istio-system"),
    )));
    for minor in ["27", "33"] {
        let k = Kubectl {
            bin: dir.join(format!("kubectl.1.{minor}")),
            kubeconfig: server.kubeconfig_path().to_path_buf(),
            cache: tempfile::tempdir().unwrap(),
        };
        let denied = k.run(&["auth", "can-i", "create", "secrets", "-n", "istio-system"]);
        assert_eq!(
            String::from_utf8_lossy(&denied.stdout).trim(),
            "no",
            "1.{minor}: {}",
            String::from_utf8_lossy(&denied.stderr)
        );
        assert_eq!(denied.status.code(), Some(1));
        assert_eq!(
            k.ok(&["auth", "can-i", "create", "secrets", "-n", "default"])
                .trim(),
            "yes"
        );
        assert_eq!(
            k.ok(&["auth", "can-i", "get", "secrets", "-n", "istio-system"])
                .trim(),
            "yes"
        );
    }
}

const CM_OLD: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: legacy\ndata:\n  mesh: \"1\"\n";
const CRD_V1BETA1: &str = "apiVersion: apiextensions.k8s.io/v1beta1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  version: v1\n  scope: Namespaced\n  names:\n    plural: widgets\n    kind: Widget\n  validation:\n    openAPIV3Schema:\n      type: object\n      properties:\n        spec:\n          type: object\n          properties:\n            size: {type: integer}\n";
const CRD_V1: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names:\n    plural: widgets\n    kind: Widget\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size: {type: integer}\n";
const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: legacy\nspec:\n  size: 3\n";

/// What meshvm's users run, with a kubectl newer than the server (the dispatcher runs
/// kubectl.1.32 for servers outside 1.27…1.33): discovery without aggregated documents or
/// OpenAPI v3, v1beta1 Tables before 1.15, apiextensions v1beta1 CRDs before 1.16.
fn old_server_verbs(bin: &Path, version: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Server::start(Scenario::empty().with_kube_version(version)));
    let k = Kubectl {
        bin: bin.to_path_buf(),
        kubeconfig: server.kubeconfig_path().to_path_buf(),
        cache: tempfile::tempdir().unwrap(),
    };
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ctx = format!("{} against {version}", bin.display());

    let ns = k.ok(&["get", "ns"]);
    assert!(ns.starts_with("NAME"), "{ctx}: {ns}");
    assert!(
        ns.contains("kube-system") && ns.contains("Active"),
        "{ctx}: {ns}"
    );
    assert!(
        k.ok(&["create", "ns", "legacy"])
            .contains("namespace/legacy created")
    );

    let cm = write("cm.yaml", CM_OLD);
    assert!(
        k.ok(&["apply", "-f", &cm])
            .contains("configmap/cfg created"),
        "{ctx}"
    );
    assert!(
        k.ok(&["apply", "-f", &cm])
            .contains("configmap/cfg unchanged"),
        "{ctx}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "cfg",
            "-n",
            "legacy",
            "-o",
            "jsonpath={.data.mesh}"
        ]),
        "1"
    );

    let payload = write("root-cert.pem", "not really a cert\n");
    assert!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "bundle",
            &format!("--from-file={payload}"),
            "-n",
            "legacy"
        ])
        .contains("secret/bundle created"),
        "{ctx}"
    );
    let data = k.ok(&[
        "get",
        "secret",
        "bundle",
        "-n",
        "legacy",
        "-o",
        "jsonpath={.data.root-cert\\.pem}",
    ]);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap(),
        b"not really a cert\n"
    );

    // CRDs at the apiextensions version the server serves.
    let crd = write(
        "crd.yaml",
        if server.kube_version().apiextensions_v1() {
            CRD_V1
        } else {
            CRD_V1BETA1
        },
    );
    assert!(
        k.ok(&["apply", "-f", &crd])
            .contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"),
        "{ctx}"
    );
    let crds = k.ok(&["get", "crd"]);
    assert!(
        crds.starts_with("NAME") && crds.contains("widgets.example.com"),
        "{ctx}: {crds}"
    );
    assert!(
        crds.contains("destinationrules.networking.istio.io"),
        "{ctx}: {crds}"
    );
    let yaml = k.ok(&["get", "crd", "widgets.example.com", "-o", "yaml"]);
    let served = if server.kube_version().apiextensions_v1() {
        "v1"
    } else {
        "v1beta1"
    };
    assert!(
        yaml.contains(&format!("apiVersion: apiextensions.k8s.io/{served}")),
        "{ctx}: {yaml}"
    );
    let widget = write("widget.yaml", WIDGET);
    assert!(
        k.ok(&["apply", "-f", &widget])
            .contains("widget.example.com/w created"),
        "{ctx}"
    );
    assert!(k.ok(&["get", "widgets", "-n", "legacy"]).contains('w'));

    if !server.kube_version().server_side_apply() {
        let out = k.run(&["apply", "--server-side", "-f", &cm]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{ctx}: server-side apply accepted: {err}"
        );
        assert!(err.contains("415: Unsupported Media Type"), "{ctx}: {err}");
    }

    assert!(
        k.ok(&["delete", "cm", "cfg", "-n", "legacy"])
            .contains("configmap \"cfg\" deleted"),
        "{ctx}"
    );
    assert!(
        !k.run(&["get", "cm", "cfg", "-n", "legacy"])
            .status
            .success()
    );
    assert!(k.ok(&["delete", "-f", &crd]).contains("deleted"), "{ctx}");
    assert!(
        k.ok(&["delete", "ns", "legacy"])
            .contains("namespace \"legacy\" deleted"),
        "{ctx}"
    );
    assert!(
        k.ok(&["get", "ns"])
            .lines()
            .all(|l| !l.starts_with("legacy "))
    );
    drop(server);
}

#[test]
fn kubectl_1_32_against_1_14_and_1_19() {
    let Some(bin) = kubectl_bin("32") else {
        return;
    };
    for version in ["1.14", "1.19"] {
        old_server_verbs(&bin, version);
    }
}

/// The dispatcher on PATH picks kubectl.1.32 for these servers and the verbs still work.
#[test]
fn dispatcher_against_1_14_and_1_19() {
    let Some(dir) = kubectl_dir() else {
        return;
    };
    let dispatcher = dir.join("kubectl");
    for version in ["1.14", "1.19"] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(Server::start(Scenario::empty().with_kube_version(version)));
        let cache = tempfile::tempdir().unwrap();
        let out = Command::new(&dispatcher)
            .arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["version", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(
            v["serverVersion"]["gitVersion"],
            format!("v{version}.0"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The fallback is the dispatcher's own 1.32 build, which reports minor "32+".
        assert!(
            v["clientVersion"]["minor"]
                .as_str()
                .is_some_and(|m| m.trim_end_matches('+') == "32"),
            "dispatcher fallback for {version}: {}",
            v["clientVersion"]
        );
        drop(server);
        old_server_verbs(&dispatcher, version);
    }
}
