//! PEM/X.509 validation shared by prepare, bundle and doctor: plugged-in CAs, workload identities, roots.
//!
//! The flow is *load, then judge*. Loading ([`CaPaths::read`], [`CaMaterial::from_secret_data`], and the
//! workload equivalents) only gets bytes and fails with a [`PkiError`] when a file cannot be read.
//! Judging ([`check_ca`], [`check_workload`]) is pure: it takes the bytes and a `now`, and returns every
//! problem it finds as a [`CertFinding`] that names the file (as the caller named it) and says in an
//! operator's words what is wrong. An empty list means the material is good; any
//! [`CertSeverity::Error`] means it must not be used.
//!
//! Key bytes are only ever held in [`PemInput`], whose `Debug` output leaves the content out, and no
//! message quotes file content.

mod ca;
mod cert;
mod pem;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use ca::check_ca;
pub use workload::{SpiffeId, check_workload, spiffe_id};

use cert::Cert;
use pem::{Block, BlockKind, KeyFormat};

/// Key of the signing CA's certificate in `cacerts`.
pub const CA_CERT: &str = "ca-cert.pem";
/// Key of the signing CA's private key in `cacerts`.
pub const CA_KEY: &str = "ca-key.pem";
/// Key of the root certificate(s), in `cacerts` and in `istio.<sa>` secrets.
pub const ROOT_CERT: &str = "root-cert.pem";
/// Key of the certificate chain, in `cacerts` and in `istio.<sa>` secrets.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// Key of a workload's private key in an `istio.<sa>` secret and in a legacy bundle.
pub const KEY: &str = "key.pem";

/// How long before expiry a certificate earns a warning unless the operator says otherwise.
pub const DEFAULT_WARN_WITHIN: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Loading failed: a file could not be read or a Secret lacks a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The path does not exist.
    #[error("{path}: no such file")]
    NotFound {
        /// The path as the operator gave it.
        path: String,
    },
    /// The path names a directory.
    #[error("{path}: is a directory, not a PEM file")]
    NotAFile {
        /// The path as the operator gave it.
        path: String,
    },
    /// The file exists but reading it failed (permissions, I/O).
    #[error("{path}: cannot read it: {source}")]
    Unreadable {
        /// The path as the operator gave it.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A Secret's `data` lacks keys the material needs.
    #[error("{secret} has no {}", keys.join(", "))]
    MissingKeys {
        /// How the caller names the Secret, e.g. `secret istio-system/cacerts`.
        secret: String,
        /// The missing keys.
        keys: Vec<String>,
    },
    /// Bytes given to [`root_identity`] and friends hold no usable certificate.
    #[error("{0}")]
    Invalid(String),
    /// More than one of the above, e.g. two of the four CA files are missing.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<PkiError>),
}

impl PkiError {
    fn collect(mut errors: Vec<PkiError>) -> Result<(), PkiError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(PkiError::Several(errors)),
        }
    }
}

/// The content of one input file (or Secret key) and the name messages use for it.
///
/// `Debug` shows the name and the length only: a key file is secret, and certificates in debug
/// output are noise.
#[derive(Clone, PartialEq, Eq)]
pub struct PemInput {
    name: String,
    bytes: Vec<u8>,
}

impl PemInput {
    /// Material named `name` (a path as given, or `secret ns/name[key]`).
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// Read a file; the name is the path as given.
    pub fn read(path: &Path) -> Result<Self, PkiError> {
        let name = path.display().to_string();
        if path.is_dir() {
            return Err(PkiError::NotAFile { path: name });
        }
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self { name, bytes }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PkiError::NotFound { path: name }),
            Err(source) => Err(PkiError::Unreadable { path: name, source }),
        }
    }

    /// The name findings use for this input.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw bytes (for writing a Secret or a bundle; never for printing).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for PemInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemInput")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Read several files, reporting every unreadable one at once.
fn read_all<const N: usize>(paths: [&Path; N]) -> Result<[PemInput; N], PkiError> {
    let mut errors = Vec::new();
    let mut inputs = Vec::with_capacity(N);
    for path in paths {
        match PemInput::read(path) {
            Ok(input) => inputs.push(input),
            Err(e) => errors.push(e),
        }
    }
    PkiError::collect(errors)?;
    Ok(inputs.try_into().expect("one input per path"))
}

