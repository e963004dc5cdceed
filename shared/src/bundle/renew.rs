//! `kubectl meshvm bundle --renew -d DIR`: re-issue only the credentials of an existing bundle
//! ([`crate::vmfiles::credentials`]), leaving every other file byte-identical, rewriting
//! `SHA256SUMS` (and `--archive`), and telling what changed without showing any secret.
//!
//! Legacy: the three PEM files come from the current `istio.<sa>` secret, checked exactly as
//! `bundle` checks it (issued under the root in `cacerts`, chaining to it, for this namespace and
//! ServiceAccount; `--wait` for Citadel to re-issue after a CA change). Modern: a new
//! TokenRequest (audience `istio-ca`, `--token-duration`) and the current `istio-ca-root-cert`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use super::{Bundle, BundleFile, Error, GatewaySource, Options, observe, output, plan};
use crate::errors::{Outcome, UsageError};
use crate::flags::OutputFormat;
use crate::istio::Era;
use crate::{pki, vmfiles};

/// A bundle directory as found on disk, and whom it is for.
#[derive(Debug, Clone)]
pub struct OnDisk {
    /// Its era (legacy bundles hold `key.pem`, modern ones `istio-token`).
    pub era: Era,
    /// Every bundle file in it, with the layout's modes.
    pub files: Vec<BundleFile>,
    /// `cluster.env`, parsed.
    pub env: BTreeMap<String, String>,
    /// The VM namespace.
    pub namespace: String,
    /// The VM's ServiceAccount.
    pub service_account: String,
    /// The Istio namespace.
    pub istio_namespace: String,
}

impl OnDisk {
    fn file(&self, name: &str) -> Option<&BundleFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

fn not_bundle(dir: &Path, why: impl Into<String>) -> Error {
    Error::Usage(UsageError::new(
        format!(
            "--renew: {} is not a meshvm bundle: {}",
            dir.display(),
            why.into()
        ),
        Some(
            "give -d the folder `kubectl meshvm bundle` wrote (it holds cluster.env and SHA256SUMS); without --renew, bundle writes a new one",
        ),
    ))
}

fn mismatch(dir: &Path, what: &str, fix: &str) -> Error {
    Error::Usage(UsageError::new(
        format!("--renew: {} {what}", dir.display()),
        Some(fix),
    ))
}

/// `KEY=value` and `KEY='value'` lines of a `cluster.env` (as `bundle` writes them).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.trim_start().starts_with('#'))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_owned(), v.replace("'\\''", "'"))
        })
        .collect()
}

/// The first `spiffe://…/ns/NS/sa/SA` URI SAN of the first certificate in `pem`.
fn spiffe_of(pem: &[u8]) -> Option<pki::SpiffeId> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = block.parse_x509().ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => pki::spiffe_id(uri),
        _ => None,
    })
}

