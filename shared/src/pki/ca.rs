//! Judging a plugged-in CA: the four `cacerts` files, in both layouts Istio accepts.
//!
//! Layouts (DESIGN.md "cacerts"): Istio's samples are a root plus one signing CA, with
//! `cert-chain.pem` = `ca-cert.pem` (optionally followed by the root); a flat CA has
//! `ca-cert.pem` = `root-cert.pem`, and `cert-chain.pem` holds that same certificate.

use std::time::{Duration, SystemTime};

use super::cert::{Cert, Link, link};
use super::{
    CaMaterial, CertFinding, CertFindingKind, Expect, Findings, cert_blocks, check_key_matches,
    check_validity, load_key, parse_certs,
};

/// Judge a plugged-in CA at `now`; certificates expiring within `warn_within` earn a warning.
///
/// Checks: every file holds PEM of the right type and count; `ca-key.pem` matches `ca-cert.pem`;
/// `ca-cert.pem` is a CA that may sign certificates; every root is a self-signed CA; `cert-chain.pem`
/// starts with `ca-cert.pem`, each certificate is followed by its issuer and the top is (or is signed
/// by) a root in `root-cert.pem`, with every signature verified; pathLenConstraints allow the chain;
/// every certificate is within its validity period. Pure: no IO.
pub fn check_ca(m: &CaMaterial, now: SystemTime, warn_within: Duration) -> Vec<CertFinding> {
    let mut out = Findings::default();
    let ca_blocks = cert_blocks(
        &m.ca_cert,
        Expect::One("the certificate of the CA that signs workload certificates"),
        &mut out,
    );
    let key = load_key(&m.ca_key, &mut out);
    let root_blocks = cert_blocks(&m.root_cert, Expect::AtLeastOne, &mut out);
    let chain_blocks = cert_blocks(&m.cert_chain, Expect::AtLeastOne, &mut out);

    let ca = ca_blocks
        .as_deref()
        .and_then(|b| parse_certs(&m.ca_cert, b, &mut out));
    let roots = root_blocks
        .as_deref()
        .and_then(|b| parse_certs(&m.root_cert, b, &mut out));
    let chain = chain_blocks
        .as_deref()
        .and_then(|b| parse_certs(&m.cert_chain, b, &mut out));
    let ca = ca.as_ref().and_then(|v| v.first());

    if let (Some(key), Some(ca)) = (&key, ca) {
        check_key_matches(key.as_ref(), m.ca_key.name(), ca, &mut out);
    }
    if let Some(ca) = ca {
        check_is_ca(ca, &mut out);
    }
    for root in roots.iter().flatten() {
        check_root(root, &mut out);
    }
    if let (Some(ca), Some(chain)) = (ca, &chain) {
        check_chain(m, ca, chain, roots.as_deref(), &mut out);
    }

    let all: Vec<&Cert<'_>> = ca
        .into_iter()
        .chain(chain.iter().flatten())
        .chain(roots.iter().flatten())
        .collect();
    check_validity(&all, now, warn_within, &mut out);
    out.into_vec()
}

/// "certificate 2 of 3 (CN=…)" or "the certificate (CN=…)".
fn describe(c: &Cert<'_>) -> String {
    if c.of > 1 {
        format!("certificate {} of {} ({})", c.pos, c.of, c.subject())
    } else {
        format!("the certificate ({})", c.subject())
    }
}

fn check_is_ca(c: &Cert<'_>, out: &mut Findings) {
    let which = c.which();
    if !c.is_ca() {
        out.error(
            c.file,
            CertFindingKind::NotCa,
            format!(
                "{which}is not a CA certificate (basicConstraints CA:TRUE is missing), so it cannot sign certificates"
            ),
        );
    } else if !c.may_sign_certs() {
        out.error(
            c.file,
            CertFindingKind::NotCa,
            format!("{which}has a keyUsage without keyCertSign, so it may not sign certificates"),
        );
    }
}

