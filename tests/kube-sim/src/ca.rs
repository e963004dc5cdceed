//! Certificates and tokens of the simulated cluster: the API server's TLS identity, the emulated Citadel CA, and the TokenRequest signer.
//!
//! The CA side signs through rustls' key loader, so a plugged-in `cacerts` key works in every form
//! Istio users have: PKCS#1 (`RSA PRIVATE KEY`, as Istio's samples), PKCS#8 and SEC1. rcgen with
//! ring can neither read PKCS#1 nor make RSA keys; it only builds the certificates here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm, SigningKey,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Workload certificates live 90 days, as Citadel's default `--workload-cert-ttl` of 1.4 (2160h).
const WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Backdating absorbs clock skew between the sim and the VM that checks the certificate.
const BACKDATE: Duration = Duration::from_secs(60);

/// PEM files of a TLS identity: the CA that clients trust, and the server's certificate and key.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The CA certificate, for the kubeconfig's `certificate-authority-data`.
    pub ca_pem: String,
    /// The server certificate (IP SAN 127.0.0.1, DNS SAN localhost).
    pub cert_pem: String,
    /// The server's PKCS#8 private key.
    pub key_pem: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sets the validity window explicitly: rcgen's default is 1975..4096, which no real CA issues.
fn set_validity(params: &mut CertificateParams, not_before_unix: u64, not_after_unix: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before_unix);
    params.not_after = epoch + Duration::from_secs(not_after_unix);
}

fn random_serial() -> SerialNumber {
    // A positive 127-bit serial, as RFC 5280 asks (at most 20 octets, non-negative).
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: &str, organization: &str, from: u64, to: u64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    if !common_name.is_empty() {
        dn.push(DnType::CommonName, common_name);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, from, to);
    params
}

/// A fresh CA and a server certificate for `127.0.0.1` and `localhost`, valid for a year.
pub fn server_tls() -> TlsMaterial {
    let now = unix_now();
    let (from, to) = (now - 3600, now + 365 * 24 * 3600);
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("ring makes P-256 keys");
    let ca_params = ca_params("kube-sim-ca", "kube-sim", from, to);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .expect("rcgen signs a self-signed CA");
    let issuer = Issuer::new(ca_params, &ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("ring makes P-256 keys");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().expect("ASCII DNS name")),
        SanType::DnsName("kubernetes.default.svc".try_into().expect("ASCII DNS name")),
    ];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, from, to);
    let cert = params
        .signed_by(&key, &issuer)
        .expect("rcgen signs the server certificate");
    TlsMaterial {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A CA private key in any form rustls reads, exposed to rcgen as its signing key.
struct CaKey {
    key: Arc<dyn rustls::sign::SigningKey>,
    scheme: SignatureScheme,
    algorithm: &'static SignatureAlgorithm,
    /// The raw subjectPublicKey bits (what rcgen calls the public key's DER).
    public_key: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, to compare with the CA certificate's.
    spki: Vec<u8>,
}

impl CaKey {
    fn from_pem(pem: &[u8]) -> Result<CaKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            format!("ca-key.pem is not a PEM private key (PKCS#1, PKCS#8 or SEC1): {e}")
        })?;
        let key = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("ca-key.pem is not a usable signing key: {e}"))?;
        // A key answers only the schemes of its own type and curve, so the first answer
        // identifies it.
        let candidates = [
            (SignatureScheme::RSA_PKCS1_SHA256, &rcgen::PKCS_RSA_SHA256),
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                &rcgen::PKCS_ECDSA_P384_SHA384,
            ),
            (SignatureScheme::ED25519, &rcgen::PKCS_ED25519),
        ];
        let (scheme, algorithm) = candidates
            .into_iter()
            .find(|(scheme, _)| key.choose_scheme(&[*scheme]).is_some())
            .ok_or("ca-key.pem holds a key type the sim cannot sign with: use RSA, ECDSA P-256/P-384 or Ed25519")?;
        let spki = key
            .public_key()
            .ok_or("ca-key.pem: the key's public half cannot be derived")?
            .as_ref()
            .to_vec();
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| format!("ca-key.pem: public key does not parse: {e}"))?;
        let public_key = parsed.subject_public_key.data.to_vec();
        Ok(CaKey {
            key,
            scheme,
            algorithm,
            public_key,
            spki,
        })
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or(rcgen::Error::RemoteKeyError)?;
        signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The emulated Citadel: a signing CA (plugged-in `cacerts` or self-signed) that issues workload
/// certificates as Citadel writes them into `istio.<sa>` secrets.
pub struct SimCa {
    issuer: Issuer<'static, CaKey>,
    /// PEM of the CA's own chain up to (excluding) the root, appended after each leaf.
    chain_pem: String,
    root_pem: String,
    /// The signing certificate and key of a self-signed CA, as `istio-ca-secret` keeps them.
    self_signed: Option<(String, String)>,
}

impl fmt::Debug for SimCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCa")
            .field("root_pem", &self.root_pem)
            .field("chain_pem", &self.chain_pem)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn pem_certs(name: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name} holds no certificate"));
    }
    Ok(certs)
}

