//! krew: the rendered manifest passes every rule of krew's validator (and each rule catches a bad
//! manifest), and krew's install algorithm on our archive gives a plugin real kubectl runs.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use xtask::archive::{Entry, sha256_hex, write_tar_gz};
use xtask::krew::{BuiltArchive, install, members, render, validate};

use crate::common;
use common::{RELEASE_BINARIES, kubectls, text};

const URI: &str = "https://github.com/meshvm/meshvm/releases/download/v0.1.0/meshvm-0.1.0-x86_64-unknown-linux-gnu.tar.gz";

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The host archive, built from this build's binaries exactly as `cargo xtask dist` lays it out.
fn archive() -> Vec<u8> {
    static ARCHIVE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ARCHIVE.get_or_init(build_archive).clone()
}

fn build_archive() -> Vec<u8> {
    let mut entries: Vec<Entry> = RELEASE_BINARIES
        .iter()
        .map(|(name, path)| Entry::from_file(name, Path::new(path), 0o755).unwrap())
        .collect();
    for doc in ["LICENSE", "README.md"] {
        entries.push(Entry::from_file(doc, &root().join(doc), 0o644).unwrap());
    }
    let mut bytes = Vec::new();
    write_tar_gz(&mut bytes, &entries).unwrap();
    bytes
}

fn manifest(archive: &[u8]) -> String {
    let template = std::fs::read_to_string(root().join("krew/meshvm.yaml")).unwrap();
    render(
        &template,
        "v0.1.0",
        &[BuiltArchive {
            os: "linux".into(),
            arch: "amd64".into(),
            uri: URI.into(),
            sha256: sha256_hex(archive),
        }],
    )
    .unwrap()
}

fn check(manifest: &str, stem: &str, archive: &[u8]) -> Vec<String> {
    let listed = members(archive).unwrap();
    validate(manifest, stem, &|uri| (uri == URI).then(|| listed.clone()))
}

fn mutate(manifest: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_saphyr::from_str(manifest).unwrap();
    f(&mut v);
    serde_saphyr::to_string(&v).unwrap()
}

/// A bad manifest: what it breaks, how, and the words the validator must say.
type Case = (&'static str, Box<dyn FnOnce(&mut Value)>, &'static str);

