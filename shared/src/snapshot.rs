//! One Snapshot of mesh objects, filled from a cluster, from files, or from a bundle.
//!
//! Doctor's checks are written once against [`Snapshot`]; where the objects came from only
//! decides which checks can answer ([`Snapshot::knows`]) and where SARIF points ([`Origin`]).
//!
//! Each object is an [`Obj`]: its identity (apiVersion, kind, typed metadata) read the same way
//! for every kind, and a [`Body`] — the core kinds doctor judges as their k8s-openapi types
//! (`snap.typed::<Service>()`, `obj.typed::<Namespace>()`, so a misspelt field does not
//! compile) — Pods as [`SharedPod`]s, read through [`Snapshot::pods`] — Istio's kinds as
//! [`DynamicObject`] JSON. The mesh config is parsed once
//! ([`Snapshot::mesh_config`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use ::kube::api::{Api, DynamicObject, ListParams};

use crate::read::MetaOrFull;
use ::kube::core::{ApiResource, GroupVersionKind};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Endpoints, Namespace, Pod, PodSpec, PodTemplateSpec, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::istio::{self, Era, IstioKind};
use crate::kube::{Connection, Request};

/// VmBundle files are small PEMs, env files and tokens; anything larger is not a bundle.
const MAX_BUNDLE_FILE: u64 = 1 << 20;

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory given with `-f` or `--bundle` could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A manifest is not valid YAML or JSON.
    #[error("{}{}: not valid {}: {message}", path.display(), line.map_or(String::new(), |l| format!(":{l}")), if *json { "JSON" } else { "YAML" })]
    Parse {
        /// The file (`STDIN` for `-f -`).
        path: PathBuf,
        /// The line the parser stopped at, when it says.
        line: Option<usize>,
        /// Parsed as JSON (a `.json` file) rather than YAML.
        json: bool,
        /// The parser's words; for YAML with a snippet whose header names the file.
        message: String,
    },
    /// A document parsed but is not a Kubernetes object.
    #[error("{}: document {document} (line {line}) is not a Kubernetes object: {problem}", path.display())]
    NotKubernetes {
        /// The file.
        path: PathBuf,
        /// 1-based document number in the file.
        document: usize,
        /// Line the document starts on.
        line: usize,
        /// What is missing.
        problem: String,
    },
    /// A manifest of a kind doctor reads typed (Service, Pod, Secret, …) whose body does not
    /// read as that kind (`ports: "80"`): the API server would refuse it too.
    #[error("{}: document {document} (line {line}): {object} is not a valid {api_version} object: {problem}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// 1-based document number in the file.
        document: usize,
        /// Line the document starts on.
        line: usize,
        /// `Kind ns/name`.
        object: String,
        /// Its `apiVersion`.
        api_version: String,
        /// Where and what (`spec.ports: invalid type: string "80", expected a sequence`).
        problem: String,
    },
    /// `-f DIR` holds no manifest at all.
    #[error("{}: no .yaml, .yml or .json files found{}", path.display(), if *below > 0 { format!(" (only in {below} subdirectories, which -f DIR does not read without -R)") } else { String::new() })]
    NoManifests {
        /// The directory.
        path: PathBuf,
        /// Subdirectories holding manifests, not read without `-R`.
        below: usize,
    },
    /// Standard input could not be read (`-f -`).
    #[error("failed to read the manifests from standard input (-f -)")]
    Stdin(#[source] std::io::Error),
    /// The bundle is not one `kubectl meshvm bundle` writes.
    #[error("bundle {}: {problem}", path.display())]
    VmBundle {
        /// The bundle directory or archive.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading from the cluster failed.
    #[error(transparent)]
    Kube(#[from] crate::kube::Error),
}

impl crate::errors::Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::NotKubernetes { .. } => Some(
                "give doctor only Kubernetes manifests (each document needs apiVersion and kind); move other YAML out of the -f path (in a -f DIR such documents are skipped with a note)"
                    .into(),
            ),
            Error::Unreadable { path, .. } => Some(format!(
                "fix the field named; `kubectl apply --dry-run=server -f {}` shows what the API server says of it",
                path.display()
            )),
            Error::NoManifests { path, below } if *below > 0 => Some(format!(
                "read its subdirectories too: `kubectl meshvm doctor -f {} -R`",
                path.display()
            )),
            Error::VmBundle { .. } => Some(
                "pass the directory or .tar.gz that `kubectl meshvm bundle` wrote, unmodified".into(),
            ),
            Error::Kube(err) => err.hint(),
            _ => None,
        }
    }
}

/// Where an object came from in a `-f` manifest: file and the line its document starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line of the document's first node.
    pub line: usize,
}

/// What `-f -` reads are named in findings, notes and errors (kubectl's name for it:
/// kubernetes/cli-runtime@v0.33.9 pkg/resource/visitor.go:46 `constSTDINstr = "STDIN"`).
pub const STDIN: &str = "STDIN";

/// Input doctor set aside while reading `-f` (a document that is not a manifest, a Helm chart's
/// templates, subdirectories without `-R`): said once on stderr and in the report's notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The file (and line) concerned; a directory has line 0.
    pub origin: Option<Origin>,
    /// What was set aside and why.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) if o.line > 0 => write!(f, "{}:{}: {}", o.file.display(), o.line, self.message),
            Some(o) => write!(f, "{}: {}", o.file.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The kinds doctor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// v1 Namespace
    Namespace,
    /// v1 Service
    Service,
    /// v1 Endpoints
    Endpoints,
    /// v1 Pod (kept: labels and container names)
    Pod,
    /// v1 ServiceAccount
    ServiceAccount,
    /// v1 Secret (kept: `cacerts` and `istio.*`)
    Secret,
    /// v1 ConfigMap (kept: `istio*`, `prometheus`, the DNS configs `kube-dns` and `coredns`)
    ConfigMap,
    /// apps/v1 Deployment (kept: `istio*`, for the era)
    Deployment,
    /// networking.istio.io DestinationRule
    DestinationRule,
    /// security.istio.io PeerAuthentication
    PeerAuthentication,
    /// authentication.istio.io MeshPolicy (1.4)
    MeshPolicy,
    /// authentication.istio.io Policy (1.4)
    Policy,
    /// networking.istio.io Gateway
    Gateway,
    /// networking.istio.io VirtualService
    VirtualService,
    /// networking.istio.io WorkloadEntry
    WorkloadEntry,
    /// networking.istio.io WorkloadGroup
    WorkloadGroup,
    /// networking.k8s.io ServiceCIDR (Kubernetes ≥ 1.33; absent elsewhere)
    ServiceCidr,
    /// networking.istio.io ServiceEntry (legacy `.global` services)
    ServiceEntry,
    /// networking.istio.io EnvoyFilter (legacy: the `.global` SNI rewrite at the gateway)
    EnvoyFilter,
}

impl Kind {
    /// Every kind, in list order.
    pub const ALL: [Kind; 19] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Endpoints,
        Kind::Pod,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Deployment,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
        Kind::MeshPolicy,
        Kind::Policy,
        Kind::Gateway,
        Kind::VirtualService,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::ServiceCidr,
        Kind::ServiceEntry,
        Kind::EnvoyFilter,
    ];

    /// The Kubernetes `kind` string.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Pod => "Pod",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Deployment => "Deployment",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::MeshPolicy => "MeshPolicy",
            Kind::Policy => "Policy",
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::ServiceCidr => "ServiceCIDR",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::EnvoyFilter => "EnvoyFilter",
        }
    }

    /// The kind of a manifest's `apiVersion` + `kind`, when doctor reads it.
    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let k = Kind::ALL.into_iter().find(|k| k.name() == kind)?;
        let expected = match k {
            Kind::Namespace
            | Kind::Service
            | Kind::Endpoints
            | Kind::Pod
            | Kind::ServiceAccount
            | Kind::Secret
            | Kind::ConfigMap => "",
            Kind::Deployment => "apps",
            Kind::ServiceCidr => "networking.k8s.io",
            Kind::PeerAuthentication => "security.istio.io",
            Kind::MeshPolicy | Kind::Policy => "authentication.istio.io",
            _ => "networking.istio.io",
        };
        // 1.4-era manifests still write Deployments as extensions/v1beta1.
        (group == expected || (k == Kind::Deployment && group == "extensions")).then_some(k)
    }

    fn istio(self) -> Option<IstioKind> {
        Some(match self {
            Kind::DestinationRule => IstioKind::DestinationRule,
            Kind::PeerAuthentication => IstioKind::PeerAuthentication,
            Kind::MeshPolicy => IstioKind::MeshPolicy,
            Kind::Policy => IstioKind::Policy,
            Kind::Gateway => IstioKind::Gateway,
            Kind::VirtualService => IstioKind::VirtualService,
            Kind::WorkloadEntry => IstioKind::WorkloadEntry,
            Kind::WorkloadGroup => IstioKind::WorkloadGroup,
            Kind::ServiceEntry => IstioKind::ServiceEntry,
            _ => return None,
        })
    }

    /// The kind as discovery names it, for kinds whose served version differs by release.
    fn discovered(self) -> Option<crate::read::KindRef> {
        match self {
            Kind::ServiceCidr => Some(crate::read::SERVICE_CIDR),
            Kind::EnvoyFilter => Some(ENVOY_FILTER),
            _ => self.istio().map(IstioKind::kind_ref),
        }
    }

    /// The resource of kinds every release of the matrix serves at one version.
    fn core_resource(self) -> Option<ApiResource> {
        let (group, version, plural) = match self {
            Kind::Namespace => ("", "v1", "namespaces"),
            Kind::Service => ("", "v1", "services"),
            Kind::Endpoints => ("", "v1", "endpoints"),
            Kind::Pod => ("", "v1", "pods"),
            Kind::ServiceAccount => ("", "v1", "serviceaccounts"),
            Kind::Secret => ("", "v1", "secrets"),
            Kind::ConfigMap => ("", "v1", "configmaps"),
            // apps/v1 is served from Kubernetes 1.9, below the matrix.
            Kind::Deployment => ("apps", "v1", "deployments"),
            _ => return None,
        };
        Some(ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.name()),
            plural,
        ))
    }

    /// Whether doctor keeps an object of this kind (secrets and config maps are filtered to
    /// Istio's own, so unrelated secret data is never held).
    fn keeps(self, name: &str) -> bool {
        match self {
            // `istio-ca-secret`: the self-signed CA's root (doctor's bundle.certs compares with it).
            Kind::Secret => {
                name == istio::CACERTS_SECRET
                    || name.starts_with("istio.")
                    || name == "istio-ca-secret"
            }
            // `prometheus`: the 1.4 addon's scrape config (mtls.metrics-scrape reads its jobs).
            // `kube-dns`, `coredns`: the cluster DNS config, whose `global` stub domain
            // network.global-services compares with istiocoredns.
            Kind::ConfigMap => {
                name.starts_with("istio") || matches!(name, "prometheus" | "kube-dns" | "coredns")
            }
            Kind::Deployment => name.starts_with("istio"),
            _ => true,
        }
    }
}

/// EnvoyFilter, served at v1alpha3 alone by every release of the matrix (istio/api@1.4.2 …
/// @1.24.0 `kubernetes/customresourcedefinitions.gen.yaml`: `envoyfilters` versions
/// `[v1alpha3]`).
const ENVOY_FILTER: crate::read::KindRef = crate::read::KindRef {
    group: "networking.istio.io",
    kind: "EnvoyFilter",
    plural: "envoyfilters",
    versions: &["v1alpha3"],
};

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A core kind doctor reads typed fields of (k8s-openapi, built for the Kubernetes version the
/// workspace selects: `v1_33`); implemented for the bodies of [`Body`] only.
pub trait Typed: Sized + 'static + private::Sealed {
    /// The snapshot kind its objects are listed under (`None` for the `-f` workload
    /// controllers, which are kept in [`Snapshot::controllers`]).
    const KIND: Option<Kind>;
    /// The typed object, when the body holds one of this type.
    fn from_body(body: &Body) -> Option<&Self>;
}

mod private {
    pub trait Sealed {}
}

macro_rules! bodies {
    ($($variant:ident($ty:ty) = $kind:expr),* $(,)?) => {
        /// An object's content: a typed core kind, or — Istio's kinds and anything doctor reads no
        /// field of — [`DynamicObject`] (typed metadata, the rest as JSON).
        #[derive(Clone, PartialEq)]
        pub enum Body {
            $(
                #[doc = concat!("A `", stringify!($variant), "`.")]
                $variant(Box<$ty>),
            )*
            /// A live Pod read by its metadata, sharing with the other pods of its template
            /// their common metadata and the spec of the one read in full ([`SharedPod`]).
            SharedPod(Box<SharedPod>),
            /// Istio kinds and other kinds doctor keeps no typed form of.
            Dynamic(Box<DynamicBody>),
            /// A core kind whose body does not read as its type: kept as JSON with the problem,
            /// so it is reported (an error for `-f`, a note for a cluster) and never judged.
            Unreadable(Box<(DynamicBody, String)>),
        }

        $(
            impl private::Sealed for $ty {}
            impl Typed for $ty {
                const KIND: Option<Kind> = $kind;
                fn from_body(body: &Body) -> Option<&Self> {
                    match body {
                        Body::$variant(t) => Some(t),
                        _ => None,
                    }
                }
            }
        )*

        impl Body {
            /// `metadata`.
            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Body::$variant(t) => &t.metadata,)*
                    Body::SharedPod(p) => p.meta(),
                    Body::Dynamic(d) => &d.metadata,
                    Body::Unreadable(u) => &u.0.metadata,
                }
            }

            /// Whether `kind` of `group` (without version) is read into a typed body.
            fn is_typed(group: &str, kind: &str) -> bool {
                match (group, kind) {
                    $((g, stringify!($variant)) if group_of(stringify!($variant)).contains(&g) => true,)*
                    _ => false,
                }
            }

            /// The typed body of a core kind (`group` without version), when it is one;
            /// `None` for the kinds kept as [`Body::Dynamic`].
            fn typed(group: &str, kind: &str, value: &Value) -> Option<Result<Body, String>> {
                fn read<T: serde::de::DeserializeOwned>(
                    value: &Value,
                    wrap: fn(Box<T>) -> Body,
                ) -> Result<Body, String> {
                    T::deserialize(value).map(|t| wrap(Box::new(t))).map_err(|e| {
                        // serde quotes the offending value: never a Secret's.
                        let e = if std::any::type_name::<T>().ends_with("::Secret") {
                            "not of the type the field takes (the value is not shown)".to_string()
                        } else {
                            e.to_string()
                        };
                        match locate::<T>(value) {
                            Some(path) => format!("{path}: {e}"),
                            None => e,
                        }
                    })
                }
                Some(match (group, kind) {
                    $((g, stringify!($variant)) if group_of(stringify!($variant)).contains(&g) => {
                        read::<$ty>(value, Body::$variant)
                    })*
                    _ => return None,
                })
            }
        }
    };
}

bodies! {
    Namespace(Namespace) = Some(Kind::Namespace),
    Service(Service) = Some(Kind::Service),
    Endpoints(Endpoints) = Some(Kind::Endpoints),
    // Read as a Pod, so a manifest's is checked against the type; kept as a SharedPod
    // (Obj::new): `typed::<Pod>()` answers None, `Obj::pod_spec` reads pods.
    Pod(Pod) = Some(Kind::Pod),
    ServiceAccount(ServiceAccount) = Some(Kind::ServiceAccount),
    Secret(Secret) = Some(Kind::Secret),
    ConfigMap(ConfigMap) = Some(Kind::ConfigMap),
    Deployment(Deployment) = Some(Kind::Deployment),
    DaemonSet(DaemonSet) = None,
    StatefulSet(StatefulSet) = None,
    ReplicaSet(ReplicaSet) = None,
    Job(Job) = None,
    CronJob(CronJob) = None,
    ServiceCIDR(ServiceCIDR) = Some(Kind::ServiceCidr),
}

