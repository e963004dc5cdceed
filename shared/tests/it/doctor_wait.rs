//! `doctor --fix --strict --wait` and the guarded `--fix --undo`, in-process against kube-sim
//! and (for the evidence) a real Prometheus scraping a stand-in for the sidecars' stats
//! endpoint ([`kube_sim::testenv::Exporter`]).
//!
//! - `plaintext_since` counts only plaintext that arrived after the change, also from a client
//!   that began after it, and `scrape_interval` reads the interval from Prometheus's config;
//! - `--wait` without an answer (Prometheus down) stops at the timeout, saying why and how to
//!   undo; `--wait` goes with neither `--dry-run` nor without `--undo-file`;
//! - the undo deletes (or restores) only objects still as the rollout wrote them: one changed
//!   or re-created since is named with the command to inspect it and left alone, the rest are
//!   undone, the run exits 1; a file from before the versions were recorded is undone
//!   unguarded and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;
use kube_sim::testenv::{Exporter, Prometheus};
use kube_sim::{Scenario, Server};
use meshvm::doctor::traffic::{Client, PrometheusOptions};
use meshvm::errors::{Diagnose as _, Outcome};
use serde_json::{Value, json};

/// A ready namespace: a probe-less Deployment with its sidecar, and its Service.
fn namespace(ns: &str) -> String {
    format!(
        r"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: web, image: nginx, ports: [{{containerPort: 80}}]}}
      - {{name: istio-proxy, image: docker.io/istio/proxyv2:1.4.2}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 80, targetPort: 80}}]}}
"
    )
}

fn scenario(base: &str, namespaces: &[&str], extra: &str) -> Scenario {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(base);
    let objects: Vec<String> = namespaces.iter().map(|n| namespace(n)).collect();
    Scenario::from_files(&[path])
        .expect("scenario")
        .with_yaml(&format!("{}---\n{extra}", objects.join("---\n")))
        .expect("objects")
}

struct Ran {
    result: Result<Outcome, meshvm::doctor::Error>,
    err: String,
}

impl Ran {
    fn outcome(&self) -> Outcome {
        match &self.result {
            Ok(o) => *o,
            Err(e) => panic!("{e}\n{}", self.err),
        }
    }
    fn error(&self) -> &meshvm::doctor::Error {
        match &self.result {
            Ok(o) => panic!("expected an error, got {o:?}\n{}", self.err),
            Err(e) => e,
        }
    }
}

async fn doctor(server: &Server, extra: &[&str]) -> Ran {
    let kubeconfig = server.kubeconfig_path().display().to_string();
    let mut argv = vec!["kubectl-meshvm-doctor", "--kubeconfig", kubeconfig.as_str()];
    argv.extend_from_slice(extra);
    let args = meshvm::args::DoctorArgs::try_parse_from(argv).expect("flags parse");
    let opts = meshvm::doctor::DoctorOptions::resolve(args).expect("flags valid");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = meshvm::doctor::run(&opts, &mut out, &mut err, false).await;
    Ran {
        result,
        err: String::from_utf8(err).unwrap(),
    }
}

/// One `istio_requests_total` sample line as a destination sidecar reports it.
fn requests(src: &str, dst: &str, policy: &str, value: u64) -> String {
    let (sn, sw) = src.split_once('/').unwrap();
    let (dn, dw) = dst.split_once('/').unwrap();
    format!(
        "istio_requests_total{{reporter=\"destination\",source_workload=\"{sw}\",source_workload_namespace=\"{sn}\",destination_workload=\"{dw}\",destination_workload_namespace=\"{dn}\",connection_security_policy=\"{policy}\",response_code=\"200\"}} {value}\n"
    )
}

fn exposition(lines: &[String]) -> String {
    format!("# TYPE istio_requests_total counter\n{}", lines.concat())
}

