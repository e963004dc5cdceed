//! `kubectl meshvm prepare` end to end: the binary against kube-sim, checked with real kubectl,
//! Citadel's certificates and the sim's request log.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube_sim::{Fault, FaultKind, Scenario, Server};
use meshvm::pki;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use sim::{Run, repo, samples};

use crate::common::sim;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-prepare");

async fn sim(scenario: &str) -> Server {
    let path = repo().join("tests/scenarios").join(scenario);
    Server::start(Scenario::from_files(&[path]).expect("scenario loads")).await
}

/// A scenario at a given Kubernetes version (the legacy one declares 1.14: no server-side
/// apply; 1.16 is the other legacy cell, with it).
async fn sim_at(scenario: &str, kube: &str) -> Server {
    let path = repo().join("tests/scenarios").join(scenario);
    Server::start(
        Scenario::from_files(&[path])
            .expect("scenario loads")
            .with_kube_version(kube),
    )
    .await
}

/// Run the binary against `server`.
async fn prepare(server: &Server, args: &[&str]) -> Run {
    sim::run(BIN, server, &sim::args(args)).await
}

/// Real kubectl against the sim.
async fn kubectl(server: &Server, args: &[&str]) -> Run {
    let kubeconfig = server.kubeconfig_path().to_owned();
    let cache = tempfile::tempdir().unwrap();
    let mut argv = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--cache-dir".to_owned(),
        cache.path().display().to_string(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("kubectl")
            .args(&argv)
            .output()
            .expect("kubectl on PATH");
        drop(cache);
        Run::from(&out)
    })
    .await
    .unwrap()
}

fn secret(server: &Server, ns: &str, name: &str) -> Option<Secret> {
    server
        .object("v1", "Secret", ns, name)
        .map(|v| serde_json::from_value(v).unwrap())
}

fn data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Requests that change something (the request log keeps every request the sim answered).
fn writes(server: &Server) -> Vec<String> {
    server
        .requests()
        .records
        .iter()
        .filter(|r| !matches!(r.method.as_str(), "GET" | "HEAD"))
        .map(|r| format!("{} {} ?{} -> {}", r.method, r.path, r.query, r.status))
        .collect()
}

fn samples_arg() -> String {
    samples().display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Test CAs (rcgen)

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "prepare test");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str, ca: bool, not_after_days: i64) -> CertificateParams {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.not_before = (now - 400 * day).into();
    p.not_after = if not_after_days >= 0 {
        now + day * u32::try_from(not_after_days).unwrap()
    } else {
        now - day * u32::try_from(-not_after_days).unwrap()
    }
    .into();
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    p.use_authority_key_identifier_extension = true;
    p
}

/// A root and a signing CA under it, as PEM, the way Istio's samples are laid out.
struct TestPki {
    root: String,
    ca: String,
    ca_key: String,
}

fn test_pki(root_cn: &str, ca_is_ca: bool, ca_days: i64) -> TestPki {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params(root_cn, true, 3650);
    let root = root_params.self_signed(&root_key).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params("Signing CA", ca_is_ca, ca_days)
        .signed_by(&ca_key, &Issuer::from_params(&root_params, &root_key))
        .unwrap();
    TestPki {
        root: root.pem(),
        ca: ca.pem(),
        ca_key: ca_key.serialize_pem(),
    }
}

