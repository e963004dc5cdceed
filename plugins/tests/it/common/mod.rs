//! Helpers shared by the CLI tests: finding the real kubectl binaries.
#![allow(dead_code)]

pub mod sim;

use std::path::{Path, PathBuf};

/// Every binary of the package, by name; the first six are the ones a release archive carries.
pub const BINARIES: [(&str, &str); 10] = [
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
pub const RELEASE_BINARIES: &[(&str, &str)] = BINARIES.split_at(6).0;

/// The real kubectl binaries of the versions we test (1.27, 1.32, 1.33), from the folder the
/// `kubectl` on PATH resolves into; the PATH one alone if those are missing; none if there is
/// no kubectl at all (then callers print why they skip).
pub fn kubectls() -> Vec<PathBuf> {
    let Some(on_path) = kubectl_on_path() else {
        return Vec::new();
    };
    let dir = on_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let found: Vec<PathBuf> = ["1.27", "1.32", "1.33"]
        .iter()
        .map(|v| dir.join(format!("kubectl.{v}")))
        .filter(|p| p.is_file())
        .collect();
    if found.is_empty() {
        vec![on_path]
    } else {
        found
    }
}

/// `readlink -f "$(command -v kubectl)"`.
pub fn kubectl_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}

/// Lossy UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