/// Take keys from a Secret's `data`, reporting every missing key at once.
fn from_data<const N: usize>(
    secret: &str,
    data: &BTreeMap<String, Vec<u8>>,
    keys: [&str; N],
) -> Result<[PemInput; N], PkiError> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !data.contains_key(**k))
        .map(|k| (*k).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(PkiError::MissingKeys {
            secret: secret.to_owned(),
            keys: missing,
        });
    }
    Ok(keys.map(|k| PemInput::new(format!("{secret}[{k}]"), data[k].clone())))
}

/// Where the four plugged-in CA files are (`--ca-dir DIR`, or one flag per file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// `--ca-cert`: the signing CA's certificate.
    pub ca_cert: PathBuf,
    /// `--ca-key`: the signing CA's private key.
    pub ca_key: PathBuf,
    /// `--root-cert`: the root certificate(s).
    pub root_cert: PathBuf,
    /// `--cert-chain`: the signing CA's certificate followed by its issuers.
    pub cert_chain: PathBuf,
}

impl CaPaths {
    /// The four well-known names inside `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            root_cert: dir.join(ROOT_CERT),
            cert_chain: dir.join(CERT_CHAIN),
        }
    }

    /// Read all four files; every unreadable one is reported.
    pub fn read(&self) -> Result<CaMaterial, PkiError> {
        let [ca_cert, ca_key, root_cert, cert_chain] = read_all([
            &self.ca_cert,
            &self.ca_key,
            &self.root_cert,
            &self.cert_chain,
        ])?;
        Ok(CaMaterial {
            ca_cert,
            ca_key,
            root_cert,
            cert_chain,
        })
    }
}

/// The content of a plugged-in CA (the `cacerts` secret), to be judged by [`check_ca`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// `ca-cert.pem`: exactly one certificate, the CA that signs workload certificates.
    pub ca_cert: PemInput,
    /// `ca-key.pem`: its private key.
    pub ca_key: PemInput,
    /// `root-cert.pem`: one or more self-signed roots.
    pub root_cert: PemInput,
    /// `cert-chain.pem`: `ca-cert.pem` first, then each issuer up to (optionally) the root.
    pub cert_chain: PemInput,
}

impl CaMaterial {
    /// From a Secret's decoded `data` (e.g. an existing `cacerts`); `secret` names it in messages,
    /// e.g. `secret istio-system/cacerts`, and each input is named `secret …[ca-cert.pem]`.
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, PkiError> {
        let [ca_cert, ca_key, root_cert, cert_chain] =
            from_data(secret, data, [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN])?;
        Ok(Self {
            ca_cert,
            ca_key,
            root_cert,
            cert_chain,
        })
    }

    /// The `data` of a `cacerts` Secret holding these bytes unchanged, under the four well-known keys
    /// (what `kubectl create secret generic cacerts --from-file=…` makes from a `--ca-dir`).
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        [
            (CA_CERT, &self.ca_cert),
            (CA_KEY, &self.ca_key),
            (ROOT_CERT, &self.root_cert),
            (CERT_CHAIN, &self.cert_chain),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.bytes.clone()))
        .collect()
    }
}

/// Where a workload's identity files are (a legacy bundle directory, or one path each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPaths {
    /// `root-cert.pem`.
    pub root_cert: PathBuf,
    /// `cert-chain.pem`: the workload certificate first, then its issuers.
    pub cert_chain: PathBuf,
    /// `key.pem`.
    pub key: PathBuf,
}

impl WorkloadPaths {
    /// The three well-known names inside `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            root_cert: dir.join(ROOT_CERT),
            cert_chain: dir.join(CERT_CHAIN),
            key: dir.join(KEY),
        }
    }

    /// Read all three files; every unreadable one is reported.
    pub fn read(&self) -> Result<WorkloadMaterial, PkiError> {
        let [root_cert, cert_chain, key] =
            read_all([&self.root_cert, &self.cert_chain, &self.key])?;
        Ok(WorkloadMaterial {
            root_cert,
            cert_chain,
            key,
        })
    }
}

/// A workload identity (legacy `istio.<sa>` secret or bundle files), to be judged by [`check_workload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadMaterial {
    /// `root-cert.pem`: the root(s) the chain must verify to.
    pub root_cert: PemInput,
    /// `cert-chain.pem`: the workload certificate, then any intermediates.
    pub cert_chain: PemInput,
    /// `key.pem`: the workload's private key.
    pub key: PemInput,
}

