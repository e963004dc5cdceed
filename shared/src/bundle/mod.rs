//! `kubectl meshvm bundle`: everything the VM needs, as files and a deterministic archive.
//!
//! `Options::resolve` (pure) → [`observe`] (reads only, concurrent, at most three round trips on
//! the critical path: era, objects, token) → [`plan`] (pure: the files, their modes, warnings)
//! → [`output::write`] (each file through a temporary file renamed into place; a directory that
//! already holds this bundle is left unchanged).

pub mod cidr;
pub(crate) mod goyaml;
pub mod identity;
pub mod legacy;
pub mod modern;
mod observe;
mod options;
pub mod output;
mod plan;
pub mod renew;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::args::BundleArgs;
use crate::errors::{Diagnose, Outcome, UsageError};
use crate::flags::OutputFormat;

pub use cidr::{CidrSource, ServiceCidr};
pub use observe::{Observed, observe, wait_for_identity};
pub use options::{GatewaySource, Options, parse_service_cidr};
pub use output::{BundleFile, Written};
pub use plan::{
    Bundle, GatewayProblem, gateway_address, infer_service_cidr, legacy_service_account, plan,
};

/// The audience istiod's CA accepts bootstrap tokens for.
pub const TOKEN_AUDIENCE: &str = "istio-ca";

