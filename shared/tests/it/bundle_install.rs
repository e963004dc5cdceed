//! The bundle's `install.sh`: shellcheck-clean, idempotent under `--prefix`, `--dry-run`,
//! `--uninstall`, `--check`, and refusing a tampered bundle.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meshvm::bundle::{Bundle, BundleFile, output};
use meshvm::istio::Era;

/// The shell the tests run the script with: dash when present (strictly POSIX), else sh.
fn shell() -> &'static str {
    if Path::new("/usr/bin/dash").exists() {
        "/usr/bin/dash"
    } else {
        "sh"
    }
}

fn legacy_files(gateway: &str) -> Vec<BundleFile> {
    vec![
        BundleFile::new("root-cert.pem", "ROOT\n", 0o644, "root"),
        BundleFile::new("cert-chain.pem", "CHAIN\n", 0o644, "chain"),
        BundleFile::new("key.pem", "KEY\n", 0o600, "key"),
        BundleFile::new("gwip.txt", gateway, 0o644, "gateway"),
        BundleFile::new(
            "hosts",
            format!(
                "{gateway} istio-citadel istio-citadel.istio-system\n{gateway} istio-pilot istio-pilot.istio-system\n{gateway} istio-telemetry istio-telemetry.istio-system\n{gateway} istio-policy istio-policy.istio-system\n"
            ),
            0o644,
            "hosts",
        ),
        BundleFile::new("cluster.env", "ISTIO_CP_AUTH=MUTUAL_TLS\n", 0o644, "env"),
    ]
}

fn modern_files(gateway: &str) -> Vec<BundleFile> {
    vec![
        BundleFile::new("root-cert.pem", "ROOT\n", 0o644, "root"),
        BundleFile::new("istio-token", "TOKEN", 0o600, "token"),
        BundleFile::new("mesh.yaml", "defaultConfig: {}\n", 0o644, "mesh"),
        BundleFile::new(
            "hosts",
            format!("{gateway} istiod.istio-system.svc\n"),
            0o644,
            "hosts",
        ),
        BundleFile::new("cluster.env", "ISTIO_NAMESPACE='vm'\n", 0o644, "env"),
    ]
}

