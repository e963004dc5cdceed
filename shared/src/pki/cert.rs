//! X.509 helpers shared by the CA and workload checks: names, fingerprints, dates, links, keys.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::sign::SigningKey;
use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::pem::KeyFormat;

/// A parsed certificate and where it came from, for messages.
pub(crate) struct Cert<'a> {
    pub x: X509Certificate<'a>,
    pub der: &'a [u8],
    /// The file (as named by the caller) holding it.
    pub file: &'a str,
    /// 1-based position in its file and how many certificates the file holds.
    pub pos: usize,
    pub of: usize,
}

impl Cert<'_> {
    /// "certificate 2 of 3 (CN=Root CA)" in a multi-certificate file, "" otherwise,
    /// so messages read "cert-chain.pem: certificate 2 of 3 (CN=Root CA) has expired".
    pub(crate) fn which(&self) -> String {
        if self.of > 1 {
            format!(
                "certificate {} of {} ({}) ",
                self.pos,
                self.of,
                self.subject()
            )
        } else {
            String::new()
        }
    }

    /// The subject as an RFC 4514 string, or a placeholder when it is empty (workload certs).
    pub(crate) fn subject(&self) -> String {
        display_name(self.x.subject())
    }

    pub(crate) fn issuer(&self) -> String {
        display_name(self.x.issuer())
    }

    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(self.der)
    }

    /// Whether the subject and issuer names are the same (self-issued).
    pub(crate) fn self_issued(&self) -> bool {
        self.x.subject().as_raw() == self.x.issuer().as_raw()
    }

    /// `basicConstraints` says CA:TRUE.
    pub(crate) fn is_ca(&self) -> bool {
        matches!(self.x.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
    }

    pub(crate) fn path_len(&self) -> Option<u32> {
        match self.x.basic_constraints() {
            Ok(Some(bc)) => bc.value.path_len_constraint,
            _ => None,
        }
    }

    /// Whether this certificate's key may sign certificates: without a keyUsage extension every
    /// usage is allowed (RFC 5280 4.2.1.3; Istio's sample root has none), with one it needs keyCertSign.
    pub(crate) fn may_sign_certs(&self) -> bool {
        match self.x.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    pub(crate) fn not_before(&self) -> i64 {
        self.x.validity().not_before.timestamp()
    }

    pub(crate) fn not_after(&self) -> i64 {
        self.x.validity().not_after.timestamp()
    }
}

/// Parse one DER certificate, refusing trailing bytes (they mean a corrupted block).
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        Ok(_) => Err("has extra bytes after the certificate".to_owned()),
        Err(e) => Err(format!("is not a valid X.509 certificate ({e})")),
    }
}

/// How a child certificate relates to a would-be issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Names match and the signature verifies with the issuer's key.
    Verified,
    /// The child names this issuer but the signature does not verify: a different key.
    BadSignature,
    /// The signature uses an algorithm or key size ring cannot check (e.g. RSA under 2048 bits).
    Unsupported,
    /// The child names another issuer.
    OtherIssuer,
}

pub(crate) fn link(child: &Cert<'_>, issuer: &Cert<'_>) -> Link {
    if child.x.issuer().as_raw() != issuer.x.subject().as_raw() {
        return Link::OtherIssuer;
    }
    match child.x.verify_signature(Some(issuer.x.public_key())) {
        Ok(()) => Link::Verified,
        Err(X509Error::SignatureUnsupportedAlgorithm) => Link::Unsupported,
        // ring verifies RSA from 2048 bits only: a shorter key is "cannot check", not "forged".
        Err(_) if matches!(issuer.x.public_key().parsed(), Ok(PublicKey::RSA(rsa)) if rsa.key_size() < 2048) => {
            Link::Unsupported
        }
        Err(_) => Link::BadSignature,
    }
}

