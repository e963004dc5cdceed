//! Judging a workload identity: a legacy `istio.<sa>` secret or the same files in a VM bundle.
//!
//! webpki validates the leaf's path (it is what a TLS peer would run); x509-parser explains a
//! failure link by link, because webpki's `UnknownIssuer` alone does not tell an operator which
//! certificate is the odd one out.

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;

use super::cert::{self, Cert, Link, link};
use super::{
    CertFinding, CertFindingKind, Expect, Findings, WorkloadMaterial, cert_blocks,
    check_key_matches, check_validity, load_key, parse_certs,
};

/// A SPIFFE identity as Istio writes it: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The Kubernetes namespace.
    pub namespace: String,
    /// The Kubernetes ServiceAccount.
    pub service_account: String,
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Parse an Istio SPIFFE URI; `None` for anything else.
pub fn spiffe_id(uri: &str) -> Option<SpiffeId> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (trust_domain, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if trust_domain.is_empty() || namespace.is_empty() || service_account.is_empty() {
        return None;
    }
    Some(SpiffeId {
        trust_domain: trust_domain.to_owned(),
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
    })
}

/// Judge a workload identity at `now`; certificates expiring within `warn_within` earn a warning.
///
/// Checks: every file holds PEM of the right type; `cert-chain.pem` starts with a non-CA workload
/// certificate whose path verifies (webpki, for client and server authentication) to a certificate
/// in `root-cert.pem`; `key.pem` matches it; when `expected` is `Some((namespace, service_account))`,
/// a URI SAN is `spiffe://<any trust domain>/ns/<namespace>/sa/<service account>`; every certificate
/// is within its validity period; the chain is in issuer order. Pure: no IO.
pub fn check_workload(
    m: &WorkloadMaterial,
    expected: Option<(&str, &str)>,
    now: SystemTime,
    warn_within: Duration,
) -> Vec<CertFinding> {
    let mut out = Findings::default();
    let chain_blocks = cert_blocks(&m.cert_chain, Expect::AtLeastOne, &mut out);
    let key = load_key(&m.key, &mut out);
    let root_blocks = cert_blocks(&m.root_cert, Expect::AtLeastOne, &mut out);
    let chain = chain_blocks
        .as_deref()
        .and_then(|b| parse_certs(&m.cert_chain, b, &mut out));
    let roots = root_blocks
        .as_deref()
        .and_then(|b| parse_certs(&m.root_cert, b, &mut out));

    if let Some(chain) = &chain {
        let leaf = &chain[0];
        if leaf.is_ca() {
            out.error(
                leaf.file,
                CertFindingKind::NotWorkloadCert,
                format!(
                    "starts with a CA certificate ({}), not a workload certificate; it must hold the workload's certificate first, then its issuers",
                    leaf.subject()
                ),
            );
        } else {
            if let Some(key) = &key {
                check_key_matches(key.as_ref(), m.key.name(), leaf, &mut out);
            }
            if let Some(roots) = &roots
                && verify_path(m, chain, roots, now, &mut out)
            {
                check_order(chain, roots, &mut out);
            }
            if let Some((ns, sa)) = expected {
                check_san(leaf, ns, sa, &mut out);
            }
        }
    }

    let all: Vec<&Cert<'_>> = chain
        .iter()
        .flatten()
        .chain(roots.iter().flatten())
        .collect();
    check_validity(&all, now, warn_within, &mut out);
    out.into_vec()
}

/// "the workload certificate" or "certificate 2 of 3 (CN=…)".
fn describe(c: &Cert<'_>) -> String {
    if c.pos == 1 {
        "the workload certificate".to_owned()
    } else {
        format!("certificate {} of {} ({})", c.pos, c.of, c.subject())
    }
}