/// What doctor reads of a pod's spec: its containers' names, images, ports and probes, and
/// `hostNetwork` (the workload checks, Service endpoints, the sidecar). k8s-openapi's
/// `PodSpec` and `Container` are 1.4 and 2.1 KB of mostly empty fields each: at 2 000 pod
/// templates they were a sixth of doctor's memory.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodShape {
    /// `containers` (not init containers: no check reads them).
    #[serde(default)]
    pub containers: Vec<ContainerShape>,
    /// `hostNetwork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// What doctor reads of a container ([`PodShape`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerShape {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<k8s_openapi::api::core::v1::ContainerPort>>,
    /// `readinessProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Box<k8s_openapi::api::core::v1::Probe>>,
    /// `livenessProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Box<k8s_openapi::api::core::v1::Probe>>,
    /// `startupProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Box<k8s_openapi::api::core::v1::Probe>>,
}

impl From<&PodSpec> for PodShape {
    fn from(spec: &PodSpec) -> Self {
        Self {
            containers: spec
                .containers
                .iter()
                .map(|c| ContainerShape {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ports: c.ports.clone(),
                    readiness_probe: c.readiness_probe.clone().map(Box::new),
                    liveness_probe: c.liveness_probe.clone().map(Box::new),
                    startup_probe: c.startup_probe.clone().map(Box::new),
                })
                .collect(),
            host_network: spec.host_network,
        }
    }
}

/// A Pod as doctor keeps it: its own name and creation time, and — shared by reference with
/// the other pods of its template — the rest of its metadata (labels, annotations, owner: equal
/// for the pods of one template, interned by value, so a pod whose metadata differs keeps its
/// own) and the shape of its spec ([`PodShape`]): for a pod of a metadata list, that of the pod
/// of its template read in full. Pods read whole (a manifest's, a full list's) are kept so too.
/// At 20 000 pods a typed [`Pod`] each was half of doctor's memory.
#[derive(Clone, PartialEq)]
pub struct SharedPod {
    name: String,
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Metadata without `name`, `uid`, `resourceVersion`, `generateName`, `creationTimestamp`
    /// and `managedFields` (what differs between the pods of one template).
    common: std::sync::Arc<ObjectMeta>,
    spec: std::sync::Arc<PodShape>,
    /// The whole metadata, built when first asked for ([`Obj::meta`]).
    meta: std::sync::OnceLock<Box<ObjectMeta>>,
}

impl SharedPod {
    /// Takes out of a pod's metadata what is its own — name and creation time, returned — and
    /// what differs between the pods of one template and no check reads (`uid`,
    /// `resourceVersion`, `generateName`, `managedFields`), leaving the common part.
    fn own_part(
        meta: &mut ObjectMeta,
    ) -> (
        String,
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    ) {
        meta.uid = None;
        meta.resource_version = None;
        meta.generate_name = None;
        meta.managed_fields = None;
        (
            meta.name.take().unwrap_or_default(),
            meta.creation_timestamp.take(),
        )
    }

    /// Pods read whole (a full list: Kubernetes 1.14, or a role that may list Pods but not get
    /// them) made to share what they have in common as [`read_pods`]'s do: equal common
    /// metadata, and equal spec shapes, are held once.
    fn share_alike(mut pods: Vec<Obj>) -> Vec<Obj> {
        let mut metas: HashMap<String, std::sync::Arc<ObjectMeta>> = HashMap::new();
        let mut shapes: HashMap<String, std::sync::Arc<PodShape>> = HashMap::new();
        for pod in &mut pods {
            if let Body::SharedPod(p) = &mut pod.body {
                let key = serde_json::to_string(&*p.common).unwrap_or_default();
                p.common = metas.entry(key).or_insert_with(|| p.common.clone()).clone();
                let key = serde_json::to_string(&*p.spec).unwrap_or_default();
                p.spec = shapes.entry(key).or_insert_with(|| p.spec.clone()).clone();
            }
        }
        pods
    }

    /// A Pod read whole (a manifest's, or a list's where metadata lists are not served), kept
    /// as every pod is.
    fn of(pod: Pod) -> Self {
        let Pod {
            mut metadata, spec, ..
        } = pod;
        let (name, created) = Self::own_part(&mut metadata);
        Self {
            name,
            created,
            common: std::sync::Arc::new(metadata),
            spec: std::sync::Arc::new(spec.as_ref().map(PodShape::from).unwrap_or_default()),
            meta: std::sync::OnceLock::new(),
        }
    }

    /// `metadata` whole: the common part with this pod's name and creation time.
    fn meta(&self) -> &ObjectMeta {
        self.meta.get_or_init(|| {
            let mut meta = (*self.common).clone();
            meta.name = Some(self.name.clone());
            meta.creation_timestamp.clone_from(&self.created);
            Box::new(meta)
        })
    }
}

/// The API groups a typed kind is read from (1.4-era manifests still write Deployments and
/// the other apps kinds as `extensions/v1beta1`; their pod templates read alike).
fn group_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" => &["apps", "extensions"],
        "Job" | "CronJob" => &["batch"],
        "ServiceCIDR" => &["networking.k8s.io"],
        _ => &[""],
    }
}

/// Where in `value` reading it as `T` fails, as a path (`spec.ports[0].port`): each step keeps
/// only the one member that still fails on its own (k8s-openapi reads an absent required field
/// as its default, so a pruned object fails only where the culprit is), and stops at a member
/// that fails even emptied (a list where a string belongs). Called only on failure.
fn locate<T: serde::de::DeserializeOwned>(value: &Value) -> Option<String> {
    enum Step {
        Key(String),
        Index(usize),
    }
    /// `value` reduced to the single branch `steps`, its end replaced by `leaf` when given.
    fn prune(value: &Value, steps: &[&Step], leaf: Option<&Value>) -> Value {
        match (steps.split_first(), value) {
            (None, v) => leaf.unwrap_or(v).clone(),
            (Some((Step::Key(k), rest)), Value::Object(m)) => {
                let mut out = Map::new();
                if let Some(v) = m.get(k) {
                    out.insert(k.clone(), prune(v, rest, leaf));
                }
                Value::Object(out)
            }
            (Some((Step::Index(i), rest)), Value::Array(a)) => Value::Array(
                a.get(*i)
                    .map(|v| vec![prune(v, rest, leaf)])
                    .unwrap_or_default(),
            ),
            (_, v) => v.clone(),
        }
    }
    let fails =
        |steps: &[&Step], leaf: Option<&Value>| T::deserialize(&prune(value, steps, leaf)).is_err();
    let mut path: Vec<Step> = Vec::new();
    let mut here = value;
    loop {
        let (children, emptied): (Vec<(Step, &Value)>, Value) = match here {
            Value::Object(m) => (
                m.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
                Value::Object(Map::new()),
            ),
            Value::Array(a) => (
                a.iter()
                    .enumerate()
                    .map(|(i, v)| (Step::Index(i), v))
                    .collect(),
                Value::Array(Vec::new()),
            ),
            _ => break,
        };
        let steps: Vec<&Step> = path.iter().collect();
        if !path.is_empty() && fails(&steps, Some(&emptied)) {
            break;
        }
        let Some((step, child)) = children.into_iter().find(|(step, _)| {
            let mut steps = steps.clone();
            steps.push(step);
            fails(&steps, None)
        }) else {
            break;
        };
        path.push(step);
        here = child;
    }
    let mut out = String::new();
    for step in &path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `text` as one shared copy: objects hold their `apiVersion` and `kind` so, a few dozen
/// values for tens of thousands of objects.
fn interned(text: &str) -> std::sync::Arc<str> {
    static TEXTS: std::sync::Mutex<Vec<std::sync::Arc<str>>> = std::sync::Mutex::new(Vec::new());
    let mut texts = TEXTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(t) = texts.iter().find(|t| ***t == *text) {
        return t.clone();
    }
    let t: std::sync::Arc<str> = text.into();
    texts.push(t.clone());
    t
}

/// One object, as the API server or the manifest has it, with where it came from.
#[derive(Clone, PartialEq)]
pub struct Obj {
    /// `apiVersion` as read (`extensions/v1beta1` for a 1.4-era Deployment), shared
    /// ([`interned`]).
    api_version: std::sync::Arc<str>,
    /// `kind` as read, shared ([`interned`]).
    kind: std::sync::Arc<str>,
    /// The content.
    body: Body,
    /// File and line, for objects read with `-f`.
    pub origin: Option<Box<Origin>>,
}

impl fmt::Debug for Obj {
    // Secrets carry key material: print only the identity.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Obj({})", self.reference())
    }
}

impl Obj {
    /// An object without an origin (live objects, tests), from its JSON form: core kinds are
    /// read into their k8s-openapi type, other kinds (Istio's) into [`DynamicObject`]. A core
    /// kind whose body does not read as its type is kept as [`Body::Unreadable`] with the
    /// problem ([`Obj::problem`]); [`Snapshot::push`] sets it aside with a [`Note`].
    pub fn new(mut value: Value) -> Self {
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let api_version = text(&value, "apiVersion");
        let kind = text(&value, "kind");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        // Held apart: k8s-openapi refuses an apiVersion other than its own (a 1.4-era
        // `extensions/v1beta1` Deployment, a `v1beta1` ServiceCIDR), whose fields read alike.
        if let Some(map) = value.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        if group.is_empty() {
            match kind.as_str() {
                "Secret" => unwrap_base64(&mut value, "data"),
                "ConfigMap" => unwrap_base64(&mut value, "binaryData"),
                _ => {}
            }
        }
        let body = match Body::typed(group, &kind, &value) {
            // Read as a Pod (so a manifest's is checked against the type), kept as every pod.
            Some(Ok(Body::Pod(pod))) => Body::SharedPod(Box::new(SharedPod::of(*pod))),
            Some(Ok(body)) => body,
            Some(Err(problem)) => {
                Body::Unreadable(Box::new((DynamicBody::from_value(value), problem)))
            }
            None => Body::Dynamic(Box::new(DynamicBody::from_value(value))),
        };
        Self {
            api_version: interned(&api_version),
            kind: interned(&kind),
            body,
            origin: None,
        }
    }

    /// A listed object of `ar`'s kind, as [`crate::read::list_all_raw`] reads it, with
    /// `managedFields` dropped. Istio's kinds are kept as the JSON text they were read as
    /// ([`DynamicBody`]): at 100 000 DestinationRules a tree of each was half of doctor's
    /// memory. Core kinds are typed as [`Obj::new`] types them, after [`trim`].
    fn from_listed(kind: Kind, ar: &ApiResource, mut item: crate::read::RawItem) -> Self {
        item.remove("apiVersion");
        item.remove("kind");
        if Body::is_typed(&ar.group, &ar.kind) {
            return Self::new(raw_value(kind, ar, item));
        }
        Self {
            api_version: interned(&ar.api_version),
            kind: interned(&ar.kind),
            body: Body::Dynamic(Box::new(DynamicBody::from_raw(item))),
            origin: None,
        }
    }

