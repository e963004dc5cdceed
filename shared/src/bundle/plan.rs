//! Deciding the bundle's files from what was observed: pure, unit-tested on inline objects.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use super::cidr::{CidrSource, Probe, ServiceCidr};
use super::identity;
use super::observe::current_root;
use super::options::{mask, usage};
use super::{
    BundleFile, Error, GatewaySource, Observed, Options, TOKEN_AUDIENCE, legacy, modern, output,
};
use crate::istio::{self, Era};
pub use crate::istio::{GatewayProblem, gateway_address};
use crate::pki;
use crate::vmfiles;

/// The legacy ServiceAccount: `-s`, else the VM namespace's name (the runbook's convention).
pub fn legacy_service_account(opts: &Options) -> String {
    opts.service_account
        .clone()
        .unwrap_or_else(|| opts.vm_namespace.clone())
}

fn resolve_gateway(observed: &Observed, opts: &Options, era: Era) -> Result<Option<IpAddr>, Error> {
    match &opts.gateway {
        GatewaySource::Ip(ip) => Ok(Some(*ip)),
        GatewaySource::None => Ok(None),
        GatewaySource::Service { .. } => {
            let (namespace, name) = opts.gateway_service(era).unwrap_or_default();
            let service =
                observed
                    .gateway_service
                    .as_ref()
                    .ok_or_else(|| Error::GatewayMissing {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })?;
            gateway_address(service).map(Some).map_err(|p| match p {
                GatewayProblem::Hostname(hostname) => Error::GatewayHostname {
                    namespace,
                    name,
                    hostname,
                },
                GatewayProblem::NoAddress => Error::GatewayNoAddress { namespace, name },
                GatewayProblem::Invalid(problem) => Error::GatewayInvalid {
                    namespace,
                    name,
                    problem,
                },
            })
        }
    }
}

/// The Service CIDR from an address inside it, assuming the range kube-apiserver setups most
/// often use around the `kubernetes` Service (a /16 for IPv4, a /108 for IPv6).
pub fn infer_service_cidr(kubernetes_ip: &str) -> Option<String> {
    let ip: IpAddr = kubernetes_ip.parse().ok()?;
    let len = if ip.is_ipv4() { 16 } else { 108 };
    Some(format!("{}/{len}", mask(ip, len)))
}

/// The legacy Service CIDR, in order: `--service-cidr`; the `kubernetes` ServiceCIDR; the range
/// the API server named when refusing the probe Service; a guess around the `kubernetes`
/// Service's ClusterIP (with a warning saying why nothing better was found).
fn legacy_service_cidr(
    observed: &Observed,
    opts: &Options,
) -> Result<(ServiceCidr, Option<String>), Error> {
    if let Some(cidr) = &opts.service_cidr {
        return Ok((
            ServiceCidr {
                cidr: cidr.clone(),
                source: CidrSource::Flag,
                detail: "from --service-cidr".into(),
            },
            None,
        ));
    }
    if let Some(cidrs) = &observed.service_cidrs {
        let version = observed.service_cidr_version.as_deref().unwrap_or("v1");
        return Ok((
            ServiceCidr {
                cidr: cidrs.join(","),
                source: CidrSource::ServiceCidrApi,
                detail: format!(
                    "from the ServiceCIDR API (networking.k8s.io/{version} ServiceCIDR kubernetes)"
                ),
            },
            None,
        ));
    }
    let probe_failed = match &observed.cidr_probe {
        Some(Probe::Range {
            cidrs,
            dry_run,
            maybe_partial,
        }) => {
            let cidr = cidrs.join(",");
            let warning = maybe_partial.then(|| format!(
                "ISTIO_SERVICE_CIDR={cidr} is the range the API server named, but Kubernetes 1.33+ may hold several ServiceCIDRs and names one: check with `kubectl get servicecidrs` (a cluster-scoped read) and pass --service-cidr with all of them if there are more"
            ));
            return Ok((
                ServiceCidr {
                    cidr,
                    source: CidrSource::ApiserverRefusal,
                    detail: format!(
                        "from the API server, which named its Service range when refusing a {} Service with an out-of-range clusterIP",
                        if *dry_run { "dry-run" } else { "probe" }
                    ),
                },
                warning,
            ));
        }
        Some(Probe::Unknown(why)) => format!("; {why}"),
        None => String::new(),
    };
    let ip = observed
        .kubernetes_ip
        .as_deref()
        .ok_or(Error::ServiceCidrUnknown)?;
    let cidr = infer_service_cidr(ip).ok_or(Error::ServiceCidrUnknown)?;
    let around = cidr
        .split_once('/')
        .map_or("range", |(_, len)| if len == "16" { "/16" } else { "/108" });
    let warning = format!(
        "the ServiceCIDR API is not served (or not readable) and --service-cidr was not given{probe_failed}: assuming ISTIO_SERVICE_CIDR={cidr}, the {around} around the `kubernetes` Service's ClusterIP {ip} (a guess: kubeadm uses a /12, GKE a /20); pass --service-cidr if the cluster's Service range differs"
    );
    Ok((
        ServiceCidr {
            cidr,
            source: CidrSource::Guessed,
            detail: format!(
                "guessed: the {around} around the `kubernetes` Service's ClusterIP {ip}"
            ),
        },
        Some(warning),
    ))
}