/// Why bundling failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag value or combination (exit 2).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Talking to the cluster failed.
    #[error(transparent)]
    Kube(#[from] crate::kube::Error),
    /// Neither istiod nor Citadel/Pilot runs in the Istio namespace.
    #[error(
        "no Istio control plane in namespace {namespace}: neither istiod nor istio-citadel/istio-pilot runs there"
    )]
    NoControlPlane {
        /// The Istio namespace searched.
        namespace: String,
    },
    /// Legacy: Citadel has not written the ServiceAccount's `istio.<sa>` secret.
    #[error(
        "secret {namespace}/istio.{service_account} not found{}: {}",
        waited_words(*waited),
        if *account_exists {
            format!("Citadel has not issued an identity for ServiceAccount {namespace}/{service_account}")
        } else {
            format!("ServiceAccount {namespace}/{service_account} does not exist, so Citadel issues no identity for it")
        }
    )]
    IdentityMissing {
        /// The VM namespace.
        namespace: String,
        /// The ServiceAccount.
        service_account: String,
        /// Whether the ServiceAccount exists (Citadel issues secrets only for existing ones).
        account_exists: bool,
        /// The Istio namespace (for the hint).
        istio_namespace: String,
        /// How long bundle waited for it (`--wait`).
        waited: Duration,
        /// `--kubeconfig`/`--context` as given, for the commands in the hint.
        connection_flags: String,
    },
    /// Legacy: the `istio.<sa>` secret was issued under another root than the one in `cacerts`:
    /// Citadel still signs with the CA it loaded when it started.
    #[error(
        "secret {secret} is issued under root {issued_under}, but cacerts in namespace {istio_namespace} holds root {current}{}: istio-citadel still signs with the CA it loaded when it started",
        waited_words(*waited)
    )]
    IdentityOldRoot {
        /// `namespace/istio.<sa>`.
        secret: String,
        /// The secret's root, subject and fingerprint.
        issued_under: String,
        /// The root in `cacerts`, subject and fingerprint.
        current: String,
        /// The Istio namespace.
        istio_namespace: String,
        /// How long bundle waited (`--wait`).
        waited: Duration,
        /// The `kubectl rollout restart` command that fixes it.
        restart: String,
        /// The `kubectl meshvm prepare --restart-control-plane` command that fixes it.
        prepare: String,
    },
    /// Legacy: the `istio.<sa>` secret's certificates cannot be used.
    #[error("secret {secret} holds an unusable identity: {}", problems.join("; "))]
    Identity {
        /// `namespace/istio.<sa>`.
        secret: String,
        /// What pki found wrong.
        problems: Vec<String>,
        /// The Istio namespace (for the hint).
        istio_namespace: String,
        /// The VM namespace (for the hint).
        namespace: String,
    },
    /// The gateway Service does not exist.
    #[error("gateway Service {namespace}/{name} not found")]
    GatewayMissing {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The gateway has only a DNS name; `/etc/hosts` needs an address.
    #[error(
        "gateway Service {namespace}/{name} has only a hostname ({hostname}) in status.loadBalancer.ingress, and /etc/hosts needs an IP address"
    )]
    GatewayHostname {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The load balancer's hostname.
        hostname: String,
    },
    /// The gateway has no external address (yet).
    #[error(
        "gateway Service {namespace}/{name} has no external address: no status.loadBalancer.ingress[0].ip and no spec.externalIPs"
    )]
    GatewayNoAddress {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The gateway's address field is not an IP address.
    #[error("gateway Service {namespace}/{name}: {problem}")]
    GatewayInvalid {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The Service CIDR can be neither read nor inferred.
    #[error(
        "cannot determine the cluster's Service CIDR: the ServiceCIDR API is not served and the `kubernetes` Service in namespace default has no ClusterIP"
    )]
    ServiceCidrUnknown,
    /// Modern: the cluster serves no WorkloadGroup kind at all.
    #[error("cannot read WorkloadGroup {namespace}/{name}: {why}")]
    WorkloadGroupNotServed {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What discovery found.
        why: String,
    },
    /// Modern: the WorkloadGroup does not exist.
    #[error("WorkloadGroup {namespace}/{name} not found")]
    WorkloadGroupMissing {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A cluster object has content bundle cannot use.
    #[error("{object}: {problem}")]
    Invalid {
        /// `kind namespace/name`.
        object: String,
        /// What is wrong.
        problem: String,
    },
    /// `-s` names another ServiceAccount than the WorkloadGroup's template.
    #[error(
        "--service-account {flag} differs from the serviceAccount {group} of WorkloadGroup {namespace}/{name}"
    )]
    ServiceAccountMismatch {
        /// `-s`.
        flag: String,
        /// The WorkloadGroup's.
        group: String,
        /// WorkloadGroup namespace.
        namespace: String,
        /// WorkloadGroup name.
        name: String,
    },
    /// A ConfigMap bundle needs is absent.
    #[error("configmap {namespace}/{name} not found")]
    ConfigMapMissing {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What to do about it.
        hint: String,
    },
    /// The output directory holds another bundle and `--force` was not given.
    #[error("output directory {} holds a different bundle ({})", path.display(), differ.join(", "))]
    OutputExists {
        /// The directory.
        path: PathBuf,
        /// What differs: `key.pem differs`, `mesh.yaml is not in this bundle`.
        differ: Vec<String>,
    },
    /// The output directory holds files that are not a bundle's: bundle never removes them.
    #[error(
        "output directory {} holds {} that no bundle writes: {}",
        path.display(),
        if entries.len() == 1 { "an entry" } else { "entries" },
        entries.join(", ")
    )]
    OutputForeign {
        /// The directory.
        path: PathBuf,
        /// The entries (`name`, or `name/` for a folder).
        entries: Vec<String>,
    },
    /// The archive file exists with other content and `--force` was not given.
    #[error("archive {} exists and holds a different bundle", path.display())]
    ArchiveExists {
        /// The archive.
        path: PathBuf,
    },
    /// Writing the bundle failed; nothing was left half-written.
    #[error("cannot write {}", path.display())]
    Io {
        /// What was being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Printing the summary failed (a closed pipe is not reported).
    #[error("cannot print the summary")]
    Print(#[source] io::Error),
}

/// ` after waiting 1m0s`, or nothing when bundle did not wait.
fn waited_words(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!(" after waiting {}s", waited.as_secs().max(1))
    }
}

