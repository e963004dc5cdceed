//! `kubectl meshvm register`: make the VM an endpoint (Service + Endpoints, or WorkloadEntry).
//!
//! `Options::resolve` (pure) → `observe` (reads, concurrent) → `legacy::plan_*` / `modern::plan_entry`
//! (pure) → print (`--dry-run=client`) or `apply`. Endpoints and Services are changed by
//! read-modify-write guarded by `resourceVersion`; when another client wrote first (409), the
//! whole observe → plan → apply round runs again after a jittered pause, a bounded number of times.

pub mod legacy;
pub mod modern;
pub mod prune;
pub mod service_entry;

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use ::kube::Api;
use ::kube::core::DynamicObject;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};

use crate::args::RegisterArgs;
use crate::errors::{Diagnose, Outcome, UsageError};
use crate::flags::{DryRun, KubeArgs, OutputFormat};
use crate::istio::IstioKind;
use crate::kube::{Connection, Request};
use crate::names::{self, PairKind};
use crate::plan::write::Kind;
use crate::plan::{self, Change, Plan, State};

/// How many observe → plan → write rounds a registration tries before giving up on conflicts.
pub const MAX_ROUNDS: u32 = 16;

/// Why `register` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad command line (exit 2).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Talking to the cluster failed (boxed: it is by far the largest variant).
    #[error(transparent)]
    Kube(Box<crate::kube::Error>),
    /// An existing Service lacks ports (or names them differently) and `--update-service` was not given.
    #[error("service {namespace}/{name} differs from the registration: {differences}")]
    ServiceDiffers {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// What differs.
        differences: String,
        /// The Service runs as another ServiceAccount than the VM's (listed, the VM's), which
        /// `-s` was not given to choose: `--update-service` alone would widen its identity.
        keep_identity: Option<(String, String)>,
    },
    /// No `-n`, and the context's namespace is `default` with nothing meshvm made in it: the
    /// VM would become an endpoint in a namespace nobody chose for it.
    #[error(
        "no -n given, and namespace {namespace} ({why}) holds nothing meshvm made: nothing was written"
    )]
    ImplicitNamespace {
        /// The namespace the context names.
        namespace: String,
        /// Where the namespace came from.
        why: String,
    },
    /// The namespace to register in does not exist.
    #[error("namespace {namespace} does not exist: nothing was written")]
    NamespaceMissing {
        /// The namespace.
        namespace: String,
        /// The command that prepares it.
        fix: String,
    },
    /// The VM's ServiceAccount does not exist: prepare has not run in the namespace (or was given another `-s`).
    #[error(
        "serviceaccount {namespace}/{account} does not exist, so the VM cannot get a certificate for it: prepare has not run here for this ServiceAccount; nothing was written"
    )]
    NotPrepared {
        /// The namespace.
        namespace: String,
        /// The VM's ServiceAccount.
        account: String,
        /// The command that prepares it.
        fix: String,
    },
    /// The VM's ServiceAccount could not be settled.
    #[error(transparent)]
    Scope(crate::scope::Error),
    /// The Service selects pods: the endpoints controller owns its Endpoints.
    #[error(
        "service {namespace}/{name} has a selector ({selector}): the endpoints controller owns its endpoints and would remove {ip}"
    )]
    ServiceHasSelector {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// The selector, `k=v,…`.
        selector: String,
        /// The VM's address.
        ip: IpAddr,
    },
    /// `--workload-group` names a WorkloadGroup that does not exist.
    #[error("workloadgroup {namespace}/{name} does not exist")]
    WorkloadGroupMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The cluster has no WorkloadEntry API (Istio 1.4 or no Istio).
    #[error(
        "the cluster serves no workloadentries.networking.istio.io (tried v1, v1beta1, v1alpha3)"
    )]
    NoWorkloadEntryApi,
    /// `--service` was given but the entry has no labels a selector could match.
    #[error("--service {service}: the workload entry has no labels for the service to select")]
    NoLabelsToSelect {
        /// The Service.
        service: String,
    },
    /// Other clients kept winning the race for the same object.
    #[error("gave up after {rounds} rounds: {object} kept changing under us (409 Conflict)")]
    TooManyConflicts {
        /// `Kind ns/name`.
        object: String,
        /// Rounds tried.
        rounds: u32,
    },
    /// A write could not be sent as planned.
    #[error(transparent)]
    Write(crate::plan::write::Error),
    /// The ServiceEntry `mesh-expansion-SERVICE` is not what the registration needs.
    #[error("serviceentry {entry} differs from the registration: {differences}")]
    ServiceEntryDiffers {
        /// `ns/name`.
        entry: String,
        /// What differs.
        differences: String,
        /// Whether `--update-service` would fix it.
        update: bool,
    },
    /// An object meshvm would delete was not made by meshvm.
    #[error(
        "{object} was not made by meshvm (no app.kubernetes.io/managed-by=meshvm label), so meshvm does not delete it; nothing was written"
    )]
    NotMeshvms {
        /// `kind ns/name`.
        object: String,
        /// The command that deletes it by hand.
        command: String,
    },
    /// The cluster serves no ServiceEntry API.
    #[error(
        "the cluster serves no serviceentries.networking.istio.io (tried v1, v1beta1, v1alpha3)"
    )]
    NoServiceEntryApi,
    /// The confirmation could not be asked.
    #[error(transparent)]
    Prompt(#[from] crate::terminal::PromptError),
    /// The operator answered no.
    #[error("not confirmed: {0}; nothing was deleted")]
    Declined(String),
    /// Writing the result to stdout failed.
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
            Error::Kube(e) => e.hint(),
            Error::ServiceDiffers {
                keep_identity: Some((listed, vm)),
                ..
            } => Some(format!(
                "the service runs as ServiceAccount {listed}: run again with -s {listed} --update-service to add the ports (--update-service alone would also widen its identity to {listed},{vm}), or register the ports it has"
            )),
            Error::ServiceDiffers { .. } => Some(
                "run again with --update-service to change the service, or register the ports it has".into(),
            ),
            Error::ImplicitNamespace { namespace, .. } => Some(format!(
                "name the VM's namespace with -n NS (the one prepare made for it), or pass -n {namespace} to register there on purpose"
            )),
            Error::NamespaceMissing { fix, .. } => Some(format!(
                "prepare it first with `{fix}` (or check -n)"
            )),
            Error::NotPrepared { fix, .. } => Some(format!(
                "prepare it first with `{fix}`, or name the VM's ServiceAccount with -s"
            )),
            Error::Scope(e) => e.hint(),
            Error::ServiceHasSelector { .. } => Some(
                "register the VM under a service without a selector, or use --workload-entry (istiod)".into(),
            ),
            Error::WorkloadGroupMissing { namespace, name } => Some(format!(
                "create it with `kubectl meshvm prepare -n {namespace} --workload-group {name}`, or check -n"
            )),
            Error::NoWorkloadEntryApi => Some(
                "on Istio 1.4 register the legacy way: SERVICE IP [NAME:]PORT…".into(),
            ),
            Error::NoLabelsToSelect { .. } => {
                Some("give the entry labels with -l app=NAME or --workload-group".into())
            }
            Error::TooManyConflicts { .. } => {
                Some("run the same command again; it changes only what is still missing".into())
            }
            Error::Write(e) => e.hint(),
            Error::ServiceEntryDiffers { update: true, .. } => Some(
                "run again with --update-service to add the ports, or register the ports it has".into(),
            ),
            Error::ServiceEntryDiffers { update: false, .. } => Some(
                "choose another SERVICE name, or remove that serviceentry if it is stale".into(),
            ),
            Error::NotMeshvms { command, .. } => {
                Some(format!("if it is no longer needed, delete it with `{command}`"))
            }
            Error::NoServiceEntryApi => {
                Some("install Istio first (istio-init's CRDs); check with `kubectl get crd serviceentries.networking.istio.io`".into())
            }
            Error::Prompt(e) => e.hint(),
            Error::Declined(_) | Error::Output(_) => None,
        }
    }
    fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_) | Error::ImplicitNamespace { .. })
    }
}