fn parse_cert<'a>(name: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("{name} does not parse as X.509: {e}"))
}

/// Joins PEM blocks so that each starts on its own line.
fn join_pem(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts.iter().filter(|p| !p.trim().is_empty()) {
        out.push_str(part.trim_end());
        out.push('\n');
    }
    out
}

impl SimCa {
    /// A fresh self-signed root (ECDSA P-256, `O=<trust_domain>`, ten years) that signs directly,
    /// as Citadel does without `cacerts`; its workload chains are the leaf alone.
    ///
    /// Citadel's own root is RSA 2048 (`caKeySize`, istio/istio@1.4.2
    /// security/pkg/pki/ca/ca.go:60); the sim's is P-256 because ring cannot make RSA keys, and a
    /// fixed pool key would let one sim's root verify another's chains.
    pub fn self_signed(trust_domain: &str) -> SimCa {
        let now = unix_now();
        let key_pem = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .expect("ring makes P-256 keys")
            .serialize_pem();
        let key = CaKey::from_pem(key_pem.as_bytes()).expect("rustls loads a fresh PKCS#8 key");
        let params = ca_params("", trust_domain, now - 60, now + 10 * 365 * 24 * 3600);
        let root = params.self_signed(&key).expect("rcgen signs the root");
        let root_pem = root.pem();
        SimCa {
            issuer: Issuer::new(params, key),
            chain_pem: String::new(),
            root_pem: root_pem.clone(),
            self_signed: Some((root_pem, key_pem)),
        }
    }