    /// The object as JSON again (apiVersion, kind, metadata, the rest): what `--fix` shows and
    /// writes, and what STRICT restores.
    pub fn to_value(&self) -> Value {
        fn json<T: serde::Serialize>(t: &T) -> Value {
            serde_json::to_value(t).unwrap_or(Value::Null)
        }
        let dynamic = |d: &DynamicBody| {
            let mut map = d.data().as_object().cloned().unwrap_or_default();
            let meta = json(&d.metadata);
            if meta.as_object().is_some_and(|m| !m.is_empty()) {
                map.insert("metadata".into(), meta);
            }
            map
        };
        let mut map = match &self.body {
            Body::Dynamic(d) => dynamic(d),
            Body::Unreadable(u) => dynamic(&u.0),
            Body::Namespace(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::Service(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::Endpoints(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::Pod(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::SharedPod(p) => {
                let mut map = Map::new();
                map.insert("metadata".into(), json(p.meta()));
                map.insert("spec".into(), json(&*p.spec));
                map
            }
            Body::ServiceAccount(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::Secret(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::ConfigMap(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::Deployment(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::DaemonSet(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::StatefulSet(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::ReplicaSet(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::Job(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::CronJob(t) => json(t).as_object().cloned().unwrap_or_default(),
            Body::ServiceCIDR(t) => json(t).as_object().cloned().unwrap_or_default(),
        };
        map.insert(
            "apiVersion".into(),
            Value::String(self.api_version.to_string()),
        );
        map.insert("kind".into(), Value::String(self.kind.to_string()));
        Value::Object(map)
    }

    /// The content.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The typed object, when this is one of `T`'s kind: `obj.typed::<Service>()`.
    pub fn typed<T: Typed>(&self) -> Option<&T> {
        T::from_body(&self.body)
    }

    /// Istio's kinds (and kinds without a typed form): metadata typed, the rest JSON.
    pub fn dynamic(&self) -> Option<&DynamicBody> {
        match &self.body {
            Body::Dynamic(d) => Some(d),
            _ => None,
        }
    }

    /// Why a core kind's body did not read as its type (see [`Body::Unreadable`]).
    pub fn problem(&self) -> Option<&str> {
        match &self.body {
            Body::Unreadable(u) => Some(&u.1),
            _ => None,
        }
    }

    /// `metadata`.
    pub fn meta(&self) -> &ObjectMeta {
        self.body.meta()
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }
    /// `kind`.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// `metadata` as far as it is shared: the whole of it, but for a pod read by its metadata
    /// ([`SharedPod`]) the part common to its template — labels, annotations, owner, namespace;
    /// no name, uid or creation time. What reading labels and annotations goes through, so
    /// that it builds no copy.
    pub fn common_meta(&self) -> &ObjectMeta {
        match &self.body {
            Body::SharedPod(p) => &p.common,
            body => body.meta(),
        }
    }
    /// A Pod's spec as doctor reads it ([`PodShape`]): `None` for other kinds.
    pub fn pod_spec(&self) -> Option<&PodShape> {
        match &self.body {
            Body::SharedPod(p) => Some(&p.spec),
            _ => None,
        }
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        match &self.body {
            Body::SharedPod(p) => &p.name,
            _ => self.meta().name.as_deref().unwrap_or_default(),
        }
    }
    /// `metadata.namespace` (empty for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.common_meta().namespace.as_deref().unwrap_or_default()
    }
    /// `Kind ns/name`, or `Kind name` for cluster-scoped objects: how findings name objects.
    pub fn reference(&self) -> String {
        if self.namespace().is_empty() {
            format!("{} {}", self.kind(), self.name())
        } else {
            format!("{} {}/{}", self.kind(), self.namespace(), self.name())
        }
    }
    /// `ns/name`.
    pub fn ns_name(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
    /// The JSON at a path of keys below the top of an Istio object (`["spec", "host"]`).
    /// Core kinds have typed fields instead ([`Obj::typed`]): asking one is a bug (debug builds
    /// panic; release builds answer `None`).
    pub fn at(&self, path: &[&str]) -> Option<&Value> {
        debug_assert!(
            !matches!(path.first(), Some(&("apiVersion" | "kind" | "metadata"))),
            "{}: read {path:?} with api_version(), kind() or meta()",
            self.reference()
        );
        let d = self.dynamic_or_bug()?;
        path.iter().try_fold(d.data(), |v, k| v.get(k))
    }
    /// The string at a path of keys below the top of an Istio object (see [`Obj::at`]).
    pub fn str_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).and_then(Value::as_str)
    }
    /// An Istio object's `spec` (Null when absent; see [`Obj::at`]).
    pub fn spec(&self) -> &Value {
        self.at(&["spec"]).unwrap_or(&Value::Null)
    }
    /// An Istio object's `spec` read as `T` (its default when absent or not of `T`'s shape),
    /// without building a JSON tree of a listed object (see [`DynamicBody`]).
    pub fn spec_as<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        self.dynamic_or_bug()
            .and_then(|d| d.field_as("spec"))
            .and_then(Result::ok)
            .unwrap_or_default()
    }
    fn dynamic_or_bug(&self) -> Option<&DynamicBody> {
        let d = self.dynamic();
        debug_assert!(
            d.is_some() || matches!(self.body, Body::Unreadable(..)),
            "{}: a core kind is read through its typed fields, not JSON paths",
            self.reference()
        );
        d
    }
    /// A label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.common_meta()
            .labels
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
    /// All labels.
    pub fn labels(&self) -> BTreeMap<&str, &str> {
        borrowed(self.common_meta().labels.as_ref())
    }
    /// An annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.common_meta()
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
    /// `metadata.creationTimestamp` (absent sorts first).
    pub fn created(&self) -> Option<Timestamp> {
        if let Body::SharedPod(p) = &self.body {
            return p.created.as_ref().map(|t| t.0);
        }
        self.meta().creation_timestamp.as_ref().map(|t| t.0)
    }
    /// The pod template of a workload controller (Deployment, DaemonSet, StatefulSet,
    /// ReplicaSet, Job; a CronJob's job template's). A controller without one (a Kustomize
    /// patch setting `replicas`) has none: k8s-openapi reads the absent required `template` as
    /// an empty one, which is taken for absent.
    pub fn pod_template(&self) -> Option<&PodTemplateSpec> {
        let template = match &self.body {
            Body::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Body::DaemonSet(d) => d.spec.as_ref().map(|s| &s.template),
            Body::StatefulSet(d) => d.spec.as_ref().map(|s| &s.template),
            Body::ReplicaSet(d) => d.spec.as_ref()?.template.as_ref(),
            Body::Job(d) => d.spec.as_ref().map(|s| &s.template),
            Body::CronJob(d) => d
                .spec
                .as_ref()?
                .job_template
                .spec
                .as_ref()
                .map(|s| &s.template),
            _ => None,
        };
        template.filter(|t| t.metadata.is_some() || t.spec.is_some())
    }
    /// The labels of a workload controller's pod template (empty for other objects).
    pub fn template_labels(&self) -> BTreeMap<&str, &str> {
        borrowed(
            self.pod_template()
                .and_then(|t| t.metadata.as_ref()?.labels.as_ref()),
        )
    }
    /// The containers of a workload controller's pod template (none for other objects).
    pub fn template_containers(&self) -> impl Iterator<Item = &Container> {
        self.pod_template()
            .and_then(|t| t.spec.as_ref())
            .into_iter()
            .flat_map(|s| &s.containers)
    }
    /// A Secret's or ConfigMap's value for `key`: `data` (base64-decoded for Secrets), else
    /// Secret `stringData`, else ConfigMap `binaryData`.
    pub fn data(&self, key: &str) -> Option<Vec<u8>> {
        match &self.body {
            Body::Secret(s) => s
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    s.string_data
                        .as_ref()?
                        .get(key)
                        .map(|v| v.as_bytes().to_vec())
                }),
            Body::ConfigMap(c) => c
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.as_bytes().to_vec())
                .or_else(|| c.binary_data.as_ref()?.get(key).map(|b| b.0.clone())),
            _ => None,
        }
    }
    /// The keys of a Secret's or ConfigMap's data.
    pub fn data_keys(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        match &self.body {
            Body::Secret(s) => {
                out.extend(s.data.iter().flat_map(|m| m.keys().map(String::as_str)));
                out.extend(
                    s.string_data
                        .iter()
                        .flat_map(|m| m.keys().map(String::as_str)),
                );
            }
            Body::ConfigMap(c) => {
                out.extend(c.data.iter().flat_map(|m| m.keys().map(String::as_str)));
                out.extend(
                    c.binary_data
                        .iter()
                        .flat_map(|m| m.keys().map(String::as_str)),
                );
            }
            _ => {}
        }
        out
    }
}

/// The JSON form of a kind kept dynamic: metadata typed, `apiVersion`/`kind` held by [`Obj`],
/// the rest as it came.
/// The content of an Istio object (and of a kind doctor keeps no typed form of): metadata
/// typed, the rest JSON. A listed object keeps each top-level field (`spec`, `status`, …) as
/// the JSON text it was read as, a tree of it built only when a check walks it
/// ([`Obj::at`]); typed readers ([`Obj::spec_as`]) read the text directly. A tree of small
/// JSON maps costs ~0.6 KB per map, the text a few bytes per field.
#[derive(Clone, Debug)]
pub struct DynamicBody {
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// Top-level fields other than `apiVersion`, `kind` and `metadata`, as read.
    raw: Vec<(String, Box<serde_json::value::RawValue>)>,
    /// The same fields as one JSON object, built from `raw` on first use.
    tree: std::sync::OnceLock<Value>,
}

impl PartialEq for DynamicBody {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata && self.data() == other.data()
    }
}

impl DynamicBody {
    /// From a manifest's JSON form (`apiVersion` and `kind` dropped).
    fn from_value(value: Value) -> Self {
        let (metadata, data) = match value {
            Value::Object(mut map) => {
                map.remove("apiVersion");
                map.remove("kind");
                let metadata = map.remove("metadata").map(lenient_meta).unwrap_or_default();
                (metadata, Value::Object(map))
            }
            other => (ObjectMeta::default(), other),
        };
        Self {
            metadata,
            raw: Vec::new(),
            tree: data.into(),
        }
    }

    /// From a listed item's fields (`apiVersion` and `kind` already dropped); `managedFields`
    /// is not kept.
    fn from_raw(mut item: crate::read::RawItem) -> Self {
        let mut metadata = item
            .remove("metadata")
            .map(|raw| {
                serde_json::from_str::<ObjectMeta>(raw.get()).unwrap_or_else(|_| {
                    lenient_meta(serde_json::from_str(raw.get()).unwrap_or(Value::Null))
                })
            })
            .unwrap_or_default();
        metadata.managed_fields = None;
        Self {
            metadata,
            raw: item.into_iter().collect(),
            tree: std::sync::OnceLock::new(),
        }
    }

    /// The fields other than `apiVersion`, `kind` and `metadata`, as one JSON object.
    pub fn data(&self) -> &Value {
        self.tree.get_or_init(|| {
            Value::Object(
                self.raw
                    .iter()
                    .map(|(k, raw)| {
                        let v = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                        (k.clone(), v)
                    })
                    .collect(),
            )
        })
    }

    /// Top-level field `key` read as `T` — from its text when no tree was built; `None` when
    /// absent, `Some(Err)` when it does not read as `T`.
    pub fn field_as<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Option<Result<T, serde_json::Error>> {
        if let Some(tree) = self.tree.get() {
            return tree.get(key).map(T::deserialize);
        }
        self.raw
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, raw)| serde_json::from_str(raw.get()))
    }
}

/// The Istio namespace from Deployments' (namespace, name): where istiod, Pilot or Citadel
/// runs, else `istio-system`.
fn istio_namespace_of<'a>(mut deployments: impl Iterator<Item = (&'a str, &'a str)>) -> &'a str {
    deployments
        .find(|(_, name)| {
            matches!(*name, "istiod" | "istio-pilot" | "istio-citadel")
                || name.starts_with("istiod-")
        })
        .map_or(istio::DEFAULT_ISTIO_NAMESPACE, |(ns, _)| ns)
}

/// An Istio object's metadata, its fields of the wrong type left out one by one (a YAML 1.1
/// `name: n` reads as `false`; a label value `1` is a number), as doctor always read them: such
/// a field reads as absent and the rest still counts.
fn lenient_meta(meta: Value) -> ObjectMeta {
    if let Ok(m) = ObjectMeta::deserialize(&meta) {
        return m;
    }
    let Value::Object(fields) = meta else {
        return ObjectMeta::default();
    };
    let mut kept = Map::new();
    for (key, value) in fields {
        let value = match value {
            // Labels and annotations: the string pairs.
            Value::Object(pairs) if matches!(key.as_str(), "labels" | "annotations") => {
                Value::Object(pairs.into_iter().filter(|(_, v)| v.is_string()).collect())
            }
            v => v,
        };
        let one = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
        if ObjectMeta::deserialize(&one).is_ok() {
            kept.insert(key, value);
        }
    }
    ObjectMeta::deserialize(Value::Object(kept)).unwrap_or_default()
}

/// Secret `data` (ConfigMap `binaryData`) as the API server decodes it: encoding/json reads a
/// `[]byte` field with `base64.StdEncoding`, whose decoder skips line breaks (golang/go
/// src/encoding/base64/base64.go, `(*Encoding).Decode`: "New line characters (\r and \n) are
/// ignored"); and, as doctor always did, the space around a value. k8s-openapi's `ByteString`
/// decodes strictly.
fn unwrap_base64(obj: &mut Value, key: &str) {
    if let Some(data) = obj.get_mut(key).and_then(Value::as_object_mut) {
        for v in data.values_mut() {
            if let Value::String(s) = v
                && s.contains(|c: char| c.is_ascii_whitespace())
            {
                let trimmed: String = s
                    .trim()
                    .chars()
                    .filter(|c| !matches!(c, '\r' | '\n'))
                    .collect();
                *s = trimmed;
            }
        }
    }
}

/// A typed `map[string]string` (labels, annotations, a selector) as borrowed pairs.
pub fn borrowed(m: Option<&BTreeMap<String, String>>) -> BTreeMap<&str, &str> {
    m.into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A `map[string]string` as borrowed pairs (non-strings are skipped).
pub fn string_map(v: Option<&Value>) -> BTreeMap<&str, &str> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a snapshot's objects came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// No cluster and no manifests: only a bundle (or nothing).
    #[default]
    None,
    /// `-f` manifests.
    Files,
    /// A live cluster.
    Live,
}

/// One file of a VM bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// The content.
    pub data: Vec<u8>,
    /// Unix permission bits (`0o600`), as on disk or in the tar header.
    pub mode: u32,
}

impl fmt::Debug for BundleFile {
    // Keys and tokens must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BundleFile({} bytes, mode {:o})",
            self.data.len(),
            self.mode
        )
    }
}

/// The files `kubectl meshvm bundle` writes for a VM, by relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmBundle {
    /// The directory or archive read.
    pub path: PathBuf,
    /// Files by path relative to the bundle root (`/`-separated).
    pub files: BTreeMap<String, BundleFile>,
}

impl VmBundle {
    /// Read a bundle from a directory or a `.tar.gz`/`.tgz` archive.
    pub fn read(path: &Path) -> Result<VmBundle, Error> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut bundle = VmBundle {
            path: path.to_path_buf(),
            files: BTreeMap::new(),
        };
        if meta.is_dir() {
            bundle.read_dir(path, "")?;
        } else {
            let file = std::fs::File::open(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            bundle.read_tar_gz(file)?;
        }
        if bundle.files.is_empty() {
            return Err(bundle.problem("holds no files"));
        }
        bundle.strip_top_folder();
        Ok(bundle)
    }

    /// Files all under one folder (`expandvm/key.pem`: the layout `bundle` writes its archive
    /// in, and a directory holding the unpacked folder) are read relative to that folder; files
    /// at the top (the loose layout of earlier releases) are read as they are.
    fn strip_top_folder(&mut self) {
        let mut tops = self
            .files
            .keys()
            .map(|k| k.split_once('/').map(|(top, _)| top));
        let Some(Some(first)) = tops.next() else {
            return;
        };
        let first = first.to_owned();
        if !tops.all(|t| t == Some(first.as_str())) {
            return;
        }
        let prefix = format!("{first}/");
        self.files = std::mem::take(&mut self.files)
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
            .collect();
    }

    fn problem(&self, problem: impl Into<String>) -> Error {
        Error::VmBundle {
            path: self.path.clone(),
            problem: problem.into(),
        }
    }

    fn read_dir(&mut self, dir: &Path, prefix: &str) -> Result<(), Error> {
        let read_err = |source| Error::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries = std::fs::read_dir(dir)
            .map_err(read_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err)?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            if meta.file_type().is_symlink() {
                return Err(self.problem(format!("{rel} is a link; bundles hold plain files only")));
            }
            if meta.is_dir() {
                self.read_dir(&path, &format!("{rel}/"))?;
                continue;
            }
            if meta.len() > MAX_BUNDLE_FILE {
                return Err(self.problem(format!("{rel} is larger than 1 MiB")));
            }
            let data = std::fs::read(&path).map_err(|source| Error::Read { path, source })?;
            self.files.insert(
                rel,
                BundleFile {
                    data,
                    mode: file_mode(&meta),
                },
            );
        }
        Ok(())
    }

    fn read_tar_gz(&mut self, reader: impl Read) -> Result<(), Error> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
        let entries = archive
            .entries()
            .map_err(|e| self.problem(format!("not a tar.gz archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.problem(format!("corrupt archive: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| self.problem(format!("bad entry name: {e}")))?
                .into_owned();
            let rel = safe_relative(&raw).ok_or_else(|| {
                self.problem(format!(
                    "entry {} escapes the bundle (absolute or ..)",
                    raw.display()
                ))
            })?;
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                return Err(self.problem(format!(
                    "entry {rel} is a link; bundles hold plain files only"
                )));
            }
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                return Err(self.problem(format!("entry {rel} is not a regular file")));
            }
            if entry.size() > MAX_BUNDLE_FILE {
                return Err(self.problem(format!("{rel} is larger than 1 MiB")));
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| self.problem(format!("cannot read {rel}: {e}")))?;
            if self
                .files
                .insert(rel.clone(), BundleFile { data, mode })
                .is_some()
            {
                return Err(self.problem(format!("entry {rel} appears twice")));
            }
        }
        Ok(())
    }

    /// A file's content.
    pub fn file(&self, name: &str) -> Option<&BundleFile> {
        self.files.get(name)
    }

    /// A file's content as text (lossy).
    pub fn text(&self, name: &str) -> Option<String> {
        self.file(name)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
    }

    /// The bundle's era, from the files that only one era has.
    pub fn era(&self) -> Option<Era> {
        if self.files.contains_key("istio-token") || self.files.contains_key("mesh.yaml") {
            Some(Era::Modern)
        } else if self.files.contains_key("key.pem") || self.files.contains_key("cert-chain.pem") {
            Some(Era::Legacy)
        } else {
            None
        }
    }

    /// `cluster.env` as `KEY → value` (quotes removed), or `None` when the file is absent.
    pub fn cluster_env(&self) -> Option<BTreeMap<String, String>> {
        let text = self.text("cluster.env")?;
        Some(
            parse_env(&text)
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect(),
        )
    }
}

/// `KEY=value` assignments of a shell-sourced env file (cluster.env), values unquoted the way
/// `sh` reads them — `'…'`, `"…"` with backslash escapes, bare words, and concatenations such as
/// `'it'"'"'s'` — with the 1-based line each starts on. Comments and blank lines are skipped;
/// a line that is not an assignment comes back with an empty key so callers can report it.
pub fn parse_env(text: &str) -> Vec<(String, String, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        // Skip blank space between assignments.
        if chars[i] == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start_line = line;
        let rest_of_line = |from: usize| -> usize {
            chars[from..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| from + n)
        };
        if chars[i] == '#' {
            i = rest_of_line(i);
            continue;
        }
        let eol = rest_of_line(i);
        let raw: String = chars[i..eol].iter().collect();
        let body = raw
            .strip_prefix("export ")
            .map_or(i, |_| i + "export ".len());
        let key_end = chars[body..eol]
            .iter()
            .position(|&c| c == '=')
            .map(|n| body + n);
        let Some(key_end) = key_end.filter(|&k| {
            k > body
                && chars[body..k]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == '_')
        }) else {
            out.push((String::new(), raw.trim().to_string(), start_line));
            i = eol;
            continue;
        };
        let key: String = chars[body..key_end].iter().collect();
        let (value, next, newlines) = shell_word(&chars, key_end + 1);
        line += newlines;
        out.push((key, value, start_line));
        // Anything after the word on its line (a trailing comment) is ignored.
        i = rest_of_line(next);
    }
    out
}

