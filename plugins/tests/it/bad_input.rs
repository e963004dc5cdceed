//! Bad input, case by case: each gets a clear message (snapshot in `bad_input/<case>.stderr`),
//! a non-zero exit, and writes nothing — neither to the cluster (kube-sim's request log shows no
//! accepted write) nor to the filesystem (the work directory is unchanged).
//!
//! Regenerate the snapshots after a deliberate wording change with `SNAPSHOTS=overwrite`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common;

struct Case {
    name: &'static str,
    verb: &'static str,
    args: Vec<String>,
    code: i32,
    /// Extra setup on the sim before the run (undone by `after`).
    before: Option<fn(&kube_sim::Server)>,
}

fn case(name: &'static str, verb: &'static str, args: &[&str], code: i32) -> Case {
    Case {
        name,
        verb,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        code,
        before: None,
    }
}

fn bin(verb: &str) -> &'static str {
    match verb {
        "prepare" => env!("CARGO_BIN_EXE_kubectl-meshvm-prepare"),
        "bundle" => env!("CARGO_BIN_EXE_kubectl-meshvm-bundle"),
        "register" => env!("CARGO_BIN_EXE_kubectl-meshvm-register"),
        "doctor" => env!("CARGO_BIN_EXE_kubectl-meshvm-doctor"),
        "dispatcher" => env!("CARGO_BIN_EXE_kubectl-meshvm"),
        other => panic!("no verb {other}"),
    }
}

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .unwrap()
}

/// Every file under `dir` with its bytes and mode: the filesystem state a failed run must not change.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            #[cfg(unix)]
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            #[cfg(not(unix))]
            let mode = 0;
            if meta.is_dir() {
                out.insert(p.clone(), (Vec::new(), mode));
                stack.push(p);
            } else if meta.is_file() {
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), mode));
            } else {
                out.insert(p.clone(), (b"link".to_vec(), mode));
            }
        }
    }
    out
}

fn accepted_writes(server: &kube_sim::Server) -> usize {
    server
        .requests()
        .records
        .iter()
        .filter(|r| {
            matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
                && (200..300).contains(&r.status)
        })
        .count()
}

fn write(path: &Path, text: &[u8]) {
    std::fs::write(path, text).unwrap();
}