impl WorkloadMaterial {
    /// From a Secret's decoded `data` (an `istio.<sa>` secret); `secret` names it in messages.
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, PkiError> {
        let [root_cert, cert_chain, key] = from_data(secret, data, [ROOT_CERT, CERT_CHAIN, KEY])?;
        Ok(Self {
            root_cert,
            cert_chain,
            key,
        })
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSeverity {
    /// The material must not be used.
    Error,
    /// Usable now, but needs attention (e.g. expires soon).
    Warning,
}

impl CertSeverity {
    /// `error` or `warning`, as the line prefix and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// What kind of problem a finding reports, for callers that react to some (e.g. bundle's
/// "restart Citadel" hint on [`CertFindingKind::Expired`]) without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CertFindingKind {
    /// The file is empty.
    Empty,
    /// The file is not PEM, or its PEM is malformed.
    NotPem,
    /// A block of the wrong type: a certificate where the key belongs, a key among certificates, …
    WrongType,
    /// The private key is encrypted; Istio needs it in the clear.
    Encrypted,
    /// Several certificates (or keys) where exactly one belongs.
    TooMany,
    /// A PEM block that does not decode as a certificate.
    Unparseable,
    /// A private key this tool cannot load (unsupported type or size, or corrupt).
    UnsupportedKey,
    /// The private key does not belong to the certificate.
    KeyMismatch,
    /// A certificate that must be a CA is not one (basicConstraints / keyUsage).
    NotCa,
    /// A root that is not self-signed, or whose self-signature does not verify.
    NotSelfSigned,
    /// `cert-chain.pem` does not start with the certificate it must start with.
    ChainStart,
    /// The right certificates, in the wrong order.
    ChainOrder,
    /// The chain does not verify up to `root-cert.pem`.
    ChainBroken,
    /// A CA's pathLenConstraint forbids the chain.
    PathLength,
    /// The workload certificate is a CA, or lacks the usages mTLS needs.
    NotWorkloadCert,
    /// Not valid yet.
    NotYetValid,
    /// Expired.
    Expired,
    /// Expires within the warning window.
    ExpiresSoon,
    /// The workload certificate's SPIFFE identity is not the expected one.
    SanMismatch,
}

/// One problem with one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertFinding {
    /// Error (unusable) or warning.
    pub severity: CertSeverity,
    /// Machine-readable category.
    pub kind: CertFindingKind,
    /// The file (as the caller named it) the problem is in.
    pub file: String,
    /// What is wrong, in an operator's words; starts lower-case and reads after `file: `.
    pub problem: String,
}

impl fmt::Display for CertFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)
    }
}

/// True when any finding is an error.
pub fn has_errors(findings: &[CertFinding]) -> bool {
    findings.iter().any(|f| f.severity == CertSeverity::Error)
}

/// Write findings one per line, `error: FILE: PROBLEM` or `warning: FILE: PROBLEM`, errors first.
pub fn write_findings(out: &mut impl io::Write, findings: &[CertFinding]) -> io::Result<()> {
    for severity in [CertSeverity::Error, CertSeverity::Warning] {
        for f in findings.iter().filter(|f| f.severity == severity) {
            writeln!(out, "{}: {f}", severity.as_str())?;
        }
    }
    Ok(())
}

/// Accumulates findings while judging.
#[derive(Default)]
pub(crate) struct Findings(Vec<CertFinding>);

impl Findings {
    pub(crate) fn error(&mut self, file: &str, kind: CertFindingKind, problem: impl Into<String>) {
        self.push(CertSeverity::Error, file, kind, problem.into());
    }

    pub(crate) fn warn(&mut self, file: &str, kind: CertFindingKind, problem: impl Into<String>) {
        self.push(CertSeverity::Warning, file, kind, problem.into());
    }

    fn push(&mut self, severity: CertSeverity, file: &str, kind: CertFindingKind, problem: String) {
        let finding = CertFinding {
            severity,
            kind,
            file: file.to_owned(),
            problem,
        };
        if !self.0.contains(&finding) {
            self.0.push(finding);
        }
    }

    pub(crate) fn into_vec(self) -> Vec<CertFinding> {
        self.0
    }
}

