//! krew: render the plugin manifest, validate it by krew's own rules, and install an archive the
//! way `kubectl krew install --manifest=… --archive=…` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// krew's manifest API version.
pub const API_VERSION: &str = "krew.googlecontainertools.github.com/v1alpha2";

/// The os/arch pairs krew resolves selectors against.
const PLATFORMS: [(&str, &str); 9] = [
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("linux", "386"),
    ("linux", "arm"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
    ("windows", "amd64"),
    ("windows", "386"),
    ("windows", "arm64"),
];

/// A built archive for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltArchive {
    /// krew's `os` label.
    pub os: String,
    /// krew's `arch` label.
    pub arch: String,
    /// Where users download it from.
    pub uri: String,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// The krew `os`/`arch` labels of a Rust target triple, if krew knows the platform.
pub fn platform_of(target: &str) -> Option<(&'static str, &'static str)> {
    let os = if target.contains("linux") {
        "linux"
    } else if target.contains("apple-darwin") {
        "darwin"
    } else if target.contains("windows") {
        "windows"
    } else {
        return None;
    };
    let arch = match target.split('-').next()? {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" => "386",
        _ => return None,
    };
    Some((os, arch))
}

fn yaml_to_json(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// Fill the template: the version, and per platform the URI and SHA-256 of its archive.
/// Platforms with no built archive are left out, so the result is always installable.
pub fn render(template: &str, version: &str, built: &[BuiltArchive]) -> Result<String, String> {
    let mut manifest = yaml_to_json(&template.replace("{{VERSION}}", version))?;
    let platforms = manifest
        .pointer_mut("/spec/platforms")
        .and_then(Value::as_array_mut)
        .ok_or("the template has no spec.platforms")?;
    platforms.retain_mut(|p| {
        let labels = p
            .pointer("/selector/matchLabels")
            .cloned()
            .unwrap_or_default();
        let os = labels.get("os").and_then(Value::as_str).unwrap_or_default();
        let arch = labels
            .get("arch")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match built.iter().find(|b| b.os == os && b.arch == arch) {
            Some(b) => {
                p["uri"] = Value::String(b.uri.clone());
                p["sha256"] = Value::String(b.sha256.clone());
                true
            }
            None => false,
        }
    });
    if platforms.is_empty() {
        return Err("no archive was built for any platform of the template".into());
    }
    serde_saphyr::to_string(&manifest).map_err(|e| e.to_string())
}

fn is_strict_semver_v(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (core, _build) = rest.split_once('+').unwrap_or((rest, ""));
    let (core, pre) = core
        .split_once('-')
        .map_or((core, None), |(c, p)| (c, Some(p)));
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric_ok = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    numbers.len() == 3
        && numbers.iter().all(|n| numeric_ok(n))
        && pre.is_none_or(|p| {
            p.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        })
}

fn unsafe_path(path: &str) -> bool {
    path.starts_with('/')
        || path.starts_with('\\')
        || path.split(['/', '\\']).any(|part| part == "..")
        || path.get(1..2) == Some(":")
}

/// What krew's validator (and the krew-index review) would refuse, one line per problem.
/// `file_stem` is the manifest's file name without `.yaml`; `archive_files` gives the file
/// names inside each platform's archive (by URI) when they are known.
pub fn validate(
    manifest_text: &str,
    file_stem: &str,
    archive_files: &dyn Fn(&str) -> Option<Vec<ArchiveMember>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let m = match yaml_to_json(manifest_text) {
        Ok(m) => m,
        Err(e) => return vec![format!("not valid YAML: {e}")],
    };
    let str_at = |ptr: &str| m.pointer(ptr).and_then(Value::as_str).unwrap_or_default();
    if str_at("/apiVersion") != API_VERSION {
        problems.push(format!("apiVersion must be {API_VERSION}"));
    }
    if str_at("/kind") != "Plugin" {
        problems.push("kind must be Plugin".into());
    }
    let name = str_at("/metadata/name");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        problems.push(format!("metadata.name {name:?} must match ^[\\w-]+$"));
    }
    if name != file_stem {
        problems.push(format!(
            "metadata.name {name:?} must equal the file name {file_stem:?}"
        ));
    }
    let version = str_at("/spec/version");
    if !is_strict_semver_v(version) {
        problems.push(format!(
            "spec.version {version:?} must be v + strict semver (v1.2.3)"
        ));
    }
    let short = str_at("/spec/shortDescription");
    if short.is_empty() {
        problems.push("spec.shortDescription is missing".into());
    } else if short.chars().count() > 50 {
        problems.push(format!(
            "spec.shortDescription is {} characters; at most 50",
            short.chars().count()
        ));
    }
    if str_at("/spec/description").trim().is_empty() {
        problems.push("spec.description is missing".into());
    }
    if str_at("/spec/homepage").trim().is_empty() {
        problems.push("spec.homepage is missing".into());
    }
    let platforms = m
        .pointer("/spec/platforms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if platforms.is_empty() {
        problems.push("spec.platforms is empty".into());
    }
    let mut matched: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, p) in platforms.iter().enumerate() {
        let at = |f: &str| p.get(f).and_then(Value::as_str).unwrap_or_default();
        let uri = at("uri");
        if uri.is_empty() {
            problems.push(format!("platforms[{i}].uri is missing"));
        } else if ![".tar.gz", ".tgz", ".zip"]
            .iter()
            .any(|ext| uri.to_ascii_lowercase().ends_with(ext))
        {
            problems.push(format!(
                "platforms[{i}].uri {uri:?} must be a .tar.gz or .zip archive"
            ));
        }
        let sha = at("sha256");
        if sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            problems.push(format!(
                "platforms[{i}].sha256 {sha:?} must be 64 lowercase hex digits"
            ));
        }
        let bin = at("bin");
        if bin.is_empty() {
            problems.push(format!("platforms[{i}].bin is missing"));
        } else if unsafe_path(bin) {
            problems.push(format!(
                "platforms[{i}].bin {bin:?} must be a relative path without .."
            ));
        }
        let selector = p.get("selector").cloned().unwrap_or_default();
        let labels = selector
            .get("matchLabels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for key in labels.keys() {
            if key != "os" && key != "arch" {
                problems.push(format!(
                    "platforms[{i}].selector uses key {key:?}; only os and arch"
                ));
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                if key != "os" && key != "arch" {
                    problems.push(format!(
                        "platforms[{i}].selector uses key {key:?}; only os and arch"
                    ));
                }
            }
        }
        for pair in PLATFORMS {
            if selector_matches(&selector, pair.0, pair.1) {
                *matched.entry(pair).or_default() += 1;
            }
        }
        let files = p
            .get("files")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for f in &files {
            for field in ["from", "to"] {
                let path = f.get(field).and_then(Value::as_str).unwrap_or_default();
                if unsafe_path(path) {
                    problems.push(format!(
                        "platforms[{i}].files {field} {path:?} must be a relative path without .."
                    ));
                }
            }
        }
        if let Some(members) = archive_files(uri) {
            for member in &members {
                if unsafe_path(&member.name) {
                    problems.push(format!(
                        "archive {uri}: entry {:?} escapes the install directory",
                        member.name
                    ));
                }
                if member.link {
                    problems.push(format!(
                        "archive {uri}: entry {:?} is a link; krew rejects links",
                        member.name
                    ));
                }
            }
            let installed = apply_files(&members, &files);
            if !bin.is_empty() && !installed.iter().any(|(_, to)| to == bin) {
                problems.push(format!("archive {uri}: bin {bin:?} is not in the archive"));
            }
            if !installed.iter().any(|(_, to)| {
                let base = to.rsplit('/').next().unwrap_or(to);
                base.starts_with("LICENSE") || base.starts_with("LICENCE")
            }) {
                problems.push(format!("archive {uri}: no LICENSE file"));
            }
        }
    }
    for ((os, arch), n) in matched {
        if n > 1 {
            problems.push(format!(
                "{os}/{arch} is matched by {n} platforms; at most one"
            ));
        }
    }
    problems
}

