//! Secrets never reach stdout or stderr: every verb at `-v` and `-vvv`, dry runs and real runs,
//! `-o yaml|json|table`, over Istio's sample CA; no byte run of a private key (the PEM body, the
//! base64 of the whole file as a Secret stores it) nor of a token (the bundle's istio-token, the
//! kubeconfig's bearer token) is printed. Bundle file modes are checked on disk and in the archive.

use crate::common::sim;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Server;
use sim::Run;

/// Length of each fragment searched for: 24 base64 characters are 18 random bytes, so a hit is
/// never chance.
const WINDOW: usize = 24;

/// One secret and the byte runs that would betray it.
struct Secret {
    what: String,
    needles: Vec<String>,
}

/// Fragments of `text` (every `WINDOW` characters from every `WINDOW / 2`), skipping `skip`
/// characters at both ends (PEM armour that every key of a type shares).
fn windows(text: &str, skip: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let end = chars.len().saturating_sub(skip);
    let mut out = Vec::new();
    let mut at = skip;
    while at + WINDOW <= end {
        out.push(chars[at..at + WINDOW].iter().collect());
        at += WINDOW / 2;
    }
    out
}

/// A PEM private key: each body line, fragments of the body, and fragments of the base64 of
/// the whole file (what a Secret's `data` holds).
fn private_key(what: &str, pem: &[u8]) -> Secret {
    let text = String::from_utf8_lossy(pem);
    let body_lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    assert!(body_lines.concat().len() >= 64, "{what}: not a PEM key");
    let mut needles: Vec<String> = body_lines
        .iter()
        .filter(|l| l.len() >= WINDOW)
        .map(|l| (*l).to_owned())
        .collect();
    needles.extend(windows(&body_lines.concat(), 0));
    // 48 base64 characters cover the "-----BEGIN … PRIVATE KEY-----\n" armour.
    needles.extend(windows(&STANDARD.encode(pem), 48));
    Secret {
        what: what.to_owned(),
        needles,
    }
}

/// A token: the whole, and fragments (a JWT's header is shared by every token of its issuer,
/// so fragments start after it).
fn token(what: &str, token: &str) -> Secret {
    let skip = token.find('.').map_or(0, |i| i + 1);
    let mut needles = vec![token.to_owned()];
    needles.extend(windows(token, skip));
    Secret {
        what: what.to_owned(),
        needles,
    }
}

/// Every (stream, secret, fragment) of the run's output that betrays a secret.
fn leaks(run: &Run, secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for s in secrets {
        for n in &s.needles {
            for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                if text.contains(n.as_str()) {
                    found.push(format!("{stream} holds part of {} ({n})", s.what));
                }
            }
        }
    }
    found
}

/// Panic when any needle of any secret is in the run's stdout or stderr.
fn assert_clean(context: &str, run: &Run, secrets: &[Secret]) {
    let found = leaks(run, secrets);
    assert!(
        found.is_empty(),
        "{context}:\n{}\n{}",
        found.join("\n"),
        run.show()
    );
}

fn sample_key() -> Secret {
    private_key(
        "the sample CA's ca-key.pem",
        &std::fs::read(sim::samples().join("ca-key.pem")).unwrap(),
    )
}

fn bearer(server: &Server) -> Secret {
    token("the kubeconfig's bearer token", server.token())
}

/// Run `bin` with each verbosity and each of `variants`, asserting nothing secret is printed
/// and that each run exits 0. Returns how many runs were checked.
async fn sweep(
    bin: &'static str,
    server: &Server,
    base: &[String],
    variants: &[&[&str]],
    secrets: &dyn Fn() -> Vec<Secret>,
) -> usize {
    let mut n = 0;
    for verbosity in ["-v", "-vvv"] {
        for variant in variants {
            let mut args = base.to_vec();
            args.extend(variant.iter().map(|s| (*s).to_owned()));
            args.push(verbosity.to_owned());
            let run = sim::run(bin, server, &args).await;
            let context = format!(
                "{} {}",
                Path::new(bin).file_name().unwrap().display(),
                args.join(" ")
            );
            assert_eq!(run.code, 0, "{context}: {}", run.show());
            assert_clean(&context, &run, &secrets());
            n += 1;
        }
    }
    n
}