/// Read and recognise the bundle in `dir`: its files match its `SHA256SUMS`, it has every file
/// its era needs, and `cluster.env` (legacy: the certificate) says whom it is for.
pub fn read(dir: &Path) -> Result<OnDisk, Error> {
    let existing = output::check_target(dir)?;
    if !existing.exists {
        return Err(not_bundle(dir, "it does not exist"));
    }
    let mut files = Vec::new();
    for name in &existing.files {
        let path = dir.join(name);
        let data = fs::read(&path).map_err(|source| Error::Io { path, source })?;
        files.push(BundleFile::new(name.clone(), data, vmfiles::mode(name), ""));
    }
    let has = |n: &str| files.iter().any(|f| f.name == n);
    let era = match (has(pki::KEY), has("istio-token")) {
        (true, false) => Era::Legacy,
        (false, true) => Era::Modern,
        _ => {
            return Err(not_bundle(
                dir,
                "it holds neither key.pem (legacy) nor istio-token (modern), or both",
            ));
        }
    };
    let missing: Vec<&str> = vmfiles::required(era)
        .map(|f| f.name)
        .chain([output::SHA256SUMS])
        .filter(|n| !has(n))
        .collect();
    if !missing.is_empty() {
        return Err(not_bundle(
            dir,
            format!("{missing:?} missing for a {era}-era bundle"),
        ));
    }
    let sums = files
        .iter()
        .find(|f| f.name == output::SHA256SUMS)
        .map(|f| f.data.clone())
        .unwrap_or_default();
    if output::sha256sums(&files).into_bytes() != sums {
        return Err(not_bundle(
            dir,
            "its files do not match its SHA256SUMS (changed since bundling)",
        ));
    }
    let text = |n: &str| {
        files
            .iter()
            .find(|f| f.name == n)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .unwrap_or_default()
    };
    let env = parse_env(&text("cluster.env"));
    let (namespace, service_account, istio_namespace) = match era {
        Era::Legacy => {
            let id = files
                .iter()
                .find(|f| f.name == pki::CERT_CHAIN)
                .and_then(|f| spiffe_of(&f.data))
                .ok_or_else(|| {
                    not_bundle(
                        dir,
                        "cert-chain.pem carries no spiffe://…/ns/…/sa/… identity",
                    )
                })?;
            (
                id.namespace,
                id.service_account,
                env.get("ISTIO_SYSTEM_NAMESPACE")
                    .cloned()
                    .unwrap_or_else(|| crate::istio::DEFAULT_ISTIO_NAMESPACE.to_owned()),
            )
        }
        Era::Modern => {
            let mesh = text("mesh.yaml");
            // mesh.yaml's discoveryAddress is istiod[-REV].NS.svc:15012.
            let istio_ns = mesh
                .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .find_map(|w| {
                    let host = w.strip_prefix("istiod")?.split(':').next()?;
                    let mut parts = host.split('.');
                    parts.next()?;
                    let ns = parts.next()?;
                    (parts.next() == Some("svc")).then(|| ns.to_owned())
                })
                .ok_or_else(|| not_bundle(dir, "mesh.yaml names no istiod discoveryAddress"))?;
            let get = |k: &str| {
                env.get(k)
                    .cloned()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| not_bundle(dir, format!("cluster.env has no {k}")))
            };
            (get("ISTIO_NAMESPACE")?, get("SERVICE_ACCOUNT")?, istio_ns)
        }
    };
    Ok(OnDisk {
        era,
        files,
        env,
        namespace,
        service_account,
        istio_namespace,
    })
}

/// Refuse a bundle for another VM than the flags name.
fn check_for(opts: &Options, b: &OnDisk) -> Result<(), Error> {
    let dir = &opts.output_dir;
    if b.namespace != opts.vm_namespace {
        return Err(mismatch(
            dir,
            &format!(
                "is a bundle for namespace {}, not --vm-namespace {}",
                b.namespace, opts.vm_namespace
            ),
            "pass the bundle's --vm-namespace, or -d the folder of this VM's bundle",
        ));
    }
    if let Some(sa) = opts
        .service_account
        .as_ref()
        .filter(|s| **s != b.service_account)
    {
        return Err(mismatch(
            dir,
            &format!(
                "is a bundle for ServiceAccount {}, not --service-account {sa}",
                b.service_account
            ),
            "drop --service-account (renew reads it from the bundle), or -d this VM's bundle",
        ));
    }
    if b.istio_namespace != opts.istio_namespace {
        return Err(mismatch(
            dir,
            &format!(
                "is a bundle for the control plane in namespace {}, not --istio-namespace {}",
                b.istio_namespace, opts.istio_namespace
            ),
            "pass the bundle's --istio-namespace",
        ));
    }
    if let Some(era) = opts.era.filter(|e| *e != b.era) {
        return Err(mismatch(
            dir,
            &format!("is a {}-era bundle, not --era {era}", b.era),
            "drop --era: renew keeps the bundle's era",
        ));
    }
    Ok(())
}

/// One credential's change, for the table: never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The file.
    pub file: String,
    /// What the old one was (expiry, root), or `-`.
    pub old: String,
    /// What the new one is.
    pub new: String,
    /// Whether the bytes changed.
    pub changed: bool,
}

/// The summary of a renewal.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Renewed {
    /// The bundle directory.
    pub output_dir: std::path::PathBuf,
    /// Each credential, old → new.
    pub credentials: Vec<Change>,
    /// The archive, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<output::ArchiveInfo>,
}

