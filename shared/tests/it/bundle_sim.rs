//! `meshvm::bundle` against kube-sim: the istioctl goldens end to end, the legacy runbook flow,
//! the error paths that need a cluster, and the round-trip budget.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser as _;
use kube_sim::{Fault, FaultKind, Scenario, Server};
use meshvm::args::BundleArgs;
use meshvm::bundle::{self, Error, Options};
use meshvm::errors::{Diagnose as _, Outcome};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn conformance() -> PathBuf {
    kube_sim::testenv::conformance("workload-entry-configure")
}

/// bundle's options for `server`, writing into `dir`, with `extra` flags.
pub(crate) fn options(server: &Server, dir: &Path, extra: &[&str]) -> Options {
    let mut argv: Vec<String> = vec![
        "kubectl-meshvm-bundle".into(),
        "--kubeconfig".into(),
        server.kubeconfig_path().display().to_string(),
        "-d".into(),
        dir.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Options::resolve(BundleArgs::try_parse_from(argv).expect("flags parse")).expect("flags valid")
}

/// Run bundle in-process; stdout and stderr as text.
pub(crate) async fn run(opts: &Options) -> (Result<Outcome, Error>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = bundle::run(opts, &mut out, &mut err).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The claims of a JWT (signature checked by the sim that issued it, not here).
fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// The cluster objects istioctl's test creates for a case (CASES.yaml), as a scenario.
fn golden_scenario(case: &str, mesh_cm: &str, mesh: &str) -> Scenario {
    let wg = std::fs::read_to_string(conformance().join(case).join("workloadgroup.yaml")).unwrap();
    let mut wg: Value = serde_saphyr::from_str(&wg).unwrap();
    wg["apiVersion"] = "networking.istio.io/v1".into();
    let objects = serde_json::json!([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bar"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm-serviceaccount", "namespace": "bar"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": "bar"},
         "data": {"root-cert.pem": "fake-CA-cert"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": mesh_cm, "namespace": "istio-system"},
         "data": {"mesh": mesh}},
        wg,
    ]);
    Scenario::empty()
        .with_crds("modern")
        .with_objects(objects.as_array().unwrap().clone())
}

/// Every CASES.yaml case, through kube-sim, byte for byte (the token: a JWT for the SA, audience
/// istio-ca, the requested lifetime).
#[tokio::test(flavor = "multi_thread")]
async fn istioctl_goldens_through_kube_sim() {
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "vmconfig/ipv4",
            "istio-rev-1",
            &[
                "--internal-ip",
                "10.10.10.10",
                "--gateway-ip",
                "10.10.10.11",
                "--cluster-id",
                "Kubernetes",
                "--revision",
                "rev-1",
            ],
        ),
        (
            "vmconfig/ipv6",
            "istio-rev-1",
            &[
                "--internal-ip",
                "fd00:10:96::1",
                "--gateway-ip",
                "fd00:10:96::2",
                "--cluster-id",
                "Kubernetes",
                "--revision",
                "rev-1",
            ],
        ),
        (
            "vmconfig-nil-proxy-metadata",
            "istio",
            // No --ingressIP and no east-west gateway: istioctl writes an empty hosts; we ask
            // for that explicitly (--no-gateway) instead of guessing.
            &[
                "--internal-ip",
                "10.10.10.10",
                "--cluster-id",
                "Kubernetes",
                "--no-gateway",
            ],
        ),
    ];
    for (case, mesh_cm, flags) in cases {
        let golden = conformance().join(case);
        let mesh = std::fs::read_to_string(golden.join("meshconfig.yaml"))
            .unwrap_or_else(|_| "defaultConfig: {}\n".into());
        let server = Server::start(golden_scenario(case, mesh_cm, &mesh)).await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let mut all = vec![
            "--era",
            "modern",
            "--vm-namespace",
            "bar",
            "--workload-group",
            "foo",
            "--token-duration",
            "2h",
        ];
        all.extend_from_slice(flags);
        let (result, stdout, stderr) = run(&options(&server, &dir, &all)).await;
        assert!(
            result.is_ok(),
            "{case}: {:?}\n{stderr}",
            result.err().map(|e| meshvm::errors::error_chain(&e))
        );
        for name in ["cluster.env", "mesh.yaml", "hosts", "root-cert.pem"] {
            let want = read(&golden, &format!("{name}.golden"));
            assert_eq!(
                read(&dir, name),
                want,
                "{case}: {name} differs from istioctl's"
            );
        }
        let token = read(&dir, "istio-token");
        let c = claims(&token);
        assert_eq!(
            c["sub"], "system:serviceaccount:bar:vm-serviceaccount",
            "{case}"
        );
        assert_eq!(c["aud"], serde_json::json!(["istio-ca"]), "{case}");
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            7200,
            "{case}: --token-duration 2h"
        );
        assert!(
            !stdout.contains(&token) && !stderr.contains(&token),
            "the token is never printed"
        );
        assert!(
            stdout.contains("istio-token") && stdout.contains("0600"),
            "{stdout}"
        );
    }
}

