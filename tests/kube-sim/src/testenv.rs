//! What the workspace's tests need from the machine, found one way for every package: the
//! workspace root, the reference folder `../shared` beside it, and the external tools CI installs
//! (the real `kubectl` binaries, `shellcheck`).
//!
//! A test that needs a tool FAILS when the tool is missing, naming how to install it. The only
//! opt-out is explicit: `MESHVM_ALLOW_MISSING_TOOLS=1` turns such a test into an early return
//! that prints `IGNORED (MESHVM_ALLOW_MISSING_TOOLS): <why>` — never a silent pass.

use std::path::{Path, PathBuf};

/// The environment variable that lets tests needing a missing tool return early, saying so.
pub const ALLOW_MISSING_TOOLS: &str = "MESHVM_ALLOW_MISSING_TOOLS";

/// The workspace root: the folder whose `Cargo.toml` has `[workspace]`, found upwards from this
/// crate's manifest directory (no absolute machine path anywhere).
pub fn workspace_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace Cargo.toml above {}", start.display()))
        .to_path_buf()
}

/// `../shared/conformance` beside the workspace root: the real data the tests compare with.
/// Panics with what to do when the folder is absent.
pub fn conformance_dir() -> PathBuf {
    let dir = workspace_root().join("../shared/conformance");
    assert!(
        dir.join("PROVENANCE.md").is_file(),
        "the reference folder {} is missing: the tests read conformance data from `../shared` beside \
         the checkout (CI lays a copy there); put the project's shared/ folder beside the repository",
        dir.display()
    );
    dir
}

/// A file under [`conformance_dir`], e.g. `workload-entry-configure/CASES.yaml`.
pub fn conformance(rel: &str) -> PathBuf {
    conformance_dir().join(rel)
}

/// Whether a missing tool may turn a test into an announced early return.
fn missing_tools_allowed() -> bool {
    std::env::var(ALLOW_MISSING_TOOLS).is_ok_and(|v| v == "1")
}

/// A tool's absence: a panic naming how to install it, or (with the opt-out) `None` after
/// printing `IGNORED (…)` so the log shows the test did not run.
fn missing(tool: &str, install: &str) -> Option<PathBuf> {
    let why = format!("{tool} is not installed ({install})");
    assert!(
        missing_tools_allowed(),
        "{why}; CI installs it (.ci/run). Set {ALLOW_MISSING_TOOLS}=1 to let tests that need it return early"
    );
    eprintln!("IGNORED ({ALLOW_MISSING_TOOLS}): {why}");
    None
}

/// The path of `name` on PATH (resolved through symlinks), if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}

/// `shellcheck`, which CI installs with apt.
pub fn require_shellcheck() -> Option<PathBuf> {
    on_path("shellcheck").or_else(|| missing("shellcheck", "apt-get install shellcheck"))
}

/// `kubectl` on PATH, resolved (`readlink -f "$(command -v kubectl)"`): on these machines a
/// dispatcher that runs `kubectl.1.NN` beside it by the server's minor version.
pub fn require_kubectl() -> Option<PathBuf> {
    on_path("kubectl").or_else(|| {
        missing(
            "kubectl",
            "the machine image provides kubectl and kubectl.1.27 … kubectl.1.33",
        )
    })
}

/// The real `kubectl.1.NN` binary beside the dispatcher, e.g. `kubectl_minor("1.32")`.
pub fn require_kubectl_minor(minor: &str) -> Option<PathBuf> {
    let dispatcher = require_kubectl()?;
    let path = dispatcher
        .parent()
        .map(|d| d.join(format!("kubectl.{minor}")))
        .filter(|p| p.is_file());
    path.or_else(|| {
        missing(
            &format!("kubectl.{minor}"),
            "expected beside the kubectl dispatcher on PATH",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_packages() {
        let root = workspace_root();
        for member in ["shared", "plugins", "tests/kube-sim", "xtask"] {
            assert!(root.join(member).join("Cargo.toml").is_file(), "{member}");
        }
    }

    #[test]
    fn conformance_data_is_beside_the_workspace() {
        assert!(conformance("certs/samples").is_dir());
    }
}