/// `--kubeconfig`/`--context` as the operator gave them, for commands printed in hints.
pub(crate) fn connection_flags(opts: &Options) -> String {
    let mut flags = String::new();
    if let Some(path) = &opts.kube.kubeconfig {
        let _ = write!(flags, " --kubeconfig {}", path.display());
    }
    if let Some(context) = &opts.context {
        let _ = write!(flags, " --context {context}");
    }
    flags
}

/// Legacy: refuse an identity that is missing or issued under another root than `cacerts`'.
fn check_identity_root(
    observed: &Observed,
    opts: &Options,
    sa: &str,
    now: SystemTime,
) -> Result<Vec<String>, Error> {
    let secret = format!("{}/istio.{sa}", opts.vm_namespace);
    let (root, warning) = current_root(observed, &opts.istio_namespace);
    let flags = connection_flags(opts);
    match identity::judge(observed.identity.as_ref(), root, &secret, now) {
        identity::State::Ready => Ok(warning.into_iter().collect()),
        identity::State::Missing => Err(Error::IdentityMissing {
            namespace: opts.vm_namespace.clone(),
            service_account: sa.to_owned(),
            account_exists: observed.service_account_exists,
            istio_namespace: opts.istio_namespace.clone(),
            waited: observed.waited.unwrap_or_default(),
            connection_flags: flags,
        }),
        identity::State::OldRoot {
            issued_under,
            current,
        } => {
            let ns_flag = if opts.istio_namespace == crate::istio::DEFAULT_ISTIO_NAMESPACE {
                String::new()
            } else {
                format!(" --istio-namespace {}", opts.istio_namespace)
            };
            Err(Error::IdentityOldRoot {
                secret,
                issued_under,
                current,
                istio_namespace: opts.istio_namespace.clone(),
                waited: observed.waited.unwrap_or_default(),
                restart: format!(
                    "kubectl rollout restart deployment/istio-citadel -n {}{flags}",
                    opts.istio_namespace
                ),
                prepare: format!(
                    "kubectl meshvm prepare -n {} --restart-control-plane --yes{ns_flag}{flags}",
                    opts.vm_namespace
                ),
            })
        }
    }
}

/// The bundle to write: files in name order, and warnings for stderr.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The era the files are for.
    pub era: Era,
    /// The files, sorted by name.
    pub files: Vec<BundleFile>,
    /// Things the operator should know (inferred values, certificates expiring soon).
    pub warnings: Vec<String>,
    /// Legacy: `ISTIO_SERVICE_CIDR` and where it came from.
    pub service_cidr: Option<ServiceCidr>,
}

