//! `kubectl meshvm bundle`: everything the VM needs, as files and a deterministic archive.
//!
//! `Options::resolve` (pure) → [`observe`] (reads only, concurrent, at most three round trips on
//! the critical path: era, objects, token) → [`plan`] (pure: the files, their modes, warnings)
//! → [`output::write`] (a temporary directory beside the target, renamed into place at the end).

pub(crate) mod goyaml;
pub mod legacy;
pub mod modern;
pub mod output;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use ::kube::Api;
use ::kube::api::{DynamicObject, PostParams};
use ::kube::core::{ApiResource, GroupVersionKind};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use serde_json::Value;

use crate::args::BundleArgs;
use crate::cli::{Diagnose, KubeArgs, Outcome, OutputFormat, UsageError};
use crate::istio::{self, Era, IstioKind};
use crate::kube::{Action, Connection};
use crate::pki;

pub use output::{BundleFile, Written};

/// The audience istiod's CA accepts bootstrap tokens for.
pub const TOKEN_AUDIENCE: &str = "istio-ca";
/// kube-apiserver refuses TokenRequests shorter than ten minutes.
const MIN_TOKEN_SECONDS: u64 = 600;

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
        "secret {namespace}/istio.{service_account} not found: Citadel has not issued an identity for ServiceAccount {namespace}/{service_account}"
    )]
    IdentityMissing {
        /// The VM namespace.
        namespace: String,
        /// The ServiceAccount.
        service_account: String,
        /// The Istio namespace (for the hint).
        istio_namespace: String,
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
    /// The output directory holds files and `--force` was not given.
    #[error("output directory {} exists and is not empty", path.display())]
    OutputExists {
        /// The directory.
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
                istio_namespace,
            } => Some(format!(
                "create the ServiceAccount (`kubectl meshvm prepare --vm-namespace {namespace}`), check that istio-citadel runs (`kubectl -n {istio_namespace} get deploy istio-citadel`), and retry once the secret istio.{service_account} exists"
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
            Error::WorkloadGroupMissing { namespace, name } => Some(format!(
                "create it with `kubectl meshvm prepare --vm-namespace {namespace} --workload-group {name}`, or name another with --workload-group"
            )),
            Error::ServiceAccountMismatch { group, .. } => Some(format!(
                "drop --service-account, or pass --service-account {group}"
            )),
            Error::ConfigMapMissing { hint, .. } => Some(hint.clone()),
            Error::OutputExists { .. } => Some(
                "pass --force to replace its content, or choose another --output-dir".into(),
            ),
            Error::Invalid { .. } | Error::Io { .. } | Error::Print(_) => None,
        }
    }

    fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

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
    /// The VM's namespace.
    pub vm_namespace: String,
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

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn usage(message: String, hint: &str) -> UsageError {
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
fn mask(ip: IpAddr, len: u32) -> IpAddr {
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
        if !is_dns_label(&args.vm_namespace) {
            return Err(usage(
                format!(
                    "--vm-namespace {:?} is not a valid namespace name",
                    args.vm_namespace
                ),
                "use lower-case letters, digits and '-' (at most 63), e.g. --vm-namespace expandvm",
            ));
        }
        if !is_dns_label(&args.istio_namespace) {
            return Err(usage(
                format!(
                    "--istio-namespace {:?} is not a valid namespace name",
                    args.istio_namespace
                ),
                "e.g. --istio-namespace istio-system",
            ));
        }
        if let Some(sa) = args
            .service_account
            .as_deref()
            .filter(|sa| !is_dns_subdomain(sa))
        {
            return Err(usage(
                format!("--service-account {sa:?} is not a valid ServiceAccount name"),
                "use lower-case letters, digits, '-' and '.'",
            ));
        }
        if let Some(svc) = args.service.as_deref().filter(|s| !is_dns_label(s)) {
            return Err(usage(
                format!("--service {svc:?} is not a valid Service name"),
                "use lower-case letters, digits and '-' (at most 63)",
            ));
        }
        if let Some(wg) = args
            .workload_group
            .as_deref()
            .filter(|w| !is_dns_subdomain(w))
        {
            return Err(usage(
                format!("--workload-group {wg:?} is not a valid WorkloadGroup name"),
                "use lower-case letters, digits, '-' and '.'",
            ));
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
                    if !is_dns_label(name)
                        || namespace.as_deref().is_some_and(|ns| !is_dns_label(ns))
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
        if let Some(rev) = revision.as_deref().filter(|r| !is_dns_label(r)) {
            return Err(usage(
                format!("--revision {rev:?} is not a valid revision name"),
                "e.g. --revision canary",
            ));
        }
        if args.output_dir.as_os_str().is_empty() {
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
                .zip(output::absolute(&args.output_dir))
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
            vm_namespace: args.vm_namespace,
            service_account: args.service_account,
            service: args.service,
            output_dir: args.output_dir,
            archive: args.archive,
            gateway,
            service_cidr,
            inbound_ports: args.inbound_ports,
            token_seconds: i64::try_from(secs).unwrap_or(i64::MAX),
            workload_group: args.workload_group,
            internal_ip,
            cluster_id: args.cluster_id.map(|c| c.trim().to_owned()),
            revision,
            istio_namespace: args.istio_namespace,
            era: args.era,
            force: args.force,
            output: args.output,
            kube: args.kube,
            context,
        })
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

/// What bundle read from the cluster (secrets held only as bytes; no `Debug` on purpose).
#[derive(Clone, Default)]
pub struct Observed {
    /// The era (given or detected).
    pub era: Option<Era>,
    /// The gateway Service, if one was read and exists.
    pub gateway_service: Option<Service>,
    /// Legacy: the `istio.<sa>` secret's decoded data (`None`: not found).
    pub identity: Option<BTreeMap<String, Vec<u8>>>,
    /// Legacy: `spec.cidrs` of the `kubernetes` ServiceCIDR (`None`: API not served or absent).
    pub service_cidrs: Option<Vec<String>>,
    /// Legacy: the `kubernetes` Service's ClusterIP.
    pub kubernetes_ip: Option<String>,
    /// Modern: the WorkloadGroup object.
    pub workload_group: Option<Value>,
    /// Modern: the mesh config ConfigMap's data.
    pub mesh_config: Option<BTreeMap<String, String>>,
    /// Modern: the sidecar injector ConfigMap's data (read only without --cluster-id).
    pub injector: Option<BTreeMap<String, String>>,
    /// Modern: `istio-ca-root-cert` in the VM namespace.
    pub root_cert: Option<BTreeMap<String, String>>,
    /// Modern: the bootstrap token.
    pub token: Option<String>,
}

async fn get_opt<K>(
    conn: &Connection,
    api: &Api<K>,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<K>, crate::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut action = Action::new("get", resource).name(name);
    if let Some(ns) = namespace {
        action = action.ns(ns);
    }
    match conn.call(action, || api.get(name)).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn get_configmap(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, crate::kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(conn.client.clone(), namespace);
    Ok(get_opt(conn, &api, "configmaps", Some(namespace), name)
        .await?
        .map(|cm| cm.data.unwrap_or_default()))
}

/// The WorkloadGroup at the newest version the cluster serves (v1 from Istio 1.22).
async fn get_workload_group(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, crate::kube::Error> {
    let kind = IstioKind::WorkloadGroup;
    for version in kind.versions() {
        let ar = kind.resource(version);
        let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), namespace, &ar);
        // A 404 is "absent" or "version not served"; the older versions tell them apart.
        if let Some(obj) = get_opt(conn, &api, &kind.resource_name(), Some(namespace), name).await?
        {
            return Ok(Some(serde_json::to_value(obj).unwrap_or_default()));
        }
    }
    Ok(None)
}

async fn get_token(
    conn: &Connection,
    namespace: &str,
    service_account: &str,
    seconds: i64,
) -> Result<String, crate::kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(conn.client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![TOKEN_AUDIENCE.to_owned()],
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let params = PostParams::default();
    // A TokenRequest creates nothing lasting: repeating it after a transient failure is safe.
    let answer: TokenRequest = conn
        .call(
            Action::new("create", "serviceaccounts/token")
                .ns(namespace)
                .name(service_account),
            || api.create_subresource("token", service_account, &params, &request),
        )
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

async fn get_service(
    conn: &Connection,
    target: Option<&(String, String)>,
) -> Result<Option<Service>, crate::kube::Error> {
    let Some((namespace, name)) = target else {
        return Ok(None);
    };
    let api: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
    get_opt(conn, &api, "services", Some(namespace), name).await
}

/// `spec.cidrs` of the default ServiceCIDR (`networking.k8s.io/v1`, Kubernetes 1.33+);
/// `None` when the API is not served, the object is absent or RBAC hides it.
async fn get_service_cidrs(conn: &Connection) -> Result<Option<Vec<String>>, crate::kube::Error> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "ServiceCIDR"),
        "servicecidrs",
    );
    let api: Api<DynamicObject> = Api::all_with(conn.client.clone(), &ar);
    let action = Action::new("get", "servicecidrs.networking.k8s.io").name("kubernetes");
    let found = match conn.call(action, || api.get("kubernetes")).await {
        Ok(obj) => Some(obj),
        // Not served (before 1.33), absent, or not readable for a namespace-scoped user (a
        // cluster-scoped read): all mean "fall back", which the warning then explains.
        Err(e) if e.is_not_found() || e.code() == Some(403) => None,
        Err(e) => return Err(e),
    };
    Ok(found.and_then(|obj| {
        let cidrs: Vec<String> = obj
            .data
            .pointer("/spec/cidrs")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        (!cidrs.is_empty()).then_some(cidrs)
    }))
}

/// Read everything the era needs, concurrently: era detection, then one batch of reads, then
/// (modern, when the ServiceAccount comes from the WorkloadGroup) the token.
pub async fn observe(conn: &Connection, opts: &Options) -> Result<Observed, Error> {
    let era = match opts.era {
        Some(era) => era,
        None => istio::detect_era(conn, &opts.istio_namespace)
            .await?
            .ok_or_else(|| Error::NoControlPlane {
                namespace: opts.istio_namespace.clone(),
            })?,
    };
    opts.check_era(era)?;
    let gateway = opts.gateway_service(era);
    let mut observed = Observed {
        era: Some(era),
        ..Observed::default()
    };
    match era {
        Era::Legacy => {
            let sa = legacy_service_account(opts);
            let secrets: Api<Secret> = Api::namespaced(conn.client.clone(), &opts.vm_namespace);
            let services: Api<Service> = Api::namespaced(conn.client.clone(), "default");
            let need_cidr = opts.service_cidr.is_none();
            let secret_name = format!("istio.{sa}");
            let (secret, gateway_service, cidrs, kubernetes) = tokio::try_join!(
                get_opt(
                    conn,
                    &secrets,
                    "secrets",
                    Some(&opts.vm_namespace),
                    &secret_name
                ),
                get_service(conn, gateway.as_ref()),
                async {
                    if need_cidr {
                        get_service_cidrs(conn).await
                    } else {
                        Ok(None)
                    }
                },
                async {
                    if need_cidr {
                        get_opt(conn, &services, "services", Some("default"), "kubernetes").await
                    } else {
                        Ok(None)
                    }
                },
            )?;
            observed.identity = secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            });
            observed.gateway_service = gateway_service;
            observed.service_cidrs = cidrs;
            observed.kubernetes_ip = kubernetes
                .and_then(|s| s.spec)
                .and_then(|s| s.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None");
        }
        Era::Modern => {
            let group = opts.workload_group.clone().unwrap_or_default();
            let revision = opts.revision.as_deref();
            let ns = &opts.vm_namespace;
            let mesh_cm = modern::mesh_configmap(revision);
            let injector_cm = modern::injector_configmap(revision);
            let (wg, mesh, injector, root, gateway_service, early_token) = tokio::try_join!(
                get_workload_group(conn, ns, &group),
                get_configmap(conn, &opts.istio_namespace, &mesh_cm),
                async {
                    if opts.cluster_id.is_none() {
                        get_configmap(conn, &opts.istio_namespace, &injector_cm).await
                    } else {
                        Ok(None)
                    }
                },
                get_configmap(conn, ns, istio::ROOT_CERT_CONFIGMAP),
                get_service(conn, gateway.as_ref()),
                async {
                    match &opts.service_account {
                        Some(sa) => get_token(conn, ns, sa, opts.token_seconds).await.map(Some),
                        None => Ok(None),
                    }
                },
            )?;
            observed.token = match (early_token, &wg) {
                (Some(token), _) => Some(token),
                (None, Some(obj)) => {
                    let sa = modern::WorkloadGroup::from_object(obj)
                        .map_or_else(|_| "default".to_owned(), |g| g.service_account);
                    Some(get_token(conn, ns, &sa, opts.token_seconds).await?)
                }
                (None, None) => None,
            };
            observed.workload_group = wg;
            observed.mesh_config = mesh;
            observed.injector = injector;
            observed.root_cert = root;
            observed.gateway_service = gateway_service;
        }
    }
    Ok(observed)
}