/// A time at which every certificate webpki checks is valid, if there is one and `now` is not:
/// expiry is reported per certificate by `check_validity`, so the path check must not stop at it
/// and hide a broken signature behind an "expired".
fn verification_time(now: SystemTime, certs: &[Cert<'_>]) -> UnixTime {
    let now = cert::unix_secs(now);
    let latest_start = certs.iter().map(Cert::not_before).max().unwrap_or(now);
    let earliest_end = certs.iter().map(Cert::not_after).min().unwrap_or(now);
    let at = if latest_start <= earliest_end {
        now.clamp(latest_start, earliest_end)
    } else {
        now
    };
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0)))
}

/// Verify the leaf's path with webpki; true when it verifies.
fn verify_path(
    m: &WorkloadMaterial,
    chain: &[Cert<'_>],
    roots: &[Cert<'_>],
    now: SystemTime,
    out: &mut Findings,
) -> bool {
    let chain_file = m.cert_chain.name();
    let root_ders: Vec<CertificateDer<'_>> =
        roots.iter().map(|r| CertificateDer::from(r.der)).collect();
    let mut anchors = Vec::with_capacity(roots.len());
    for (root, der) in roots.iter().zip(&root_ders) {
        match webpki::anchor_from_trusted_cert(der) {
            Ok(anchor) => anchors.push(anchor),
            Err(e) => out.error(
                root.file,
                CertFindingKind::Unparseable,
                format!("{}cannot be used as a trust anchor ({e:?})", root.which()),
            ),
        }
    }
    if anchors.is_empty() {
        return false;
    }
    let leaf_der = CertificateDer::from(chain[0].der);
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.der))
        .collect();
    let leaf = match EndEntityCert::try_from(&leaf_der) {
        Ok(leaf) => leaf,
        Err(e) => {
            out.error(
                chain_file,
                CertFindingKind::Unparseable,
                format!("the workload certificate cannot be used for TLS ({e:?})"),
            );
            return false;
        }
    };
    let time = verification_time(now, chain);
    let verify = |usage: KeyUsage| {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            usage,
            None,
            None,
        )
        .map(|_| ())
    };
    // A VM sidecar is a TLS client towards the mesh and a server for inbound traffic: it needs both.
    let result = verify(KeyUsage::client_auth()).and_then(|()| verify(KeyUsage::server_auth()));
    let Err(error) = result else {
        return true;
    };
    let root_file = m.root_cert.name();
    let (kind, problem) = match error {
        webpki::Error::RequiredEkuNotFoundContext(_) => (
            CertFindingKind::NotWorkloadCert,
            "the workload certificate (or an issuer) lacks the clientAuth/serverAuth extended key usage mutual TLS needs".to_owned(),
        ),
        webpki::Error::UnknownIssuer
        | webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => (
            CertFindingKind::ChainBroken,
            explain_broken_path(chain, roots, root_file)
                .unwrap_or_else(|| format!("does not verify to {root_file} ({error:?})")),
        ),
        webpki::Error::UnsupportedSignatureAlgorithmContext(_) => (
            CertFindingKind::ChainBroken,
            "is signed with an algorithm TLS peers do not accept".to_owned(),
        ),
        webpki::Error::EndEntityUsedAsCa => (
            CertFindingKind::ChainBroken,
            "holds an issuer that is not a CA certificate".to_owned(),
        ),
        webpki::Error::PathLenConstraintViolated => (
            CertFindingKind::PathLength,
            "forms a chain that an issuer's pathLenConstraint forbids".to_owned(),
        ),
        webpki::Error::UnsupportedCriticalExtension => (
            CertFindingKind::ChainBroken,
            "holds a certificate with a critical extension TLS peers do not understand".to_owned(),
        ),
        // Reported per certificate by check_validity when no common validity window exists.
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => return false,
        other => (
            CertFindingKind::ChainBroken,
            format!("does not verify to {root_file} ({other:?})"),
        ),
    };
    out.error(chain_file, kind, problem);
    false
}