async fn legacy_sim() -> Server {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")])
            .expect("scenario loads"),
    )
    .await;
    // What `kubectl meshvm prepare --vm-namespace expandvm` leaves: the namespace and its
    // ServiceAccount, for which the sim's Citadel writes istio.expandvm.
    server
        .load(vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
        ])
        .unwrap();
    // Citadel writes the secret asynchronously (as 1.4's informer does): start once it is there.
    wait_for_secret(&server, "expandvm", "istio.expandvm").await;
    server
}

async fn wait_for_secret(server: &Server, ns: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.object("v1", "Secret", ns, name).is_none() {
        assert!(
            Instant::now() < deadline,
            "Citadel never issued {ns}/{name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn secret_data(server: &Server, ns: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        server
            .object("v1", "Secret", ns, name)
            .expect("secret exists"),
    )
    .unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_runbook_bundle_and_round_trips() {
    let server = legacy_sim().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    let archive = tmp.path().join("expandvm.tar.gz");
    let latency = Duration::from_millis(400);
    server.set_latency(latency);
    server.reset_requests();
    let opts = options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "--archive",
            archive.to_str().unwrap(),
        ],
    );
    let started = Instant::now();
    let (result, stdout, stderr) = run(&opts).await;
    let elapsed = started.elapsed();
    assert!(
        result.is_ok(),
        "{:?}\n{stderr}",
        result.err().map(|e| meshvm::errors::error_chain(&e))
    );
    eprintln!("legacy bundle: {elapsed:?} at {latency:?} per request");
    // On Kubernetes 1.14: era detection (one list: metadata where served, else — as here — the
    // full list in the same request), one concurrent batch (secrets, gateway, ServiceCIDR — not
    // served —, kubernetes Service, /version), then the Service range from the API server: the
    // real create it refuses (a dry run is not range-checked before 1.23, so none is sent).
    let log = server.requests();
    assert_eq!(
        log.round_trips(),
        3,
        "{elapsed:?}: not three round trips on the critical path: {:#?}",
        log.records
    );
    assert_eq!(
        log.count("get", "/api/v1/namespaces/expandvm/secrets/istio.expandvm"),
        1,
        "{:?}",
        log.counts()
    );
    assert_eq!(
        log.count(
            "get",
            "/api/v1/namespaces/istio-system/services/istio-ingressgateway"
        ),
        1
    );
    server.set_latency(Duration::ZERO);

    assert!(
        stderr.contains("note: ISTIO_SERVICE_CIDR=172.16.0.0/16 from the API server, which named its Service range when refusing a probe Service with an out-of-range clusterIP"),
        "{stderr}"
    );
    assert_eq!(
        log.count("create", "/api/v1/namespaces/expandvm/services"),
        1,
        "the real create the API server refuses, no dry run before it on 1.14"
    );
    assert!(
        log.records
            .iter()
            .all(|r| r.verb != "create" || !r.query.contains("dryRun")),
        "{:?}",
        log.records
    );
    let names: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "cert-chain.pem",
            "cluster.env",
            "gwip.txt",
            "hosts",
            "install.sh",
            "key.pem",
            "root-cert.pem"
        ]
    );
    let secret = secret_data(&server, "expandvm", "istio.expandvm");
    for key in ["root-cert.pem", "cert-chain.pem", "key.pem"] {
        assert_eq!(
            std::fs::read(dir.join(key)).unwrap(),
            secret[key],
            "{key} is the secret's"
        );
    }
    assert_eq!(
        read(&dir, "cluster.env"),
        "ISTIO_CP_AUTH=MUTUAL_TLS\nISTIO_SERVICE=expandvm\nISTIO_SERVICE_CIDR=172.16.0.0/16\nISTIO_INBOUND_PORTS=80\nISTIO_NAMESPACE=expandvm\n"
    );
    assert_eq!(read(&dir, "gwip.txt"), "203.0.113.10");
    assert_eq!(
        read(&dir, "hosts"),
        "203.0.113.10 istio-citadel istio-citadel.istio-system\n203.0.113.10 istio-pilot istio-pilot.istio-system\n203.0.113.10 istio-telemetry istio-telemetry.istio-system\n203.0.113.10 istio-policy istio-policy.istio-system\n"
    );
    let key = String::from_utf8(secret["key.pem"].clone()).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    assert!(
        !stdout.contains(key_line) && !stderr.contains(key_line),
        "the key is never printed"
    );
    assert!(
        stdout.contains("expandvm.tar.gz") && stdout.contains("sha256"),
        "{stdout}"
    );

    // The same inputs give the same archive, byte for byte.
    let first = std::fs::read(&archive).unwrap();
    let (again, _, stderr) = run(&Options {
        force: true,
        ..opts.clone()
    })
    .await;
    assert!(again.is_ok(), "{stderr}");
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        first,
        "two archive runs differ"
    );
    // And doctor reads what bundle wrote.
    let read_back = meshvm::snapshot::VmBundle::read(&archive).unwrap();
    assert_eq!(read_back.era(), Some(meshvm::istio::Era::Legacy));
    assert_eq!(read_back.file("key.pem").unwrap().mode, 0o600);
}