/// Decide the bundle's files from what was observed. Pure.
pub fn plan(observed: &Observed, opts: &Options, now: SystemTime) -> Result<Bundle, Error> {
    let era = observed.era.or(opts.era).unwrap_or(Era::Modern);
    opts.check_era(era)?;
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let mut service_cidr = None;
    let gateway = resolve_gateway(observed, opts, era)?;
    match era {
        Era::Legacy => {
            let sa = legacy_service_account(opts);
            let secret = format!("{}/istio.{sa}", opts.vm_namespace);
            warnings.extend(check_identity_root(observed, opts, &sa, now)?);
            let data = observed
                .identity
                .as_ref()
                .expect("check_identity_root refuses a missing identity");
            let identity_error = |problems: Vec<String>| Error::Identity {
                secret: secret.clone(),
                problems,
                istio_namespace: opts.istio_namespace.clone(),
                namespace: opts.vm_namespace.clone(),
            };
            let material =
                pki::WorkloadMaterial::from_secret_data(&format!("secret {secret}"), data)
                    .map_err(|e| identity_error(vec![e.to_string()]))?;
            let findings = pki::check_workload(
                &material,
                Some((&opts.vm_namespace, &sa)),
                now,
                pki::DEFAULT_WARN_WITHIN,
            );
            if pki::has_errors(&findings) {
                return Err(identity_error(
                    findings
                        .iter()
                        .filter(|f| f.severity == pki::CertSeverity::Error)
                        .map(ToString::to_string)
                        .collect(),
                ));
            }
            warnings.extend(findings.iter().map(ToString::to_string));
            let gateway = gateway.ok_or_else(|| {
                Error::Usage(usage(
                    "the legacy era needs a gateway address for /etc/hosts".into(),
                    "pass --gateway-ip IP or --gateway-service NAME[.NS]",
                ))
            })?;
            let (cidr_found, cidr_warning) = legacy_service_cidr(observed, opts)?;
            warnings.extend(cidr_warning);
            let cidr = cidr_found.cidr.clone();
            let service = opts.service.clone().unwrap_or_else(|| sa.clone());
            let env = legacy::cluster_env(&legacy::LegacyEnv {
                service: &service,
                service_cidr: &cidr,
                inbound_ports: &opts.inbound_ports,
                namespace: &opts.vm_namespace,
                istio_namespace: &opts.istio_namespace,
            });
            files.push(BundleFile::new(
                pki::ROOT_CERT,
                material.root_cert.bytes(),
                vmfiles::mode(pki::ROOT_CERT),
                "root certificate the workload certificate chains to",
            ));
            files.push(BundleFile::new(
                pki::CERT_CHAIN,
                material.cert_chain.bytes(),
                vmfiles::mode(pki::CERT_CHAIN),
                format!(
                    "workload certificate for spiffe://…/ns/{}/sa/{sa}",
                    opts.vm_namespace
                ),
            ));
            files.push(BundleFile::new(
                pki::KEY,
                material.key.bytes(),
                vmfiles::mode(pki::KEY),
                "workload private key (secret)",
            ));
            files.push(BundleFile::new(
                "gwip.txt",
                legacy::gwip(gateway),
                vmfiles::mode("gwip.txt"),
                "gateway address",
            ));
            let globals = observed.global_hosts.lines().count();
            files.push(BundleFile::new(
                "hosts",
                legacy::hosts(gateway, &opts.istio_namespace) + &observed.global_hosts,
                0o644,
                if globals == 0 {
                    "/etc/hosts lines for istio-citadel, -pilot, -telemetry, -policy".to_owned()
                } else {
                    format!(
                        "/etc/hosts lines for istio-citadel, -pilot, -telemetry, -policy and {globals} .global service(s) (prepare --expose)"
                    )
                },
            ));
            files.push(BundleFile::new(
                "cluster.env",
                env,
                vmfiles::mode("cluster.env"),
                format!(
                    "sidecar environment (/var/lib/istio/envoy/cluster.env); ISTIO_SERVICE_CIDR {}",
                    cidr_found.detail
                ),
            ));
            service_cidr = Some(cidr_found);
        }
        Era::Modern => {
            let ns = &opts.vm_namespace;
            let name = opts.workload_group.clone().unwrap_or_default();
            if let Some(why) = &observed.workload_group_not_served {
                return Err(Error::WorkloadGroupNotServed {
                    namespace: ns.clone(),
                    name,
                    why: why.clone(),
                });
            }
            let wg_obj =
                observed
                    .workload_group
                    .as_ref()
                    .ok_or_else(|| Error::WorkloadGroupMissing {
                        namespace: ns.clone(),
                        name: name.clone(),
                    })?;
            let invalid = |object: String, problem: String| Error::Invalid { object, problem };
            let group = modern::WorkloadGroup::from_object(wg_obj)
                .map_err(|p| invalid(format!("WorkloadGroup {ns}/{name}"), p))?;
            if let Some(flag) = opts
                .service_account
                .as_ref()
                .filter(|sa| **sa != group.service_account)
            {
                return Err(Error::ServiceAccountMismatch {
                    flag: flag.clone(),
                    group: group.service_account.clone(),
                    namespace: ns.clone(),
                    name,
                });
            }
            if let Some(warning) = inbound_ports_warning(&opts.inbound_ports, &group, ns, &name) {
                warnings.push(warning);
            }
            let revision = opts.revision.as_deref();
            let mesh_cm = modern::mesh_configmap(revision);
            let mesh = observed
                .mesh_config
                .as_ref()
                .ok_or_else(|| Error::ConfigMapMissing {
                    namespace: opts.istio_namespace.clone(),
                    name: mesh_cm.clone(),
                    hint:
                        "check --istio-namespace and --revision: istiod's mesh config lives there"
                            .into(),
                })?;
            let cluster_id = if let Some(id) = &opts.cluster_id {
                id.clone()
            } else {
                let cm = modern::injector_configmap(revision);
                let data = observed
                    .injector
                    .as_ref()
                    .ok_or_else(|| Error::ConfigMapMissing {
                        namespace: opts.istio_namespace.clone(),
                        name: cm.clone(),
                        hint: "pass --cluster-id ID (the mesh's name for this cluster)".into(),
                    })?;
                let values = data.get("values").map_or("{}", String::as_str);
                modern::cluster_name_from_injector_values(values)
                    .map_err(|p| invalid(format!("configmap {}/{cm}", opts.istio_namespace), p))?
                    // Istio's own default when values leave the cluster name empty.
                    .unwrap_or_else(|| "Kubernetes".to_owned())
            };
            let root = observed
                .root_cert
                .as_ref()
                .and_then(|d| d.get(pki::ROOT_CERT))
                .ok_or_else(|| Error::ConfigMapMissing {
                    namespace: ns.clone(),
                    name: istio::ROOT_CERT_CONFIGMAP.into(),
                    hint: format!("istiod writes it into every namespace it watches: check that istiod runs and that namespace {ns} exists"),
                })?;
            if let Err(e) = pki::root_identity(root.as_bytes()) {
                warnings.push(format!(
                    "configmap {ns}/{} root-cert.pem {e}; the VM will not trust istiod",
                    istio::ROOT_CERT_CONFIGMAP
                ));
            }
            let token = observed.token.clone().unwrap_or_default();
            let cidr = opts.service_cidr.clone().unwrap_or_else(|| "*".to_owned());
            let rendered = modern::render(&modern::ModernInputs {
                group: &group,
                mesh_config: mesh.get("mesh").map_or("", String::as_str),
                istio_namespace: &opts.istio_namespace,
                revision,
                cluster_id: &cluster_id,
                internal_ip: opts.internal_ip,
                gateway_ip: gateway,
                service_cidr: &cidr,
                inbound_ports: (!opts.inbound_ports.is_empty())
                    .then_some(opts.inbound_ports.as_slice()),
            })
            .map_err(|p| {
                invalid(
                    format!(
                        "mesh config {}/{mesh_cm} or WorkloadGroup {ns}/{name}",
                        opts.istio_namespace
                    ),
                    p,
                )
            })?;
            files.push(BundleFile::new(
                "cluster.env",
                rendered.cluster_env,
                vmfiles::mode("cluster.env"),
                "sidecar environment (/var/lib/istio/envoy/cluster.env)",
            ));
            files.push(BundleFile::new(
                "mesh.yaml",
                rendered.mesh_yaml,
                vmfiles::mode("mesh.yaml"),
                "proxy config (/etc/istio/config/mesh)",
            ));
            files.push(BundleFile::new(
                pki::ROOT_CERT,
                root.as_bytes(),
                vmfiles::mode(pki::ROOT_CERT),
                "mesh root certificate (istio-ca-root-cert)",
            ));
            files.push(BundleFile::new(
                "istio-token",
                token,
                vmfiles::mode("istio-token"),
                format!(
                    "bootstrap token for {ns}/{}, audience {TOKEN_AUDIENCE}, {}s (secret)",
                    group.service_account, opts.token_seconds
                ),
            ));
            files.push(BundleFile::new(
                "hosts",
                rendered.hosts,
                vmfiles::mode("hosts"),
                if gateway.is_some() {
                    "/etc/hosts line for istiod"
                } else {
                    "empty: --no-gateway"
                },
            ));
        }
    }
    files.push(BundleFile::new(
        "install.sh",
        output::install_script(era, &opts.istio_namespace, opts.revision.as_deref()),
        0o755,
        "installs the files on the VM (--dry-run, --uninstall, --check)",
    ));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let sums = output::sha256sums(&files);
    files.push(BundleFile::new(
        output::SHA256SUMS,
        sums,
        vmfiles::mode(output::SHA256SUMS),
        "sha256 of every other file (sha256sum -c SHA256SUMS)",
    ));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Bundle {
        era,
        files,
        warnings,
        service_cidr,
    })
}

