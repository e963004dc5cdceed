//! The VM bundle's layout, described once: each file's name, mode, whether it is a secret, which
//! era has it, whether a bundle is incomplete without it, and where `install.sh` puts it on the
//! VM. `bundle` writes from this table (modes, install.sh's file list) and `doctor --bundle`
//! judges from it (missing files, private files' modes), so the two cannot drift apart.

use crate::istio::Era;

/// One file of a VM bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmFile {
    /// The file's name inside the bundle.
    pub name: &'static str,
    /// Unix mode bits the bundle writes it with.
    pub mode: u32,
    /// A private key or a bearer token: 0600, never printed.
    pub secret: bool,
    /// The eras whose bundles hold it.
    pub eras: &'static [Era],
    /// A bundle of its era is incomplete without it (doctor fails it).
    pub required: bool,
    /// A credential: re-issued by `bundle --renew` and swapped by `install.sh --renew`; every
    /// other file of a bundle stays byte-identical across renewals.
    pub credential: bool,
    /// Where `install.sh` installs it on the VM (`None`: used in place, e.g. `hosts` is merged
    /// into /etc/hosts as a marked block).
    pub install_to: Option<&'static str>,
}

const BOTH: &[Era] = &[Era::Legacy, Era::Modern];
const LEGACY: &[Era] = &[Era::Legacy];
const MODERN: &[Era] = &[Era::Modern];

/// Every file a bundle may hold (Istio 1.4's VM files as the runbook copies them; modern ones as
/// `istioctl x workload entry configure` writes them), in install order.
pub const FILES: [VmFile; 10] = [
    VmFile {
        name: "root-cert.pem",
        mode: 0o644,
        secret: false,
        eras: BOTH,
        credential: true,
        required: true,
        install_to: Some("/etc/certs/root-cert.pem"),
    },
    VmFile {
        name: "cert-chain.pem",
        mode: 0o644,
        secret: false,
        eras: LEGACY,
        credential: true,
        required: true,
        install_to: Some("/etc/certs/cert-chain.pem"),
    },
    VmFile {
        name: "key.pem",
        mode: 0o600,
        secret: true,
        eras: LEGACY,
        credential: true,
        required: true,
        install_to: Some("/etc/certs/key.pem"),
    },
    VmFile {
        name: "istio-token",
        mode: 0o600,
        secret: true,
        eras: MODERN,
        credential: true,
        required: true,
        // Not /var/run/secrets/tokens, where pilot-agent reads it: that is a tmpfs a reboot
        // empties. install.sh copies it there, and its istio.service drop-in does before each
        // start (see install.sh, TOKEN_RUN).
        install_to: Some("/var/lib/istio/tokens/istio-token"),
    },
    VmFile {
        name: "cluster.env",
        mode: 0o644,
        secret: false,
        eras: BOTH,
        credential: false,
        required: true,
        install_to: Some("/var/lib/istio/envoy/cluster.env"),
    },
    VmFile {
        name: "mesh.yaml",
        mode: 0o644,
        secret: false,
        eras: MODERN,
        credential: false,
        required: true,
        install_to: Some("/etc/istio/config/mesh"),
    },
    VmFile {
        name: "hosts",
        mode: 0o644,
        secret: false,
        eras: BOTH,
        credential: false,
        required: true,
        install_to: None,
    },
    VmFile {
        name: "gwip.txt",
        mode: 0o644,
        secret: false,
        eras: LEGACY,
        credential: false,
        required: true,
        install_to: None,
    },
    VmFile {
        name: "install.sh",
        mode: 0o755,
        secret: false,
        eras: BOTH,
        credential: false,
        required: false,
        install_to: None,
    },
    VmFile {
        name: "SHA256SUMS",
        mode: 0o644,
        secret: false,
        eras: BOTH,
        credential: false,
        required: false,
        install_to: None,
    },
];

/// The file named `name`, if bundles have one.
pub fn get(name: &str) -> Option<&'static VmFile> {
    FILES.iter().find(|f| f.name == name)
}

/// The mode a bundle writes `name` with.
///
/// # Panics
/// When `name` is not in [`FILES`] (a programming error: every file a bundle writes is there).
pub fn mode(name: &str) -> u32 {
    get(name)
        .unwrap_or_else(|| panic!("{name} is not a bundle file"))
        .mode
}

/// The files an era's bundle holds.
pub fn of(era: Era) -> impl Iterator<Item = &'static VmFile> {
    FILES.iter().filter(move |f| f.eras.contains(&era))
}

/// The credentials of an era's bundle: what `bundle --renew` re-issues.
pub fn credentials(era: Era) -> impl Iterator<Item = &'static VmFile> {
    of(era).filter(|f| f.credential)
}

/// The files an era's bundle is incomplete without.
pub fn required(era: Era) -> impl Iterator<Item = &'static VmFile> {
    of(era).filter(|f| f.required)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_everything_else_is_readable() {
        for f in FILES {
            if f.secret {
                assert_eq!(f.mode, 0o600, "{}", f.name);
            } else {
                assert_eq!(f.mode & 0o044, 0o044, "{}", f.name);
            }
        }
    }

    #[test]
    fn credentials_are_the_identity_files() {
        let names = |era| credentials(era).map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(Era::Legacy),
            ["root-cert.pem", "cert-chain.pem", "key.pem"]
        );
        assert_eq!(names(Era::Modern), ["root-cert.pem", "istio-token"]);
        for f in FILES {
            assert!(!f.credential || f.install_to.is_some(), "{}", f.name);
        }
    }

    #[test]
    fn each_era_has_its_identity() {
        let names = |era| required(era).map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(Era::Legacy),
            [
                "root-cert.pem",
                "cert-chain.pem",
                "key.pem",
                "cluster.env",
                "hosts",
                "gwip.txt"
            ]
        );
        assert_eq!(
            names(Era::Modern),
            [
                "root-cert.pem",
                "istio-token",
                "cluster.env",
                "mesh.yaml",
                "hosts"
            ]
        );
    }
}