impl Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Usage(u) => u.hint(),
            Error::Kube(k) => k.hint(),
            Error::NoControlPlane { .. } => Some(
                "pass --istio-namespace where Istio runs, or --era legacy|modern to skip detection".into(),
            ),
            Error::IdentityMissing {
                namespace,
                service_account,
                account_exists: false,
                connection_flags,
                ..
            } => Some(format!(
                "create it with `kubectl meshvm prepare -n {namespace}{}{connection_flags}` (or name the VM's ServiceAccount with -s), then run bundle again: it waits for Citadel's secret",
                if service_account == namespace {
                    String::new()
                } else {
                    format!(" -s {service_account}")
                },
            )),
            Error::IdentityMissing {
                namespace,
                service_account,
                istio_namespace,
                waited,
                connection_flags,
                ..
            } => Some(format!(
                "create the ServiceAccount (`kubectl meshvm prepare -n {namespace}{}{connection_flags}`), check that istio-citadel runs (`kubectl get deployment/istio-citadel -n {istio_namespace}{connection_flags}`), and run bundle again{}",
                if service_account == namespace {
                    String::new()
                } else {
                    format!(" -s {service_account}")
                },
                if waited.is_zero() {
                    format!(" with --wait 2m to wait for the secret istio.{service_account}")
                } else {
                    format!(" (with a longer --wait if Citadel is slow to write istio.{service_account})")
                }
            )),
            Error::IdentityOldRoot {
                restart, prepare, ..
            } => Some(format!(
                "restart Citadel so it loads cacerts: `{restart}` (or `{prepare}`), then run bundle again: it waits for the re-issued secret (--wait)"
            )),
            Error::Identity {
                istio_namespace,
                namespace,
                secret,
                ..
            } => Some(format!(
                "restart Citadel (`kubectl -n {istio_namespace} rollout restart deployment istio-citadel`) or delete the secret so Citadel recreates it (`kubectl -n {namespace} delete secret {}`), then bundle again",
                secret.rsplit('/').next().unwrap_or(secret)
            )),
            Error::GatewayMissing { .. } => Some(
                "name the gateway with --gateway-service NAME[.NAMESPACE], or give its address with --gateway-ip IP".into(),
            ),
            Error::GatewayHostname { hostname, .. } => Some(format!(
                "resolve it (`getent hosts {hostname}`) and pass the address with --gateway-ip IP"
            )),
            Error::GatewayNoAddress { .. } | Error::GatewayInvalid { .. } => Some(
                "wait for the load balancer to get an address, or pass --gateway-ip IP".into(),
            ),
            Error::ServiceCidrUnknown => {
                Some("pass --service-cidr CIDR (the cluster's Service IP range)".into())
            }
            Error::WorkloadGroupNotServed { .. } => Some(
                "WorkloadGroup needs Istio 1.8 or later with its CRDs installed; check `kubectl get crd workloadgroups.networking.istio.io`".into(),
            ),
            Error::WorkloadGroupMissing { namespace, name } => Some(format!(
                "create it with `kubectl meshvm prepare -n {namespace} --workload-group {name}`, or name another with --workload-group"
            )),
            Error::ServiceAccountMismatch { group, .. } => Some(format!(
                "drop --service-account, or pass --service-account {group}"
            )),
            Error::ConfigMapMissing { hint, .. } => Some(hint.clone()),
            Error::ArchiveExists { .. } => Some(
                "pass --force to replace it, or choose another --archive path".into(),
            ),
            Error::OutputExists { differ, .. } => Some(
                if differ.iter().any(|d| d.starts_with("istio-token"))
                    && differ.iter().all(|d| {
                        d.starts_with(output::SHA256SUMS) ||
                        crate::vmfiles::get(d.split(' ').next().unwrap_or(""))
                            .is_some_and(|f| f.credential && d.ends_with(" differs"))
                    })
                {
                    "only the credentials differ (each modern bundle carries a freshly issued token): `kubectl meshvm bundle --renew` with the same -d re-issues just those, then run `sudo ./install.sh --renew` on the VM; or pass --force to replace the previous bundle, or choose another --output-dir"
                } else if differ.iter().any(|d| d.starts_with("istio-token")) {
                    "each modern bundle carries a freshly issued token: pass --force to replace the previous bundle (its files are listed as they are replaced or removed), or choose another --output-dir"
                } else {
                    "pass --force to replace the previous bundle (its files are listed as they are replaced or removed), or choose another --output-dir"
                }
                .into(),
            ),
            Error::OutputForeign { .. } => Some(
                "bundle removes only a previous bundle's files, even with --force: move those entries away, or choose another --output-dir".into(),
            ),
            Error::Invalid { .. } | Error::Io { .. } | Error::Print(_) => None,
        }
    }

    fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