/// One shell word from `chars[start..]`: its unquoted value, where it ends, and how many
/// newlines it spans (quoted values may hold some).
fn shell_word(chars: &[char], start: usize) -> (String, usize, usize) {
    let mut value = String::new();
    let mut i = start;
    let mut newlines = 0;
    while i < chars.len() {
        match chars[i] {
            '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    if chars[i] == '\n' {
                        newlines += 1;
                    }
                    value.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\'
                        && i + 1 < chars.len()
                        && matches!(chars[i + 1], '"' | '\\' | '$' | '`' | '\n')
                    {
                        i += 1;
                        if chars[i] == '\n' {
                            newlines += 1;
                            i += 1;
                            continue;
                        }
                    }
                    if chars[i] == '\n' {
                        newlines += 1;
                    }
                    value.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '\\' if i + 1 < chars.len() => {
                if chars[i + 1] == '\n' {
                    newlines += 1;
                } else {
                    value.push(chars[i + 1]);
                }
                i += 2;
            }
            c if c.is_whitespace() => break,
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (value, i.min(chars.len()), newlines)
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

/// A tar entry path as a `/`-joined relative path, or `None` when absolute or with `..`.
fn safe_relative(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Mesh objects doctor reads, from one source.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Objects by kind, in source order (added through [`Snapshot::push`], which keeps the
    /// parsed mesh config current).
    objects: BTreeMap<Kind, Vec<Obj>>,
    /// Kinds the source could answer for: listed on a live cluster, or present in the files.
    pub known: BTreeSet<Kind>,
    /// Kinds the cluster refused to list, with the reason (e.g. RBAC).
    pub refused: BTreeMap<Kind, String>,
    /// Kinds the cluster does not serve (live only), with what discovery found: checks that
    /// need them say so instead of passing on an empty list.
    pub not_served: BTreeMap<Kind, String>,
    /// Where the objects came from.
    pub source: SourceKind,
    /// The kubeconfig context, for live snapshots.
    pub context: Option<String>,
    /// The version the cluster serves DestinationRules at (live only): `--fix` writes them so.
    pub networking_version: Option<String>,
    /// The VM bundle, when `--bundle` was given.
    pub bundle: Option<VmBundle>,
    /// Workload controllers read with `-f` (Deployments, StatefulSets, DaemonSets, Jobs,
    /// CronJobs, whatever their name): their pod templates are the workloads doctor judges
    /// when the source holds no live Pods.
    pub controllers: Vec<Obj>,
    /// What reading `-f` set aside ([`Note`]), in reading order.
    pub notes: Vec<Note>,
    /// The mesh config, parsed on first use ([`Snapshot::mesh_config`]); [`Snapshot::push`]
    /// forgets it.
    mesh: std::sync::OnceLock<Option<MeshConfig>>,
    /// The Pods of each namespace, as indices into `objects[Pod]`, built on first use
    /// ([`Snapshot::pods_in`]); [`Snapshot::push`] forgets it.
    pods_by_ns: std::sync::OnceLock<HashMap<String, Vec<usize>>>,
}

impl Snapshot {
    /// The Pods, with their spec, in source order.
    pub fn pods(&self) -> impl Iterator<Item = (&Obj, &PodShape)> {
        self.of(Kind::Pod)
            .iter()
            .filter_map(|p| p.pod_spec().map(|s| (p, s)))
    }

    /// The Pods of namespace `ns` with their spec, in source order: what a Service selects
    /// from (scanning every Pod for every Service was most of doctor's time on a cluster of
    /// 20 000 Pods and 2 000 Services).
    pub fn pods_in(&self, ns: &str) -> impl Iterator<Item = (&Obj, &PodShape)> {
        let pods = self.of(Kind::Pod);
        let index = self.pods_by_ns.get_or_init(|| {
            let mut index: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, p) in pods.iter().enumerate() {
                index.entry(p.namespace().to_owned()).or_default().push(i);
            }
            index
        });
        index
            .get(ns)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|i| pods[*i].pod_spec().map(|s| (&pods[*i], s)))
    }

    /// The objects of one kind.
    pub fn of(&self, kind: Kind) -> &[Obj] {
        self.objects.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// Whether the source can say something about `kind` (absence then means "none").
    pub fn knows(&self, kind: Kind) -> bool {
        self.known.contains(&kind)
    }

    /// One object by kind, namespace and name.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Obj> {
        self.of(kind)
            .iter()
            .find(|o| o.name() == name && o.namespace() == namespace)
    }

    /// Add one object (kept only when doctor reads its kind). A core kind whose body does not
    /// read as its type ([`Obj::problem`]) is set aside with a [`Note`], never judged.
    pub fn push(&mut self, obj: Obj) {
        if let Some(problem) = obj.problem() {
            if let Some(kind) = Kind::from_manifest(obj.api_version(), obj.kind()) {
                self.known.insert(kind);
            }
            if !self.judges(&obj) {
                return;
            }
            self.notes.push(Note {
                origin: obj.origin.as_deref().cloned(),
                message: format!(
                    "{} skipped: it does not read as a {} {}: {problem}",
                    obj.reference(),
                    obj.api_version(),
                    obj.kind()
                ),
            });
            return;
        }
        if self.source != SourceKind::Live && is_controller(obj.api_version(), obj.kind()) {
            self.controllers.push(obj.clone());
        }
        let Some(kind) = Kind::from_manifest(obj.api_version(), obj.kind()) else {
            return;
        };
        // Still tells us the source lists this kind.
        self.known.insert(kind);
        if !kind.keeps(obj.name()) {
            return;
        }
        self.mesh = std::sync::OnceLock::new();
        self.pods_by_ns = std::sync::OnceLock::new();
        self.objects.entry(kind).or_default().push(obj);
    }

    /// Whether doctor keeps `obj` to judge it: a kind it reads, by a name it keeps (not every
    /// Secret, ConfigMap or Deployment), or a `-f` workload controller.
    fn judges(&self, obj: &Obj) -> bool {
        (self.source != SourceKind::Live && is_controller(obj.api_version(), obj.kind()))
            || Kind::from_manifest(obj.api_version(), obj.kind())
                .is_some_and(|k| k.keeps(obj.name()))
    }

    /// Every object kept, by kind, in source order.
    pub fn all(&self) -> impl Iterator<Item = &Obj> {
        self.objects.values().flatten()
    }

    /// The objects of a typed kind, with their typed form: `snap.typed::<Service>()` (Pods:
    /// [`Snapshot::pods`]).
    pub fn typed<T: Typed>(&self) -> impl Iterator<Item = (&Obj, &T)> {
        T::KIND
            .map_or(&[][..], |k| self.of(k))
            .iter()
            .filter_map(|o| o.typed::<T>().map(|t| (o, t)))
    }

    /// One object of a typed kind by namespace and name.
    pub fn get_typed<T: Typed>(&self, namespace: &str, name: &str) -> Option<(&Obj, &T)> {
        let o = self.get(T::KIND?, namespace, name)?;
        o.typed::<T>().map(|t| (o, t))
    }

    /// Read manifests from files and directories, as `kubectl -f` does, without `-R` and
    /// without standard input (see [`Snapshot::from_inputs`]).
    pub fn from_files(paths: &[PathBuf]) -> Result<Snapshot, Error> {
        Self::from_inputs(paths, false, &mut std::io::empty())
    }

    /// Read `-f` inputs as kubectl does: a file (whatever its extension), `-` for `stdin`
    /// (named [`STDIN`]), or a directory's `.yaml`, `.yml` and `.json` files — with
    /// `recursive` (`-R`) those of its subdirectories too, in lexical order
    /// (kubernetes/cli-runtime@v0.33.9 pkg/resource/visitor.go:506-531: `filepath.Walk`, a
    /// subdirectory skipped unless recursive, the extension checked only for files found in a
    /// directory). Unlike kubectl, documents of files found in a directory that lack
    /// apiVersion or kind (a Helm `values.yaml`, a CI config) are skipped with a [`Note`]; so
    /// are subdirectories holding manifests without `-R`, and a Helm chart's `templates/`.
    pub fn from_inputs(
        paths: &[PathBuf],
        recursive: bool,
        stdin: &mut dyn Read,
    ) -> Result<Snapshot, Error> {
        let mut snap = Snapshot {
            source: SourceKind::Files,
            ..Snapshot::default()
        };
        for path in paths {
            if path.as_os_str() == "-" {
                let mut text = String::new();
                stdin.read_to_string(&mut text).map_err(Error::Stdin)?;
                snap.add_manifests(Path::new(STDIN), &text, false)?;
                continue;
            }
            let meta = std::fs::metadata(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                let mut files = Vec::new();
                let mut notes = Vec::new();
                let below = collect_manifests(path, recursive, &mut files, &mut notes)?;
                if files.is_empty() {
                    return Err(Error::NoManifests {
                        path: path.clone(),
                        below,
                    });
                }
                snap.notes.extend(notes);
                if below > 0 {
                    snap.notes.push(Note {
                        origin: Some(Origin {
                            file: path.clone(),
                            line: 0,
                        }),
                        message: format!(
                            "{below} subdirector{} with .yaml/.yml/.json files not read: -f DIR reads only the directory itself, as kubectl does; add -R to read them",
                            if below == 1 { "y" } else { "ies" }
                        ),
                    });
                }
                for file in files {
                    snap.add_file(&file, true)?;
                }
            } else {
                snap.add_file(path, false)?;
            }
        }
        Ok(snap)
    }

    fn add_file(&mut self, path: &Path, in_dir: bool) -> Result<(), Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_manifests(path, &text, in_dir)
    }

    /// Add the documents of one manifest text, as if read from `path`. `in_dir`: the file was
    /// found in a `-f DIR`, so its documents without apiVersion or kind are skipped with a
    /// [`Note`] instead of failing (a named file or standard input must hold only manifests).
    pub fn add_manifests(&mut self, path: &Path, text: &str, in_dir: bool) -> Result<(), Error> {
        let is_json = path.extension().is_some_and(|e| e == "json");
        let docs: Vec<(Value, usize)> = if is_json {
            let v: Value = serde_json::from_str(text).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                line: (e.line() > 0).then_some(e.line()),
                json: true,
                message: e.to_string(),
            })?;
            vec![(v, 1)]
        } else {
            // GitOps dumps hold thousands of documents; anchors and aliases keep their
            // default (bomb-proof) limits.
            let options = serde_saphyr::options! {
                budget: serde_saphyr::budget! {
                    max_documents: 1_000_000,
                    max_nodes: 50_000_000,
                    max_events: 200_000_000,
                },
            };
            serde_saphyr::from_multiple_with_options::<serde_saphyr::Spanned<Value>>(text, options)
                .map_err(|e| {
                    let name = path.display().to_string();
                    // The snippet's header names the file, not the parser's `<input>`.
                    let rendered = e.render_with_options(serde_saphyr::render_options! {
                        source_name: Some(name.as_str()),
                    });
                    let rendered = rendered.trim_start_matches("error: ");
                    // Our message says where already: drop the parser's "line 3 column 11: ".
                    let message = rendered
                        .split_once(": ")
                        .filter(|(at, _)| at.starts_with("line ") && at.contains(" column "))
                        .map_or(rendered, |(_, rest)| rest)
                        .to_string();
                    Error::Parse {
                        path: path.to_path_buf(),
                        line: e.location().map(|l| l.line() as usize).filter(|l| *l > 0),
                        json: false,
                        message,
                    }
                })?
                .into_iter()
                .map(|s| (s.value, s.referenced.line() as usize))
                .collect()
        };
        for (i, (doc, line)) in docs.into_iter().enumerate() {
            let line = line.max(1);
            let not_k8s = |problem: String| Error::NotKubernetes {
                path: path.to_path_buf(),
                document: i + 1,
                line,
                problem,
            };
            let unreadable = |obj: &Obj, problem: &str| Error::Unreadable {
                path: path.to_path_buf(),
                document: i + 1,
                line,
                object: obj.reference(),
                api_version: obj.api_version().to_owned(),
                problem: problem.to_owned(),
            };
            if doc.is_null() {
                continue;
            }
            let origin = Origin {
                file: path.to_path_buf(),
                line,
            };
            let map = doc.as_object();
            let has = |key: &str| map.is_some_and(|m| m.contains_key(key));
            if !has("apiVersion") || !has("kind") {
                let (missing, problem) = match (has("apiVersion"), has("kind")) {
                    _ if map.is_none() => ("not a mapping", "it is not a mapping"),
                    (false, false) => (
                        "no apiVersion and no kind",
                        "apiVersion and kind are missing",
                    ),
                    (true, _) => ("no kind", "kind is missing"),
                    (_, true) => ("no apiVersion", "apiVersion is missing"),
                };
                if !in_dir {
                    return Err(not_k8s(problem.into()));
                }
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let folder = path
                    .parent()
                    .map_or_else(|| ".".to_string(), |p| p.display().to_string());
                let what = match name {
                    "values.yaml" | "values.yml" => "a Helm values file".to_string(),
                    "Chart.yaml" | "Chart.yml" => "a Helm chart's metadata".to_string(),
                    "kustomization.yaml" | "kustomization.yml" | "Kustomization" => format!(
                        "a Kustomize file (to check what it renders: `kubectl kustomize {folder} | kubectl meshvm doctor -f -`)"
                    ),
                    _ => "not a Kubernetes manifest".to_string(),
                };
                self.notes.push(Note {
                    origin: Some(origin),
                    message: format!("document {} skipped: {missing}: {what}", i + 1),
                });
                continue;
            }
            let map = map.expect("has keys");
            let (Some(api_version), Some(kind)) = (
                map.get("apiVersion").and_then(Value::as_str),
                map.get("kind").and_then(Value::as_str),
            ) else {
                return Err(not_k8s("apiVersion and kind must be strings".into()));
            };
            if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
                let _ = api_version;
                for item in map
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if item.get("apiVersion").and_then(Value::as_str).is_none()
                        || item.get("kind").and_then(Value::as_str).is_none()
                    {
                        return Err(not_k8s("a List item lacks apiVersion or kind".into()));
                    }
                    if let Some(problem) = unnamed(item) {
                        return Err(not_k8s(format!("a List item {problem}")));
                    }
                    let mut obj = Obj::new(item.clone());
                    obj.origin = Some(Box::new(origin.clone()));
                    if let Some(problem) = obj.problem().filter(|_| self.judges(&obj)) {
                        return Err(unreadable(&obj, problem));
                    }
                    self.push(obj);
                }
                continue;
            }
            if let Some(problem) = unnamed(&doc) {
                return Err(not_k8s(problem));
            }
            let mut obj = Obj::new(doc);
            obj.origin = Some(Box::new(origin));
            if let Some(problem) = obj.problem().filter(|_| self.judges(&obj)) {
                return Err(unreadable(&obj, problem));
            }
            self.push(obj);
        }
        Ok(())
    }
    /// Parse inline manifests (for tests and fixtures): `-f` semantics, origin `inline.yaml`.
    pub fn from_yaml(text: &str) -> Result<Snapshot, Error> {
        let mut snap = Snapshot {
            source: SourceKind::Files,
            ..Snapshot::default()
        };
        snap.add_manifests(Path::new("inline.yaml"), text, false)?;
        Ok(snap)
    }

    /// Read the mesh objects of a live cluster: discovery of the version each Istio kind (and
    /// ServiceCIDR) is served at, then one concurrent, paged list per kind. Kinds the cluster does
    /// not serve are recorded in [`Snapshot::not_served`] with what discovery found; kinds it
    /// refuses (403) in [`Snapshot::refused`], so their checks skip with the reason.
    pub async fn observe(conn: &Connection) -> Result<Snapshot, Error> {
        Self::observe_in(conn, None).await
    }

    /// [`Snapshot::observe`] with the Istio namespace doctor was told (`--istio-namespace`):
    /// Secrets are read only where the checks look ([`read_secrets`]), so that namespace must
    /// be known; without it, the one the Deployments show (as [`Snapshot::istio_namespace`]).
    pub async fn observe_in(
        conn: &Connection,
        istio_namespace: Option<&str>,
    ) -> Result<Snapshot, Error> {
        let discovered: Vec<(Kind, crate::read::KindRef)> = Kind::ALL
            .into_iter()
            .filter_map(|k| k.discovered().map(|r| (k, r)))
            .collect();
        // One discovery per group (concurrently); each kind then picks from it.
        let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for (_, r) in &discovered {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    for v in r.versions {
                        if !versions.contains(v) {
                            versions.push(v);
                        }
                    }
                }
                None => groups.push((r.group, r.versions.to_vec())),
            }
        }
        let mut snap = Snapshot {
            source: SourceKind::Live,
            context: Some(conn.context.clone()),
            ..Snapshot::default()
        };
        // Round trips: core kinds need no discovery, so their lists start at once, beside it;
        // Secrets and ConfigMaps are read by name (and Secrets by type) as soon as the
        // Deployments' names say where the control plane runs and which era it is — before
        // the Deployments themselves are read in full (read_kept).
        let mut set = tokio::task::JoinSet::new();
        let (names_tx, names_rx) = tokio::sync::oneshot::channel::<Vec<(String, String)>>();
        let mut names_tx = Some(names_tx);
        let spawn =
            |set: &mut tokio::task::JoinSet<_>,
             kind: Kind,
             ar: ApiResource,
             names: Option<tokio::sync::oneshot::Sender<Vec<(String, String)>>>| {
                let conn = conn.clone();
                set.spawn(async move {
                    // Pods: metadata of all, specs of the ones the checks judge (read_pods).
                    let result = match kind {
                        Kind::Pod => read_pods(&conn, &ar).await,
                        Kind::Deployment => read_kept(&conn, kind, &ar, names).await,
                        _ => list_kind(&conn, kind, &ar).await,
                    };
                    (kind, result)
                });
            };
        for kind in Kind::ALL {
            // Secrets and ConfigMaps: by name below (read_secrets, read_config_maps).
            if let Some(ar) = kind
                .core_resource()
                .filter(|_| !matches!(kind, Kind::Secret | Kind::ConfigMap))
            {
                let names = if kind == Kind::Deployment {
                    names_tx.take()
                } else {
                    None
                };
                spawn(&mut set, kind, ar, names);
            }
        }
        drop(names_tx);
        let named = async {
            // No names (Deployments refused, or the list failed): what an empty cluster says.
            let names = names_rx.await.unwrap_or_default();
            let ns = istio_namespace.map_or_else(
                || {
                    istio_namespace_of(names.iter().map(|(ns, n)| (ns.as_str(), n.as_str())))
                        .to_owned()
                },
                str::to_owned,
            );
            let (secrets, config_maps) = futures::join!(
                read_secrets(conn, &names, &ns),
                read_config_maps(conn, &names, &ns)
            );
            Ok::<_, crate::kube::Error>((secrets?, config_maps?))
        };
        let lists = async {
            let found = futures::future::try_join_all(
                groups
                    .iter()
                    .map(|(group, versions)| crate::read::discover(conn, group, versions)),
            )
            .await?;
            let mut not_served = BTreeMap::new();
            let mut networking_version = None;
            for (kind, r) in &discovered {
                let discovery = found
                    .iter()
                    .find(|d| d.group == r.group)
                    .expect("every group was discovered");
                match discovery.pick(r) {
                    crate::read::Served::At(version) => {
                        if *kind == Kind::DestinationRule {
                            networking_version = Some(version.clone());
                        }
                        spawn(&mut set, *kind, r.resource(&version), None);
                    }
                    crate::read::Served::Not(why) => {
                        not_served.insert(*kind, why);
                    }
                }
            }
            let mut lists = BTreeMap::new();
            let mut refused = BTreeMap::new();
            while let Some(joined) = set.join_next().await {
                let (kind, result) = joined.expect("list task panicked");
                match result? {
                    Listed::Items(items) => {
                        lists.insert(kind, items);
                    }
                    Listed::NotServed(why) => {
                        not_served.insert(kind, why);
                    }
                    Listed::Refused(why) => {
                        refused.insert(kind, why);
                    }
                }
            }
            Ok::<_, crate::kube::Error>((lists, not_served, refused, networking_version))
        };
        // The server's version, read beside the rest (no round trip of its own), for `--fix`:
        // its writes then create and replace before 1.16 without first being refused server-side
        // apply (plan/write.rs).
        let version = Box::pin(async {
            crate::read::server_version_if_readable(conn).await;
            Ok(())
        });
        let ((lists, not_served, refused, networking_version), (secrets, config_maps), ()) =
            futures::try_join!(lists, named, version)?;
        snap.not_served.extend(not_served);
        snap.refused.extend(refused);
        snap.networking_version = networking_version;
        // Insert in kind order so results do not depend on which list finished first.
        for (kind, items) in lists {
            snap.known.insert(kind);
            // One allocation of the final size: pushing 20 000 pods one by one doubled the
            // vector's spare room up to a few MB.
            snap.objects
                .entry(kind)
                .or_default()
                .reserve_exact(items.len());
            for obj in items {
                snap.push(obj);
            }
        }
        secrets.apply(&mut snap);
        config_maps.apply(&mut snap);
        Ok(snap)
    }

    /// The Istio namespace: where istiod/Pilot/Citadel run, else `istio-system`.
    pub fn istio_namespace(&self) -> &str {
        istio_namespace_of(
            self.of(Kind::Deployment)
                .iter()
                .map(|d| (d.namespace(), d.name())),
        )
    }

    /// The era, from the Deployments (`None` when neither istiod nor Citadel/Pilot is seen).
    pub fn era(&self) -> Option<Era> {
        istio::era_from_deployments(self.of(Kind::Deployment).iter().map(Obj::name))
    }

    /// The Istio minor release of the control plane, from the image tag of the istiod (or 1.4
    /// istio-pilot) Deployment's `discovery` container (`docker.io/istio/pilot:1.22.0` → 22).
    pub fn istio_minor(&self) -> Option<u32> {
        self.typed::<Deployment>()
            .filter(|(d, _)| {
                matches!(d.name(), "istiod" | "istio-pilot") || d.name().starts_with("istiod-")
            })
            .flat_map(|(_, d)| {
                d.spec
                    .iter()
                    .flat_map(|s| s.template.spec.iter())
                    .flat_map(|s| &s.containers)
            })
            .filter_map(|c| c.image.as_deref())
            .find_map(istio_minor_of_image)
    }

    /// The mesh config (`mesh` key of the `istio` ConfigMap in the Istio namespace), parsed
    /// once per snapshot.
    pub fn mesh_config(&self) -> Option<&MeshConfig> {
        self.mesh
            .get_or_init(|| {
                let ns = self.istio_namespace();
                let cm = self.get(Kind::ConfigMap, ns, "istio").or_else(|| {
                    self.of(Kind::ConfigMap).iter().find(|c| {
                        c.name() == "istio"
                            || c.name().starts_with("istio-") && c.data_keys().contains("mesh")
                    })
                })?;
                let text = String::from_utf8(cm.data("mesh")?).ok()?;
                let value = serde_saphyr::from_str::<Value>(&text).ok()?;
                Some(MeshConfig::from_value(&value))
            })
            .as_ref()
    }

    /// The root namespace: meshConfig `rootNamespace`, else the Istio namespace.
    pub fn root_namespace(&self) -> String {
        self.mesh_config()
            .and_then(|m| m.root_namespace.clone())
            .unwrap_or_else(|| self.istio_namespace().to_string())
    }

    /// `enableAutoMtls` as the mesh config sets it.
    pub fn auto_mtls_configured(&self) -> Option<bool> {
        self.mesh_config()?.enable_auto_mtls
    }

    /// Auto mTLS in effect: the mesh config, else legacy → off, modern → on, unknown → off
    /// (unknown assumes the stricter setting, so a pre-flight never misses a plaintext path).
    pub fn auto_mtls(&self, override_: Option<bool>) -> bool {
        override_
            .or_else(|| self.auto_mtls_configured())
            .unwrap_or(self.era() == Some(Era::Modern))
    }
}