/// A bundle directory as `bundle` writes it (install.sh and SHA256SUMS included).
fn bundle_dir(root: &Path, era: Era, mut files: Vec<BundleFile>) -> PathBuf {
    files.push(BundleFile::new(
        "install.sh",
        output::install_script(era, "istio-system", None),
        0o755,
        "installer",
    ));
    let sums = output::sha256sums(&files);
    files.push(BundleFile::new(output::SHA256SUMS, sums, 0o644, "sums"));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let dir = root.join("bundle");
    output::write(
        &Bundle {
            era,
            files,
            warnings: Vec::new(),
            service_cidr: None,
        },
        &dir,
        None,
        false,
    )
    .unwrap();
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn install(dir: &Path, args: &[&str]) -> Run {
    install_with(dir, args, None)
}

/// Run install.sh with `tools` (fake `id`, `chown`) first on PATH.
fn install_with(dir: &Path, args: &[&str], tools: Option<&Path>) -> Run {
    let mut cmd = Command::new(shell());
    cmd.arg(dir.join("install.sh")).args(args);
    if let Some(tools) = tools {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", tools.display()));
    }
    let out: Output = cmd.output().expect("run install.sh");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file under `root` with its mode and content.
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            if meta.is_dir() {
                out.insert(
                    format!("{rel}/"),
                    (meta.permissions().mode() & 0o7777, Vec::new()),
                );
                walk(base, &path, out);
            } else {
                out.insert(
                    rel,
                    (
                        meta.permissions().mode() & 0o7777,
                        std::fs::read(&path).unwrap(),
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

#[test]
fn install_script_passes_shellcheck() {
    let Some(shellcheck) = kube_sim::testenv::require_shellcheck() else {
        return; // only with MESHVM_ALLOW_MISSING_TOOLS=1, which printed why
    };
    let version = Command::new(&shellcheck).arg("--version").output().unwrap();
    assert!(version.status.success());
    let tmp = tempfile::tempdir().unwrap();
    for era in [Era::Legacy, Era::Modern] {
        let path = tmp.path().join(format!("install-{era}.sh"));
        std::fs::write(
            &path,
            output::install_script(era, "istio-system", Some("canary")),
        )
        .unwrap();
        let out = Command::new(&shellcheck)
            .args(["--shell=sh", "--severity=style"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{era}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn legacy_install_is_idempotent_and_uninstall_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // One line left by hand as the runbook's `tee -a` does: adopted into the block, not doubled.
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n203.0.113.10 istio-pilot istio-pilot.istio-system\n",
    )
    .unwrap();
    let prefix = root.display().to_string();

    let first = install(&dir, &["--prefix", &prefix, "--no-chown"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first
            .stdout
            .contains("ownership left unchanged (--no-chown)"),
        "{}",
        first.stdout
    );
    let after_first = tree(&root);
    for (file, mode, content) in [
        ("etc/certs/root-cert.pem", 0o644, "ROOT\n"),
        ("etc/certs/cert-chain.pem", 0o644, "CHAIN\n"),
        ("etc/certs/key.pem", 0o600, "KEY\n"),
        (
            "var/lib/istio/envoy/cluster.env",
            0o644,
            "ISTIO_CP_AUTH=MUTUAL_TLS\n",
        ),
    ] {
        let (m, data) = after_first
            .get(file)
            .unwrap_or_else(|| panic!("{file} missing: {after_first:?}"));
        assert_eq!((*m, data.as_slice()), (mode, content.as_bytes()), "{file}");
    }
    let hosts = String::from_utf8(after_first["etc/hosts"].1.clone()).unwrap();
    assert!(
        hosts.starts_with("127.0.0.1 localhost\n# BEGIN meshvm bundle"),
        "{hosts}"
    );
    assert!(
        hosts.contains("\n203.0.113.10 istio-pilot istio-pilot.istio-system\n"),
        "{hosts}"
    );
    assert!(hosts.ends_with("# END meshvm bundle\n"), "{hosts}");
    assert_eq!(
        active_lines(&hosts, "istio-pilot"),
        ["203.0.113.10 istio-pilot istio-pilot.istio-system"],
        "{hosts}"
    );

    // Twice: the same tree, no second hosts block.
    let second = install(&dir, &["--prefix", &prefix, "--no-chown"]);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert_eq!(tree(&root), after_first, "a second run changes nothing");
    assert!(second.stdout.contains("unchanged"), "{}", second.stdout);

    // A changed gateway replaces the block instead of adding one.
    let dir2 = bundle_dir(
        &tmp.path().join("v2"),
        Era::Legacy,
        legacy_files("198.51.100.7"),
    );
    assert_eq!(install(&dir2, &["--prefix", &prefix, "--no-chown"]).code, 0);
    let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
    assert_eq!(hosts.matches("# BEGIN meshvm bundle").count(), 1, "{hosts}");
    assert!(
        active_lines(&hosts, "203.0.113.10").is_empty()
            && hosts.contains("198.51.100.7 istio-citadel"),
        "{hosts}"
    );

    let gone = install(&dir2, &["--prefix", &prefix, "--uninstall"]);
    assert_eq!(gone.code, 0, "{}{}", gone.stdout, gone.stderr);
    // The line that was there before install is back; only the block went.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n203.0.113.10 istio-pilot istio-pilot.istio-system\n"
    );
    assert!(
        gone.stdout.contains("restored: 203.0.113.10 istio-pilot"),
        "{}",
        gone.stdout
    );
    // Only etc/ (there before install) is left: the files and every folder install made went.
    assert_eq!(
        tree(&root).into_keys().collect::<Vec<_>>(),
        ["etc/", "etc/hosts"],
        "uninstall removes what install placed and the folders it created"
    );
}

/// Lines of `hosts` that are not comments and mention `word`.
fn active_lines<'a>(hosts: &'a str, word: &str) -> Vec<&'a str> {
    hosts
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('#')
                && l.split_whitespace()
                    .any(|w| w == word || l.starts_with(word))
        })
        .collect()
}

/// An earlier manual run's lines for the bundle's names (another gateway address) are replaced,
/// not left beside the block; --uninstall restores the file as it was, other lines untouched.
#[test]
fn earlier_hosts_lines_for_the_same_names_are_replaced_and_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let before = "127.0.0.1 localhost\n# a comment naming istio-pilot stays\n198.51.100.1 istio-citadel istio-citadel.istio-system\n10.0.0.9 db.internal\n198.51.100.1 istio-pilot istio-pilot.istio-system\n";
    std::fs::write(root.join("etc/hosts"), before).unwrap();
    let prefix = root.display().to_string();
    let run = install(&dir, &["--prefix", &prefix, "--no-chown"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("replaced (restored by --uninstall): 198.51.100.1 istio-citadel"),
        "{}",
        run.stdout
    );
    let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
    for name in ["istio-citadel", "istio-pilot"] {
        assert_eq!(
            active_lines(&hosts, name),
            [format!("203.0.113.10 {name} {name}.istio-system")],
            "one active line per name, the bundle's: {hosts}"
        );
    }
    assert!(
        hosts.starts_with("127.0.0.1 localhost\n# a comment naming istio-pilot stays\n10.0.0.9 db.internal\n# BEGIN meshvm bundle"),
        "{hosts}"
    );
    // Installing again keeps the saved lines once.
    assert_eq!(install(&dir, &["--prefix", &prefix, "--no-chown"]).code, 0);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
        hosts
    );
    let gone = install(&dir, &["--prefix", &prefix, "--uninstall"]);
    assert_eq!(gone.code, 0, "{}{}", gone.stdout, gone.stderr);
    let after = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&after), sorted(before), "{after}");
    assert!(!after.contains("meshvm"), "{after}");
}

