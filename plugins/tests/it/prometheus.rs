//! `kubectl meshvm doctor --prometheus`: traffic evidence from a real Prometheus (Debian's
//! `prometheus`, its TSDB made by `promtool` from tests/fixtures/prometheus), against the runbook's
//! Istio 1.4 cluster with bookinfo and a sidecar-less `legacy/batch-reporter`.

use kube_sim::testenv::{Exporter, Prometheus};
use kube_sim::{Scenario, Server};
use serde_json::{Value, json};

use crate::common::sim::{self, DOCTOR, Run};

fn fixture(name: &str) -> std::path::PathBuf {
    sim::repo().join("tests/fixtures/prometheus").join(name)
}

fn deployment(ns: &str, name: &str, app: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}},
                                 "spec": {"containers": [{"name": app, "image": format!("{app}:1"),
                                                          "ports": [{"containerPort": 9080}]}]}}}})
}

/// Bookinfo (injected) and `legacy` (not), over `base`.
fn with_bookinfo(base: Scenario) -> Scenario {
    base.with_objects([
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "bookinfo", "labels": {"istio-injection": "enabled"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy"}}),
        deployment("bookinfo", "reviews-v1", "reviews"),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "reviews", "namespace": "bookinfo"},
               "spec": {"selector": {"app": "reviews"},
                        "ports": [{"name": "http", "port": 9080}]}}),
        deployment("legacy", "batch-reporter", "batch-reporter"),
    ])
}

/// The runbook's 1.4 cluster, STRICT-ready (the Gotchas' DestinationRules), with bookinfo.
fn cluster() -> Scenario {
    with_bookinfo(sim::scenario("legacy-1.4-strict-ready.yaml"))
}

async fn doctor(server: &Server, extra: &[&str]) -> (Run, Value) {
    let mut args = sim::args(extra);
    args.extend(sim::args(&["-o", "json"]));
    let run = sim::run(DOCTOR, server, &args).await;
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{}", run.show()));
    (run, report)
}

fn traffic(report: &Value) -> Vec<&Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "traffic.plaintext")
        .collect()
}

fn row<'a>(report: &'a Value, ns: &str) -> &'a Value {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == ns)
        .unwrap_or_else(|| panic!("no row {ns}: {report:#}"))
}

/// Plaintext from legacy/batch-reporter into bookinfo: one warning naming it (requests and TCP,
/// with rates), not the mTLS or outbound-reported series; bookinfo is blocked by it. The bearer
/// token read from a file reaches Prometheus and no output, even at debug verbosity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_into_bookinfo_names_batch_reporter_and_blocks_bookinfo() {
    let Some(prom) = Prometheus::start(Some(&fixture("plaintext-into-bookinfo.om"))) else {
        return;
    };
    let server = Server::start(cluster()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-8f3a1c\n").unwrap();
    let header = format!("Authorization: Bearer @{}", token.display());
    let (run, report) = doctor(
        &server,
        &["--prometheus", &prom.url, "--prometheus-header", &header],
    )
    .await;
    let found = traffic(&report);
    assert_eq!(found.len(), 1, "one finding for bookinfo: {report:#}");
    let f = found[0];
    assert_eq!(f["severity"], "warn", "{f:#}");
    assert_eq!(f["breaks"], "when-strict");
    assert_eq!(f["namespaces"], json!(["bookinfo"]));
    assert_eq!(f["object"], "Namespace bookinfo");
    let message = f["message"].as_str().unwrap();
    // 1 req/s for an hour: increase() extrapolates a little past the samples, so ~3600-3700
    // in 24h, i.e. ~0.042 req/s over the window.
    assert!(
        message.contains("legacy/batch-reporter → bookinfo/reviews-v1 (3")
            && message.contains(" requests, 0.04")
            && message.contains("legacy/batch-reporter → bookinfo/mysqldb (3")
            && message.contains(" TCP connections, 0.004 conn/s")
            && message.contains("bookinfo is PERMISSIVE"),
        "{message}"
    );
    assert!(
        !message.contains("productpage") && !message.contains("unknown"),
        "mTLS and outbound-reported series are not plaintext evidence: {message}"
    );
    let hint = f["hint"].as_str().unwrap();
    assert!(
        hint.contains(" label namespace legacy istio-injection=enabled --overwrite`"),
        "{hint}"
    );
    let bookinfo = row(&report, "bookinfo");
    assert_eq!(bookinfo["ready"], false, "{bookinfo}");
    assert!(
        bookinfo["blockers"]
            .as_array()
            .unwrap()
            .contains(&json!("traffic.plaintext")),
        "{bookinfo}"
    );
    assert!(
        !row(&report, "legacy")["blockers"]
            .as_array()
            .unwrap()
            .contains(&json!("traffic.plaintext")),
        "only the destination is blocked: {report:#}"
    );
    assert!(!run.stdout.contains("tok-8f3a1c") && !run.stderr.contains("tok-8f3a1c"));
    // The table says the same, and debug logs do not carry the token either.
    let mut args = sim::args(&["--prometheus", &prom.url, "--prometheus-header", &header]);
    args.push("-v".into());
    let table = sim::run_with(DOCTOR, &server, &args, Some("debug")).await;
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("traffic.plaintext") && l.contains("warn")),
        "{}",
        table.show()
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("bookinfo") && l.contains("blocked")),
        "{}",
        table.show()
    );
    assert!(
        !table.stdout.contains("tok-8f3a1c") && !table.stderr.contains("tok-8f3a1c"),
        "{}",
        table.show()
    );
}