const OUTPUTS: [&[&str]; 3] = [&["-o", "yaml"], &["-o", "json"], &["-o", "table"]];
const DRY_RUNS: [&[&str]; 4] = [
    &["--dry-run=client", "-o", "yaml"],
    &["--dry-run=client", "-o", "json"],
    &["--dry-run=server", "-o", "yaml"],
    &["--dry-run=server", "-o", "json"],
];

/// The needles are right: with `--show-secrets` the key's base64 is printed, and found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_finds_a_printed_key() {
    let server = Server::start(sim::legacy()).await;
    let ca = sim::samples().display().to_string();
    let args = sim::args(&[
        "--vm-namespace",
        "expandvm",
        "--ca-dir",
        &ca,
        "--dry-run=client",
        "-o",
        "yaml",
        "--show-secrets",
    ]);
    let run = sim::run(sim::PREPARE, &server, &args).await;
    assert_eq!(run.code, 0, "{}", run.show());
    let key = sample_key();
    let found = key
        .needles
        .iter()
        .filter(|n| run.stdout.contains(n.as_str()))
        .count();
    assert!(
        found > 10,
        "only {found} fragments found in a printed key:\n{}",
        run.stdout
    );
    let b = bearer(&server);
    let shown = Run {
        code: 0,
        stdout: format!("token: {}\n", server.token()),
        stderr: String::new(),
    };
    assert!(
        !leaks(&shown, &[b]).is_empty(),
        "a printed bearer token goes unnoticed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_prints_no_key_or_token() {
    let server = Server::start(sim::legacy()).await;
    let ca = sim::samples().display().to_string();
    let base = sim::args(&["--vm-namespace", "expandvm", "--ca-dir", &ca]);
    let secrets = || vec![sample_key(), bearer(&server)];
    // Before cacerts exists: dry runs, then the real write.
    let mut runs = sweep(sim::PREPARE, &server, &base, &DRY_RUNS, &secrets).await;
    runs += sweep(sim::PREPARE, &server, &base, &OUTPUTS, &secrets).await;
    assert!(
        server
            .object("v1", "Secret", "istio-system", "cacerts")
            .is_some(),
        "cacerts was written"
    );
    // Now cacerts is read back from the cluster (with its key) and compared.
    runs += sweep(sim::PREPARE, &server, &base, &DRY_RUNS, &secrets).await;
    // The modern era, with a WorkloadGroup.
    let modern = Server::start(sim::modern()).await;
    let base = sim::args(&[
        "--vm-namespace",
        "vm",
        "--ca-dir",
        &ca,
        "--workload-group",
        "vm",
        "--labels",
        "app=vm",
    ]);
    let secrets = || vec![sample_key(), bearer(&modern)];
    runs += sweep(sim::PREPARE, &modern, &base, &DRY_RUNS, &secrets).await;
    runs += sweep(sim::PREPARE, &modern, &base, &OUTPUTS, &secrets).await;
    // --delete (dry runs: the namespace stays for the next sweep) with the CA.
    let delete = sim::args(&["--vm-namespace", "vm", "--delete", "--include-ca", "--yes"]);
    runs += sweep(sim::PREPARE, &modern, &delete, &DRY_RUNS, &secrets).await;
    eprintln!("secrets/prepare: {runs} runs clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_prints_no_token() {
    let server = Server::start(sim::legacy_with_vm()).await;
    let base = sim::args(&[
        "expandvm",
        "203.0.113.7",
        "80",
        "-n",
        "expandvm",
        "-s",
        "expandvm",
    ]);
    let secrets = || vec![bearer(&server)];
    let mut runs = sweep(sim::REGISTER, &server, &base, &DRY_RUNS, &secrets).await;
    runs += sweep(sim::REGISTER, &server, &base, &OUTPUTS, &secrets).await;
    let modern = Server::start(sim::modern_with_vm()).await;
    let base = sim::args(&[
        "--workload-entry",
        "vm-1",
        "--address",
        "10.0.0.5",
        "-n",
        "vm",
        "--workload-group",
        "vm",
        "--service",
        "vm",
    ]);
    let secrets = || vec![bearer(&modern)];
    runs += sweep(sim::REGISTER, &modern, &base, &DRY_RUNS, &secrets).await;
    runs += sweep(sim::REGISTER, &modern, &base, &OUTPUTS, &secrets).await;
    eprintln!("secrets/register: {runs} runs clean");
}

/// Mode bits of a path.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Modes of the archive's entries by name (as written: under the bundle's folder).
fn archive_modes(path: &Path) -> BTreeMap<String, u32> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            (
                name.trim_start_matches("./").to_owned(),
                e.header().mode().unwrap() & 0o7777,
            )
        })
        .collect()
}

