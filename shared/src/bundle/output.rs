//! Writing a bundle: the directory (0700, each file renamed into place whole), the deterministic
//! archive (one top folder), `install.sh`, the summary.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Bundle, Error, modern};
use crate::flags::OutputFormat;
use crate::istio::{Era, LEGACY_HOST_SERVICES};

/// The checksum file inside every bundle (`sha256sum -c SHA256SUMS` checks it).
pub const SHA256SUMS: &str = "SHA256SUMS";

const INSTALL_TEMPLATE: &str = include_str!("install.sh");

/// One file of the bundle. `Debug` leaves the content out: keys and tokens are secret.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct BundleFile {
    /// File name inside the bundle.
    #[serde(rename = "file")]
    pub name: String,
    /// Content.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// Size in bytes.
    pub size: usize,
    /// Unix mode bits.
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// What it is, for the summary.
    pub what: String,
}

// serde's `serialize_with` hands fields over by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

impl std::fmt::Debug for BundleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BundleFile({}, {} bytes, {:04o})",
            self.name, self.size, self.mode
        )
    }
}

impl BundleFile {
    /// A file with its content, mode and description.
    pub fn new(
        name: impl Into<String>,
        data: impl AsRef<[u8]>,
        mode: u32,
        what: impl Into<String>,
    ) -> Self {
        let data = data.as_ref().to_vec();
        Self {
            name: name.into(),
            size: data.len(),
            data,
            mode,
            what: what.into(),
        }
    }
}

/// The archive's mode: it holds the VM's private key or bootstrap token, so only its owner may
/// read it, like those files themselves.
pub const ARCHIVE_MODE: u32 = 0o600;

/// `sha256sum` output for `files` (text mode: two spaces), in name order.
pub fn sha256sums(files: &[BundleFile]) -> String {
    let mut sorted: Vec<&BundleFile> = files.iter().filter(|f| f.name != SHA256SUMS).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for f in sorted {
        let _ = writeln!(out, "{}  {}", hex::encode(Sha256::digest(&f.data)), f.name);
    }
    out
}

/// Bundle file, destination on the VM, mode: what `install.sh` installs.
type Placement = (&'static str, &'static str, String);

/// The era's files `install.sh` installs, from the one bundle layout ([`crate::vmfiles`]).
fn placements(era: Era) -> Vec<Placement> {
    crate::vmfiles::of(era)
        .filter_map(|f| Some((f.name, f.install_to?, format!("{:04o}", f.mode))))
        .collect()
}

/// The systemd units of the era's istio-sidecar package, in start order (istio@1.4.2
/// tools/packaging/common/istio-auth-node-agent.service and istio.service; istio@1.8.0
/// tools/packaging/common/istio.service only).
pub fn units(era: Era) -> &'static str {
    match era {
        Era::Legacy => "istio-auth-node-agent istio",
        Era::Modern => "istio",
    }
}

/// `install.sh` for an era: the static script with the era's file table and endpoints.
pub fn install_script(era: Era, istio_namespace: &str, revision: Option<&str>) -> String {
    let (files, dirs, endpoints): (Vec<Placement>, &str, Vec<(String, u16)>) = match era {
        Era::Legacy => (
            placements(Era::Legacy),
            "/etc/certs /var/lib/istio/envoy",
            LEGACY_HOST_SERVICES
                .iter()
                .map(|svc| {
                    let port = match *svc {
                        "istio-citadel" => 8060,
                        "istio-pilot" => 15011,
                        _ => 15004,
                    };
                    (format!("{svc}.{istio_namespace}"), port)
                })
                .collect(),
        ),
        Era::Modern => (
            placements(Era::Modern),
            "/etc/certs /etc/istio/config /etc/istio/proxy /var/lib/istio /var/run/secrets/tokens",
            vec![(
                modern::istiod_host(istio_namespace, revision),
                modern::ISTIOD_PORT,
            )],
        ),
    };
    let table = |rows: Vec<String>| format!("\n{}\n", rows.join("\n"));
    INSTALL_TEMPLATE
        .replace("@ERA@", &era.to_string())
        .replace(
            "@FILES@",
            &table(
                files
                    .iter()
                    .map(|(n, d, m)| format!("{n} {d} {m}"))
                    .collect(),
            ),
        )
        .replace(
            "@CREDENTIALS@",
            &crate::vmfiles::credentials(era)
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(" "),
        )
        .replace("@UNITS@", units(era))
        .replace("@DIRS@", dirs)
        .replace(
            "@ENDPOINTS@",
            &table(endpoints.iter().map(|(h, p)| format!("{h} {p}")).collect()),
        )
}