fn selector_matches(selector: &Value, os: &str, arch: &str) -> bool {
    let value_of = |key: &str| {
        if key == "os" {
            os
        } else if key == "arch" {
            arch
        } else {
            ""
        }
    };
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            if v.as_str() != Some(value_of(k)) {
                return false;
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = value_of(key);
            let ok = match e.get("operator").and_then(Value::as_str) {
                Some("In") => values.contains(&have),
                Some("NotIn") => !values.contains(&have),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// One entry of an archive, as far as krew cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMember {
    /// Path inside the archive.
    pub name: String,
    /// A symlink or hard link.
    pub link: bool,
}

/// List a `.tar.gz`'s members.
pub fn members(archive: &[u8]) -> Result<Vec<ArchiveMember>, String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut out = Vec::new();
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        out.push(ArchiveMember {
            name,
            link: kind.is_symlink() || kind.is_hard_link(),
        });
    }
    Ok(out)
}

fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    text.is_char_boundary(head.len() + i)
                        && glob_match(tail, &text[head.len() + i..])
                })
        }
    }
}

/// Where krew puts each archive member: `files` from→to, or everything as is when absent.
fn apply_files(members: &[ArchiveMember], files: &[Value]) -> Vec<(String, String)> {
    if files.is_empty() {
        return members
            .iter()
            .map(|m| (m.name.clone(), m.name.clone()))
            .collect();
    }
    let mut out = Vec::new();
    for f in files {
        let from = f.get("from").and_then(Value::as_str).unwrap_or_default();
        let to = f.get("to").and_then(Value::as_str).unwrap_or(".");
        for m in members {
            if glob_match(from, &m.name) {
                let base = m.name.rsplit('/').next().unwrap_or(&m.name);
                let dest = if to == "." || to.ends_with('/') {
                    format!(
                        "{}{base}",
                        to.trim_start_matches('.').trim_start_matches('/')
                    )
                } else {
                    to.to_owned()
                };
                out.push((m.name.clone(), dest));
            }
        }
    }
    out
}