/// A CA directory whose files are Istio's samples with one file replaced.
fn ca_with(work: &Path, name: &str, file: &str, content: &[u8]) -> String {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        std::fs::copy(
            root().join("tests/fixtures/istio-samples").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    write(&dir.join(file), content);
    dir.display().to_string()
}

fn tar_gz(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, link) in entries {
        let mut h = tar::Header::new_gnu();
        if let Some(target) = link {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, name, target).unwrap();
        } else {
            // Written raw: the tar crate itself refuses to write a `..` path.
            h.set_size(2);
            h.set_mode(0o644);
            let bytes = name.as_bytes();
            h.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            tar.append(&h, &b"x\n"[..]).unwrap();
        }
    }
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn bad_input_is_refused_clearly_and_writes_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scenario =
        kube_sim::Scenario::from_files(&[root().join("tests/scenarios/legacy-1.4.yaml")]).unwrap();
    let server = runtime.block_on(kube_sim::Server::start(scenario));
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().canonicalize().unwrap();

    // The runbook's state after `prepare`, so that bundle and register have something to refuse.
    let out = std::process::Command::new(bin("prepare"))
        .args(["--vm-namespace", "expandvm", "--ca-dir"])
        .arg(root().join("tests/fixtures/istio-samples"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup prepare: {}",
        common::text(&out.stderr)
    );

    // Kubeconfig variants.
    let good = std::fs::read_to_string(&kubeconfig).unwrap();
    write(
        &work.join("malformed.kubeconfig"),
        b"apiVersion: v1\nclusters:\n- name: c\n  cluster: [unclosed\n",
    );
    write(
        &work.join("unreachable.kubeconfig"),
        good.replace(&server.url(), "https://127.0.0.1:1")
            .as_bytes(),
    );
    write(
        &work.join("wrong-token.kubeconfig"),
        good.replace(server.token(), "not-the-token").as_bytes(),
    );
    // CA variants (Istio's samples with one file broken).
    let samples = root().join("tests/fixtures/istio-samples");
    let cert = std::fs::read(samples.join("ca-cert.pem")).unwrap();
    let key = std::fs::read(samples.join("ca-key.pem")).unwrap();
    let root_cert = std::fs::read(samples.join("root-cert.pem")).unwrap();
    let ca_empty_key = ca_with(&work, "ca-empty-key", "ca-key.pem", b"");
    let ca_garbage = ca_with(
        &work,
        "ca-garbage",
        "ca-cert.pem",
        b"this is not a certificate\n",
    );
    let ca_cert_as_key = ca_with(&work, "ca-cert-as-key", "ca-key.pem", &cert);
    let ca_key_as_cert = ca_with(&work, "ca-key-as-cert", "ca-cert.pem", &key);
    let ca_root_as_signer = ca_with(&work, "ca-root-as-signer", "ca-cert.pem", &root_cert);
    let ca_chain_wrong = {
        let mut chain = root_cert.clone();
        chain.extend_from_slice(&cert);
        ca_with(&work, "ca-chain-wrong-order", "cert-chain.pem", &chain)
    };
    let ca_missing = {
        let dir = ca_with(&work, "ca-missing-root", "root-cert.pem", b"");
        std::fs::remove_file(Path::new(&dir).join("root-cert.pem")).unwrap();
        dir
    };
    // Files doctor and bundle must refuse.
    write(&work.join("not-k8s.yaml"), b"hello: world\nlist: [1, 2]\n");
    write(
        &work.join("broken.yaml"),
        b"apiVersion: v1\nkind: Service\nmetadata: [\n",
    );
    write(
        &work.join("evil-dotdot.tar.gz"),
        &tar_gz(&[("../evil", None)]),
    );
    write(
        &work.join("evil-link.tar.gz"),
        &tar_gz(&[("key.pem", Some("/etc/shadow"))]),
    );
    std::fs::create_dir_all(work.join("occupied")).unwrap();
    write(&work.join("occupied/notes.txt"), b"keep me\n");

    let w = |p: &str| work.join(p).display().to_string();
    let kc = kubeconfig.display().to_string();
    let mut cases = vec![
        // kubeconfig
        case(
            "kubeconfig-missing",
            "prepare",
            &["--vm-namespace", "vm", "--kubeconfig", &w("nope")],
            1,
        ),
        case(
            "kubeconfig-malformed",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--kubeconfig",
                &w("malformed.kubeconfig"),
            ],
            1,
        ),
        case(
            "kubeconfig-unknown-context",
            "register",
            &[
                "svc",
                "203.0.113.9",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
                "--context",
                "nope",
            ],
            1,
        ),
        case(
            "server-unreachable",
            "bundle",
            &[
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &w("out-unreachable"),
                "--kubeconfig",
                &w("unreachable.kubeconfig"),
            ],
            1,
        ),
        case(
            "credentials-refused",
            "register",
            &[
                "svc",
                "203.0.113.9",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &w("wrong-token.kubeconfig"),
            ],
            1,
        ),
        Case {
            before: Some(|s: &kube_sim::Server| s.deny("create", "services", Some("expandvm"))),
            ..case(
                "rbac-denied",
                "register",
                &[
                    "expandvm",
                    "203.0.113.9",
                    "80",
                    "-n",
                    "expandvm",
                    "--kubeconfig",
                    &kc,
                ],
                1,
            )
        },
        case(
            "two-contexts-for-prepare",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--kubeconfig",
                &kc,
                "--context",
                "a",
                "--context",
                "b",
            ],
            2,
        ),
        // CA files
        case(
            "ca-key-empty",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_empty_key,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-cert-garbage",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_garbage,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-key-is-a-cert",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_cert_as_key,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-cert-is-a-key",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_key_as_cert,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-key-mismatch",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_root_as_signer,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-chain-wrong-order",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_chain_wrong,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-file-missing",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                &ca_missing,
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "ca-files-incomplete",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-cert",
                "a.pem",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "ca-dir-and-files",
            "prepare",
            &[
                "--vm-namespace",
                "vm",
                "--ca-dir",
                "d",
                "--ca-key",
                "k",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "vm-namespace-invalid",
            "prepare",
            &["--vm-namespace", "Bad_NS", "--kubeconfig", &kc],
            2,
        ),
        // IPs, ports, names
        case(
            "ip-invalid",
            "register",
            &[
                "expandvm",
                "300.1.1.1",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "ip-link-local",
            "register",
            &[
                "expandvm",
                "169.254.10.1",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "ip-v6-link-local",
            "register",
            &[
                "expandvm",
                "fe80::1",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "ip-unspecified",
            "register",
            &[
                "expandvm",
                "0.0.0.0",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "port-zero",
            "register",
            &[
                "expandvm",
                "203.0.113.9",
                "0",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "port-too-big",
            "register",
            &[
                "expandvm",
                "203.0.113.9",
                "70000",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "port-word-garbage",
            "register",
            &[
                "expandvm",
                "203.0.113.9",
                "http:eighty",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "service-name-invalid",
            "register",
            &[
                "Bad_Name",
                "203.0.113.9",
                "80",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "label-without-value",
            "register",
            &[
                "expandvm",
                "203.0.113.9",
                "80",
                "-n",
                "expandvm",
                "-l",
                "app",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "register-no-ports",
            "register",
            &[
                "expandvm",
                "203.0.113.9",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "workload-entry-without-address",
            "register",
            &[
                "--workload-entry",
                "vm-1",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "service-entry-port-not-a-protocol",
            "register",
            &[
                "--service-entry",
                "vmhttp",
                "203.0.113.9",
                "web:8080",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "prune-with-words",
            "register",
            &["--prune", "expandvm", "-n", "expandvm", "--kubeconfig", &kc],
            2,
        ),
        case(
            "prune-stale-after-bad",
            "register",
            &[
                "--prune",
                "--stale-after",
                "soon",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        // (Deregistering an unknown address is no longer bad input: a second run is "nothing
        // to change", exit 0, tested in register.rs.)
        case(
            "namespace-given-twice",
            "prepare",
            &[
                "-n",
                "expandvm",
                "--vm-namespace",
                "vm",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "workload-entry-in-legacy-era",
            "register",
            &[
                "--workload-entry",
                "vm-1",
                "--address",
                "203.0.113.9",
                "-n",
                "expandvm",
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        // bundle
        case(
            "bundle-dir-not-empty",
            "bundle",
            &[
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &w("occupied"),
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "bundle-service-cidr-invalid",
            "bundle",
            &[
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &w("out-cidr"),
                "--service-cidr",
                "10.0.0.0/33",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "bundle-gateway-ip-invalid",
            "bundle",
            &[
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &w("out-gw"),
                "--gateway-ip",
                "gateway.example",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        case(
            "bundle-no-such-namespace",
            "bundle",
            &[
                "--vm-namespace",
                "nowhere",
                "--inbound-ports",
                "80",
                "-d",
                &w("out-nowhere"),
                "--kubeconfig",
                &kc,
            ],
            1,
        ),
        case(
            "bundle-token-duration-bad",
            "bundle",
            &[
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &w("out-token"),
                "--token-duration",
                "forever",
                "--kubeconfig",
                &kc,
            ],
            2,
        ),
        // doctor
        case(
            "doctor-yaml-not-kubernetes",
            "doctor",
            &["-f", &w("not-k8s.yaml")],
            1,
        ),
        case(
            "doctor-yaml-broken",
            "doctor",
            &["-f", &w("broken.yaml")],
            1,
        ),
        case("doctor-file-missing", "doctor", &["-f", &w("nope.yaml")], 1),
        case(
            "doctor-bundle-dotdot",
            "doctor",
            &["--bundle", &w("evil-dotdot.tar.gz")],
            1,
        ),
        case(
            "doctor-bundle-symlink",
            "doctor",
            &["--bundle", &w("evil-link.tar.gz")],
            1,
        ),
        // flags
        case("output-unknown", "doctor", &["-o", "xml"], 2),
        case(
            "dry-run-unknown",
            "register",
            &["expandvm", "203.0.113.9", "80", "--dry-run=maybe"],
            2,
        ),
        case("verb-unknown", "dispatcher", &["frobnicate"], 2),
    ];

    let mut redactions = snapbox::Redactions::new();
    redactions.insert("[WORK]", work.clone()).unwrap();
    redactions.insert("[ROOT]", root()).unwrap();
    redactions
        .insert("[KUBECONFIG]", kubeconfig.clone())
        .unwrap();
    redactions.insert("[URL]", server.url()).unwrap();
    let assert = snapbox::Assert::new()
        .action_env("SNAPSHOTS")
        .redact_with(redactions);

    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases.drain(..) {
        if let Some(before) = c.before {
            before(&server);
        }
        let writes_before = accepted_writes(&server);
        let fs_before = tree(&work);
        let output = std::process::Command::new(bin(c.verb))
            .args(&c.args)
            .env("KUBECONFIG", &kubeconfig)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .current_dir(&work)
            .output()
            .unwrap();
        server.allow_all();
        let stderr = common::text(&output.stderr);
        if output.status.code() != Some(c.code) {
            failures.push(format!(
                "{}: exit {:?}, want {}\n{stderr}",
                c.name,
                output.status.code(),
                c.code
            ));
        }
        if accepted_writes(&server) != writes_before {
            failures.push(format!("{}: the cluster was written to", c.name));
        }
        if tree(&work) != fs_before {
            failures.push(format!("{}: the filesystem changed", c.name));
        }
        if !stderr.starts_with("error: ") {
            failures.push(format!(
                "{}: stderr does not start with `error: `:\n{stderr}",
                c.name
            ));
        }
        let snapshot = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad_input"))
            .join(format!("{}.stderr", c.name));
        if let Err(e) = assert.try_eq(
            None,
            snapbox::Data::from(stderr),
            snapbox::Data::read_from(&snapshot, None),
        ) {
            failures.push(format!(
                "{}: stderr differs from {}:\n{e}",
                c.name,
                snapshot.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