    /// The self-signed CA kept in `istio-ca-secret` (`ca-cert.pem`, `ca-key.pem`): Citadel and
    /// istiod reload it on restart instead of making a new root (istio/istio@1.4.2
    /// security/pkg/pki/ca/ca.go:167-178). Its root is `ca-cert.pem` itself and its workload
    /// chains are the leaf alone (no `cert-chain.pem`).
    pub fn from_ca_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<SimCa, String> {
        let file = |name: &str| {
            data.get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("istio-ca-secret has no {name}"))
        };
        let (cert_pem, key_pem) = (file("ca-cert.pem")?, file("ca-key.pem")?);
        let ders = pem_certs("ca-cert.pem", cert_pem)?;
        let cert = parse_cert("ca-cert.pem", &ders[0])?;
        let key = CaKey::from_pem(key_pem)?;
        if key.spki != cert.public_key().raw {
            return Err("istio-ca-secret: ca-key.pem does not match ca-cert.pem".to_owned());
        }
        if !cert.validity().is_valid() {
            return Err("istio-ca-secret: ca-cert.pem is not valid now".to_owned());
        }
        let issuer = Issuer::from_ca_cert_der(&ders[0], key)
            .map_err(|e| format!("istio-ca-secret: ca-cert.pem cannot sign: {e}"))?;
        let cert_pem = String::from_utf8_lossy(cert_pem).into_owned();
        Ok(SimCa {
            issuer,
            chain_pem: String::new(),
            root_pem: cert_pem.clone(),
            self_signed: Some((cert_pem, String::from_utf8_lossy(key_pem).into_owned())),
        })
    }

    /// `ca-cert.pem` and `ca-key.pem` of a self-signed CA, as `istio-ca-secret` stores them;
    /// `None` for a plugged-in CA.
    pub fn ca_secret_data(&self) -> Option<BTreeMap<String, Vec<u8>>> {
        let (cert, key) = self.self_signed.as_ref()?;
        Some(
            [("ca-cert.pem", cert), ("ca-key.pem", key)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.clone().into_bytes()))
                .collect(),
        )
    }

    /// Whether this CA is self-signed (not plugged in from `cacerts`).
    pub fn is_self_signed(&self) -> bool {
        self.self_signed.is_some()
    }

    /// The plugged-in CA of a `cacerts` secret (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`). Refused, as Citadel refuses to start, when a file is missing, the key
    /// does not match `ca-cert.pem`, `ca-cert.pem` does not chain to `root-cert.pem`, or the
    /// signing certificate is not valid now.
    pub fn from_cacerts(data: &BTreeMap<String, Vec<u8>>) -> Result<SimCa, String> {
        let file = |name: &str| {
            data.get(name).ok_or_else(|| {
                format!(
                    "cacerts has no {name}: create it with ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem"
                )
            })
        };
        let (ca_cert_pem, ca_key_pem) = (file("ca-cert.pem")?, file("ca-key.pem")?);
        let (root_pem, chain_pem) = (file("root-cert.pem")?, file("cert-chain.pem")?);

        let ca_ders = pem_certs("ca-cert.pem", ca_cert_pem)?;
        let roots = pem_certs("root-cert.pem", root_pem)?;
        let chain = pem_certs("cert-chain.pem", chain_pem)?;
        let ca = parse_cert("ca-cert.pem", &ca_ders[0])?;
        let key = CaKey::from_pem(ca_key_pem)?;
        if key.spki != ca.public_key().raw {
            return Err("cacerts: ca-key.pem does not match ca-cert.pem".to_owned());
        }
        if !ca.validity().is_valid() {
            return Err(format!(
                "cacerts: ca-cert.pem is not valid now (valid {} to {}): plug in a current CA",
                ca.validity().not_before,
                ca.validity().not_after
            ));
        }
        verify_to_root(&ca, &chain, &roots)?;

        let issuer = Issuer::from_ca_cert_der(&ca_ders[0], key)
            .map_err(|e| format!("cacerts: ca-cert.pem cannot sign: {e}"))?;
        Ok(SimCa {
            issuer,
            chain_pem: String::from_utf8_lossy(chain_pem).into_owned(),
            root_pem: String::from_utf8_lossy(root_pem).into_owned(),
            self_signed: None,
        })
    }

    /// The root certificate(s) PEM that workloads trust (`root-cert.pem`).
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The CA's certificate chain PEM (`cert-chain.pem` of `cacerts`; empty when self-signed).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// A workload identity as Citadel 1.4 writes it into `istio.<sa>`, with the key picked from the
    /// pool by a hash of `<ns>/<sa>` and written as PKCS#1 (Citadel's default; see
    /// [`SimCa::issue`]).
    pub fn issue_workload(
        &self,
        trust_domain: &str,
        ns: &str,
        sa: &str,
    ) -> BTreeMap<String, Vec<u8>> {
        self.issue(&Workload {
            trust_domain,
            namespace: ns,
            service_account: sa,
            dns_names: &[],
            key: pool_index(&format!("{ns}/{sa}")),
            pkcs8: false,
        })
    }

    /// A workload identity as Citadel writes it into `istio.<sa>` (istio/istio@1.4.2
    /// security/pkg/k8s/controller/workloadsecret.go:446-489, `generateKeyAndCert`):
    /// - `key.pem`: an RSA 2048 key (`keySize = 2048`, workloadsecret.go:72), PKCS#1
    ///   (`RSA PRIVATE KEY`) unless Citadel runs with `--pkcs8-keys` (security/pkg/pki/util/
    ///   generate_cert.go:322-342). ring cannot generate RSA keys, so the sim takes one from a
    ///   pool of pre-generated test keys (tests/kube-sim/fixtures/citadel-rsa2048), `key` picks it.
    /// - `cert-chain.pem`: the leaf (URI SAN `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`, plus the
    ///   DNS names Citadel's `--custom-dns-names` give this account; valid now-1min..now+90d, the
    ///   default `--workload-cert-ttl` of 2160h) followed by the CA's `cert-chain.pem`
    ///   (workloadsecret.go:479-486).
    /// - `root-cert.pem`: the CA bundle's root (workloadsecret.go:338).
    pub fn issue(&self, w: &Workload<'_>) -> BTreeMap<String, Vec<u8>> {
        let pool = workload_key_pool();
        let (key, key_pem) = &pool[w.key % pool.len()];
        let mut params = CertificateParams::default();
        // Citadel leaves the subject empty; the identity is the (then critical) URI SAN.
        params.distinguished_name = DistinguishedName::new();
        let spiffe = format!(
            "spiffe://{}/ns/{}/sa/{}",
            w.trust_domain, w.namespace, w.service_account
        );
        params.subject_alt_names = vec![SanType::URI(
            spiffe
                .try_into()
                .expect("SPIFFE IDs of Kubernetes names are ASCII"),
        )];
        for dns in w.dns_names {
            if let Ok(name) = dns.clone().try_into() {
                params.subject_alt_names.push(SanType::DnsName(name));
            }
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = unix_now();
        set_validity(
            &mut params,
            now - BACKDATE.as_secs(),
            now + WORKLOAD_TTL.as_secs(),
        );
        let leaf = params
            .signed_by(key, &self.issuer)
            .expect("the CA key signs (it was checked when the CA was loaded)");
        let mut files = BTreeMap::new();
        files.insert(
            "cert-chain.pem".to_owned(),
            join_pem(&[&leaf.pem(), &self.chain_pem]).into_bytes(),
        );
        let key_pem = if w.pkcs8 {
            (*key_pem).to_owned()
        } else {
            pkcs1_pem(key_pem)
        };
        files.insert("key.pem".to_owned(), key_pem.into_bytes());
        files.insert(
            "root-cert.pem".to_owned(),
            self.root_pem.clone().into_bytes(),
        );
        files
    }
}

/// What one workload certificate is for (see [`SimCa::issue`]).
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// SPIFFE trust domain, e.g. `cluster.local`.
    pub trust_domain: &'a str,
    /// Namespace of the ServiceAccount.
    pub namespace: &'a str,
    /// Name of the ServiceAccount.
    pub service_account: &'a str,
    /// Extra DNS SANs.
    pub dns_names: &'a [String],
    /// Which key of the pool (taken modulo its size).
    pub key: usize,
    /// Write `key.pem` as PKCS#8 (`PRIVATE KEY`) instead of PKCS#1 (`RSA PRIVATE KEY`).
    pub pkcs8: bool,
}

