//! Bundle's flags validated into [`Options`]: pure, no IO; usage errors exit 2.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::args::BundleArgs;
use crate::errors::UsageError;
use crate::flags::{KubeArgs, OutputFormat};
use crate::istio::Era;
use crate::names;

use super::output;

/// kube-apiserver refuses TokenRequests shorter than ten minutes.
const MIN_TOKEN_SECONDS: u64 = 600;

/// Where the gateway address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaySource {
    /// A Service: `None` name means the era's default; `None` namespace the Istio namespace.
    Service {
        /// `--gateway-service` name.
        name: Option<String>,
        /// `--gateway-service` namespace.
        namespace: Option<String>,
    },
    /// `--gateway-ip`.
    Ip(IpAddr),
    /// `--no-gateway`: no `hosts` lines.
    None,
}

/// Validated flags: no IO happened yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The VM's namespace (`-n`, else the context's: [`crate::kube::resolve_namespace`]).
    pub vm_namespace: String,
    /// Where [`Self::vm_namespace`] came from.
    pub namespace_source: crate::kube::NamespaceSource,
    /// `-s`, when given.
    pub service_account: Option<String>,
    /// `--service` (legacy `ISTIO_SERVICE`).
    pub service: Option<String>,
    /// `-d`.
    pub output_dir: PathBuf,
    /// `--archive`.
    pub archive: Option<PathBuf>,
    /// Where the gateway address comes from.
    pub gateway: GatewaySource,
    /// `--service-cidr`, validated (`*` or comma-separated CIDRs).
    pub service_cidr: Option<String>,
    /// `--inbound-ports`.
    pub inbound_ports: Vec<u16>,
    /// `--token-duration` in seconds.
    pub token_seconds: i64,
    /// `--wait`: how long to wait for Citadel's identity (legacy).
    pub wait: std::time::Duration,
    /// `--workload-group`.
    pub workload_group: Option<String>,
    /// `--internal-ip`.
    pub internal_ip: Option<IpAddr>,
    /// `--cluster-id`.
    pub cluster_id: Option<String>,
    /// `--revision`; `None` for the default revision.
    pub revision: Option<String>,
    /// `--istio-namespace`.
    pub istio_namespace: String,
    /// `--era`.
    pub era: Option<Era>,
    /// `--force`.
    pub force: bool,
    /// `-o`.
    pub output: OutputFormat,
    /// The connection flags.
    pub kube: KubeArgs,
    /// The one `--context`.
    pub context: Option<String>,
}

pub(crate) fn usage(message: String, hint: &str) -> UsageError {
    UsageError::new(message, Some(hint))
}

/// Validate `--service-cidr`: `*`, or comma-separated CIDRs with no host bits set.
pub fn parse_service_cidr(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Ok("*".into());
    }
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (ip, len) = part.split_once('/').ok_or_else(|| {
            format!("{part:?} is not a CIDR (expected ADDRESS/PREFIX, e.g. 10.96.0.0/12)")
        })?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{part:?}: {ip:?} is not an IP address"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{part:?}: the prefix length must be 0 to {bits}"))?;
        let network = mask(ip, len);
        if network != ip {
            return Err(format!(
                "{part:?} has host bits set; did you mean {network}/{len}?"
            ));
        }
        out.push(format!("{network}/{len}"));
    }
    Ok(out.join(","))
}

