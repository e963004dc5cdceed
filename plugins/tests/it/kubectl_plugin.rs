//! The plugin as real kubectl sees it: dispatch, help, `plugin list` and completion, with
//! kubectl 1.27, 1.32 and 1.33, in the `cargo install` layout and in krew's layout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;
use common::{BINARIES, kubectls, text};

const VERBS: [&str; 4] = ["prepare", "bundle", "register", "doctor"];

/// A temp dir laid out as `cargo install` leaves it: every binary in one directory on PATH.
fn cargo_layout(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, src) in BINARIES {
        std::fs::copy(src, bin.join(name)).unwrap();
    }
    bin
}

/// krew's layout: the archive's files in `store/meshvm/<v>/`, only `bin/kubectl-meshvm` linked
/// (plus the completion helper the manifest's caveats tell users to link).
#[cfg(unix)]
fn krew_layout(root: &Path) -> PathBuf {
    let store = root.join("store/meshvm/v0.1.0");
    let bin = root.join("bin");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    for (name, src) in BINARIES {
        std::fs::copy(src, store.join(name)).unwrap();
    }
    for name in ["kubectl-meshvm", "kubectl_complete-meshvm"] {
        std::os::unix::fs::symlink(store.join(name), bin.join(name)).unwrap();
    }
    bin
}

fn kubectl(kubectl: &Path, path_dir: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(kubectl)
        .args(args)
        .env_clear()
        .env("PATH", path_dir)
        .env("HOME", home)
        .env("KUBECONFIG", home.join("no-such-kubeconfig"))
        .output()
        .unwrap()
}

fn check_layout(kubectl_bin: &Path, bin: &Path, home: &Path, layout: &str) {
    let who = format!("{} / {layout}", kubectl_bin.display());
    for verb in VERBS {
        let out = kubectl(kubectl_bin, bin, home, &["meshvm", verb, "--help"]);
        assert!(
            out.status.success(),
            "{who}: meshvm {verb} --help: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&format!("Usage: kubectl meshvm {verb}")),
            "{who}: {verb} --help reached the wrong binary:\n{stdout}"
        );
    }
    let out = kubectl(
        kubectl_bin,
        bin,
        home,
        &["meshvm", "-n", "x", "doctor", "--help"],
    );
    assert!(
        out.status.success(),
        "{who}: -n x doctor --help: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("Usage: kubectl meshvm doctor"),
        "{who}"
    );

    let out = kubectl(kubectl_bin, bin, home, &["meshvm"]);
    assert!(out.status.success(), "{who}");
    for verb in VERBS {
        assert!(
            text(&out.stdout).contains(&format!("  {verb} ")),
            "{who}: help lacks {verb}"
        );
    }
    let out = kubectl(kubectl_bin, bin, home, &["meshvm", "frobnicate"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{who}: unknown verb must exit 2"
    );
    assert!(
        text(&out.stderr).contains("prepare, bundle, register, doctor"),
        "{who}"
    );

    let out = kubectl(kubectl_bin, bin, home, &["plugin", "list"]);
    assert!(
        out.status.success(),
        "{who}: plugin list failed: {}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("warning"),
        "{who}: plugin list warned: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("kubectl-meshvm"), "{who}");

    let out = kubectl(kubectl_bin, bin, home, &["__complete", "meshvm", ""]);
    let stdout = text(&out.stdout);
    for verb in VERBS {
        let n = stdout
            .lines()
            .filter(|l| l.split('\t').next() == Some(verb))
            .count();
        assert_eq!(n, 1, "{who}: completion offers {verb} {n} times:\n{stdout}");
    }
    let out = kubectl(
        kubectl_bin,
        bin,
        home,
        &["__complete", "meshvm", "doctor", "--"],
    );
    let stdout = text(&out.stdout);
    for flag in ["--filename", "--bundle", "--fix", "--context"] {
        assert!(
            stdout.lines().any(|l| l.split('\t').next() == Some(flag)),
            "{who}: no {flag} in\n{stdout}"
        );
    }
}

#[test]
fn real_kubectl_finds_and_dispatches_the_plugin() {
    let kubectls = kubectls();
    if kubectls.is_empty() {
        return; // only with MESHVM_ALLOW_MISSING_TOOLS=1, which printed why
    }
    for k in &kubectls {
        let tmp = tempfile::tempdir().unwrap();
        let bin = cargo_layout(&tmp.path().join("cargo"));
        check_layout(k, &bin, tmp.path(), "cargo install layout");
        #[cfg(unix)]
        {
            let bin = krew_layout(&tmp.path().join("krew"));
            check_layout(k, &bin, tmp.path(), "krew layout");
        }
    }
}

#[test]
fn dispatcher_warns_when_a_verb_binary_is_another_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-meshvm-doctor"))
        .arg("--help")
        .env("MESHVM_DISPATCHER_VERSION", "9.9.9")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("version 9.9.9"),
        "{}",
        text(&out.stderr)
    );
}