/// Neither the ServiceCIDR API nor the API server's refusal gives the range: bundle guesses, and
/// says so and why (the output's `serviceCidr.source` too).
#[tokio::test(flavor = "multi_thread")]
async fn legacy_without_servicecidr_api_infers_with_a_warning() {
    let server = legacy_sim().await;
    // As on a cluster before 1.33, or for a user who may not read cluster-scoped objects …
    server.deny("get", "servicecidrs.networking.k8s.io", None);
    // … and who may not create Services, so the API server cannot be asked either.
    server.deny("create", "services", Some("expandvm"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (result, _, stderr) = run(&options(
        &server,
        &dir,
        &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
    ))
    .await;
    assert!(result.is_ok(), "{stderr}");
    let env = read(&dir, "cluster.env");
    let cidr = env
        .lines()
        .find_map(|l| l.strip_prefix("ISTIO_SERVICE_CIDR="))
        .unwrap();
    assert_eq!(
        cidr, "172.16.0.0/16",
        "the /16 around the kubernetes Service's 172.16.0.1"
    );
    assert!(
        stderr.contains("warning: the ServiceCIDR API is not served (or not readable) and --service-cidr was not given; could not ask the API server (a Service create in namespace expandvm failed: forbidden")
            && stderr.contains(&format!("assuming ISTIO_SERVICE_CIDR={cidr}")),
        "{stderr}"
    );
    let log = server.requests();
    assert_eq!(
        log.count("create", "/api/v1/namespaces/expandvm/services"),
        1,
        "one refused create (Kubernetes 1.14: no dry run, which it would not range-check): {:?}",
        log.counts()
    );
    let (result, stdout, _) = run(&options(
        &server,
        &tmp.path().join("j"),
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "-o",
            "json",
        ],
    ))
    .await;
    assert!(result.is_ok());
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["serviceCidr"]["source"], "guessed", "{v}");
    assert_eq!(v["serviceCidr"]["cidr"], "172.16.0.0/16");
}

