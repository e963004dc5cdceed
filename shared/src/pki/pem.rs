//! A PEM reader that keeps each block's label and line number, so messages can point at them.
//!
//! We do not use rustls-pki-types' reader here: it silently skips blocks it does not know
//! (`ENCRYPTED PRIVATE KEY`, `EC PARAMETERS`), and an operator needs to hear about those.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Base64 as PEM writers produce it; some tools drop the `=` padding, which costs nothing to accept.
const PEM_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One `-----BEGIN X-----` … `-----END X-----` block.
pub(crate) struct Block {
    /// The label between `BEGIN ` and the dashes, e.g. `CERTIFICATE`.
    pub label: String,
    /// The decoded body.
    pub der: Vec<u8>,
    /// 1-based line of the BEGIN line.
    pub line: usize,
    /// An RFC 1421 `Proc-Type: 4,ENCRYPTED` header was present (OpenSSL's legacy encrypted keys).
    pub encrypted_header: bool,
}

// The body may be a private key: never print it.
impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("label", &self.label)
            .field("line", &self.line)
            .field("len", &self.der.len())
            .finish_non_exhaustive()
    }
}

/// What a block holds, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Certificate,
    Key(KeyFormat),
    EncryptedKey,
    /// `EC PARAMETERS`, which `openssl ecparam -genkey` writes before the key: harmless.
    Parameters,
    Other,
}

/// The encodings of an unencrypted private key that rustls can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFormat {
    Pkcs1,
    Pkcs8,
    Sec1,
}

impl Block {
    pub(crate) fn kind(&self) -> BlockKind {
        match self.label.as_str() {
            "CERTIFICATE" => BlockKind::Certificate,
            "ENCRYPTED PRIVATE KEY" => BlockKind::EncryptedKey,
            "RSA PRIVATE KEY" | "PRIVATE KEY" | "EC PRIVATE KEY" if self.encrypted_header => {
                BlockKind::EncryptedKey
            }
            "RSA PRIVATE KEY" => BlockKind::Key(KeyFormat::Pkcs1),
            "PRIVATE KEY" => BlockKind::Key(KeyFormat::Pkcs8),
            "EC PRIVATE KEY" => BlockKind::Key(KeyFormat::Sec1),
            "EC PARAMETERS" => BlockKind::Parameters,
            _ => BlockKind::Other,
        }
    }
}

/// Why bytes are not PEM; the text is shown to operators after the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemError {
    BadBeginLine {
        line: usize,
    },
    Unterminated {
        label: String,
        line: usize,
    },
    Mismatched {
        label: String,
        line: usize,
        end: String,
        end_line: usize,
    },
    NestedBegin {
        label: String,
        line: usize,
        inner_line: usize,
    },
    BadBase64 {
        label: String,
        line: usize,
    },
    EmptyBlock {
        label: String,
        line: usize,
    },
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBeginLine { line } => {
                write!(
                    f,
                    "line {line}: a BEGIN line that does not end in five dashes"
                )
            }
            Self::Unterminated { label, line } => write!(
                f,
                "the {label} block at line {line} has no END line (is the file truncated?)"
            ),
            Self::Mismatched {
                label,
                line,
                end,
                end_line,
            } => write!(
                f,
                "the {label} block at line {line} is closed by END {end} at line {end_line}"
            ),
            Self::NestedBegin {
                label,
                line,
                inner_line,
            } => write!(
                f,
                "the {label} block at line {line} has no END line before the next BEGIN at line {inner_line}"
            ),
            Self::BadBase64 { label, line } => {
                write!(f, "the {label} block at line {line} is not valid base64")
            }
            Self::EmptyBlock { label, line } => {
                write!(f, "the {label} block at line {line} is empty")
            }
        }
    }
}