/// Walk from the leaf through `chain` by name and signature, and say where the path breaks.
fn explain_broken_path(chain: &[Cert<'_>], roots: &[Cert<'_>], root_file: &str) -> Option<String> {
    let mut current = &chain[0];
    for _ in 0..=chain.len() {
        if roots.iter().any(|r| link(current, r) == Link::Verified) {
            return None;
        }
        if let Some(next) = chain
            .iter()
            .find(|c| c.der != current.der && link(current, c) == Link::Verified)
        {
            current = next;
            continue;
        }
        if let Some(issuer) = chain
            .iter()
            .chain(roots)
            .find(|c| c.der != current.der && link(current, c) == Link::Unsupported)
        {
            return Some(format!(
                "{} is signed by {} with an algorithm or key size that neither this tool nor TLS peers accept (RSA keys need at least 2048 bits)",
                describe(current),
                issuer.subject()
            ));
        }
        let same_name: Vec<&Cert<'_>> = chain
            .iter()
            .chain(roots)
            .filter(|c| c.der != current.der && link(current, c) == Link::BadSignature)
            .collect();
        if let Some(imposter) = same_name.first() {
            return Some(format!(
                "{} names {} as its issuer, but its signature does not verify with the key of the certificate of that name in {}: it was signed by a different CA (was the CA key replaced?)",
                describe(current),
                current.issuer(),
                imposter.file
            ));
        }
        let root_list = roots
            .iter()
            .map(Cert::subject)
            .collect::<Vec<_>>()
            .join(", ");
        return Some(format!(
            "does not verify to {root_file}: {} was issued by {}, which is neither in this file nor in {root_file} (it holds {root_list})",
            describe(current),
            current.issuer()
        ));
    }
    None
}

/// Peers receive the chain as written; each certificate should be followed by its issuer.
fn check_order(chain: &[Cert<'_>], roots: &[Cert<'_>], out: &mut Findings) {
    for pair in chain.windows(2) {
        let (child, next) = (&pair[0], &pair[1]);
        if link(child, next) == Link::Verified {
            continue;
        }
        let issued_elsewhere = chain
            .iter()
            .chain(roots)
            .any(|c| c.der != next.der && link(child, c) == Link::Verified);
        if issued_elsewhere {
            out.warn(
                child.file,
                CertFindingKind::ChainOrder,
                format!(
                    "is not in issuer order: {} is followed by {}, which did not issue it; some TLS peers reject such a chain",
                    describe(child),
                    next.subject()
                ),
            );
            return;
        }
    }
}