/// What to register, resolved from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `SERVICE IP [NAME:]PORT…`
    Register {
        /// The Service.
        service: String,
        /// The VM's address.
        ip: IpAddr,
        /// The ports.
        ports: Vec<names::NamedPort>,
    },
    /// `--deregister SERVICE IP`
    Deregister {
        /// The Service.
        service: String,
        /// The VM's address.
        ip: IpAddr,
    },
    /// `--service-entry SERVICE IP[,IP…] [NAME:]PORT…` (`ports` empty with `--deregister`).
    ServiceEntry {
        /// The Service (the entry is `mesh-expansion-SERVICE`).
        service: String,
        /// The VM addresses.
        ips: Vec<IpAddr>,
        /// The ports.
        ports: Vec<names::NamedPort>,
        /// `--deregister`.
        deregister: bool,
    },
    /// `--prune`.
    Prune {
        /// `--stale-after`.
        stale_after: Duration,
    },
    /// `--workload-entry NAME …` (`address` is `None` with `--deregister`).
    Entry {
        /// The WorkloadEntry.
        name: String,
        /// The VM's address.
        address: Option<IpAddr>,
        /// `--network`.
        network: Option<String>,
        /// `--ports`.
        ports: Vec<names::NamedPort>,
        /// `--service`.
        service: Option<String>,
        /// `--workload-group`.
        workload_group: Option<String>,
    },
}

/// Validated options of one `register` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// `-s`.
    pub service_account: Option<String>,
    /// `-l`.
    pub labels: BTreeMap<String, String>,
    /// `-a`.
    pub annotations: BTreeMap<String, String>,
    /// `--update-service`.
    pub update_service: bool,
    /// `--dry-run`.
    pub dry_run: DryRun,
    /// `--yes`.
    pub yes: bool,
    /// `-o`.
    pub output: OutputFormat,
    /// The connection flags.
    pub kube: KubeArgs,
    /// The one `--context`, if given.
    pub context: Option<String>,
}

/// The flags of the WorkloadEntry form beyond its name, each with whether it was given.
fn entry_flags(args: &RegisterArgs) -> [(&'static str, bool); 5] {
    [
        ("--address", args.address.is_some()),
        ("--network", args.network.is_some()),
        ("--ports", !args.ports.is_empty()),
        ("--service", args.service.is_some()),
        ("--workload-group", args.workload_group.is_some()),
    ]
}

/// The first given flag of `flags` (pairs of flag and whether it was given) as a usage error
/// worded by `message`, for a form that does not take it.
fn refuse_flags<'a>(
    flags: impl IntoIterator<Item = &'a (&'static str, bool)>,
    hint: &str,
    message: impl Fn(&str) -> String,
) -> Result<(), UsageError> {
    match flags.into_iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(usage(message(flag), hint)),
        None => Ok(()),
    }
}

fn usage(message: impl Into<String>, hint: &str) -> UsageError {
    UsageError::new(message, Some(hint))
}

const LEGACY_HINT: &str =
    "e.g. `kubectl meshvm register expandvm 203.0.113.7 80 -n expandvm -s expandvm`";
const SERVICE_ENTRY_HINT: &str =
    "e.g. `kubectl meshvm register --service-entry vmhttp 203.0.113.7,203.0.113.8 http:9080 -n vm`";
const PRUNE_HINT: &str = "e.g. `kubectl meshvm register --prune -n vm --dry-run`";
const ENTRY_HINT: &str = "e.g. `kubectl meshvm register --workload-entry vm-1 --address 10.0.0.5 -n vm --workload-group vm`";

fn check(result: Result<(), String>, what: &str, hint: &str) -> Result<(), UsageError> {
    result.map_err(|problem| usage(format!("{what} {problem}"), hint))
}

impl Options {
    /// Validate the flags (no IO). Every problem is a usage error naming the flag or word.
    pub fn resolve(args: RegisterArgs) -> Result<Self, UsageError> {
        let context = args.kube.single_context()?.map(str::to_owned);
        if let Some(ns) = &args.kube.namespace {
            check(
                names::dns1123_label(ns),
                &format!("namespace {ns:?}"),
                "give -n an existing namespace",
            )?;
        }
        if let Some(sa) = &args.service_account {
            check(
                names::dns1123_subdomain(sa),
                &format!("serviceaccount {sa:?}"),
                "give -s the VM's ServiceAccount name",
            )?;
        }
        let labels = names::parse_pairs(&args.labels, PairKind::Label)
            .map_err(|m| usage(m, "write -l KEY=VALUE, e.g. -l app=vm"))?;
        let annotations = names::parse_pairs(&args.annotations, PairKind::Annotation)
            .map_err(|m| usage(m, "write -a KEY=VALUE"))?;
        let mode = if args.prune {
            Self::prune_mode(&args)?
        } else if args.service_entry {
            Self::service_entry_mode(&args)?
        } else {
            match &args.workload_entry {
                Some(name) => Self::entry_mode(&args, name)?,
                None => Self::legacy_mode(&args)?,
            }
        };
        if args.update_service && args.deregister {
            return Err(usage(
                "--update-service does nothing with --deregister (the service is kept as it is)",
                "drop --update-service",
            ));
        }
        Ok(Options {
            mode,
            service_account: args.service_account,
            labels,
            annotations,
            update_service: args.update_service,
            dry_run: args.mutate.dry_run,
            yes: args.mutate.yes,
            output: args.output,
            kube: args.kube,
            context,
        })
    }