/// How many certificates a file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Exactly one; the text says which, for the message ("the signing CA's certificate").
    One(&'static str),
    AtLeastOne,
}

/// Parse `input` as PEM, reporting "empty" and "not PEM" problems.
fn pem_blocks(input: &PemInput, out: &mut Findings) -> Option<Vec<Block>> {
    let name = input.name();
    if input.bytes.trim_ascii().is_empty() {
        out.error(name, CertFindingKind::Empty, "is empty");
        return None;
    }
    match pem::parse(&input.bytes) {
        Err(e) => {
            out.error(
                name,
                CertFindingKind::NotPem,
                format!("is not valid PEM: {e}"),
            );
            None
        }
        Ok(blocks) if blocks.is_empty() => {
            // A DER file starts with a SEQUENCE tag; say so, it is the most common mix-up.
            let problem = if input.bytes.first() == Some(&0x30) {
                "is not PEM: it looks like binary DER; convert it to PEM with `openssl x509 -inform der` (certificates) or `openssl pkey -inform der` (keys)"
            } else {
                "is not PEM: it has no -----BEGIN line"
            };
            out.error(name, CertFindingKind::NotPem, problem);
            None
        }
        Ok(blocks) => Some(blocks),
    }
}

/// The certificate blocks of a certificates file, after reporting blocks of the wrong type and counts.
pub(crate) fn cert_blocks(
    input: &PemInput,
    expect: Expect,
    out: &mut Findings,
) -> Option<Vec<Block>> {
    let name = input.name();
    let blocks = pem_blocks(input, out)?;
    let (certs, others): (Vec<Block>, Vec<Block>) = blocks
        .into_iter()
        .partition(|b| b.kind() == BlockKind::Certificate);
    for other in &others {
        match other.kind() {
            BlockKind::Key(_) | BlockKind::EncryptedKey => out.error(
                name,
                CertFindingKind::WrongType,
                format!(
                    "holds a private key ({} at line {}) where only certificates belong; \
                     certificate files are handed out, so keep the key in its own file",
                    other.label, other.line
                ),
            ),
            _ if certs.is_empty() => out.error(
                name,
                CertFindingKind::WrongType,
                format!(
                    "holds a {} block (line {}), not a certificate",
                    other.label, other.line
                ),
            ),
            _ => out.warn(
                name,
                CertFindingKind::WrongType,
                format!(
                    "also holds a {} block (line {}), which is ignored",
                    other.label, other.line
                ),
            ),
        }
    }
    if certs.is_empty() {
        if others.is_empty() {
            out.error(name, CertFindingKind::NotPem, "holds no certificate");
        }
        return None;
    }
    if let Expect::One(what) = expect
        && certs.len() > 1
    {
        out.error(
            name,
            CertFindingKind::TooMany,
            format!(
                "holds {} certificates; it must hold exactly one ({what}); the rest of the chain belongs in {CERT_CHAIN}",
                certs.len()
            ),
        );
        return None;
    }
    Some(certs)
}

/// Parse certificate blocks; None (after reporting) when any does not parse.
pub(crate) fn parse_certs<'a>(
    input: &'a PemInput,
    blocks: &'a [Block],
    out: &mut Findings,
) -> Option<Vec<Cert<'a>>> {
    let mut certs = Vec::with_capacity(blocks.len());
    let mut ok = true;
    for (i, block) in blocks.iter().enumerate() {
        match cert::parse_cert(&block.der) {
            Ok(x) => certs.push(Cert {
                x,
                der: &block.der,
                file: input.name(),
                pos: i + 1,
                of: blocks.len(),
            }),
            Err(problem) => {
                ok = false;
                let which = if blocks.len() > 1 {
                    format!("certificate {} of {} ", i + 1, blocks.len())
                } else {
                    "the certificate ".to_owned()
                };
                out.error(
                    input.name(),
                    CertFindingKind::Unparseable,
                    format!("{which}(line {}) {problem}", block.line),
                );
            }
        }
    }
    ok.then_some(certs)
}