fn check_san(leaf: &Cert<'_>, ns: &str, sa: &str, out: &mut Findings) {
    let want = format!("spiffe://<trust domain>/ns/{ns}/sa/{sa}");
    let uris: Vec<&str> = match leaf.x.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            out.error(
                leaf.file,
                CertFindingKind::Unparseable,
                format!("the workload certificate's subjectAltName cannot be read ({e})"),
            );
            return;
        }
    };
    let ids: Vec<SpiffeId> = uris.iter().filter_map(|u| spiffe_id(u)).collect();
    if ids
        .iter()
        .any(|id| id.namespace == ns && id.service_account == sa)
    {
        return;
    }
    let problem = if ids.is_empty() {
        format!("the workload certificate has no spiffe:// identity (URI SAN); expected {want}")
    } else {
        format!(
            "the workload certificate is for {}, expected {want}: it belongs to another namespace or service account",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    out.error(leaf.file, CertFindingKind::SanMismatch, problem);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{CertSeverity, DEFAULT_WARN_WITHIN, WorkloadPaths};
    use super::*;

    /// CertSeverity, kind and file of each expected finding, in order.
    type Want<'a> = Vec<(CertSeverity, CertFindingKind, &'a str)>;
    type Expected<'a> = Option<(&'a str, &'a str)>;

    fn kinds(findings: &[CertFinding]) -> Want<'_> {
        findings
            .iter()
            .map(|f| (f.severity, f.kind, f.file.as_str()))
            .collect()
    }

    fn check(m: &WorkloadMaterial, expected: Option<(&str, &str)>) -> Vec<CertFinding> {
        check_workload(m, expected, now(), DEFAULT_WARN_WITHIN)
    }

    #[test]
    fn spiffe_ids_parse_strictly() {
        let id = spiffe_id("spiffe://cluster.local/ns/foo/sa/bar").unwrap();
        assert_eq!(
            (
                id.trust_domain.as_str(),
                id.namespace.as_str(),
                id.service_account.as_str()
            ),
            ("cluster.local", "foo", "bar")
        );
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/foo/sa/bar");
        for bad in [
            "spiffe:///ns/foo/sa/bar",
            "spiffe://td/ns/foo/sa/",
            "spiffe://td/ns/foo/sa/bar/extra",
            "spiffe://td/sa/bar/ns/foo",
            "https://td/ns/foo/sa/bar",
        ] {
            assert_eq!(spiffe_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn istio_sample_workload_verifies_with_its_identity() {
        // workload-foo-cert.pem holds the leaf and the signing CA; the root is root-cert.pem.
        let m = WorkloadPaths {
            root_cert: samples_dir().join("root-cert.pem"),
            cert_chain: samples_dir().join("workload-foo-cert.pem"),
            key: samples_dir().join("workload-foo-key.pem"),
        }
        .read()
        .unwrap();
        assert_eq!(check(&m, Some(("foo", "foo"))), vec![]);
        let wrong = check(&m, Some(("bar", "bar")));
        assert_eq!(
            kinds(&wrong),
            vec![(
                CertSeverity::Error,
                CertFindingKind::SanMismatch,
                m.cert_chain.name()
            )]
        );
        assert!(
            wrong[0]
                .problem
                .contains("is for spiffe://trust-domain-foo/ns/foo/sa/foo, expected spiffe://<trust domain>/ns/bar/sa/bar"),
            "{wrong:#?}"
        );
    }

    #[test]
    fn istio_sample_workload_with_the_combined_root_file() {
        let m = workload_material(
            &sample("workload-foo-root-certs.pem"),
            &sample("workload-foo-cert.pem"),
            &sample("workload-foo-key.pem"),
        );
        assert_eq!(check(&m, Some(("foo", "foo"))), vec![]);
    }

    #[test]
    fn istio_sample_workload_without_its_intermediate_is_broken() {
        let chain = sample("workload-foo-cert.pem");
        let leaf_only = chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        let m = workload_material(
            &sample("root-cert.pem"),
            leaf_only,
            &sample("workload-foo-key.pem"),
        );
        let findings = check(&m, None);
        assert_eq!(
            kinds(&findings),
            vec![(
                CertSeverity::Error,
                CertFindingKind::ChainBroken,
                "cert-chain.pem"
            )]
        );
        assert!(
            findings[0].problem.contains(
                "the workload certificate was issued by C=US,ST=California,L=Sunnyvale,O=Istio,CN=Istio CA"
            ) || findings[0].problem.contains("CN=Istio CA,O=Istio,L=Sunnyvale,ST=California,C=US, which is neither"),
            "{findings:#?}"
        );
    }

    #[test]
    fn generated_workloads() {
        let root = Spec::ca("Root", KeyKind::P256).self_signed();
        let ca = Spec::ca("Citadel", KeyKind::P384).signed_by(&root);
        let stranger = Spec::ca("Citadel", KeyKind::P384).signed_by(&root); // same name, other key
        let other_root = TestCa::flat(KeyKind::P256, "Other Root");
        let good = ca.leaf(KeyKind::P256, "vm", "vm-sa");
        let rsa_leaf = ca.leaf(KeyKind::IstioRsa, "vm", "vm-sa");
        let ed_leaf = ca.leaf(KeyKind::Ed25519, "vm", "vm-sa");
        let forged = stranger.leaf(KeyKind::P256, "vm", "vm-sa");
        let expired = ca.leaf_with(
            KeyKind::P256,
            "spiffe://cluster.local/ns/vm/sa/vm-sa",
            now() - days(100),
            now() - days(10),
        );
        let soon = ca.leaf_with(
            KeyKind::P256,
            "spiffe://cluster.local/ns/vm/sa/vm-sa",
            now() - days(80),
            now() + days(10),
        );
        let no_spiffe = ca.leaf_with(
            KeyKind::P256,
            "https://example.com/",
            now() - days(1),
            now() + days(60),
        );
        let chain = |leaf: &Leaf| format!("{}{}", leaf.cert_pem, ca.cert_pem);
        let r = root.cert_pem.as_str();
        let sa = Some(("vm", "vm-sa"));

        let cases: Vec<(&str, WorkloadMaterial, Expected<'_>, Want<'_>, &str)> = vec![
            (
                "valid",
                workload_material(r, &chain(&good), &good.key_pem),
                sa,
                vec![],
                "",
            ),
            (
                "valid, RSA PKCS#1 key",
                workload_material(r, &chain(&rsa_leaf), &rsa_leaf.key_pem),
                sa,
                vec![],
                "",
            ),
            (
                "valid, Ed25519 key",
                workload_material(r, &chain(&ed_leaf), &ed_leaf.key_pem),
                sa,
                vec![],
                "",
            ),
            (
                "valid, SEC1 key",
                workload_material(r, &chain(&good), &pkcs8_to_sec1_pem(&good.key_pem)),
                sa,
                vec![],
                "",
            ),
            (
                "valid, no identity expected",
                workload_material(r, &chain(&no_spiffe), &no_spiffe.key_pem),
                None,
                vec![],
                "",
            ),
            (
                "key of another workload",
                workload_material(r, &chain(&good), &rsa_leaf.key_pem),
                sa,
                vec![(CertSeverity::Error, CertFindingKind::KeyMismatch, "key.pem")],
                "does not match the certificate in cert-chain.pem: the key is RSA 2048-bit, the certificate's key is ECDSA P-256",
            ),
            (
                "other namespace",
                workload_material(r, &chain(&good), &good.key_pem),
                Some(("default", "vm-sa")),
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::SanMismatch,
                    "cert-chain.pem",
                )],
                "is for spiffe://cluster.local/ns/vm/sa/vm-sa, expected spiffe://<trust domain>/ns/default/sa/vm-sa",
            ),
            (
                "no spiffe identity",
                workload_material(r, &chain(&no_spiffe), &no_spiffe.key_pem),
                sa,
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::SanMismatch,
                    "cert-chain.pem",
                )],
                "has no spiffe:// identity",
            ),
            (
                "signed by another root",
                workload_material(&other_root.cert_pem, &chain(&good), &good.key_pem),
                sa,
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem",
                )],
                "certificate 2 of 2 (CN=Citadel,O=meshvm test) was issued by CN=Root,O=meshvm test, which is neither in this file nor in root-cert.pem (it holds CN=Other Root,O=meshvm test)",
            ),
            (
                "signed by a CA of the same name with another key",
                workload_material(r, &chain(&forged), &forged.key_pem),
                sa,
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::ChainBroken,
                    "cert-chain.pem",
                )],
                "the workload certificate names CN=Citadel,O=meshvm test as its issuer, but its signature does not verify",
            ),
            (
                "expired",
                workload_material(r, &chain(&expired), &expired.key_pem),
                sa,
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::Expired,
                    "cert-chain.pem",
                )],
                "certificate 1 of 2 (empty subject) expired on 2025-12-22T00:00:00Z (10 days ago)",
            ),
            (
                "expiring soon",
                workload_material(r, &chain(&soon), &soon.key_pem),
                sa,
                vec![(
                    CertSeverity::Warning,
                    CertFindingKind::ExpiresSoon,
                    "cert-chain.pem",
                )],
                "expires on 2026-01-11T00:00:00Z (in 10 days)",
            ),
            (
                "chain starts with the CA",
                workload_material(
                    r,
                    &format!("{}{}", ca.cert_pem, good.cert_pem),
                    &good.key_pem,
                ),
                sa,
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::NotWorkloadCert,
                    "cert-chain.pem",
                )],
                "starts with a CA certificate (CN=Citadel,O=meshvm test), not a workload certificate",
            ),
            (
                "intermediate and root in the wrong order",
                workload_material(
                    r,
                    &format!("{}{}{}", good.cert_pem, root.cert_pem, ca.cert_pem),
                    &good.key_pem,
                ),
                sa,
                vec![(
                    CertSeverity::Warning,
                    CertFindingKind::ChainOrder,
                    "cert-chain.pem",
                )],
                "is not in issuer order: the workload certificate is followed by CN=Root,O=meshvm test",
            ),
            (
                "cert where the key belongs",
                workload_material(r, &chain(&good), &good.cert_pem),
                sa,
                vec![(CertSeverity::Error, CertFindingKind::WrongType, "key.pem")],
                "were the certificate and key files swapped?",
            ),
            (
                "empty root",
                workload_material("", &chain(&good), &good.key_pem),
                sa,
                vec![(CertSeverity::Error, CertFindingKind::Empty, "root-cert.pem")],
                "is empty",
            ),
            (
                "garbage chain",
                workload_material(r, "\u{1}\u{2}garbage", &good.key_pem),
                sa,
                vec![(
                    CertSeverity::Error,
                    CertFindingKind::NotPem,
                    "cert-chain.pem",
                )],
                "is not PEM",
            ),
        ];
        for (name, m, expected, want, text) in cases {
            let findings = check(&m, expected);
            assert_eq!(kinds(&findings), want, "{name}: {findings:#?}");
            assert!(
                findings.iter().all(|f| f.problem.contains(text)),
                "{name}: {findings:#?}"
            );
        }
    }

    #[test]
    fn a_ca_with_a_1024_bit_rsa_key_is_called_out_as_too_weak() {
        // shared/tests/fixtures/rsa1024 (made by its gen.sh) is valid from 2026-11 for a century.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa1024");
        let m = WorkloadPaths::from_dir(&dir).read().unwrap();
        let later = now() + days(5 * 365);
        let findings = check_workload(&m, Some(("vm", "vm")), later, DEFAULT_WARN_WITHIN);
        assert_eq!(
            kinds(&findings),
            vec![(
                CertSeverity::Error,
                CertFindingKind::ChainBroken,
                m.cert_chain.name()
            )],
            "{findings:#?}"
        );
        assert!(
            findings[0]
                .problem
                .contains("is signed by CN=Weak Root,O=meshvm test with an algorithm or key size that neither this tool nor TLS peers accept"),
            "{findings:#?}"
        );
    }

    #[test]
    fn an_expired_intermediate_does_not_hide_a_broken_signature() {
        let root = Spec::ca("Root", KeyKind::P256).self_signed();
        let ca = Spec::ca("Citadel", KeyKind::P256)
            .valid(now() - days(100), now() - days(1))
            .signed_by(&root);
        let stranger = Spec::ca("Citadel", KeyKind::P256).signed_by(&root);
        let leaf = stranger.leaf_with(
            KeyKind::P256,
            "spiffe://cluster.local/ns/a/sa/b",
            now() - days(50),
            now() + days(50),
        );
        let m = workload_material(
            &root.cert_pem,
            &format!("{}{}", leaf.cert_pem, ca.cert_pem),
            &leaf.key_pem,
        );
        let findings = check(&m, Some(("a", "b")));
        let found: Vec<CertFindingKind> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            found,
            vec![CertFindingKind::ChainBroken, CertFindingKind::Expired],
            "{findings:#?}"
        );
    }
}
