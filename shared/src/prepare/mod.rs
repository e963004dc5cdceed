//! `kubectl meshvm prepare`: validated cacerts, VM namespace, ServiceAccount, WorkloadGroup.
//!
//! The runbook's cluster side ("Apply the samples certificates", "prepare a Service and a
//! ServiceAccount for the VM") made safe: the CA files are judged before anything is written, a
//! different `cacerts` is refused, every write is idempotent, and the output always says what was
//! and was not done. `--delete` is the runbook's cleanup for one VM.

pub mod apply;
pub mod delete;
pub mod expose;
pub mod observe;
pub mod options;
pub mod plan;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::SystemTime;

use crate::args::PrepareArgs;
use crate::errors::{Diagnose, Outcome, UsageError};
use crate::flags::DryRun;
use crate::istio::Era;
use crate::pki::{self, CaMaterial, CertFinding, CertSeverity, PkiError};
use crate::plan::write::Kind;
use crate::plan::{Action, Plan, State};
use crate::terminal::PromptError;

pub use options::{Options, WorkloadGroupOptions};
pub use plan::{Observed, Prepared};

pub use crate::scope::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Why `prepare` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad combination of flags.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A CA file could not be read.
    #[error("cannot read the CA files (nothing was written): {0}")]
    CaUnreadable(#[source] PkiError),
    /// The CA files are not a usable CA.
    #[error(
        "the CA files are not a usable CA (nothing was written):\n{}",
        findings.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    )]
    CaInvalid {
        /// Every error found, each naming its file.
        findings: Vec<CertFinding>,
    },
    /// The cluster's `cacerts` holds another CA.
    #[error(
        "secret {secret} already holds a different CA{}; refusing to replace it{}\n  in the cluster: {}\n  in the files:   {}",
        if *same_root { " (same root, different signing CA or key)" } else { "" },
        if *nothing_written { " (nothing was written)" } else { "" },
        in_cluster.join("; "),
        from_files.join("; ")
    )]
    CaDiffers {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The roots stored in the cluster (subject and SHA-256 fingerprint).
        in_cluster: Vec<String>,
        /// The roots of the files given.
        from_files: Vec<String>,
        /// Both hold the same root(s).
        same_root: bool,
        /// No write preceded the refusal (false when the table shows earlier rows done).
        nothing_written: bool,
    },
    /// `cacerts` changed between our read and our write (another prepare won the race).
    #[error(
        "secret {secret} was changed by someone else while prepare ran; it was left as they wrote it"
    )]
    CaChangedMeanwhile {
        /// `namespace/name` of the Secret.
        secret: String,
    },
    /// The VM namespace is being deleted.
    #[error(
        "namespace {namespace} is being deleted; nothing can be created in it until it is gone"
    )]
    NamespaceTerminating {
        /// The namespace.
        namespace: String,
    },
    /// A WorkloadGroup was asked for in a legacy mesh.
    #[error(
        "--workload-group needs istiod (the modern era), but {istio_namespace} runs Istio 1.4 (istio-citadel/istio-pilot)"
    )]
    WorkloadGroupNeedsModern {
        /// The Istio namespace.
        istio_namespace: String,
    },
    /// No control plane to tell the era from, and a WorkloadGroup was asked for.
    #[error(
        "cannot tell the Istio era: no istio-citadel, istio-pilot or istiod Deployment in namespace {istio_namespace}"
    )]
    EraUnknown {
        /// The Istio namespace.
        istio_namespace: String,
    },
    /// The cluster serves no networking.istio.io API.
    #[error("the cluster serves no networking.istio.io API, so it has no WorkloadGroup kind")]
    NoIstioApi,
    /// `--delete` on a namespace prepare did not make.
    #[error(
        "namespace {namespace} was not made by prepare (it lacks the label app.kubernetes.io/managed-by=meshvm); refusing to delete it"
    )]
    NotMadeByPrepare {
        /// The namespace.
        namespace: String,
    },
    /// The operator answered no.
    #[error("{0}: not confirmed, nothing was changed")]
    Declined(String),
    /// A confirmation could not be asked.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The restarted control plane did not finish rolling out within `--timeout`.
    #[error(
        "deployment {deployment} did not finish rolling out within {timeout:?} ({last}); cacerts is written and the restart was sent"
    )]
    RolloutTimeout {
        /// `namespace/name`.
        deployment: String,
        /// `--timeout`.
        timeout: std::time::Duration,
        /// What it was waiting for when time ran out.
        last: String,
    },
    /// The restarted control plane's rollout failed (its progress deadline passed).
    #[error("{message}; cacerts is written and the restart was sent")]
    RolloutFailed {
        /// `namespace/name`.
        deployment: String,
        /// What the Deployment reports.
        message: String,
    },
    /// `--expose` named Services that do not exist.
    #[error(
        "--expose: service {} does not exist (nothing was written)",
        missing.join(", ")
    )]
    ExposedServiceMissing {
        /// `namespace/name` of each.
        missing: Vec<String>,
    },
    /// `--expose` named a Service with no port the sidecar proxies.
    #[error("--expose: service {service} has no TCP port to reach it on (nothing was written)")]
    ExposedServiceNoPorts {
        /// `namespace/name`.
        service: String,
    },
    /// Legacy `--expose`: the ingress gateway gives no address for the ServiceEntries' endpoints.
    #[error(
        "--expose: the .global ServiceEntries point at the ingress gateway's 15443, but service {gateway} is unusable: {problem} (nothing was written)"
    )]
    ExposeGateway {
        /// `namespace/name` of the gateway Service.
        gateway: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Legacy `--expose`: the cluster serves no ServiceEntry kind.
    #[error("--expose: the cluster serves no networking.istio.io ServiceEntry kind")]
    ServiceEntryNotServed,
    /// Legacy `--expose`: an entry of that name exists and is not meshvm's.
    #[error(
        "--expose: serviceentry {entry} exists and was not made by meshvm (it lacks the label app.kubernetes.io/managed-by=meshvm); refusing to overwrite it"
    )]
    ServiceEntryNotOurs {
        /// `namespace/name`.
        entry: String,
    },
    /// `--delete --expose`: the entry of that name was not made by meshvm.
    #[error(
        "--delete --expose: serviceentry {namespace}/{name} was not made by meshvm (it lacks the label app.kubernetes.io/managed-by=meshvm); refusing to delete it, nothing was deleted"
    )]
    NotOurServiceEntry {
        /// The VM namespace.
        namespace: String,
        /// The entry's name.
        name: String,
    },
    /// Legacy `--expose`: every 127.255.x.y address is held by another ServiceEntry.
    #[error("--expose: no free address in 127.255.0.0/16 for {host}")]
    GlobalAddressesExhausted {
        /// The `.global` host.
        host: String,
    },
    /// Modern `--expose`: the east-west cross-network path is missing.
    #[error(
        "--expose: the VM reaches cluster Services through the east-west gateway, but {problem} (nothing was written)"
    )]
    CrossNetworkMissing {
        /// The Istio namespace.
        istio_namespace: String,
        /// What is missing.
        problem: String,
    },
    /// The VM's ServiceAccount could not be settled.
    #[error(transparent)]
    Scope(crate::scope::Error),
    /// Talking to the cluster failed.
    #[error(transparent)]
    Kube(Box<crate::kube::Error>),
    /// A write did not land (another client kept changing the object, or it was malformed).
    #[error(transparent)]
    Write(crate::plan::write::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

impl From<crate::kube::Error> for Error {
    fn from(e: crate::kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Usage(e) => e.hint(),
            Error::Prompt(e) => e.hint(),
            Error::Kube(e) => e.hint(),
            Error::Scope(e) => e.hint(),
            Error::Write(e) => e.hint(),
            Error::RolloutTimeout { deployment, .. } | Error::RolloutFailed { deployment, .. } => {
                let (ns, name) = deployment.split_once('/').unwrap_or_default();
                Some(format!(
                    "see why with `kubectl rollout status deployment/{name} -n {ns}` and `kubectl describe deployment/{name} -n {ns}`; a longer --timeout waits longer"
                ))
            }
            Error::CaUnreadable(_) => Some(
                "--ca-dir must hold ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem (or pass each with --ca-cert, --ca-key, --root-cert, --cert-chain)".into(),
            ),
            Error::CaInvalid { .. } => Some(
                "fix the files named above; Istio's samples/certs show the expected layout".into(),
            ),
            Error::CaDiffers { .. } => Some(
                "every cluster of a mesh must share one root: use the CA already in the cluster, or pass --force to replace it (then restart the control plane and every workload)".into(),
            ),
            Error::CaChangedMeanwhile { .. } => {
                Some("run prepare again to compare with what is stored now".into())
            }
            Error::NamespaceTerminating { .. } => {
                Some("wait until the namespace is gone, then run prepare again".into())
            }
            Error::WorkloadGroupNeedsModern { .. } => Some(
                "drop --workload-group: Istio 1.4 VMs use the Service and Endpoints `kubectl meshvm register` makes".into(),
            ),
            Error::EraUnknown { .. } => Some(
                "install Istio first, check --istio-namespace, or pass --era modern".into(),
            ),
            Error::NoIstioApi => Some("install Istio's CRDs (istiod 1.8 or later) first".into()),
            Error::NotMadeByPrepare { .. } => Some(
                "check the namespace name; pass --force to delete it anyway".into(),
            ),
            Error::ExposedServiceMissing { missing } => {
                let mut namespaces: Vec<&str> = missing
                    .iter()
                    .filter_map(|m| m.split_once('/').map(|(ns, _)| ns))
                    .collect();
                namespaces.dedup();
                let commands: Vec<String> = namespaces
                    .iter()
                    .map(|ns| format!("`kubectl get svc -n {ns}`"))
                    .collect();
                Some(format!(
                    "check the names (SVC.NS): {} lists what exists",
                    commands.join(", ")
                ))
            }
            Error::ExposedServiceNoPorts { .. } => Some(
                "the sidecar proxies TCP only: expose a Service with a TCP port".into(),
            ),
            Error::ExposeGateway { .. } => Some(
                "install Istio 1.4 with its mesh-expansion gateways (the ingress gateway with 15443 and a load balancer address)".into(),
            ),
            Error::ServiceEntryNotServed => {
                Some("install Istio's CRDs first (Istio 1.4's istio-init)".into())
            }
            Error::ServiceEntryNotOurs { .. } => {
                Some("delete or rename that ServiceEntry, then run prepare again".into())
            }
            Error::NotOurServiceEntry { namespace, name } => Some(format!(
                "whoever made it removes it; look at it with `kubectl get serviceentry {name} -n {namespace} -o yaml`"
            )),
            Error::GlobalAddressesExhausted { .. } => {
                Some("remove ServiceEntries that are no longer used".into())
            }
            // The command of istio/istio@1.22.0 samples/multicluster/README.md:46.
            Error::CrossNetworkMissing {
                istio_namespace, ..
            } => Some(format!(
                "from the Istio release directory, expose the cluster's Services on the east-west gateway: `kubectl apply -f samples/multicluster/expose-services.yaml -n {istio_namespace}`"
            )),
            Error::Declined(_) | Error::Output(_) => None,
        }
    }
    fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

/// The verb: resolve, judge the CA, observe, plan, then print (dry run) or apply.
pub async fn main(args: PrepareArgs) -> Result<Outcome, Error> {
    crate::rbac::Verb::Prepare.set_current();
    if args.print_rbac {
        crate::rbac::print(
            crate::rbac::Verb::Prepare,
            &crate::rbac::Namespaces {
                istio: args.istio_namespace.clone(),
                vm: args.kube.namespace.clone().or(args.vm_namespace.clone()),
            },
        );
        return Ok(Outcome::Success);
    }
    let opts = Options::resolve(args)?;
    Box::pin(run(&opts, &mut io::stdout(), &mut io::stderr())).await
}

/// [`main`] with the output streams injected.
pub async fn run(
    opts: &Options,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Outcome, Error> {
    if opts.delete {
        return Box::pin(run_delete(opts, out, err)).await;
    }
    // Judge the CA before contacting the cluster: bad files never lead to a write.
    let ca = match &opts.ca {
        Some(paths) => Some(load_ca(paths, opts, SystemTime::now(), err)?),
        None => None,
    };
    let conn = crate::kube::connect(&opts.kube, opts.context.as_deref()).await?;
    let namespace = crate::kube::VerbNamespace {
        name: opts.vm_namespace.clone(),
        source: opts.namespace_source.clone(),
    };
    if let Some(note) = crate::scope::note_for_namespace(&conn, &namespace).await? {
        writeln!(err, "note: {note}")?;
    }
    let spinner = crate::terminal::progress("reading the cluster");
    let observed = Box::pin(observe::observe(&conn, opts)).await;
    spinner.finish_and_clear();
    let observed = observed?;
    writeln!(err, "{}", era_line(&observed, opts))?;
    for warning in plan::stale_from_group(&observed, opts) {
        writeln!(err, "warning: {warning}")?;
    }

    let Prepared {
        mut plan,
        ca_deployment,
        restart_due_earlier,
    } = plan::plan(&observed, opts, ca.as_ref())?;

    if !opts.expose.is_empty() {
        let names: Vec<String> = opts.expose.iter().map(ToString::to_string).collect();
        if observed.era == Some(Era::Modern) {
            writeln!(
                err,
                "note: --expose: the VM calls {} by their cluster names through the east-west gateway's {} (15443); no ServiceEntry is needed",
                names.join(", "),
                expose::CROSS_NETWORK_GATEWAY
            )?;
        } else if observed.expose.entries_namespace_only {
            writeln!(
                err,
                "warning: cannot list ServiceEntries in every namespace (forbidden): the 127.255.x.y addresses are unique within namespace {} only",
                opts.vm_namespace
            )?;
        }
    }
    let restart_planned = plan.of(Kind::Deployment).next().is_some();
    if opts.restart_control_plane && !restart_planned && ca.is_none() {
        writeln!(err, "{}", nothing_to_restart(&observed, opts))?;
    }
    if restart_planned && opts.dry_run == DryRun::None {
        let name = ca_deployment.as_deref().unwrap_or_default();
        let question = format!(
            "restart Deployment {}/{name} (all its pods) so it loads the new CA key",
            opts.istio_namespace
        );
        if !crate::terminal::confirm(&question, opts.yes)? {
            return Err(Error::Declined(question));
        }
    }

    if opts.dry_run == DryRun::Client {
        plan.write(out, opts.output, opts.show_secrets)?;
        writeln!(
            err,
            "dry run (client): nothing was sent; {}",
            plan.summary()
        )?;
        return Ok(Outcome::Success);
    }

    let mut result = apply::apply(&conn, &mut plan, opts, ca.as_ref()).await;
    if result.is_ok() {
        result = Box::pin(settle_addresses(&conn, &observed, &mut plan, opts)).await;
    }
    let mut rolled_out = None;
    if result.is_ok() && opts.dry_run == DryRun::None {
        match apply::await_restart(&conn, &mut plan, opts, err).await {
            Ok(how) => rolled_out = how,
            Err(e) => result = Err(e),
        }
        // Legacy: Citadel re-signs the mesh's workload secrets only on its resync.
        if rolled_out.is_some()
            && let Some(ca) = ca.as_ref()
            && plan.changes.iter().any(|c| {
                c.kind == crate::plan::write::Kind::Deployment && c.name == "istio-citadel"
            })
        {
            match apply::await_reissue(
                &conn,
                ca.root_cert.bytes(),
                opts.timeout,
                apply::ROLLOUT_POLL,
            )
            .await
            {
                Ok(0) => writeln!(
                    err,
                    "note: Citadel re-issued every istio.* workload secret under the new root"
                )?,
                Ok(stale) => writeln!(
                    err,
                    "warning: {stale} istio.* workload secret(s) are still issued under the old root after {:?}: Citadel re-issues them on its next resync (about every minute); until then `kubectl meshvm doctor` reports ca.root-consistent",
                    opts.timeout
                )?,
                Err(e) => result = Err(e),
            }
        }
    }
    plan.write(out, opts.output, opts.show_secrets)?;
    write_notes(
        &plan,
        opts,
        ca_deployment.as_deref(),
        restart_due_earlier,
        rolled_out.as_deref(),
        err,
    )?;
    result?;
    writeln!(err, "{}", summary(&plan, opts.dry_run))?;
    Ok(Outcome::Success)
}

/// How often `--expose` re-checks its new `.global` addresses against a concurrent run.
const SETTLE_ROUNDS: usize = 4;

/// How long a run whose new entry ties with another in one second waits for the other run to
/// move before it moves itself: the other run reads again right after its own write.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Legacy `--expose`: the apiserver cannot keep two ServiceEntries from holding one address, so
/// after writing new ones prepare reads the ServiceEntries again. Where another entry holds the
/// same address and is older ([`expose::holds_first`]), this run's entry moves to a free one.
/// Where the other was created in the same second ([`expose::tied`]) neither can tell which was
/// stored first: the entry second by `namespace/name` moves at once; the first waits
/// [`SETTLE_WAIT`] for it, and moves itself if the tie is still there (the other run wrote
/// before this one's entry existed, saw no tie, and is done). Only entries this run wrote move (one that existed before may be in a
/// bundle's `hosts` already); the row says so. Bounded; a dry run skips it.
async fn settle_addresses(
    conn: &crate::kube::Connection,
    observed: &plan::Observed,
    plan: &mut Plan,
    opts: &Options,
) -> Result<(), Error> {
    let vm_ns = opts.vm_namespace.as_str();
    // The entries this run wrote, as `namespace/name`.
    let written: Vec<String> = plan
        .of(Kind::ServiceEntry)
        .filter(|c| c.state == State::Done && c.write.is_some())
        .map(|c| format!("{vm_ns}/{}", c.name))
        .collect();
    if opts.dry_run != DryRun::None || observed.era != Some(Era::Legacy) || written.is_empty() {
        return Ok(());
    }
    let mut waited = false;
    for _ in 0..SETTLE_ROUNDS {
        let mut now = observed.clone();
        now.expose = Box::pin(observe::observe_expose(conn, opts, observed.era)).await?;
        let address_of = |entries: &[kube::api::DynamicObject], me: &str| {
            entries
                .iter()
                .find(|e| {
                    format!(
                        "{}/{}",
                        e.metadata.namespace.as_deref().unwrap_or_default(),
                        e.metadata.name.as_deref().unwrap_or_default()
                    ) == me
                })
                .and_then(|e| {
                    e.data
                        .pointer("/spec/addresses/0")
                        .and_then(serde_json::Value::as_str)
                        .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
                })
        };
        let ties: Vec<(String, Vec<String>)> = written
            .iter()
            .filter_map(|me| {
                let ip = address_of(&now.expose.service_entries, me)?;
                // An entry second by name moves at once (the plan below); the first waits.
                if !expose::holds_first(&now.expose.service_entries, me, ip) {
                    return None;
                }
                let others = expose::tied(&now.expose.service_entries, me, ip);
                (!others.is_empty()).then(|| (me.clone(), others))
            })
            .collect();
        if !ties.is_empty() {
            if !waited {
                waited = true;
                tokio::time::sleep(SETTLE_WAIT).await;
                continue;
            }
            // Still tied: the other run is done and did not move, so this one does. Read
            // as if the other entries were older, the plan below moves this run's.
            let others: Vec<&String> = ties.iter().flat_map(|(_, o)| o).collect();
            for e in &mut now.expose.service_entries {
                let name = format!(
                    "{}/{}",
                    e.metadata.namespace.as_deref().unwrap_or_default(),
                    e.metadata.name.as_deref().unwrap_or_default()
                );
                if others.contains(&&name) {
                    e.metadata.creation_timestamp = None;
                }
            }
        }
        let mut moves = Plan::default();
        plan::plan_expose(&mut moves, &now, opts)?;
        moves
            .changes
            .retain(|c| c.writes() && written.contains(&format!("{vm_ns}/{}", c.name)));
        if moves.changes.is_empty() {
            return Ok(());
        }
        let result = crate::plan::write::execute(conn, &mut moves, opts.dry_run).await;
        for moved in &moves.changes {
            if let Some(row) = plan
                .changes
                .iter_mut()
                .find(|c| c.kind == Kind::ServiceEntry && c.name == moved.name)
            {
                row.detail = format!(
                    "{} (moved: a concurrent run took the address first)",
                    moved.detail
                );
                if moved.state != State::Done {
                    row.state = moved.state;
                }
            }
        }
        if let Err(failure) = result {
            return Err(match failure.error {
                crate::plan::write::Error::Kube(e) => Error::Kube(e),
                other => Error::Write(other),
            });
        }
    }
    Ok(())
}

/// Read and judge the CA files; warnings are printed, errors stop the run.
pub fn load_ca(
    paths: &pki::CaPaths,
    opts: &Options,
    now: SystemTime,
    err: &mut impl Write,
) -> Result<CaMaterial, Error> {
    let material = paths.read().map_err(Error::CaUnreadable)?;
    let findings = pki::check_ca(&material, now, opts.warn_within);
    for warning in findings
        .iter()
        .filter(|f| f.severity == CertSeverity::Warning)
    {
        writeln!(err, "warning: {warning}")?;
    }
    if pki::has_errors(&findings) {
        return Err(Error::CaInvalid {
            findings: findings
                .into_iter()
                .filter(|f| f.severity == CertSeverity::Error)
                .collect(),
        });
    }
    Ok(material)
}

/// `era: legacy (istio-citadel, istio-pilot in istio-system)` and the like.
pub fn era_line(observed: &Observed, opts: &Options) -> String {
    let ns = &opts.istio_namespace;
    match (observed.era, &observed.era_source) {
        (Some(era), Some(plan::EraSource::Forced)) => format!("era: {era} (--era)"),
        (Some(era), Some(plan::EraSource::Detected(names))) => {
            let what = match era {
                Era::Legacy => "Istio 1.4",
                Era::Modern => "istiod",
            };
            format!("era: {era} ({what}: {} in {ns})", names.join(", "))
        }
        _ => format!(
            "era: unknown (no Istio control plane in {ns} yet; it reads cacerts when installed)"
        ),
    }
}

fn summary(plan: &Plan, dry_run: DryRun) -> String {
    if plan.is_noop() {
        return "nothing to change: everything is already as wanted".into();
    }
    match dry_run {
        DryRun::Server => format!("dry run (server): nothing was stored; {}", plan.summary()),
        _ => plan.summary(),
    }
}

/// Tell the operator what the CA change means for the running control plane.
fn write_notes(
    plan: &Plan,
    opts: &Options,
    ca_deployment: Option<&str>,
    restart_due_earlier: bool,
    rolled_out: Option<&str>,
    err: &mut impl Write,
) -> io::Result<()> {
    let ca_written = plan
        .of(Kind::Secret)
        .any(|c| matches!(c.action, Action::Create | Action::Update) && c.state == State::Done);
    let restarted = plan.of(Kind::Deployment).any(|c| c.state == State::Done);
    let ns = &opts.istio_namespace;
    if let Some(dep) = ca_deployment
        && !restarted
        && (ca_written || restart_due_earlier)
    {
        let when = if ca_written {
            "cacerts was just written"
        } else {
            "cacerts changed after it last started"
        };
        // The command as a script can run it: without a terminal prepare cannot ask, so --yes.
        let yes = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            ""
        } else {
            " --yes"
        };
        writeln!(
            err,
            "note: {when}, but Deployment {ns}/{dep} still holds the old CA key and keeps signing with it; restart it with `kubectl rollout restart deployment/{dep} -n {ns}` or `{}{yes}`",
            restart_command(opts)
        )?;
    }
    if let Some(how) = rolled_out
        && let Some(dep) = ca_deployment
    {
        writeln!(
            err,
            "note: Deployment {ns}/{dep} {how}; workloads get certificates from it as they renew (restart them to switch now)"
        )?;
    }
    Ok(())
}

/// `kubectl meshvm prepare -n NS --restart-control-plane` with the flags this run was given
/// that the restart needs to reach the same cluster and control plane (`--yes` is the caller's).
pub fn restart_command(opts: &Options) -> String {
    let mut cmd = format!(
        "kubectl meshvm prepare -n {} --restart-control-plane",
        opts.vm_namespace
    );
    if opts.istio_namespace != crate::istio::DEFAULT_ISTIO_NAMESPACE {
        let _ = write!(cmd, " --istio-namespace {}", opts.istio_namespace);
    }
    if let Some(path) = &opts.kube.kubeconfig {
        let _ = write!(cmd, " --kubeconfig {}", path.display());
    }
    if let Some(context) = &opts.context {
        let _ = write!(cmd, " --context {context}");
    }
    cmd
}

/// Why `--restart-control-plane` restarts nothing.
fn nothing_to_restart(observed: &Observed, opts: &Options) -> String {
    let ns = &opts.istio_namespace;
    match (observed.ca_deployment(), &observed.cacerts) {
        (None, _) => format!(
            "nothing to restart: no CA Deployment (istio-citadel or istiod) runs in namespace {ns}"
        ),
        (Some(_), None) => format!(
            "nothing to restart: namespace {ns} has no cacerts secret, so the CA uses its own key"
        ),
        (Some(dep), Some(_)) => format!(
            "nothing to restart: Deployment {ns}/{} started after cacerts was last written, so it already signs with it",
            dep.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

async fn run_delete(
    opts: &Options,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Outcome, Error> {
    let conn = crate::kube::connect(&opts.kube, opts.context.as_deref()).await?;
    let found = Box::pin(delete::observe(&conn, opts)).await?;
    let mut plan = delete::plan(&found, opts)?;
    if plan.changes.is_empty() && !opts.expose.is_empty() {
        plan.write(out, opts.output, opts.show_secrets)?;
        let names: Vec<String> = opts
            .expose
            .iter()
            .map(|e| format!("{}/{}", opts.vm_namespace, e.entry_name()))
            .collect();
        writeln!(
            err,
            "nothing to delete: no ServiceEntry {} exists (Istio 1.4's --expose makes them; later releases need none)",
            names.join(", ")
        )?;
        return Ok(Outcome::Success);
    }
    if plan.changes.is_empty() {
        plan.write(out, opts.output, opts.show_secrets)?;
        writeln!(
            err,
            "nothing to delete: namespace {} does not exist{}",
            opts.vm_namespace,
            if opts.include_ca {
                " and neither does cacerts"
            } else {
                ""
            }
        )?;
        return Ok(Outcome::Success);
    }
    if opts.dry_run == DryRun::Client {
        plan.write(out, opts.output, opts.show_secrets)?;
        writeln!(
            err,
            "dry run (client): nothing was sent; {}",
            plan.summary()
        )?;
        return Ok(Outcome::Success);
    }
    if opts.dry_run == DryRun::None {
        let inside = found.contents.len();
        let question = if opts.expose.is_empty() {
            format!(
                "delete namespace {} and the {inside} object(s) listed in it{}",
                opts.vm_namespace,
                if found.cacerts.is_some() {
                    format!(
                        ", and the mesh-wide secret {}/cacerts",
                        opts.istio_namespace
                    )
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "delete {} ServiceEntr{} in namespace {} (the VMs there stop reaching {})",
                plan.changes.len(),
                if plan.changes.len() == 1 { "y" } else { "ies" },
                opts.vm_namespace,
                plan.changes
                    .iter()
                    .map(|c| c.detail.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if !opts.yes {
            // The list the operator confirms: on stderr, so stdout stays the final record.
            plan.write(err, crate::flags::OutputFormat::Table, false)?;
        }
        if !crate::terminal::confirm(&question, opts.yes)? {
            return Err(Error::Declined(question));
        }
    }
    let result = delete::apply(&conn, &mut plan, opts).await;
    plan.write(out, opts.output, opts.show_secrets)?;
    result?;
    if !opts.expose.is_empty() && opts.dry_run == DryRun::None {
        writeln!(
            err,
            "note: the /etc/hosts of the VMs in namespace {} still name {} until each gets a new bundle (the bundle verb) and runs its install.sh",
            opts.vm_namespace,
            opts.expose
                .iter()
                .map(expose::Exposed::host)
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if found.namespace.is_some() && !opts.include_ca {
        writeln!(
            err,
            "note: the mesh-wide secret {}/cacerts stays (add --include-ca to delete it too)",
            opts.istio_namespace
        )?;
    }
    writeln!(err, "{}", summary(&plan, opts.dry_run))?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests;