    fn prune_mode(args: &RegisterArgs) -> Result<Mode, UsageError> {
        let others = [
            ("--deregister", args.deregister),
            ("--service-entry", args.service_entry),
            ("--update-service", args.update_service),
            ("--workload-entry", args.workload_entry.is_some()),
            ("-s", args.service_account.is_some()),
            ("-l", !args.labels.is_empty()),
            ("-a", !args.annotations.is_empty()),
        ];
        refuse_flags(
            others.iter().chain(&entry_flags(args)),
            PRUNE_HINT,
            |flag| format!("--prune takes no {flag}: it looks at the whole namespace"),
        )?;
        if !args.words.is_empty() {
            return Err(usage(
                format!(
                    "--prune takes no positional words (got {:?})",
                    args.words.join(" ")
                ),
                PRUNE_HINT,
            ));
        }
        Ok(Mode::Prune {
            stale_after: args.stale_after,
        })
    }

    fn service_entry_mode(args: &RegisterArgs) -> Result<Mode, UsageError> {
        let entry = ("--workload-entry", args.workload_entry.is_some());
        refuse_flags(
            std::iter::once(&entry).chain(&entry_flags(args)),
            SERVICE_ENTRY_HINT,
            |flag| format!("--service-entry is the legacy form and takes no {flag}"),
        )?;
        let (service, ips, rest) = match args.words.as_slice() {
            [] | [_] => {
                return Err(usage(
                    "--service-entry needs SERVICE IP[,IP...] [NAME:]PORT...",
                    SERVICE_ENTRY_HINT,
                ));
            }
            [service, ips, rest @ ..] => (service, ips, rest),
        };
        check(
            names::dns1035_label(service),
            &format!("service name {service:?}"),
            SERVICE_ENTRY_HINT,
        )?;
        // istioctl 1.4 split the IP word at commas (istio/istio@1.4.2
        // istioctl/cmd/add-to-mesh.go:323).
        let mut addresses: Vec<IpAddr> = Vec::new();
        for word in ips.split(',') {
            let ip = names::parse_address(word).map_err(|m| usage(m, SERVICE_ENTRY_HINT))?;
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        if args.deregister {
            if !rest.is_empty() {
                return Err(usage(
                    format!(
                        "--service-entry --deregister takes SERVICE IP[,IP...] only; unexpected {:?}",
                        rest.join(" ")
                    ),
                    "e.g. `kubectl meshvm register --service-entry --deregister vmhttp 203.0.113.7 -n vm`",
                ));
            }
            return Ok(Mode::ServiceEntry {
                service: service.clone(),
                ips: addresses,
                ports: Vec::new(),
                deregister: true,
            });
        }
        if rest.is_empty() {
            return Err(usage(
                "missing the ports: give at least one [NAME:]PORT after the IP",
                SERVICE_ENTRY_HINT,
            ));
        }
        let ports = names::parse_port_words(rest).map_err(|m| usage(m, SERVICE_ENTRY_HINT))?;
        for p in &ports {
            service_entry::protocol(&p.name)
                .map_err(|m| usage(format!("port {p}: {m}"), SERVICE_ENTRY_HINT))?;
        }
        Ok(Mode::ServiceEntry {
            service: service.clone(),
            ips: addresses,
            ports,
            deregister: false,
        })
    }

    fn service_entry_want(&self, namespace: &str, account: &str) -> Option<service_entry::Want> {
        let Mode::ServiceEntry {
            service,
            ips,
            ports,
            ..
        } = &self.mode
        else {
            return None;
        };
        Some(service_entry::Want {
            namespace: namespace.to_owned(),
            service: service.clone(),
            ips: ips.clone(),
            ports: ports.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            service_account: account.to_owned(),
            update_service: self.update_service,
            context: self.context.clone(),
        })
    }

    fn legacy_mode(args: &RegisterArgs) -> Result<Mode, UsageError> {
        refuse_flags(&entry_flags(args), ENTRY_HINT, |flag| {
            format!("{flag} belongs to the WorkloadEntry form and needs --workload-entry NAME")
        })?;
        let (service, ip, rest) = match args.words.as_slice() {
            [] => {
                return Err(usage(
                    "nothing to register: give SERVICE IP [NAME:]PORT…, or --workload-entry NAME --address IP",
                    LEGACY_HINT,
                ));
            }
            [_] => {
                return Err(usage(
                    "missing the VM's IP after the service name",
                    LEGACY_HINT,
                ));
            }
            [service, ip, rest @ ..] => (service, ip, rest),
        };
        check(
            names::dns1035_label(service),
            &format!("service name {service:?}"),
            LEGACY_HINT,
        )?;
        let ip = names::parse_address(ip).map_err(|m| usage(m, LEGACY_HINT))?;
        if args.deregister {
            if !rest.is_empty() {
                return Err(usage(
                    format!(
                        "--deregister takes SERVICE IP only; unexpected {:?}",
                        rest.join(" ")
                    ),
                    "e.g. `kubectl meshvm deregister expandvm 203.0.113.7 -n expandvm`",
                ));
            }
            return Ok(Mode::Deregister {
                service: service.clone(),
                ip,
            });
        }
        if rest.is_empty() {
            return Err(usage(
                "missing the ports: give at least one [NAME:]PORT after the IP",
                LEGACY_HINT,
            ));
        }
        let ports = names::parse_port_words(rest).map_err(|m| usage(m, LEGACY_HINT))?;
        Ok(Mode::Register {
            service: service.clone(),
            ip,
            ports,
        })
    }

    fn entry_mode(args: &RegisterArgs, name: &str) -> Result<Mode, UsageError> {
        if !args.words.is_empty() {
            return Err(usage(
                format!(
                    "--workload-entry takes no positional words (got {:?})",
                    args.words.join(" ")
                ),
                ENTRY_HINT,
            ));
        }
        check(
            names::dns1123_subdomain(name),
            &format!("--workload-entry {name:?}"),
            ENTRY_HINT,
        )?;
        if let Some(svc) = &args.service {
            check(
                names::dns1035_label(svc),
                &format!("--service {svc:?}"),
                ENTRY_HINT,
            )?;
        }
        if let Some(group) = &args.workload_group {
            check(
                names::dns1123_subdomain(group),
                &format!("--workload-group {group:?}"),
                ENTRY_HINT,
            )?;
        }
        if let Some(network) = &args.network
            && (network.is_empty() || network.chars().any(char::is_whitespace))
        {
            return Err(usage(
                format!("--network {network:?} must be a non-empty word"),
                ENTRY_HINT,
            ));
        }
        let ports = names::parse_named_ports(&args.ports).map_err(|m| usage(m, ENTRY_HINT))?;
        let address = match (&args.address, args.deregister) {
            (Some(_), true) => {
                return Err(usage(
                    "--deregister --workload-entry deletes the entry; drop --address",
                    "e.g. `kubectl meshvm deregister --workload-entry vm-1 -n vm`",
                ));
            }
            (None, true) => None,
            (Some(a), false) => Some(
                names::parse_address(a)
                    .map_err(|m| usage(format!("--address: {m}"), ENTRY_HINT))?,
            ),
            (None, false) => {
                return Err(usage(
                    "--workload-entry needs --address IP (the VM's address)",
                    ENTRY_HINT,
                ));
            }
        };
        Ok(Mode::Entry {
            name: name.to_owned(),
            address,
            network: args.network.clone(),
            ports,
            service: args.service.clone(),
            workload_group: args.workload_group.clone(),
        })
    }

    fn legacy_want(&self, namespace: &str, account: &str) -> Option<legacy::Want> {
        let (service, ip, ports) = match &self.mode {
            Mode::Register { service, ip, ports } => (service, *ip, ports.clone()),
            Mode::Deregister { service, ip } => (service, *ip, Vec::new()),
            Mode::Entry { .. } | Mode::ServiceEntry { .. } | Mode::Prune { .. } => return None,
        };
        Some(legacy::Want {
            namespace: namespace.to_owned(),
            service: service.clone(),
            ip,
            ports,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            // Not istioctl 1.4's `default`: the account prepare made ([`crate::scope`]).
            service_account: account.to_owned(),
            account_from_flag: self.service_account.is_some(),
            update_service: self.update_service,
            context: self.context.clone(),
        })
    }

    fn modern_want(&self, namespace: &str, account: Option<&str>) -> Option<modern::Want> {
        let Mode::Entry {
            name,
            address,
            network,
            ports,
            service,
            workload_group,
        } = &self.mode
        else {
            return None;
        };
        Some(modern::Want {
            namespace: namespace.to_owned(),
            name: name.clone(),
            address: *address,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            service_account: account.map(str::to_owned),
            network: network.clone(),
            ports: ports.clone(),
            service: service.clone(),
            workload_group: workload_group.clone(),
            update_service: self.update_service,
            context: self.context.clone(),
        })
    }
}

/// The pure result of planning: the rows (each with its write, when it sends one) and
/// warnings for stderr.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    /// One row per object, in write order.
    pub plan: Plan,
    /// Warnings to print.
    pub warnings: Vec<String>,
    /// Why nothing is to change, when nothing is (`--deregister` of what is not there).
    pub note: Option<String>,
}

