//! Test fixtures: CAs and workload certificates made with rcgen, at a fixed "now".

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::PrivatePkcs8KeyDer;

use super::{CA_CERT, CA_KEY, CERT_CHAIN, CaMaterial, KEY, PemInput, ROOT_CERT, WorkloadMaterial};

/// The tests' "now": 2026-01-01T00:00:00Z (inside every sample's validity).
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

pub(crate) fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// Istio's plugin-CA samples (`../shared/conformance/certs/samples`).
pub(crate) fn samples_dir() -> PathBuf {
    kube_sim::testenv::conformance("certs/samples")
}

pub(crate) fn sample(name: &str) -> String {
    std::fs::read_to_string(samples_dir().join(name)).unwrap()
}

/// Istio's sample CA as material named by the bare file names.
pub(crate) fn sample_material() -> CaMaterial {
    ca_material(
        &sample(CA_CERT),
        &sample(CA_KEY),
        &sample(ROOT_CERT),
        &sample(CERT_CHAIN),
    )
}

/// Key types the fixtures can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    P256,
    P384,
    Ed25519,
    /// Istio's sample `ca-key.pem` (RSA 2048, PKCS#1): ring cannot generate RSA keys.
    IstioRsa,
}

/// A fresh key pair and its PEM as a CA would store it (PKCS#8, or PKCS#1 for the Istio RSA key).
fn key_pair(kind: KeyKind) -> (KeyPair, String) {
    let alg = match kind {
        KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        KeyKind::IstioRsa => {
            let pem = sample("ca-key.pem");
            let pkcs8 = pkcs1_to_pkcs8(&pem_body(&pem));
            let key = KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(pkcs8),
                &rcgen::PKCS_RSA_SHA256,
            )
            .unwrap();
            return (key, pem);
        }
    };
    let key = KeyPair::generate_for(alg).unwrap();
    let pem = key.serialize_pem();
    (key, pem)
}

/// The decoded body of the first PEM block.
pub(crate) fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

pub(crate) fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Read one TLV: (tag, content, rest).
fn der_read(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (len, header) = if der[1] < 0x80 {
        (der[1] as usize, 2)
    } else {
        let n = (der[1] & 0x7f) as usize;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, 2 + n)
    };
    (tag, &der[header..header + len], &der[header + len..])
}

/// PrivateKeyInfo { version 0, rsaEncryption NULL, OCTET STRING pkcs1 }.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let version = der_tlv(0x02, &[0]);
    let oid = der_tlv(
        0x06,
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
    );
    let alg = der_tlv(0x30, &[oid, vec![0x05, 0x00]].concat());
    let key = der_tlv(0x04, pkcs1);
    der_tlv(0x30, &[version, alg, key].concat())
}

/// The SEC1 `ECPrivateKey` inside a PKCS#8 EC key, as `openssl ec` would write it.
pub(crate) fn pkcs8_to_sec1_pem(pkcs8_pem: &str) -> String {
    let der = pem_body(pkcs8_pem);
    let (_, seq, _) = der_read(&der);
    let (_, _version, rest) = der_read(seq);
    let (_, _alg, rest) = der_read(rest);
    let (tag, sec1, _) = der_read(rest);
    assert_eq!(tag, 0x04);
    to_pem("EC PRIVATE KEY", sec1)
}

/// How to make a test certificate.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub cn: String,
    pub key: KeyKind,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub ca: bool,
    pub key_usage: Vec<KeyUsagePurpose>,
    pub path_len: Option<u8>,
}

impl Spec {
    /// A CA valid from a year before `now()` to five years after.
    pub(crate) fn ca(cn: &str, key: KeyKind) -> Self {
        Self {
            cn: cn.to_owned(),
            key,
            not_before: now() - days(365),
            not_after: now() + days(5 * 365),
            ca: true,
            key_usage: vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ],
            path_len: None,
        }
    }

    pub(crate) fn valid(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    pub(crate) fn not_ca(mut self) -> Self {
        self.ca = false;
        self.key_usage = vec![KeyUsagePurpose::DigitalSignature];
        self
    }

    pub(crate) fn path_len(mut self, n: u8) -> Self {
        self.path_len = Some(n);
        self
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "meshvm test");
        dn.push(DnType::CommonName, self.cn.as_str());
        params.distinguished_name = dn;
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        params.is_ca = match (self.ca, self.path_len) {
            (false, _) => IsCa::ExplicitNoCa,
            (true, None) => IsCa::Ca(BasicConstraints::Unconstrained),
            (true, Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n)),
        };
        params.key_usages.clone_from(&self.key_usage);
        params.use_authority_key_identifier_extension = true;
        params
    }

    pub(crate) fn self_signed(self) -> TestCa {
        let (key, key_pem) = key_pair(self.key);
        let params = self.params();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            params,
            key,
            key_pem,
        }
    }

    pub(crate) fn signed_by(self, issuer: &TestCa) -> TestCa {
        let (key, key_pem) = key_pair(self.key);
        let params = self.params();
        let cert = params.signed_by(&key, &issuer.issuer()).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            params,
            key,
            key_pem,
        }
    }
}

/// A certificate with its key, able to issue more.
pub(crate) struct TestCa {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    /// A self-signed CA that is its own root (the flat layout).
    pub(crate) fn flat(key: KeyKind, cn: &str) -> Self {
        Spec::ca(cn, key).self_signed()
    }

    pub(crate) fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// A workload certificate for `spiffe://cluster.local/ns/<ns>/sa/<sa>`, valid for 90 days around now.
    pub(crate) fn leaf(&self, key: KeyKind, ns: &str, sa: &str) -> Leaf {
        self.leaf_with(
            key,
            &format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
            now() - days(1),
            now() + days(89),
        )
    }

    pub(crate) fn leaf_with(
        &self,
        key: KeyKind,
        uri: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Leaf {
        let (key, key_pem) = key_pair(key);
        let mut params = CertificateParams::default();
        // Citadel leaves the subject empty and puts the identity in a URI SAN.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem,
        }
    }
}

/// A workload certificate and its key.
pub(crate) struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

/// CA material named by the bare file names, as `--ca-dir .` would name them.
pub(crate) fn ca_material(
    ca_cert: &str,
    ca_key: &str,
    root_cert: &str,
    cert_chain: &str,
) -> CaMaterial {
    CaMaterial {
        ca_cert: PemInput::new(CA_CERT, ca_cert),
        ca_key: PemInput::new(CA_KEY, ca_key),
        root_cert: PemInput::new(ROOT_CERT, root_cert),
        cert_chain: PemInput::new(CERT_CHAIN, cert_chain),
    }
}

pub(crate) fn workload_material(root_cert: &str, cert_chain: &str, key: &str) -> WorkloadMaterial {
    WorkloadMaterial {
        root_cert: PemInput::new(ROOT_CERT, root_cert),
        cert_chain: PemInput::new(CERT_CHAIN, cert_chain),
        key: PemInput::new(KEY, key),
    }
}