/// The bundle's secret files: 0600 on disk and in the archive, the directory 0700.
fn assert_modes(dir: &Path, archive: &Path, secret_files: &[&str]) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    // The archive holds the key or token: nobody but its owner may read it.
    assert_eq!(mode(archive), 0o600, "{}", archive.display());
    let in_archive = archive_modes(archive);
    // Everything sits under one folder named as the directory, itself 0700.
    let top = dir.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        in_archive.get(&format!("{top}/")),
        Some(&0o700),
        "{in_archive:?}"
    );
    assert!(
        in_archive.keys().all(|k| k.starts_with(&format!("{top}/"))),
        "{in_archive:?}"
    );
    for f in secret_files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} on disk");
        assert_eq!(
            in_archive.get(&format!("{top}/{f}")),
            Some(&0o600),
            "{f} in the archive: {in_archive:?}"
        );
    }
}

/// Bundle (each era), then doctor over the bundle: nothing secret is printed; modes hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_prints_no_key_or_token_and_keeps_them_private() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = 0;

    // Legacy: the sample CA plugged in, Citadel's istio.expandvm holds the VM's key.
    let legacy = Server::start(sim::legacy_with_vm()).await;
    let ca = sim::samples().display().to_string();
    let prepared = sim::run(
        sim::PREPARE,
        &legacy,
        &sim::args(&[
            "--vm-namespace",
            "expandvm",
            "--ca-dir",
            &ca,
            "--restart-control-plane",
            "--yes",
        ]),
    )
    .await;
    assert_eq!(prepared.code, 0, "{}", prepared.show());
    // The restarted Citadel re-issues istio.expandvm under the plugged-in root; a first bundle
    // waits for that (--wait), so the key read after it is the one every run below ships.
    let warm = tmp.path().join("warm-up");
    let first = sim::run(
        sim::BUNDLE,
        &legacy,
        &sim::args(&[
            "--vm-namespace",
            "expandvm",
            "--inbound-ports",
            "80",
            "-d",
            &warm.display().to_string(),
        ]),
    )
    .await;
    assert_eq!(first.code, 0, "{}", first.show());
    let vm_key = legacy
        .object("v1", "Secret", "expandvm", "istio.expandvm")
        .and_then(|s| s["data"]["key.pem"].as_str().map(str::to_owned))
        .expect("Citadel's istio.expandvm");
    let vm_key = STANDARD.decode(vm_key).unwrap();
    let secrets = || {
        vec![
            sample_key(),
            private_key("the VM's key.pem", &vm_key),
            bearer(&legacy),
        ]
    };
    for (i, output) in OUTPUTS.iter().enumerate() {
        for verbosity in ["-v", "-vvv"] {
            let dir = tmp.path().join(format!("legacy-{i}{verbosity}"));
            let archive = tmp.path().join(format!("legacy-{i}{verbosity}.tar.gz"));
            let mut args = sim::args(&["--vm-namespace", "expandvm", "--inbound-ports", "80"]);
            args.extend(sim::args(&[
                "-d",
                &dir.display().to_string(),
                "--archive",
                &archive.display().to_string(),
                verbosity,
            ]));
            args.extend(output.iter().map(|s| (*s).to_owned()));
            let run = sim::run(sim::BUNDLE, &legacy, &args).await;
            assert_eq!(run.code, 0, "{}", run.show());
            assert_clean(&format!("bundle {}", args.join(" ")), &run, &secrets());
            assert_eq!(std::fs::read(dir.join("key.pem")).unwrap(), vm_key);
            assert_modes(&dir, &archive, &["key.pem"]);
            runs += 1;
        }
    }

    // Modern: the bootstrap token.
    let modern = Server::start(sim::modern_with_vm()).await;
    for (i, output) in OUTPUTS.iter().enumerate() {
        for verbosity in ["-v", "-vvv"] {
            let dir = tmp.path().join(format!("modern-{i}{verbosity}"));
            let archive = tmp.path().join(format!("modern-{i}{verbosity}.tar.gz"));
            let mut args = sim::args(&[
                "--vm-namespace",
                "vm",
                "--workload-group",
                "vm",
                "--internal-ip",
                "10.0.0.5",
            ]);
            args.extend(sim::args(&[
                "-d",
                &dir.display().to_string(),
                "--archive",
                &archive.display().to_string(),
                verbosity,
            ]));
            args.extend(output.iter().map(|s| (*s).to_owned()));
            let run = sim::run(sim::BUNDLE, &modern, &args).await;
            assert_eq!(run.code, 0, "{}", run.show());
            let fetched = std::fs::read_to_string(dir.join("istio-token")).unwrap();
            assert!(fetched.split('.').count() == 3, "a JWT: {fetched}");
            let secrets = vec![
                token("the bundle's istio-token", fetched.trim()),
                bearer(&modern),
            ];
            assert_clean(&format!("bundle {}", args.join(" ")), &run, &secrets);
            assert_modes(&dir, &archive, &["istio-token"]);
            runs += 1;
        }
    }
    eprintln!("secrets/bundle: {runs} runs clean, modes 0700/0600 on disk and in the archive");
}

