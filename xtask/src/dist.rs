//! `cargo xtask dist [--target T]…`: release binaries, one flat archive per target, SHA256SUMS,
//! and the krew manifest rendered with the real checksums.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::archive::{Entry, sha256_hex, write_tar_gz};
use xtask::krew::{BuiltArchive, platform_of, render, validate};

use crate::workspace_root;

/// The binaries a release archive carries (krew links the first).
pub(crate) const RELEASE_BINARIES: [&str; 6] = [
    "kubectl-meshvm",
    "kubectl-meshvm-prepare",
    "kubectl-meshvm-bundle",
    "kubectl-meshvm-register",
    "kubectl-meshvm-doctor",
    "kubectl_complete-meshvm",
];

const DOWNLOAD_BASE: &str = "https://github.com/meshvm/meshvm/releases/download";

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let version = env!("CARGO_PKG_VERSION");
    let mut targets: Vec<String> = Vec::new();
    let (mut prebuilt, mut manifest_only) = (false, false);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--target" => {
                let t = args.get(i + 1).ok_or("--target needs a target triple")?;
                targets.push(t.clone());
                i += 1;
            }
            // CI: the binaries were built by the workflow (with cross where needed).
            "--prebuilt" => prebuilt = true,
            // CI: archives of every platform were downloaded into dist/; render the manifest.
            "--manifest-only" => manifest_only = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo xtask dist [--target T]... [--prebuilt | --manifest-only]"
                ));
            }
        }
        i += 1;
    }
    let dist = root.join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    if manifest_only {
        targets = archives_in(&dist, version)?;
    } else if targets.is_empty() {
        targets = buildable_targets()?;
    }
    let mut built = Vec::new();
    let mut sums = Vec::new();
    for target in &targets {
        let (os, arch) = platform_of(target)
            .ok_or_else(|| format!("{target}: krew has no os/arch for this target"))?;
        let file = format!("meshvm-{version}-{target}.tar.gz");
        let bytes = if manifest_only {
            std::fs::read(dist.join(&file)).map_err(|e| format!("{file}: {e}"))?
        } else {
            let release_dir = if prebuilt {
                target_dir(&root).join(target).join("release")
            } else {
                eprintln!("building release binaries for {target} …");
                build_release(&root, target)?
            };
            let bytes = archive(&root, &release_dir, os)?;
            std::fs::write(dist.join(&file), &bytes).map_err(|e| format!("{file}: {e}"))?;
            bytes
        };
        let sha = sha256_hex(&bytes);
        eprintln!("  {file}: {} bytes, sha256 {sha}", bytes.len());
        sums.push(format!("{sha}  {file}\n"));
        built.push((
            BuiltArchive {
                os: os.into(),
                arch: arch.into(),
                uri: format!("{DOWNLOAD_BASE}/v{version}/{file}"),
                sha256: sha,
            },
            bytes,
        ));
    }
    sums.sort();
    std::fs::write(dist.join("SHA256SUMS"), sums.concat()).map_err(|e| e.to_string())?;
    let template =
        std::fs::read_to_string(root.join("krew/meshvm.yaml")).map_err(|e| e.to_string())?;
    let archives: Vec<BuiltArchive> = built.iter().map(|(b, _)| b.clone()).collect();
    let manifest = render(&template, &format!("v{version}"), &archives)?;
    let lookup = |uri: &str| {
        built
            .iter()
            .find(|(b, _)| b.uri == uri)
            .and_then(|(_, bytes)| xtask::krew::members(bytes).ok())
    };
    let problems = validate(&manifest, "meshvm", &lookup);
    if !problems.is_empty() {
        return Err(format!(
            "the rendered manifest is invalid:\n  {}",
            problems.join("\n  ")
        ));
    }
    std::fs::write(dist.join("meshvm.yaml"), &manifest).map_err(|e| e.to_string())?;
    println!(
        "dist/meshvm.yaml (valid for krew), dist/SHA256SUMS and {} archive(s):",
        built.len()
    );
    for (b, bytes) in &built {
        println!(
            "  {} ({}/{}, {} bytes)",
            b.uri.rsplit('/').next().unwrap_or_default(),
            b.os,
            b.arch,
            bytes.len()
        );
    }
    if let Some((b, _)) = built.first() {
        println!(
            "install: kubectl krew install --manifest=dist/meshvm.yaml --archive=dist/{}",
            b.uri.rsplit('/').next().unwrap_or_default()
        );
    }
    Ok(())
}

/// The release archive of one target: its binaries (0755), LICENSE and README.md (0644).
fn archive(root: &Path, release_dir: &Path, os: &str) -> Result<Vec<u8>, String> {
    let exe = if os == "windows" { ".exe" } else { "" };
    let mut entries = Vec::new();
    for bin in RELEASE_BINARIES {
        let name = format!("{bin}{exe}");
        let entry =
            Entry::from_file(&name, &release_dir.join(&name), 0o755).map_err(|e| e.to_string())?;
        eprintln!("  {name:<32} {:>10} bytes", entry.data.len());
        entries.push(entry);
    }
    for doc in ["LICENSE", "README.md"] {
        entries.push(Entry::from_file(doc, &root.join(doc), 0o644).map_err(|e| e.to_string())?);
    }
    let mut bytes = Vec::new();
    write_tar_gz(&mut bytes, &entries).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The host target plus every installed rustup target krew knows a platform for.
fn buildable_targets() -> Result<Vec<String>, String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    let host = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc -vV did not name the host target")?;
    let mut targets = vec![host.clone()];
    if let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        for t in String::from_utf8_lossy(&out.stdout).lines() {
            if t != host && platform_of(t).is_some() {
                targets.push(t.to_owned());
            }
        }
    }
    Ok(targets)
}

fn build_release(root: &Path, target: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "kubectl-meshvm",
        "--target",
        target,
    ]);
    for bin in RELEASE_BINARIES {
        cmd.args(["--bin", bin]);
    }
    let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release --target {target} failed"));
    }
    Ok(target_dir(root).join(target).join("release"))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The targets of the `meshvm-<version>-<target>.tar.gz` files in `dist`.
fn archives_in(dist: &Path, version: &str) -> Result<Vec<String>, String> {
    let prefix = format!("meshvm-{version}-");
    let mut targets: Vec<String> = std::fs::read_dir(dist)
        .map_err(|e| format!("{}: {e}", dist.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)?
                .strip_suffix(".tar.gz")
                .map(str::to_owned)
        })
        .collect();
    targets.sort();
    if targets.is_empty() {
        return Err(format!(
            "no {prefix}<target>.tar.gz archives in {}",
            dist.display()
        ));
    }
    Ok(targets)
}