/// Write a `--ca-dir` with these four files.
fn ca_dir(ca_cert: &str, ca_key: &str, root_cert: &str, cert_chain: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("ca-cert.pem", ca_cert),
        ("ca-key.pem", ca_key),
        ("root-cert.pem", root_cert),
        ("cert-chain.pem", cert_chain),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn good_dir(p: &TestPki) -> tempfile::TempDir {
    ca_dir(&p.ca, &p.ca_key, &p.root, &p.ca)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn legacy_first_run_second_run_and_a_different_ca() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = samples_arg();
    // Citadel has been running for a while (the sim stamps loaded objects with "now").
    let mut citadel = server
        .object("apps/v1", "Deployment", "istio-system", "istio-citadel")
        .unwrap();
    citadel["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
    server.load([citadel]).unwrap();

    let first = prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir]).await;
    println!("FIRST RUN\n{}", first.show());
    assert_eq!(first.code, 0, "{}", first.show());
    assert!(
        first
            .stderr
            .contains("era: legacy (Istio 1.4: istio-citadel"),
        "{}",
        first.show()
    );
    let table: Vec<&str> = first.stdout.lines().collect();
    assert!(
        table[2].contains("cacerts") && table[2].contains("created"),
        "{}",
        first.stdout
    );
    assert!(
        table[3].contains("expandvm") && table[3].contains("created"),
        "{}",
        first.stdout
    );
    assert!(
        table[4].contains("ServiceAccount") && table[4].contains("created"),
        "{}",
        first.stdout
    );
    assert!(
        first.stderr.contains("still holds the old CA key")
            && first
                .stderr
                .contains("kubectl rollout restart deployment/istio-citadel -n istio-system"),
        "{}",
        first.show()
    );

    // cacerts is what real kubectl makes from the same files.
    let made = kubectl(&server, &["create", "namespace", "kubectl-made"]).await;
    assert_eq!(made.code, 0, "{}", made.show());
    let from_file = |k: &str| format!("--from-file={}", samples().join(k).display());
    let made = kubectl(
        &server,
        &[
            "create",
            "secret",
            "generic",
            "cacerts",
            "-n",
            "kubectl-made",
            &from_file("ca-cert.pem"),
            &from_file("ca-key.pem"),
            &from_file("root-cert.pem"),
            &from_file("cert-chain.pem"),
        ],
    )
    .await;
    assert_eq!(made.code, 0, "{}", made.show());
    let ours = secret(&server, "istio-system", "cacerts").expect("cacerts stored");
    let theirs = secret(&server, "kubectl-made", "cacerts").expect("kubectl's cacerts");
    assert_eq!(
        data(&ours),
        data(&theirs),
        "data byte-identical to kubectl's"
    );
    assert_eq!(ours.type_, theirs.type_);
    assert_eq!(ours.type_.as_deref(), Some("Opaque"));
    assert_eq!(ours.metadata.labels, theirs.metadata.labels);
    assert_eq!(ours.metadata.annotations, theirs.metadata.annotations);
    assert_eq!(
        data(&ours)["ca-key.pem"],
        std::fs::read(samples().join("ca-key.pem")).unwrap()
    );

    // Namespace and ServiceAccount exist; Citadel's istio.expandvm is signed by the sample CA.
    assert!(server.object("v1", "Namespace", "", "expandvm").is_some());
    assert!(
        server
            .object("v1", "ServiceAccount", "expandvm", "expandvm")
            .is_some()
    );
    let sample_root = std::fs::read(samples().join("root-cert.pem")).unwrap();
    let issued_under_samples = |citadel: &Secret| {
        let material = pki::WorkloadMaterial::from_secret_data(
            "secret expandvm/istio.expandvm",
            &data(citadel),
        )
        .unwrap();
        pki::compare_roots(material.root_cert.bytes(), &sample_root)
            .unwrap()
            .same()
    };
    // Citadel issues istio.expandvm asynchronously, still with the CA it loaded at start: the
    // sample root only after a restart (as Istio 1.4 does; the note above says so).
    let mut citadel = None;
    for _ in 0..50 {
        citadel = secret(&server, "expandvm", "istio.expandvm");
        if citadel.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = citadel.expect("Citadel made istio.expandvm");
    assert!(
        !issued_under_samples(&before),
        "Citadel must not sign with cacerts before it restarts"
    );
    let restarted = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--restart-control-plane",
            "--yes",
        ],
    )
    .await;
    assert_eq!(restarted.code, 0, "{}", restarted.show());
    assert!(
        restarted
            .stderr
            .contains("Citadel re-issued every istio.* workload secret under the new root"),
        "prepare waits for Citadel's resync: {}",
        restarted.show()
    );
    let stale: Vec<String> = server
        .objects("v1", "Secret")
        .into_iter()
        .filter(|s| s["type"] == "istio.io/key-and-cert")
        .filter(|s| !issued_under_samples(&serde_json::from_value(s.clone()).unwrap()))
        .map(|s| format!("{}/{}", s["metadata"]["namespace"], s["metadata"]["name"]))
        .collect();
    assert!(
        stale.is_empty(),
        "still under the old root after prepare returned: {stale:?}"
    );
    let mut citadel = before;
    for _ in 0..100 {
        citadel = secret(&server, "expandvm", "istio.expandvm").expect("istio.expandvm");
        if issued_under_samples(&citadel) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let material =
        pki::WorkloadMaterial::from_secret_data("secret expandvm/istio.expandvm", &data(&citadel))
            .unwrap();
    let findings = pki::check_workload(
        &material,
        Some(("expandvm", "expandvm")),
        SystemTime::now(),
        pki::DEFAULT_WARN_WITHIN,
    );
    assert!(!pki::has_errors(&findings), "{findings:?}");
    let roots = pki::compare_roots(
        material.root_cert.bytes(),
        &std::fs::read(samples().join("root-cert.pem")).unwrap(),
    )
    .unwrap();
    assert!(
        roots.same(),
        "istio.expandvm chains to the sample root: {roots:?}"
    );
    // The workload certificate was issued by the sample signing CA (its issuer's key).
    let chain_and_ca = pki::WorkloadMaterial {
        root_cert: pki::PemInput::new(
            "ca-cert.pem",
            std::fs::read(samples().join("ca-cert.pem")).unwrap(),
        ),
        ..material.clone()
    };
    let by_ca = pki::check_workload(
        &chain_and_ca,
        None,
        SystemTime::now(),
        pki::DEFAULT_WARN_WITHIN,
    );
    assert!(
        !by_ca
            .iter()
            .any(|f| f.kind == pki::CertFindingKind::ChainBroken),
        "signed by ca-cert.pem: {by_ca:?}"
    );

    // A second run changes nothing, and says so.
    server.reset_requests();
    let second = prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir]).await;
    println!("SECOND RUN\n{}", second.show());
    assert_eq!(second.code, 0, "{}", second.show());
    assert!(
        second.stderr.contains("nothing to change"),
        "{}",
        second.show()
    );
    assert_eq!(
        second.stdout.matches("unchanged").count(),
        4,
        "{}",
        second.stdout
    );
    assert!(writes(&server).is_empty(), "{:?}", writes(&server));
    assert!(
        !second
            .stderr
            .contains("cacerts changed after it last started"),
        "Citadel restarted after cacerts was written: no restart is due: {}",
        second.show()
    );

    // A different CA is refused, both roots shown, nothing written.
    let other = test_pki("Other Root", true, 365);
    let other_dir = good_dir(&other);
    server.reset_requests();
    let refused = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            other_dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(refused.code, 1, "{}", refused.show());
    assert!(
        refused.stderr.contains("already holds a different CA"),
        "{}",
        refused.show()
    );
    assert!(
        refused
            .stderr
            .contains("in the cluster: emailAddress=testrootca@istio.io,CN=Root CA"),
        "{}",
        refused.show()
    );
    assert!(
        refused.stderr.contains("SHA-256 63:72:7A:17:85:CA"),
        "{}",
        refused.show()
    );
    assert!(
        refused
            .stderr
            .contains("in the files:   CN=Other Root,O=prepare test (SHA-256 "),
        "{}",
        refused.show()
    );
    assert!(
        refused.stderr.contains("hint:") && refused.stderr.contains("--force"),
        "{}",
        refused.show()
    );
    assert!(writes(&server).is_empty(), "{:?}", writes(&server));
    assert_eq!(
        data(&secret(&server, "istio-system", "cacerts").unwrap()),
        data(&ours)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ca_files_exit_1_naming_the_file_and_write_nothing() {
    let server = sim("legacy-1.4.yaml").await;
    let good = test_pki("Root", true, 365);
    let stranger = test_pki("Stranger Root", true, 365);
    let expired = test_pki("Root", true, -1);
    let not_ca = test_pki("Root", false, 365);
    let chain_wrong_order = format!("{}{}", good.root, good.ca);
    let cases: Vec<(&str, tempfile::TempDir, &str, &str)> = vec![
        (
            "key mismatch",
            ca_dir(&good.ca, &stranger.ca_key, &good.root, &good.ca),
            "ca-key.pem",
            "does not match the certificate",
        ),
        ("expired", good_dir(&expired), "ca-cert.pem", "expired"),
        (
            "not a CA",
            good_dir(&not_ca),
            "ca-cert.pem",
            "is not a CA certificate",
        ),
        (
            "broken chain",
            ca_dir(&good.ca, &good.ca_key, &stranger.root, &good.ca),
            "cert-chain.pem",
            "does not chain to",
        ),
        (
            "wrong order",
            ca_dir(&good.ca, &good.ca_key, &good.root, &chain_wrong_order),
            "cert-chain.pem",
            "is in the wrong order",
        ),
        (
            "wrong PEM type",
            ca_dir(&good.ca, &good.ca, &good.root, &good.ca),
            "ca-key.pem",
            "holds a certificate",
        ),
        (
            "empty file",
            ca_dir(&good.ca, &good.ca_key, &good.root, ""),
            "cert-chain.pem",
            "is empty",
        ),
    ];
    let before = server.object_count();
    for (what, dir, file, words) in cases {
        server.reset_requests();
        let run = prepare(
            &server,
            &[
                "--vm-namespace",
                "expandvm",
                "--ca-dir",
                dir.path().to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(run.code, 1, "{what}: {}", run.show());
        let named = format!("{}: {words}", dir.path().join(file).display());
        assert!(
            run.stderr.contains(&named),
            "{what}: want {named:?}\n{}",
            run.show()
        );
        assert!(
            run.stderr.contains("nothing was written"),
            "{what}: {}",
            run.show()
        );
        assert!(run.stdout.is_empty(), "{what}: {}", run.show());
        assert!(
            !run.stderr.contains("PRIVATE KEY"),
            "{what}: {}",
            run.show()
        );
        // Judged before the cluster is contacted at all.
        assert_eq!(
            server.requests().total(),
            0,
            "{what}: {:?}",
            server.requests()
        );
    }
    assert_eq!(server.object_count(), before);
    assert!(secret(&server, "istio-system", "cacerts").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_store_nothing_and_redact_keys() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = samples_arg();
    let before = server.object_count();
    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--dry-run=server",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stdout.contains("created (server dry run)"),
        "{}",
        run.show()
    );
    assert!(
        run.stdout
            .contains("not sent: namespace expandvm does not exist yet"),
        "{}",
        run.show()
    );
    assert!(
        run.stderr.contains("dry run (server): nothing was stored"),
        "{}",
        run.show()
    );
    let sent = writes(&server);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|w| w.contains("dryRun=All")), "{sent:?}");
    assert_eq!(server.object_count(), before);
    assert!(secret(&server, "istio-system", "cacerts").is_none());

    // Client dry run, -o yaml: the objects, keys redacted; -vvv logs no key either.
    server.reset_requests();
    let key_b64_line = {
        let key = std::fs::read_to_string(samples().join("ca-key.pem")).unwrap();
        key.lines().nth(1).unwrap().to_owned()
    };
    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--dry-run=client",
            "-o",
            "yaml",
            "-vvv",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(writes(&server).is_empty());
    assert!(
        run.stdout.contains("kind: List") && run.stdout.contains("REDACTED ("),
        "{}",
        run.stdout
    );
    for leaked in [
        key_b64_line.as_str(),
        "PRIVATE KEY",
        "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVk",
    ] {
        assert!(
            !run.stdout.contains(leaked) && !run.stderr.contains(leaked),
            "{leaked}"
        );
    }
    let list: Value = serde_saphyr::from_str(&run.stdout).unwrap();
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Namespace", "Secret", "Namespace", "ServiceAccount"]
    );

    // A real run with -vvv -o json: still no key bytes anywhere; --show-secrets prints them.
    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "-o",
            "json",
            "-vvv",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        !run.stderr.contains("PRIVATE KEY") && !run.stdout.contains("PRIVATE KEY"),
        "{}",
        run.show()
    );
    assert!(
        !run.stderr.contains("LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVk"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVk"),
        "{}",
        run.stdout
    );
    let shown = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "-o",
            "json",
            "--show-secrets",
        ],
    )
    .await;
    assert!(
        shown.stdout.contains("LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVk"),
        "{}",
        shown.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn modern_gets_the_workload_group_istioctl_would_make() {
    let server = sim("modern.yaml").await;
    let goldens: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(kube_sim::testenv::conformance(
            "workload-entry-configure/CASES.yaml",
        ))
        .unwrap(),
    )
    .unwrap();
    let golden = goldens["group_create_expected_stdout"]["group create --name foo --namespace bar --labels app=foo,bar=baz --annotations annotation=foobar --ports grpc=3550,http=8080 --serviceAccount test --weight 100"]
        .as_str()
        .unwrap()
        .to_owned();
    let args = [
        "--vm-namespace",
        "bar",
        "-s",
        "test",
        "--ca-dir",
        &samples_arg(),
        "--workload-group",
        "foo",
        "--labels",
        "app=foo,bar=baz",
        "--annotations",
        "annotation=foobar",
        "--ports",
        "grpc=3550,http=8080",
        "--weight",
        "100",
        "-o",
        "yaml",
    ];
    let run = prepare(&server, &args).await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stderr
            .contains("era: modern (istiod: istiod in istio-system)"),
        "{}",
        run.show()
    );
    assert!(
        run.stderr
            .contains("Deployment istio-system/istiod still holds the old CA key"),
        "{}",
        run.show()
    );

    // What -o yaml printed, and what the server stored, are istioctl's object byte for byte.
    let list: Value = serde_saphyr::from_str(&run.stdout).unwrap();
    let printed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "WorkloadGroup")
        .unwrap()
        .clone();
    assert_eq!(meshvm::output::to_yaml(&printed).unwrap(), golden);
    let mut stored = server
        .object("networking.istio.io/v1", "WorkloadGroup", "bar", "foo")
        .expect("WorkloadGroup stored");
    stored["metadata"] = serde_json::json!({"name": "foo", "namespace": "bar"});
    stored.as_object_mut().unwrap().remove("status");
    assert_eq!(meshvm::output::to_yaml(&stored).unwrap(), golden);

    let again = prepare(&server, &args[..args.len() - 2]).await;
    assert_eq!(again.code, 0, "{}", again.show());
    assert!(
        again.stderr.contains("nothing to change"),
        "{}",
        again.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_on_the_third_write_then_a_rerun_converges() {
    // Kubernetes 1.16: the ServiceAccount is written by server-side apply (a PATCH).
    let server = sim_at("legacy-1.4.yaml", "1.16").await;
    let dir = samples_arg();
    // Writes: cacerts (1), namespace expandvm (2), ServiceAccount (3). The third fails past
    // every retry (the client retries a 500 six times).
    server.add_fault(
        Fault::on(
            FaultKind::InternalError,
            "patch",
            "/api/v1/namespaces/expandvm/serviceaccounts",
        )
        .times(20),
    );
    let broken = prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir]).await;
    assert_eq!(broken.code, 1, "{}", broken.show());
    let row = |run: &Run, what: &str| {
        run.stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row(&broken, "cacerts").contains("created"),
        "{}",
        broken.show()
    );
    let ns_row: Vec<&str> = broken
        .stdout
        .lines()
        .nth(3)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        ns_row,
        ["Namespace", "expandvm", "created"],
        "{}",
        broken.show()
    );
    assert!(
        row(&broken, "ServiceAccount").contains("failed to create"),
        "{}",
        broken.show()
    );
    assert!(
        broken
            .stderr
            .contains("error: failed to patch serviceaccounts expandvm/expandvm"),
        "{}",
        broken.show()
    );
    assert!(
        server
            .object("v1", "ServiceAccount", "expandvm", "expandvm")
            .is_none()
    );

    server.clear_faults();
    let rerun = prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir]).await;
    assert_eq!(rerun.code, 0, "{}", rerun.show());
    assert!(
        row(&rerun, "cacerts").contains("unchanged"),
        "{}",
        rerun.show()
    );
    assert!(
        row(&rerun, "ServiceAccount").contains("created"),
        "{}",
        rerun.show()
    );
    let third = prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir]).await;
    assert!(
        third.stderr.contains("nothing to change"),
        "{}",
        third.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_prepares_with_different_cas_one_wins() {
    let server = sim("legacy-1.4.yaml").await;
    // Slow requests make the two runs overlap between their read and their create.
    server.set_latency(Duration::from_millis(40));
    let a = test_pki("Root A", true, 365);
    let b = test_pki("Root B", true, 365);
    let (dir_a, dir_b) = (good_dir(&a), good_dir(&b));
    let (pa, pb) = (
        dir_a.path().to_str().unwrap(),
        dir_b.path().to_str().unwrap(),
    );
    let args_a = ["--vm-namespace", "vm-a", "--ca-dir", pa];
    let args_b = ["--vm-namespace", "vm-b", "--ca-dir", pb];
    let (ra, rb) = tokio::join!(prepare(&server, &args_a), prepare(&server, &args_b));
    let codes = [ra.code, rb.code];
    assert!(
        codes.contains(&0) && codes.contains(&1),
        "{}\n{}",
        ra.show(),
        rb.show()
    );
    let (winner, loser, root) = if ra.code == 0 {
        (&ra, &rb, &a.root)
    } else {
        (&rb, &ra, &b.root)
    };
    assert!(
        loser.stderr.contains("already holds a different CA")
            && loser.stderr.contains("CN=Root A")
            && loser.stderr.contains("CN=Root B"),
        "{}",
        loser.show()
    );
    assert!(winner.stdout.contains("created"), "{}", winner.show());
    let stored = secret(&server, "istio-system", "cacerts").unwrap();
    assert_eq!(data(&stored)["root-cert.pem"], root.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_control_plane_asks_then_restarts_citadel() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = samples_arg();
    // No terminal and no --yes: refused before anything is written.
    let asked = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--restart-control-plane",
        ],
    )
    .await;
    assert_eq!(asked.code, 1, "{}", asked.show());
    assert!(
        asked.stderr.contains("needs confirmation") && asked.stderr.contains("--yes"),
        "{}",
        asked.show()
    );
    assert!(writes(&server).is_empty(), "{:?}", writes(&server));

    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--restart-control-plane",
            "--yes",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("istio-citadel") && l.contains("done")),
        "{}",
        run.show()
    );
    let citadel = server
        .object("apps/v1", "Deployment", "istio-system", "istio-citadel")
        .unwrap();
    let stamp = citadel
        .pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
        .and_then(Value::as_str)
        .expect("restartedAt set");
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z'),
        "RFC 3339: {stamp}"
    );
    // Done: a re-run with the flag has nothing left to restart.
    let again = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--restart-control-plane",
            "--yes",
        ],
    )
    .await;
    assert!(
        again.stderr.contains("nothing to change"),
        "{}",
        again.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_the_namespace_and_keeps_cacerts_unless_asked() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = samples_arg();
    assert_eq!(
        prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir])
            .await
            .code,
        0
    );

    let asked = prepare(&server, &["--delete", "--vm-namespace", "expandvm"]).await;
    assert_eq!(asked.code, 1, "{}", asked.show());
    assert!(asked.stderr.contains("--yes"), "{}", asked.show());
    assert!(server.object("v1", "Namespace", "", "expandvm").is_some());

    let refused = prepare(&server, &["--delete", "--vm-namespace", "sample", "--yes"]).await;
    assert_eq!(refused.code, 1, "{}", refused.show());
    assert!(
        refused.stderr.contains("was not made by prepare"),
        "{}",
        refused.show()
    );

    let run = prepare(
        &server,
        &["--delete", "--vm-namespace", "expandvm", "--yes"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ServiceAccount") && l.contains("deleted")),
        "{}",
        run.show()
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("Namespace") && l.contains("deleted")),
        "{}",
        run.show()
    );
    assert!(run.stderr.contains("cacerts stays"), "{}", run.show());
    for _ in 0..50 {
        if server.object("v1", "Namespace", "", "expandvm").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.object("v1", "Namespace", "", "expandvm").is_none());
    assert!(secret(&server, "istio-system", "cacerts").is_some());

    let gone = prepare(
        &server,
        &[
            "--delete",
            "--vm-namespace",
            "expandvm",
            "--include-ca",
            "--yes",
        ],
    )
    .await;
    assert_eq!(gone.code, 0, "{}", gone.show());
    assert!(
        secret(&server, "istio-system", "cacerts").is_none(),
        "{}",
        gone.show()
    );
    let nothing = prepare(
        &server,
        &[
            "--delete",
            "--vm-namespace",
            "expandvm",
            "--include-ca",
            "--yes",
        ],
    )
    .await;
    assert!(
        nothing.stderr.contains("nothing to delete"),
        "{}",
        nothing.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn before_istio_is_installed_the_runbook_order_works() {
    // The runbook creates istio-system and cacerts before installing Istio.
    let server = Server::start(Scenario::empty()).await;
    let run = prepare(
        &server,
        &["--vm-namespace", "expandvm", "--ca-dir", &samples_arg()],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stderr
            .contains("era: unknown (no Istio control plane in istio-system yet"),
        "{}",
        run.show()
    );
    assert!(
        !run.stderr.contains("still holds the old CA key"),
        "{}",
        run.show()
    );
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(4).collect())
        .collect();
    assert_eq!(rows[0], ["Namespace", "istio-system", "created"]);
    assert_eq!(
        rows[1][..4],
        ["Secret", "istio-system", "cacerts", "created"]
    );
    assert!(
        server
            .object("v1", "Namespace", "", "istio-system")
            .is_some()
    );
    assert!(secret(&server, "istio-system", "cacerts").is_some());

    // A WorkloadGroup needs to know the era.
    let wg = prepare(
        &server,
        &["--vm-namespace", "expandvm", "--workload-group", "vm"],
    )
    .await;
    assert_eq!(wg.code, 1, "{}", wg.show());
    assert!(
        wg.stderr.contains("cannot tell the Istio era"),
        "{}",
        wg.show()
    );
    assert!(wg.stderr.contains("--era modern"), "{}", wg.show());
}

