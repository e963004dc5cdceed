//! Writing a bundle: the directory (0700, swapped into place whole), the deterministic archive, `install.sh`, the summary.

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

/// Refuse an archive path that is a directory, or an existing file without `--force`.
pub fn check_archive(path: &Path, force: bool) -> Result<(), Error> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(Error::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "is a directory"),
        }),
        Ok(_) if !force => Err(Error::ArchiveExists {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Refuse a target that is a file, or a non-empty directory without `--force`.
pub fn check_target(dir: &Path, force: bool) -> Result<(), Error> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: dir.to_owned(),
            source,
        }),
        Ok(meta) if !meta.is_dir() => Err(Error::Io {
            path: dir.to_owned(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ),
        }),
        Ok(_) => {
            let empty = fs::read_dir(dir)
                .map_err(|source| Error::Io {
                    path: dir.to_owned(),
                    source,
                })?
                .next()
                .is_none();
            if empty || force {
                Ok(())
            } else {
                Err(Error::OutputExists {
                    path: dir.to_owned(),
                })
            }
        }
    }
}

/// The deterministic archive: entries in name order, mode from the bundle, mtime/uid/gid 0,
/// and a gzip header without time or name, so the same bundle gives the same bytes.
pub fn archive_bytes(files: &[BundleFile]) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    crate::archive::write_tar_gz(
        &mut bytes,
        files
            .iter()
            .map(|f| (f.name.as_str(), f.mode, f.data.as_slice())),
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
    /// The archive, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveInfo>,
    /// Legacy: `ISTIO_SERVICE_CIDR` and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<super::ServiceCidr>,
}

/// The archive written with `--archive`.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveInfo {
    /// Where.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: usize,
    /// Its SHA-256, hex.
    pub sha256: String,
}

impl Written {
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
                    f.what.clone(),
                ]
            })
            .collect();
        if let Some(a) = &self.archive {
            rows.push([
                a.path.display().to_string(),
                a.size.to_string(),
                format!("{ARCHIVE_MODE:04o}"),
                format!("archive of the bundle, sha256 {}", a.sha256),
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

/// A name beside `target` that nothing else uses.
fn sibling(target: &Path, tag: &str) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().into_owned());
    let nonce: u64 = rand::random();
    target.with_file_name(format!(
        ".{name}.meshvm-{tag}-{}-{nonce:x}",
        std::process::id()
    ))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
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

/// Write the bundle into a temporary directory beside `dir`, then swap it into place (and the
/// archive likewise). On error nothing is left: neither a half-filled directory nor archive.
pub fn write(
    bundle: &Bundle,
    dir: &Path,
    archive: Option<&Path>,
    force: bool,
) -> Result<Written, Error> {
    check_target(dir, force)?;
    if let Some(path) = archive {
        check_archive(path, force)?;
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let staging = sibling(dir, "new");
    create_private_dir(&staging).map_err(io_err(dir))?;
    let mut archive_tmp = None;
    let result = (|| -> Result<Option<ArchiveInfo>, Error> {
        for f in &bundle.files {
            write_file(&staging.join(&f.name), &f.data, f.mode)
                .map_err(io_err(&dir.join(&f.name)))?;
        }
        let info = match archive {
            None => None,
            Some(path) => {
                let bytes = archive_bytes(&bundle.files).map_err(io_err(path))?;
                if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(p).map_err(io_err(p))?;
                }
                let tmp = sibling(path, "new");
                archive_tmp = Some(tmp.clone());
                write_file(&tmp, &bytes, ARCHIVE_MODE).map_err(io_err(path))?;
                Some(ArchiveInfo {
                    path: path.to_owned(),
                    size: bytes.len(),
                    sha256: hex::encode(Sha256::digest(&bytes)),
                })
            }
        };
        swap_in(&staging, dir)?;
        if let (Some(tmp), Some(path)) = (&archive_tmp, archive) {
            fs::rename(tmp, path).map_err(io_err(path))?;
        }
        Ok(info)
    })();
    match result {
        Ok(archive) => Ok(Written {
            era: bundle.era,
            output_dir: dir.to_owned(),
            files: bundle.files.clone(),
            archive,
            service_cidr: bundle.service_cidr.clone(),
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            if let Some(tmp) = archive_tmp {
                let _ = fs::remove_file(tmp);
            }
            Err(e)
        }
    }
}

/// Put `staging` where `dir` is: an existing directory is moved aside first and removed last.
fn swap_in(staging: &Path, dir: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(dir).is_err() {
        return fs::rename(staging, dir).map_err(io_err(dir));
    }
    let old = sibling(dir, "old");
    fs::rename(dir, &old).map_err(io_err(dir))?;
    if let Err(source) = fs::rename(staging, dir) {
        let _ = fs::rename(&old, dir);
        return Err(Error::Io {
            path: dir.to_owned(),
            source,
        });
    }
    fs::remove_dir_all(&old).map_err(io_err(&old))
}
