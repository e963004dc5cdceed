//! `bundle.files`: the VM bundle holds what its era needs, with private keys kept private.

use super::or_pass;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::snapshot::Snapshot;
use crate::vmfiles;

// The files each era needs and which are private come from the one bundle layout the bundle
// verb writes from (crate::vmfiles).

/// Fails when a file the bundle's era needs is missing or empty, when the bundle's era is not
/// the cluster's, or when a key or token is readable by group or others.
pub struct BundleFiles;

const ID: &str = "bundle.files";

impl Check for BundleFiles {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a file the era needs is missing, or a key/token is readable by others"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let Some(bundle) = &snap.bundle else {
            return vec![Finding::skip(ID, "no --bundle given")];
        };
        let object = format!("Bundle {}", bundle.path.display());
        let Some(era) = bundle.era().or(ctx.era) else {
            return vec![
                Finding::fail(ID, "cannot tell the bundle's era: it has neither key.pem/cert-chain.pem (legacy) nor istio-token/mesh.yaml (modern)")
                    .object(object)
                    .hint(format!("re-create the bundle: {}", super::rebundle_command(bundle))),
            ];
        };
        let mut out = Vec::new();
        if let (Some(b), Some(c)) = (bundle.era(), snap.era())
            && b != c
        {
            out.push(
                Finding::fail(
                    ID,
                    format!("the bundle is for a {b} mesh but the cluster is {c}"),
                )
                .object(object.clone())
                .hint(format!(
                    "re-create the bundle: {}",
                    super::rebundle_command(bundle)
                )),
            );
        }
        let needed: Vec<&str> = vmfiles::required(era).map(|f| f.name).collect();
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|f| bundle.file(f).is_none())
            .collect();
        if !missing.is_empty() {
            out.push(
                Finding::fail(ID, format!("{era} bundle lacks {}", missing.join(", ")))
                    .object(object.clone())
                    .hint(format!(
                        "re-create the bundle: {}",
                        super::rebundle_command(bundle)
                    )),
            );
        }
        let empty: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|f| {
                bundle
                    .file(f)
                    .is_some_and(|b| b.data.iter().all(u8::is_ascii_whitespace))
            })
            .collect();
        if !empty.is_empty() {
            out.push(
                Finding::fail(
                    ID,
                    format!(
                        "{} {} empty",
                        empty.join(", "),
                        if empty.len() == 1 { "is" } else { "are" }
                    ),
                )
                .object(object.clone())
                .hint(format!(
                    "re-create the bundle: {}",
                    super::rebundle_command(bundle)
                )),
            );
        }
        for name in vmfiles::FILES.iter().filter(|f| f.secret).map(|f| f.name) {
            if let Some(file) = bundle.file(name)
                && file.mode & 0o077 != 0
            {
                out.push(
                    Finding::fail(
                        ID,
                        format!(
                            "{name} has mode {:04o}: readable by group or others",
                            file.mode
                        ),
                    )
                    .object(object.clone())
                    .hint(format!(
                        "chmod 600 {name} (and keep it owned by istio-proxy on the VM)"
                    )),
                );
            }
        }
        or_pass(ID, out, format!("{era} bundle has {}", needed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{Fixture, expect};

    const LEGACY: [(&str, &[u8], u32); 6] = [
        ("root-cert.pem", b"r", 0o644),
        ("cert-chain.pem", b"c", 0o644),
        ("key.pem", b"k", 0o600),
        ("cluster.env", b"A=b", 0o644),
        ("hosts", b"1.2.3.4 istio-pilot", 0o644),
        ("gwip.txt", b"1.2.3.4", 0o644),
    ];

    #[test]
    fn table() {
        type Files = Vec<(&'static str, &'static [u8], u32)>;
        let with = |f: &dyn Fn(&mut Files)| {
            let mut files = LEGACY.to_vec();
            f(&mut files);
            Fixture::legacy().bundle(&files)
        };
        let cases = [
            ("complete legacy bundle", with(&|_| {}), Pass),
            ("key readable by others", with(&|f| f[2].2 = 0o644), Fail),
            (
                "hosts missing",
                with(&|f| {
                    f.remove(4);
                }),
                Fail,
            ),
            ("empty chain", with(&|f| f[1].1 = b"\n"), Fail),
            (
                "legacy bundle on a modern cluster",
                Fixture::modern().bundle(&LEGACY),
                Fail,
            ),
            (
                "modern bundle",
                Fixture::modern().bundle(&[
                    ("cluster.env", b"A=b", 0o644),
                    ("mesh.yaml", b"x: y", 0o644),
                    ("root-cert.pem", b"r", 0o644),
                    ("istio-token", b"t", 0o600),
                    ("hosts", b"h", 0o644),
                ]),
                Pass,
            ),
            (
                "unknown era",
                Fixture::empty().bundle(&[("cluster.env", b"A=b", 0o644)]),
                Fail,
            ),
            ("no bundle", Fixture::legacy(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&BundleFiles), severity, case);
        }
    }
}