/// Folders that were there before install stay (even empty); the ones it made go.
#[test]
fn uninstall_removes_the_folders_install_created_and_only_those() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("203.0.113.20"));
    let root = tmp.path().join("root");
    // The VM already had /etc/certs (empty) and /var/lib with another program's data.
    std::fs::create_dir_all(root.join("etc/certs")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/other")).unwrap();
    std::fs::write(root.join("var/lib/other/data"), "x").unwrap();
    let before = tree(&root);
    let prefix = root.display().to_string();
    let run = install(&dir, &["--prefix", &prefix, "--no-chown"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(tree(&root).contains_key("etc/istio/proxy/"));
    // Something else put a file into a folder install made: that folder stays.
    std::fs::write(root.join("etc/istio/proxy/envoy.log"), "log").unwrap();
    let gone = install(&dir, &["--prefix", &prefix, "--uninstall"]);
    assert_eq!(gone.code, 0, "{}{}", gone.stdout, gone.stderr);
    assert!(
        gone.stdout.contains("kept folder")
            && gone
                .stdout
                .contains("etc/istio/proxy: it holds files install did not place"),
        "{}",
        gone.stdout
    );
    let mut expected = before;
    expected.insert("etc/hosts".into(), (0o644, Vec::new()));
    expected.insert("etc/istio/".into(), (0o755, Vec::new()));
    expected.insert("etc/istio/proxy/".into(), (0o755, Vec::new()));
    expected.insert("etc/istio/proxy/envoy.log".into(), (0o644, b"log".to_vec()));
    let after: BTreeMap<String, Vec<u8>> =
        tree(&root).into_iter().map(|(k, (_, d))| (k, d)).collect();
    let expected: BTreeMap<String, Vec<u8>> =
        expected.into_iter().map(|(k, (_, d))| (k, d)).collect();
    assert_eq!(after, expected);
}

/// A fake `id` (istio-proxy exists or not) and `chown` (records its arguments) on PATH.
fn fake_tools(root: &Path, user_exists: bool) -> PathBuf {
    let tools = root.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let log = root.join("chown.log");
    for (name, body) in [
        (
            "id",
            format!(
                "#!/bin/sh\nif [ \"$1\" = istio-proxy ]; then exit {}; fi\nexec /usr/bin/id \"$@\"\n",
                i32::from(!user_exists)
            ),
        ),
        (
            "chown",
            format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\n", log.display()),
        ),
    ] {
        let path = tools.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    tools
}

#[test]
fn a_missing_proxy_user_fails_unless_no_chown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    let missing = fake_tools(&tmp.path().join("missing"), false);
    let run = install_with(&dir, &["--prefix", &prefix], Some(&missing));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("user istio-proxy does not exist") && run.stderr.contains("--no-chown"),
        "{}",
        run.stderr
    );
    assert!(
        tree(&root).is_empty(),
        "nothing installed: {:?}",
        tree(&root)
    );
    let run = install_with(&dir, &["--prefix", &prefix, "--no-chown"], Some(&missing));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!tmp.path().join("missing/chown.log").exists());
    // With the user, the sidecar's folders are given to it.
    let present = fake_tools(&tmp.path().join("present"), true);
    let run = install_with(&dir, &["--prefix", &prefix], Some(&present));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let log = std::fs::read_to_string(tmp.path().join("present/chown.log")).unwrap();
    assert_eq!(
        log,
        format!("-R istio-proxy {prefix}/etc/certs\n-R istio-proxy {prefix}/var/lib/istio/envoy\n")
    );
}