/// bookinfo already STRICT (a namespace Policy `default` with an mtls peer, 1.4's way) and still
/// receiving plaintext: a failure, breaking now, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_namespace_receiving_plaintext_fails() {
    let Some(prom) = Prometheus::start(Some(&fixture("plaintext-into-bookinfo.om"))) else {
        return;
    };
    let server = Server::start(cluster().with_objects([json!({
        "apiVersion": "authentication.istio.io/v1alpha1", "kind": "Policy",
        "metadata": {"name": "default", "namespace": "bookinfo"},
        "spec": {"peers": [{"mtls": {}}]}})]))
    .await;
    let (run, report) = doctor(&server, &["--prometheus", &prom.url]).await;
    assert_eq!(run.code, 1, "{}", run.show());
    let found = traffic(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["severity"], "fail", "{:#}", found[0]);
    assert_eq!(found[0]["breaks"], "now");
    let message = found[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("bookinfo is STRICT (Policy bookinfo/default) yet received plaintext")
            && message.contains("legacy/batch-reporter → bookinfo/reviews-v1"),
        "{message}"
    );
    assert_eq!(row(&report, "bookinfo")["ready"], false);
}

/// Prometheus down, or a URL that is not its API: a warning saying there is no evidence; the
/// exit code follows --fail-on (the STRICT-ready cluster has no failure of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prometheus_is_a_warning_never_a_pass() {
    let server = Server::start(sim::scenario("legacy-1.4-strict-ready.yaml")).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (run, report) = doctor(&server, &["--prometheus", &closed]).await;
    assert_eq!(report["summary"]["fail"], 0, "precondition: {report:#}");
    assert_eq!(
        run.code,
        0,
        "a warning exits 0 with --fail-on=fail: {}",
        run.show()
    );
    let found = traffic(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["severity"], "warn");
    let message = found[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("no evidence: cannot reach Prometheus at {closed}")),
        "{message}"
    );
    assert_eq!(
        found[0]["namespaces"],
        json!([]),
        "it concerns every namespace"
    );
    let (strict, _) = doctor(&server, &["--prometheus", &closed, "--fail-on", "warn"]).await;
    assert_eq!(strict.code, 1, "{}", strict.show());

    // A real Prometheus under a wrong path prefix answers 404.
    let Some(prom) = Prometheus::start(None) else {
        return;
    };
    let wrong = format!("{}/prometheus", prom.url);
    let (_, report) = doctor(&server, &["--prometheus", &wrong]).await;
    let message = traffic(&report)[0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!(
            "no evidence: HTTP 404 Not Found from {wrong}/api/v1/query is not Prometheus's query API"
        )),
        "{message}"
    );
}