/// The pre-generated RSA-2048 PKCS#8 test keys Citadel's emulation hands out
/// (tests/kube-sim/fixtures/citadel-rsa2048, made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`).
const WORKLOAD_KEYS: [&str; 8] = [
    include_str!("../fixtures/citadel-rsa2048/key-0.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-1.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-2.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-3.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-4.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-5.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-6.pem"),
    include_str!("../fixtures/citadel-rsa2048/key-7.pem"),
];

/// The key pool, parsed once.
fn workload_key_pool() -> &'static [(KeyPair, &'static str)] {
    static POOL: std::sync::OnceLock<Vec<(KeyPair, &'static str)>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        WORKLOAD_KEYS
            .iter()
            .map(|pem| {
                let key = KeyPair::from_pkcs8_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256)
                    .expect("the fixture keys are RSA PKCS#8");
                (key, *pem)
            })
            .collect()
    })
}

/// How many keys the pool holds.
pub const WORKLOAD_KEY_POOL: usize = WORKLOAD_KEYS.len();

/// A stable index for `text` (FNV-1a), so the same ServiceAccount draws the same key in every run.
pub fn pool_index(text: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % WORKLOAD_KEYS.len() as u64) as usize
}

/// Re-encodes an RSA PKCS#8 PEM as PKCS#1 (`RSA PRIVATE KEY`): the `privateKey` OCTET STRING of
/// the PrivateKeyInfo is the RSAPrivateKey itself.
fn pkcs1_pem(pkcs8_pem: &str) -> String {
    let der = PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).expect("fixture PEM parses");
    let (_, outer) = x509_parser::der_parser::parse_der(der.secret_der()).expect("PKCS#8 is DER");
    let inner = outer
        .as_sequence()
        .ok()
        .and_then(|s| s.get(2))
        .and_then(|o| o.as_slice().ok())
        .expect("PKCS#8 holds the RSAPrivateKey as its third element");
    pem_block("RSA PRIVATE KEY", inner)
}

/// PEM with 64-column lines.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Walks from the signing certificate through `cert-chain.pem` to a certificate of
/// `root-cert.pem`, checking each signature, as Citadel's key-cert bundle verification does.
fn verify_to_root(
    ca: &X509Certificate<'_>,
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
) -> Result<(), String> {
    let roots: Vec<_> = roots
        .iter()
        .map(|r| parse_cert("root-cert.pem", r))
        .collect::<Result<_, _>>()?;
    let chain: Vec<_> = chain
        .iter()
        .map(|c| parse_cert("cert-chain.pem", c))
        .collect::<Result<_, _>>()?;
    let mut current = ca.clone();
    for _ in 0..=chain.len() {
        if roots.iter().any(|root| {
            root.subject() == current.issuer()
                && current.verify_signature(Some(root.public_key())).is_ok()
        }) {
            return Ok(());
        }
        let next = chain.iter().find(|c| {
            c.as_raw() != current.as_raw()
                && c.subject() == current.issuer()
                && current.verify_signature(Some(c.public_key())).is_ok()
        });
        match next {
            Some(next) => current = next.clone(),
            None => break,
        }
    }
    Err("cacerts: ca-cert.pem does not chain to root-cert.pem through cert-chain.pem".to_owned())
}

/// Signs ServiceAccount tokens as kube-apiserver's TokenRequest does (ES256 JWT).
pub struct TokenSigner {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Default for TokenSigner {
    fn default() -> Self {
        Self::new()
    }
}

/// The fixed DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The issuer kube-apiserver stamps on tokens with default `--service-account-issuer`s.
pub const TOKEN_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

impl TokenSigner {
    /// A signer with a fresh P-256 key.
    pub fn new() -> TokenSigner {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("ring makes P-256 keys");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("ring reads the key it made");
        // kube-apiserver's key id: unpadded base64url of SHA-256 over the public key's DER.
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        TokenSigner { key, key_id, rng }
    }