/// What the cluster holds, for either form.
// One value per round, moved nowhere: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Observed {
    Legacy(legacy::Observed),
    ServiceEntry(service_entry::Observed),
    Modern(modern::Observed),
}

/// Run `kubectl meshvm register` with stdout and stderr.
pub async fn main(args: RegisterArgs) -> Result<Outcome, Error> {
    crate::rbac::Verb::Register.set_current();
    if args.print_rbac {
        crate::rbac::print(
            crate::rbac::Verb::Register,
            &crate::rbac::Namespaces {
                istio: crate::istio::DEFAULT_ISTIO_NAMESPACE.to_owned(),
                vm: args.kube.namespace.clone(),
            },
        );
        return Ok(Outcome::Success);
    }
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    Box::pin(run(args, &mut out, &mut err)).await
}

/// Run `register`, writing data to `out` and diagnostics to `err`.
pub async fn run(
    args: RegisterArgs,
    out: &mut impl io::Write,
    err: &mut impl io::Write,
) -> Result<Outcome, Error> {
    let opts = Options::resolve(args)?;
    let conn = crate::kube::connect(&opts.kube, opts.context.as_deref()).await?;
    // -n, else the context's namespace, else default: the rule every verb shares.
    let verb_namespace = conn.verb_namespace();
    let namespace = verb_namespace.name.clone();
    if let Some(note) = crate::scope::note_for_namespace(&conn, &verb_namespace).await? {
        // Registering makes the VM an endpoint, with an identity: not in a namespace nobody
        // chose. Removing (or pruning) there is harmless, so only a note.
        let adds = match &opts.mode {
            Mode::Register { .. } => true,
            Mode::ServiceEntry { deregister, .. } => !deregister,
            Mode::Entry { address, .. } => address.is_some(),
            Mode::Deregister { .. } | Mode::Prune { .. } => false,
        };
        if adds {
            return Err(Error::ImplicitNamespace {
                namespace: namespace.clone(),
                why: verb_namespace.why(),
            });
        }
        writeln!(err, "note: {note}")?;
    }
    if let Mode::Prune { stale_after } = opts.mode {
        return Box::pin(run_prune(&conn, &opts, &namespace, stale_after, out, err)).await;
    }
    let mut earlier: Vec<Change> = Vec::new();
    let mut round = 0;
    let planned = loop {
        round += 1;
        let (observed, account) = Box::pin(observe(&conn, &opts, &namespace)).await?;
        let mut planned = plan_observed(&observed, &opts, &namespace, account.as_deref())?;
        keep_earlier_rows(&mut planned.plan, &earlier);
        if opts.dry_run == DryRun::Client || planned.plan.changes.iter().all(|c| c.write.is_none())
        {
            break planned;
        }
        match apply(&conn, opts.dry_run, &mut planned).await {
            Ok(()) => break planned,
            Err(Failure::Raced(object)) => {
                earlier.extend(
                    planned
                        .plan
                        .changes
                        .iter()
                        .filter(|c| c.state == State::Done)
                        .cloned(),
                );
                if round >= MAX_ROUNDS {
                    return Err(Error::TooManyConflicts {
                        object,
                        rounds: round,
                    });
                }
                tracing::debug!(round, %object, "another client wrote first; observing again");
                tokio::time::sleep(conflict_pause(round)).await;
            }
            Err(Failure::Failed(e)) => {
                for w in &planned.warnings {
                    writeln!(err, "warning: {w}")?;
                }
                planned.plan.write(out, OutputFormat::Table, false)?;
                return Err(e);
            }
        }
    };
    for w in &planned.warnings {
        writeln!(err, "warning: {w}")?;
    }
    planned.plan.write(out, opts.output, false)?;
    match &planned.note {
        Some(note) => writeln!(err, "{note}")?,
        None => writeln!(err, "{}", summary(&opts, &namespace, &planned.plan))?,
    }
    Ok(Outcome::Success)
}