/// A Prometheus that holds no Istio series (it scrapes no sidecar): a warning, not a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_metrics_are_no_evidence() {
    let Some(prom) = Prometheus::start(Some(&fixture("no-istio-series.om"))) else {
        return;
    };
    let server = Server::start(cluster()).await;
    let (_, report) = doctor(&server, &["--prometheus", &prom.url, "--window", "2h"]).await;
    let found = traffic(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["severity"], "warn");
    let message = found[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no evidence: no istio_requests_total series (nor istio_tcp_connections_opened_total) with reporter=\"destination\" in the last 2h"),
        "{message}"
    );
    assert_ne!(
        row(&report, "bookinfo")["blockers"],
        json!(["traffic.plaintext"]),
        "no evidence does not block"
    );
}

/// Bad flags are usage errors naming the flag, before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prometheus_flags_are_refused() {
    let server = Server::start(sim::legacy()).await;
    for (args, says) in [
        (
            vec!["--prometheus", "prometheus:9090"],
            "--prometheus prometheus:9090: not an http:// or https:// URL",
        ),
        (
            vec!["--prometheus", "http://p:9090", "--window", "1day"],
            "--window 1day: not a duration",
        ),
        (
            vec![
                "--prometheus",
                "http://p:9090",
                "--prometheus-header",
                "Authorization: Bearer s3cret",
            ],
            "the credential must come from a file",
        ),
        (vec!["--window", "24h"], "--prometheus"),
    ] {
        let run = sim::run(DOCTOR, &server, &sim::args(&args)).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.show());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.show());
        assert!(!run.stderr.contains("s3cret"), "{}", run.show());
    }
    let run = sim::run(
        DOCTOR,
        &server,
        &sim::args(&[
            "--prometheus",
            "http://127.0.0.1:9",
            "--prometheus-header",
            "Authorization: Bearer @/nonexistent/token",
        ]),
    )
    .await;
    assert_ne!(run.code, 0, "{}", run.show());
    assert!(
        run.stderr
            .contains("--prometheus-header authorization: cannot read /nonexistent/token"),
        "{}",
        run.show()
    );
    assert!(run.stdout.is_empty(), "no report: {}", run.show());
}

/// Prometheus behind TLS and basic auth (its own web config): with `--prometheus-ca` and the
/// credential from a file doctor gets the evidence; without the CA, or without the header, it
/// says why there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_credentials_from_files() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("tls.crt"), cert.pem()).unwrap();
    std::fs::write(path("tls.key"), key.serialize_pem()).unwrap();
    // base64("meshvm:s3cret-basic"); the bcrypt hash of s3cret-basic (crypt(3), $2b$, cost 10).
    std::fs::write(path("basic"), "bWVzaHZtOnMzY3JldC1iYXNpYw==\n").unwrap();
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  meshvm: $2b$10$6qf/CaPNE71Dz3rmWDySYu7r0W4yvprdYe4urdCuujlVNwZ1TSWWe\n",
        path("tls.crt").display(),
        path("tls.key").display()
    );
    let Some(prom) =
        Prometheus::start_with_web_config(Some(&fixture("plaintext-into-bookinfo.om")), Some(&web))
    else {
        return;
    };
    let url = prom.url.replace("http://", "https://");
    let server = Server::start(cluster()).await;
    let ca_file = path("ca.pem").display().to_string();
    let header = format!("Authorization: Basic @{}", path("basic").display());
    let (run, report) = doctor(
        &server,
        &[
            "--prometheus",
            &url,
            "--prometheus-ca",
            &ca_file,
            "--prometheus-header",
            &header,
        ],
    )
    .await;
    let found = traffic(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .contains("legacy/batch-reporter → bookinfo/reviews-v1"),
        "{:#}",
        found[0]
    );
    assert!(
        !run.stdout.contains("bWVzaHZt") && !run.stderr.contains("bWVzaHZt"),
        "{}",
        run.show()
    );
    // The re-check names the file, not its content.
    assert!(
        found[0]["hint"].as_str().unwrap().contains(&format!(
            "--prometheus-header 'authorization: Basic @{}'",
            path("basic").display()
        )),
        "{:#}",
        found[0]
    );
    // No credential: Prometheus answers 401.
    let (_, report) = doctor(
        &server,
        &["--prometheus", &url, "--prometheus-ca", &ca_file],
    )
    .await;
    let message = traffic(&report)[0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("no evidence: HTTP 401 Unauthorized from ")
            && message.contains("Prometheus wants credentials"),
        "{message}"
    );
    // Not the CA that signed it: the system's roots do not know it.
    let (_, report) = doctor(
        &server,
        &["--prometheus", &url, "--prometheus-header", &header],
    )
    .await;
    let message = traffic(&report)[0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!("no evidence: cannot reach Prometheus at {url}"))
            && message.contains("invalid peer certificate: UnknownIssuer")
            && message.contains("--prometheus-ca FILE"),
        "{message}"
    );
}

