//! `bundle --renew` against kube-sim: only the credentials change, the rest stays byte-identical,
//! `SHA256SUMS` verifies; a directory for another VM (or no bundle at all) is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser as _;
use kube_sim::{Scenario, Server};
use meshvm::args::BundleArgs;
use meshvm::bundle::{self, Error, Options};
use meshvm::errors::{Diagnose as _, Outcome};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

use crate::bundle_sim::{options, run as bundle};

async fn renew(opts: &Options) -> (Result<Outcome, Error>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = bundle::renew::run(opts, &mut out, &mut err).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn ok(result: &Result<Outcome, Error>, stderr: &str) {
    assert!(
        result.is_ok(),
        "{:?}\n{stderr}",
        result
            .as_ref()
            .err()
            .map(|e| meshvm::errors::error_chain(e))
    );
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn changed(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same files"
    );
    after
        .iter()
        .filter(|(k, v)| before[*k] != **v)
        .map(|(k, _)| k.clone())
        .collect()
}

fn sha256sum_verifies(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .expect("sha256sum (coreutils) runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cacerts` of a new plugged-in CA (its own root), as `prepare --ca-dir` writes it.
fn new_cacerts() -> serde_json::Value {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "renew test root");
    ca.not_before = (now - day).into();
    ca.not_after = (now + 3650 * day).into();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = ca.self_signed(&key).unwrap().pem();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "stringData": {
            "ca-cert.pem": root, "ca-key.pem": key.serialize_pem(),
            "root-cert.pem": root, "cert-chain.pem": root,
        },
    })
}

/// `kubectl rollout restart deployment istio-citadel`: a new template annotation, patched
/// through the API (which bumps the generation, so the sim's Citadel restarts with cacerts).
async fn restart_citadel(server: &Server) {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(server.client(), "istio-system");
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2030-01-01T00:00:00Z"}}}}});
    api.patch(
        "istio-citadel",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(&patch),
    )
    .await
    .expect("rollout restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_renew_after_a_ca_change_and_a_citadel_restart() {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")])
            .unwrap()
            // Citadel re-issues a secret under another root than its own at its resync.
            .with_citadel_resync(Duration::from_millis(300)),
    )
    .await;
    server
        .load(vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expandvm"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "expandvm", "namespace": "expandvm"}}),
        ])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    let archive = tmp.path().join("expandvm.tar.gz");
    let (result, _, stderr) = bundle(&options(
        &server,
        &dir,
        &[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80,8080",
            "--service-cidr",
            "10.96.0.0/12",
            "--wait",
            "10s",
            "--archive",
            archive.to_str().unwrap(),
        ],
    ))
    .await;
    ok(&result, &stderr);
    let before = files(&dir);
    let archive_before = std::fs::read(&archive).unwrap();

    // prepare wrote a new cacerts; Citadel has not restarted: renew refuses the old root.
    server.load(vec![new_cacerts()]).unwrap();
    let renew_opts = |wait: &str| {
        options(
            &server,
            &dir,
            &[
                "--vm-namespace",
                "expandvm",
                "--renew",
                "--wait",
                wait,
                "--archive",
                archive.to_str().unwrap(),
            ],
        )
    };
    let (result, _, _) = renew(&renew_opts("0s")).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::IdentityOldRoot { .. }), "{err}");
    assert!(err.hint().unwrap().contains("restart"), "{:?}", err.hint());
    assert_eq!(files(&dir), before, "nothing written");

    restart_citadel(&server).await;
    let (result, stdout, stderr) = renew(&renew_opts("10s")).await;
    ok(&result, &stderr);
    let after = files(&dir);
    assert_eq!(
        changed(&before, &after),
        ["SHA256SUMS", "cert-chain.pem", "key.pem", "root-cert.pem"]
    );
    assert!(
        String::from_utf8_lossy(&after["root-cert.pem"]).contains(
            server
                .object("v1", "Secret", "istio-system", "cacerts")
                .unwrap()["data"]["root-cert.pem"]
                .as_str()
                .map(|b| {
                    use base64::Engine as _;
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                        .unwrap()
                })
                .unwrap()
                .trim()
        ),
        "the renewed bundle carries the root in cacerts"
    );
    sha256sum_verifies(&dir);
    assert_ne!(
        std::fs::read(&archive).unwrap(),
        archive_before,
        "archive rebuilt"
    );
    for (file, word) in [
        ("cert-chain.pem", "NotAfter"),
        ("root-cert.pem", "renewed"),
        ("key.pem", "renewed"),
        ("SHA256SUMS", "rewritten"),
        ("expandvm.tar.gz", "rebuilt"),
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(file) && l.contains(word)),
            "{file} {word}: {stdout}"
        );
    }
    let key = String::from_utf8(after["key.pem"].clone()).unwrap();
    assert!(
        !stdout.contains(key.lines().nth(1).unwrap()) && !stderr.contains("PRIVATE KEY"),
        "no secret printed"
    );
    assert!(stderr.contains("sudo ./install.sh --renew"), "{stderr}");
    // Again: the same credentials, nothing but the table.
    let (result, stdout, stderr) = renew(&renew_opts("10s")).await;
    ok(&result, &stderr);
    assert_eq!(files(&dir), after);
    assert!(stdout.contains("unchanged"), "{stdout}");
}