/// `path` made absolute without requiring it to exist (its parent must).
pub fn absolute(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(parent.join(path.file_name()?))
}

/// Refuse an archive path that is a directory. Whether an existing archive may be replaced
/// (`--force`, or it holds this very bundle) is decided once the bundle is known.
pub fn check_archive(path: &Path) -> Result<(), Error> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(Error::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "is a directory"),
        }),
        _ => Ok(()),
    }
}

/// What an existing output directory holds: files of the bundle layout ([`crate::vmfiles`])
/// from a previous bundle, and temporary files an interrupted run left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Whether the directory exists.
    pub exists: bool,
    /// Bundle-layout file names in it, sorted.
    pub files: Vec<String>,
    /// Temporary files of an interrupted run (`.NAME.meshvm-tmp-…`), sorted.
    pub temporary: Vec<String>,
}

/// The infix of the temporary files bundle writes beside each file before renaming it.
const TMP_INFIX: &str = ".meshvm-tmp-";

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TMP_INFIX)
}

/// Why `dir` must never be a bundle's directory (bundle may remove files in it), if it is one of
/// those: the current directory, one of its parents, `/`, or `$HOME`.
fn unsafe_dir(dir: &Path) -> Option<&'static str> {
    let canon = dir.canonicalize().ok()?;
    if canon.parent().is_none() {
        return Some("the root directory");
    }
    if let Ok(cwd) = std::env::current_dir().and_then(|c| c.canonicalize()) {
        if cwd == canon {
            return Some("the current directory");
        }
        if cwd.starts_with(&canon) {
            return Some("a parent of the current directory");
        }
    }
    if std::env::var_os("HOME")
        .and_then(|h| PathBuf::from(h).canonicalize().ok())
        .is_some_and(|home| home == canon)
    {
        return Some("your home directory ($HOME)");
    }
    None
}

/// Refuse a target that is a file; the current directory, a parent of it, `/` or `$HOME`; or a
/// directory holding anything but a previous bundle's files (bundle never removes what it did
/// not write, not even with `--force`). Returns what the directory holds.
pub fn check_target(dir: &Path) -> Result<Existing, Error> {
    let meta = match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::default()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_owned(),
                source,
            });
        }
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err(Error::Io {
            path: dir.to_owned(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ),
        });
    }
    if let Some(what) = unsafe_dir(dir) {
        return Err(Error::Usage(super::UsageError::new(
            format!(
                "--output-dir {} is {what}: bundle replaces the files of its directory, so it needs a folder of its own",
                dir.display()
            ),
            Some("name a new folder for the bundle, e.g. -d expandvm"),
        )));
    }
    let mut existing = Existing {
        exists: true,
        ..Existing::default()
    };
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type().map_err(io_err(dir))?;
        if !file_type.is_file() {
            foreign.push(if file_type.is_dir() {
                format!("{name}/")
            } else {
                name
            });
        } else if crate::vmfiles::get(&name).is_some() {
            existing.files.push(name);
        } else if is_temporary(&name) {
            existing.temporary.push(name);
        } else {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(Error::OutputForeign {
            path: dir.to_owned(),
            entries: foreign,
        });
    }
    existing.files.sort();
    existing.temporary.sort();
    Ok(existing)
}

/// The archive's top folder: the bundle directory's name (`-d expandvm` → `expandvm/`), so the
/// unpacked archive and the copied directory look the same on the VM.
pub fn top_folder(dir: &Path) -> String {
    absolute(dir)
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "bundle".to_owned())
}