/// SHA-256 of the DER, upper-case hex pairs joined by colons, as `openssl x509 -fingerprint -sha256`.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// A name as RFC 4514 writes it: most specific RDN first, `,` between RDNs, `+` inside one.
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let ty = match x509_parser::objects::oid2abbrev(oid, registry) {
                        Ok("Email") => "emailAddress".to_owned(),
                        Ok(abbrev) => abbrev.to_owned(),
                        Err(_) => oid.to_id_string(),
                    };
                    let value = match attr.as_str() {
                        Ok(s) => escape_rfc4514(s),
                        // RFC 4514 2.4: values without a string form are written as #hex of their BER.
                        Err(_) => format!("#{}", hex::encode(attr.attr_value().data)),
                    };
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn display_name(name: &X509Name<'_>) -> String {
    let text = rfc4514(name);
    if text.is_empty() {
        "empty subject".to_owned()
    } else {
        text
    }
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Seconds since the epoch, negative before it.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `2117-12-31T19:15:51Z`.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (the "days from civil" inverse
/// published by Howard Hinnant), so dates need no calendar crate.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// "3 days", "1 day", "less than a day".
pub(crate) fn span(secs: i64) -> String {
    match secs.unsigned_abs() / 86_400 {
        0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

/// Load a private key with rustls (PKCS#1, PKCS#8, SEC1; RSA, ECDSA P-256/P-384, Ed25519).
pub(crate) fn load_key(format: KeyFormat, der: &[u8]) -> Result<Arc<dyn SigningKey>, String> {
    let key = match format {
        KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.to_vec())),
        KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
        KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der.to_vec())),
    };
    // rustls' error text names only the key type, never key material.
    rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        "is not a private key this tool can use (supported: RSA 2048–8192 bits, ECDSA P-256 or P-384, Ed25519)"
            .to_owned()
    })
}

/// Outcome of comparing a private key with a certificate's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyMatch {
    Matches,
    /// Different keys; carries "the key is X, the certificate's is Y" when the types differ.
    Differs(Option<(String, String)>),
    Unknown,
}

pub(crate) fn key_matches(key: &dyn SigningKey, cert_spki: &SubjectPublicKeyInfo<'_>) -> KeyMatch {
    let Some(public) = key.public_key() else {
        return KeyMatch::Unknown;
    };
    let Ok((_, key_spki)) = SubjectPublicKeyInfo::from_der(public.as_ref()) else {
        return KeyMatch::Unknown;
    };
    // Compare the algorithm, its parameters (the curve) and the key bits, not the whole DER:
    // encoders differ on optional NULL parameters.
    let same_alg = key_spki.algorithm.algorithm == cert_spki.algorithm.algorithm
        && (key_spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
            || curve(&key_spki) == curve(cert_spki));
    if same_alg && key_spki.subject_public_key.data == cert_spki.subject_public_key.data {
        KeyMatch::Matches
    } else if same_alg {
        KeyMatch::Differs(None)
    } else {
        KeyMatch::Differs(Some((describe_key(&key_spki), describe_key(cert_spki))))
    }
}

fn curve(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    let params = spki.algorithm.parameters.as_ref()?;
    params.as_oid().ok().map(|oid| oid.to_id_string())
}

/// "RSA 2048-bit", "ECDSA P-256", "Ed25519".
pub(crate) fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => format!("RSA {}-bit", rsa.key_size()),
            _ => "RSA".to_owned(),
        }
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let id = curve(spki).unwrap_or_default();
        if id == OID_EC_P256.to_id_string() {
            "ECDSA P-256".to_owned()
        } else if id == OID_NIST_EC_P384.to_id_string() {
            "ECDSA P-384".to_owned()
        } else {
            format!("ECDSA (curve {id})")
        }
    } else if *alg == OID_SIG_ED25519 {
        "Ed25519".to_owned()
    } else {
        format!("key type {}", alg.to_id_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_as_rfc3339() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (4_670_421_351, "2117-12-31T19:15:51Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (1_767_225_600, "2026-01-01T00:00:00Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339(secs), want);
        }
    }

    #[test]
    fn time_conversions_round_trip_across_the_epoch() {
        for secs in [-86_400, 0, 1_767_225_600] {
            assert_eq!(unix_secs(system_time(secs)), secs);
        }
    }

    #[test]
    fn spans_are_whole_days() {
        assert_eq!(span(3600), "less than a day");
        assert_eq!(span(86_400), "1 day");
        assert_eq!(span(-10 * 86_400 - 5), "10 days");
    }

    #[test]
    fn rfc4514_escapes_special_characters() {
        assert_eq!(escape_rfc4514("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc4514(" #x "), "\\ #x\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
    }
}