/// `ip` with all but the first `len` bits cleared.
pub(crate) fn mask(ip: IpAddr, len: u32) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl Options {
    /// Validate the flags (usage errors exit 2).
    pub fn resolve(args: BundleArgs) -> Result<Self, UsageError> {
        let context = args.kube.single_context()?.map(str::to_owned);
        let mut kube = args.kube.clone();
        kube.namespace = kube.namespace_flag("--vm-namespace", args.vm_namespace.as_deref())?;
        if let Some(ns) = &kube.namespace {
            let flag = if args.kube.namespace.is_some() {
                "-n"
            } else {
                "--vm-namespace"
            };
            names::flag_name(flag, ns, names::dns1123_label)
                .map_err(|m| usage(m, "e.g. -n expandvm"))?;
        }
        // The one rule: -n, else the context's namespace, else default.
        let namespace = crate::kube::resolve_namespace(&kube, context.as_deref())
            // An unreadable kubeconfig is reported by the connection that follows.
            .unwrap_or_else(|_| crate::kube::VerbNamespace::flag("default"));
        names::flag_name(
            "--istio-namespace",
            &args.istio_namespace,
            names::dns1123_label,
        )
        .map_err(|m| usage(m, "e.g. --istio-namespace istio-system"))?;
        if let Some(sa) = args.service_account.as_deref() {
            names::flag_name("--service-account", sa, names::dns1123_subdomain)
                .map_err(|m| usage(m, "give the VM's ServiceAccount name, e.g. -s expandvm"))?;
        }
        if let Some(svc) = args.service.as_deref() {
            names::flag_name("--service", svc, names::dns1035_label)
                .map_err(|m| usage(m, "give the Service's name, e.g. --service expandvm"))?;
        }
        if let Some(wg) = args.workload_group.as_deref() {
            names::flag_name("--workload-group", wg, names::dns1123_subdomain)
                .map_err(|m| usage(m, "give the WorkloadGroup's name, e.g. --workload-group vm"))?;
        }
        let gateway = if args.no_gateway {
            GatewaySource::None
        } else if let Some(ip) = &args.gateway_ip {
            GatewaySource::Ip(ip.trim().parse().map_err(|_| {
                usage(
                    format!("--gateway-ip {ip:?} is not an IP address"),
                    "pass the gateway's IPv4 or IPv6 address, e.g. --gateway-ip 203.0.113.10",
                )
            })?)
        } else {
            match args.gateway_service.as_deref() {
                None => GatewaySource::Service {
                    name: None,
                    namespace: None,
                },
                Some(text) => {
                    let (name, namespace) = match text.split_once('.') {
                        Some((n, ns)) => (n, Some(ns.to_owned())),
                        None => (text, None),
                    };
                    if names::dns1035_label(name).is_err()
                        || namespace
                            .as_deref()
                            .is_some_and(|ns| names::dns1123_label(ns).is_err())
                    {
                        return Err(usage(
                            format!("--gateway-service {text:?} is not NAME or NAME.NAMESPACE"),
                            "e.g. --gateway-service istio-ingressgateway.istio-system",
                        ));
                    }
                    GatewaySource::Service {
                        name: Some(name.to_owned()),
                        namespace,
                    }
                }
            }
        };
        let service_cidr = args
            .service_cidr
            .as_deref()
            .map(parse_service_cidr)
            .transpose()
            .map_err(|problem| {
                usage(
                    format!("--service-cidr: {problem}"),
                    "pass the cluster's Service range, e.g. --service-cidr 10.96.0.0/12 (or * to capture all outbound traffic)",
                )
            })?;
        if args.inbound_ports.contains(&0) {
            return Err(usage(
                "--inbound-ports: 0 is not a port".into(),
                "list the ports the VM's workload serves, e.g. --inbound-ports 80,8080",
            ));
        }
        let secs = args.token_duration.as_secs();
        if secs < MIN_TOKEN_SECONDS || i64::try_from(secs).is_err() || secs > u64::from(u32::MAX) {
            return Err(usage(
                format!(
                    "--token-duration {secs}s is outside what kube-apiserver issues (10m or more)"
                ),
                "e.g. --token-duration 1h",
            ));
        }
        let internal_ip = args
            .internal_ip
            .as_deref()
            .map(|ip| {
                ip.trim().parse::<IpAddr>().map_err(|_| {
                    usage(
                        format!("--internal-ip {ip:?} is not an IP address"),
                        "pass the VM's own address, e.g. --internal-ip 10.0.0.5",
                    )
                })
            })
            .transpose()?;
        if args
            .cluster_id
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(usage(
                "--cluster-id is empty".into(),
                "pass the mesh's name for this cluster, e.g. --cluster-id Kubernetes",
            ));
        }
        let revision = args.revision.filter(|r| !r.is_empty() && r != "default");
        if let Some(rev) = revision.as_deref() {
            names::flag_name("--revision", rev, names::dns1123_label)
                .map_err(|m| usage(m, "e.g. --revision canary"))?;
        }
        let output_dir = args.output_dir.clone().unwrap_or_default();
        if output_dir.as_os_str().is_empty() {
            return Err(usage("--output-dir is empty".into(), "e.g. -d expandvm"));
        }
        if let Some(archive) = &args.archive {
            let inside = archive
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        std::path::Path::new(".")
                    } else {
                        p
                    }
                })
                .and_then(|p| p.canonicalize().ok())
                .zip(output::absolute(&output_dir))
                .is_some_and(|(parent, dir)| parent.starts_with(dir));
            if inside || archive.as_os_str().is_empty() {
                return Err(usage(
                    format!(
                        "--archive {} must be outside --output-dir",
                        archive.display()
                    ),
                    "e.g. -d expandvm --archive expandvm.tar.gz",
                ));
            }
        }
        Ok(Self {
            vm_namespace: namespace.name,
            namespace_source: namespace.source,
            service_account: args.service_account,
            service: args.service,
            output_dir,
            archive: args.archive,
            gateway,
            service_cidr,
            inbound_ports: args.inbound_ports,
            token_seconds: i64::try_from(secs).unwrap_or(i64::MAX),
            wait: args.wait,
            workload_group: args.workload_group,
            internal_ip,
            cluster_id: args.cluster_id.map(|c| c.trim().to_owned()),
            revision,
            istio_namespace: args.istio_namespace,
            era: args.era,
            force: args.force,
            output: args.output,
            kube,
            context,
        })
    }

    /// Once connected: say so when the namespace is `default` by no one's choice and nothing
    /// meshvm made is there, and settle the VM's ServiceAccount by the rule every verb shares
    /// ([`crate::scope::service_account`]) unless `-s` or `--workload-group` (whose template
    /// names it) decides.
    pub async fn settle(
        &self,
        conn: &crate::kube::Connection,
        err: &mut impl std::io::Write,
    ) -> Result<Self, super::Error> {
        let namespace = crate::kube::VerbNamespace {
            name: self.vm_namespace.clone(),
            source: self.namespace_source.clone(),
        };
        if let Some(note) = crate::scope::note_for_namespace(conn, &namespace).await? {
            let _ = writeln!(err, "note: {note}");
        }
        let mut settled = self.clone();
        if self.service_account.is_none() && self.workload_group.is_none() {
            let account = crate::scope::service_account(conn, &self.vm_namespace, None, None)
                .await
                .map_err(|e| match e {
                    crate::scope::Error::Kube(k) => super::Error::Kube(*k),
                    other @ crate::scope::Error::Ambiguous { .. } => {
                        let hint = crate::errors::Diagnose::hint(&other);
                        super::Error::Usage(UsageError::new(other.to_string(), hint.as_deref()))
                    }
                })?;
            settled.service_account = Some(account.name);
        }
        Ok(settled)
    }

    /// The gateway Service to read in `era`: `(namespace, name)`, or `None` when none is read.
    pub fn gateway_service(&self, era: Era) -> Option<(String, String)> {
        match &self.gateway {
            GatewaySource::Service { name, namespace } => Some((
                namespace
                    .clone()
                    .unwrap_or_else(|| self.istio_namespace.clone()),
                name.clone()
                    .unwrap_or_else(|| era.default_gateway_service().to_owned()),
            )),
            _ => None,
        }
    }

    /// Flags that only mean something in the other era are refused once the era is known.
    pub fn check_era(&self, era: Era) -> Result<(), UsageError> {
        let (modern_only, legacy_only): (Vec<&str>, Vec<&str>) = (
            [
                (self.workload_group.is_some(), "--workload-group"),
                (self.internal_ip.is_some(), "--internal-ip"),
                (self.cluster_id.is_some(), "--cluster-id"),
                (self.revision.is_some(), "--revision"),
                (self.gateway == GatewaySource::None, "--no-gateway"),
            ]
            .into_iter()
            .filter_map(|(set, flag)| set.then_some(flag))
            .collect(),
            [(self.service.is_some(), "--service")]
                .into_iter()
                .filter_map(|(set, flag)| set.then_some(flag))
                .collect(),
        );
        match era {
            Era::Legacy if !modern_only.is_empty() => Err(usage(
                format!("{} only apply to the modern era (istiod); this mesh is legacy (Citadel)", modern_only.join(", ")),
                "drop them, or pass --era modern if detection is wrong",
            )),
            Era::Legacy if self.inbound_ports.is_empty() => Err(usage(
                "the legacy era needs --inbound-ports (ISTIO_INBOUND_PORTS: the ports the VM's workload serves)".into(),
                "e.g. --inbound-ports 80, as in the runbook",
            )),
            Era::Modern if !legacy_only.is_empty() => Err(usage(
                format!("{} only applies to the legacy era; the modern era takes the service from the WorkloadGroup", legacy_only.join(", ")),
                "drop it, or pass --era legacy if detection is wrong",
            )),
            Era::Modern if self.workload_group.is_none() => Err(usage(
                "the modern era needs --workload-group (istioctl's WorkloadGroup, which names the VM's service, labels and ServiceAccount)".into(),
                "create one with `kubectl meshvm prepare --workload-group NAME`, then pass --workload-group NAME",
            )),
            _ => Ok(()),
        }
    }
}