/// The legacy ServiceAccount: `-s`, else the VM namespace's name (the runbook's convention).
pub fn legacy_service_account(opts: &Options) -> String {
    opts.service_account
        .clone()
        .unwrap_or_else(|| opts.vm_namespace.clone())
}

/// The gateway's address from its Service: the load balancer's IP, else the first external IP.
pub fn gateway_address(service: &Service) -> Result<IpAddr, GatewayProblem> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first());
    if let Some(first) = ingress {
        if let Some(ip) = first.ip.as_deref().filter(|ip| !ip.is_empty()) {
            return ip.parse().map_err(|_| {
                GatewayProblem::Invalid(format!(
                    "status.loadBalancer.ingress[0].ip {ip:?} is not an IP address"
                ))
            });
        }
        if let Some(host) = first.hostname.as_deref().filter(|h| !h.is_empty()) {
            return Err(GatewayProblem::Hostname(host.to_owned()));
        }
    }
    if let Some(ip) = service
        .spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .and_then(|ips| ips.first())
    {
        return ip.parse().map_err(|_| {
            GatewayProblem::Invalid(format!("spec.externalIPs[0] {ip:?} is not an IP address"))
        });
    }
    Err(GatewayProblem::NoAddress)
}

/// Why a gateway Service gives no usable address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayProblem {
    /// Only a DNS name.
    Hostname(String),
    /// Nothing at all.
    NoAddress,
    /// Something that is not an IP address.
    Invalid(String),
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