/// `--prune`: observe the namespace, plan, show, confirm, delete.
async fn run_prune(
    conn: &Connection,
    opts: &Options,
    namespace: &str,
    stale_after: Duration,
    out: &mut impl io::Write,
    err: &mut impl io::Write,
) -> Result<Outcome, Error> {
    let observed = Box::pin(observe_prune(conn, namespace)).await?;
    let mut planned = prune::plan(
        &observed,
        namespace,
        k8s_openapi::jiff::Timestamp::now(),
        stale_after,
    );
    for w in &planned.warnings {
        writeln!(err, "warning: {w}")?;
    }
    if let Some(note) = &planned.note {
        planned.plan.write(out, opts.output, false)?;
        writeln!(err, "{note}")?;
        return Ok(Outcome::Success);
    }
    if opts.dry_run == DryRun::None {
        let question = format!(
            "delete or update the {} object(s) listed in namespace {namespace}",
            planned.plan.changes.len()
        );
        if !opts.yes {
            // The list the operator confirms: on stderr, so stdout stays the final record.
            planned.plan.write(err, OutputFormat::Table, false)?;
        }
        if !crate::terminal::confirm(&question, opts.yes)? {
            return Err(Error::Declined(question));
        }
    }
    let result = if opts.dry_run == DryRun::Client {
        Ok(())
    } else {
        crate::plan::write::execute(conn, &mut planned.plan, opts.dry_run).await
    };
    planned.plan.write(out, opts.output, false)?;
    if let Err(failure) = result {
        return Err(match failure.error {
            crate::plan::write::Error::Kube(e) => Error::Kube(e),
            other => Error::Write(other),
        });
    }
    let mood = match opts.dry_run {
        DryRun::None => "",
        DryRun::Client => "dry run: ",
        DryRun::Server => "server dry run: ",
    };
    writeln!(
        err,
        "{mood}pruned namespace {namespace} ({})",
        planned.plan.summary()
    )?;
    Ok(Outcome::Success)
}

/// What `--prune` judges: the namespace's WorkloadEntries (when served), Services and Endpoints.
async fn observe_prune(conn: &Connection, namespace: &str) -> Result<prune::Observed, Error> {
    let services: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
    let endpoints: Api<Endpoints> = Api::namespaced(conn.client.clone(), namespace);
    let params = ::kube::api::ListParams::default();
    let (version, services, endpoints) = tokio::try_join!(
        async {
            IstioKind::WorkloadEntry
                .served_version(conn)
                .await
                .map_err(Error::from)
        },
        async {
            conn.call(Request::new("list", "services").ns(namespace), || {
                services.list(&params)
            })
            .await
            .map_err(Error::from)
        },
        async {
            conn.call(Request::new("list", "endpoints").ns(namespace), || {
                endpoints.list(&params)
            })
            .await
            .map_err(Error::from)
        },
    )?;
    let mut entries = Vec::new();
    if let Some(version) = version {
        let api: Api<DynamicObject> = Api::namespaced_with(
            conn.client.clone(),
            namespace,
            &IstioKind::WorkloadEntry.resource(&version),
        );
        let list = conn
            .call(
                Request::new("list", IstioKind::WorkloadEntry.resource_name()).ns(namespace),
                || api.list(&params),
            )
            .await?;
        for item in list.items {
            let mut v = serde_json::to_value(&item).unwrap_or_default();
            v["apiVersion"] = format!("networking.istio.io/{version}").into();
            v["kind"] = "WorkloadEntry".into();
            entries.push(v);
        }
    }
    Ok(prune::Observed {
        entries,
        services: services.items,
        endpoints: endpoints.items,
    })
}

/// Rows written in an earlier round read as unchanged now; report what was actually done
/// (as a record only: its write is not sent again).
fn keep_earlier_rows(plan: &mut Plan, earlier: &[Change]) {
    for change in &mut plan.changes {
        if change.action == plan::Action::Unchanged
            && let Some(done) = earlier
                .iter()
                .rev()
                .find(|d| d.kind == change.kind && d.name == change.name)
        {
            *change = Change {
                write: None,
                ..done.clone()
            };
        }
    }
}

/// Full-jitter exponential pause between rounds: 25 ms doubling up to 1 s.
fn conflict_pause(round: u32) -> Duration {
    let cap = Duration::from_millis(25 << round.min(6)).min(Duration::from_secs(1));
    cap.mul_f64(rand::random::<f64>().max(0.05))
}

/// The stderr line that says what happened.
fn summary(opts: &Options, namespace: &str, plan: &Plan) -> String {
    let mood = match opts.dry_run {
        DryRun::None => "",
        DryRun::Client => "dry run: ",
        DryRun::Server => "server dry run: ",
    };
    let first = plan
        .changes
        .iter()
        .find(|c| c.kind != Kind::Service || plan.changes.len() == 1);
    let noop = plan.is_noop();
    let head = match &opts.mode {
        Mode::Register { service, ip, ports } => {
            let ports = ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if noop {
                format!(
                    "{ip} is already an endpoint of service {namespace}/{service} ({ports}): nothing changed"
                )
            } else {
                format!("{mood}registered {ip} in service {namespace}/{service} ({ports})")
            }
        }
        Mode::Deregister { service, ip } => {
            format!("{mood}deregistered {ip} from service {namespace}/{service}")
        }
        Mode::ServiceEntry {
            service,
            ips,
            deregister,
            ..
        } => {
            let ips = ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let entry = service_entry::entry_name(service);
            match (deregister, noop) {
                (false, true) => {
                    format!("{ips} already in serviceentry {namespace}/{entry}: nothing changed")
                }
                (false, false) => {
                    format!("{mood}registered {ips} in serviceentry {namespace}/{entry}")
                }
                (true, _) => {
                    format!("{mood}deregistered {ips} from serviceentry {namespace}/{entry}")
                }
            }
        }
        Mode::Prune { .. } => format!("{mood}pruned namespace {namespace}"),
        Mode::Entry {
            name,
            address: Some(_),
            ..
        } => match first.map(|c| c.action) {
            Some(plan::Action::Unchanged) => {
                format!("workloadentry {namespace}/{name} is already as wanted: nothing changed")
            }
            _ => format!("{mood}registered workloadentry {namespace}/{name}"),
        },
        Mode::Entry {
            name,
            address: None,
            ..
        } => {
            format!("{mood}deleted workloadentry {namespace}/{name}")
        }
    };
    if noop {
        head
    } else {
        format!("{head} ({})", plan.summary())
    }
}

