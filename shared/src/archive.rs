//! Deterministic `.tar.gz`: sorted entries, mtime 0, uid/gid 0, explicit modes, a gzip header
//! without a timestamp — the same bytes for the same files on every run. Used for VM bundles
//! and for the krew release archives.

use std::io::{self, Write};

/// Write `entries` — `(name, mode, content)` — as a deterministic gzip-compressed tar into `out`.
/// A name ending in `/` is a directory entry (its content is ignored), so an archive can carry
/// its top folder's mode; it sorts before the files under it.
pub fn write_tar_gz<'a>(
    out: impl Write,
    entries: impl IntoIterator<Item = (&'a str, u32, &'a [u8])>,
) -> io::Result<()> {
    let mut sorted: Vec<(&str, u32, &[u8])> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, mode, data) in sorted {
        let mut header = tar::Header::new_gnu();
        let dir = name.ends_with('/');
        let data: &[u8] = if dir { &[] } else { data };
        header.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        tar.append_data(&mut header, name, data)?;
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

    #[test]
    fn same_bytes_whatever_the_order_and_sorted_inside() {
        let mut one = Vec::new();
        write_tar_gz(
            &mut one,
            [("b", 0o755, &b"binary"[..]), ("LICENSE", 0o644, b"text")],
        )
        .unwrap();
        let mut two = Vec::new();
        write_tar_gz(
            &mut two,
            [("LICENSE", 0o644, &b"text"[..]), ("b", 0o755, b"binary")],
        )
        .unwrap();
        assert_eq!(one, two);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(one.as_slice()));
        let entries: Vec<(String, u32, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [("LICENSE".into(), 0o644, 0, 0), ("b".into(), 0o755, 0, 0)]
        );
        // The gzip header carries no timestamp (bytes 4..8).
        assert_eq!(&one[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn a_name_ending_in_a_slash_is_a_directory_with_its_mode() {
        let mut bytes = Vec::new();
        write_tar_gz(
            &mut bytes,
            [("top/f", 0o600, &b"x"[..]), ("top/", 0o700, b"ignored")],
        )
        .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let entries: Vec<(String, tar::EntryType, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("top/".into(), tar::EntryType::Directory, 0o700, 0),
                ("top/f".into(), tar::EntryType::Regular, 0o600, 1)
            ]
        );
    }
}