/// The legacy Service CIDR and a warning when it was inferred.
fn legacy_service_cidr(
    observed: &Observed,
    opts: &Options,
) -> Result<(String, Option<String>), Error> {
    if let Some(cidr) = &opts.service_cidr {
        return Ok((cidr.clone(), None));
    }
    if let Some(cidrs) = &observed.service_cidrs {
        return Ok((cidrs.join(","), None));
    }
    let ip = observed
        .kubernetes_ip
        .as_deref()
        .ok_or(Error::ServiceCidrUnknown)?;
    let cidr = infer_service_cidr(ip).ok_or(Error::ServiceCidrUnknown)?;
    let warning = format!(
        "the ServiceCIDR API is not served (or not readable) and --service-cidr was not given: assuming ISTIO_SERVICE_CIDR={cidr}, the {} around the `kubernetes` Service's ClusterIP {ip}; pass --service-cidr if the cluster's Service range differs",
        cidr.split_once('/')
            .map_or("range", |(_, len)| if len == "16" { "/16" } else { "/108" })
    );
    Ok((cidr, Some(warning)))
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
}

/// Decide the bundle's files from what was observed. Pure.
pub fn plan(observed: &Observed, opts: &Options, now: SystemTime) -> Result<Bundle, Error> {
    let era = observed.era.or(opts.era).unwrap_or(Era::Modern);
    opts.check_era(era)?;
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let gateway = resolve_gateway(observed, opts, era)?;
    match era {
        Era::Legacy => {
            let sa = legacy_service_account(opts);
            let secret = format!("{}/istio.{sa}", opts.vm_namespace);
            let data = observed
                .identity
                .as_ref()
                .ok_or_else(|| Error::IdentityMissing {
                    namespace: opts.vm_namespace.clone(),
                    service_account: sa.clone(),
                    istio_namespace: opts.istio_namespace.clone(),
                })?;
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
                        .filter(|f| f.severity == pki::Severity::Error)
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
            let (cidr, cidr_warning) = legacy_service_cidr(observed, opts)?;
            warnings.extend(cidr_warning);
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
                0o644,
                "root certificate the workload certificate chains to",
            ));
            files.push(BundleFile::new(
                pki::CERT_CHAIN,
                material.cert_chain.bytes(),
                0o644,
                format!(
                    "workload certificate for spiffe://…/ns/{}/sa/{sa}",
                    opts.vm_namespace
                ),
            ));
            files.push(BundleFile::new(
                pki::KEY,
                material.key.bytes(),
                0o600,
                "workload private key (secret)",
            ));
            files.push(BundleFile::new(
                "gwip.txt",
                legacy::gwip(gateway),
                0o644,
                "gateway address",
            ));
            files.push(BundleFile::new(
                "hosts",
                legacy::hosts(gateway, &opts.istio_namespace),
                0o644,
                "/etc/hosts lines for istio-citadel, -pilot, -telemetry, -policy",
            ));
            files.push(BundleFile::new(
                "cluster.env",
                env,
                0o644,
                "sidecar environment (/var/lib/istio/envoy/cluster.env)",
            ));
        }
        Era::Modern => {
            let ns = &opts.vm_namespace;
            let name = opts.workload_group.clone().unwrap_or_default();
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
                0o644,
                "sidecar environment (/var/lib/istio/envoy/cluster.env)",
            ));
            files.push(BundleFile::new(
                "mesh.yaml",
                rendered.mesh_yaml,
                0o644,
                "proxy config (/etc/istio/config/mesh)",
            ));
            files.push(BundleFile::new(
                pki::ROOT_CERT,
                root.as_bytes(),
                0o644,
                "mesh root certificate (istio-ca-root-cert)",
            ));
            files.push(BundleFile::new(
                "istio-token",
                token,
                0o600,
                format!(
                    "bootstrap token for {ns}/{}, audience {TOKEN_AUDIENCE}, {}s (secret)",
                    group.service_account, opts.token_seconds
                ),
            ));
            files.push(BundleFile::new(
                "hosts",
                rendered.hosts,
                0o644,
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
        0o644,
        "sha256 of every other file (sha256sum -c SHA256SUMS)",
    ));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Bundle {
        era,
        files,
        warnings,
    })
}

/// `kubectl meshvm bundle`.
pub async fn main(args: BundleArgs) -> Result<Outcome, Error> {
    let opts = Options::resolve(args)?;
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
    output::check_target(&opts.output_dir, opts.force)?;
    let conn = crate::kube::connect(&opts.kube, opts.context.as_deref()).await?;
    let observed = Box::pin(observe(&conn, opts)).await?;
    let bundle = plan(&observed, opts, SystemTime::now())?;
    for warning in &bundle.warnings {
        let _ = writeln!(err, "warning: {warning}");
    }
    let written = output::write(
        &bundle,
        &opts.output_dir,
        opts.archive.as_deref(),
        opts.force,
    )?;
    written
        .write_summary(out, opts.output)
        .map_err(Error::Print)?;
    if opts.output == OutputFormat::Table {
        let _ = writeln!(
            err,
            "next: copy {} to the VM and run `sudo ./install.sh` there (`./install.sh --check` tests the connection)",
            opts.output_dir.display()
        );
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests;