#[test]
fn rendered_manifest_is_valid_and_every_rule_bites() {
    let archive = archive();
    let good = manifest(&archive);
    assert_eq!(check(&good, "meshvm", &archive), Vec::<String>::new());
    let v: Value = serde_saphyr::from_str(&good).unwrap();
    let short = v
        .pointer("/spec/shortDescription")
        .and_then(Value::as_str)
        .unwrap();
    assert!(short.len() <= 50);
    assert!(
        v.pointer("/spec/caveats")
            .and_then(Value::as_str)
            .unwrap()
            .contains("kubectl_complete-meshvm")
    );

    let cases: Vec<Case> = vec![
        (
            "name pattern",
            Box::new(|v| v["metadata"]["name"] = "mesh vm".into()),
            "must match",
        ),
        (
            "version without v",
            Box::new(|v| v["spec"]["version"] = "0.1.0".into()),
            "spec.version",
        ),
        (
            "version not strict",
            Box::new(|v| v["spec"]["version"] = "v1.2".into()),
            "spec.version",
        ),
        (
            "sha256 uppercase",
            Box::new(|v| {
                let s = v["spec"]["platforms"][0]["sha256"]
                    .as_str()
                    .unwrap()
                    .to_uppercase();
                v["spec"]["platforms"][0]["sha256"] = s.into();
            }),
            "64 lowercase hex",
        ),
        (
            "sha256 short",
            Box::new(|v| v["spec"]["platforms"][0]["sha256"] = "abc".into()),
            "64 lowercase hex",
        ),
        (
            "selector key",
            Box::new(|v| {
                v["spec"]["platforms"][0]["selector"]["matchLabels"]["distro"] = "debian".into();
            }),
            "only os and arch",
        ),
        (
            "platform twice",
            Box::new(|v| {
                let p = v["spec"]["platforms"][0].clone();
                v["spec"]["platforms"].as_array_mut().unwrap().push(p);
            }),
            "matched by 2 platforms",
        ),
        (
            "bin not in archive",
            Box::new(|v| v["spec"]["platforms"][0]["bin"] = "kubectl-other".into()),
            "not in the archive",
        ),
        (
            "not tar.gz or zip",
            Box::new(|v| v["spec"]["platforms"][0]["uri"] = "https://x/meshvm.tar.xz".into()),
            ".tar.gz or .zip",
        ),
        (
            "files with ..",
            Box::new(|v| {
                v["spec"]["platforms"][0]["files"] =
                    serde_json::json!([{"from": "../x", "to": "."}]);
            }),
            "without ..",
        ),
        (
            "files absolute",
            Box::new(|v| {
                v["spec"]["platforms"][0]["files"] =
                    serde_json::json!([{"from": "*", "to": "/usr/bin"}]);
            }),
            "without ..",
        ),
        (
            "short description",
            Box::new(|v| v["spec"]["shortDescription"] = "x".repeat(51).into()),
            "at most 50",
        ),
        (
            "no description",
            Box::new(|v| {
                v["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("description")
                    .map(|_| ())
                    .unwrap();
            }),
            "description is missing",
        ),
        (
            "no homepage",
            Box::new(|v| {
                v["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("homepage")
                    .map(|_| ())
                    .unwrap();
            }),
            "homepage is missing",
        ),
        (
            "wrong kind",
            Box::new(|v| v["kind"] = "Plugins".into()),
            "kind must be Plugin",
        ),
    ];
    for (what, f, expect) in cases {
        let bad = mutate(&good, f);
        let problems = check(&bad, "meshvm", &archive);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{what}: expected {expect:?} in {problems:?}"
        );
    }
    // The file name must equal metadata.name.
    assert!(
        check(&good, "mesh-vm", &archive)
            .iter()
            .any(|p| p.contains("file name"))
    );
    // An archive without LICENSE.
    let mut no_license = Vec::new();
    write_tar_gz(
        &mut no_license,
        &[Entry {
            name: "kubectl-meshvm".into(),
            mode: 0o755,
            data: vec![1],
        }],
    )
    .unwrap();
    assert!(
        check(&good, "meshvm", &no_license)
            .iter()
            .any(|p| p.contains("no LICENSE"))
    );
}

fn tar_gz_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    build(&mut tar);
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn install_refuses_bad_archives() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive();
    let good = manifest(&archive);
    // A checksum mismatch.
    let mut tampered = archive.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = install(&good, &tampered, dir.path(), "linux", "amd64").unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    // `..` and symlink entries, with the manifest's sha256 made to match so the entry check is what refuses.
    let dotdot = tar_gz_with(|t| {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        let name = b"../escape";
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        t.append(&h, &[1u8][..]).unwrap();
    });
    let symlink = tar_gz_with(|t| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "kubectl-meshvm", "/bin/sh").unwrap();
    });
    for (what, bad, expect) in [("..", dotdot, "escapes"), ("symlink", symlink, "link")] {
        let m = mutate(&good, |v| {
            v["spec"]["platforms"][0]["sha256"] = sha256_hex(&bad).into();
        });
        let err = install(&m, &bad, dir.path(), "linux", "amd64").unwrap_err();
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !dir.path().join("escape").exists() && !dir.path().join("bin/kubectl-meshvm").exists()
        );
        let listed = members(&bad).unwrap();
        let problems = validate(&m, "meshvm", &|_| Some(listed.clone()));
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{what}: {problems:?}"
        );
    }
    let err = install(&good, &archive, dir.path(), "darwin", "arm64").unwrap_err();
    assert!(err.contains("no platform for darwin/arm64"), "{err}");
}

#[test]
fn krew_install_gives_a_plugin_real_kubectl_runs() {
    let krew_root = tempfile::tempdir().unwrap();
    let archive = archive();
    let good = manifest(&archive);
    let link = install(&good, &archive, krew_root.path(), "linux", "amd64").unwrap();
    assert_eq!(link, krew_root.path().join("bin/kubectl-meshvm"));
    assert!(
        krew_root
            .path()
            .join("store/meshvm/v0.1.0/kubectl-meshvm-doctor")
            .is_file()
    );
    assert!(krew_root.path().join("receipts/meshvm.yaml").is_file());
    // Installing again (an upgrade to the same version) works too.
    install(&good, &archive, krew_root.path(), "linux", "amd64").unwrap();

    let kubectls = kubectls();
    if kubectls.is_empty() {
        return; // only with MESHVM_ALLOW_MISSING_TOOLS=1, which printed why
    }
    let bin = krew_root.path().join("bin");
    for k in kubectls {
        for args in [&["meshvm", "doctor", "--help"][..], &["plugin", "list"][..]] {
            let out = Command::new(&k)
                .args(args)
                .env_clear()
                .env("PATH", &bin)
                .env("HOME", krew_root.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} {args:?}: {}",
                k.display(),
                text(&out.stderr)
            );
            assert!(
                !text(&out.stderr).contains("warning"),
                "{} {args:?} warned: {}",
                k.display(),
                text(&out.stderr)
            );
        }
    }
}