/// Read and load the single private key in `input`, reporting every problem.
pub(crate) fn load_key(
    input: &PemInput,
    out: &mut Findings,
) -> Option<std::sync::Arc<dyn rustls::sign::SigningKey>> {
    let name = input.name();
    let blocks = pem_blocks(input, out)?;
    let mut keys: Vec<(KeyFormat, &Block)> = Vec::new();
    let mut trouble = false;
    for block in &blocks {
        match block.kind() {
            BlockKind::Key(format) => keys.push((format, block)),
            BlockKind::Parameters => {}
            BlockKind::EncryptedKey => {
                trouble = true;
                out.error(
                    name,
                    CertFindingKind::Encrypted,
                    format!(
                        "holds an encrypted private key (line {}); Istio reads keys unencrypted: decrypt it with `openssl pkey` first",
                        block.line
                    ),
                );
            }
            BlockKind::Certificate => {
                trouble = true;
                out.error(
                    name,
                    CertFindingKind::WrongType,
                    format!(
                        "holds a certificate (line {}) where only the private key belongs; were the certificate and key files swapped?",
                        block.line
                    ),
                );
            }
            BlockKind::Other => {
                trouble = true;
                out.error(
                    name,
                    CertFindingKind::WrongType,
                    format!(
                        "holds a {} block (line {}), not a private key",
                        block.label, block.line
                    ),
                );
            }
        }
    }
    match keys.as_slice() {
        [] => {
            if !trouble {
                out.error(name, CertFindingKind::NotPem, "holds no private key");
            }
            None
        }
        [(format, block)] if !trouble => match cert::load_key(*format, &block.der) {
            Ok(key) => Some(key),
            Err(problem) => {
                out.error(
                    name,
                    CertFindingKind::UnsupportedKey,
                    format!("the {} at line {} {problem}", block.label, block.line),
                );
                None
            }
        },
        [_] => None,
        many => {
            out.error(
                name,
                CertFindingKind::TooMany,
                format!(
                    "holds {} private keys; it must hold exactly one",
                    many.len()
                ),
            );
            None
        }
    }
}

/// Compare a key with a certificate's public key, reporting a mismatch against `key_file`.
pub(crate) fn check_key_matches(
    key: &dyn rustls::sign::SigningKey,
    key_file: &str,
    cert: &Cert<'_>,
    out: &mut Findings,
) {
    match cert::key_matches(key, cert.x.public_key()) {
        cert::KeyMatch::Matches => {}
        cert::KeyMatch::Differs(Some((key_type, cert_type))) => out.error(
            key_file,
            CertFindingKind::KeyMismatch,
            format!(
                "does not match the certificate in {}: the key is {key_type}, the certificate's key is {cert_type}",
                cert.file
            ),
        ),
        cert::KeyMatch::Differs(None) => out.error(
            key_file,
            CertFindingKind::KeyMismatch,
            format!(
                "does not match the certificate in {} ({}): it is the key of another certificate",
                cert.file,
                cert.subject()
            ),
        ),
        cert::KeyMatch::Unknown => out.warn(
            key_file,
            CertFindingKind::UnsupportedKey,
            format!("could not be compared with {}", cert.file),
        ),
    }
}

/// Report each distinct certificate that is not yet valid, expired, or expiring within `warn_within`.
pub(crate) fn check_validity(
    certs: &[&Cert<'_>],
    now: SystemTime,
    warn_within: Duration,
    out: &mut Findings,
) {
    let now = cert::unix_secs(now);
    let warn = i64::try_from(warn_within.as_secs()).unwrap_or(i64::MAX);
    let mut seen = BTreeSet::new();
    for c in certs {
        if !seen.insert(c.der) {
            continue;
        }
        // One finding per certificate, on the first file holding it; say where else it is, since
        // the operator has to replace it there too.
        let mut elsewhere: Vec<&str> = certs
            .iter()
            .filter(|o| o.der == c.der && o.file != c.file)
            .map(|o| o.file)
            .collect();
        elsewhere.dedup();
        let also = if elsewhere.is_empty() {
            String::new()
        } else {
            format!(" (the same certificate is in {})", elsewhere.join(", "))
        };
        let (nb, na) = (c.not_before(), c.not_after());
        let which = c.which();
        if now < nb {
            out.error(
                c.file,
                CertFindingKind::NotYetValid,
                format!(
                    "{which}is not valid until {} ({} from now){also}; check this machine's clock, or reissue it",
                    cert::rfc3339(nb),
                    cert::span(nb - now)
                ),
            );
        } else if now > na {
            out.error(
                c.file,
                CertFindingKind::Expired,
                format!(
                    "{which}expired on {} ({} ago){also}; it must be reissued",
                    cert::rfc3339(na),
                    cert::span(now - na)
                ),
            );
        } else if na - now < warn {
            out.warn(
                c.file,
                CertFindingKind::ExpiresSoon,
                format!(
                    "{which}expires on {} (in {}){also}; plan to reissue it",
                    cert::rfc3339(na),
                    cert::span(na - now)
                ),
            );
        }
    }
}

/// A root certificate as messages and comparisons show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootIdentity {
    /// Subject as an RFC 4514 string (most specific first), e.g. `CN=Root CA,O=Istio,C=US`.
    pub subject: String,
    /// SHA-256 of the DER, colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256`.
    pub sha256: String,
    /// End of validity.
    pub not_after: SystemTime,
}

