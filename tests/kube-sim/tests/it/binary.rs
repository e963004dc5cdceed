//! The `kube-sim serve` binary: ready line, kubeconfig, scenarios, clean exit on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

#[test]
fn serve_prints_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--kube-version", "1.16", "--latency-ms", "1"])
        .arg("--scenario")
        .arg(scenarios.join("legacy-1.4.yaml"))
        .arg("--scenario")
        .arg(scenarios.join("legacy-1.4-strict-ready.yaml"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready https://127.0.0.1:"), "{line:?}");
    let url = line.trim().strip_prefix("ready ").unwrap();
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains(&format!("server: {url}")), "{kc}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_scenario_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--kubeconfig"])
        .arg(dir.path().join("kc"))
        .arg("--scenario")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: scenario object Widget"), "{err}");
    assert!(
        err.contains("load its CustomResourceDefinition first"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// The version and lever flags reach the served API; the kubeconfig names the extra users.
#[test]
fn serve_flags_pick_version_and_levers() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let request_log = dir.path().join("requests.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args([
            "serve",
            "--kube-version",
            "1.14",
            "--user",
            "alice",
            "--impersonator",
            "carol",
            "--namespace-finalize-ms",
            "200",
            "--expire-continue-after-pages",
            "0",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--request-log")
        .arg(&request_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready https://127.0.0.1:"), "{line:?}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let contexts: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(contexts, ["kube-sim", "alice", "carol"]);
            let opts = kube::config::KubeConfigOptions {
                context: Some("alice".into()),
                ..Default::default()
            };
            let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .unwrap();
            let alice = kube::Client::try_from(cfg).unwrap();
            let v = alice.apiserver_version().await.unwrap();
            assert_eq!(v.git_version, "v1.14.0");
            // 1.14 serves CRDs at apiextensions v1beta1 only (the admin sees the 404; alice,
            // bound to nothing, is refused before routing, as the apiserver authorizes first).
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let admin = kube::Client::try_from(
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .unwrap(),
            )
            .unwrap();
            for (client, code) in [(&admin, 404), (&alice, 403)] {
                let req =
                    http::Request::get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
                        .body(Vec::new())
                        .unwrap();
                let resp = client
                    .send(req.map(kube::client::Body::from))
                    .await
                    .unwrap();
                assert_eq!(resp.status(), code);
            }
            // Alice may not impersonate.
            let req = http::Request::get("/api/v1/namespaces")
                .header("Impersonate-User", "bob")
                .body(Vec::new())
                .unwrap();
            let resp = alice.send(req.map(kube::client::Body::from)).await.unwrap();
            assert_eq!(resp.status(), 403);
        });
    }));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON line per request, naming who asked: alice's version, the admin's 404, alice's
    // 403s (RBAC, then impersonation).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&request_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, u64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                l["code"].as_u64().unwrap(),
                l["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    assert_eq!(
        summary,
        [
            ("/version".to_string(), 200, "alice".to_string()),
            (crds.to_string(), 404, "kube-sim".to_string()),
            (crds.to_string(), 403, "alice".to_string()),
            ("/api/v1/namespaces".to_string(), 403, "alice".to_string()),
        ]
    );
    assert!(lines.iter().all(|l| l["verb"].is_string()
        && l["query"].is_string()
        && l["bytes"].as_u64().is_some_and(|b| b > 0)));
}

#[test]
fn unsupported_kube_version_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--kube-version", "1.12", "--kubeconfig"])
        .arg(dir.path().join("kc"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"1.12\" is not supported: give 1.13 … 1.35"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