#[tokio::test(flavor = "multi_thread")]
async fn force_replaces_a_different_ca_with_a_guarded_update() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = samples_arg();
    assert_eq!(
        prepare(&server, &["--vm-namespace", "expandvm", "--ca-dir", &dir])
            .await
            .code,
        0
    );
    let before = secret(&server, "istio-system", "cacerts").unwrap();
    let other = test_pki("Other Root", true, 365);
    let other_dir = good_dir(&other);
    let other_arg = other_dir.path().to_str().unwrap();
    server.reset_requests();
    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            other_arg,
            "--force",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("cacerts") && l.contains("updated")),
        "{}",
        run.show()
    );
    assert_eq!(
        writes(&server),
        ["PUT /api/v1/namespaces/istio-system/secrets/cacerts ?&fieldManager=meshvm -> 200"],
        "one replace, nothing else"
    );
    let after = secret(&server, "istio-system", "cacerts").unwrap();
    assert_eq!(data(&after)["root-cert.pem"], other.root.as_bytes());
    assert_ne!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    assert!(
        run.stderr.contains("still holds the old CA key"),
        "{}",
        run.show()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_forced_replacements_one_wins_by_resource_version() {
    let server = sim("legacy-1.4.yaml").await;
    assert_eq!(
        prepare(
            &server,
            &["--vm-namespace", "vm", "--ca-dir", &samples_arg()]
        )
        .await
        .code,
        0
    );
    // Both must read the Secret before either replaces it: slow every request well past the
    // two processes' start-up skew.
    server.set_latency(Duration::from_millis(250));
    let a = test_pki("Root A", true, 365);
    let b = test_pki("Root B", true, 365);
    let (dir_a, dir_b) = (good_dir(&a), good_dir(&b));
    let args_a = [
        "--vm-namespace",
        "vm",
        "--force",
        "--ca-dir",
        dir_a.path().to_str().unwrap(),
    ];
    let args_b = [
        "--vm-namespace",
        "vm",
        "--force",
        "--ca-dir",
        dir_b.path().to_str().unwrap(),
    ];
    let (ra, rb) = tokio::join!(prepare(&server, &args_a), prepare(&server, &args_b));
    let codes = [ra.code, rb.code];
    assert!(
        codes.contains(&0) && codes.contains(&1),
        "{}\n{}",
        ra.show(),
        rb.show()
    );
    let (loser, root) = if ra.code == 0 {
        (&rb, &a.root)
    } else {
        (&ra, &b.root)
    };
    assert!(
        loser
            .stderr
            .contains("was changed by someone else while prepare ran"),
        "{}",
        loser.show()
    );
    assert!(
        loser.stdout.contains("failed to update"),
        "{}",
        loser.show()
    );
    let stored = secret(&server, "istio-system", "cacerts").unwrap();
    assert_eq!(data(&stored)["root-cert.pem"], root.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_costs_six_reads_and_no_write() {
    // With server-side apply (1.16), and without it (1.14, known from /version: a POST for each
    // object read absent, no refused apply, no second read); the re-run only reads, either way.
    for (kube, first_calls) in [("1.16", 9), ("1.14", 9)] {
        let server = sim_at("legacy-1.4.yaml", kube).await;
        let args = ["--vm-namespace", "expandvm", "--ca-dir", &samples_arg()];
        server.reset_requests();
        assert_eq!(prepare(&server, &args).await.code, 0);
        let first = server.requests();
        // Reads: Deployments, istio-system, cacerts, expandvm, the ServiceAccounts prepare made
        // there (the one ServiceAccount rule), the VM's ServiceAccount; writes: 3.
        assert_eq!(
            first.api_calls(),
            first_calls,
            "{kube}: {:?}",
            first.counts()
        );
        server.reset_requests();
        assert_eq!(prepare(&server, &args).await.code, 0);
        let second = server.requests();
        assert_eq!(second.api_calls(), 6, "{kube}: {:?}", second.counts());
        assert!(second.records.iter().all(|r| r.method == "GET"), "{kube}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_expiring_soon_is_a_warning_not_a_refusal() {
    let server = sim("legacy-1.4.yaml").await;
    let soon = test_pki("Root", true, 10);
    let dir = good_dir(&soon);
    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    let warning = format!("warning: {}: ", dir.path().join("ca-cert.pem").display());
    assert!(run.stderr.contains(&warning), "{}", run.show());
    assert!(secret(&server, "istio-system", "cacerts").is_some());
    // The threshold is a flag.
    let quiet = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            dir.path().to_str().unwrap(),
            "--expiry-warning-days",
            "5",
        ],
    )
    .await;
    assert!(!quiet.stderr.contains("warning:"), "{}", quiet.show());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_given_one_by_one_keep_the_well_known_keys() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--vm-namespace".to_owned(), "expandvm".to_owned()];
    for (flag, key) in [
        ("--ca-cert", "ca-cert.pem"),
        ("--ca-key", "ca-key.pem"),
        ("--root-cert", "root-cert.pem"),
        ("--cert-chain", "cert-chain.pem"),
    ] {
        let renamed = dir.path().join(format!("mesh-{key}.txt"));
        std::fs::copy(samples().join(key), &renamed).unwrap();
        args.extend([flag.to_owned(), renamed.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = prepare(&server, &args).await;
    assert_eq!(run.code, 0, "{}", run.show());
    let stored = data(&secret(&server, "istio-system", "cacerts").unwrap());
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    assert_eq!(
        stored["root-cert.pem"],
        std::fs::read(samples().join("root-cert.pem")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_prepares_with_the_same_ca_both_succeed() {
    let server = sim("legacy-1.4.yaml").await;
    server.set_latency(Duration::from_millis(40));
    let dir = samples_arg();
    let args_a = ["--vm-namespace", "vm-a", "--ca-dir", dir.as_str()];
    let args_b = ["--vm-namespace", "vm-b", "--ca-dir", dir.as_str()];
    let (ra, rb) = tokio::join!(prepare(&server, &args_a), prepare(&server, &args_b));
    assert_eq!((ra.code, rb.code), (0, 0), "{}\n{}", ra.show(), rb.show());
    let created = [&ra, &rb]
        .iter()
        .filter(|r| {
            r.stdout
                .lines()
                .any(|l| l.contains("cacerts") && l.contains(" created "))
        })
        .count();
    assert_eq!(
        created,
        1,
        "exactly one created it\n{}\n{}",
        ra.show(),
        rb.show()
    );
    let stored = secret(&server, "istio-system", "cacerts").unwrap();
    assert_eq!(
        data(&stored)["ca-key.pem"],
        std::fs::read(samples().join("ca-key.pem")).unwrap()
    );
}

/// The command a stderr note quotes after `or ` (the last backquoted span of the line).
fn quoted_command(stderr: &str, starts: &str) -> String {
    stderr
        .split('`')
        .find(|part| part.starts_with(starts))
        .unwrap_or_else(|| panic!("no `{starts}…` in:\n{stderr}"))
        .to_owned()
}

/// Run a printed `kubectl meshvm <verb> …` command as printed, through the verb's binary.
async fn run_printed(command: &str) -> Run {
    let words: Vec<String> = command
        .split_whitespace()
        .skip(3)
        .map(str::to_owned)
        .collect();
    let bin = match command.split_whitespace().nth(2) {
        Some("register") => env!("CARGO_BIN_EXE_kubectl-meshvm-register"),
        _ => BIN,
    };
    tokio::task::spawn_blocking(move || {
        Run::from(
            &Command::new(bin)
                .args(&words)
                .env("NO_COLOR", "1")
                .env_remove("KUBECONFIG")
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_restart_hint_runs_as_printed_in_a_script_without_ca_files() {
    let server = sim("legacy-1.4.yaml").await;
    let first = prepare(&server, &["-n", "expandvm", "--ca-dir", &samples_arg()]).await;
    assert_eq!(first.code, 0, "{}", first.show());
    // Not a terminal here: the printed command carries -n and --yes.
    let command = quoted_command(&first.stderr, "kubectl meshvm prepare -n expandvm");
    assert!(
        command.contains("--restart-control-plane")
            && command.ends_with(" --yes")
            && !command.contains("--ca-dir")
            && !command.contains("--vm-namespace"),
        "{command}"
    );
    let restarted = run_printed(&command).await;
    assert_eq!(restarted.code, 0, "{command}\n{}", restarted.show());
    assert!(
        restarted
            .stdout
            .lines()
            .any(|l| l.contains("istio-citadel") && l.contains("done")),
        "{}",
        restarted.show()
    );
    let citadel = server
        .object("apps/v1", "Deployment", "istio-system", "istio-citadel")
        .unwrap();
    assert!(
        citadel
            .pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
            .is_some(),
        "restarted"
    );
    // Once restarted after cacerts: nothing to restart, and no write.
    let before = writes(&server).len();
    let again = run_printed(&command).await;
    assert_eq!(again.code, 0, "{}", again.show());
    assert!(
        again.stderr.contains("nothing to restart: Deployment istio-system/istio-citadel started after cacerts was last written"),
        "{}",
        again.show()
    );
    assert_eq!(writes(&server).len(), before, "{:?}", writes(&server));
}

#[tokio::test(flavor = "multi_thread")]
async fn n_names_the_namespace_and_the_context_namespace_applies_without_it() {
    let server = sim("legacy-1.4.yaml").await;
    // -n and its older name disagreeing: a usage error naming both.
    let both = prepare(&server, &["-n", "a", "--vm-namespace", "b"]).await;
    assert_eq!(both.code, 2, "{}", both.show());
    assert!(
        both.stderr
            .contains("-n a and --vm-namespace b name two different namespaces"),
        "{}",
        both.show()
    );
    // No -n: the context's namespace (`default` in the sim's kubeconfig), and one line saying so.
    let plain = prepare(&server, &["--dry-run"]).await;
    assert_eq!(plain.code, 0, "{}", plain.show());
    assert!(
        plain.stderr.contains("note: working in namespace default (the namespace of context kube-sim), where nothing meshvm made is: name the VM's namespace with -n NS"),
        "{}",
        plain.show()
    );
    // A context whose namespace is the VM's: prepare works there, as kubectl would, silently.
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    std::fs::write(
        &kc,
        text.replace("namespace: default", "namespace: expandvm"),
    )
    .unwrap();
    let kc = kc.display().to_string();
    let out = run_printed(&format!("kubectl meshvm prepare --kubeconfig {kc}")).await;
    assert_eq!(out.code, 0, "{}", out.show());
    assert!(!out.stderr.contains("note: working in"), "{}", out.show());
    let ns = server
        .object("v1", "Namespace", "", "expandvm")
        .expect("made");
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshvm"
    );
    assert!(
        server
            .object("v1", "ServiceAccount", "expandvm", "expandvm")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_group_ports_name_the_stale_entries_and_the_printed_refresh_works() {
    let server = sim("modern.yaml").await;
    let kc = server.kubeconfig_path().display().to_string();
    let first = prepare(
        &server,
        &[
            "-n",
            "vm",
            "--workload-group",
            "vm",
            "--labels",
            "app=vm",
            "--ports",
            "http=8080",
        ],
    )
    .await;
    assert_eq!(first.code, 0, "{}", first.show());
    let registered = run_printed(&format!(
        "kubectl meshvm register --workload-entry vm-1 --address 10.0.0.5 -n vm --workload-group vm --kubeconfig {kc}"
    ))
    .await;
    assert_eq!(registered.code, 0, "{}", registered.show());
    let changed = prepare(
        &server,
        &[
            "-n",
            "vm",
            "--workload-group",
            "vm",
            "--labels",
            "app=vm",
            "--ports",
            "http=9090",
        ],
    )
    .await;
    assert_eq!(changed.code, 0, "{}", changed.show());
    assert!(
        changed
            .stderr
            .contains("warning: workloadgroup vm/vm changes (ports http=8080 → http=9090)")
            && changed.stderr.contains("workloadentries vm-1"),
        "{}",
        changed.show()
    );
    let refresh = quoted_command(
        &changed.stderr,
        "kubectl meshvm register --workload-entry vm-1",
    );
    let refreshed = run_printed(&format!("{refresh} --kubeconfig {kc}")).await;
    assert_eq!(refreshed.code, 0, "{refresh}\n{}", refreshed.show());
    let entry = server
        .object("networking.istio.io/v1", "WorkloadEntry", "vm", "vm-1")
        .expect("entry");
    assert_eq!(entry["spec"]["ports"]["http"], 9090, "{entry}");
    // The same flags again: nothing is stale.
    let same = prepare(
        &server,
        &[
            "-n",
            "vm",
            "--workload-group",
            "vm",
            "--labels",
            "app=vm",
            "--ports",
            "http=9090",
        ],
    )
    .await;
    assert!(!same.stderr.contains("stale"), "{}", same.show());
}

/// The `.global` ServiceEntries of namespace `ns`.
fn global_entries(server: &Server, ns: &str) -> Vec<Value> {
    server
        .objects("networking.istio.io/v1alpha3", "ServiceEntry")
        .into_iter()
        .filter(|e| e["metadata"]["namespace"] == ns)
        .collect()
}

fn entry_address(entry: &Value) -> std::net::Ipv4Addr {
    entry["spec"]["addresses"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address: {entry}"))
}

/// Issue 15's "Done when", cluster side: on the legacy scenario, `--expose httpbin.bar` after
/// `kubectl -n bar create service clusterip httpbin --tcp=8000:80` makes the `.global`
/// ServiceEntry (127.255.x.y, the gateway on 15443); a re-run writes nothing; a second Service
/// gets another address; a missing Service is refused before any write; `--delete` removes them.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_expose_makes_global_service_entries_stable_unique_and_deletable() {
    let server = sim("legacy-1.4.yaml").await;
    let dir = samples_arg();
    for args in [
        &["create", "namespace", "bar"][..],
        &[
            "-n",
            "bar",
            "create",
            "service",
            "clusterip",
            "httpbin",
            "--tcp=8000:80",
        ],
        &[
            "-n",
            "bar",
            "create",
            "service",
            "clusterip",
            "ratings",
            "--tcp=9080",
        ],
    ] {
        let k = kubectl(&server, args).await;
        assert_eq!(k.code, 0, "{}", k.show());
    }

    // A missing Service: refused, naming it and the command that lists what exists; no write.
    let before = writes(&server).len();
    let missing = prepare(
        &server,
        &[
            "-n",
            "expandvm",
            "--ca-dir",
            &dir,
            "--expose",
            "httpbin.bar,nope.bar",
        ],
    )
    .await;
    assert_eq!(missing.code, 1, "{}", missing.show());
    assert!(missing.stderr.contains("bar/nope"), "{}", missing.show());
    assert!(
        missing.stderr.contains("`kubectl get svc -n bar`"),
        "{}",
        missing.show()
    );
    assert_eq!(writes(&server).len(), before, "{:?}", writes(&server));
    let listed = kubectl(&server, &["get", "svc", "-n", "bar"]).await;
    assert_eq!(listed.code, 0, "the hint runs: {}", listed.show());

    // The Done-when run.
    let run = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--expose",
            "httpbin.bar",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.show());
    let entries = global_entries(&server, "expandvm");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let httpbin = &entries[0];
    assert_eq!(httpbin["metadata"]["name"], "httpbin-bar-global");
    assert_eq!(
        httpbin["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshvm"
    );
    let spec = &httpbin["spec"];
    assert_eq!(spec["hosts"], serde_json::json!(["httpbin.bar.global"]));
    assert_eq!(spec["location"], "MESH_INTERNAL");
    assert_eq!(spec["resolution"], "DNS");
    let address = entry_address(httpbin);
    assert_eq!(address.octets()[..2], [127, 255], "{address}");
    // kubectl names the port `8000-80`: a name Istio reads as TCP.
    assert_eq!(
        spec["ports"],
        serde_json::json!([{"name": "8000-80", "number": 8000, "protocol": "TCP"}])
    );
    let gateway = server
        .object("v1", "Service", "istio-system", "istio-ingressgateway")
        .unwrap();
    let gateway_ip = gateway["status"]["loadBalancer"]["ingress"][0]["ip"].clone();
    assert_eq!(
        spec["endpoints"],
        serde_json::json!([{"address": gateway_ip, "ports": {"8000-80": 15443}}])
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ServiceEntry") && l.contains("created")),
        "{}",
        run.show()
    );

    // Again: nothing written, the same address.
    let before = writes(&server).len();
    let again = prepare(
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &dir,
            "--expose",
            "httpbin.bar",
        ],
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.show());
    assert!(
        again.stderr.contains("nothing to change"),
        "{}",
        again.show()
    );
    assert_eq!(writes(&server).len(), before, "{:?}", writes(&server));

    // A dry run of a second Service stores nothing; the real run gives it another address and
    // keeps the first one's.
    let dry = prepare(
        &server,
        &[
            "-n",
            "expandvm",
            "--expose",
            "httpbin.bar",
            "--expose",
            "ratings.bar",
            "--dry-run=server",
        ],
    )
    .await;
    assert_eq!(dry.code, 0, "{}", dry.show());
    assert_eq!(global_entries(&server, "expandvm").len(), 1);
    let second = prepare(
        &server,
        &[
            "-n",
            "expandvm",
            "--expose",
            "httpbin.bar",
            "--expose",
            "ratings.bar",
        ],
    )
    .await;
    assert_eq!(second.code, 0, "{}", second.show());
    let entries = global_entries(&server, "expandvm");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e["metadata"]["name"] == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    assert_eq!(
        entry_address(by_name("httpbin-bar-global")),
        address,
        "stable"
    );
    let ratings = entry_address(by_name("ratings-bar-global"));
    assert_ne!(ratings, address, "unique");
    assert_eq!(ratings.octets()[..2], [127, 255]);

    // --delete --expose: only that Service's entry goes (a dry run first sends no write); the
    // namespace and the other entry stay; again: nothing to delete, exit 0.
    let before = writes(&server).len();
    let dry = prepare(
        &server,
        &[
            "--delete",
            "-n",
            "expandvm",
            "--expose",
            "ratings.bar",
            "--dry-run=client",
        ],
    )
    .await;
    assert_eq!(dry.code, 0, "{}", dry.show());
    assert!(dry.stdout.contains("ratings-bar-global"), "{}", dry.show());
    assert_eq!(writes(&server).len(), before, "{:?}", writes(&server));
    let unexpose = [
        "--delete",
        "-n",
        "expandvm",
        "--expose",
        "ratings.bar",
        "--yes",
    ];
    let one = prepare(&server, &unexpose).await;
    assert_eq!(one.code, 0, "{}", one.show());
    assert!(
        one.stdout.lines().any(|l| l.starts_with("ServiceEntry")
            && l.contains("ratings-bar-global")
            && l.contains("deleted")),
        "{}",
        one.show()
    );
    assert!(
        one.stderr.contains("ratings.bar.global"),
        "the hosts note: {}",
        one.show()
    );
    let left = global_entries(&server, "expandvm");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["metadata"]["name"], "httpbin-bar-global");
    assert!(server.object("v1", "Namespace", "", "expandvm").is_some());
    let before = writes(&server).len();
    let again = prepare(&server, &unexpose).await;
    assert_eq!(again.code, 0, "{}", again.show());
    assert!(
        again.stderr.contains("nothing to delete"),
        "{}",
        again.show()
    );
    assert_eq!(writes(&server).len(), before, "{:?}", writes(&server));
    // One that is not meshvm's is refused, named, with a hint that runs as printed.
    let mut foreign = left[0].clone();
    foreign["metadata"]["name"] = serde_json::json!("ratings-bar-global");
    foreign["metadata"]["labels"] = serde_json::json!({});
    for key in ["resourceVersion", "uid", "creationTimestamp"] {
        foreign["metadata"].as_object_mut().unwrap().remove(key);
    }
    server.load([foreign]).unwrap();
    let refused = prepare(
        &server,
        &[
            "--delete",
            "-n",
            "expandvm",
            "--expose",
            "ratings.bar,httpbin.bar",
            "--yes",
        ],
    )
    .await;
    assert_eq!(refused.code, 1, "{}", refused.show());
    assert!(
        refused
            .stderr
            .contains("expandvm/ratings-bar-global was not made by meshvm"),
        "{}",
        refused.show()
    );
    assert_eq!(
        global_entries(&server, "expandvm").len(),
        2,
        "nothing was deleted"
    );
    let look = kubectl(
        &server,
        &[
            "get",
            "serviceentry",
            "ratings-bar-global",
            "-n",
            "expandvm",
            "-o",
            "yaml",
        ],
    )
    .await;
    assert_eq!(look.code, 0, "the hint runs: {}", look.show());

    // --delete lists them and they go with the namespace.
    let gone = prepare(&server, &["--delete", "-n", "expandvm", "--yes"]).await;
    assert_eq!(gone.code, 0, "{}", gone.show());
    assert!(
        gone.stdout
            .lines()
            .any(|l| l.starts_with("ServiceEntry") && l.contains("httpbin-bar-global")),
        "{}",
        gone.show()
    );
    for _ in 0..50 {
        if global_entries(&server, "expandvm").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(global_entries(&server, "expandvm").is_empty());
}

/// Namespace `bar` with one TCP Service per name.
fn services_in_bar(names: &[&str]) -> Vec<Value> {
    let mut objects = vec![
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bar"}}),
    ];
    for svc in names {
        objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc, "namespace": "bar"},
            "spec": {"ports": [{"name": "http", "port": 8000, "protocol": "TCP"}]}}));
    }
    objects
}

/// Two Services whose `.global` hosts start their address search at the same 127.255.x.y.
fn colliding_services() -> (String, String, std::net::Ipv4Addr) {
    let mut first: std::collections::HashMap<std::net::Ipv4Addr, String> =
        std::collections::HashMap::new();
    let none = std::collections::BTreeSet::new();
    for i in 0.. {
        let name = format!("s{i}");
        let ip = meshvm::prepare::expose::allocate(&format!("{name}.bar.global"), &none).unwrap();
        if let Some(other) = first.insert(ip, name.clone()) {
            return (other, name, ip);
        }
    }
    unreachable!()
}

/// Two `--expose` runs for different VMs whose hosts hash alike. Which entry keeps a shared
/// address is decided the same way by every run (the older, then by namespace/name): the one
/// holding it second moves, the first is left alone. Then two such runs at once (each sees no
/// entry, both create the same address): afterwards the addresses are unique.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_expose_runs_end_with_unique_addresses() {
    let (a, b, ip) = colliding_services();
    let (expose_a, expose_b) = (format!("{a}.bar"), format!("{b}.bar"));
    let server = sim("legacy-1.4.yaml").await;
    server.load(services_in_bar(&[&a, &b])).unwrap();

    // The aftermath of a race: both entries hold `ip`; vma's is older.
    for (ns, svc, created) in [
        ("vma", &a, "2026-01-01T00:00:00Z"),
        ("vmb", &b, "2026-01-01T00:00:01Z"),
    ] {
        let item = format!("{svc}.bar");
        let run = prepare(&server, &["-n", ns, "--expose", &item]).await;
        assert_eq!(run.code, 0, "{}", run.show());
        let mut entry = server
            .object(
                "networking.istio.io/v1alpha3",
                "ServiceEntry",
                ns,
                &format!("{svc}-bar-global"),
            )
            .unwrap();
        entry["spec"]["addresses"] = serde_json::json!([ip.to_string()]);
        entry["metadata"]["creationTimestamp"] = serde_json::json!(created);
        server.load([entry]).unwrap();
    }
    let stay = prepare(&server, &["-n", "vma", "--expose", &expose_a]).await;
    assert_eq!(stay.code, 0, "{}", stay.show());
    assert!(
        stay.stderr.contains("nothing to change"),
        "the first holder keeps it: {}",
        stay.show()
    );
    let moved = prepare(&server, &["-n", "vmb", "--expose", &expose_b]).await;
    assert_eq!(moved.code, 0, "{}", moved.show());
    assert!(moved.stdout.contains("updated"), "{}", moved.show());
    let address = |server: &Server, ns: &str, svc: &str| {
        entry_address(
            &server
                .object(
                    "networking.istio.io/v1alpha3",
                    "ServiceEntry",
                    ns,
                    &format!("{svc}-bar-global"),
                )
                .unwrap(),
        )
    };
    assert_eq!(address(&server, "vma", &a), ip);
    assert_ne!(address(&server, "vmb", &b), ip);

    // Two runs at once, each for a fresh VM namespace; the API server holds each ServiceEntry
    // create 3 s before storing it, so both runs read (and pick the same address) before either
    // entry exists.
    let server = sim("legacy-1.4.yaml").await;
    server.load(services_in_bar(&[&a, &b])).unwrap();
    server.slow_down(
        "create",
        "/apis/networking.istio.io/",
        Duration::from_secs(3),
    );
    let (args_a, args_b) = (
        ["-n", "vma", "--expose", &expose_a],
        ["-n", "vmb", "--expose", &expose_b],
    );
    let (one, two) = tokio::join!(prepare(&server, &args_a), prepare(&server, &args_b));
    assert_eq!(one.code, 0, "{}", one.show());
    assert_eq!(two.code, 0, "{}", two.show());
    assert_ne!(
        address(&server, "vma", &a),
        address(&server, "vmb", &b),
        "unique after concurrent runs:\n{}\n{}",
        one.show(),
        two.show()
    );
    let moved: Vec<&str> = [&one, &two]
        .iter()
        .flat_map(|r| r.stdout.lines())
        .filter(|l| l.contains("moved: a concurrent run took the address first"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one run moved:\n{}\n{}",
        one.show(),
        two.show()
    );
}

/// Modern: `--expose` writes no ServiceEntry; it checks the east-west cross-network path and,
/// without it, refuses with the command that adds it.
#[tokio::test(flavor = "multi_thread")]
async fn modern_expose_checks_the_cross_network_gateway() {
    let server = sim("modern-1.22.yaml").await;
    for args in [
        &["create", "namespace", "bar"][..],
        &[
            "-n",
            "bar",
            "create",
            "service",
            "clusterip",
            "httpbin",
            "--tcp=8000:80",
        ],
    ] {
        let k = kubectl(&server, args).await;
        assert_eq!(k.code, 0, "{}", k.show());
    }
    let run = prepare(&server, &["-n", "vm", "--expose", "httpbin.bar"]).await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stderr.contains("cross-network-gateway"),
        "{}",
        run.show()
    );
    assert!(
        !writes(&server).iter().any(|w| w.contains("serviceentries")),
        "{:?}",
        writes(&server)
    );

    let del = kubectl(
        &server,
        &[
            "-n",
            "istio-system",
            "delete",
            "gateways.networking.istio.io",
            "cross-network-gateway",
        ],
    )
    .await;
    assert_eq!(del.code, 0, "{}", del.show());
    let before = writes(&server).len();
    let refused = prepare(&server, &["-n", "vm2", "--expose", "httpbin.bar"]).await;
    assert_eq!(refused.code, 1, "{}", refused.show());
    assert!(
        refused.stderr.contains(
            "`kubectl apply -f samples/multicluster/expose-services.yaml -n istio-system`"
        ),
        "{}",
        refused.show()
    );
    assert_eq!(writes(&server).len(), before, "nothing written");
}
