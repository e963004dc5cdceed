//! `doctor --fix --strict` against kube-sim: the staged rollout makes only ready namespaces
//! STRICT (a namespace Policy `default` on Istio 1.4, a PeerAuthentication `default` later),
//! leaves blocked ones alone, writes an undo file (0600) that `--fix --undo` applies, changes
//! nothing on a second run, and `--dry-run=client -o yaml` prints manifests and sends nothing.

use std::path::{Path, PathBuf};

use crate::doctor_fix::writes;
use clap::Parser as _;
use kube_sim::{Scenario, Server};
use serde_json::Value;

/// `shop`: a probe-less Deployment with its sidecar and its Service (ready). `bookinfo`: a
/// DestinationRule that sends plaintext to `reviews` (blocked by mtls.dr-conflict).
const SHOP_AND_BOOKINFO: &str = r"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx, ports: [{containerPort: 80}]}
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.4.2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 80}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
";

fn scenario(base: &str, extra: &str, dr_version: &str) -> Scenario {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(base);
    let rule = format!(
        "apiVersion: networking.istio.io/{dr_version}\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec: {{host: reviews, trafficPolicy: {{tls: {{mode: DISABLE}}}}}}\n"
    );
    Scenario::from_files(&[path])
        .expect("scenario")
        .with_yaml(&format!("{SHOP_AND_BOOKINFO}---\n{rule}{extra}"))
        .expect("objects")
}

async fn doctor(server: &Server, extra: &[&str]) -> (String, String) {
    let kubeconfig = server.kubeconfig_path().display().to_string();
    let mut argv = vec!["kubectl-meshvm-doctor", "--kubeconfig", kubeconfig.as_str()];
    argv.extend_from_slice(extra);
    let args = meshvm::args::DoctorArgs::try_parse_from(argv).expect("flags parse");
    let opts = meshvm::doctor::DoctorOptions::resolve(args).expect("flags valid");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = meshvm::doctor::run(&opts, &mut out, &mut err, false).await;
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    let outcome = outcome.unwrap_or_else(|e| panic!("doctor {extra:?}: {e}\n{err}"));
    assert_eq!(
        outcome,
        meshvm::errors::Outcome::Success,
        "--strict exits 0: {err}"
    );
    (out, err)
}

struct Era {
    base: &'static str,
    kube: &'static str,
    dr_version: &'static str,
    api_version: &'static str,
    kind: &'static str,
}

const LEGACY: Era = Era {
    base: "legacy-1.4-strict-ready.yaml",
    kube: "1.14",
    dr_version: "v1alpha3",
    api_version: "authentication.istio.io/v1alpha1",
    kind: "Policy",
};
const MODERN: Era = Era {
    base: "modern-1.22.yaml",
    kube: "1.28",
    dr_version: "v1",
    api_version: "security.istio.io/v1",
    kind: "PeerAuthentication",
};

async fn rollout_and_undo(era: &Era, extra: &str) -> (Server, Option<Value>) {
    let server =
        Server::start(scenario(era.base, extra, era.dr_version).with_kube_version(era.kube)).await;
    let policy = |ns: &str| server.object(era.api_version, era.kind, ns, "default");
    let before = policy("shop");
    let dir = tempfile::tempdir().unwrap();
    let undo = dir.path().join("undo.json");
    let undo_arg = undo.to_str().unwrap();

    // GitOps: manifests on stdout, nothing sent.
    server.reset_requests();
    let (out, err) = doctor(
        &server,
        &["--fix", "--strict", "--dry-run=client", "-o", "yaml"],
    )
    .await;
    assert!(writes(&server).is_empty(), "{:?}", writes(&server));
    assert!(out.contains(&format!("kind: {}", era.kind)), "{out}\n{err}");
    assert!(out.contains("namespace: shop"), "{out}");
    assert!(!out.contains("bookinfo"), "{out}");
    assert!(!out.contains("resourceVersion"), "{out}");
    assert!(
        err.contains("bookinfo: blocked by") && err.contains("mtls.dr-conflict"),
        "{err}"
    );
    assert!(!undo.exists());

    // The rollout: shop STRICT, bookinfo untouched, the undo written 0600.
    let (_, err) = doctor(
        &server,
        &["--fix", "--strict", "--yes", "--undo-file", undo_arg],
    )
    .await;
    let shop = policy("shop").unwrap_or_else(|| panic!("shop made STRICT: {err}"));
    match era.kind {
        "Policy" => assert_eq!(
            shop["spec"]["peers"],
            serde_json::json!([{"mtls": {}}]),
            "{shop:#}"
        ),
        _ => assert_eq!(shop["spec"]["mtls"]["mode"], "STRICT", "{shop:#}"),
    }
    assert!(policy("bookinfo").is_none(), "bookinfo is blocked: {err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&undo).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(err.contains("--fix --undo"), "{err}");

    // Idempotent: a second run writes nothing.
    server.reset_requests();
    let again = dir.path().join("again.json");
    let (_, err) = doctor(
        &server,
        &[
            "--fix",
            "--strict",
            "--yes",
            "--undo-file",
            again.to_str().unwrap(),
        ],
    )
    .await;
    assert!(writes(&server).is_empty(), "{:?}\n{err}", writes(&server));
    // Its undo file is there, and undoes nothing.
    let (_, undone) = doctor(
        &server,
        &["--fix", "--undo", again.to_str().unwrap(), "--yes"],
    )
    .await;
    assert!(undone.contains("nothing to undo"), "{undone}");
    assert!(writes(&server).is_empty(), "{:?}", writes(&server));
    assert!(
        err.lines()
            .any(|l| l.starts_with("--fix --strict: already STRICT:")
                && l.contains(" shop")
                && !l.contains("bookinfo")),
        "{err}"
    );
    assert!(err.contains("nothing to apply"), "{err}");

    // Undo: back to before.
    let (_, err) = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    let after = policy("shop");
    match (&before, &after) {
        (None, None) => {}
        (Some(b), Some(a)) => {
            assert_eq!(a["spec"], b["spec"], "{err}");
            assert_eq!(a["metadata"]["labels"], b["metadata"]["labels"], "{err}");
        }
        _ => panic!("not restored: before {before:?}, after {after:?}\n{err}"),
    }
    (server, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_rollout_makes_only_ready_namespaces_strict_and_undoes() {
    let (server, after) = rollout_and_undo(&LEGACY, "").await;
    assert!(after.is_none(), "the created Policy is deleted");
    // bookinfo blocks: the MeshPolicy was never touched.
    assert!(
        server
            .requests()
            .records
            .iter()
            .all(|r| r.method == "GET" || !r.path.contains("meshpolicies")),
        "MeshPolicy written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_rollout_replaces_a_permissive_policy_and_restores_it() {
    let permissive = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop, labels: {team: shop}}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let (_, after) = rollout_and_undo(&MODERN, permissive).await;
    let after = after.expect("restored, not deleted");
    assert_eq!(after["spec"]["mtls"]["mode"], "PERMISSIVE");
    assert_eq!(after["metadata"]["labels"]["team"], "shop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_rollout_creates_and_undo_deletes() {
    let (_, after) = rollout_and_undo(&MODERN, "").await;
    assert!(after.is_none());
}