/// Doctor reads cacerts (with its key) from the cluster, and a bundle's key.pem or istio-token:
/// none of it is printed, at any verbosity or format, for the directory or the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_prints_no_key_or_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = sim::samples().display().to_string();
    let legacy = Server::start(sim::legacy_with_vm()).await;
    let modern = Server::start(sim::modern_with_vm()).await;
    let mut runs = 0;
    for (era, server, prepare, bundle) in [
        (
            "legacy",
            &legacy,
            // Citadel loads cacerts only when it (re)starts: the runbook's flow restarts it.
            sim::args(&[
                "--vm-namespace",
                "expandvm",
                "--ca-dir",
                &ca,
                "--restart-control-plane",
                "--yes",
            ]),
            sim::args(&["--vm-namespace", "expandvm", "--inbound-ports", "80"]),
        ),
        (
            "modern",
            &modern,
            sim::args(&["--vm-namespace", "vm", "-s", "vm-sa", "--ca-dir", &ca]),
            sim::args(&[
                "--vm-namespace",
                "vm",
                "--workload-group",
                "vm",
                "--internal-ip",
                "10.0.0.5",
            ]),
        ),
    ] {
        let prepared = sim::run(sim::PREPARE, server, &prepare).await;
        assert_eq!(prepared.code, 0, "{}", prepared.show());
        let dir = tmp.path().join(era);
        let archive = tmp.path().join(format!("{era}.tar.gz"));
        let mut args = bundle.clone();
        args.extend(sim::args(&[
            "-d",
            &dir.display().to_string(),
            "--archive",
            &archive.display().to_string(),
        ]));
        let bundled = sim::run(sim::BUNDLE, server, &args).await;
        assert_eq!(bundled.code, 0, "{}", bundled.show());
        let mut secrets = vec![sample_key(), bearer(server)];
        if let Ok(key) = std::fs::read(dir.join("key.pem")) {
            secrets.push(private_key("the bundle's key.pem", &key));
        }
        if let Ok(t) = std::fs::read_to_string(dir.join("istio-token")) {
            secrets.push(token("the bundle's istio-token", t.trim()));
        }
        assert!(
            secrets.len() == 3,
            "{era}: the bundle holds a key or a token"
        );
        for source in [&dir, &archive] {
            for output in ["table", "json", "yaml", "sarif"] {
                for verbosity in ["-v", "-vvv"] {
                    let args = sim::args(&[
                        "--bundle",
                        &source.display().to_string(),
                        "-o",
                        output,
                        verbosity,
                    ]);
                    let run = sim::run(sim::DOCTOR, server, &args).await;
                    let context = format!("doctor {}", args.join(" "));
                    assert!(
                        matches!(run.code, 0 | 1) && !run.stderr.contains("error: "),
                        "{context}: {}",
                        run.show()
                    );
                    assert!(!run.stdout.is_empty(), "{context}: no report");
                    assert_clean(&context, &run, &secrets);
                    runs += 1;
                }
            }
        }
    }
    eprintln!("secrets/doctor: {runs} runs clean");
}