async fn get_opt<K>(
    conn: &Connection,
    api: &Api<K>,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, crate::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    conn.call(
        Request::new("get", resource).ns(namespace).name(name),
        || api.get_opt(name),
    )
    .await
}

fn scope_error(e: crate::scope::Error) -> Error {
    match e {
        crate::scope::Error::Kube(k) => Error::Kube(k),
        other @ crate::scope::Error::Ambiguous { .. } => Error::Scope(other),
    }
}

/// The ServiceAccount candidates (`scope::read_candidates`) when `wanted`, read beside the
/// verb's other reads; `None` otherwise.
async fn candidates_if(
    wanted: bool,
    conn: &Connection,
    namespace: &str,
    opts: &Options,
) -> Result<Option<crate::scope::Candidates>, Error> {
    if !wanted {
        return Ok(None);
    }
    crate::scope::read_candidates(conn, namespace, opts.service_account.as_deref())
        .await
        .map(Some)
        .map_err(Error::from)
}

/// Settle the VM's ServiceAccount from `candidates` (`None`: no account is needed) and say
/// whether it exists; only where the namespace exists (elsewhere the account is settled by the
/// rule alone, and its existence is not asked).
async fn settle_in(
    conn: &Connection,
    candidates: Option<crate::scope::Candidates>,
    namespace_exists: bool,
    group: Option<(&str, &str)>,
) -> Result<(Option<String>, Option<bool>), Error> {
    match candidates {
        Some(c) if namespace_exists => {
            let (account, object) = crate::scope::settle_account(conn, c, group)
                .await
                .map_err(scope_error)?;
            Ok((Some(account.name), Some(object.is_some())))
        }
        Some(c) => Ok((Some(c.settle(group).map_err(scope_error)?.name), None)),
        None => Ok((None, None)),
    }
}

/// Read what the plan needs, concurrently, and settle the VM's ServiceAccount by the one rule
/// ([`crate::scope::service_account`]); returns it beside what was read (`None` for `--deregister`).
async fn observe(
    conn: &Connection,
    opts: &Options,
    namespace: &str,
) -> Result<(Observed, Option<String>), Error> {
    let namespaces: Api<Namespace> = Api::all(conn.client.clone());
    let get_namespace = async {
        conn.call(Request::new("get", "namespaces").name(namespace), || {
            namespaces.get_opt(namespace)
        })
        .await
        .map_err(Error::from)
    };
    if let Mode::ServiceEntry {
        service,
        deregister,
        ..
    } = &opts.mode
    {
        return Box::pin(observe_service_entry(
            conn,
            opts,
            namespace,
            service,
            *deregister,
        ))
        .await;
    }
    if let Mode::Register { service, .. } | Mode::Deregister { service, .. } = &opts.mode {
        let services: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
        let endpoints: Api<Endpoints> = Api::namespaced(conn.client.clone(), namespace);
        let register = matches!(opts.mode, Mode::Register { .. });
        // The ServiceAccount's candidates go out with the other reads (one round trip); errors
        // are reported in this order whatever answers first.
        let (ns, service, endpoints, candidates) = tokio::join!(
            get_namespace,
            async {
                get_opt(conn, &services, "services", namespace, service)
                    .await
                    .map_err(Error::from)
            },
            async {
                get_opt(conn, &endpoints, "endpoints", namespace, service)
                    .await
                    .map_err(Error::from)
            },
            candidates_if(register, conn, namespace, opts),
        );
        let (ns, service, endpoints, candidates) = (ns?, service?, endpoints?, candidates?);
        let (account, account_exists) = settle_in(conn, candidates, ns.is_some(), None).await?;
        return Ok((
            Observed::Legacy(legacy::Observed {
                service,
                endpoints,
                service_account_exists: account_exists,
                namespace_missing: ns.is_none(),
            }),
            account,
        ));
    }
    let want = opts
        .modern_want(namespace, None)
        .expect("a mode is either legacy or modern");
    // Discovery, the namespace and the ServiceAccount's candidates together; errors in this
    // order whatever answers first.
    let (version, ns, candidates) = tokio::join!(
        served_entry_version(conn),
        get_namespace,
        candidates_if(want.address.is_some(), conn, namespace, opts)
    );
    // As before the reads went together: no account where the namespace is missing.
    let (version, ns) = (version?, ns?);
    let candidates = if ns.is_some() { candidates? } else { None };
    // WorkloadGroup has its own served version (v1alpha3 only on Istio 1.8–1.12, where
    // WorkloadEntry is also at v1beta1); not served at all before Istio 1.8: then "absent".
    // Known from the discovery above (one document per group).
    let group_version = IstioKind::WorkloadGroup
        .served_version(conn)
        .await?
        .unwrap_or_else(|| version.clone());
    let groups: Api<DynamicObject> = Api::namespaced_with(
        conn.client.clone(),
        namespace,
        &IstioKind::WorkloadGroup.resource(&group_version),
    );
    let entries: Api<DynamicObject> = Api::namespaced_with(
        conn.client.clone(),
        namespace,
        &IstioKind::WorkloadEntry.resource(&version),
    );
    let services: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
    let group_resource = IstioKind::WorkloadGroup.resource_name();
    let entry_resource = IstioKind::WorkloadEntry.resource_name();
    let (group, entry, service) = tokio::try_join!(
        async {
            match &want.workload_group {
                Some(g) => get_opt(conn, &groups, &group_resource, namespace, g)
                    .await
                    .map_err(Error::from),
                None => Ok(None),
            }
        },
        async {
            get_opt(conn, &entries, &entry_resource, namespace, &want.name)
                .await
                .map_err(Error::from)
        },
        async {
            match &want.service {
                Some(s) if want.address.is_some() => {
                    get_opt(conn, &services, "services", namespace, s)
                        .await
                        .map_err(Error::from)
                }
                _ => Ok(None),
            }
        },
    )?;
    // The account can come from the WorkloadGroup, so it is settled once the group is known;
    // the candidates read above hold it unless the group names an account neither `-s`, the
    // namespace's name nor prepare's label gives.
    let from_group = want
        .workload_group
        .as_deref()
        .zip(group.as_ref().map(crate::scope::group_account));
    let (account, service_account_exists) =
        settle_in(conn, candidates, ns.is_some(), from_group).await?;
    Ok((
        Observed::Modern(modern::Observed {
            version,
            group,
            entry,
            service,
            service_account_exists,
            namespace_missing: ns.is_none(),
        }),
        account,
    ))
}