fn check_root(root: &Cert<'_>, out: &mut Findings) {
    let which = root.which();
    if root.self_issued() {
        match link(root, root) {
            Link::Verified | Link::OtherIssuer => {}
            Link::Unsupported => out.warn(
                root.file,
                CertFindingKind::NotSelfSigned,
                format!("{which}is signed with an algorithm or key size this tool cannot check (RSA keys need at least 2048 bits)"),
            ),
            Link::BadSignature => out.error(
                root.file,
                CertFindingKind::NotSelfSigned,
                format!(
                    "{which}names itself as its issuer, but its signature does not verify with its own key"
                ),
            ),
        }
    } else {
        out.error(
            root.file,
            CertFindingKind::NotSelfSigned,
            format!(
                "{which}is not self-signed: it was issued by {}; this file must hold the root CA, the top of the chain",
                root.issuer()
            ),
        );
    }
    check_is_ca(root, out);
}

fn check_chain(
    m: &CaMaterial,
    ca: &Cert<'_>,
    chain: &[Cert<'_>],
    roots: Option<&[Cert<'_>]>,
    out: &mut Findings,
) {
    let chain_file = m.cert_chain.name();
    let ca_file = m.ca_cert.name();
    let first = &chain[0];
    if first.der != ca.der {
        if let Some(pos) = chain.iter().position(|c| c.der == ca.der) {
            out.error(
                chain_file,
                CertFindingKind::ChainOrder,
                format!(
                    "is in the wrong order: the certificate of {ca_file} is number {} of {}, but it must come first, each certificate followed by its issuer, up to the root",
                    pos + 1,
                    chain.len()
                ),
            );
        } else {
            out.error(
                chain_file,
                CertFindingKind::ChainStart,
                format!(
                    "does not start with the certificate in {ca_file}: it starts with {}, but {ca_file} holds {}; it must be {ca_file} followed by its issuers",
                    first.subject(),
                    ca.subject()
                ),
            );
        }
        return;
    }

    for (i, pair) in chain.windows(2).enumerate() {
        let (child, next) = (&pair[0], &pair[1]);
        match link(child, next) {
            Link::Verified => {}
            Link::Unsupported => out.warn(
                chain_file,
                CertFindingKind::ChainBroken,
                format!(
                    "{} is signed with an algorithm or key size this tool cannot check (RSA keys need at least 2048 bits); its link to the next certificate was not verified",
                    describe(child)
                ),
            ),
            Link::BadSignature => {
                out.error(
                    chain_file,
                    CertFindingKind::ChainBroken,
                    format!(
                        "{} names the next certificate ({}) as its issuer, but its signature does not verify with that certificate's key: a different CA with the same name signed it",
                        describe(child),
                        next.subject()
                    ),
                );
                return;
            }
            Link::OtherIssuer => {
                let issuer_at = chain
                    .iter()
                    .enumerate()
                    .find(|(j, c)| *j != i + 1 && *j != i && link(child, c) == Link::Verified);
                let problem = match issuer_at {
                    Some((j, issuer)) => format!(
                        "is in the wrong order: {} is followed by {}, but its issuer is certificate {} ({}); list each certificate followed by its issuer, up to the root",
                        describe(child),
                        next.subject(),
                        j + 1,
                        issuer.subject()
                    ),
                    None => format!(
                        "{} is followed by {}, which did not issue it (its issuer is {})",
                        describe(child),
                        next.subject(),
                        child.issuer()
                    ),
                };
                let kind = if issuer_at.is_some() {
                    CertFindingKind::ChainOrder
                } else {
                    CertFindingKind::ChainBroken
                };
                out.error(chain_file, kind, problem);
                return;
            }
        }
    }

    let Some(roots) = roots else {
        // root-cert.pem itself is broken and already reported.
        return;
    };
    let root_file = m.root_cert.name();
    let root_list = roots
        .iter()
        .map(|r| format!("{} (SHA-256 {})", r.subject(), r.fingerprint()))
        .collect::<Vec<_>>()
        .join(", ");
    let last = chain.last().expect("cert-chain.pem holds a certificate");
    let mut path: Vec<&Cert<'_>> = chain.iter().collect();
    if last.self_issued() && link(last, last) == Link::Verified {
        // The chain carries its root: it must be one root-cert.pem holds (same name and key).
        let known = roots.iter().any(|r| {
            r.der == last.der
                || (r.x.subject().as_raw() == last.x.subject().as_raw()
                    && r.x.public_key().raw == last.x.public_key().raw)
        });
        if !known {
            out.error(
                chain_file,
                CertFindingKind::ChainBroken,
                format!(
                    "ends at the root {} (SHA-256 {}), which is not in {root_file} (it holds {root_list}); workloads would not trust certificates this CA signs",
                    last.subject(),
                    last.fingerprint()
                ),
            );
            return;
        }
    } else {
        let links: Vec<(Link, &Cert<'_>)> = roots.iter().map(|r| (link(last, r), r)).collect();
        if let Some((_, root)) = links.iter().find(|(l, _)| *l == Link::Verified) {
            path.push(root);
        } else if links.iter().any(|(l, _)| *l == Link::Unsupported) {
            out.warn(
                chain_file,
                CertFindingKind::ChainBroken,
                format!(
                    "{} is signed with an algorithm or key size this tool cannot check (RSA keys need at least 2048 bits); its link to {root_file} was not verified",
                    describe(last)
                ),
            );
            return;
        } else if links.iter().any(|(l, _)| *l == Link::BadSignature) {
            out.error(
                chain_file,
                CertFindingKind::ChainBroken,
                format!(
                    "{} names {} as its issuer, and {root_file} holds a root of that name, but the signature does not verify with that root's key: the root was replaced or regenerated",
                    describe(last),
                    last.issuer()
                ),
            );
            return;
        } else {
            out.error(
                chain_file,
                CertFindingKind::ChainBroken,
                format!(
                    "does not chain to {root_file}: {} was issued by {}, but {root_file} holds {root_list}",
                    describe(last),
                    last.issuer()
                ),
            );
            return;
        }
    }
    check_path_len(&path, out);
}

/// A CA at position k of the path (0 = ca-cert) has k CA certificates below it, and ca-cert
/// itself will sign leaves: each pathLenConstraint must allow that (RFC 5280 4.2.1.9).
fn check_path_len(path: &[&Cert<'_>], out: &mut Findings) {
    for (k, c) in path.iter().enumerate() {
        let below = path[..k].iter().filter(|b| !b.self_issued()).count();
        if let Some(limit) = c.path_len()
            && (limit as usize) < below
        {
            out.error(
                c.file,
                CertFindingKind::PathLength,
                format!(
                    "{}has pathLenConstraint {limit}, but {below} CA certificate(s) sit below it in the chain: workloads would reject the certificates this CA signs",
                    c.which()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{CaPaths, CertFindingKind, CertSeverity, DEFAULT_WARN_WITHIN, has_errors};
    use super::*;

    fn check(m: &CaMaterial) -> Vec<CertFinding> {
        check_ca(m, now(), DEFAULT_WARN_WITHIN)
    }

    /// Root + signing CA, Istio-style: cert-chain = ca-cert.
    fn two_level(root_key: KeyKind, ca_key: KeyKind) -> (TestCa, TestCa) {
        let root = Spec::ca("Test Root", root_key).self_signed();
        let ca = Spec::ca("Test Signing CA", ca_key).signed_by(&root);
        (root, ca)
    }

    /// CertSeverity, kind and file of each expected finding, in order.
    type Want<'a> = Vec<(CertSeverity, CertFindingKind, &'a str)>;

    fn kinds(findings: &[CertFinding]) -> Want<'_> {
        findings
            .iter()
            .map(|f| (f.severity, f.kind, f.file.as_str()))
            .collect()
    }

    #[test]
    fn istio_samples_are_valid() {
        let m = CaPaths::from_dir(samples_dir()).read().unwrap();
        let findings = check(&m);
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn istio_samples_with_the_root_appended_to_the_chain_are_valid() {
        let chain = format!("{}{}", sample("cert-chain.pem"), sample("root-cert.pem"));
        let m = ca_material(
            &sample("ca-cert.pem"),
            &sample("ca-key.pem"),
            &sample("root-cert.pem"),
            &chain,
        );
        assert_eq!(check(&m), vec![]);
    }

    #[test]
    fn valid_layouts_and_key_types() {
        let cases: Vec<(&str, CaMaterial)> = vec![
            ("flat P-256", {
                let ca = TestCa::flat(KeyKind::P256, "Flat");
                ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &ca.cert_pem)
            }),
            ("flat P-384", {
                let ca = TestCa::flat(KeyKind::P384, "Flat 384");
                ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &ca.cert_pem)
            }),
            ("flat Ed25519", {
                let ca = TestCa::flat(KeyKind::Ed25519, "Flat Ed");
                ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &ca.cert_pem)
            }),
            ("flat RSA, PKCS#1 key", {
                let ca = TestCa::flat(KeyKind::IstioRsa, "Flat RSA");
                ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &ca.cert_pem)
            }),
            ("flat P-256, SEC1 key", {
                let ca = TestCa::flat(KeyKind::P256, "Flat SEC1");
                let sec1 = pkcs8_to_sec1_pem(&ca.key_pem);
                ca_material(&ca.cert_pem, &sec1, &ca.cert_pem, &ca.cert_pem)
            }),
            ("two levels, P-384 root, RSA signing CA", {
                let (root, ca) = two_level(KeyKind::P384, KeyKind::IstioRsa);
                ca_material(&ca.cert_pem, &ca.key_pem, &root.cert_pem, &ca.cert_pem)
            }),
            ("two levels, chain includes the root", {
                let (root, ca) = two_level(KeyKind::P256, KeyKind::P256);
                let chain = format!("{}{}", ca.cert_pem, root.cert_pem);
                ca_material(&ca.cert_pem, &ca.key_pem, &root.cert_pem, &chain)
            }),
            ("three levels", {
                let (root, mid) = two_level(KeyKind::P256, KeyKind::P256);
                let ca = Spec::ca("Leaf CA", KeyKind::P256)
                    .path_len(0)
                    .signed_by(&mid);
                let chain = format!("{}{}", ca.cert_pem, mid.cert_pem);
                ca_material(&ca.cert_pem, &ca.key_pem, &root.cert_pem, &chain)
            }),
            ("root bundle during a rotation", {
                let (root, ca) = two_level(KeyKind::P256, KeyKind::P256);
                let other = TestCa::flat(KeyKind::P256, "Next Root");
                let roots = format!("{}{}", other.cert_pem, root.cert_pem);
                ca_material(&ca.cert_pem, &ca.key_pem, &roots, &ca.cert_pem)
            }),
        ];
        for (name, m) in cases {
            let findings = check(&m);
            assert!(findings.is_empty(), "{name}: {findings:#?}");
        }
    }

    #[test]
    fn key_mismatch_is_reported_on_the_key_file() {
        let (root, ca) = two_level(KeyKind::P256, KeyKind::P256);
        let other = TestCa::flat(KeyKind::P256, "Other");
        let rsa = TestCa::flat(KeyKind::IstioRsa, "RSA");
        let same_type = ca_material(&ca.cert_pem, &other.key_pem, &root.cert_pem, &ca.cert_pem);
        let findings = check(&same_type);
        assert_eq!(
            kinds(&findings),
            vec![(
                CertSeverity::Error,
                CertFindingKind::KeyMismatch,
                "ca-key.pem"
            )]
        );
        assert!(
            findings[0]
                .problem
                .contains("it is the key of another certificate"),
            "{findings:#?}"
        );

        let other_type = ca_material(&ca.cert_pem, &rsa.key_pem, &root.cert_pem, &ca.cert_pem);
        let findings = check(&other_type);
        assert_eq!(
            findings[0].to_string(),
            "ca-key.pem: does not match the certificate in ca-cert.pem: the key is RSA 2048-bit, the certificate's key is ECDSA P-256"
        );
    }

    #[test]
    fn validity_problems_are_errors_or_warnings_for_every_certificate() {
        let day = days(1);
        let cases = [
            (
                "expired signing CA",
                (now() - days(400), now() - days(5)),
                CertSeverity::Error,
                CertFindingKind::Expired,
                "expired on 2025-12-27T00:00:00Z (5 days ago)",
            ),
            (
                "not yet valid",
                (now() + days(3), now() + days(400)),
                CertSeverity::Error,
                CertFindingKind::NotYetValid,
                "is not valid until 2026-01-04T00:00:00Z (3 days from now)",
            ),
            (
                "expires in 10 days",
                (now() - day, now() + days(10)),
                CertSeverity::Warning,
                CertFindingKind::ExpiresSoon,
                "expires on 2026-01-11T00:00:00Z (in 10 days)",
            ),
        ];
        for (name, (nb, na), severity, kind, text) in cases {
            // The signing CA carries the problem; it appears in ca-cert.pem and cert-chain.pem
            // but is reported once, on the first file.
            let root = Spec::ca("Root", KeyKind::P256).self_signed();
            let ca = Spec::ca("CA", KeyKind::P256).valid(nb, na).signed_by(&root);
            let m = ca_material(&ca.cert_pem, &ca.key_pem, &root.cert_pem, &ca.cert_pem);
            let findings = check(&m);
            assert_eq!(
                kinds(&findings),
                vec![(severity, kind, "ca-cert.pem")],
                "{name}"
            );
            assert!(findings[0].problem.contains(text), "{name}: {findings:#?}");
            assert_eq!(has_errors(&findings), severity == CertSeverity::Error);

            // A root with the same problem is reported on root-cert.pem.
            let root = Spec::ca("Root", KeyKind::P256).valid(nb, na).self_signed();
            let ca = Spec::ca("CA", KeyKind::P256).signed_by(&root);
            let m = ca_material(&ca.cert_pem, &ca.key_pem, &root.cert_pem, &ca.cert_pem);
            let findings = check(&m);
            assert_eq!(
                kinds(&findings),
                vec![(severity, kind, "root-cert.pem")],
                "{name}"
            );
        }
    }

    #[test]
    fn the_warning_window_is_a_parameter() {
        let root = Spec::ca("Root", KeyKind::P256)
            .valid(now() - days(1), now() + days(10))
            .self_signed();
        let m = ca_material(
            &root.cert_pem,
            &root.key_pem,
            &root.cert_pem,
            &root.cert_pem,
        );
        assert!(check_ca(&m, now(), days(7)).is_empty());
        assert_eq!(check_ca(&m, now(), days(11)).len(), 1);
    }

    #[test]
    fn structural_problems() {
        let (root, ca) = two_level(KeyKind::P256, KeyKind::P256);
        let other_root = Spec::ca("Test Root", KeyKind::P256).self_signed(); // same name, other key
        let stranger = TestCa::flat(KeyKind::P256, "Stranger Root");
        let not_ca = Spec::ca("Not A CA", KeyKind::P256)
            .not_ca()
            .signed_by(&root);
        let leaf_root = Spec::ca("Leaf Root", KeyKind::P256).not_ca().self_signed();
        let by_other = Spec::ca("Test Signing CA", KeyKind::P256).signed_by(&stranger);
        let mid = Spec::ca("Mid", KeyKind::P256).signed_by(&root);
        let low = Spec::ca("Low", KeyKind::P256).signed_by(&mid);
        let constrained_root = Spec::ca("Tight Root", KeyKind::P256)
            .path_len(0)
            .self_signed();
        let under_tight_mid = Spec::ca("Mid2", KeyKind::P256).signed_by(&constrained_root);
        let under_tight = Spec::ca("Low2", KeyKind::P256).signed_by(&under_tight_mid);

        let cases: Vec<(&str, CaMaterial, Want<'_>, &str)> = vec![
            (
                "signing cert is not a CA",
                ca_material(
                    &not_ca.cert_pem,
                    &not_ca.key_pem,
                    &root.cert_pem,
                    &not_ca.cert_pem,
                ),
                vec![(CertSeverity::Error, CertFindingKind::NotCa, "ca-cert.pem")],
                "is not a CA certificate (basicConstraints CA:TRUE is missing)",
            ),
            (
                "root is not a CA",
                ca_material(
                    &leaf_root.cert_pem,
                    &leaf_root.key_pem,
                    &leaf_root.cert_pem,
                    &leaf_root.cert_pem,
                ),
                vec![
                    (CertSeverity::Error, CertFindingKind::NotCa, "ca-cert.pem"),
                    (CertSeverity::Error, CertFindingKind::NotCa, "root-cert.pem"),
                ],
                "is not a CA certificate",
            ),
            (
                "root-cert.pem holds the signing CA, not a root",
                ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &ca.cert_pem),
                vec![
                    (
                        CertSeverity::Error,
                        CertFindingKind::NotSelfSigned,
                        "root-cert.pem",
                    ),
                    (
                        CertSeverity::Error,
                        CertFindingKind::ChainBroken,
                        "cert-chain.pem",
                    ),
                ],
                "is not self-signed: it was issued by CN=Test Root,O=meshvm test",
            ),
            (
                "signed by another root",
                ca_material(
                    &by_other.cert_pem,
                    &by_other.key_pem,
                    &root.cert_pem,
                    &by_other.cert_pem,
                ),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem",
                )],
                "does not chain to root-cert.pem: the certificate (CN=Test Signing CA,O=meshvm test) was issued by CN=Stranger Root,O=meshvm test",
            ),
            (
                "root regenerated under the same name",
                ca_material(
                    &ca.cert_pem,
                    &ca.key_pem,
                    &other_root.cert_pem,
                    &ca.cert_pem,
                ),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem",
                )],
                "the root was replaced or regenerated",
            ),
            (
                "chain ends at a root that root-cert.pem lacks",
                ca_material(
                    &ca.cert_pem,
                    &ca.key_pem,
                    &stranger.cert_pem,
                    &format!("{}{}", ca.cert_pem, root.cert_pem),
                ),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem",
                )],
                "which is not in root-cert.pem",
            ),
            (
                "chain in the wrong order (root first)",
                ca_material(
                    &ca.cert_pem,
                    &ca.key_pem,
                    &root.cert_pem,
                    &format!("{}{}", root.cert_pem, ca.cert_pem),
                ),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainOrder,
                    "cert-chain.pem",
                )],
                "is in the wrong order: the certificate of ca-cert.pem is number 2 of 2",
            ),
            (
                "chain in the wrong order (intermediates swapped)",
                ca_material(
                    &low.cert_pem,
                    &low.key_pem,
                    &root.cert_pem,
                    &format!("{}{}{}", low.cert_pem, root.cert_pem, mid.cert_pem),
                ),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainOrder,
                    "cert-chain.pem",
                )],
                "but its issuer is certificate 3 (CN=Mid,O=meshvm test)",
            ),
            (
                "chain is missing an intermediate",
                ca_material(&low.cert_pem, &low.key_pem, &root.cert_pem, &low.cert_pem),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem",
                )],
                "was issued by CN=Mid,O=meshvm test",
            ),
            (
                "chain starts elsewhere",
                ca_material(&ca.cert_pem, &ca.key_pem, &root.cert_pem, &mid.cert_pem),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainStart,
                    "cert-chain.pem",
                )],
                "does not start with the certificate in ca-cert.pem",
            ),
            (
                "pathLenConstraint too tight",
                ca_material(
                    &under_tight.cert_pem,
                    &under_tight.key_pem,
                    &constrained_root.cert_pem,
                    &format!("{}{}", under_tight.cert_pem, under_tight_mid.cert_pem),
                ),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::PathLength,
                    "root-cert.pem",
                )],
                "has pathLenConstraint 0, but 2 CA certificate(s) sit below it",
            ),
        ];
        for (name, m, want, text) in cases {
            let findings = check(&m);
            assert_eq!(kinds(&findings), want, "{name}: {findings:#?}");
            assert!(
                findings.iter().any(|f| f.problem.contains(text)),
                "{name}: {findings:#?}"
            );
        }
    }

    #[test]
    fn content_problems_name_the_file() {
        let ca = TestCa::flat(KeyKind::P256, "Flat");
        let c = ca.cert_pem.as_str();
        let k = ca.key_pem.as_str();
        let two = format!("{c}{c}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAQID\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n";
        let bad_cert = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let der = String::from_utf8_lossy(&ca.der).into_owned();
        let cases: Vec<(&str, CaMaterial, CertFindingKind, &str, &str)> = vec![
            (
                "empty key",
                ca_material(c, "", c, c),
                CertFindingKind::Empty,
                "ca-key.pem",
                "ca-key.pem: is empty",
            ),
            (
                "blank root",
                ca_material(c, k, " \n\n", c),
                CertFindingKind::Empty,
                "root-cert.pem",
                "is empty",
            ),
            (
                "garbage",
                ca_material(c, k, c, "hello world\n"),
                CertFindingKind::NotPem,
                "cert-chain.pem",
                "is not PEM: it has no -----BEGIN line",
            ),
            (
                "DER",
                ca_material(&der, k, c, c),
                CertFindingKind::NotPem,
                "ca-cert.pem",
                "it looks like binary DER",
            ),
            (
                "truncated",
                ca_material(&c[..c.len() - 30], k, c, c),
                CertFindingKind::NotPem,
                "ca-cert.pem",
                "has no END line",
            ),
            (
                "key where the cert belongs",
                ca_material(k, k, c, c),
                CertFindingKind::WrongType,
                "ca-cert.pem",
                "holds a private key (PRIVATE KEY at line 1) where only certificates belong",
            ),
            (
                "cert where the key belongs",
                ca_material(c, c, c, c),
                CertFindingKind::WrongType,
                "ca-key.pem",
                "holds a certificate (line 1) where only the private key belongs; were the certificate and key files swapped?",
            ),
            (
                "public key where the key belongs",
                ca_material(c, public, c, c),
                CertFindingKind::WrongType,
                "ca-key.pem",
                "holds a PUBLIC KEY block (line 1), not a private key",
            ),
            (
                "encrypted key",
                ca_material(c, encrypted, c, c),
                CertFindingKind::Encrypted,
                "ca-key.pem",
                "encrypted private key",
            ),
            (
                "two keys",
                ca_material(c, &format!("{k}{k}"), c, c),
                CertFindingKind::TooMany,
                "ca-key.pem",
                "holds 2 private keys",
            ),
            (
                "two signing certs",
                ca_material(&two, k, c, c),
                CertFindingKind::TooMany,
                "ca-cert.pem",
                "holds 2 certificates; it must hold exactly one",
            ),
            (
                "unparseable cert",
                ca_material(c, k, bad_cert, c),
                CertFindingKind::Unparseable,
                "root-cert.pem",
                "the certificate (line 1) is not a valid X.509 certificate",
            ),
            (
                "unsupported key",
                ca_material(
                    c,
                    // A well-formed PEM block around three bytes that are no key (spelled in two
                    // parts so secret scanners do not take this test for a committed key).
                    concat!(
                        "-----BEGIN ",
                        "PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n"
                    ),
                    c,
                    c,
                ),
                CertFindingKind::UnsupportedKey,
                "ca-key.pem",
                "is not a private key this tool can use",
            ),
        ];
        for (name, m, kind, file, text) in cases {
            let findings = check(&m);
            let hit = findings
                .iter()
                .find(|f| f.kind == kind && f.file == file && f.severity == CertSeverity::Error);
            let hit = hit.unwrap_or_else(|| panic!("{name}: {findings:#?}"));
            assert!(hit.to_string().contains(text), "{name}: {hit}");
            // No message ever quotes the key's body.
            let body = k.lines().nth(1).unwrap();
            assert!(findings.iter().all(|f| !f.problem.contains(body)), "{name}");
        }
    }

    #[test]
    fn a_1024_bit_rsa_ca_is_refused_and_its_signatures_are_not_called_forged() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa1024");
        let root = std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
        let key = std::fs::read_to_string(dir.join("root-key.pem")).unwrap();
        let m = ca_material(&root, &key, &root, &root);
        let findings = check_ca(&m, now() + days(5 * 365), DEFAULT_WARN_WITHIN);
        assert_eq!(
            kinds(&findings),
            vec![
                (
                    CertSeverity::Error,
                    CertFindingKind::UnsupportedKey,
                    "ca-key.pem"
                ),
                (
                    CertSeverity::Warning,
                    CertFindingKind::NotSelfSigned,
                    "root-cert.pem"
                ),
                (
                    CertSeverity::Warning,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem"
                ),
            ],
            "{findings:#?}"
        );
        assert!(
            findings[0].problem.contains("RSA 2048–8192 bits"),
            "{findings:#?}"
        );
    }

    #[test]
    fn a_key_among_certificates_is_an_error_but_the_rest_is_still_judged() {
        let ca = TestCa::flat(KeyKind::P256, "Flat");
        let chain = format!("{}{}", ca.cert_pem, ca.key_pem);
        let m = ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &chain);
        let findings = check(&m);
        assert_eq!(
            kinds(&findings),
            vec![(
                CertSeverity::Error,
                CertFindingKind::WrongType,
                "cert-chain.pem"
            )]
        );
    }

    #[test]
    fn names_in_findings_are_the_paths_given() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::flat(KeyKind::P256, "Flat");
        let other = TestCa::flat(KeyKind::P256, "Other");
        for (name, content) in [
            ("ca-cert.pem", &ca.cert_pem),
            ("ca-key.pem", &other.key_pem),
            ("root-cert.pem", &ca.cert_pem),
            ("cert-chain.pem", &ca.cert_pem),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let m = CaPaths::from_dir(dir.path()).read().unwrap();
        let findings = check(&m);
        let key_path = dir.path().join("ca-key.pem").display().to_string();
        let cert_path = dir.path().join("ca-cert.pem").display().to_string();
        assert_eq!(findings[0].file, key_path);
        assert!(findings[0].problem.contains(&cert_path), "{findings:#?}");
    }
}