/// Beyond `-vvv`: `RUST_LOG=trace` turns on every crate's logs (kube's requests, hyper,
/// rustls); still no key or token fragment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_prints_no_key_or_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = sim::samples().display().to_string();
    let server = Server::start(sim::legacy_with_vm()).await;
    let dir = tmp.path().join("b");
    let steps: [(&'static str, Vec<String>); 5] = [
        (
            sim::PREPARE,
            sim::args(&[
                "--vm-namespace",
                "expandvm",
                "--ca-dir",
                &ca,
                "--restart-control-plane",
                "--yes",
                "-o",
                "yaml",
            ]),
        ),
        (
            sim::PREPARE,
            sim::args(&[
                "--vm-namespace",
                "expandvm",
                "--ca-dir",
                &ca,
                "--dry-run=server",
                "-o",
                "json",
            ]),
        ),
        (
            sim::BUNDLE,
            sim::args(&[
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &dir.display().to_string(),
            ]),
        ),
        (
            sim::REGISTER,
            sim::args(&[
                "expandvm",
                "203.0.113.7",
                "80",
                "-n",
                "expandvm",
                "-s",
                "expandvm",
            ]),
        ),
        (
            sim::DOCTOR,
            sim::args(&[
                "--fix",
                "--yes",
                "--bundle",
                &dir.display().to_string(),
                "-o",
                "json",
            ]),
        ),
    ];
    let mut runs = 0;
    for (bin, args) in &steps {
        let run = sim::run_with(bin, &server, args, Some("trace")).await;
        let context = format!(
            "RUST_LOG=trace {} {}",
            Path::new(bin).file_name().unwrap().display(),
            args.join(" ")
        );
        assert!(
            matches!(run.code, 0 | 1) && !run.stderr.contains("error: "),
            "{context}: {}",
            run.show()
        );
        let mut secrets = vec![sample_key(), bearer(&server)];
        if let Ok(key) = std::fs::read(dir.join("key.pem")) {
            secrets.push(private_key("the bundle's key.pem", &key));
        }
        assert_clean(&context, &run, &secrets);
        assert!(
            run.stderr.lines().count() > 20,
            "{context}: trace logging is on: {}",
            run.show()
        );
        runs += 1;
    }
    eprintln!("secrets/trace: {runs} runs clean at RUST_LOG=trace");
}