    /// The public key as PEM (`PUBLIC KEY`), what `--service-account-key-file` would hold.
    pub fn public_key_pem(&self) -> String {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(self.key.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// A signed token for ServiceAccount `ns/sa`, with the claims a TokenRequest token carries:
    /// `aud`, `exp` (now + `expiration_seconds`), `iat`, `nbf`, `iss`, `jti`, `sub`
    /// (`system:serviceaccount:<ns>:<sa>`) and the `kubernetes.io` block.
    pub fn sign(
        &self,
        ns: &str,
        sa: &str,
        sa_uid: &str,
        audiences: &[String],
        expiration_seconds: i64,
        now_unix: i64,
    ) -> String {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&self.rng, &mut jti).expect("system randomness");
        let claims = json!({
            "aud": audiences,
            "exp": now_unix + expiration_seconds,
            "iat": now_unix,
            "iss": TOKEN_ISSUER,
            "jti": uuid_v4(jti),
            "kubernetes.io": {
                "namespace": ns,
                "serviceaccount": {"name": sa, "uid": sa_uid},
            },
            "nbf": now_unix,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ring signs with its own key");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Checks a token this signer issued (signature, `nbf`, `exp`) and returns its claims, as a
    /// TokenReview would.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<serde_json::Value, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(
                "token is not a JWS compact serialization (three dot-separated parts)".to_owned(),
            );
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| format!("token signature is not base64url: {e}"))?;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| "token signature does not verify with this signer's key".to_owned())?;
        let claims: serde_json::Value = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("token claims are not base64url JSON")?;
        let at = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        if at("nbf").is_some_and(|nbf| now_unix < nbf) {
            return Err("token is not valid yet".to_owned());
        }
        if at("exp").is_none_or(|exp| now_unix >= exp) {
            return Err("token has expired".to_owned());
        }
        Ok(claims)
    }
}

/// Formats 16 random bytes as an RFC 4122 version-4 UUID, as kube-apiserver's `jti`.
fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};
    use std::path::{Path, PathBuf};
    use x509_parser::extensions::GeneralName;

    fn samples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/certs/samples")
    }

    fn sample_cacerts() -> BTreeMap<String, Vec<u8>> {
        [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ]
        .into_iter()
        .map(|name| {
            let path = samples().join(name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name.to_owned(), bytes)
        })
        .collect()
    }

    fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
        pem_certs("test", pem).unwrap()
    }

    fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
        let san = cert
            .subject_alternative_name()
            .unwrap()
            .expect("SAN extension");
        assert!(san.critical, "an empty subject makes the SAN critical");
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
            .collect()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Path validation as a TLS peer does it: webpki, client-auth usage, intermediates from the chain.
    fn webpki_verifies_client(chain_pem: &[u8], root_pem: &[u8]) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for root in certs(root_pem) {
            roots.add(root).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let chain = certs(chain_pem);
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }

    /// The authority (`aki`) or subject key identifier of a certificate.
    fn key_id(cert: &X509Certificate<'_>, aki: bool) -> Option<Vec<u8>> {
        use x509_parser::extensions::ParsedExtension;
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) if aki => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                ParsedExtension::SubjectKeyIdentifier(k) if !aki => Some(k.0.to_vec()),
                _ => None,
            })
    }

    fn assert_workload(files: &BTreeMap<String, Vec<u8>>, spiffe: &str, chain_len: usize) {
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            ["cert-chain.pem", "key.pem", "root-cert.pem"]
        );
        let chain = certs(&files["cert-chain.pem"]);
        assert_eq!(chain.len(), chain_len);
        let leaf = parse_cert("leaf", &chain[0]).unwrap();
        assert_eq!(uri_sans(&leaf), [spiffe]);
        assert!(
            leaf.subject().iter_attributes().next().is_none(),
            "Citadel leaves the subject empty"
        );
        assert!(!leaf.is_ca());
        let now = unix_now() as i64;
        let from = leaf.validity().not_before.timestamp();
        let to = leaf.validity().not_after.timestamp();
        assert!(
            (now - 70..=now - 50).contains(&from),
            "not_before {from}, now {now}"
        );
        assert!(
            (to - now - 90 * 24 * 3600).abs() <= 10,
            "not_after {to}, now {now}"
        );
        // key.pem is RSA 2048 in PKCS#1, as Citadel writes it, and belongs to the leaf.
        let key_pem = String::from_utf8(files["key.pem"].clone()).unwrap();
        assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let key = CaKey::from_pem(key_pem.as_bytes()).unwrap();
        assert_eq!(key.spki, leaf.public_key().raw);
        assert_eq!(key.algorithm, &rcgen::PKCS_RSA_SHA256);
        assert_eq!(rsa_bits(&leaf), 2048);
        // Every link of the chain is signed by the next; the last by the root.
        let root = certs(&files["root-cert.pem"]);
        let root = parse_cert("root", &root[0]).unwrap();
        let parsed: Vec<_> = chain
            .iter()
            .map(|c| parse_cert("chain", c).unwrap())
            .collect();
        for pair in parsed.windows(2) {
            pair[0]
                .verify_signature(Some(pair[1].public_key()))
                .unwrap();
        }
        parsed
            .last()
            .unwrap()
            .verify_signature(Some(root.public_key()))
            .unwrap();
        // The authority key id names the issuer's subject key id, when it has one (Istio's
        // samples do not), so OpenSSL-style path building finds the issuer.
        let issuer = parsed.get(1).unwrap_or(&root);
        if let Some(ski) = key_id(issuer, false) {
            assert_eq!(key_id(&leaf, true), Some(ski));
        }
        webpki_verifies_client(&files["cert-chain.pem"], &files["root-cert.pem"]).unwrap();
    }

    /// The modulus size of an RSA certificate's key.
    fn rsa_bits(cert: &X509Certificate<'_>) -> usize {
        match cert.public_key().parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(rsa) => rsa.key_size(),
            other => panic!("not RSA: {other:?}"),
        }
    }

    #[test]
    fn the_key_pool_is_rsa_2048_and_picked_by_account() {
        assert_eq!(WORKLOAD_KEY_POOL, 8);
        for (key, pem) in workload_key_pool() {
            assert_eq!(key.algorithm(), &rcgen::PKCS_RSA_SHA256);
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            // PKCS#1 re-encoding keeps the key: rustls reads both forms to the same public key.
            let pkcs1 = pkcs1_pem(pem);
            assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
            assert_eq!(
                CaKey::from_pem(pkcs1.as_bytes()).unwrap().spki,
                CaKey::from_pem(pem.as_bytes()).unwrap().spki
            );
        }
        // Stable per account, spread over the pool.
        assert_eq!(
            pool_index("expandvm/expandvm"),
            pool_index("expandvm/expandvm")
        );
        let picks: std::collections::BTreeSet<usize> =
            (0..40).map(|i| pool_index(&format!("ns{i}/sa"))).collect();
        assert!(picks.len() >= 6, "{picks:?}");

        let ca = SimCa::self_signed("cluster.local");
        let dns = vec!["istio-pilot.istio-system".to_owned()];
        let w = Workload {
            trust_domain: "cluster.local",
            namespace: "istio-system",
            service_account: "istio-pilot-service-account",
            dns_names: &dns,
            key: 3,
            pkcs8: true,
        };
        let files = ca.issue(&w);
        let key = String::from_utf8(files["key.pem"].clone()).unwrap();
        assert_eq!(
            key, WORKLOAD_KEYS[3],
            "--pkcs8-keys writes the key as PKCS#8"
        );
        let chain = certs(&files["cert-chain.pem"]);
        let leaf = parse_cert("leaf", &chain[0]).unwrap();
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "URI(spiffe://cluster.local/ns/istio-system/sa/istio-pilot-service-account)",
                "DNSName(istio-pilot.istio-system)"
            ]
        );
        // Another index of the pool is another key.
        let other = ca.issue(&Workload { key: 4, ..w });
        assert_ne!(other["key.pem"], files["key.pem"]);
        assert_eq!(
            ca.issue(&Workload { key: 11, ..w })["key.pem"],
            files["key.pem"]
        );
    }

    #[test]
    fn istio_ca_secret_round_trips_the_self_signed_ca() {
        let ca = SimCa::self_signed("cluster.local");
        assert!(ca.is_self_signed());
        let data = ca.ca_secret_data().unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ca-cert.pem", "ca-key.pem"]
        );
        assert_eq!(data["ca-cert.pem"], ca.root_pem().into_bytes());
        let reloaded = SimCa::from_ca_secret(&data).unwrap();
        assert_eq!(reloaded.root_pem(), ca.root_pem());
        assert!(reloaded.chain_pem().is_empty());
        // What the reloaded CA signs chains to the original root.
        let files = reloaded.issue_workload("cluster.local", "ns", "sa");
        webpki_verifies_client(&files["cert-chain.pem"], ca.root_pem().as_bytes()).unwrap();
        // A key of another CA, or nothing, is refused.
        let mut wrong = data.clone();
        wrong.insert(
            "ca-key.pem".into(),
            SimCa::self_signed("x").ca_secret_data().unwrap()["ca-key.pem"].clone(),
        );
        assert!(
            SimCa::from_ca_secret(&wrong)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(
            SimCa::from_ca_secret(&BTreeMap::new())
                .unwrap_err()
                .contains("no ca-cert.pem")
        );
        assert!(
            SimCa::from_cacerts(&sample_cacerts())
                .unwrap()
                .ca_secret_data()
                .is_none()
        );
        assert!(!format!("{reloaded:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn workload_from_istio_samples_chains_to_their_root() {
        let cacerts = sample_cacerts();
        assert!(
            String::from_utf8_lossy(&cacerts["ca-key.pem"]).contains("BEGIN RSA PRIVATE KEY"),
            "the samples exercise the PKCS#1 path"
        );
        let ca = SimCa::from_cacerts(&cacerts).unwrap();
        assert_eq!(ca.root_pem().as_bytes(), cacerts["root-cert.pem"]);
        let files = ca.issue_workload("cluster.local", "expandvm", "expandvm");
        assert_workload(&files, "spiffe://cluster.local/ns/expandvm/sa/expandvm", 2);
        // Citadel appends the CA's cert-chain.pem after the leaf.
        let chain = certs(&files["cert-chain.pem"]);
        assert_eq!(chain[1], certs(&cacerts["cert-chain.pem"])[0]);
        let leaf = parse_cert("leaf", &chain[0]).unwrap();
        let ca_cert = certs(&cacerts["ca-cert.pem"]);
        let ca_cert = parse_cert("ca", &ca_cert[0]).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());
        assert_eq!(
            leaf.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_PKCS1_SHA256WITHRSA
        );
        // Another account draws another key of the pool.
        assert_ne!(pool_index("default/sleep"), pool_index("expandvm/expandvm"));
        let other = ca.issue_workload("cluster.local", "default", "sleep");
        assert_ne!(other["key.pem"], files["key.pem"]);
        assert_workload(&other, "spiffe://cluster.local/ns/default/sa/sleep", 2);
    }

    #[test]
    fn self_signed_ca_signs_leaves_directly() {
        let ca = SimCa::self_signed("cluster.local");
        let root = certs(ca.root_pem().as_bytes());
        let root = parse_cert("root", &root[0]).unwrap();
        assert!(root.is_ca());
        assert_eq!(
            root.subject()
                .iter_organization()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "cluster.local"
        );
        let files = ca.issue_workload("cluster.local", "expandvm", "expandvm");
        assert_workload(&files, "spiffe://cluster.local/ns/expandvm/sa/expandvm", 1);
        // Another sim's root does not verify this chain.
        let stranger = SimCa::self_signed("cluster.local");
        assert!(
            webpki_verifies_client(&files["cert-chain.pem"], stranger.root_pem().as_bytes())
                .is_err()
        );
    }

    /// The SEC1 `ECPrivateKey` inside a PKCS#8 document.
    fn sec1_pem(pkcs8_pem: &str) -> String {
        let der = PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap();
        let (_, outer) = x509_parser::der_parser::parse_der(der.secret_der()).unwrap();
        let inner = outer.as_sequence().unwrap()[2].as_slice().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        format!("-----BEGIN EC PRIVATE KEY-----\n{b64}\n-----END EC PRIVATE KEY-----\n")
    }

    /// A flat CA (`ca-cert.pem` = `root-cert.pem` = `cert-chain.pem`) with its key in PEM form.
    fn flat_cacerts(key_pem: &str, key: &KeyPair) -> BTreeMap<String, Vec<u8>> {
        let now = unix_now();
        let params = ca_params("Flat CA", "meshvm-test", now - 60, now + 3600);
        let cert = params.self_signed(key).unwrap().pem();
        [
            ("ca-cert.pem", cert.clone()),
            ("ca-key.pem", key_pem.to_owned()),
            ("root-cert.pem", cert.clone()),
            ("cert-chain.pem", cert),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect()
    }

    #[test]
    fn flat_ca_with_pkcs8_and_sec1_keys_issues() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = key.serialize_pem();
        for key_pem in [pkcs8.clone(), sec1_pem(&pkcs8)] {
            let ca = SimCa::from_cacerts(&flat_cacerts(&key_pem, &key)).unwrap();
            let files = ca.issue_workload("example.org", "ns1", "sa1");
            assert_workload(&files, "spiffe://example.org/ns/ns1/sa/sa1", 2);
        }
        assert!(sec1_pem(&pkcs8).contains("BEGIN EC PRIVATE KEY"));
    }

    #[test]
    fn broken_cacerts_are_refused_with_the_reason() {
        let mut missing = sample_cacerts();
        missing.remove("ca-key.pem");
        let e = SimCa::from_cacerts(&missing).unwrap_err();
        assert!(e.contains("cacerts has no ca-key.pem"), "{e}");

        let mut wrong_key = sample_cacerts();
        wrong_key.insert(
            "ca-key.pem".into(),
            std::fs::read(samples().join("workload-foo-key.pem")).unwrap(),
        );
        let e = SimCa::from_cacerts(&wrong_key).unwrap_err();
        assert_eq!(e, "cacerts: ca-key.pem does not match ca-cert.pem");

        let mut garbage = sample_cacerts();
        garbage.insert("ca-key.pem".into(), b"not a key".to_vec());
        assert!(
            SimCa::from_cacerts(&garbage)
                .unwrap_err()
                .contains("not a PEM private key")
        );

        let mut other_root = sample_cacerts();
        let stranger = SimCa::self_signed("cluster.local");
        other_root.insert("root-cert.pem".into(), stranger.root_pem().into_bytes());
        let e = SimCa::from_cacerts(&other_root).unwrap_err();
        assert!(e.contains("does not chain to root-cert.pem"), "{e}");

        let expired = expired_cacerts();
        let e = SimCa::from_cacerts(&expired).unwrap_err();
        assert!(e.contains("ca-cert.pem is not valid now"), "{e}");
    }

    /// Root + intermediate valid only during 2019, for the expired-cacerts scenario.
    fn expired_cacerts() -> BTreeMap<String, Vec<u8>> {
        let (from, to) = (1_546_300_800, 1_577_836_800); // 2019-01-01 .. 2020-01-01 UTC
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root_params = ca_params("Root CA", "meshvm-test-expired", from, to);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, &root_key);
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = ca_params("Intermediate CA", "meshvm-test-expired", from, to)
            .signed_by(&ca_key, &root_issuer)
            .unwrap();
        [
            ("ca-cert.pem", ca.pem()),
            ("ca-key.pem", ca_key.serialize_pem()),
            ("root-cert.pem", root.pem()),
            ("cert-chain.pem", ca.pem()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect()
    }

    /// Regenerates the `cacerts` Secret of tests/scenarios/broken-expired-cacerts.yaml:
    /// `cargo test -p kube-sim --lib print_expired_cacerts -- --ignored --nocapture`.
    #[test]
    #[ignore = "generator for scenario data, run by hand"]
    fn print_expired_cacerts() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: BTreeMap<_, _> = expired_cacerts()
            .into_iter()
            .map(|(k, v)| (k, b64.encode(v)))
            .collect();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "cacerts", "namespace": "istio-system"}, "data": data});
        println!("{}", serde_json::to_string_pretty(&secret).unwrap());
    }

    #[test]
    fn expired_cacerts_scenario_is_refused_for_expiry_only() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/broken-expired-cacerts.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let secret = docs
            .iter()
            .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "cacerts")
            .expect("a cacerts Secret");
        assert_eq!(secret["metadata"]["namespace"], "istio-system");
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: BTreeMap<String, Vec<u8>> = secret["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), b64.decode(v.as_str().unwrap()).unwrap()))
            .collect();
        // The key matches and the chain is whole (checked before expiry would not be reached
        // otherwise): only time makes this CA unusable.
        let e = SimCa::from_cacerts(&data).unwrap_err();
        assert!(
            e.starts_with("cacerts: ca-cert.pem is not valid now"),
            "{e}"
        );
        for name in ["ca-cert.pem", "root-cert.pem"] {
            let cert = certs(&data[name]);
            let cert = parse_cert(name, &cert[0]).unwrap();
            assert_eq!(
                cert.validity().not_after.timestamp(),
                1_577_836_800,
                "{name} ends 2020-01-01"
            );
        }
        let ca = certs(&data["ca-cert.pem"]);
        let ca = parse_cert("ca", &ca[0]).unwrap();
        let root = certs(&data["root-cert.pem"]);
        ca.verify_signature(Some(parse_cert("root", &root[0]).unwrap().public_key()))
            .unwrap();
        assert_eq!(data["cert-chain.pem"], data["ca-cert.pem"]);
    }

    #[test]
    fn server_tls_verifies_for_127_0_0_1_and_localhost() {
        let tls = server_tls();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs(tls.ca_pem.as_bytes()).remove(0)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let leaf = certs(tls.cert_pem.as_bytes()).remove(0);
        for name in ["127.0.0.1", "localhost"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        let wrong = ServerName::try_from("example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &wrong, &[], UnixTime::now())
                .is_err()
        );
        // The key loads into a rustls server config.
        let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .unwrap();
        assert!(
            !format!("{tls:?}").contains("PRIVATE KEY"),
            "Debug redacts the key"
        );
        assert_ne!(
            server_tls().ca_pem,
            tls.ca_pem,
            "every call makes a fresh CA"
        );
    }

    fn decode_segment(segment: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    #[test]
    fn token_carries_token_request_claims_and_verifies() {
        let signer = TokenSigner::new();
        let now = 1_764_000_000;
        let token = signer.sign(
            "expandvm",
            "expandvm",
            "0b9f-uid",
            &["istio-ca".to_owned()],
            3600,
            now,
        );
        let parts: Vec<_> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_segment(parts[0]);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(
            header["kid"].as_str().unwrap().len(),
            43,
            "base64url of a SHA-256"
        );
        let claims = decode_segment(parts[1]);
        assert_eq!(
            claims["iss"],
            "https://kubernetes.default.svc.cluster.local"
        );
        assert_eq!(claims["sub"], "system:serviceaccount:expandvm:expandvm");
        assert_eq!(claims["aud"], json!(["istio-ca"]));
        assert_eq!(
            (
                claims["iat"].as_i64(),
                claims["nbf"].as_i64(),
                claims["exp"].as_i64()
            ),
            (Some(now), Some(now), Some(now + 3600))
        );
        assert_eq!(
            claims["kubernetes.io"],
            json!({"namespace": "expandvm", "serviceaccount": {"name": "expandvm", "uid": "0b9f-uid"}})
        );
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!((jti.len(), &jti[14..15]), (36, "4"));
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(),
            64,
            "JWS ES256 is r||s"
        );

        assert_eq!(signer.verify(&token, now + 10).unwrap(), claims);
        assert_eq!(
            signer.verify(&token, now + 3600).unwrap_err(),
            "token has expired"
        );
        assert_eq!(
            signer.verify(&token, now - 1).unwrap_err(),
            "token is not valid yet"
        );
        let tampered = token.replacen(parts[1], &URL_SAFE_NO_PAD.encode(b"{\"sub\":\"admin\"}"), 1);
        assert!(
            signer
                .verify(&tampered, now)
                .unwrap_err()
                .contains("does not verify")
        );
        assert!(
            TokenSigner::new().verify(&token, now).is_err(),
            "another signer's key"
        );
        let pem = signer.public_key_pem();
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----\n")
                && pem.ends_with("-----END PUBLIC KEY-----\n")
        );
        assert!(!format!("{signer:?}").contains("key:"));
    }
}
