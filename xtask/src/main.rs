//! `cargo xtask demo | dist | bench`: the project's own tasks.
//!
//! `demo` runs the runbook's whole flow — prepare → bundle → register → doctor — through
//! `kubectl meshvm …` (the real kubectl binary) against kube-sim, the simulated API server.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod demo;
mod dist;
mod realistic;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  demo    the runbook's flow on a simulated cluster\n  dist    release archives and the krew manifest\n  bench   round trips, realistic and synthetic scale, opt-levels, cold start, size → BENCHMARKS.md"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Build the plugin binaries (debug) and return the directory holding them.
fn build_plugins(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "-q", "-p", "kubectl-meshvm"])
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build -p kubectl-meshvm failed".into());
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug"))
}