/// A re-run into a folder that holds this bundle already (a script run twice, a run killed after
/// it wrote): the one file that differs on every modern run is the freshly issued `istio-token`.
/// When the token in the folder is still good for at least half of `--token-duration`, and the
/// new bundle differs from the folder's in nothing else, the folder's token is kept (with
/// `SHA256SUMS` recomputed), so the re-run is "unchanged" rather than a refusal. Returns what it
/// says about it.
fn keep_valid_token(
    bundle: &mut plan::Bundle,
    dir: &std::path::Path,
    token_seconds: i64,
    now: SystemTime,
) -> Option<String> {
    const TOKEN: &str = "istio-token";
    let old = std::fs::read(dir.join(TOKEN)).ok()?;
    let new = bundle.files.iter().position(|f| f.name == TOKEN)?;
    if bundle.files[new].data == old {
        return None;
    }
    let exp = renew::token_exp(&old)?;
    let now_secs = i64::try_from(now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let left = exp - now_secs;
    if left < token_seconds / 2 {
        return None;
    }
    let same_otherwise = bundle
        .files
        .iter()
        .filter(|f| f.name != TOKEN && f.name != output::SHA256SUMS)
        .all(|f| std::fs::read(dir.join(&f.name)).is_ok_and(|d| d == f.data));
    if !same_otherwise {
        return None;
    }
    bundle.files[new].data = old;
    let sums = output::sha256sums(&bundle.files);
    if let Some(f) = bundle
        .files
        .iter_mut()
        .find(|f| f.name == output::SHA256SUMS)
    {
        f.data = sums.into_bytes();
    }
    Some(format!(
        "kept the istio-token already in {} (valid for {}m more, at least half of --token-duration); `kubectl meshvm bundle --renew` issues a new one",
        dir.display(),
        left / 60
    ))
}

/// `kubectl meshvm bundle`.
pub async fn main(args: BundleArgs) -> Result<Outcome, Error> {
    crate::rbac::Verb::Bundle.set_current();
    if args.print_rbac {
        crate::rbac::print(
            crate::rbac::Verb::Bundle,
            &crate::rbac::Namespaces {
                istio: args.istio_namespace.clone(),
                vm: args.kube.namespace.clone().or(args.vm_namespace.clone()),
            },
        );
        return Ok(Outcome::Success);
    }
    let renew = args.renew;
    let opts = Options::resolve(args)?;
    if renew {
        return Box::pin(renew::run(&opts, &mut io::stdout(), &mut io::stderr())).await;
    }
    // Boxed: the observe future holds every concurrent request and is large.
    Box::pin(run(&opts, &mut io::stdout(), &mut io::stderr())).await
}

/// Run with resolved options, writing the summary to `out` and warnings to `err`.
pub async fn run(
    opts: &Options,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Outcome, Error> {
    // Refuse before any request: the operator learns about the folder first.
    output::check_target(&opts.output_dir)?;
    if let Some(archive) = &opts.archive {
        output::check_archive(archive)?;
    }
    let conn = crate::kube::connect(&opts.kube, opts.context.as_deref()).await?;
    let spinner = crate::terminal::progress("reading the cluster");
    let read = |opts: &Options| {
        let (conn, spinner, opts) = (&conn, &spinner, opts.clone());
        Box::pin(async move {
            let mut observed = Box::pin(observe(conn, &opts)).await?;
            if observed.era == Some(crate::istio::Era::Legacy) {
                wait_for_identity(conn, &opts, &mut observed, spinner).await?;
                if observed.waited.is_none() {
                    spinner.set_message("asking the API server for its Service range");
                    observe::find_service_cidr(conn, &opts, &mut observed).await?;
                }
            }
            Ok::<_, Error>(observed)
        })
    };
    // The VM's ServiceAccount by the rule every verb shares ([`Options::settle`]), settled while
    // the cluster is read for the namespace-named one (the runbook's, and what prepare makes
    // without -s); read again only when prepare made another.
    let (settled, first) = tokio::join!(opts.settle(&conn, err), read(opts));
    let observed = match settled {
        Ok(settled)
            if settled.service_account == opts.service_account
                || settled.service_account.as_deref() == Some(opts.vm_namespace.as_str()) =>
        {
            first.map(|o| (settled, o))
        }
        Ok(settled) => read(&settled).await.map(|o| (settled, o)),
        Err(e) => Err(e),
    };
    spinner.finish_and_clear();
    let (settled, observed) = observed?;
    let opts = &settled;
    for note in &observed.notes {
        let _ = writeln!(err, "note: {note}");
    }
    let now = SystemTime::now();
    let mut bundle = plan(&observed, opts, now)?;
    if let Some(kept) = keep_valid_token(&mut bundle, &opts.output_dir, opts.token_seconds, now) {
        let _ = writeln!(err, "note: {kept}");
    }
    for warning in &bundle.warnings {
        let _ = writeln!(err, "warning: {warning}");
    }
    if let Some(cidr) = &bundle.service_cidr
        && cidr.source != CidrSource::Guessed
    {
        let _ = writeln!(
            err,
            "note: ISTIO_SERVICE_CIDR={} {}",
            cidr.cidr, cidr.detail
        );
    }
    let written = output::write(
        &bundle,
        &opts.output_dir,
        opts.archive.as_deref(),
        opts.force,
    )?;
    for r in &written.removed {
        let _ = writeln!(
            err,
            "removed {} ({})",
            opts.output_dir.join(&r.file).display(),
            r.why
        );
    }
    if written.is_unchanged() {
        let _ = writeln!(
            err,
            "unchanged: {} already holds this bundle{}",
            opts.output_dir.display(),
            if opts.archive.is_some() {
                ", and the archive these bytes"
            } else {
                ""
            }
        );
    }
    written
        .write_summary(out, opts.output)
        .map_err(Error::Print)?;
    if bundle.era == crate::istio::Era::Modern {
        // As istioctl warns: the token is a credential until it expires.
        let _ = writeln!(
            err,
            "note: {} is a bearer token for the VM's ServiceAccount, valid for {}s: copy it to the VM before then, and bundle again for a fresh one",
            opts.output_dir.join("istio-token").display(),
            opts.token_seconds
        );
    }
    if opts.output == OutputFormat::Table {
        match &written.archive {
            Some(a) => {
                let file = a.path.file_name().map_or_else(
                    || a.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let _ = writeln!(
                    err,
                    "next: copy {} to the VM and run `tar xzf {file} && cd {} && sudo ./install.sh` there (`./install.sh --check` tests the connection)",
                    a.path.display(),
                    a.folder
                );
            }
            None => {
                let _ = writeln!(
                    err,
                    "next: copy {} to the VM and run `sudo ./install.sh` in it there (`./install.sh --check` tests the connection)",
                    opts.output_dir.display()
                );
            }
        }
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests;