fn time_words(secs: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// What a credential is, in words that reveal nothing secret: a certificate's NotAfter (and for
/// a root its subject and fingerprint), a token's `exp`; a key only as its digest's prefix.
pub fn describe(name: &str, data: &[u8]) -> String {
    use sha2::Digest as _;
    match name {
        "istio-token" => token_exp(data).map_or_else(
            || "unreadable token".to_owned(),
            |exp| format!("token exp {}", time_words(exp)),
        ),
        n if n == pki::ROOT_CERT => pki::root_identity(data)
            .map_or_else(|e| format!("unreadable root ({e})"), |r| r.to_string()),
        n if n == pki::CERT_CHAIN => x509_parser::pem::parse_x509_pem(data)
            .ok()
            .and_then(|(_, p)| {
                p.parse_x509()
                    .ok()
                    .map(|c| format!("NotAfter {}", c.validity().not_after))
            })
            .unwrap_or_else(|| "unreadable certificate".to_owned()),
        _ => format!("sha256 {}…", &hex::encode(sha2::Sha256::digest(data))[..12]),
    }
}

/// The `exp` claim of a JWT (its payload only is decoded; the signature is istiod's business).
pub fn token_exp(token: &[u8]) -> Option<i64> {
    use base64::Engine as _;
    let text = std::str::from_utf8(token).ok()?.trim();
    let payload = text.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// The credentials the cluster issues now, checked as `bundle` checks them.
async fn fetch(
    conn: &crate::kube::Connection,
    opts: &Options,
    b: &OnDisk,
    err: &mut impl Write,
) -> Result<Vec<BundleFile>, Error> {
    match b.era {
        Era::Legacy => {
            // Only the identity matters: the rest of the plan is fed from the bundle itself, so
            // no gateway or Service range is looked up.
            let gwip = b
                .file("gwip.txt")
                .map(|f| String::from_utf8_lossy(&f.data).trim().to_owned())
                .unwrap_or_default();
            let mut o = opts.clone();
            o.era = Some(Era::Legacy);
            o.service_account = Some(b.service_account.clone());
            o.gateway = GatewaySource::Ip(gwip.parse().map_err(|_| {
                not_bundle(
                    &opts.output_dir,
                    format!("gwip.txt {gwip:?} is not an IP address"),
                )
            })?);
            o.service_cidr = b.env.get("ISTIO_SERVICE_CIDR").cloned();
            o.service = b.env.get("ISTIO_SERVICE").cloned();
            o.inbound_ports = b
                .env
                .get("ISTIO_INBOUND_PORTS")
                .map(|p| p.split(',').filter_map(|x| x.trim().parse().ok()).collect())
                .unwrap_or_default();
            if o.inbound_ports.is_empty() {
                o.inbound_ports = vec![1];
            }
            let spinner = crate::terminal::progress("reading the VM's identity");
            let observed = Box::pin(async {
                let mut observed = Box::pin(observe(conn, &o)).await?;
                super::wait_for_identity(conn, &o, &mut observed, &spinner).await?;
                Ok::<_, Error>(observed)
            })
            .await;
            spinner.finish_and_clear();
            let planned = plan(&observed?, &o, SystemTime::now())?;
            for w in &planned.warnings {
                let _ = writeln!(err, "warning: {w}");
            }
            Ok(planned
                .files
                .into_iter()
                .filter(|f| vmfiles::get(&f.name).is_some_and(|v| v.credential))
                .collect())
        }
        Era::Modern => {
            let (root, token) = observe::renew_credentials(
                conn,
                &b.namespace,
                &b.service_account,
                opts.token_seconds,
            )
            .await?;
            let root = root
                .and_then(|d| d.get(pki::ROOT_CERT).cloned())
                .ok_or_else(|| Error::ConfigMapMissing {
                    namespace: b.namespace.clone(),
                    name: crate::istio::ROOT_CERT_CONFIGMAP.into(),
                    hint: format!("istiod writes it into every namespace it watches: check that istiod runs and that namespace {} exists", b.namespace),
                })?;
            Ok(vec![
                BundleFile::new(pki::ROOT_CERT, root, vmfiles::mode(pki::ROOT_CERT), ""),
                BundleFile::new("istio-token", token, vmfiles::mode("istio-token"), ""),
            ])
        }
    }
}

/// `bundle --renew`: check the directory, re-issue its credentials, write, report.
pub async fn run(
    opts: &Options,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Outcome, Error> {
    let dir = &opts.output_dir;
    let before = read(dir)?;
    check_for(opts, &before)?;
    if let Some(archive) = &opts.archive {
        output::check_archive(archive)?;
    }
    let conn = crate::kube::connect(&opts.kube, opts.context.as_deref()).await?;
    let era = match opts.era {
        Some(era) => Some(era),
        None => crate::istio::detect_era(&conn, &opts.istio_namespace).await?,
    }
    .ok_or_else(|| Error::NoControlPlane {
        namespace: opts.istio_namespace.clone(),
    })?;
    if era != before.era {
        return Err(mismatch(
            dir,
            &format!(
                "is a {}-era bundle, but the control plane in namespace {} is {era}",
                before.era, opts.istio_namespace
            ),
            "run bundle without --renew to make a bundle for this control plane",
        ));
    }
    let fresh = fetch(&conn, opts, &before, err).await?;
    let mut files: Vec<BundleFile> = before
        .files
        .iter()
        .filter(|f| f.name != output::SHA256SUMS)
        .map(|f| {
            fresh
                .iter()
                .find(|n| n.name == f.name)
                .cloned()
                .unwrap_or_else(|| f.clone())
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let sums = output::sha256sums(&files);
    files.push(BundleFile::new(
        output::SHA256SUMS,
        sums,
        vmfiles::mode(output::SHA256SUMS),
        "",
    ));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let credentials: Vec<Change> = vmfiles::credentials(before.era)
        .map(|v| {
            let old = before
                .file(v.name)
                .map(|f| f.data.clone())
                .unwrap_or_default();
            let new = files
                .iter()
                .find(|f| f.name == v.name)
                .map(|f| f.data.clone())
                .unwrap_or_default();
            Change {
                file: v.name.to_owned(),
                old: describe(v.name, &old),
                new: describe(v.name, &new),
                changed: old != new,
            }
        })
        .collect();
    let written = output::write(
        &Bundle {
            era: before.era,
            files,
            warnings: Vec::new(),
            service_cidr: None,
        },
        dir,
        opts.archive.as_deref(),
        true,
    )?;
    let summary = Renewed {
        output_dir: dir.clone(),
        credentials,
        archive: written.archive.clone(),
    };
    summary.write(out, opts.output).map_err(Error::Print)?;
    if before
        .file("install.sh")
        .is_some_and(|f| !String::from_utf8_lossy(&f.data).contains("--renew"))
    {
        let _ = writeln!(
            err,
            "note: this bundle's install.sh predates --renew: copy the renewed credentials into place by hand, or run bundle without --renew (and --force) for a current install.sh"
        );
    }
    let _ = writeln!(
        err,
        "next: copy {} to the VM and run `sudo ./install.sh --renew` in it there",
        written.archive.as_ref().map_or_else(
            || dir.display().to_string(),
            |a| a.path.display().to_string()
        )
    );
    Ok(Outcome::Success)
}

impl Renewed {
    /// FILE OLD NEW CHANGE, or the same as JSON/YAML data.
    pub fn write(&self, out: &mut impl Write, format: OutputFormat) -> std::io::Result<()> {
        if crate::output::write_data(out, format, self)? {
            return Ok(());
        }
        let mut rows: Vec<[String; 4]> = self
            .credentials
            .iter()
            .map(|c| {
                [
                    self.output_dir.join(&c.file).display().to_string(),
                    c.old.clone(),
                    c.new.clone(),
                    if c.changed { "renewed" } else { "unchanged" }.to_owned(),
                ]
            })
            .collect();
        rows.push([
            self.output_dir
                .join(output::SHA256SUMS)
                .display()
                .to_string(),
            "-".into(),
            "-".into(),
            "rewritten".into(),
        ]);
        if let Some(a) = &self.archive {
            rows.push([
                a.path.display().to_string(),
                "-".into(),
                format!("sha256 {}", a.sha256),
                if a.unchanged { "unchanged" } else { "rebuilt" }.into(),
            ]);
        }
        crate::plan::write_columns(out, &["FILE", "OLD", "NEW", "CHANGE"], &rows)
    }
}