/// The deterministic archive: everything under one folder `top/` (mode 0700), entries in name
/// order, modes from the bundle, mtime/uid/gid 0, and a gzip header without time or name, so the
/// same bundle gives the same bytes.
pub fn archive_bytes(files: &[BundleFile], top: &str) -> io::Result<Vec<u8>> {
    let names: Vec<String> = files.iter().map(|f| format!("{top}/{}", f.name)).collect();
    let folder = format!("{top}/");
    let mut bytes = Vec::new();
    crate::archive::write_tar_gz(
        &mut bytes,
        std::iter::once((folder.as_str(), 0o700, &[][..])).chain(
            names
                .iter()
                .zip(files)
                .map(|(n, f)| (n.as_str(), f.mode, f.data.as_slice())),
        ),
    )?;
    Ok(bytes)
}

/// What was written, for the summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// The era the bundle is for.
    pub era: Era,
    /// The bundle directory.
    pub output_dir: PathBuf,
    /// The files, in name order.
    pub files: Vec<BundleFile>,
    /// Files the directory already held with exactly this content (not rewritten).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// Files removed from the directory: a previous bundle's files this one does not have, and
    /// temporary files of an interrupted run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Removed>,
    /// The archive, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveInfo>,
    /// Legacy: `ISTIO_SERVICE_CIDR` and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<super::ServiceCidr>,
}

/// A file bundle removed from the output directory, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Its name in the directory.
    pub file: String,
    /// Why it went.
    pub why: String,
}

/// The archive written with `--archive`.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveInfo {
    /// Where.
    pub path: PathBuf,
    /// The folder everything in it unpacks into.
    pub folder: String,
    /// Its size in bytes.
    pub size: usize,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// It already held exactly these bytes.
    pub unchanged: bool,
}

impl Written {
    /// Nothing was changed: the directory (and archive) already held exactly this bundle.
    pub fn is_unchanged(&self) -> bool {
        self.unchanged.len() == self.files.len()
            && self.removed.is_empty()
            && self.archive.as_ref().is_none_or(|a| a.unchanged)
    }

    /// The table (FILE SIZE MODE WHAT), or the same as JSON/YAML data.
    pub fn write_summary(&self, out: &mut impl Write, format: OutputFormat) -> io::Result<()> {
        if crate::output::write_data(out, format, self)? {
            return Ok(());
        }
        let mut rows: Vec<[String; 4]> = self
            .files
            .iter()
            .map(|f| {
                [
                    self.output_dir.join(&f.name).display().to_string(),
                    f.size.to_string(),
                    format!("{:04o}", f.mode),
                    if self.unchanged.contains(&f.name) {
                        format!("{} (unchanged)", f.what)
                    } else {
                        f.what.clone()
                    },
                ]
            })
            .collect();
        rows.extend(self.removed.iter().map(|r| {
            [
                self.output_dir.join(&r.file).display().to_string(),
                "-".into(),
                "-".into(),
                format!("removed: {}", r.why),
            ]
        }));
        if let Some(a) = &self.archive {
            rows.push([
                a.path.display().to_string(),
                a.size.to_string(),
                format!("{ARCHIVE_MODE:04o}"),
                format!(
                    "archive of the bundle (unpacks into {}/), sha256 {}{}",
                    a.folder,
                    a.sha256,
                    if a.unchanged { " (unchanged)" } else { "" }
                ),
            ]);
        }
        crate::plan::write_columns(out, &["FILE", "SIZE", "MODE", "WHAT"], &rows)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// A temporary name beside `target`, in the same directory (so the rename is atomic), that
/// nothing else uses and that [`check_target`] recognises as an interrupted run's.
fn temporary(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().into_owned());
    let nonce: u64 = rand::random();
    target.with_file_name(format!(
        ".{name}{TMP_INFIX}{}-{nonce:x}",
        std::process::id()
    ))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    // Created with its final mode, so a key is never readable by others, not even briefly.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(path)?;
    file.write_all(data)?;
    set_mode(path, mode)?;
    file.sync_all()
}

/// Write `data` to a temporary file beside `path` and rename it over `path`: a reader (or a
/// re-run after `kill -9`) sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temporary(path);
    let result = write_new(&tmp, data, mode).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Set the exact mode (the umask may have narrowed it). Elsewhere than Unix the modes are
/// recorded in the archive and applied by install.sh on the VM.
#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// A directory only its owner can enter (0700 on Unix).
fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)?;
    set_mode(path, 0o700)
}