/// Modern: `--inbound-ports` replace the WorkloadGroup's ports in `ISTIO_INBOUND_PORTS`; when the
/// two lists differ, the sidecar captures other ports than those the mesh sends to the VM (the
/// WorkloadEntries made from the group carry its ports).
fn inbound_ports_warning(
    flag: &[u16],
    group: &modern::WorkloadGroup,
    namespace: &str,
    name: &str,
) -> Option<String> {
    if flag.is_empty() || group.ports.is_empty() {
        return None;
    }
    let flag_set: std::collections::BTreeSet<u32> = flag.iter().map(|p| u32::from(*p)).collect();
    let group_set: std::collections::BTreeSet<u32> = group.ports.values().copied().collect();
    (flag_set != group_set).then(|| {
        let list = |set: &std::collections::BTreeSet<u32>| {
            set.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        };
        let named: Vec<String> = group
            .ports
            .iter()
            .map(|(n, p)| format!("{n}: {p}"))
            .collect();
        format!(
            "--inbound-ports {} differ from the ports of WorkloadGroup {namespace}/{name} ({}): the VM's sidecar captures {} while the mesh sends traffic for {}; drop --inbound-ports to use the group's ports, or pass --inbound-ports {}",
            list(&flag_set),
            named.join(", "),
            list(&flag_set),
            list(&group_set),
            list(&group_set)
        )
    })
}