/// Parse every PEM block in `bytes`, in order. Text outside blocks is ignored (RFC 7468 allows
/// explanatory text, and `openssl x509 -text` output puts the dump before the block).
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Block>, PemError> {
    struct Open {
        label: String,
        line: usize,
        body: Vec<u8>,
        encrypted_header: bool,
    }
    let mut blocks = Vec::new();
    let mut open: Option<Open> = None;
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let line = raw.trim_ascii();
        if let Some(rest) = line.strip_prefix(b"-----BEGIN") {
            if let Some(current) = &open {
                return Err(PemError::NestedBegin {
                    label: current.label.clone(),
                    line: current.line,
                    inner_line: number,
                });
            }
            let label = rest
                .strip_suffix(b"-----")
                .ok_or(PemError::BadBeginLine { line: number })?;
            open = Some(Open {
                label: String::from_utf8_lossy(label).trim().to_owned(),
                line: number,
                body: Vec::new(),
                encrypted_header: false,
            });
            continue;
        }
        let Some(current) = open.as_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix(b"-----END") {
            let end = String::from_utf8_lossy(rest.strip_suffix(b"-----").unwrap_or(rest))
                .trim()
                .to_owned();
            let current = open.take().expect("a block is open");
            if end != current.label {
                return Err(PemError::Mismatched {
                    label: current.label,
                    line: current.line,
                    end,
                    end_line: number,
                });
            }
            if current.body.is_empty() {
                return Err(PemError::EmptyBlock {
                    label: current.label,
                    line: current.line,
                });
            }
            let Ok(der) = PEM_BASE64.decode(&current.body) else {
                return Err(PemError::BadBase64 {
                    label: current.label,
                    line: current.line,
                });
            };
            blocks.push(Block {
                label: current.label,
                der,
                line: current.line,
                encrypted_header: current.encrypted_header,
            });
            continue;
        }
        if line.contains(&b':') {
            // RFC 1421 headers (`Proc-Type`, `DEK-Info`) precede the body of legacy encrypted keys.
            if line.starts_with(b"Proc-Type:") && line.windows(9).any(|w| w == b"ENCRYPTED") {
                current.encrypted_header = true;
            }
            continue;
        }
        current
            .body
            .extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
    }
    match open {
        Some(current) => Err(PemError::Unterminated {
            label: current.label,
            line: current.line,
        }),
        None => Ok(blocks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";

    #[test]
    fn reads_blocks_in_order_with_lines_and_ignores_text_around_them() {
        let text = format!(
            "subject=CN=x\r\n{CERT}\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
        );
        let blocks = parse(text.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0].der, vec![1, 2, 3]);
        assert_eq!(blocks[0].line, 2);
        assert_eq!(blocks[0].kind(), BlockKind::Certificate);
        assert_eq!(blocks[1].kind(), BlockKind::Parameters);
        assert_eq!(blocks[1].line, 6);
    }

    #[test]
    fn classifies_key_encodings_and_encrypted_keys() {
        let cases = [
            ("RSA PRIVATE KEY", "", BlockKind::Key(KeyFormat::Pkcs1)),
            ("PRIVATE KEY", "", BlockKind::Key(KeyFormat::Pkcs8)),
            ("EC PRIVATE KEY", "", BlockKind::Key(KeyFormat::Sec1)),
            ("ENCRYPTED PRIVATE KEY", "", BlockKind::EncryptedKey),
            (
                "RSA PRIVATE KEY",
                "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
                BlockKind::EncryptedKey,
            ),
            ("PUBLIC KEY", "", BlockKind::Other),
        ];
        for (label, headers, want) in cases {
            let text = format!("-----BEGIN {label}-----\n{headers}AQID\n-----END {label}-----\n");
            let blocks = parse(text.as_bytes()).unwrap();
            assert_eq!(blocks[0].kind(), want, "{label} {headers:?}");
        }
    }

    #[test]
    fn malformed_pem_is_reported_with_its_line() {
        let cases = [
            (
                "-----BEGIN CERTIFICATE-----\nAQID\n",
                "has no END line (is the file truncated?)",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAQID\n-----END PRIVATE KEY-----\n",
                "the CERTIFICATE block at line 1 is closed by END PRIVATE KEY at line 3",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAQID\n-----BEGIN CERTIFICATE-----\n",
                "before the next BEGIN at line 3",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "line 1 is not valid base64",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                "line 1 is empty",
            ),
            ("x\n-----BEGIN CERTIFICATE\n", "line 2: a BEGIN line"),
        ];
        for (text, want) in cases {
            let err = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn text_without_blocks_yields_nothing() {
        assert!(parse(b"hello\nworld").unwrap().is_empty());
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn debug_output_never_shows_the_body() {
        let text = concat!(
            "-----BEGIN ",
            "PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
        );
        let blocks = parse(text.as_bytes()).unwrap();
        let debug = format!("{blocks:?}");
        assert!(!debug.contains("115"), "{debug}"); // b's' would show as 115
        assert!(debug.contains("len: 16"), "{debug}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn pem_like_text_never_panics(text in "(-----(BEGIN|END) [A-Z ]{0,12}-{0,6}\n|[A-Za-z0-9+/=:\r ]{0,70}\n){0,12}") {
            let _ = parse(text.as_bytes());
        }

        #[test]
        fn any_body_round_trips(body in proptest::collection::vec(any::<u8>(), 1..600)) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
            let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
            for chunk in encoded.as_bytes().chunks(64) {
                text.push_str(std::str::from_utf8(chunk).unwrap());
                text.push('\n');
            }
            text.push_str("-----END CERTIFICATE-----\n");
            let blocks = parse(text.as_bytes()).unwrap();
            prop_assert_eq!(&blocks[0].der, &body);
        }
    }
}