impl fmt::Display for RootIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = if self.subject.is_empty() {
            "empty subject"
        } else {
            &self.subject
        };
        write!(
            f,
            "{subject} (SHA-256 {}, expires {})",
            self.sha256,
            cert::rfc3339(cert::unix_secs(self.not_after))
        )
    }
}

/// The identity of the first certificate in `pem` (a `root-cert.pem`, an `istio-ca-root-cert` entry).
pub fn root_identity(pem: &[u8]) -> Result<RootIdentity, PkiError> {
    root_identities(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Invalid("holds no certificate".to_owned()))
}

/// The identities of every certificate in `pem`, in file order; an error if there is none or one
/// does not parse.
pub fn root_identities(pem: &[u8]) -> Result<Vec<RootIdentity>, PkiError> {
    if pem.trim_ascii().is_empty() {
        return Err(PkiError::Invalid("is empty".to_owned()));
    }
    let blocks =
        pem::parse(pem).map_err(|e| PkiError::Invalid(format!("is not valid PEM: {e}")))?;
    let mut roots = Vec::new();
    for block in blocks.iter().filter(|b| b.kind() == BlockKind::Certificate) {
        let x = cert::parse_cert(&block.der).map_err(|problem| {
            PkiError::Invalid(format!("the certificate at line {} {problem}", block.line))
        })?;
        roots.push(RootIdentity {
            subject: cert::rfc4514(x.subject()),
            sha256: cert::fingerprint(&block.der),
            not_after: cert::system_time(x.validity().not_after.timestamp()),
        });
    }
    if roots.is_empty() {
        return Err(PkiError::Invalid("holds no certificate".to_owned()));
    }
    Ok(roots)
}

/// How two root bundles relate (for `ca.root-consistent` and prepare's "different CA" refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootComparison {
    /// Roots in both bundles.
    pub common: Vec<RootIdentity>,
    /// Roots only in the first bundle.
    pub only_left: Vec<RootIdentity>,
    /// Roots only in the second bundle.
    pub only_right: Vec<RootIdentity>,
}

impl RootComparison {
    /// The two bundles hold the same set of roots (order and duplicates aside).
    pub fn same(&self) -> bool {
        self.only_left.is_empty() && self.only_right.is_empty()
    }

    /// They share at least one root, so workloads under either still trust each other during a rotation.
    pub fn overlap(&self) -> bool {
        !self.common.is_empty()
    }
}