/// Run from the bundle's own folder (`cd expandvm && ./install.sh`) and by its path from
/// elsewhere: it reads the files beside itself either way.
#[test]
fn install_runs_from_its_folder_and_from_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("203.0.113.20"));
    for (cwd, script) in [
        (dir.clone(), PathBuf::from("./install.sh")),
        (tmp.path().to_owned(), PathBuf::from("./bundle/install.sh")),
    ] {
        let root = cwd.join("..").join(format!(
            "root-{}",
            cwd.file_name().unwrap().to_string_lossy()
        ));
        let out = Command::new(shell())
            .current_dir(&cwd)
            .arg(&script)
            .args(["--prefix", &root.display().to_string(), "--no-chown"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(root.join("var/run/secrets/tokens/istio-token")).unwrap(),
            b"TOKEN",
            "{}",
            script.display()
        );
    }
}

#[test]
fn dry_run_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("203.0.113.20"));
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let run = install(
        &dir,
        &[
            "--dry-run",
            "--no-chown",
            "--prefix",
            &root.display().to_string(),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("would run: cp"), "{}", run.stdout);
    assert!(
        run.stdout.contains("/var/run/secrets/tokens/istio-token"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("would update"), "{}", run.stdout);
    assert!(tree(&root).is_empty(), "{:?}", tree(&root));
}

#[test]
fn modern_install_places_files_where_the_sidecar_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("127.0.0.1"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    assert_eq!(install(&dir, &["--prefix", &prefix, "--no-chown"]).code, 0);
    let t = tree(&root);
    // The token is kept where a reboot does not empty it, copied where pilot-agent reads it, and
    // copied there again before every start by a drop-in of istio.service.
    assert_eq!(
        t["var/lib/istio/tokens/istio-token"],
        (0o600, b"TOKEN".to_vec())
    );
    assert_eq!(
        t["var/run/secrets/tokens/istio-token"],
        (0o600, b"TOKEN".to_vec())
    );
    let dropin = String::from_utf8(
        t["etc/systemd/system/istio.service.d/meshvm-token.conf"]
            .1
            .clone(),
    )
    .unwrap();
    assert!(
        dropin.contains("[Service]\nExecStartPre=/bin/mkdir -p /var/run/secrets/tokens\nExecStartPre=/bin/cp -p /var/lib/istio/tokens/istio-token /var/run/secrets/tokens/istio-token\n"),
        "{dropin}"
    );
    assert_eq!(t["etc/istio/config/mesh"].1, b"defaultConfig: {}\n");
    assert_eq!(t["etc/certs/root-cert.pem"].1, b"ROOT\n");
    assert_eq!(
        t["var/lib/istio/envoy/cluster.env"].1,
        b"ISTIO_NAMESPACE='vm'\n"
    );
    assert!(
        t.contains_key("etc/istio/proxy/"),
        "the sidecar's working directory exists"
    );
    assert_eq!(install(&dir, &["--prefix", &prefix, "--no-chown"]).code, 0);
    assert_eq!(tree(&root), t);
}

#[test]
fn check_reports_resolution_and_tcp_per_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("127.0.0.1"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    // Before install the name resolves nowhere (under --prefix only the prefix's hosts count).
    let before = install(&dir, &["--check", "--prefix", &prefix]);
    assert_eq!(before.code, 1, "{}", before.stdout);
    assert!(
        before
            .stdout
            .contains("FAIL istiod.istio-system.svc:15012: the name does not resolve"),
        "{}",
        before.stdout
    );

    assert_eq!(install(&dir, &["--prefix", &prefix, "--no-chown"]).code, 0);
    let listener = std::net::TcpListener::bind("127.0.0.1:15012");
    let after = install(&dir, &["--check", "--prefix", &prefix]);
    assert!(
        after
            .stdout
            .contains("ok   istiod.istio-system.svc:15012: resolves to 127.0.0.1"),
        "{}",
        after.stdout
    );
    let tools = ["nc", "bash"].iter().any(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match (&listener, tools) {
        (_, false) => assert!(after.stdout.contains("skip"), "{}", after.stdout),
        (Ok(_), true) => {
            assert_eq!(after.code, 0, "{}{}", after.stdout, after.stderr);
            assert!(
                after
                    .stdout
                    .contains("127.0.0.1:15012 accepts TCP connections"),
                "{}",
                after.stdout
            );
        }
        (Err(_), true) => {
            eprintln!("port 15012 is busy here; the TCP success case was not exercised");
        }
    }
    drop(listener);
    // Legacy: nothing listens on the mesh-expansion ports of 127.0.0.2.
    let legacy = bundle_dir(
        &tmp.path().join("l"),
        Era::Legacy,
        legacy_files("127.0.0.2"),
    );
    let lroot = tmp.path().join("lroot");
    let lprefix = lroot.display().to_string();
    assert_eq!(
        install(&legacy, &["--prefix", &lprefix, "--no-chown"]).code,
        0
    );
    let check = install(&legacy, &["--check", "--prefix", &lprefix]);
    for endpoint in [
        "istio-pilot.istio-system:15011",
        "istio-citadel.istio-system:8060",
        "istio-telemetry.istio-system:15004",
        "istio-policy.istio-system:15004",
    ] {
        assert!(
            check
                .stdout
                .contains(&format!("ok   {endpoint}: resolves to 127.0.0.2")),
            "{endpoint}: {}",
            check.stdout
        );
    }
    if tools {
        assert_eq!(check.code, 1, "{}", check.stdout);
        assert!(
            check.stdout.contains("does not accept a TCP connection"),
            "{}",
            check.stdout
        );
    }
}

#[test]
fn tampered_bundles_and_bad_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let prefix = tmp.path().join("root").display().to_string();
    let bad = install(&dir, &["--bogus"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("unknown argument: --bogus"),
        "{}",
        bad.stderr
    );
    let no_dir = install(&dir, &["--prefix"]);
    assert_eq!(no_dir.code, 2, "{}", no_dir.stderr);
    let key = dir.join("key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, "EVIL\n").unwrap();
    assert!(
        Command::new("sha256sum").arg("--version").output().is_ok(),
        "sha256sum (coreutils) is needed to test the checksum check"
    );
    let run = install(&dir, &["--prefix", &prefix, "--no-chown"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "install.sh: key.pem: not as in SHA256SUMS (changed, damaged or missing since bundling)"
        ),
        "the mismatch names the file: {}",
        run.stderr
    );
    assert!(!Path::new(&prefix).join("etc/certs/key.pem").exists());
    // Two files: both named; a missing one too.
    std::fs::remove_file(dir.join("gwip.txt")).unwrap();
    std::fs::write(dir.join("hosts"), "1.2.3.4 evil\n").unwrap();
    let run = install(&dir, &["--prefix", &prefix, "--no-chown"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("install.sh: gwip.txt, hosts, key.pem: not as in SHA256SUMS"),
        "{}",
        run.stderr
    );
}

/// Stand-ins for the VM's tools, first on PATH: each records its arguments in `calls.log`.
/// `systemctl` keeps unit state in `state/` (is-enabled/is-active answer from it); `curl`
/// answers like a ready sidecar once `istio` is active (unless `ready` is false); `rpm -q -p`
/// names the package and `rpm -q --quiet` finds it after `rpm -i`.
struct Vm {
    tools: PathBuf,
    log: PathBuf,
}

impl Vm {
    fn new(root: &Path, ready: bool) -> Self {
        let tools = root.join("tools");
        let state = root.join("state");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let log = root.join("calls.log");
        let record = format!(
            "printf '%s\\n' \"$(basename \"$0\") $*\" >>'{}'\n",
            log.display()
        );
        let st = state.display();
        let scripts = [
            (
                "systemctl",
                format!(
                    "case $1 in\n  is-enabled) [ -f '{st}/enabled-'\"$3\" ] ;;\n  is-active) [ -f '{st}/active-'\"$3\" ] ;;\n  enable) touch '{st}/enabled-'\"$2\" ;;\n  disable) rm -f '{st}/enabled-'\"$2\" ;;\n  start|restart) touch '{st}/active-'\"$2\" ;;\n  stop) rm -f '{st}/active-'\"$2\" ;;\nesac\n"
                ),
            ),
            (
                "curl",
                if ready {
                    format!(
                        "[ -f '{st}/active-istio' ] || exit 7\ncase \"$*\" in\n  *15000/server_info*) printf '{{\\n \"version\": \"x\",\\n \"state\": \"LIVE\"\\n}}\\n' ;;\nesac\n"
                    )
                } else {
                    "exit 7\n".to_owned()
                },
            ),
            ("dpkg", String::new()),
            (
                "rpm",
                format!(
                    "case \"$1 $2\" in\n  '-q -p') echo istio-sidecar-1.22.0-1.x86_64 ;;\n  '-q --quiet') [ -f '{st}/rpm-installed' ] ;;\n  '-i '*) touch '{st}/rpm-installed' ;;\nesac\n"
                ),
            ),
            ("journalctl", String::new()),
            ("chown", String::new()),
            (
                "id",
                "if [ \"$1\" = istio-proxy ]; then exit 0; fi\nexec /usr/bin/id \"$@\"\n"
                    .to_owned(),
            ),
        ];
        for (name, body) in scripts {
            let path = tools.join(name);
            let record = if name == "id" { "" } else { record.as_str() };
            std::fs::write(&path, format!("#!/bin/sh\n{record}{body}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { tools, log }
    }

    /// The recorded calls since the last look, one per line; the log starts afresh.
    fn calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(str::to_owned).collect()
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Run {
        install_with(dir, args, Some(&self.tools))
    }
}

fn lines(calls: &[&str]) -> Vec<String> {
    calls.iter().map(|c| (*c).to_owned()).collect()
}

#[test]
fn legacy_package_and_start_run_the_runbooks_commands_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    let deb = tmp.path().join("istio-sidecar.deb");
    std::fs::write(&deb, "deb").unwrap();
    let deb = deb.display().to_string();
    let vm = Vm::new(&tmp.path().join("vm"), true);

    let first = vm.run(&dir, &["--prefix", &prefix, "--package", &deb, "--start"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            &format!("dpkg -i {deb}"),
            &format!("chown -R istio-proxy {prefix}/etc/certs"),
            &format!("chown -R istio-proxy {prefix}/var/lib/istio/envoy"),
            "systemctl is-enabled --quiet istio-auth-node-agent",
            "systemctl enable istio-auth-node-agent",
            "systemctl is-active --quiet istio-auth-node-agent",
            "systemctl start istio-auth-node-agent",
            "systemctl is-enabled --quiet istio",
            "systemctl enable istio",
            "systemctl is-active --quiet istio",
            "systemctl start istio",
            "curl -fs --max-time 2 http://localhost:15000/server_info",
        ])
    );
    assert!(first.stdout.contains("ready: "), "{}", first.stdout);

    // Again, with everything running: only questions, nothing enabled or started twice.
    let again = vm.run(&dir, &["--prefix", &prefix, "--start"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            &format!("chown -R istio-proxy {prefix}/etc/certs"),
            &format!("chown -R istio-proxy {prefix}/var/lib/istio/envoy"),
            "systemctl is-enabled --quiet istio-auth-node-agent",
            "systemctl is-active --quiet istio-auth-node-agent",
            "systemctl is-enabled --quiet istio",
            "systemctl is-active --quiet istio",
            "curl -fs --max-time 2 http://localhost:15000/server_info",
        ])
    );

    // --uninstall stops and disables what --start started, last first, and leaves no trace.
    let gone = vm.run(&dir, &["--prefix", &prefix, "--uninstall"]);
    assert_eq!(gone.code, 0, "{}{}", gone.stdout, gone.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            "systemctl stop istio",
            "systemctl disable istio",
            "systemctl stop istio-auth-node-agent",
            "systemctl disable istio-auth-node-agent",
        ])
    );
    assert_eq!(
        tree(&root).into_keys().collect::<Vec<_>>(),
        ["etc/", "etc/hosts"]
    );
    // Nothing recorded any more: a second --uninstall stops nothing.
    let twice = vm.run(&dir, &["--prefix", &prefix, "--uninstall"]);
    assert_eq!(twice.code, 0, "{}{}", twice.stdout, twice.stderr);
    assert!(vm.calls().is_empty());
}

#[test]
fn modern_rpm_start_waits_for_healthz_and_uninstall_forgets_the_drop_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("203.0.113.20"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    let rpm = tmp.path().join("istio-sidecar.rpm");
    std::fs::write(&rpm, "rpm").unwrap();
    let rpm = rpm.display().to_string();
    let vm = Vm::new(&tmp.path().join("vm"), true);
    let args = [
        "--prefix",
        &prefix,
        "--no-chown",
        "--package",
        &rpm,
        "--start",
    ];

    let first = vm.run(&dir, &args);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            &format!("rpm -q -p {rpm}"),
            "rpm -q --quiet istio-sidecar-1.22.0-1.x86_64",
            &format!("rpm -i {rpm}"),
            "systemctl daemon-reload",
            "systemctl is-enabled --quiet istio",
            "systemctl enable istio",
            "systemctl is-active --quiet istio",
            "systemctl start istio",
            "curl -fs -o /dev/null --max-time 2 http://localhost:15021/healthz/ready",
        ])
    );
    // rpm -i refuses an installed package: the second run asks and leaves it.
    let again = vm.run(&dir, &args);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            &format!("rpm -q -p {rpm}"),
            "rpm -q --quiet istio-sidecar-1.22.0-1.x86_64",
            "systemctl daemon-reload",
            "systemctl is-enabled --quiet istio",
            "systemctl is-active --quiet istio",
            "curl -fs -o /dev/null --max-time 2 http://localhost:15021/healthz/ready",
        ])
    );
    assert!(
        again
            .stdout
            .contains("unchanged package istio-sidecar-1.22.0-1.x86_64"),
        "{}",
        again.stdout
    );
    let gone = vm.run(&dir, &["--prefix", &prefix, "--uninstall"]);
    assert_eq!(gone.code, 0, "{}{}", gone.stdout, gone.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            "systemctl stop istio",
            "systemctl disable istio",
            "systemctl daemon-reload",
        ])
    );
    assert!(
        tree(&root)
            .into_keys()
            .all(|k| k == "etc/" || k == "etc/hosts"),
        "{:?}",
        tree(&root).into_keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_sidecar_that_never_gets_ready_times_out_with_the_journalctl_command() {
    for (era, files, ready, units) in [
        (
            Era::Modern,
            modern_files("203.0.113.20"),
            "http://localhost:15021/healthz/ready",
            "journalctl -u istio --no-pager -n 100",
        ),
        (
            Era::Legacy,
            legacy_files("203.0.113.10"),
            "Envoy's admin port 15000 reporting LIVE",
            "journalctl -u istio-auth-node-agent -u istio --no-pager -n 100",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = bundle_dir(tmp.path(), era, files);
        let prefix = tmp.path().join("root").display().to_string();
        let vm = Vm::new(&tmp.path().join("vm"), false);
        let began = std::time::Instant::now();
        let run = vm.run(
            &dir,
            &[
                "--prefix",
                &prefix,
                "--no-chown",
                "--start",
                "--timeout",
                "2s",
            ],
        );
        let took = began.elapsed();
        assert_eq!(run.code, 1, "{era}: {}{}", run.stdout, run.stderr);
        assert!(
            took < std::time::Duration::from_secs(8),
            "{era}: bounded by --timeout: {took:?}"
        );
        assert!(
            run.stderr.contains("the sidecar is not ready after 2s")
                && run.stderr.contains(ready)
                && run.stderr.contains(&format!("`{units}`")),
            "{era}: {}",
            run.stderr
        );
        let calls = vm.calls();
        assert!(
            calls.iter().filter(|c| c.starts_with("curl ")).count() >= 2,
            "{era}: it polled: {calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("journalctl")),
            "{era}: the command is printed, not run: {calls:?}"
        );
    }
}

#[test]
fn package_flag_takes_only_deb_and_rpm_and_dry_run_runs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    let vm = Vm::new(&tmp.path().join("vm"), true);
    let zip = tmp.path().join("foo.zip");
    std::fs::write(&zip, "zip").unwrap();
    let zip = zip.display().to_string();
    let refused = vm.run(&dir, &["--prefix", &prefix, "--package", &zip, "--start"]);
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("--package {zip}: not a .deb or .rpm file")),
        "{}",
        refused.stderr
    );
    let missing = vm.run(&dir, &["--prefix", &prefix, "--package", "nowhere.deb"]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("--package nowhere.deb: no such file"),
        "{}",
        missing.stderr
    );
    let bad_timeout = vm.run(&dir, &["--prefix", &prefix, "--timeout", "soon"]);
    assert_eq!(bad_timeout.code, 2, "{}", bad_timeout.stderr);
    let mixed = vm.run(&dir, &["--prefix", &prefix, "--renew", "--start"]);
    assert_eq!(mixed.code, 2, "{}", mixed.stderr);
    assert!(vm.calls().is_empty());
    assert!(tree(&root).is_empty(), "{:?}", tree(&root));

    let deb = tmp.path().join("istio-sidecar.deb");
    std::fs::write(&deb, "deb").unwrap();
    let deb = deb.display().to_string();
    let dry = vm.run(
        &dir,
        &[
            "--prefix",
            &prefix,
            "--package",
            &deb,
            "--start",
            "--dry-run",
        ],
    );
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    for shown in [
        format!("would run: dpkg -i {deb}"),
        format!("would run: chown -R istio-proxy {prefix}/etc/certs"),
        "would run: systemctl enable istio-auth-node-agent".to_owned(),
        "would run: systemctl start istio".to_owned(),
        "would wait up to 120s for".to_owned(),
    ] {
        assert!(dry.stdout.contains(&shown), "{shown}: {}", dry.stdout);
    }
    assert!(vm.calls().is_empty(), "--dry-run runs nothing");
    assert!(tree(&root).is_empty(), "{:?}", tree(&root));
}