async fn modern_sim() -> Server {
    let server =
        Server::start(Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")]).unwrap())
            .await;
    server
        .load(vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vm"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vm-sa", "namespace": "vm"}}),
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
                "metadata": {"name": "vm", "namespace": "vm"},
                "spec": {"metadata": {"labels": {"app": "vm"}}, "template": {"serviceAccount": "vm-sa", "network": "vm-net"}},
            }),
        ])
        .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn modern_renew_changes_the_token_and_nothing_else() {
    let server = modern_sim().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let first = ["--vm-namespace", "vm", "--workload-group", "vm"];
    let (result, _, stderr) = bundle(&options(&server, &dir, &first)).await;
    ok(&result, &stderr);
    let before = files(&dir);
    // Token times have second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Bundling again (a script run twice) keeps the folder's still-valid token: unchanged.
    let (result, _, stderr) = bundle(&options(&server, &dir, &first)).await;
    ok(&result, &stderr);
    assert!(stderr.contains("kept the istio-token"), "{stderr}");
    assert_eq!(changed(&before, &files(&dir)), Vec::<String>::new());
    sha256sum_verifies(&dir);

    // A token meant to outlive the folder's by far differs only in the token: the refusal
    // points at --renew.
    let longer = [
        "--vm-namespace",
        "vm",
        "--workload-group",
        "vm",
        "--token-duration",
        "10h",
    ];
    let (result, _, _) = bundle(&options(&server, &dir, &longer)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    assert!(
        err.hint()
            .unwrap()
            .contains("kubectl meshvm bundle --renew"),
        "{:?}",
        err.hint()
    );

    let (result, stdout, stderr) = renew(&options(
        &server,
        &dir,
        &["--vm-namespace", "vm", "--renew", "--token-duration", "2h"],
    ))
    .await;
    ok(&result, &stderr);
    let after = files(&dir);
    assert_eq!(changed(&before, &after), ["SHA256SUMS", "istio-token"]);
    sha256sum_verifies(&dir);
    let token = String::from_utf8(after["istio-token"].clone()).unwrap();
    let exp = bundle::renew::token_exp(token.as_bytes()).expect("a JWT with exp");
    let old_exp = bundle::renew::token_exp(&before["istio-token"]).unwrap();
    assert!(
        exp - old_exp >= 3600,
        "{old_exp} -> {exp}: --token-duration 2h"
    );
    assert!(!stdout.contains(token.trim()) && !stderr.contains(token.trim()));
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("istio-token") && l.contains("token exp") && l.contains("renewed")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("root-cert.pem") && l.ends_with("unchanged")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_refuses_what_is_not_this_vms_bundle() {
    let server = modern_sim().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let (result, _, stderr) = bundle(&options(
        &server,
        &dir,
        &["--vm-namespace", "vm", "--workload-group", "vm"],
    ))
    .await;
    ok(&result, &stderr);
    let before = files(&dir);
    let refused = |result: Result<Outcome, Error>, words: &str| {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(err.to_string().contains(words), "{words}: {err}");
        assert!(err.hint().is_some());
    };
    // Another VM's namespace, another ServiceAccount, another control plane namespace.
    for (flags, words) in [
        (
            &["--vm-namespace", "other", "--renew"][..],
            "is a bundle for namespace vm, not --vm-namespace other",
        ),
        (
            &["--vm-namespace", "vm", "-s", "default", "--renew"][..],
            "is a bundle for ServiceAccount vm-sa",
        ),
        (
            &[
                "--vm-namespace",
                "vm",
                "--istio-namespace",
                "mesh",
                "--renew",
            ][..],
            "control plane in namespace istio-system",
        ),
        (
            &["--vm-namespace", "vm", "--era", "legacy", "--renew"][..],
            "is a modern-era bundle",
        ),
    ] {
        refused(renew(&options(&server, &dir, flags)).await.0, words);
    }
    assert_eq!(files(&dir), before, "nothing written");
    // No bundle at all, an empty folder, a tampered bundle.
    let nowhere = tmp.path().join("nowhere");
    refused(
        renew(&options(
            &server,
            &nowhere,
            &["--vm-namespace", "vm", "--renew"],
        ))
        .await
        .0,
        "is not a meshvm bundle: it does not exist",
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(
        renew(&options(
            &server,
            &empty,
            &["--vm-namespace", "vm", "--renew"],
        ))
        .await
        .0,
        "holds neither key.pem",
    );
    std::fs::write(dir.join("cluster.env"), "ISTIO_NAMESPACE='vm'\n").unwrap();
    refused(
        renew(&options(
            &server,
            &dir,
            &["--vm-namespace", "vm", "--renew"],
        ))
        .await
        .0,
        "do not match its SHA256SUMS",
    );
    // Flags that change other files than the credentials do not go with --renew.
    for flag in [
        &["--force"][..],
        &["--gateway-ip", "1.2.3.4"],
        &["--inbound-ports", "80"],
    ] {
        let mut argv = vec!["x", "--vm-namespace", "vm", "-d", "d", "--renew"];
        argv.extend(flag);
        assert!(BundleArgs::try_parse_from(argv).is_err(), "{flag:?}");
    }
}
