//! Deterministic `.tar.gz` archives: sorted entries, mtime 0, uid/gid 0, explicit modes, a gzip
//! header without a timestamp — the same bytes for the same files on every run.

use std::io::{self, Write};
use std::path::Path;

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
pub fn write_tar_gz(out: impl Write, mut entries: Vec<Entry>) -> io::Result<()> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for e in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(e.data.len() as u64);
        header.set_mode(e.mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("")?;
        header.set_groupname("")?;
        tar.append_data(&mut header, &e.name, e.data.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                name: "b".into(),
                mode: 0o755,
                data: b"binary".to_vec(),
            },
            Entry {
                name: "LICENSE".into(),
                mode: 0o644,
                data: b"text".to_vec(),
            },
        ]
    }

    #[test]
    fn same_bytes_every_time_and_sorted() {
        let mut one = Vec::new();
        write_tar_gz(&mut one, entries()).unwrap();
        let mut reversed = entries();
        reversed.reverse();
        let mut two = Vec::new();
        write_tar_gz(&mut two, reversed).unwrap();
        assert_eq!(one, two);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(one.as_slice()));
        let names: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("LICENSE".into(), 0o644, 0), ("b".into(), 0o755, 0)]
        );
    }
}