/// Read what the ServiceEntry form needs: the entry (at the version served), the Service, the
/// namespace and, to register, the VM's ServiceAccount.
async fn observe_service_entry(
    conn: &Connection,
    opts: &Options,
    namespace: &str,
    service: &str,
    deregister: bool,
) -> Result<(Observed, Option<String>), Error> {
    let namespaces: Api<Namespace> = Api::all(conn.client.clone());
    // Discovery, the namespace and the ServiceAccount's candidates together; errors in this
    // order whatever answers first.
    let (version, ns, candidates) = tokio::join!(
        async {
            IstioKind::ServiceEntry
                .served_version(conn)
                .await?
                .ok_or(Error::NoServiceEntryApi)
        },
        async {
            conn.call(Request::new("get", "namespaces").name(namespace), || {
                namespaces.get_opt(namespace)
            })
            .await
            .map_err(Error::from)
        },
        async {
            if deregister {
                Ok(None)
            } else {
                crate::scope::read_candidates(conn, namespace, opts.service_account.as_deref())
                    .await
                    .map(Some)
                    .map_err(Error::from)
            }
        },
    );
    let (version, ns, candidates) = (version?, ns?, candidates?);
    let entries: Api<DynamicObject> = Api::namespaced_with(
        conn.client.clone(),
        namespace,
        &IstioKind::ServiceEntry.resource(&version),
    );
    let services: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
    let entry_name = service_entry::entry_name(service);
    let entry_resource = IstioKind::ServiceEntry.resource_name();
    let (entry, svc) = tokio::try_join!(
        async {
            get_opt(conn, &entries, &entry_resource, namespace, &entry_name)
                .await
                .map_err(Error::from)
        },
        async {
            get_opt(conn, &services, "services", namespace, service)
                .await
                .map_err(Error::from)
        },
    )?;
    let (account, account_exists) = settle_in(conn, candidates, ns.is_some(), None).await?;
    let entry = entry.map(|e| {
        let mut v = serde_json::to_value(&e).unwrap_or_default();
        v["apiVersion"] = format!("networking.istio.io/{version}").into();
        v["kind"] = "ServiceEntry".into();
        v
    });
    Ok((
        Observed::ServiceEntry(service_entry::Observed {
            version,
            entry,
            service: svc,
            service_account_exists: account_exists,
            namespace_missing: ns.is_none(),
        }),
        account,
    ))
}

/// The version the cluster serves WorkloadEntry at, discovered per kind ([`crate::read::served`]).
async fn served_entry_version(conn: &Connection) -> Result<String, Error> {
    IstioKind::WorkloadEntry
        .served_version(conn)
        .await?
        .ok_or(Error::NoWorkloadEntryApi)
}

fn plan_observed(
    observed: &Observed,
    opts: &Options,
    namespace: &str,
    account: Option<&str>,
) -> Result<Planned, Error> {
    match observed {
        Observed::Legacy(o) => {
            let want = opts
                .legacy_want(namespace, account.unwrap_or(namespace))
                .expect("legacy observation for a legacy mode");
            if matches!(opts.mode, Mode::Deregister { .. }) {
                legacy::plan_deregister(o, &want)
            } else {
                legacy::plan_register(o, &want)
            }
        }
        Observed::ServiceEntry(o) => {
            let want = opts
                .service_entry_want(namespace, account.unwrap_or(namespace))
                .expect("serviceentry observation for the serviceentry mode");
            if matches!(
                opts.mode,
                Mode::ServiceEntry {
                    deregister: true,
                    ..
                }
            ) {
                service_entry::plan_deregister(o, &want)
            } else {
                service_entry::plan_register(o, &want)
            }
        }
        Observed::Modern(o) => {
            let want = opts
                .modern_want(namespace, account)
                .expect("modern observation for a modern mode");
            modern::plan_entry(o, &want)
        }
    }
}

/// Why applying stopped.
enum Failure {
    /// Another client changed or created the object first (`Kind ns/name`): observe again.
    Raced(String),
    /// A real error.
    Failed(Error),
}