/// A namespace `shop` with a probe-less Deployment (its sidecar injected) and its Service.
fn with_shop(base: Scenario) -> Scenario {
    base.with_objects([
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [
                                         {"name": "web", "image": "nginx:1",
                                          "ports": [{"containerPort": 80}]},
                                         {"name": "istio-proxy",
                                          "image": "docker.io/istio/proxyv2:1.4.2"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}),
    ])
}

/// The "done when", as a user runs it: Prometheus holds plaintext from
/// legacy/batch-reporter into bookinfo/reviews-v1; `doctor --prometheus URL -o json` names
/// batch-reporter; `--fix --strict --yes --undo-file U` makes shop STRICT and not bookinfo,
/// writes U (0600); `--fix --undo U --yes` removes what it added.
async fn done_when(base: Scenario, api_version: &str, kind: &str) {
    let Some(prom) = Prometheus::start(Some(&fixture("plaintext-into-bookinfo.om"))) else {
        return;
    };
    let server = Server::start(with_shop(with_bookinfo(base))).await;
    let (run, report) = doctor(&server, &["--prometheus", &prom.url]).await;
    assert_eq!(run.code, 0, "{}", run.show());
    let found = traffic(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .contains("legacy/batch-reporter → bookinfo/reviews-v1"),
        "{:#}",
        found[0]
    );
    assert_eq!(row(&report, "shop")["ready"], true, "{report:#}");
    let before = server.objects(api_version, kind);

    let dir = tempfile::tempdir().unwrap();
    let undo = dir.path().join("undo.json");
    let undo_arg = undo.to_str().unwrap();
    let run = sim::run(
        DOCTOR,
        &server,
        &sim::args(&[
            "--prometheus",
            &prom.url,
            "--fix",
            "--strict",
            "--yes",
            "--undo-file",
            undo_arg,
        ]),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    let shop = server
        .object(api_version, kind, "shop", "default")
        .unwrap_or_else(|| panic!("shop made STRICT: {}", run.show()));
    match kind {
        "Policy" => assert_eq!(shop["spec"], json!({"peers": [{"mtls": {}}]}), "{shop:#}"),
        _ => assert_eq!(
            shop["spec"],
            json!({"mtls": {"mode": "STRICT"}}),
            "{shop:#}"
        ),
    }
    assert!(
        server
            .object(api_version, kind, "bookinfo", "default")
            .is_none(),
        "bookinfo receives plaintext: {}",
        run.show()
    );
    assert!(
        run.stderr.contains("bookinfo: blocked by") && run.stderr.contains("traffic.plaintext"),
        "{}",
        run.show()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&undo).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&undo).unwrap()).unwrap();
    assert!(
        file["written"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["namespace"] == "shop" && w["uid"] == shop["metadata"]["uid"]),
        "{file:#}"
    );

    let run = sim::run(
        DOCTOR,
        &server,
        &sim::args(&["--fix", "--undo", undo_arg, "--yes"]),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(
        server.objects(api_version, kind),
        before,
        "what it added is gone: {}",
        run.show()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_when_legacy_rollout_with_evidence_makes_shop_strict_not_bookinfo_and_undoes() {
    done_when(
        cluster().with_kube_version("1.14"),
        "authentication.istio.io/v1alpha1",
        "Policy",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_when_modern_rollout_with_evidence_makes_shop_strict_not_bookinfo_and_undoes() {
    done_when(
        sim::scenario("modern-1.22.yaml").with_kube_version("1.28"),
        "security.istio.io/v1",
        "PeerAuthentication",
    )
    .await;
}

/// One `istio_requests_total` sample as a destination sidecar exposes it.
fn requests(src: &str, dst: &str, policy: &str, value: u64) -> String {
    let (sn, sw) = src.split_once('/').unwrap();
    let (dn, dw) = dst.split_once('/').unwrap();
    format!(
        "istio_requests_total{{reporter=\"destination\",source_workload=\"{sw}\",source_workload_namespace=\"{sn}\",destination_workload=\"{dw}\",destination_workload_namespace=\"{dn}\",connection_security_policy=\"{policy}\",response_code=\"200\"}} {value}\n"
    )
}

/// `--wait` with a real Prometheus scraping the sidecars' stand-in every second: cart (old,
/// flat plaintext into it does not count) is checked healthy; right after pay is made STRICT a
/// client starts sending it plaintext, so the rollout stops there: shop is not applied, exit 1,
/// and the hinted undo runs as printed and takes back cart and pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_stops_before_the_next_namespace_at_new_plaintext() {
    let base = vec![
        "# TYPE istio_requests_total counter\n".to_string(),
        requests("legacy/batch-reporter", "cart/web", "none", 3),
        requests("shop/web", "pay/web", "mutual_tls", 10),
    ];
    let exporter = Exporter::start(&base.concat());
    let Some(prom) = Prometheus::start_scraping(None, &[exporter.target()], "1s") else {
        return;
    };
    let mut scenario = sim::scenario("legacy-1.4-strict-ready.yaml").with_kube_version("1.14");
    for ns in ["cart", "pay"] {
        scenario = scenario.with_objects([json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}})]);
    }
    let server = Server::start(with_shop(scenario)).await;
    // Until Prometheus has scraped the stand-in once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, report) = doctor(&server, &["--prometheus", &prom.url]).await;
        if traffic(&report).iter().any(|f| f["severity"] == "pass") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not scraped: {report:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let policy =
        |ns: &str| server.object("authentication.istio.io/v1alpha1", "Policy", ns, "default");
    let dir = tempfile::tempdir().unwrap();
    let undo = dir.path().join("undo.json");
    let undo_arg = undo.to_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let argv = sim::args(&[
        "--prometheus",
        &prom.url,
        "--fix",
        "--strict",
        "-n",
        "cart,pay,shop",
        "--wait",
        "--timeout",
        "60s",
        "--yes",
        "--undo-file",
        &undo_arg,
    ]);
    let rollout = sim::run(DOCTOR, &server, &argv);
    // A client that starts sending pay plaintext as soon as pay is STRICT.
    let client = async {
        while policy("pay").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut now = base.clone();
        now.push(requests("legacy/batch-reporter", "pay/web", "none", 1));
        exporter.set(&now.concat());
    };
    let (run, ()) = tokio::join!(rollout, client);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(
        run.stderr.contains("--fix --strict --wait: cart: STRICT; checking it again, and asking Prometheus for plaintext into it since, after two scrape intervals (1s, job envoy-stats's scrape_interval)")
            && run.stderr.contains("--fix --strict --wait: cart: healthy "),
        "{}",
        run.show()
    );
    assert!(
        run.stderr.contains("--wait: pay is not healthy after it was made STRICT: plaintext into it since it was made STRICT: legacy/batch-reporter → pay/web (1 requests, connection_security_policy=none); the rollout stopped there. Applied: Policy cart/default, Policy pay/default. Not applied: Policy shop/default"),
        "{}",
        run.show()
    );
    assert!(policy("cart").is_some() && policy("pay").is_some());
    assert!(
        policy("shop").is_none(),
        "stopped before shop: {}",
        run.show()
    );
    // The hint, backticked, runs as printed (stdin is no terminal: it carries --yes).
    let hinted: Vec<&str> = run
        .stderr
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| c.starts_with("kubectl meshvm doctor") && c.contains("--fix --undo"))
        .collect();
    let command = hinted
        .iter()
        .find(|c| c.contains("--kubeconfig") && c.ends_with("--yes"))
        .unwrap_or_else(|| panic!("no runnable undo hint: {}", run.show()));
    let words = shell_words::split(command).unwrap();
    let out = std::process::Command::new(DOCTOR)
        .args(&words[3..])
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let undone = sim::Run::from(&out);
    assert_eq!(undone.code, 0, "`{command}`: {}", undone.show());
    assert!(
        policy("cart").is_none() && policy("pay").is_none(),
        "{}",
        undone.show()
    );
    eprintln!("--wait rollout with its stop took {took:?}");
}