/// Until Prometheus has scraped the exporter's Istio series (at most 30s).
async fn scraped(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.istio_series_now().await.unwrap_or(false) {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape in 30s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plaintext before the mark is in the window but not "since"; growth after it, and a client
/// whose series begins after it, are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_since_counts_only_what_came_after() {
    let old = |v| requests("legacy/batch-reporter", "pay/web", "none", v);
    let mtls = |v| requests("shop/web", "pay/web", "mutual_tls", v);
    let exporter = Exporter::start(&exposition(&[old(5), mtls(10)]));
    let Some(prom) = Prometheus::start_scraping(None, &[exporter.target()], "1s") else {
        return;
    };
    let client =
        Client::new(&PrometheusOptions::resolve(&prom.url, "1h", &[], None).unwrap()).unwrap();
    scraped(&client).await;
    let (interval, why) = client.scrape_interval().await.unwrap();
    assert_eq!(interval, Duration::from_secs(1));
    assert_eq!(why, "job envoy-stats's scrape_interval");

    // Plaintext grows, then stops: it is in the window.
    exporter.set(&exposition(&[old(9), mtls(20)]));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mark = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let since = client.plaintext_since("pay", mark.elapsed()).await.unwrap();
    assert!(since.is_empty(), "old plaintext is not new: {since:?}");
    match client.evidence().await {
        meshvm::doctor::traffic::Evidence::Flows(flows) => assert!(
            flows.iter().any(|f| f.source_workload == "batch-reporter"),
            "{flows:?}"
        ),
        other => panic!("the window holds the old plaintext: {other:?}"),
    }
    // After the mark: more from batch-reporter, and a client that never sent before.
    exporter.set(&exposition(&[
        old(11),
        mtls(30),
        requests("unknown/unknown", "pay/web", "none", 1),
    ]));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut since = client.plaintext_since("pay", mark.elapsed()).await.unwrap();
    since.sort_by(|a, b| a.source_workload.cmp(&b.source_workload));
    let got: Vec<(String, f64)> = since
        .iter()
        .map(|f| (f.source_workload.clone(), f.count))
        .collect();
    assert_eq!(
        got,
        [
            ("batch-reporter".to_string(), 2.0),
            ("unknown".to_string(), 1.0)
        ],
        "{since:?}"
    );
    assert!(
        client
            .plaintext_since("shop", mark.elapsed())
            .await
            .unwrap()
            .is_empty(),
        "only the namespace asked about"
    );
}

/// Prometheus unreachable before the rollout: `--wait` cannot learn its scrape interval, so
/// nothing is applied. A Prometheus without Istio series: a `--timeout` shorter than two scrape
/// intervals is refused before anything is written; a longer one passes without a healthy
/// answer, so the rollout stops after the first namespace, names what was and was not applied,
/// and hints the undo; the undo file holds only what was applied. Without `--prometheus` the
/// checks alone decide. `--wait` with `--dry-run`, or without `--undo-file`, is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_without_evidence_stops_at_the_timeout() {
    let server = Server::start(
        scenario("legacy-1.4-strict-ready.yaml", &["cart", "pay"], "").with_kube_version("1.14"),
    )
    .await;
    let policy =
        |ns: &str| server.object("authentication.istio.io/v1alpha1", "Policy", ns, "default");
    let dir = tempfile::tempdir().unwrap();
    let undo = dir.path().join("undo.json");
    let undo_arg = undo.to_str().unwrap();
    let rollout = |url: String, timeout: &'static str| {
        let server = &server;
        async move {
            doctor(
                server,
                &[
                    "--prometheus",
                    &url,
                    "--fix",
                    "--strict",
                    "-n",
                    "cart,pay",
                    "--wait",
                    "--timeout",
                    timeout,
                    "--yes",
                    "--undo-file",
                    undo_arg,
                ],
            )
            .await
        }
    };
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let ran = rollout(closed, "2s").await;
    let message = ran.error().to_string();
    assert!(
        message.starts_with("--wait: cannot read Prometheus's configuration for its scrape interval: cannot reach Prometheus at")
            && message.ends_with("; nothing was applied"),
        "{message}"
    );
    assert!(policy("cart").is_none() && !undo.exists(), "{}", ran.err);

    // A Prometheus that scrapes no sidecar.
    let exporter = Exporter::start("# TYPE x_total counter\nx_total 1\n");
    let Some(prom) = Prometheus::start_scraping(None, &[exporter.target()], "1s") else {
        return;
    };
    let ran = rollout(prom.url.clone(), "1s").await;
    let e = ran.error();
    assert_eq!(
        e.to_string(),
        "--timeout 1s is shorter than two of Prometheus's scrape intervals (1s, the global scrape_interval): --wait could never see a namespace healthy; nothing was applied"
    );
    assert_eq!(e.hint().unwrap(), "give --timeout 2s or more (0: no limit)");
    assert!(policy("cart").is_none() && !undo.exists(), "{}", ran.err);

    let started = Instant::now();
    let ran = rollout(prom.url.clone(), "4s").await;
    let took = started.elapsed();
    let e = ran.error();
    assert_eq!(
        e.to_string(),
        format!(
            "--wait: cart is not healthy after it was made STRICT: no healthy observation within 4s (no evidence: Prometheus at {} holds no Istio series now); the rollout stopped there. Applied: Policy cart/default. Not applied: Policy pay/default",
            prom.url
        ),
        "{}",
        ran.err
    );
    assert!(
        took < Duration::from_secs(20),
        "bounded by --timeout: {took:?}"
    );
    let hint = e.hint().unwrap();
    assert!(
        hint.starts_with(&format!(
            "undo what was applied with `kubectl meshvm doctor --kubeconfig {} --fix --undo {undo_arg}",
            server.kubeconfig_path().display()
        )),
        "{hint}"
    );
    assert!(
        ran.err.contains("--fix --strict --wait: cart: STRICT; checking it again, and asking Prometheus for plaintext into it since, after two scrape intervals (1s, the global scrape_interval); at most 4s")
            && ran.err.contains("--fix --strict --wait: cart: waiting: no evidence: Prometheus at "),
        "{}",
        ran.err
    );
    assert!(policy("cart").is_some() && policy("pay").is_none());
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&undo).unwrap()).unwrap();
    assert_eq!(file["delete"].as_array().unwrap().len(), 1, "{file:#}");
    assert_eq!(file["delete"][0]["metadata"]["namespace"], "cart");
    assert_eq!(file["written"][0]["namespace"], "cart", "{file:#}");
    assert!(
        !ran.err.contains("would create"),
        "the table says what was done: {}",
        ran.err
    );
    assert!(
        ran.err
            .lines()
            .any(|l| l.contains("not created") && l.contains("pay")),
        "{}",
        ran.err
    );

    // The undo as hinted takes back cart.
    let undone = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(undone.outcome(), Outcome::Success, "{}", undone.err);
    assert!(policy("cart").is_none(), "{}", undone.err);

    // A check failing after the write stops the rollout at once: right after cart is made
    // STRICT, someone adds a DestinationRule that sends its Service plaintext.
    std::fs::remove_file(&undo).unwrap();
    let dr_api = kube::Api::<kube::core::DynamicObject>::namespaced_with(
        server.client(),
        "cart",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(
                "networking.istio.io",
                "v1alpha3",
                "DestinationRule",
            ),
            "destinationrules",
        ),
    );
    let someone = async {
        while policy("cart").is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dr = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
                        "metadata": {"name": "web", "namespace": "cart"},
                        "spec": {"host": "web", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}});
        dr_api
            .create(
                &kube::api::PostParams::default(),
                &serde_json::from_value(dr).unwrap(),
            )
            .await
            .unwrap();
    };
    let (ran, ()) = tokio::join!(rollout(prom.url.clone(), "30s"), someone);
    let message = ran.error().to_string();
    assert!(
        message.starts_with("--wait: cart is not healthy after it was made STRICT: doctor's checks now fail for it: mtls.dr-conflict: ")
            && message.ends_with("Applied: Policy cart/default. Not applied: Policy pay/default"),
        "{message}\n{}",
        ran.err
    );
    assert!(policy("pay").is_none());
    let undone = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(undone.outcome(), Outcome::Success, "{}", undone.err);
    dr_api
        .delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap();

    // Without --prometheus: the checks alone, healthy at once.
    let again = dir.path().join("again.json");
    let ran = doctor(
        &server,
        &[
            "--fix",
            "--strict",
            "-n",
            "cart,pay",
            "--wait",
            "--yes",
            "--undo-file",
            again.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    for ns in ["cart", "pay"] {
        assert!(
            ran.err
                .contains(&format!("--fix --strict --wait: {ns}: healthy ")),
            "{}",
            ran.err
        );
        assert!(policy(ns).is_some());
    }

    // Usage errors.
    let kubeconfig = server.kubeconfig_path().display().to_string();
    let parse = |extra: &[&str]| {
        let mut argv = vec!["kubectl-meshvm-doctor", "--kubeconfig", kubeconfig.as_str()];
        argv.extend_from_slice(extra);
        meshvm::args::DoctorArgs::try_parse_from(argv)
            .map_err(|e| e.to_string())
            .and_then(|a| meshvm::doctor::DoctorOptions::resolve(a).map_err(|e| e.to_string()))
    };
    let e = parse(&[
        "--fix",
        "--strict",
        "--wait",
        "--undo-file",
        "u",
        "--dry-run=client",
    ])
    .unwrap_err();
    assert!(e.contains("--wait watches a rollout that writes"), "{e}");
    let e = parse(&["--fix", "--strict", "--wait"]).unwrap_err();
    assert!(e.contains("--undo-file"), "{e}");
    let e = parse(&["--fix", "--strict", "--timeout", "1m"]).unwrap_err();
    assert!(e.contains("--wait"), "{e}");
    let e = parse(&[
        "--fix",
        "--strict",
        "--wait",
        "--undo-file",
        "u",
        "--timeout",
        "soon",
    ])
    .unwrap_err();
    assert!(e.contains("soon"), "{e}");
}

/// Change the stored object: a label added by someone else.
/// `doctor --fix --strict -n NAMESPACES --yes --undo-file DIR/undo.json`: the folder (kept
/// alive by the caller), the undo file and the run.
async fn rollout(
    server: &Server,
    namespaces: &str,
) -> (tempfile::TempDir, std::path::PathBuf, Ran) {
    let dir = tempfile::tempdir().unwrap();
    let undo = dir.path().join("undo.json");
    let undo_arg = undo.to_str().unwrap().to_owned();
    let ran = doctor(
        server,
        &[
            "--fix",
            "--strict",
            "-n",
            namespaces,
            "--yes",
            "--undo-file",
            &undo_arg,
        ],
    )
    .await;
    (dir, undo, ran)
}

async fn touch(server: &Server, api_version: &str, kind: &str, plural: &str, ns: &str) {
    let (group, version) = api_version.split_once('/').unwrap();
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        plural,
    );
    let api: kube::Api<kube::core::DynamicObject> =
        kube::Api::namespaced_with(server.client(), ns, &ar);
    api.patch(
        "default",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"owner": "someone-else"}}})),
    )
    .await
    .expect("patch");
}

