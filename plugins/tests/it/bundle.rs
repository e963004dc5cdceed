//! `kubectl meshvm bundle` end to end: the runbook's cluster after `prepare`, bundled by the
//! binary into exactly the runbook's files; exit codes, `-o json`, determinism.

use std::path::Path;

use kube_sim::{Scenario, Server};
use sim::{Run, repo};

use crate::common::sim;
use serde_json::Value;

const BUNDLE: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-bundle");
const PREPARE: &str = env!("CARGO_BIN_EXE_kubectl-meshvm-prepare");

/// A verb binary against the sim (the shared helper, with `&str` arguments).
async fn run(bin: &'static str, server: &Server, args: &[&str]) -> Run {
    sim::run(bin, server, &sim::args(args)).await
}

async fn legacy_after_prepare() -> Server {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")]).unwrap(),
    )
    .await;
    let samples = repo().join("tests/fixtures/istio-samples");
    let prepared = run(
        PREPARE,
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            samples.to_str().unwrap(),
            // Citadel loads cacerts only when it (re)starts.
            "--restart-control-plane",
            "--yes",
        ],
    )
    .await;
    assert_eq!(prepared.code, 0, "prepare: {}", prepared.show());
    server
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Done-when: the legacy scenario, after `prepare`, bundles into exactly the runbook's files.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_after_prepare_is_the_runbook() {
    let server = legacy_after_prepare().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    let archive = tmp.path().join("expandvm.tar.gz");
    let args = [
        "--vm-namespace",
        "expandvm",
        "--inbound-ports",
        "80",
        "-d",
        dir.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
    ];
    let first = run(BUNDLE, &server, &args).await;
    assert_eq!(first.code, 0, "{}", first.show());
    assert_eq!(
        names(&dir),
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
    // Citadel signs with the plugged-in samples: the VM trusts the samples' root.
    assert_eq!(
        std::fs::read(dir.join("root-cert.pem")).unwrap(),
        std::fs::read(repo().join("tests/fixtures/istio-samples/root-cert.pem")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("cluster.env")).unwrap(),
        "ISTIO_CP_AUTH=MUTUAL_TLS\nISTIO_SERVICE=expandvm\nISTIO_SERVICE_CIDR=172.16.0.0/16\nISTIO_INBOUND_PORTS=80\nISTIO_NAMESPACE=expandvm\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("gwip.txt")).unwrap(),
        "203.0.113.10"
    );
    let header = first.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("FILE")
            && header.contains("SIZE")
            && header.contains("MODE")
            && header.ends_with("WHAT"),
        "{}",
        first.show()
    );
    let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!first.stdout.contains(body) && !first.stderr.contains(body));

    // Again into the same (now non-empty) folder: refused without --force.
    let refused = run(BUNDLE, &server, &args).await;
    assert_eq!(refused.code, 1, "{}", refused.show());
    assert!(
        refused.stderr.contains("error: output directory")
            && refused.stderr.contains("hint: pass --force"),
        "{}",
        refused.show()
    );

    // With --force and -o json: the same archive bytes, and the summary as data.
    let first_archive = std::fs::read(&archive).unwrap();
    let mut forced = args.to_vec();
    forced.extend(["--force", "-o", "json"]);
    let second = run(BUNDLE, &server, &forced).await;
    assert_eq!(second.code, 0, "{}", second.show());
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        first_archive,
        "two archive runs differ"
    );
    let summary: Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(summary["era"], "legacy");
    assert_eq!(summary["files"].as_array().unwrap().len(), 8);
    assert_eq!(
        summary["archive"]["size"].as_u64().unwrap() as usize,
        first_archive.len()
    );
    let key_row = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "key.pem")
        .unwrap();
    assert_eq!(key_row["mode"], "0600");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_and_others_exit_1() {
    let server = Server::start(
        Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")]).unwrap(),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let d = dir.to_str().unwrap();
    let bad_ip = run(
        BUNDLE,
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "-d",
            d,
            "--gateway-ip",
            "lb.example.com",
        ],
    )
    .await;
    assert_eq!(bad_ip.code, 2, "{}", bad_ip.show());
    assert!(
        bad_ip
            .stderr
            .contains("--gateway-ip \"lb.example.com\" is not an IP address"),
        "{}",
        bad_ip.show()
    );
    // The era is legacy: --inbound-ports is needed (known only after detection, still usage).
    let no_ports = run(BUNDLE, &server, &["--vm-namespace", "expandvm", "-d", d]).await;
    assert_eq!(no_ports.code, 2, "{}", no_ports.show());
    assert!(
        no_ports.stderr.contains("hint: e.g. --inbound-ports 80"),
        "{}",
        no_ports.show()
    );
    // No ServiceAccount, so no istio.expandvm: exit 1 with a hint naming prepare.
    let missing = run(
        BUNDLE,
        &server,
        &[
            "--vm-namespace",
            "expandvm",
            "-d",
            d,
            "--inbound-ports",
            "80",
        ],
    )
    .await;
    assert_eq!(missing.code, 1, "{}", missing.show());
    assert!(
        missing
            .stderr
            .contains("secret expandvm/istio.expandvm not found"),
        "{}",
        missing.show()
    );
    assert!(
        missing.stderr.contains("kubectl meshvm prepare"),
        "{}",
        missing.show()
    );
    assert!(!dir.exists());
}