/// The fields of Istio's MeshConfig doctor reads (istio/api@1.4.2, @1.24.0
/// mesh/v1alpha1/config.proto: `root_namespace`, `enable_auto_mtls`,
/// `default_destination_rule_export_to`, `enable_prometheus_merge`, `mesh_networks` — the
/// last is 1.4's `meshNetworks` inside the mesh config, later a ConfigMap key of its own).
/// Each is read on its own: a field of the wrong type reads as unset, as before, and leaves
/// the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshConfig {
    /// `rootNamespace`.
    pub root_namespace: Option<String>,
    /// `enableAutoMtls`.
    pub enable_auto_mtls: Option<bool>,
    /// `defaultDestinationRuleExportTo`.
    pub default_destination_rule_export_to: Option<Vec<String>>,
    /// `enablePrometheusMerge`.
    pub enable_prometheus_merge: Option<bool>,
    /// `meshNetworks` (its `networks` map is Istio's own JSON, read by network.labels).
    pub mesh_networks: Option<Value>,
}

impl MeshConfig {
    /// The fields doctor reads from the parsed `mesh` document.
    pub fn from_value(v: &Value) -> MeshConfig {
        MeshConfig {
            root_namespace: v
                .get("rootNamespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            enable_auto_mtls: v.get("enableAutoMtls").and_then(Value::as_bool),
            default_destination_rule_export_to: v
                .get("defaultDestinationRuleExportTo")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
            enable_prometheus_merge: v.get("enablePrometheusMerge").and_then(Value::as_bool),
            mesh_networks: v.get("meshNetworks").cloned(),
        }
    }
}

/// Whether a manifest is a workload controller with a pod template.
fn is_controller(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match kind {
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" => {
            matches!(group, "apps" | "extensions")
        }
        "Job" | "CronJob" => group == "batch",
        _ => false,
    }
}

/// The Istio minor release of an image reference: `docker.io/istio/pilot:1.22.0` → 22,
/// `…:1.4.2-distroless` → 4; `None` for digests, `latest` and other tags.
pub fn istio_minor_of_image(image: &str) -> Option<u32> {
    let tag = image.rsplit_once('@').map_or(image, |(i, _)| i);
    let (_, tag) = tag
        .rsplit_once(':')
        .filter(|(name, _)| !name.ends_with('/'))?;
    if tag.contains('/') {
        return None;
    }
    let mut parts = tag.split(['.', '-']);
    (parts.next()? == "1")
        .then(|| parts.next()?.parse().ok())
        .flatten()
}

/// Citadel's `istio.<sa>` Secrets are of this type (istio/istio@1.4.2
/// security/pkg/k8s/controller/workloadsecret.go `IstioSecretType`); a Secret of another type
/// named `istio.*` is not Citadel's, and Citadel itself ignores it.
const ISTIO_SECRET_TYPE: &str = "istio.io/key-and-cert";

/// The Secrets doctor's checks read, and only those, so no other Secret (Helm releases, TLS
/// keys, tokens) is transferred and the role it needs is small (`kubectl meshvm doctor
/// --print-rbac`, crate::rbac): `cacerts` and `istio-ca-secret` by name (GET) in the Istio
/// namespace, and — on Istio 1.4 (Citadel), the only era whose CA writes them — the
/// `istio.<sa>` Secrets listed cluster-wide with `fieldSelector=type=istio.io/key-and-cert`.
/// Every release of the matrix filters Secrets on `type`: kubernetes/kubernetes
/// pkg/registry/core/secret/strategy.go `SelectableFields` has had `"type": string(obj.Type)`
/// beside the ObjectMeta fields since before 1.14 (the file at 00bdb3f, the 1.7-era
/// `genericapirequest.Context` signatures, has it; so does 84655c2, current).
///
/// A refused GET marks Secrets refused (the CA checks skip, naming the missing right); a refused
/// type list only leaves the `istio.<sa>` roots out, said in a note. `ns`: the Istio namespace
/// doctor was told, else the one the Deployments show.
/// The era the Deployments' names say (see [`Snapshot::era`]).
fn era_of(deployments: &[(String, String)]) -> Option<Era> {
    istio::era_from_deployments(deployments.iter().map(|(_, name)| name.as_str()))
}