/// Compare two PEM root bundles by certificate fingerprint.
pub fn compare_roots(left: &[u8], right: &[u8]) -> Result<RootComparison, PkiError> {
    let dedup = |roots: Vec<RootIdentity>| {
        let mut seen = BTreeSet::new();
        roots
            .into_iter()
            .filter(|r| seen.insert(r.sha256.clone()))
            .collect::<Vec<_>>()
    };
    let left = dedup(root_identities(left)?);
    let right = dedup(root_identities(right)?);
    let in_right: BTreeSet<&str> = right.iter().map(|r| r.sha256.as_str()).collect();
    let in_left: BTreeSet<&str> = left.iter().map(|r| r.sha256.as_str()).collect();
    let (common, only_left) = left
        .iter()
        .cloned()
        .partition(|r| in_right.contains(r.sha256.as_str()));
    let only_right = right
        .iter()
        .filter(|r| !in_left.contains(r.sha256.as_str()))
        .cloned()
        .collect();
    Ok(RootComparison {
        common,
        only_left,
        only_right,
    })
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn reading_reports_every_missing_file_by_the_path_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT), b"x").unwrap();
        std::fs::write(dir.path().join(ROOT_CERT), b"x").unwrap();
        let err = CaPaths::from_dir(dir.path()).read().unwrap_err();
        let text = err.to_string();
        let key = dir.path().join(CA_KEY).display().to_string();
        let chain = dir.path().join(CERT_CHAIN).display().to_string();
        assert_eq!(text, format!("{key}: no such file; {chain}: no such file"));
        assert!(matches!(err, PkiError::Several(ref v) if v.len() == 2));
    }

    #[test]
    fn reading_a_directory_or_unreadable_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = PemInput::read(dir.path()).unwrap_err();
        assert!(matches!(err, PkiError::NotAFile { .. }), "{err}");
        let one = PemInput::read(&dir.path().join("nope.pem")).unwrap_err();
        assert!(one.to_string().ends_with("nope.pem: no such file"), "{one}");
    }

    #[test]
    fn reading_the_samples_names_files_as_given() {
        let m = CaPaths::from_dir(samples_dir()).read().unwrap();
        assert!(m.ca_key.name().ends_with("samples/ca-key.pem"));
        assert_eq!(m.to_secret_data().len(), 4);
        let w = WorkloadPaths {
            root_cert: samples_dir().join("root-cert.pem"),
            cert_chain: samples_dir().join("workload-foo-cert.pem"),
            key: samples_dir().join("workload-foo-key.pem"),
        }
        .read()
        .unwrap();
        assert!(w.key.name().ends_with("workload-foo-key.pem"));
    }

    #[test]
    fn secret_data_round_trips_and_missing_keys_are_listed() {
        let m = CaPaths::from_dir(samples_dir()).read().unwrap();
        let data = m.to_secret_data();
        let back = CaMaterial::from_secret_data("secret istio-system/cacerts", &data).unwrap();
        assert_eq!(back.ca_key.bytes(), m.ca_key.bytes());
        assert_eq!(
            back.ca_key.name(),
            "secret istio-system/cacerts[ca-key.pem]"
        );

        let mut partial = data.clone();
        partial.remove(CA_KEY);
        partial.remove(CERT_CHAIN);
        let err =
            CaMaterial::from_secret_data("secret istio-system/cacerts", &partial).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret istio-system/cacerts has no ca-key.pem, cert-chain.pem"
        );
        let err = WorkloadMaterial::from_secret_data("secret foo/istio.foo", &data).unwrap_err();
        assert_eq!(err.to_string(), "secret foo/istio.foo has no key.pem");
    }

    #[test]
    fn debug_output_never_contains_key_bytes() {
        let m = CaPaths::from_dir(samples_dir()).read().unwrap();
        let debug = format!("{m:?}");
        let key_text = std::str::from_utf8(m.ca_key.bytes()).unwrap();
        let body_line = key_text.lines().nth(1).unwrap();
        assert!(!debug.contains(body_line), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        assert!(debug.contains("ca-key.pem"), "{debug}");
    }

    #[test]
    fn root_identity_matches_openssl() {
        let root = std::fs::read(samples_dir().join("root-cert.pem")).unwrap();
        let id = root_identity(&root).unwrap();
        // `openssl x509 -in root-cert.pem -noout -fingerprint -sha256 -subject -nameopt RFC2253 -enddate`
        assert_eq!(
            id.sha256,
            "63:72:7A:17:85:CA:B4:7A:CE:C5:C2:4C:C0:66:9C:20:82:4E:8A:E1:AC:28:07:9A:4D:2F:8C:83:05:92:E7:B0"
        );
        assert_eq!(
            id.subject,
            "emailAddress=testrootca@istio.io,CN=Root CA,OU=Test,O=Istio,L=Sunnyvale,ST=California,C=US"
        );
        assert_eq!(
            cert::rfc3339(cert::unix_secs(id.not_after)),
            "2117-12-31T19:15:51Z"
        );
        assert!(id.to_string().contains("SHA-256 63:72:7A"), "{id}");
    }

    #[test]
    fn root_identity_rejects_what_holds_no_certificate() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "is empty"),
            (b"garbage", "holds no certificate"),
            (b"-----BEGIN CERTIFICATE-----\nAQID\n", "is not valid PEM"),
            (
                b"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n",
                "is not a valid X.509 certificate",
            ),
        ];
        for (pem, want) in cases {
            let err = root_identity(pem).unwrap_err().to_string();
            assert!(err.contains(want), "{pem:?}: {err}");
        }
    }

    #[test]
    fn findings_render_as_lines_errors_first_and_as_json() {
        let findings = vec![
            CertFinding {
                severity: CertSeverity::Warning,
                kind: CertFindingKind::ExpiresSoon,
                file: "root-cert.pem".into(),
                problem: "expires soon".into(),
            },
            CertFinding {
                severity: CertSeverity::Error,
                kind: CertFindingKind::KeyMismatch,
                file: "ca-key.pem".into(),
                problem: "does not match".into(),
            },
        ];
        let mut out = Vec::new();
        write_findings(&mut out, &findings).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: ca-key.pem: does not match\nwarning: root-cert.pem: expires soon\n"
        );
        assert_eq!(
            serde_json::to_string(&findings[1]).unwrap(),
            r#"{"severity":"error","kind":"key-mismatch","file":"ca-key.pem","problem":"does not match"}"#
        );
    }

    #[test]
    fn an_expired_flat_ca_is_reported_once_naming_every_file_holding_it() {
        let ca = Spec::ca("Flat", KeyKind::P256)
            .valid(now() - days(30), now() - days(1))
            .self_signed();
        let m = ca_material(&ca.cert_pem, &ca.key_pem, &ca.cert_pem, &ca.cert_pem);
        let findings = check_ca(&m, now(), DEFAULT_WARN_WITHIN);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(
            findings[0].to_string(),
            "ca-cert.pem: expired on 2025-12-31T00:00:00Z (1 day ago) (the same certificate is in cert-chain.pem, root-cert.pem); it must be reissued"
        );
    }

    proptest::proptest! {
        #[test]
        fn judging_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            slot in 0usize..4,
        ) {
            let good = sample_material();
            let mut m = good.clone();
            let target = [&mut m.ca_cert, &mut m.ca_key, &mut m.root_cert, &mut m.cert_chain];
            *target.into_iter().nth(slot).unwrap() = PemInput::new("x.pem", bytes.clone());
            let findings = check_ca(&m, now(), DEFAULT_WARN_WITHIN);
            proptest::prop_assert!(has_errors(&findings));
            let _ = root_identities(&bytes);
        }

        #[test]
        fn judging_corrupted_certificates_never_panics(index in 0usize..1400, byte in proptest::prelude::any::<u8>()) {
            // Flip one byte of the DER inside valid PEM: x509 parsing and signature checks see it.
            let mut der = pem_body(&sample("cert-chain.pem"));
            let i = index % der.len();
            der[i] = byte;
            let chain = to_pem("CERTIFICATE", &der);
            let mut m = sample_material();
            m.cert_chain = PemInput::new(CERT_CHAIN, chain.clone());
            let _ = check_ca(&m, now(), DEFAULT_WARN_WITHIN);
            let w = workload_material(&sample("root-cert.pem"), &chain, &sample("ca-key.pem"));
            let _ = check_workload(&w, Some(("foo", "foo")), now(), DEFAULT_WARN_WITHIN);
        }
    }

    #[test]
    fn comparing_root_bundles() {
        let a = TestCa::flat(KeyKind::P256, "Root A");
        let b = TestCa::flat(KeyKind::P256, "Root B");
        let a_pem = a.cert_pem.as_bytes();
        let b_pem = b.cert_pem.as_bytes();
        let both = format!("{}{}", a.cert_pem, b.cert_pem);
        let both_reversed = format!("{}{}{}", b.cert_pem, a.cert_pem, b.cert_pem);

        assert!(compare_roots(a_pem, a_pem).unwrap().same());
        assert!(
            compare_roots(both.as_bytes(), both_reversed.as_bytes())
                .unwrap()
                .same()
        );
        let diff = compare_roots(a_pem, b_pem).unwrap();
        assert!(!diff.same() && !diff.overlap());
        assert_eq!(diff.only_left[0].subject, "CN=Root A,O=meshvm test");
        assert_eq!(diff.only_right[0].subject, "CN=Root B,O=meshvm test");
        let rotation = compare_roots(a_pem, both.as_bytes()).unwrap();
        assert!(!rotation.same() && rotation.overlap());
        assert_eq!(rotation.only_right.len(), 1);
        assert!(compare_roots(a_pem, b"").is_err());
    }
}