/// Install `archive` as krew would for `os`/`arch` into `krew_root`: check the SHA-256, extract
/// (refusing `..`, absolute and link entries), place the files in `store/<name>/<version>/`,
/// link `bin/kubectl-<name>` to the plugin's `bin`, and write the receipt.
/// Returns the link's path.
pub fn install(
    manifest_text: &str,
    archive: &[u8],
    krew_root: &Path,
    os: &str,
    arch: &str,
) -> Result<PathBuf, String> {
    let m = yaml_to_json(manifest_text)?;
    let name = m
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("no metadata.name")?;
    let version = m
        .pointer("/spec/version")
        .and_then(Value::as_str)
        .ok_or("no spec.version")?;
    let platform = m
        .pointer("/spec/platforms")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| selector_matches(p.get("selector").unwrap_or(&Value::Null), os, arch))
        })
        .ok_or_else(|| format!("plugin {name} has no platform for {os}/{arch}"))?;
    let want = platform
        .get("sha256")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let got = crate::archive::sha256_hex(archive);
    if want != got {
        return Err(format!(
            "archive sha256 {got} does not match the manifest's {want}"
        ));
    }
    let bin = platform
        .get("bin")
        .and_then(Value::as_str)
        .ok_or("no bin")?;
    let files = platform
        .get("files")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut contents: BTreeMap<String, (u32, Vec<u8>)> = BTreeMap::new();
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if unsafe_path(&member) {
            return Err(format!(
                "archive entry {member:?} escapes the install directory"
            ));
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(format!("archive entry {member:?} is a link; refused"));
        }
        if kind.is_dir() {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(|e| e.to_string())?;
        contents.insert(member, (mode, data));
    }
    let members: Vec<ArchiveMember> = contents
        .keys()
        .map(|n| ArchiveMember {
            name: n.clone(),
            link: false,
        })
        .collect();
    let store = krew_root.join("store").join(name).join(version);
    std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
    for (from, to) in apply_files(&members, &files) {
        if unsafe_path(&to) {
            return Err(format!("files.to {to:?} escapes the install directory"));
        }
        let (mode, data) = &contents[&from];
        let dest = store.join(&to);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&dest, data).map_err(|e| format!("{}: {e}", dest.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| e.to_string())?;
        }
        #[cfg(not(unix))]
        let _ = mode;
    }
    let target = store.join(bin);
    if !target.is_file() {
        return Err(format!("bin {bin:?} is not among the installed files"));
    }
    let bin_dir = krew_root.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| e.to_string())?;
    let link = bin_dir.join(format!(
        "kubectl-{}{}",
        name.replace('-', "_"),
        if os == "windows" { ".exe" } else { "" }
    ));
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &link).map_err(|e| e.to_string())?;
    #[cfg(not(unix))]
    std::fs::copy(&target, &link).map_err(|e| e.to_string())?;
    let receipts = krew_root.join("receipts");
    std::fs::create_dir_all(&receipts).map_err(|e| e.to_string())?;
    std::fs::write(receipts.join(format!("{name}.yaml")), manifest_text)
        .map_err(|e| e.to_string())?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver() {
        for ok in ["v0.1.0", "v1.2.3-rc.1", "v10.0.0+build.5", "v1.0.0-alpha-1"] {
            assert!(is_strict_semver_v(ok), "{ok}");
        }
        for bad in [
            "0.1.0", "v1.2", "v01.2.3", "v1.2.3-", "v1.2.3.4", "vx.y.z", "",
        ] {
            assert!(!is_strict_semver_v(bad), "{bad}");
        }
    }

    #[test]
    fn platforms_of_targets() {
        assert_eq!(
            platform_of("x86_64-unknown-linux-gnu"),
            Some(("linux", "amd64"))
        );
        assert_eq!(
            platform_of("aarch64-unknown-linux-musl"),
            Some(("linux", "arm64"))
        );
        assert_eq!(
            platform_of("aarch64-apple-darwin"),
            Some(("darwin", "arm64"))
        );
        assert_eq!(
            platform_of("x86_64-pc-windows-msvc"),
            Some(("windows", "amd64"))
        );
        assert_eq!(platform_of("riscv64gc-unknown-linux-gnu"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("kubectl-*", "kubectl-meshvm"));
        assert!(glob_match("*", "LICENSE"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("kubectl-*", "LICENSE"));
    }

    #[test]
    fn unsafe_paths() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "C:\\x", "\\x"] {
            assert!(unsafe_path(bad), "{bad}");
        }
        for ok in ["kubectl-meshvm", "bin/x", "LICENSE"] {
            assert!(!unsafe_path(ok), "{ok}");
        }
    }
}