async fn read_secrets(
    conn: &Connection,
    deployments: &[(String, String)],
    ns: &str,
) -> Result<NamedReads, crate::kube::Error> {
    let ar = Kind::Secret.core_resource().expect("Secret is a core kind");
    let mut reads = NamedReads::new(Kind::Secret, ar.clone());
    let issued = async {
        if era_of(deployments) != Some(Era::Legacy) {
            return Ok(Vec::new());
        }
        let all: Api<DynamicObject> = Api::all_with(conn.client.clone(), &ar);
        crate::read::list_all(
            conn,
            &all,
            Request::new("list", "secrets"),
            &ListParams::default().fields(&format!("type={ISTIO_SECRET_TYPE}")),
            Some,
        )
        .await
    };
    let (cacerts, self_signed, issued) = futures::join!(
        get_named(conn, &ar, ns, istio::CACERTS_SECRET),
        get_named(conn, &ar, ns, "istio-ca-secret"),
        issued
    );
    for got in [cacerts, self_signed] {
        match got {
            Ok(obj) => reads.found.extend(obj),
            Err(e) if e.code() == Some(403) => reads.refused = Some(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    match issued {
        Ok(items) => reads.found.extend(items),
        Err(e) if e.code() == Some(403) => reads.notes.push(Note {
            origin: None,
            message: format!(
                "the roots of Citadel's istio.<sa> Secrets are not compared: {e}; `kubectl meshvm doctor --print-rbac` prints the role it needs (meshvm-doctor-legacy)"
            ),
        }),
        Err(e) => return Err(e),
    }
    Ok(reads)
}

/// One object by name (GET); `None` when it does not exist.
/// A read object's fields as one JSON object, [`trim`]med, with `apiVersion` and `kind`.
fn raw_value(kind: Kind, ar: &ApiResource, item: crate::read::RawItem) -> Value {
    let mut map: Map<String, Value> = item
        .into_iter()
        .map(|(k, raw)| {
            let v = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            (k, v)
        })
        .collect();
    trim(kind, &mut map);
    map.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
    map.insert("kind".into(), Value::String(ar.kind.clone()));
    Value::Object(map)
}

/// [`get_named`], the object read as its fields' JSON text ([`crate::read::RawItem`]): no
/// typed metadata parsed only to be written out again.
async fn get_raw(
    conn: &Connection,
    ar: &ApiResource,
    ns: &str,
    name: &str,
) -> Result<Option<crate::read::RawItem>, crate::kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), ns, ar);
    let action = Request::new("get", resource_name(ar)).ns(ns).name(name);
    let got = conn
        .call(action, || {
            let request = ::kube::core::Request::new(api.resource_url())
                .get(name, &::kube::api::GetParams::default())
                .map_err(::kube::Error::BuildRequest);
            async move { conn.client.request::<crate::read::RawItem>(request?).await }
        })
        .await;
    match got {
        Ok(item) => Ok(Some(item)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn get_named(
    conn: &Connection,
    ar: &ApiResource,
    ns: &str,
    name: &str,
) -> Result<Option<DynamicObject>, crate::kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), ns, ar);
    let action = Request::new("get", resource_name(ar)).ns(ns).name(name);
    match conn.call(action, || api.get(name)).await {
        Ok(obj) => Ok(Some(obj)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every object named `name` in any namespace: a cluster-wide list with
/// `fieldSelector=metadata.name=<name>`, so only those objects are transferred. Every kind
/// selects on `metadata.name` on every release of the matrix (k8s.io/apiserver@kubernetes-1.14.0
/// and @kubernetes-1.33.0 pkg/registry/generic/matcher.go:25-35 `ObjectMetaFieldsSet`; for
/// ConfigMaps kubernetes/kubernetes pkg/registry/core/configmap/strategy.go `SelectableFields`
/// returns exactly that set, at 05373941 (1.7-era) as at fa7ba8e2 (current)). RBAC sees the
/// name too: a nameless list whose field selector requires `metadata.name=x` is authorized as
/// a request for `x` (apiserver@kubernetes-1.14.0 pkg/endpoints/request/requestinfo.go:232-238,
/// @kubernetes-1.33.0 :247-253), so `resourceNames` can limit it (crate::rbac).
async fn list_named(
    conn: &Connection,
    ar: &ApiResource,
    name: &str,
) -> Result<Vec<DynamicObject>, crate::kube::Error> {
    let all: Api<DynamicObject> = Api::all_with(conn.client.clone(), ar);
    crate::read::list_all(
        conn,
        &all,
        Request::new("list", resource_name(ar)),
        &ListParams::default().fields(&format!("metadata.name={name}")),
        Some,
    )
    .await
}

/// What the named reads of one kind found, applied to the snapshot once every read ran (the
/// reads of several kinds run concurrently over a shared snapshot).
struct NamedReads {
    kind: Kind,
    ar: ApiResource,
    found: Vec<DynamicObject>,
    /// A refusal that leaves the whole kind unread ([`Snapshot::refused`]).
    refused: Option<String>,
    /// What a refused read leaves out, when the rest was read.
    notes: Vec<Note>,
}

impl NamedReads {
    fn new(kind: Kind, ar: ApiResource) -> Self {
        Self {
            kind,
            ar,
            found: Vec::new(),
            refused: None,
            notes: Vec::new(),
        }
    }

    fn apply(mut self, snap: &mut Snapshot) {
        snap.notes.append(&mut self.notes);
        if let Some(why) = self.refused {
            snap.refused.insert(self.kind, why);
            return;
        }
        // In the order a list would answer: by namespace, then name.
        self.found.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        self.found.dedup_by(|a, b| {
            a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
        });
        snap.known.insert(self.kind);
        for item in self.found {
            if !self
                .kind
                .keeps(item.metadata.name.as_deref().unwrap_or_default())
            {
                continue;
            }
            snap.push(Obj::new(to_value(self.kind, &self.ar, &item)));
        }
    }
}

/// ConfigMaps every namespace may hold that doctor reads, listed cluster-wide by name
/// ([`list_named`]): the mesh config `istio` (Snapshot::mesh_config and the control-plane
/// check look in any namespace), `istio-ca-root-cert` (ca.root-consistent compares every
/// namespace's), and `prometheus` (mtls.metrics-scrape: the 1.4 addon's or the user's).
pub(crate) const CONFIG_MAPS_EVERYWHERE: [&str; 3] =
    ["istio", istio::ROOT_CERT_CONFIGMAP, "prometheus"];

/// The sidecar injector's ConfigMap (mtls.probes), read in the Istio namespace.
const INJECTOR_CONFIG_MAP: &str = "istio-sidecar-injector";

/// The cluster DNS configs network.global-services reads on Istio 1.4 (`global` stub domain),
/// in `kube-system`.
pub(crate) const DNS_CONFIG_MAPS: [&str; 2] = ["kube-dns", "coredns"];

/// The ConfigMaps doctor's checks read, and only those (no other ConfigMap is transferred):
/// [`CONFIG_MAPS_EVERYWHERE`] by cluster-wide name lists; in the Istio namespace by name (GET)
/// the injector's `istio-sidecar-injector` and, for each revisioned control plane
/// (`istiod-<rev>` Deployments there), `istio-<rev>` and `istio-sidecar-injector-<rev>` (the
/// names istio/istio@1.22.0 manifests/charts/istio-control/istio-discovery/templates/configmap.yaml
/// and istiod-injector-configmap.yaml give them: `istio{{- if not (eq .Values.revision "") }}-{{ .Values.revision }}{{- end }}`);
/// on Istio 1.4 `kube-dns` and `coredns` in `kube-system` by name.
///
/// A refused read leaves out only what it reads, said in a note naming the check and the
/// role; when every read is refused, ConfigMaps are [`Snapshot::refused`].
async fn read_config_maps(
    conn: &Connection,
    deployments: &[(String, String)],
    ns: &str,
) -> Result<NamedReads, crate::kube::Error> {
    let ar = Kind::ConfigMap
        .core_resource()
        .expect("ConfigMap is a core kind");
    let mut gets: Vec<(String, String)> = vec![(ns.to_owned(), INJECTOR_CONFIG_MAP.to_owned())];
    for (d_ns, name) in deployments {
        if let Some(rev) = name.strip_prefix("istiod-")
            && d_ns == ns
        {
            gets.push((ns.to_owned(), format!("istio-{rev}")));
            gets.push((ns.to_owned(), format!("{INJECTOR_CONFIG_MAP}-{rev}")));
        }
    }
    if era_of(deployments) == Some(Era::Legacy) {
        gets.extend(
            DNS_CONFIG_MAPS
                .iter()
                .map(|n| ("kube-system".to_owned(), (*n).to_owned())),
        );
    }
    let listed = futures::future::join_all(
        CONFIG_MAPS_EVERYWHERE
            .iter()
            .map(|name| list_named(conn, &ar, name)),
    );
    let got =
        futures::future::join_all(gets.iter().map(|(ns, name)| get_named(conn, &ar, ns, name)));
    let (listed, got) = futures::join!(listed, got);
    let mut reads = NamedReads::new(Kind::ConfigMap, ar.clone());
    let mut refused = Vec::new();
    let total = listed.len() + got.len();
    for (name, result) in CONFIG_MAPS_EVERYWHERE.iter().zip(listed) {
        match result {
            Ok(items) => reads.found.extend(items),
            Err(e) if e.code() == Some(403) => {
                refused.push((format!("ConfigMaps named {name}"), config_map_use(name), e));
            }
            Err(e) => return Err(e),
        }
    }
    for ((ns, name), result) in gets.iter().zip(got) {
        match result {
            Ok(obj) => reads.found.extend(obj),
            Err(e) if e.code() == Some(403) => {
                refused.push((format!("ConfigMap {ns}/{name}"), config_map_use(name), e));
            }
            Err(e) => return Err(e),
        }
    }
    if refused.len() == total {
        reads.refused = refused.first().map(|(_, _, e)| e.to_string());
        return Ok(reads);
    }
    for (what, used_by, e) in refused {
        reads.notes.push(Note {
            origin: None,
            message: format!(
                "{what} not read, so {used_by} without it: {e}; `kubectl meshvm doctor --print-rbac` prints the role doctor needs"
            ),
        });
    }
    Ok(reads)
}

/// What a ConfigMap is read for, for the note a refused read leaves.
fn config_map_use(name: &str) -> &'static str {
    match name {
        "istio" => "the mesh config (auto mTLS, root namespace, meshNetworks) is judged",
        istio::ROOT_CERT_CONFIGMAP => "ca.root-consistent and bundle.certs compare roots",
        "prometheus" => "mtls.metrics-scrape judges Prometheus",
        "kube-dns" | "coredns" => "network.global-services judges the DNS stub for global",
        n if n.starts_with(INJECTOR_CONFIG_MAP) => "mtls.probes judges probe rewriting",
        _ => "the revision's mesh config is judged",
    }
}

enum Listed {
    Items(Vec<Obj>),
    NotServed(String),
    Refused(String),
}

/// List one kind across all namespaces, page by page, keeping only what doctor reads.
async fn list_kind(
    conn: &Connection,
    kind: Kind,
    ar: &ApiResource,
) -> Result<Listed, crate::kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(conn.client.clone(), ar);
    let resource = resource_name(ar);
    let keep = |item: crate::read::RawItem| {
        let obj = Obj::from_listed(kind, ar, item);
        kind.keeps(obj.name()).then_some(obj)
    };
    let listed = crate::read::list_all_raw(
        conn,
        api.resource_url(),
        Request::new("list", resource.clone()),
        &ListParams::default(),
        keep,
    )
    .await;
    match listed {
        Ok(items) => Ok(Listed::Items(items)),
        // Discovery said it is served; a 404 now means it went away in between.
        Err(e) if e.is_not_found() => Ok(Listed::NotServed(format!(
            "{resource} answered 404 Not Found although discovery listed it"
        ))),
        Err(e) if e.code() == Some(403) => Ok(Listed::Refused(e.to_string())),
        Err(e) => Err(e),
    }
}

/// How many single-object reads (GETs) doctor keeps in flight: enough to hide the round trip,
/// few enough not to burst an API server's max-in-flight limit (400 read-only requests by
/// default) or a client-side rate limit.
const GET_CONCURRENCY: usize = 16;

/// The Pods of the cluster, reading in full only those whose spec a check judges.
///
/// The workload checks judge one pod per owner, plus bare pods (checks/workloads.rs `collect`:
/// the first pod in list order stands for its ReplicaSet, StatefulSet, …); every other reader
/// of Pods wants their metadata (labels, the `sidecar.istio.io/status` annotation, owner) and,
/// for Service endpoints, the named container ports and whether `istio-proxy` runs
/// (doctor/mesh.rs `Endpoint::of`, `has_proxy`). So: one metadata list of every Pod
/// ([`crate::read::list_metadata_or_full_into`], `meta.k8s.io/v1`), then a GET of the first pod
/// of each pod template — same namespace, owner, template revision (`pod-template-hash`,
/// `controller-revision-hash`) and sidecar status, which the controller and the injector
/// decide once for all its pods — [`GET_CONCURRENCY`] at a time; the pods of its template
/// share its (trimmed) spec ([`SharedPod`]). A pod gone by its GET (404) is left out and the
/// next of its template read instead.
///
/// Each page's metadata is cut to what differs between pods as it arrives ([`PodMetas`]), so
/// the whole metadata of every pod is never held at once.
///
/// Kubernetes 1.14 serves no v1 metadata list (406), and a GET refused (403) by a role that
/// lists Pods: then the full list, as before.
async fn read_pods(conn: &Connection, ar: &ApiResource) -> Result<Listed, crate::kube::Error> {
    let all: Api<DynamicObject> = Api::all_with(conn.client.clone(), ar);
    let metas = match crate::read::list_metadata_or_full_into(
        conn,
        all.resource_url(),
        Request::new("list", "pods"),
        &ListParams::default(),
        PodMetas::default,
        PodMetas::push,
    )
    .await
    {
        Ok(MetaOrFull::Metadata(metas)) => metas,
        // Kubernetes 1.14 answers with the full list: every pod is read already.
        Ok(MetaOrFull::Full(items)) => {
            return Ok(Listed::Items(SharedPod::share_alike(
                items
                    .into_iter()
                    .map(|item| Obj::from_listed(Kind::Pod, ar, item))
                    .collect(),
            )));
        }
        Err(e) if e.code() == Some(403) => return Ok(Listed::Refused(e.to_string())),
        Err(e) => return Err(e),
    };
    let groups = &metas.groups;
    // Per template, the spec its pods share once one of them is read: that pod's shape
    // ([`PodShape`]), or — a spec that does not read as one — its JSON, with which Obj::new sets
    // the pods aside with the problem.
    let mut specs: Vec<Option<Result<std::sync::Arc<PodShape>, Value>>> = vec![None; groups.len()];
    let mut gone = vec![false; metas.pods.len()];
    let mut next = vec![0usize; groups.len()];
    loop {
        let wanted: Vec<(usize, usize)> = groups
            .iter()
            .enumerate()
            .filter(|(g, _)| specs[*g].is_none())
            .filter_map(|(g, members)| members.get(next[g]).map(|i| (g, *i)))
            .collect();
        if wanted.is_empty() {
            break;
        }
        let mut results = futures::stream::iter(wanted.into_iter().map(|(g, i)| {
            let pod = &metas.pods[i];
            let ns = pod.common.namespace.as_deref().unwrap_or_default();
            async move { (g, i, get_raw(conn, ar, ns, &pod.name).await) }
        }))
        .buffer_unordered(GET_CONCURRENCY);
        // Each pod read is cut to its shape as it arrives: holding 2 000 whole pods until the
        // last came in was 17 MB at doctor's peak.
        while let Some((g, i, result)) = results.next().await {
            match result {
                Ok(Some(pod)) => specs[g] = Some(shared_spec(pod)),
                Ok(None) => {
                    gone[i] = true;
                    next[g] += 1;
                }
                Err(e) if e.code() == Some(403) => {
                    tracing::debug!(error = %e, "pods: GET refused; listing them in full");
                    return Ok(match list_kind(conn, Kind::Pod, ar).await? {
                        Listed::Items(pods) => Listed::Items(SharedPod::share_alike(pods)),
                        other => other,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut group_of = vec![0usize; metas.pods.len()];
    for (g, members) in groups.iter().enumerate() {
        for i in members {
            group_of[*i] = g;
        }
    }
    let (api_version, kind) = (interned(&ar.api_version), interned(&ar.kind));
    let mut items = Vec::with_capacity(metas.pods.len());
    for (i, pod) in metas.pods.into_iter().enumerate() {
        // Every pod of a template whose pods all went away is gone too.
        let (false, Some(spec)) = (gone[i], &specs[group_of[i]]) else {
            continue;
        };
        items.push(match spec {
            Ok(spec) => Obj {
                api_version: api_version.clone(),
                kind: kind.clone(),
                body: Body::SharedPod(Box::new(SharedPod {
                    name: pod.name,
                    created: pod.created,
                    common: pod.common,
                    spec: spec.clone(),
                    meta: std::sync::OnceLock::new(),
                })),
                origin: None,
            },
            Err(spec) => {
                let mut meta = (*pod.common).clone();
                meta.name = Some(pod.name);
                meta.creation_timestamp = pod.created;
                Obj::new(serde_json::json!({
                    "apiVersion": ar.api_version, "kind": ar.kind,
                    "metadata": serde_json::to_value(&meta).unwrap_or(Value::Null), "spec": spec,
                }))
            }
        });
    }
    Ok(Listed::Items(items))
}

/// The spec the pods of a template share ([`SharedPod`]), from one of them read in full; its
/// JSON when it does not read as a [`PodShape`].
fn shared_spec(mut pod: crate::read::RawItem) -> Result<std::sync::Arc<PodShape>, Value> {
    let raw = pod.remove("spec");
    let raw = raw
        .as_deref()
        .map_or("null", serde_json::value::RawValue::get);
    serde_json::from_str::<Option<PodShape>>(raw)
        .map(|s| std::sync::Arc::new(s.unwrap_or_default()))
        .map_err(|_| serde_json::from_str(raw).unwrap_or(Value::Null))
}

/// The Pods of a metadata list as [`read_pods`] keeps them while it reads one of each
/// template: per pod its name, creation time and the rest of its metadata interned by value
/// ([`SharedPod`]); and the pods of each template ([`PodMetas::template_key`]), as indices
/// in list order, groups in the order of their first pod — so the first pod of every owner
/// heads a group.
#[derive(Default)]
struct PodMetas {
    pods: Vec<PodMeta>,
    groups: Vec<Vec<usize>>,
    /// Template key → index into `groups`.
    templates: HashMap<Vec<String>, usize>,
    /// Common metadata by its JSON text.
    interned: HashMap<String, std::sync::Arc<ObjectMeta>>,
}

struct PodMeta {
    name: String,
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    common: std::sync::Arc<ObjectMeta>,
}

impl PodMetas {
    fn push(&mut self, mut meta: ObjectMeta) {
        let (name, created) = SharedPod::own_part(&mut meta);
        let i = self.pods.len();
        match Self::template_key(&meta) {
            Some(key) => {
                if let Some(g) = self.templates.get(&key) {
                    self.groups[*g].push(i);
                } else {
                    self.templates.insert(key, self.groups.len());
                    self.groups.push(vec![i]);
                }
            }
            None => self.groups.push(vec![i]),
        }
        let text = serde_json::to_string(&meta).unwrap_or_default();
        let common = self
            .interned
            .entry(text)
            .or_insert_with(|| std::sync::Arc::new(meta))
            .clone();
        self.pods.push(PodMeta {
            name,
            created,
            common,
        });
    }

    /// The pod template a pod belongs to: same namespace, first owner (as
    /// checks/workloads.rs `collect` keys owners), template revision label and sidecar status.
    /// A pod without owner is a template of its own (`None`).
    fn template_key(meta: &ObjectMeta) -> Option<Vec<String>> {
        // Set by the Deployment controller on a ReplicaSet's pods, and by the StatefulSet and
        // DaemonSet controllers (kubernetes/kubernetes pkg/apis/apps/types.go
        // `DefaultDeploymentUniqueLabelKey`, `ControllerRevisionHashLabelKey`).
        const REVISION_LABELS: [&str; 2] = ["pod-template-hash", "controller-revision-hash"];
        let owner = meta.owner_references.as_ref()?.first()?;
        let label = |k: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let injected = meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("sidecar.istio.io/status"));
        Some(vec![
            meta.namespace.clone().unwrap_or_default(),
            owner.kind.clone(),
            owner.name.clone(),
            label(REVISION_LABELS[0]),
            label(REVISION_LABELS[1]),
            injected.to_string(),
        ])
    }
}

/// The objects of a kind doctor keeps only some of by name ([`Kind::keeps`]: Deployments
/// `istio*`): a metadata list of all, then a GET of each kept one, [`GET_CONCURRENCY`] at a
/// time; a full list where metadata lists are not served (Kubernetes 1.14) or the GET is
/// refused.
///
/// `names`, when given, is sent the (namespace, name) of every kept object as soon as they are
/// known — after the metadata list, before the GETs — for the reads that wait on them.
async fn read_kept(
    conn: &Connection,
    kind: Kind,
    ar: &ApiResource,
    names: Option<tokio::sync::oneshot::Sender<Vec<(String, String)>>>,
) -> Result<Listed, crate::kube::Error> {
    let all: Api<DynamicObject> = Api::all_with(conn.client.clone(), ar);
    let action = Request::new("list", resource_name(ar));
    let full_list = |names: Option<tokio::sync::oneshot::Sender<Vec<(String, String)>>>| async move {
        let listed = list_kind(conn, kind, ar).await;
        if let (Some(tx), Ok(Listed::Items(items))) = (names, &listed) {
            let _ = tx.send(
                items
                    .iter()
                    .map(|o| (o.namespace().to_owned(), o.name().to_owned()))
                    .collect(),
            );
        }
        listed
    };
    let listed = crate::read::list_metadata_or_full(
        conn,
        all.resource_url(),
        action,
        &ListParams::default(),
    )
    .await;
    let metas = match listed {
        Ok(MetaOrFull::Metadata(metas)) => metas,
        // Kubernetes 1.14 answers with the full list: the kept objects are read already.
        Ok(MetaOrFull::Full(items)) => {
            let kept: Vec<Obj> = items
                .into_iter()
                .map(|item| Obj::from_listed(kind, ar, item))
                .filter(|o| kind.keeps(o.name()))
                .collect();
            if let Some(tx) = names {
                let _ = tx.send(
                    kept.iter()
                        .map(|o| (o.namespace().to_owned(), o.name().to_owned()))
                        .collect(),
                );
            }
            return Ok(Listed::Items(kept));
        }
        Err(e) if e.code() == Some(403) => return Ok(Listed::Refused(e.to_string())),
        Err(e) if e.is_not_found() => return full_list(names).await,
        Err(e) => return Err(e),
    };
    let kept: Vec<(String, String)> = metas
        .into_iter()
        .filter_map(|m| {
            let name = m.name.unwrap_or_default();
            kind.keeps(&name)
                .then(|| (m.namespace.unwrap_or_default(), name))
        })
        .collect();
    if let Some(tx) = names {
        let _ = tx.send(kept.clone());
    }
    let got: Vec<Result<Option<DynamicObject>, crate::kube::Error>> = futures::stream::iter(
        kept.into_iter()
            .map(|(ns, name)| async move { get_named(conn, ar, &ns, &name).await }),
    )
    .buffered(GET_CONCURRENCY)
    .collect()
    .await;
    let mut items = Vec::with_capacity(got.len());
    for result in got {
        match result {
            Ok(Some(obj)) => items.push(Obj::new(to_value(kind, ar, &obj))),
            // Deleted since the list.
            Ok(None) => {}
            Err(e) if e.code() == Some(403) => return full_list(None).await,
            Err(e) => return Err(e),
        }
    }
    Ok(Listed::Items(items))
}

/// `deployments.apps`, `pods`: the resource as RBAC and messages name it.
fn resource_name(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// A listed or fetched object as doctor holds it: `apiVersion` and `kind` set, trimmed ([`trim`]).
fn to_value(kind: Kind, ar: &ApiResource, item: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        map.insert("kind".into(), Value::String(ar.kind.clone()));
        trim(kind, map);
    }
    value
}

/// The container env doctor keeps of a Deployment: the network a gateway serves.
const KEPT_ENV: [&str; 2] = ["ISTIO_META_REQUESTED_NETWORK_VIEW", "ISTIO_META_NETWORK"];

/// Drop what doctor never reads from large kinds, to keep memory flat on big clusters.
fn trim(kind: Kind, map: &mut Map<String, Value>) {
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    match kind {
        Kind::Pod => {
            // Kept: what doctor judges workloads by (sidecar, probes, ports, host network).
            // Not init containers: no check reads them, and at 2 KB a typed container they
            // were a fifth of the memory the pods of 2 000 templates took.
            let keep = |c: &Value| -> Value {
                let mut out = Map::new();
                for key in [
                    "name",
                    "image",
                    "ports",
                    "readinessProbe",
                    "livenessProbe",
                    "startupProbe",
                ] {
                    if let Some(v) = c.get(key) {
                        out.insert(key.into(), v.clone());
                    }
                }
                Value::Object(out)
            };
            let spec = map.get("spec");
            let list = |key: &str| -> Value {
                spec.and_then(|s| s.get(key))
                    .and_then(Value::as_array)
                    .map_or_else(
                        || Value::Array(Vec::new()),
                        |cs| Value::Array(cs.iter().map(keep).collect()),
                    )
            };
            let mut trimmed = serde_json::json!({"containers": list("containers")});
            if let Some(h) = spec.and_then(|s| s.get("hostNetwork")) {
                trimmed["hostNetwork"] = h.clone();
            }
            map.insert("spec".into(), trimmed);
            map.remove("status");
        }
        Kind::Deployment => {
            // Kept: the pod template's labels (a Gateway selects its proxies by their pods'
            // labels) and container images (the istiod image tag names the Istio release).
            let labels = map
                .get("spec")
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            // And the plain-value network env of a gateway (network.global-services), never
            // other env: it may hold anything.
            let images: Vec<Value> = map
                .get("spec")
                .and_then(|s| s.pointer("/template/spec/containers"))
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            let env: Vec<Value> = c
                                .get("env")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter(|e| {
                                    e.get("name")
                                        .and_then(Value::as_str)
                                        .is_some_and(|n| KEPT_ENV.contains(&n))
                                })
                                .map(|e| serde_json::json!({"name": e.get("name"), "value": e.get("value")}))
                                .collect();
                            let mut out = serde_json::json!({"name": c.get("name"), "image": c.get("image")});
                            if !env.is_empty() {
                                out["env"] = Value::Array(env);
                            }
                            out
                        })
                        .collect()
                })
                .unwrap_or_default();
            map.remove("status");
            map.insert(
                "spec".into(),
                serde_json::json!({"template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": images},
                }}),
            );
        }
        _ => {}
    }
}