#[tokio::test(flavor = "multi_thread")]
async fn modern_scenario_with_east_west_gateway() {
    let server =
        Server::start(Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")]).unwrap())
            .await;
    let wg = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
        "metadata": {"name": "vm", "namespace": "vm"},
        "spec": {"metadata": {"labels": {"app": "vm"}}, "template": {"serviceAccount": "vm-sa", "network": "vm-net"}},
    });
    server
        .load(vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vm"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm-sa", "namespace": "vm"}}),
            wg,
        ])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let latency = Duration::from_millis(400);
    server.set_latency(latency);
    server.reset_requests();
    let started = Instant::now();
    let (result, _, stderr) = run(&options(
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
    let elapsed = started.elapsed();
    server.set_latency(Duration::ZERO);
    assert!(
        result.is_ok(),
        "{:?}\n{stderr}",
        result.err().map(|e| meshvm::errors::error_chain(&e))
    );
    eprintln!("modern bundle: {elapsed:?} at {latency:?} per request");
    // Era detection, one batch, the token: three round trips.
    let log = server.requests();
    assert_eq!(
        log.round_trips(),
        3,
        "{elapsed:?}: not three round trips on the critical path: {:#?}",
        log.records
    );
    let hosts = read(&dir, "hosts");
    assert!(
        hosts.starts_with("203.0.113.20 istiod.istio-system.svc\n"),
        "{hosts}"
    );
    let env = read(&dir, "cluster.env");
    assert!(
        env.contains("ISTIO_META_NETWORK='vm-net'\n") && env.contains("SERVICE_ACCOUNT='vm-sa'\n"),
        "{env}"
    );
    assert!(
        env.contains("ISTIO_SERVICE_CIDR='*'\n"),
        "modern keeps istioctl's *: {env}"
    );
    assert!(
        stderr.contains("note: ")
            && stderr.contains("istio-token is a bearer token")
            && stderr.contains("valid for 3600s"),
        "{stderr}"
    );
    let root = read(&dir, "root-cert.pem");
    assert!(
        root.contains("BEGIN CERTIFICATE"),
        "istiod's root from istio-ca-root-cert"
    );
    let c = claims(&read(&dir, "istio-token"));
    assert_eq!(c["sub"], "system:serviceaccount:vm:vm-sa");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_error_paths() {
    let server = legacy_sim().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    // A directory holding a file no bundle writes is refused before any request. First, while
    // no earlier run of this test can still have a request in flight (a failed run drops its
    // concurrent reads, but one already sent can reach the server after a reset).
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x"), "").unwrap();
    server.reset_requests();
    let (result, _, _) = run(&options(
        &server,
        &dir,
        &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
    ))
    .await;
    assert!(matches!(result.unwrap_err(), Error::OutputForeign { .. }));
    assert_eq!(server.requests().api_calls(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
    // No istio.<sa>: a ServiceAccount that does not exist, so Citadel never issues one and
    // bundle does not wait (the default --wait is 60s).
    let (result, _, _) = run(&options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "-s",
            "ghost",
            "--inbound-ports",
            "80",
        ],
    ))
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            Error::IdentityMissing {
                account_exists: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("ServiceAccount expandvm/ghost does not exist"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("-s ghost"), "{:?}", err.hint());
    assert!(!dir.exists(), "nothing written on error");
    // A secret whose key belongs to another identity (Citadel keeps it only if its root matches).
    let mut data = secret_data(&server, "expandvm", "istio.expandvm");
    wait_for_secret(&server, "expandvm", "istio.default").await;
    data.insert(
        "key.pem".into(),
        secret_data(&server, "expandvm", "istio.default")["key.pem"].clone(),
    );
    let encoded: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v).into(),
            )
        })
        .collect();
    server
        .load(vec![serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "istio.io/key-and-cert",
            "metadata": {"name": "istio.expandvm", "namespace": "expandvm"}, "data": encoded,
        })])
        .unwrap();
    let (result, _, _) = run(&options(
        &server,
        &dir,
        &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
    ))
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Identity { .. }), "{err}");
    assert!(err.hint().unwrap().contains("restart"), "{:?}", err.hint());
    // Named gateway that does not exist.
    let (result, _, _) = run(&options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "sample",
            "--inbound-ports",
            "80",
            "--gateway-service",
            "nope",
            "-s",
            "default",
        ],
    ))
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::GatewayMissing { .. }), "{err}");
    assert!(err.to_string().contains("istio-system/nope"), "{err}");
    // RBAC refuses the secret read: the error names verb, resource and namespace.
    server.deny("get", "secrets", Some("expandvm"));
    let (result, _, _) = run(&options(
        &server,
        &dir,
        &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
    ))
    .await;
    let err = result.unwrap_err();
    let text = meshvm::errors::error_chain(&err);
    assert!(
        text.contains("get") && text.contains("secrets") && text.contains("expandvm"),
        "{text}"
    );
    server.allow_all();
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_without_ip_is_an_error_with_a_hint() {
    for (scenario, want) in [
        ("broken-gateway-hostname-only.yaml", "only a hostname"),
        ("broken-gateway-no-address.yaml", "no external address"),
    ] {
        let server = Server::start(
            Scenario::from_files(&[repo().join("tests/scenarios").join(scenario)]).unwrap(),
        )
        .await;
        server
            .load(vec![
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
                serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
            ])
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let (result, _, _) = run(&options(
            &server,
            &dir,
            &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
        ))
        .await;
        let err = result.unwrap_err();
        assert!(err.to_string().contains(want), "{scenario}: {err}");
        assert!(err.hint().unwrap().contains("--gateway-ip"), "{scenario}");
        assert!(!dir.exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_are_retried() {
    let server = legacy_sim().await;
    server.add_fault(
        Fault::on(
            FaultKind::InternalError,
            "get",
            "/api/v1/namespaces/expandvm/secrets",
        )
        .times(2),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (result, _, stderr) = run(&options(
        &server,
        &dir,
        &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
    ))
    .await;
    assert!(result.is_ok(), "{stderr}");
    assert_eq!(
        server
            .requests()
            .count("get", "/api/v1/namespaces/expandvm/secrets/istio.expandvm"),
        3
    );
}

/// A flat test CA (its own root) and an expired workload certificate it signed.
fn expired_identity(ns: &str, sa: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "bundle test root");
    ca.not_before = (now - 400 * day).into();
    ca.not_after = (now + 3650 * day).into();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = ca.self_signed(&ca_key).unwrap().pem();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.subject_alt_names = vec![SanType::URI(
        format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
            .try_into()
            .unwrap(),
    )];
    leaf.not_before = (now - 100 * day).into();
    leaf.not_after = (now - 10 * day).into();
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf
        .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
        .unwrap()
        .pem();
    let cacerts = BTreeMap::from([
        ("ca-cert.pem".to_owned(), root.clone()),
        ("ca-key.pem".to_owned(), ca_key.serialize_pem()),
        ("root-cert.pem".to_owned(), root.clone()),
        ("cert-chain.pem".to_owned(), root.clone()),
    ]);
    let identity = BTreeMap::from([
        ("root-cert.pem".to_owned(), root),
        ("cert-chain.pem".to_owned(), cert),
        ("key.pem".to_owned(), leaf_key.serialize_pem()),
    ]);
    (cacerts, identity)
}

/// Citadel keeps an `istio.<sa>` whose root is its own, even when the certificate expired (as
/// after a long outage): bundle refuses it and says to restart Citadel or recreate the secret.
#[tokio::test(flavor = "multi_thread")]
async fn expired_identity_is_refused_with_the_citadel_hint() {
    let server = legacy_sim().await;
    let (cacerts, identity) = expired_identity("expandvm", "expandvm");
    let secret = |ns: &str, name: &str, data: &BTreeMap<String, String>| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": data,
        })
    };
    server
        .load(vec![
            secret("istio-system", "cacerts", &cacerts),
            secret("expandvm", "istio.expandvm", &identity),
        ])
        .unwrap();
    assert_eq!(
        secret_data(&server, "expandvm", "istio.expandvm")["cert-chain.pem"],
        identity["cert-chain.pem"].as_bytes(),
        "the sim's Citadel kept the expired secret"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (result, _, _) = run(&options(
        &server,
        &dir,
        &["--vm-namespace", "expandvm", "--inbound-ports", "80"],
    ))
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Identity { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("rollout restart deployment istio-citadel")
            && hint.contains("kubectl -n expandvm delete secret istio.expandvm"),
        "{hint}"
    );
    assert!(!dir.exists(), "nothing written");
}
