//! Real kubectl (1.27, 1.32, 1.33) against a fresh sim: the verbs meshvm's users run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use kube_sim::{Scenario, Server};

/// The folder holding `kubectl.1.NN`, found as the kubectl dispatcher on PATH resolves.
fn kubectl_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
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
    let Some(dir) = kubectl_dir() else {
        // Not an error: machines without kubectl cannot run this test, and say so.
        eprintln!("skipping kubectl {minor} matrix: no kubectl on PATH");
        return;
    };
    let bin = dir.join(format!("kubectl.1.{minor}"));
    if !bin.is_file() {
        eprintln!(
            "skipping kubectl 1.{minor} matrix: {} does not exist",
            bin.display()
        );
        return;
    }
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
        eprintln!("skipping: no kubectl on PATH");
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
        eprintln!("skipping: no kubectl on PATH");
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