/// A kind doctor judges with neither `metadata.name` nor `metadata.generateName`: what is
/// wrong, else `None` (objects of other kinds are not read, so not judged).
fn unnamed(doc: &Value) -> Option<String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Kind::from_manifest(api_version, kind)?;
    let meta = doc.get("metadata");
    let named = ["name", "generateName"].iter().any(|k| {
        meta.and_then(|m| m.get(*k))
            .is_some_and(|n| !n.is_null() && n.as_str() != Some(""))
    });
    (!named).then(|| format!("{kind} has no metadata.name"))
}

fn is_manifest_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// The manifest files of `dir` into `out` (lexical order), and with `recursive` those below,
/// except a Helm chart's `templates/` (Go templates, not manifests: one [`Note`]). Returns how
/// many subdirectories holding manifest files were not read (without `recursive`).
fn collect_manifests(
    dir: &Path,
    recursive: bool,
    out: &mut Vec<PathBuf>,
    notes: &mut Vec<Note>,
) -> Result<usize, Error> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(std::fs::DirEntry::path);
    let is_chart = entries
        .iter()
        .any(|e| matches!(e.file_name().to_str(), Some("Chart.yaml" | "Chart.yml")));
    let mut below = 0;
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            if is_chart && entry.file_name() == "templates" {
                notes.push(Note {
                    origin: Some(Origin {
                        file: path.clone(),
                        line: 0,
                    }),
                    message: format!(
                        "not read: a Helm chart's templates are not manifests; to check what they render: `helm template {} | kubectl meshvm doctor -f -`",
                        dir.display()
                    ),
                });
            } else if recursive {
                collect_manifests(&path, true, out, notes)?;
            } else {
                let mut nested = Vec::new();
                collect_manifests(&path, true, &mut nested, &mut Vec::new())?;
                if !nested.is_empty() {
                    below += 1;
                }
            }
        } else if is_manifest_file(&path) {
            out.push(path);
        }
    }
    Ok(below)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_keeps_lines_and_lists() {
        let snap = Snapshot::from_yaml(
            "# leading comment\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s, namespace: a}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        )
        .unwrap();
        let ns = &snap.of(Kind::Namespace)[0];
        assert_eq!(ns.name(), "a");
        assert_eq!(ns.origin.as_ref().unwrap().line, 2);
        let svc = &snap.of(Kind::Service)[0];
        assert_eq!(svc.reference(), "Service a/s");
        assert_eq!(svc.origin.as_ref().unwrap().line, 8);
        assert!(snap.knows(Kind::Service));
        assert!(!snap.knows(Kind::Pod));
    }

    #[test]
    fn non_kubernetes_yaml_names_file_and_document() {
        let err = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nenableAutoMtls: true\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("inline.yaml: document 2 (line 5)"), "{text}");
        let err = Snapshot::from_yaml("- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("not a mapping"), "{err}");
        let err = Snapshot::from_yaml("a: [\n").unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{err}");
    }

    #[test]
    fn secrets_are_filtered_and_decoded() {
        let snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system}\ndata: {root-cert.pem: aGVsbG8=}\nstringData: {ca-key.pem: k}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: db-password, namespace: app}\ndata: {p: eA==}\n",
        )
        .unwrap();
        assert_eq!(snap.of(Kind::Secret).len(), 1);
        let s = &snap.of(Kind::Secret)[0];
        assert_eq!(s.data("root-cert.pem").unwrap(), b"hello");
        assert_eq!(s.data("ca-key.pem").unwrap(), b"k");
        assert_eq!(s.data_keys().len(), 2);
        assert!(!format!("{s:?}").contains("aGVs"));
    }

    #[test]
    fn dns_config_maps_service_entries_and_envoy_filters_are_kept() {
        let snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-dns, namespace: kube-system}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns, namespace: kube-system}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config, namespace: app}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: a-b-global, namespace: vm}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f, namespace: istio-system}\n",
        )
        .unwrap();
        let names: Vec<&str> = snap.of(Kind::ConfigMap).iter().map(Obj::name).collect();
        assert_eq!(names, ["kube-dns", "coredns"]);
        assert_eq!(snap.of(Kind::ServiceEntry).len(), 1);
        assert_eq!(snap.of(Kind::EnvoyFilter).len(), 1);
    }

    #[test]
    fn a_listed_deployment_keeps_only_its_network_env() {
        let mut map = serde_json::json!({
            "metadata": {"name": "istio-eastwestgateway", "managedFields": []},
            "spec": {"template": {"metadata": {"labels": {"istio": "eastwestgateway"}}, "spec": {"containers": [{
                "name": "istio-proxy", "image": "proxyv2:1.22.0",
                "env": [
                    {"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": "network1"},
                    {"name": "DB_PASSWORD", "value": "hunter2"},
                    {"name": "ISTIO_META_NETWORK", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}
                ]
            }]}}}
        });
        trim(Kind::Deployment, map.as_object_mut().unwrap());
        let env = &map["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &serde_json::json!([
                {"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": "network1"},
                {"name": "ISTIO_META_NETWORK", "value": null}
            ])
        );
        assert!(!map.to_string().contains("hunter2"));
    }

    #[test]
    fn pods_group_by_owner_revision_and_sidecar_in_list_order() {
        let meta = |name: &str,
                    owner: Option<(&str, &str)>,
                    labels: &[(&str, &str)],
                    injected: bool| {
            serde_json::from_value::<ObjectMeta>(serde_json::json!({
                "name": name, "namespace": "shop",
                "labels": labels.iter().map(|(k, v)| ((*k).to_string(), Value::String((*v).into()))).collect::<Map<_, _>>(),
                "annotations": if injected { serde_json::json!({"sidecar.istio.io/status": "{}"}) } else { serde_json::json!({}) },
                "ownerReferences": owner.map(|(kind, n)| serde_json::json!([{"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": "u"}])),
            }))
            .unwrap()
        };
        let metas = [
            meta(
                "a-1",
                Some(("ReplicaSet", "a-1f")),
                &[("pod-template-hash", "1f")],
                true,
            ),
            meta(
                "a-2",
                Some(("ReplicaSet", "a-1f")),
                &[("pod-template-hash", "1f")],
                false,
            ),
            meta(
                "a-3",
                Some(("ReplicaSet", "a-1f")),
                &[("pod-template-hash", "1f")],
                true,
            ),
            meta("bare", None, &[], true),
            meta("bare-2", None, &[], true),
            meta(
                "db-0",
                Some(("StatefulSet", "db")),
                &[("controller-revision-hash", "db-x")],
                true,
            ),
            meta(
                "db-1",
                Some(("StatefulSet", "db")),
                &[("controller-revision-hash", "db-y")],
                true,
            ),
            meta(
                "db-2",
                Some(("StatefulSet", "db")),
                &[("controller-revision-hash", "db-x")],
                true,
            ),
            // Same name, another kind of owner: another template.
            meta(
                "x",
                Some(("DaemonSet", "a-1f")),
                &[("pod-template-hash", "1f")],
                true,
            ),
        ];
        let mut pods = PodMetas::default();
        for m in metas {
            pods.push(m);
        }
        assert_eq!(
            pods.groups,
            [
                vec![0, 2],
                vec![1],
                vec![3],
                vec![4],
                vec![5, 7],
                vec![6],
                vec![8]
            ]
        );
        // Pods keep their names; what they have in common is held once.
        let names: Vec<&str> = pods.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a-1", "a-2", "a-3", "bare", "bare-2", "db-0", "db-1", "db-2", "x"
            ]
        );
        let common = |i: usize| &pods.pods[i].common;
        assert!(std::sync::Arc::ptr_eq(common(0), common(2)));
        assert!(std::sync::Arc::ptr_eq(common(3), common(4)));
        assert!(!std::sync::Arc::ptr_eq(common(0), common(1)));
        assert!(!std::sync::Arc::ptr_eq(common(5), common(6)));
        assert_eq!(common(0).name, None);
        assert_eq!(pods.interned.len(), 6);
    }

    #[test]
    fn era_and_auto_mtls() {
        let legacy = Snapshot::from_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istio-citadel, namespace: istio-system}\n").unwrap();
        assert_eq!(legacy.era(), Some(Era::Legacy));
        let old_api = Snapshot::from_yaml(
            "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: istio-pilot, namespace: istio-system}\n",
        )
        .unwrap();
        assert_eq!(old_api.era(), Some(Era::Legacy));
        assert!(!legacy.auto_mtls(None));
        assert!(legacy.auto_mtls(Some(true)));
        let modern = Snapshot::from_yaml(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    enableAutoMtls: false\n    rootNamespace: mesh-root\n",
        )
        .unwrap();
        assert_eq!(modern.era(), Some(Era::Modern));
        assert!(!modern.auto_mtls(None));
        assert_eq!(modern.root_namespace(), "mesh-root");
        assert_eq!(Snapshot::default().era(), None);
        assert!(!Snapshot::default().auto_mtls(None));
    }

    #[test]
    fn a_core_manifest_that_does_not_read_as_its_kind_is_an_error_naming_file_document_and_field() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n---\n";
        let err = Snapshot::from_yaml(&format!(
            "{ns}apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: app}}\nspec: {{ports: \"80\"}}\n"
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::Unreadable {
                    document: 2,
                    line: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            text.starts_with("inline.yaml: document 2 (line 5): Service app/web is not a valid v1 object: spec.ports: invalid type: string \"80\""),
            "{text}"
        );
        assert!(
            crate::errors::Diagnose::hint(&err)
                .unwrap()
                .contains("kubectl apply --dry-run=server -f inline.yaml")
        );
        // The path goes down to the field, through lists.
        let err = Snapshot::from_yaml(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: app}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: a, image: x}\n      - {name: b, ports: [{containerPort: http}]}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "Deployment app/d is not a valid apps/v1 object: spec.template.spec.containers[1].ports[0].containerPort: invalid type: string \"http\""
            ),
            "{err}"
        );
        // A List item too, and labels that are not strings.
        let err = Snapshot::from_yaml(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: a, labels: {version: 1}}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("Pod a/p is not a valid v1 object: metadata.labels.version"),
            "{err}"
        );
        // In a -f DIR alike: a manifest of a kind doctor judges is no document to skip.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, targetPort: [1]}]}\n").unwrap();
        let err = Snapshot::from_inputs(&[dir.path().to_path_buf()], false, &mut std::io::empty())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: document 1 (line 1): Service web is not a valid v1 object: spec.ports[0].targetPort: invalid type: sequence, expected IntOrString",
                dir.path().join("svc.yaml").display()
            )
        );
    }

    #[test]
    fn a_live_object_that_does_not_read_as_its_kind_is_set_aside_with_a_note() {
        let mut snap = Snapshot {
            source: SourceKind::Live,
            ..Snapshot::default()
        };
        snap.push(Obj::new(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "app"},
            "spec": {"ports": [{"port": "eighty"}]},
        })));
        snap.push(Obj::new(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "app"},
            "spec": {"ports": [{"port": 80}]},
        })));
        assert!(snap.knows(Kind::Service));
        let names: Vec<&str> = snap.typed::<Service>().map(|(o, _)| o.name()).collect();
        assert_eq!(names, ["api"]);
        assert_eq!(snap.notes.len(), 1);
        assert_eq!(
            snap.notes[0].to_string(),
            "Service app/web skipped: it does not read as a v1 Service: spec.ports[0].port: invalid type: string \"eighty\", expected i32"
        );
    }

    #[test]
    fn core_kinds_are_typed_istio_kinds_dynamic() {
        let snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app, labels: {app: web}}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds, namespace: app}\nspec: {template: {metadata: {labels: {app: ds}}, spec: {containers: [{name: c, image: busybox}]}}}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj, namespace: app}\nspec: {schedule: '* * * * *', jobTemplate: {spec: {template: {metadata: {labels: {app: cj}}, spec: {containers: [{name: c}]}}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: n, namespace: app, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {host: web}\n",
        )
        .unwrap();
        let (svc, typed) = snap.get_typed::<Service>("app", "web").unwrap();
        assert_eq!(svc.label("app"), Some("web"));
        let spec = typed.spec.as_ref().unwrap();
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 80);
        assert!(svc.typed::<Pod>().is_none() && svc.dynamic().is_none());
        let templates: Vec<_> = snap
            .controllers
            .iter()
            .map(|c| (c.reference(), c.template_labels()))
            .collect();
        assert_eq!(
            templates,
            [
                (
                    "DaemonSet app/ds".to_string(),
                    BTreeMap::from([("app", "ds")])
                ),
                (
                    "CronJob app/cj".to_string(),
                    BTreeMap::from([("app", "cj")])
                ),
            ]
        );
        // A controller without a pod template (a patch) is no workload.
        let patch = Snapshot::from_yaml(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: app}\nspec: {replicas: 3}\n",
        )
        .unwrap();
        assert!(patch.controllers[0].pod_template().is_none());
        assert!(crate::doctor::checks::workloads::collect(&patch).is_empty());
        // Istio kinds: typed metadata (a YAML 1.1 `n` would read as false: the name is left
        // out, the rest is kept), the rest JSON.
        let dr = &snap.of(Kind::DestinationRule)[0];
        assert!(dr.dynamic().is_some());
        assert_eq!((dr.name(), dr.namespace()), ("", "app"));
        assert_eq!(dr.created().unwrap().to_string(), "2024-01-01T00:00:00Z");
        assert_eq!(dr.str_at(&["spec", "host"]), Some("web"));
        assert_eq!(
            dr.to_value(),
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"namespace": "app", "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"host": "web"},
            })
        );
    }

    #[test]
    fn secret_data_reads_as_the_api_server_decodes_it() {
        let snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system}\ndata:\n  root-cert.pem: |\n    aGVs\n    bG8=\n",
        )
        .unwrap();
        assert_eq!(
            snap.of(Kind::Secret)[0].data("root-cert.pem").unwrap(),
            b"hello"
        );
        let err = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system}\ndata: {root-cert.pem: '!!notbase64'}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("Secret istio-system/cacerts is not a valid v1 object: data.root-cert.pem: not of the type the field takes (the value is not shown)"), "{err}");
        // A Secret doctor does not keep is not judged, so not read either.
        let snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: app}\ndata: {password: '!!'}\n",
        )
        .unwrap();
        assert!(
            snap.knows(Kind::Secret) && snap.of(Kind::Secret).is_empty() && snap.notes.is_empty()
        );
        // The message names the field, never the value.
        let err = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system}\nstringData: 'ca-key.pem: PRIVATE'\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("stringData: not of the type the field takes (the value is not shown)"),
            "{err}"
        );
        assert!(!format!("{err} {err:?}").contains("PRIVATE"), "{err:?}");
    }

    #[test]
    fn the_mesh_config_is_parsed_once_and_again_after_a_push() {
        let mut snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    rootNamespace: root\n    enableAutoMtls: yes-please\n    defaultDestinationRuleExportTo: ['.']\n",
        )
        .unwrap();
        let first = snap.mesh_config().unwrap();
        assert!(
            std::ptr::eq(first, snap.mesh_config().unwrap()),
            "parsed once"
        );
        assert_eq!(
            *first,
            MeshConfig {
                root_namespace: Some("root".into()),
                // A field of the wrong type reads as unset; the others still count.
                enable_auto_mtls: None,
                default_destination_rule_export_to: Some(vec![".".into()]),
                ..MeshConfig::default()
            }
        );
        snap.push(Obj::new(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istiod", "namespace": "mesh"},
        })));
        snap.push(Obj::new(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "mesh"},
            "data": {"mesh": "enableAutoMtls: true\n"},
        })));
        assert_eq!(snap.istio_namespace(), "mesh");
        assert_eq!(snap.auto_mtls_configured(), Some(true));
        assert_eq!(snap.root_namespace(), "mesh");
    }

    #[test]
    fn files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/a.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not yaml").unwrap();
        let root = [dir.path().to_path_buf()];
        let snap = Snapshot::from_inputs(&root, true, &mut std::io::empty()).unwrap();
        let names: Vec<_> = snap.of(Kind::Namespace).iter().map(Obj::name).collect();
        assert_eq!(
            names,
            ["b", "a"],
            "-R: lexical order, subdirectories included"
        );
        assert!(snap.notes.is_empty(), "{:?}", snap.notes);
        // Without -R, as kubectl: the directory itself only, and one note for the rest.
        let snap = Snapshot::from_files(&root).unwrap();
        let names: Vec<_> = snap.of(Kind::Namespace).iter().map(Obj::name).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(snap.notes.len(), 1);
        let note = snap.notes[0].to_string();
        assert!(
            note.starts_with(&format!("{}: 1 subdirectory", dir.path().display()))
                && note.contains("add -R"),
            "{note}"
        );
        std::fs::remove_file(dir.path().join("b.json")).unwrap();
        let err = Snapshot::from_files(&root).unwrap_err();
        assert!(matches!(err, Error::NoManifests { below: 1, .. }), "{err}");
        assert!(err.to_string().contains("without -R"), "{err}");
        let hint = crate::errors::Diagnose::hint(&err).unwrap();
        assert_eq!(
            hint,
            format!(
                "read its subdirectories too: `kubectl meshvm doctor -f {} -R`",
                dir.path().display()
            )
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Snapshot::from_files(&[empty.path().to_path_buf()]),
            Err(Error::NoManifests { below: 0, .. })
        ));
    }

    #[test]
    fn a_directory_skips_documents_without_apiversion_or_kind_with_one_note_each() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("values.yaml", "replicaCount: 1\nimage: {tag: x}\n");
        write("kustomization.yaml", "resources: [ns.yaml]\n");
        write(".gitlab-ci.yml", "stages: [test]\ntest: {script: [make]}\n");
        write("Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n");
        write(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- a list\n---\nkind: Namespace\nmetadata: {name: b}\n",
        );
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        write(
            "templates/dr.yaml",
            "{{- if .Values.x }}\napiVersion: {{ .Values.api }}\n{{- end }}\n",
        );
        let snap = Snapshot::from_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(snap.of(Kind::Namespace).len(), 1);
        let notes: Vec<String> = snap.notes.iter().map(ToString::to_string).collect();
        let p = |name: &str| dir.path().join(name).display().to_string();
        assert_eq!(
            notes,
            [
                // Directories are walked before files are read.
                format!(
                    "{}: not read: a Helm chart's templates are not manifests; to check what they render: `helm template {} | kubectl meshvm doctor -f -`",
                    p("templates"),
                    dir.path().display()
                ),
                format!(
                    "{}:1: document 1 skipped: no apiVersion and no kind: not a Kubernetes manifest",
                    p(".gitlab-ci.yml")
                ),
                format!(
                    "{}:1: document 1 skipped: no kind: a Helm chart's metadata",
                    p("Chart.yaml")
                ),
                format!(
                    "{}:1: document 1 skipped: no apiVersion and no kind: a Kustomize file (to check what it renders: `kubectl kustomize {} | kubectl meshvm doctor -f -`)",
                    p("kustomization.yaml"),
                    dir.path().display()
                ),
                format!(
                    "{}:5: document 2 skipped: not a mapping: not a Kubernetes manifest",
                    p("ns.yaml")
                ),
                format!(
                    "{}:7: document 3 skipped: no apiVersion: not a Kubernetes manifest",
                    p("ns.yaml")
                ),
                format!(
                    "{}:1: document 1 skipped: no apiVersion and no kind: a Helm values file",
                    p("values.yaml")
                ),
            ],
        );
        // The same files named one by one are refused, as before: the user pointed at them.
        let err = Snapshot::from_files(&[dir.path().join("values.yaml")]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("values.yaml: document 1 (line 1) is not a Kubernetes object: apiVersion and kind are missing"),
            "{err}"
        );
        // A document with apiVersion and kind that is not a valid object still fails.
        write(
            "bad.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {namespace: a}\nspec: {host: x}\n",
        );
        let err = Snapshot::from_files(&[dir.path().to_path_buf()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: document 1 (line 1) is not a Kubernetes object: DestinationRule has no metadata.name",
                p("bad.yaml")
            )
        );
        write("bad.yaml", "apiVersion: v1\nkind: [Service]\n");
        let err = Snapshot::from_files(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("apiVersion and kind must be strings"),
            "{err}"
        );
    }

    #[test]
    fn stdin_is_named_stdin() {
        let mut stdin = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n".as_bytes();
        let snap = Snapshot::from_inputs(&["-".into()], false, &mut stdin).unwrap();
        let origin = snap.of(Kind::Service)[0].origin.clone().unwrap();
        assert_eq!((origin.file.to_str().unwrap(), origin.line), ("STDIN", 5));
        let err =
            Snapshot::from_inputs(&["-".into()], false, &mut "a: b\n".as_bytes()).unwrap_err();
        assert!(
            err.to_string().starts_with("STDIN: document 1 (line 1)"),
            "{err}"
        );
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, "apiVersion: v1\nkind: Service\nmetadata: [\n").unwrap();
        let err = Snapshot::from_files(std::slice::from_ref(&path)).unwrap_err();
        let text = err.to_string();
        let file = path.display().to_string();
        assert!(
            text.starts_with(&format!("{file}:3: not valid YAML: ")),
            "{text}"
        );
        assert!(text.contains(&format!("--> {file}:3:11")), "{text}");
        assert!(!text.contains("<input>"), "{text}");
        let json = dir.path().join("x.json");
        std::fs::write(&json, "{\n  \"a\": \n").unwrap();
        let text = Snapshot::from_files(std::slice::from_ref(&json))
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with(&format!("{}:3: not valid JSON: ", json.display())),
            "{text}"
        );
    }

    fn tar_gz(entries: &[(&str, &[u8], u32, tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (name, data, mode, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            // set_path refuses `..`; write the raw name so the reader's guard is what is tested.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            if kind.is_symlink() {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn bundle_from_tar_gz_keeps_modes_and_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tar.gz");
        std::fs::write(
            &good,
            tar_gz(&[
                (
                    "cluster.env",
                    b"ISTIO_NAMESPACE=vm\n",
                    0o644,
                    tar::EntryType::Regular,
                ),
                ("key.pem", b"k", 0o600, tar::EntryType::Regular),
            ]),
        )
        .unwrap();
        let b = VmBundle::read(&good).unwrap();
        assert_eq!(b.file("key.pem").unwrap().mode, 0o600);
        assert_eq!(b.era(), Some(Era::Legacy));
        assert_eq!(b.cluster_env().unwrap()["ISTIO_NAMESPACE"], "vm");
        assert!(!format!("{b:?}").contains("ISTIO_NAMESPACE=vm"));
        for (name, kind) in [
            ("../evil", tar::EntryType::Regular),
            ("/etc/evil", tar::EntryType::Regular),
            ("link", tar::EntryType::Symlink),
        ] {
            let p = dir.path().join("bad.tar.gz");
            std::fs::write(&p, tar_gz(&[(name, b"x", 0o644, kind)])).unwrap();
            let err = VmBundle::read(&p).unwrap_err().to_string();
            assert!(
                err.contains(name.trim_start_matches('/')) || err.contains("link"),
                "{name}: {err}"
            );
        }
    }

    /// The archive layout `bundle` writes (one top folder, with its own entry), the loose
    /// layout of earlier releases, and a directory holding the unpacked folder read alike.
    #[test]
    fn bundle_top_folder_and_loose_layouts_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let foldered = dir.path().join("foldered.tar.gz");
        std::fs::write(
            &foldered,
            tar_gz(&[
                ("expandvm/", b"", 0o700, tar::EntryType::Directory),
                (
                    "expandvm/cluster.env",
                    b"ISTIO_NAMESPACE=vm\n",
                    0o644,
                    tar::EntryType::Regular,
                ),
                ("expandvm/key.pem", b"k", 0o600, tar::EntryType::Regular),
            ]),
        )
        .unwrap();
        let loose = dir.path().join("loose.tar.gz");
        std::fs::write(
            &loose,
            tar_gz(&[
                (
                    "cluster.env",
                    b"ISTIO_NAMESPACE=vm\n",
                    0o644,
                    tar::EntryType::Regular,
                ),
                ("key.pem", b"k", 0o600, tar::EntryType::Regular),
            ]),
        )
        .unwrap();
        let a = VmBundle::read(&foldered).unwrap();
        let b = VmBundle::read(&loose).unwrap();
        assert_eq!(a.files, b.files);
        assert_eq!(
            a.files.keys().collect::<Vec<_>>(),
            ["cluster.env", "key.pem"]
        );
        assert_eq!(a.era(), Some(Era::Legacy));
        // Two top folders are not one bundle's folder: the paths stay as they are.
        let two = dir.path().join("two.tar.gz");
        std::fs::write(
            &two,
            tar_gz(&[
                ("a/key.pem", b"k", 0o600, tar::EntryType::Regular),
                ("b/key.pem", b"k", 0o600, tar::EntryType::Regular),
            ]),
        )
        .unwrap();
        assert!(VmBundle::read(&two).unwrap().file("a/key.pem").is_some());
        // The unpacked folder's parent reads as the folder.
        let parent = dir.path().join("unpacked");
        std::fs::create_dir_all(parent.join("expandvm")).unwrap();
        std::fs::write(parent.join("expandvm/istio-token"), "t").unwrap();
        let c = VmBundle::read(&parent).unwrap();
        assert!(c.file("istio-token").is_some(), "{:?}", c.files.keys());
    }

    #[test]
    fn bundle_from_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("istio-token"), "t").unwrap();
        let b = VmBundle::read(dir.path()).unwrap();
        assert_eq!(b.era(), Some(Era::Modern));
        assert!(b.file("istio-token").unwrap().mode & 0o400 != 0);
    }

    #[test]
    fn env_parsing() {
        let env = parse_env("# c\nA='x y'\nexport B=\"z\"\nbroken\n");
        assert_eq!(env[0], ("A".into(), "x y".into(), 2));
        assert_eq!(env[1], ("B".into(), "z".into(), 3));
        assert_eq!(env[2].0, "");
    }

    #[test]
    fn env_values_unquote_as_sh_reads_them() {
        // What bundle's shell_quote writes for a value with a quote, a newline-spanning value,
        // double quotes with escapes, bare escapes, and a trailing comment.
        let text =
            "A='it'\"'\"'s'\nB='line1\nline2'\nC=\"say \\\"hi\\\" \\$HOME\"\nD=a\\ b # note\nE=\n";
        let env = parse_env(text);
        let got: Vec<(&str, &str, usize)> = env
            .iter()
            .map(|(k, v, l)| (k.as_str(), v.as_str(), *l))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "it's", 1),
                ("B", "line1\nline2", 2),
                ("C", "say \"hi\" $HOME", 4),
                ("D", "a b", 5),
                ("E", "", 6),
            ]
        );
    }
}
