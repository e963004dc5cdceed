//! Release archives are written by the same deterministic writer as VM bundles
//! (`meshvm::archive`); this adds the file-reading entry type the dist task uses.

use std::io::{self, Write};
use std::path::Path;

pub use meshvm::archive::sha256_hex;

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive (flat for plugin archives).
    pub name: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Content.
    pub data: Vec<u8>,
}

impl Entry {
    /// Read `path` from disk as an entry called `name`.
    pub fn from_file(name: &str, path: &Path, mode: u32) -> io::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            mode,
            data: std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        })
    }
}

/// Write `entries` as a deterministic gzip-compressed tar into `out`.
pub fn write_tar_gz(out: impl Write, entries: &[Entry]) -> io::Result<()> {
    meshvm::archive::write_tar_gz(
        out,
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.mode, e.data.as_slice())),
    )
}