/// Legacy: three namespaces made STRICT; since, one Policy was changed by someone else and one
/// deleted and created again (same name and content, another uid). The undo deletes only the
/// untouched one, names the others with the command to inspect them, and exits 1; run again,
/// it changes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_undo_deletes_only_what_is_still_as_written() {
    const API: &str = "authentication.istio.io/v1alpha1";
    let server = Server::start(
        scenario("legacy-1.4-strict-ready.yaml", &["cart", "pay", "shop"], "")
            .with_kube_version("1.14"),
    )
    .await;
    let (dir, undo, ran) = rollout(&server, "cart,pay,shop").await;
    let undo_arg = undo.to_str().unwrap();
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&undo).unwrap()).unwrap();
    let recorded: Vec<&str> = file["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, ["cart", "pay", "shop"], "{file:#}");
    let policy = |ns: &str| server.object(API, "Policy", ns, "default");
    let cart = policy("cart").unwrap();
    assert_eq!(file["written"][0]["uid"], cart["metadata"]["uid"]);
    assert_eq!(
        file["written"][0]["resourceVersion"],
        cart["metadata"]["resourceVersion"]
    );

    touch(&server, API, "Policy", "policies", "pay").await;
    let mut again = policy("shop").unwrap();
    let api = kube::Api::<kube::core::DynamicObject>::namespaced_with(
        server.client(),
        "shop",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("authentication.istio.io", "v1alpha1", "Policy"),
            "policies",
        ),
    );
    api.delete("default", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    for key in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
        again["metadata"].as_object_mut().unwrap().remove(key);
    }
    api.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(again).unwrap(),
    )
    .await
    .unwrap();

    let ran = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(ran.outcome(), Outcome::Findings, "exit 1: {}", ran.err);
    assert!(policy("cart").is_none(), "untouched: undone. {}", ran.err);
    assert!(
        policy("pay").is_some() && policy("shop").is_some(),
        "{}",
        ran.err
    );
    let kubeconfig = server.kubeconfig_path().display().to_string();
    for ns in ["pay", "shop"] {
        let line = ran
            .err
            .lines()
            .find(|l| l.starts_with(&format!("--fix --undo: refused Policy {ns}/default: changed or replaced since the rollout wrote it (uid ")))
            .unwrap_or_else(|| panic!("{ns}: {}", ran.err));
        assert!(
            line.ends_with(&format!(
                ": left as it is; inspect it with `kubectl --kubeconfig {kubeconfig} get policies.authentication.istio.io default -n {ns} -o yaml` and restore or delete it yourself if it should go"
            )),
            "{line}"
        );
    }
    // The hinted command runs as printed (the real kubectl).
    if let Some(kubectl) = kube_sim::testenv::require_kubectl() {
        let line = ran
            .err
            .lines()
            .find(|l| l.contains("refused Policy pay/default"))
            .unwrap();
        let command = line.split('`').nth(1).unwrap();
        // The temporary paths need no quoting.
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "kubectl");
        let out = std::process::Command::new(kubectl)
            .args(&words[1..])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && shown.contains("owner: someone-else"),
            "`{command}`: {shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Again: cart is gone (already), the others still refused; nothing else is written.
    server.reset_requests();
    let ran = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(ran.outcome(), Outcome::Findings, "{}", ran.err);
    let writes: Vec<String> = server
        .requests()
        .records
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes.len(),
        3,
        "three guarded deletes, none landing: {writes:?}"
    );
    assert!(policy("pay").is_some() && policy("shop").is_some());

    // A file from before the versions were recorded: undone unguarded, and it says so.
    let old = dir.path().join("old.json");
    std::fs::write(
        &old,
        serde_json::to_string(&json!({
            "kind": "MeshvmStrictUndo",
            "context": file["context"],
            "restore": [],
            "delete": [{"apiVersion": API, "kind": "Policy", "metadata": {"name": "default", "namespace": "pay"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    let ran = doctor(
        &server,
        &["--fix", "--undo", old.to_str().unwrap(), "--yes"],
    )
    .await;
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    assert!(
        ran.err.contains("records no versions of what the rollout wrote (an undo file of meshvm before they were recorded): not guarded, so Policy pay/default is replaced or deleted as it is now"),
        "{}",
        ran.err
    );
    assert!(policy("pay").is_none());
}

/// Modern: the rollout replaced shop's PERMISSIVE PeerAuthentication and created pay's. Someone
/// changed shop's since: the undo leaves it (as they left it) and deletes pay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_undo_restores_only_what_is_still_as_written() {
    const API: &str = "security.istio.io/v1";
    let permissive = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop, labels: {team: shop}}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let server = Server::start(
        scenario("modern-1.22.yaml", &["pay", "shop"], permissive).with_kube_version("1.28"),
    )
    .await;
    let (dir, undo, ran) = rollout(&server, "pay,shop").await;
    let undo_arg = undo.to_str().unwrap();
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    let pa = |ns: &str| server.object(API, "PeerAuthentication", ns, "default");
    assert_eq!(pa("shop").unwrap()["spec"]["mtls"]["mode"], "STRICT");

    // Untouched, the restore lands (and a second undo changes nothing).
    let copy = dir.path().join("copy.json");
    std::fs::copy(&undo, &copy).unwrap();
    let ran = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    assert_eq!(pa("shop").unwrap()["spec"]["mtls"]["mode"], "PERMISSIVE");
    assert!(pa("pay").is_none());
    let ran = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(ran.outcome(), Outcome::Success, "idempotent: {}", ran.err);

    // Roll out again; someone edits shop's; the undo leaves it.
    std::fs::remove_file(&undo).unwrap();
    let ran = doctor(
        &server,
        &[
            "--fix",
            "--strict",
            "-n",
            "pay,shop",
            "--yes",
            "--undo-file",
            undo_arg,
        ],
    )
    .await;
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    touch(
        &server,
        API,
        "PeerAuthentication",
        "peerauthentications",
        "shop",
    )
    .await;
    let ran = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(ran.outcome(), Outcome::Findings, "{}", ran.err);
    let shop = pa("shop").unwrap();
    assert_eq!(
        shop["spec"]["mtls"]["mode"], "STRICT",
        "left as they left it"
    );
    assert_eq!(shop["metadata"]["labels"]["owner"], "someone-else");
    assert!(pa("pay").is_none(), "{}", ran.err);
    assert!(
        ran.err.contains("refused PeerAuthentication shop/default: changed or replaced since the rollout wrote it")
            && ran.err.contains(" get peerauthentications.security.istio.io default -n shop -o yaml`"),
        "{}",
        ran.err
    );
}

/// A write the API server refuses (403 on pay's Policy) stops the rollout; the undo file keeps
/// only what was written (cart), so its undo is complete and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_leaves_no_undo_entry() {
    let server = Server::start(
        scenario("legacy-1.4-strict-ready.yaml", &["cart", "pay", "shop"], "")
            .with_kube_version("1.14"),
    )
    .await;
    server.deny("create", "policies.authentication.istio.io", Some("pay"));
    let (_dir, undo, ran) = rollout(&server, "cart,pay,shop").await;
    let undo_arg = undo.to_str().unwrap();
    let message = ran.error().to_string();
    assert!(
        message.contains("forbidden") || message.contains("403"),
        "{message}\n{}",
        ran.err
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&undo).unwrap()).unwrap();
    let deletes: Vec<&str> = file["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(deletes, ["cart"], "{file:#}");
    server.allow_all();
    let ran = doctor(&server, &["--fix", "--undo", undo_arg, "--yes"]).await;
    assert_eq!(ran.outcome(), Outcome::Success, "{}", ran.err);
    assert!(
        server
            .object(
                "authentication.istio.io/v1alpha1",
                "Policy",
                "cart",
                "default"
            )
            .is_none()
    );
}