/// Send the writes through the executor, one after another in row order (a Service before its
/// Endpoints); stop at the first race or failure.
async fn apply(conn: &Connection, dry_run: DryRun, planned: &mut Planned) -> Result<(), Failure> {
    planned.plan.in_sequence();
    let Err(failure) = crate::plan::write::execute(conn, &mut planned.plan, dry_run).await else {
        return Ok(());
    };
    Err(match failure.error {
        crate::plan::write::Error::Raced { object, .. } => Failure::Raced(object),
        crate::plan::write::Error::Kube(e) => Failure::Failed(Error::Kube(e)),
        other @ crate::plan::write::Error::Invalid { .. } => Failure::Failed(Error::Write(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(line: &[&str]) -> Result<Options, UsageError> {
        let mut argv = vec!["kubectl-meshvm-register"];
        argv.extend(line);
        Options::resolve(RegisterArgs::try_parse_from(argv).expect("clap accepts it"))
    }

    #[test]
    fn the_runbook_command_resolves() {
        let o = resolve(&[
            "expandvm",
            "-s",
            "expandvm",
            "-n",
            "expandvm",
            "35.187.36.54",
            "80",
        ])
        .unwrap();
        assert_eq!(
            o.mode,
            Mode::Register {
                service: "expandvm".into(),
                ip: "35.187.36.54".parse().unwrap(),
                ports: vec![names::NamedPort {
                    name: "http".into(),
                    port: 80
                }],
            }
        );
        let want = o.legacy_want("expandvm", "expandvm").unwrap();
        assert_eq!(
            want.all_annotations()[crate::istio::SERVICE_ACCOUNTS_ANNOTATION],
            "expandvm"
        );
        assert!(
            o.legacy_want("expandvm", "expandvm")
                .unwrap()
                .account_from_flag
        );
        let o = resolve(&["svc", "10.0.0.1", "80"]).unwrap();
        let want = o.legacy_want("ns", "ns").unwrap();
        assert_eq!(
            (want.service_account.as_str(), want.account_from_flag),
            ("ns", false),
            "the account the rule settled, not istioctl's default"
        );
    }

    #[test]
    fn every_bad_command_line_is_a_usage_error() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "nothing to register"),
            (&["svc"], "missing the VM's IP"),
            (&["svc", "10.0.0.1"], "missing the ports"),
            (&["svc", "10.0.0.1", "http"], "not a port number"),
            (&["svc", "10.0.0.1", "70000"], "outside 1-65535"),
            (&["svc", "169.254.1.1", "80"], "link-local"),
            (&["svc", "fe80::1", "80"], "link-local"),
            (&["svc", "0.0.0.0", "80"], "unspecified"),
            (&["svc", "224.0.0.5", "80"], "multicast"),
            (&["svc", "vm.example", "80"], "not an IPv4 or IPv6"),
            (&["Svc", "10.0.0.1", "80"], "service name"),
            (&["1svc", "10.0.0.1", "80"], "letter"),
            (&["svc", "10.0.0.1", "80", "-n", "Bad_NS"], "namespace"),
            (&["svc", "10.0.0.1", "80", "-s", "Bad SA"], "serviceaccount"),
            (&["svc", "10.0.0.1", "80", "-l", "app"], "KEY=VALUE"),
            (&["svc", "10.0.0.1", "80", "-l", "app=a b"], "the value"),
            (&["svc", "10.0.0.1", "80", "-a", "bad key=x"], "the key"),
            (
                &["svc", "10.0.0.1", "80", "--address", "10.0.0.2"],
                "--address belongs",
            ),
            (
                &["svc", "10.0.0.1", "80", "--service", "x"],
                "--service belongs",
            ),
            (
                &["--deregister", "svc", "10.0.0.1", "80"],
                "SERVICE IP only",
            ),
            (
                &["--deregister", "--update-service", "svc", "10.0.0.1"],
                "--update-service",
            ),
            (&["--workload-entry", "vm-1"], "needs --address"),
            (
                &["--workload-entry", "vm-1", "--address", "10.0.0.1", "svc"],
                "no positional",
            ),
            (
                &["--workload-entry", "VM", "--address", "10.0.0.1"],
                "--workload-entry",
            ),
            (
                &["--workload-entry", "vm-1", "--address", "::"],
                "unspecified",
            ),
            (
                &[
                    "--workload-entry",
                    "vm-1",
                    "--address",
                    "10.0.0.1",
                    "--ports",
                    "http:80",
                ],
                "NAME=PORT",
            ),
            (
                &[
                    "--workload-entry",
                    "vm-1",
                    "--address",
                    "10.0.0.1",
                    "--ports",
                    "http=0",
                ],
                "1-65535",
            ),
            (
                &[
                    "--workload-entry",
                    "vm-1",
                    "--address",
                    "10.0.0.1",
                    "--service",
                    "Vm",
                ],
                "--service",
            ),
            (
                &[
                    "--workload-entry",
                    "vm-1",
                    "--deregister",
                    "--address",
                    "10.0.0.1",
                ],
                "drop --address",
            ),
            (
                &["svc", "10.0.0.1", "80", "--context", "a", "--context", "b"],
                "--context",
            ),
        ];
        for (line, part) in cases {
            let err = resolve(line).unwrap_err();
            assert!(err.message.contains(part), "{line:?}: {}", err.message);
            assert!(Error::from(err).is_usage());
        }
    }

    #[test]
    fn workload_entry_form_resolves() {
        let o = resolve(&[
            "--workload-entry",
            "vm-1",
            "--address",
            "2001:db8::5",
            "-n",
            "vm",
            "--network",
            "vm-net",
            "--ports",
            "http=8080,grpc=9090",
            "--service",
            "vm",
            "--workload-group",
            "vm",
            "-l",
            "app=vm",
        ])
        .unwrap();
        let want = o.modern_want("vm", None).unwrap();
        assert_eq!(want.address, Some("2001:db8::5".parse().unwrap()));
        assert_eq!(want.ports.len(), 2);
        assert_eq!(want.labels["app"], "vm");
        let legacy = resolve(&[
            "svc",
            "10.0.0.1",
            "80",
            "-l",
            "env=prod,vers=2",
            "-a",
            "note=a,b",
        ])
        .unwrap();
        assert_eq!(legacy.labels.len(), 2, "istioctl's -l splits at commas");
        assert_eq!(
            legacy.annotations["note"], "a,b",
            "annotation values keep their commas"
        );
        assert!(o.legacy_want("vm", "vm").is_none());
        let o = resolve(&["--deregister", "--workload-entry", "vm-1"]).unwrap();
        assert!(matches!(o.mode, Mode::Entry { address: None, .. }));
    }

    #[test]
    fn earlier_rounds_keep_their_rows() {
        let mut plan = Plan::default();
        plan.push(Change::new(
            plan::Action::Unchanged,
            Kind::Service,
            Some("ns"),
            "svc",
        ));
        plan.push(Change::new(
            plan::Action::Update,
            Kind::Endpoints,
            Some("ns"),
            "svc",
        ));
        let mut created = Change::new(plan::Action::Create, Kind::Service, Some("ns"), "svc");
        created.state = State::Done;
        let sent = created.clone().write(crate::plan::write::Write::create(
            Kind::Service,
            serde_json::json!({"apiVersion": "v1", "kind": "Service"}),
        ));
        keep_earlier_rows(&mut plan, &[sent]);
        // Regression: the earlier round's write was sent again, raced with itself every round.
        assert_eq!(plan.changes[0], created, "the row, without its write");
        assert_eq!(plan.changes[1].action, plan::Action::Update);
    }

    #[test]
    fn conflict_pauses_stay_bounded() {
        for round in 0..40 {
            assert!(conflict_pause(round) <= Duration::from_secs(1));
        }
    }
}