/// Write the bundle into `dir` (created 0700) and the archive, each file through a temporary
/// file renamed into place.
///
/// A directory that already holds this bundle's files, byte for byte (a script run twice, or a
/// run killed after it wrote them, even only some of them), is completed without `--force`;
/// one holding a different bundle needs `--force`, and then the previous bundle's files this
/// one lacks are removed and listed. Anything that is not a bundle file is never removed:
/// [`check_target`] refuses such a directory before anything is written. Likewise an existing
/// archive with other bytes needs `--force`.
pub fn write(
    bundle: &Bundle,
    dir: &Path,
    archive: Option<&Path>,
    force: bool,
) -> Result<Written, Error> {
    let existing = check_target(dir)?;
    let mut unchanged = Vec::new();
    let mut differ = Vec::new();
    let mut removed = Vec::new();
    for name in &existing.files {
        let path = dir.join(name);
        let new = bundle.files.iter().find(|f| &f.name == name);
        match new {
            Some(f) if fs::read(&path).map_err(io_err(&path))? == f.data => {
                unchanged.push(name.clone());
            }
            Some(_) => differ.push(format!("{name} differs")),
            None => {
                differ.push(format!("{name} is not in this bundle"));
                removed.push(Removed {
                    file: name.clone(),
                    why: "a previous bundle's file that this bundle does not have".into(),
                });
            }
        }
    }
    if !differ.is_empty() && !force {
        return Err(Error::OutputExists {
            path: dir.to_owned(),
            differ,
        });
    }
    removed.extend(existing.temporary.iter().map(|name| Removed {
        file: name.clone(),
        why: "temporary file of an interrupted run".into(),
    }));
    let top = top_folder(dir);
    let archive_plan = match archive {
        None => None,
        Some(path) => {
            check_archive(path)?;
            let bytes = archive_bytes(&bundle.files, &top).map_err(io_err(path))?;
            let same = match fs::read(path) {
                Ok(old) => {
                    if old != bytes && !force {
                        return Err(Error::ArchiveExists {
                            path: path.to_owned(),
                        });
                    }
                    old == bytes
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(source) => {
                    return Err(Error::Io {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
            Some((path, bytes, same))
        }
    };
    // The archive first, beside its target: if it cannot be written, the directory is untouched.
    let mut archive_tmp = None;
    if let Some((path, bytes, false)) = &archive_plan {
        if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        let tmp = temporary(path);
        write_new(&tmp, bytes, ARCHIVE_MODE).map_err(io_err(path))?;
        archive_tmp = Some(tmp);
    }
    let created = !existing.exists;
    let result = (|| -> Result<(), Error> {
        if created {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            create_private_dir(dir).map_err(io_err(dir))?;
        } else {
            set_mode(dir, 0o700).map_err(io_err(dir))?;
        }
        // SHA256SUMS first: until every file is in place, `sha256sum -c` (and install.sh) fails
        // on the missing ones instead of installing part of a bundle.
        let order = bundle
            .files
            .iter()
            .filter(|f| f.name == SHA256SUMS)
            .chain(bundle.files.iter().filter(|f| f.name != SHA256SUMS));
        for f in order {
            let path = dir.join(&f.name);
            if unchanged.contains(&f.name) {
                set_mode(&path, f.mode).map_err(io_err(&path))?;
            } else {
                write_atomic(&path, &f.data, f.mode).map_err(io_err(&path))?;
            }
        }
        for r in &removed {
            let path = dir.join(&r.file);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
        }
        if let (Some(tmp), Some((path, ..))) = (&archive_tmp, &archive_plan) {
            fs::rename(tmp, path).map_err(io_err(path))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(tmp) = archive_tmp {
            let _ = fs::remove_file(tmp);
        }
        if created {
            // Only this run's files are in a directory it created.
            let _ = fs::remove_dir_all(dir);
        }
        return Err(e);
    }
    Ok(Written {
        era: bundle.era,
        output_dir: dir.to_owned(),
        files: bundle.files.clone(),
        unchanged,
        removed,
        archive: archive_plan.map(|(path, bytes, same)| ArchiveInfo {
            path: path.to_owned(),
            folder: top,
            size: bytes.len(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            unchanged: same,
        }),
        service_cidr: bundle.service_cidr.clone(),
    })
}
