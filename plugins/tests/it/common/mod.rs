//! Helpers shared by the CLI tests: finding the real kubectl binaries.
#![allow(dead_code)]

pub(crate) mod sim;

use std::path::PathBuf;

/// Every binary of the package, by name; the first six are the ones a release archive carries.
pub(crate) const BINARIES: [(&str, &str); 10] = [
    ("kubectl-meshvm", env!("CARGO_BIN_EXE_kubectl-meshvm")),
    (
        "kubectl-meshvm-prepare",
        env!("CARGO_BIN_EXE_kubectl-meshvm-prepare"),
    ),
    (
        "kubectl-meshvm-bundle",
        env!("CARGO_BIN_EXE_kubectl-meshvm-bundle"),
    ),
    (
        "kubectl-meshvm-register",
        env!("CARGO_BIN_EXE_kubectl-meshvm-register"),
    ),
    (
        "kubectl-meshvm-doctor",
        env!("CARGO_BIN_EXE_kubectl-meshvm-doctor"),
    ),
    (
        "kubectl_complete-meshvm",
        env!("CARGO_BIN_EXE_kubectl_complete-meshvm"),
    ),
    (
        "kubectl_complete-meshvm-prepare",
        env!("CARGO_BIN_EXE_kubectl_complete-meshvm-prepare"),
    ),
    (
        "kubectl_complete-meshvm-bundle",
        env!("CARGO_BIN_EXE_kubectl_complete-meshvm-bundle"),
    ),
    (
        "kubectl_complete-meshvm-register",
        env!("CARGO_BIN_EXE_kubectl_complete-meshvm-register"),
    ),
    (
        "kubectl_complete-meshvm-doctor",
        env!("CARGO_BIN_EXE_kubectl_complete-meshvm-doctor"),
    ),
];

/// The binaries of a release (krew) archive.
pub(crate) const RELEASE_BINARIES: &[(&str, &str)] = BINARIES.split_at(6).0;

/// The real kubectl binaries of the versions we test (1.27, 1.32, 1.33), from the folder the
/// `kubectl` on PATH resolves into. Missing ones fail the test (see `kube_sim::testenv`); the
/// list is empty only with the explicit `MESHVM_ALLOW_MISSING_TOOLS=1` opt-out, after it said so.
pub(crate) fn kubectls() -> Vec<PathBuf> {
    ["1.27", "1.32", "1.33"]
        .iter()
        .map_while(|v| kube_sim::testenv::require_kubectl_minor(v))
        .collect()
}

/// Lossy UTF-8.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