/// A bundle directory like `dir`'s with other credentials (as `bundle --renew` leaves it).
fn renewed(root: &Path, era: Era, gateway: &str) -> PathBuf {
    let files = match era {
        Era::Legacy => legacy_files(gateway),
        Era::Modern => modern_files(gateway),
    }
    .into_iter()
    .map(|f| match f.name.as_str() {
        "key.pem" => BundleFile::new("key.pem", "KEY2\n", 0o600, "key"),
        "cert-chain.pem" => BundleFile::new("cert-chain.pem", "CHAIN2\n", 0o644, "chain"),
        "istio-token" => BundleFile::new("istio-token", "TOKEN2", 0o600, "token"),
        _ => f,
    })
    .collect();
    bundle_dir(root, era, files)
}

#[test]
fn modern_renew_swaps_only_the_token_and_restarts_the_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Modern, modern_files("203.0.113.20"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    let vm = Vm::new(&tmp.path().join("vm"), true);
    let not_yet = vm.run(&dir, &["--prefix", &prefix, "--renew"]);
    assert_eq!(not_yet.code, 1, "{}", not_yet.stdout);
    assert!(
        not_yet
            .stderr
            .contains("run install.sh without --renew first"),
        "{}",
        not_yet.stderr
    );
    assert_eq!(vm.run(&dir, &["--prefix", &prefix]).code, 0);
    let before = tree(&root);
    vm.calls();

    let new = renewed(&tmp.path().join("new"), Era::Modern, "203.0.113.20");
    let run = vm.run(&new, &["--prefix", &prefix, "--renew", "--timeout", "5s"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let token = format!("{prefix}/var/lib/istio/tokens/istio-token.meshvm-new");
    let run_token = format!("{prefix}/var/run/secrets/tokens/istio-token.meshvm-new");
    assert_eq!(
        vm.calls(),
        lines(&[
            &format!("chown istio-proxy {token}"),
            &format!("chown istio-proxy {run_token}"),
            "systemctl daemon-reload",
            "systemctl restart istio",
            "curl -fs -o /dev/null --max-time 2 http://localhost:15021/healthz/ready",
        ])
    );
    let after = tree(&root);
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        changed,
        [
            "var/lib/istio/tokens/istio-token",
            "var/run/secrets/tokens/istio-token"
        ]
    );
    assert_eq!(
        after["var/lib/istio/tokens/istio-token"],
        (0o600, b"TOKEN2".to_vec())
    );
    assert_eq!(before.len(), after.len(), "no temporary file left");

    // The same credentials again: nothing swapped, the sidecar keeps running.
    let again = vm.run(&new, &["--prefix", &prefix, "--renew"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(vm.calls().is_empty());
    assert!(
        again.stdout.contains("sidecar not restarted"),
        "{}",
        again.stdout
    );

    // A damaged renewal is refused before anything is swapped.
    std::fs::set_permissions(
        new.join("istio-token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(new.join("istio-token"), "FORGED").unwrap();
    let forged = vm.run(&new, &["--prefix", &prefix, "--renew"]);
    assert_eq!(forged.code, 1, "{}", forged.stdout);
    assert!(
        forged.stderr.contains("istio-token: not as in SHA256SUMS"),
        "{}",
        forged.stderr
    );
    assert_eq!(tree(&root), after);
    assert!(vm.calls().is_empty());
}

#[test]
fn legacy_renew_swaps_key_and_chain_and_restarts_node_agent_then_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_dir(tmp.path(), Era::Legacy, legacy_files("203.0.113.10"));
    let root = tmp.path().join("root");
    let prefix = root.display().to_string();
    let vm = Vm::new(&tmp.path().join("vm"), true);
    assert_eq!(vm.run(&dir, &["--prefix", &prefix, "--no-chown"]).code, 0);
    let before = tree(&root);
    vm.calls();
    let new = renewed(&tmp.path().join("new"), Era::Legacy, "203.0.113.10");
    let dry = vm.run(
        &new,
        &["--prefix", &prefix, "--no-chown", "--renew", "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("would run: systemctl restart istio-auth-node-agent"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!(
            "would run: sync {prefix}/etc/certs/key.pem.meshvm-new"
        )),
        "{}",
        dry.stdout
    );
    assert!(vm.calls().is_empty());
    assert_eq!(tree(&root), before);

    let run = vm.run(&new, &["--prefix", &prefix, "--no-chown", "--renew"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        vm.calls(),
        lines(&[
            "systemctl restart istio-auth-node-agent",
            "systemctl restart istio",
            "curl -fs --max-time 2 http://localhost:15000/server_info",
        ])
    );
    let after = tree(&root);
    assert_eq!(after["etc/certs/key.pem"], (0o600, b"KEY2\n".to_vec()));
    assert_eq!(
        after["etc/certs/cert-chain.pem"],
        (0o644, b"CHAIN2\n".to_vec())
    );
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(changed, ["etc/certs/cert-chain.pem", "etc/certs/key.pem"]);
}
