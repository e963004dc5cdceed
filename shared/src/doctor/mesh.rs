//! The mesh as Istio sees it: DestinationRule resolution, in-mesh destinations, peer authentication.
//!
//! Resolution follows Pilot, release by release ([`Release`]): a client namespace's own rules
//! first (a proxy in the root namespace instead looks at the root namespace's private rules —
//! modern — or skips this step — 1.4), then the rules the Service's namespace exports, then the
//! rules the root namespace exports. Within one pool the most specific host wins (exact, then
//! the longest wildcard suffix, then `*`); rules for the same host are merged oldest first
//! (creationTimestamp, then `name.namespace`): subsets added, the first top-level
//! `trafficPolicy` kept. Lookups use hash indexes by host, so a host costs O(labels), not
//! O(rules).
//!
//! Sources (istio/istio; behaviour modelled, no code copied):
//! - 1.4: `pilot/pkg/model/push_context.go@1.4.2:608-676` (lookup order; root-namespace proxies
//!   skip their own namespace, :633), `:1271-1353` (pools; only `exportTo[0]` counts, anything
//!   but `.` is public, :1313; empty uses `defaultDestinationRuleExportTo`, :1111-1118),
//!   `destination_rule.go@1.4.2:33-62` (merge), `config.go@1.4.2:369-382` (age order).
//! - 1.8/1.12/1.13: `push_context.go@1.8.0:734-820` (root-namespace proxies read the root's
//!   private rules first, :757-773; exported rules: most specific host, then its exportTo, :812),
//!   `:1394-1450` (local pool: unset, `*`, `.` or own namespace, :1411; private-only: `["."]`
//!   or unset with a `.` default, :1428-1430); same at `@1.12.0:931-1040,1601-1660` and
//!   `@1.13.0:943-1050,1634-1690`; merge `destination_rule.go@1.8.0:35-84`.
//! - 1.14+: `workloadSelector` rules are private (`push_context.go@1.14.0:1685`), `[own ns]`
//!   is private-only (`:1709`), and a client takes a selector rule of its own namespace that
//!   selects it, else the host's catch-all rule (`sidecar.go@1.14.0:564`,
//!   `sidecar.go@1.22.0:668-690`); 1.22 sorts selector rules first
//!   (`push_context.go@1.22.0:1954-1975,1984`), merge `destination_rule.go@1.22.0:40-120`.
//! - 1.24 (current): same-host rules with different `exportTo` stay separate
//!   (`destination_rule.go@1.24.0:57-66`, `features/experimental.go@1.24.0:204` default on) and
//!   every entry's own `exportTo` is checked (`push_context.go@1.24.0:1251-1268`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::istio::Era;
use crate::snapshot::{Kind, Obj, Snapshot, borrowed, string_map};

pub(crate) mod specs;
pub use specs::{
    ClientTls, DestinationRuleSpec, PeerAuthenticationSpec, PeerMtls, PolicySpec,
    PortTrafficPolicy, Subset, TrafficPolicy,
};

/// The cluster's DNS domain: Istio's default `domainSuffix`.
pub const DOMAIN: &str = "cluster.local";
/// The container Istio's injector adds.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// Namespaces Istio's own analyzers leave out: system namespaces' traffic is not governed by mesh policy.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// A DestinationRule's TLS mode (`ClientTLSSettings.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// TLS without client certificate.
    Simple,
    /// TLS with user-supplied client certificates.
    Mutual,
    /// Istio's mTLS.
    IstioMutual,
}

impl TlsMode {
    /// A `tls` block's mode: a block without `mode` is DISABLE (the proto's zero value).
    pub fn from_tls(tls: &ClientTls) -> TlsMode {
        match tls.mode.as_deref().unwrap_or("DISABLE") {
            "SIMPLE" => TlsMode::Simple,
            "MUTUAL" => TlsMode::Mutual,
            "ISTIO_MUTUAL" => TlsMode::IstioMutual,
            _ => TlsMode::Disable,
        }
    }
    /// The spelling in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "DISABLE",
            TlsMode::Simple => "SIMPLE",
            TlsMode::Mutual => "MUTUAL",
            TlsMode::IstioMutual => "ISTIO_MUTUAL",
        }
    }
}

/// Describe an effective TLS setting: `None` is "no tls block".
pub fn tls_text(tls: Option<TlsMode>) -> &'static str {
    tls.map_or("no TLS settings", TlsMode::as_str)
}

/// Where a DestinationRule is visible (`exportTo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// `*` or unset.
    All,
    /// `.`: only its own namespace.
    Private,
    /// `~`: nowhere else.
    Nowhere,
    /// Named namespaces (plus `.` resolved to its own).
    Namespaces(BTreeSet<String>),
}

impl Export {
    fn parse(spec: &DestinationRuleSpec, own: &str) -> Export {
        let Some(list) = &spec.export_to else {
            return Export::All;
        };
        let items: Vec<&str> = list.iter().map(String::as_str).collect();
        if items.is_empty() || items.contains(&"*") {
            return Export::All;
        }
        if items == ["."] {
            return Export::Private;
        }
        if items == ["~"] {
            return Export::Nowhere;
        }
        Export::Namespaces(
            items
                .iter()
                .filter(|i| **i != "~")
                .map(|i| {
                    if *i == "." {
                        own.to_string()
                    } else {
                        (*i).to_string()
                    }
                })
                .collect(),
        )
    }
    /// Whether a client namespace (`None`: any namespace without rules of its own) sees the rule.
    pub fn visible_to(&self, client: Option<&str>) -> bool {
        match (self, client) {
            (Export::All, _) => true,
            (Export::Namespaces(set), Some(c)) => set.contains(c),
            _ => false,
        }
    }
}

/// A host as Istio resolves it for a rule in namespace `ns`: dotless short names get
/// `.<ns>.svc.<domain>`; anything with a dot (and `*`) is taken as written.
pub fn resolve_host(host: &str, ns: &str) -> String {
    if host == "*" || host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.{DOMAIN}")
    }
}

/// A mesh-wide host: `*`, `*.local`, `*.cluster.local`, `*.svc.cluster.local`.
pub fn is_mesh_wide(host: &str) -> bool {
    host == "*"
        || host == "*.local"
        || host == format!("*.{DOMAIN}")
        || host == format!("*.svc.{DOMAIN}")
}

/// The namespace of a namespace-wide host `*.<ns>.svc.cluster.local`.
pub fn namespace_wide(host: &str) -> Option<&str> {
    let rest = host.strip_prefix("*.")?;
    let ns = rest.strip_suffix(&format!(".svc.{DOMAIN}"))?;
    (!ns.is_empty() && !ns.contains('.')).then_some(ns)
}

/// Whether a (possibly wildcard) rule host matches a concrete host.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// One DestinationRule, parsed.
#[derive(Debug)]
pub struct Rule<'a> {
    /// The object.
    pub obj: &'a Obj,
    /// Its namespace.
    pub ns: &'a str,
    /// `spec.host`, resolved ([`resolve_host`]).
    pub host: String,
    /// `exportTo`.
    pub export: Export,
    /// Whether it has a `workloadSelector` (then it applies only to selected clients).
    pub selective: bool,
    /// `exportTo` as written.
    pub export_raw: Vec<String>,
    /// `workloadSelector.matchLabels`.
    pub selector: Option<BTreeMap<String, String>>,
    /// The spec's fields doctor reads, typed.
    pub spec: DestinationRuleSpec,
}

impl<'a> Rule<'a> {
    fn new(obj: &'a Obj) -> Self {
        let spec = obj.spec_as::<DestinationRuleSpec>();
        let ns = obj.namespace();
        Rule {
            obj,
            ns,
            host: resolve_host(spec.host.as_deref().unwrap_or_default(), ns),
            export: Export::parse(&spec, ns),
            selective: spec.workload_selector.is_some(),
            export_raw: spec.export_to.clone().unwrap_or_default(),
            selector: spec
                .workload_selector
                .as_ref()
                .map(|w| w.match_labels.clone()),
            spec,
        }
    }

    /// `spec.trafficPolicy`.
    pub fn policy(&self) -> Option<&TrafficPolicy> {
        self.spec.traffic_policy.as_ref()
    }

    /// The top-level `trafficPolicy.tls` mode.
    pub fn top_tls(&self) -> Option<TlsMode> {
        self.policy()
            .and_then(|p| p.tls.as_ref())
            .map(TlsMode::from_tls)
    }

    /// Subset names.
    pub fn subsets(&self) -> Vec<&str> {
        self.spec
            .subsets
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect()
    }

    /// The subset named `name`.
    fn subset(&self, name: &str) -> Option<&Subset> {
        self.spec
            .subsets
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
    }

    /// The TLS a client uses to `port` (and `subset`), as Pilot builds the cluster:
    /// a matching `portLevelSettings` entry replaces the policy's whole TLS block (an entry
    /// without `tls` clears it); a subset's policy overrides what it sets and inherits the rest.
    pub fn tls_for(&self, port: Option<u32>, subset: Option<&str>) -> Option<TlsMode> {
        let mut tls = policy_tls(self.policy(), None, port);
        if let Some(sp) = subset
            .and_then(|name| self.subset(name))
            .and_then(|s| s.traffic_policy.as_ref())
        {
            tls = policy_tls(Some(sp), tls, port);
        }
        tls
    }

    /// Every TLS setting the rule states, top-level, per port and per subset. Port entries
    /// without `tls` are listed with `mode: None` (they clear the TLS for that port).
    pub fn stated_tls(&self) -> Vec<Stated> {
        let mut out = Vec::new();
        let mut from_policy = |label: String, pointer: String, p: &TrafficPolicy| {
            if let Some(t) = &p.tls {
                out.push(Stated {
                    label: label.clone(),
                    pointer: format!("{pointer}/tls"),
                    port: None,
                    mode: Some(TlsMode::from_tls(t)),
                });
            }
            for (k, e) in p.port_level_settings.iter().enumerate() {
                let n = e.port.number.unwrap_or(0) as u32;
                out.push(Stated {
                    label: format!("{label} port {n}").trim().to_string(),
                    pointer: format!("{pointer}/portLevelSettings/{k}/tls"),
                    port: Some(n),
                    mode: e.tls.as_ref().map(TlsMode::from_tls),
                });
            }
        };
        if let Some(p) = self.policy() {
            from_policy(String::new(), "/spec/trafficPolicy".into(), p);
        }
        for (j, s) in self.spec.subsets.iter().enumerate() {
            if let Some(p) = &s.traffic_policy {
                let name = s.name.as_deref().unwrap_or("?");
                from_policy(
                    format!("subset {name}"),
                    format!("/spec/subsets/{j}/trafficPolicy"),
                    p,
                );
            }
        }
        out
    }
}

/// One TLS setting a rule states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    /// `""`, `port 80`, `subset v1`, `subset v1 port 80`.
    pub label: String,
    /// JSON pointer of the `tls` block (for suggested patches).
    pub pointer: String,
    /// The port of a `portLevelSettings` entry.
    pub port: Option<u32>,
    /// The mode (`None`: a port entry without `tls`).
    pub mode: Option<TlsMode>,
}

/// Apply one `trafficPolicy` on top of `base` for `port`.
fn policy_tls(
    policy: Option<&TrafficPolicy>,
    base: Option<TlsMode>,
    port: Option<u32>,
) -> Option<TlsMode> {
    let Some(p) = policy else { return base };
    let mut tls = p.tls.as_ref().map(TlsMode::from_tls).or(base);
    if let Some(port) = port
        && let Some(entry) = port_entry(p, port)
    {
        tls = entry.tls.as_ref().map(TlsMode::from_tls);
    }
    tls
}

/// The `portLevelSettings` entry for a port number.
pub fn port_entry(policy: &TrafficPolicy, port: u32) -> Option<&PortTrafficPolicy> {
    policy
        .port_level_settings
        .iter()
        .find(|e| e.port.number == Some(u64::from(port)))
}

/// The Pilot release doctor judges as: the Istio minor (4 for the legacy era).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// `1.<minor>`.
    pub minor: u32,
    /// Where the minor comes from.
    pub from: ReleaseFrom,
}

/// How doctor knows the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseFrom {
    /// The istiod / istio-pilot image tag.
    Image,
    /// The legacy era (Citadel + Pilot Deployments): 1.4.
    LegacyEra,
    /// Unknown: the newest behaviour doctor models is assumed.
    AssumedNewest,
}

impl Release {
    /// The newest minor whose behaviour is modelled ("current" in the version matrix).
    pub const NEWEST: u32 = 24;

    /// The release of a snapshot: the image tag, else 1.4 for the legacy era, else the newest.
    pub fn of(snap: &Snapshot, era: Option<Era>) -> Release {
        match (snap.istio_minor(), era) {
            (Some(minor), _) => Release {
                minor,
                from: ReleaseFrom::Image,
            },
            (None, Some(Era::Legacy)) => Release {
                minor: 4,
                from: ReleaseFrom::LegacyEra,
            },
            _ => Release {
                minor: Self::NEWEST,
                from: ReleaseFrom::AssumedNewest,
            },
        }
    }
    /// A release by minor (tests, conformance).
    pub fn minor(minor: u32) -> Release {
        Release {
            minor,
            from: ReleaseFrom::Image,
        }
    }
    /// Istio 1.4's Pilot (no root-namespace private pool, `exportTo[0]` only).
    pub fn legacy(self) -> bool {
        self.minor < 5
    }
    /// DestinationRule `workloadSelector` is honoured (1.14+).
    pub fn selectors(self) -> bool {
        self.minor >= 14
    }
    /// Same-host rules with different `exportTo` stay separate (1.24+).
    pub fn enhanced_merge(self) -> bool {
        self.minor >= 24
    }
    /// `1.22`, plus "(assumed: …)" when unknown.
    pub fn describe(self) -> String {
        match self.from {
            ReleaseFrom::Image => format!("1.{}", self.minor),
            ReleaseFrom::LegacyEra => "1.4 (legacy era)".into(),
            ReleaseFrom::AssumedNewest => format!(
                "1.{} (assumed: no istiod image tag in the source; the newest behaviour modelled)",
                self.minor
            ),
        }
    }
}

/// Rules merged for one host in one pool, as Pilot keeps them: members oldest first.
#[derive(Debug, Clone)]
struct Entry {
    members: Vec<usize>,
    /// The `exportTo` that decides visibility (raw values).
    export: BTreeSet<String>,
    /// `workloadSelector.matchLabels` (1.14+).
    selector: Option<BTreeMap<String, String>>,
}

/// One pool of rules by host (resolved), each host's entries in merge order, plus the host's
/// `exportTo` (before 1.24, the first non-empty one of its rules).
#[derive(Debug, Default)]
struct Pool {
    hosts: HashMap<String, (Vec<Entry>, BTreeSet<String>)>,
}

impl Pool {
    /// Merge rule `i` (Pilot's mergeDestinationRule for this release).
    fn merge(&mut self, rules: &[Rule<'_>], i: usize, export: BTreeSet<String>, release: Release) {
        let rule = &rules[i];
        let selector = if release.selectors() {
            rule.selector.clone()
        } else {
            None
        };
        let Some((entries, host_export)) = self.hosts.get_mut(&rule.host) else {
            self.hosts.insert(
                rule.host.clone(),
                (
                    vec![Entry {
                        members: vec![i],
                        export: export.clone(),
                        selector,
                    }],
                    export,
                ),
            );
            return;
        };
        let mut separate = true;
        for e in entries.iter_mut() {
            if release.enhanced_merge() {
                if e.export == export {
                    separate = false;
                } else if !e.export.is_empty() && export.is_superset(&e.export) {
                    separate = true;
                } else {
                    separate = true;
                    continue;
                }
            }
            let both_without = selector.is_none() && e.selector.is_none();
            let both_with = selector.is_some() && e.selector.is_some();
            let same = selector == e.selector;
            if both_with && !same {
                if release.enhanced_merge() {
                    separate = true;
                }
                continue;
            }
            let joins = if release.enhanced_merge() {
                both_without || (both_with && same)
            } else {
                both_without || (selector.is_some() && same)
            };
            if joins {
                separate = false;
            }
            e.members.push(i);
        }
        if !release.enhanced_merge() && host_export.is_empty() && !export.is_empty() {
            host_export.clone_from(&export);
        }
        if separate {
            entries.push(Entry {
                members: vec![i],
                export,
                selector,
            });
        }
    }

    /// The most specific host's entries for a concrete host.
    /// Hosts whose rules all fail `keep` are as if absent.
    fn lookup(
        &self,
        host: &str,
        keep: &dyn Fn(usize) -> bool,
    ) -> Option<&(Vec<Entry>, BTreeSet<String>)> {
        let get = |h: &str| {
            self.hosts
                .get(h)
                .filter(|(es, _)| es.iter().any(|e| e.members.iter().any(|i| keep(*i))))
        };
        if let Some(hit) = get(host) {
            return Some(hit);
        }
        for (i, _) in host.match_indices('.') {
            if let Some(hit) = get(&format!("*{}", &host[i..])) {
                return Some(hit);
            }
        }
        get("*")
    }
}

/// Whether an exported entry (or host) is visible to a client namespace (`None`: any other).
fn export_visible(export: &BTreeSet<String>, client: Option<&str>) -> bool {
    export.is_empty() || export.contains("*") || client.is_some_and(|c| export.contains(c))
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `port`.
    pub number: u32,
    /// `name`.
    pub name: String,
    /// `protocol` (TCP when unset).
    pub protocol: String,
    /// `targetPort` (the port number when unset, as Kubernetes defaults it).
    pub target: PortRef,
}

/// A Service, as a destination.
#[derive(Debug)]
pub struct Dest<'a> {
    /// The Service.
    pub svc: &'a Obj,
    /// `name.ns.svc.cluster.local`.
    pub host: String,
    /// Its ports.
    pub ports: Vec<Port>,
    /// Why it is in the mesh, or `None`.
    pub in_mesh: Option<&'static str>,
    /// Control-plane or system namespace: mesh policy does not govern it.
    pub exempt: bool,
}

impl Dest<'_> {
    /// The Service's namespace.
    pub fn ns(&self) -> &str {
        self.svc.namespace()
    }
    /// TCP ports (UDP/SCTP never carry mTLS).
    pub fn tcp_ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.iter().filter(|p| p.protocol == "TCP")
    }
}

/// Peer authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMode {
    /// mTLS only.
    Strict,
    /// mTLS and plaintext.
    Permissive,
    /// Plaintext only.
    Disable,
}

impl PeerMode {
    /// The spelling in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerMode::Strict => "STRICT",
            PeerMode::Permissive => "PERMISSIVE",
            PeerMode::Disable => "DISABLE",
        }
    }
}

/// The peer mode in force somewhere, and the object that sets it (`None`: Istio's default).
#[derive(Debug, Clone, Copy)]
pub struct ModeAt<'a> {
    /// The mode.
    pub mode: PeerMode,
    /// The PeerAuthentication / MeshPolicy / Policy that sets it.
    pub by: Option<&'a Obj>,
}

/// A policy object at mesh or namespace scope.
#[derive(Debug, Clone, Copy)]
pub struct ScopePolicy<'a> {
    /// The object.
    pub obj: &'a Obj,
    /// Its mode (`None`: UNSET, inherits).
    pub mode: Option<PeerMode>,
}

/// A 1.4 `Policy` with targets: service-level peer authentication.
#[derive(Debug, Clone)]
pub struct TargetPolicy<'a> {
    /// The object.
    pub obj: &'a Obj,
    /// Its mode.
    pub mode: PeerMode,
    /// `(service name, ports)`; empty ports: all.
    pub targets: Vec<(String, Vec<PortRef>)>,
}

/// A workload-level PeerAuthentication: a selector, outside the root namespace.
#[derive(Debug, Clone)]
pub struct WorkloadPolicy<'a> {
    /// The object.
    pub obj: &'a Obj,
    /// `selector.matchLabels` (non-empty).
    pub selector: BTreeMap<String, String>,
    /// `mtls.mode` (`None`: UNSET, inherits).
    pub mode: Option<PeerMode>,
    /// `portLevelMtls`: workload port → mode (`None`: UNSET, inherits the workload's).
    pub ports: BTreeMap<u32, Option<PeerMode>>,
}

/// One endpoint of a Service: a Pod or a WorkloadEntry its selector selects.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    /// The Pod or WorkloadEntry.
    pub obj: &'a Obj,
    /// Its namespace.
    pub ns: String,
    /// Its labels (a WorkloadEntry's `spec.labels`).
    pub labels: BTreeMap<&'a str, &'a str>,
    /// `security.istio.io/tlsMode: istio` (what Pilot reads for auto mTLS).
    pub tls_istio: bool,
    /// Whether it runs Istio's sidecar (a Pod with `istio-proxy`; every WorkloadEntry: a VM
    /// added to the mesh runs one).
    pub sidecar: bool,
    /// A WorkloadEntry's `spec.ports` (name → port).
    we_ports: BTreeMap<&'a str, u32>,
    /// A Pod's named container ports.
    pod_ports: BTreeMap<&'a str, u32>,
}

/// The label Pilot reads for an endpoint's TLS mode (service.go@1.8.0:615-622).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

impl<'a> Endpoint<'a> {
    /// The endpoints of `dest`: Pods and WorkloadEntries of its namespace its selector selects.
    pub fn of(snap: &'a Snapshot, dest: &Dest<'_>) -> Vec<Endpoint<'a>> {
        let selector = borrowed(service_spec(dest.svc).and_then(|s| s.selector.as_ref()));
        if selector.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (pod, spec) in snap.pods_in(dest.ns()) {
            // Selector first, label by label: this runs for every Service and every Pod of
            // its namespace, and building each pod's label map here dominated doctor's time.
            if !selector.iter().all(|(k, v)| pod.label(k) == Some(*v)) {
                continue;
            }
            let labels = pod.labels();
            let pod_ports = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| Some((p.name.as_deref()?, u32::try_from(p.container_port).ok()?)))
                .collect();
            out.push(Endpoint {
                obj: pod,
                ns: pod.namespace().to_string(),
                tls_istio: labels.get(TLS_MODE_LABEL) == Some(&"istio"),
                labels,
                sidecar: has_proxy(pod),
                we_ports: BTreeMap::new(),
                pod_ports,
            });
        }
        for we in snap.of(Kind::WorkloadEntry) {
            let labels = string_map(we.at(&["spec", "labels"]));
            if we.namespace() != dest.ns() || !selects(&selector, &labels) {
                continue;
            }
            let we_ports = we
                .at(&["spec", "ports"])
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_u64()? as u32)))
                .collect();
            out.push(Endpoint {
                obj: we,
                ns: we.namespace().to_string(),
                tls_istio: labels.get(TLS_MODE_LABEL) == Some(&"istio"),
                labels,
                sidecar: true,
                we_ports,
                pod_ports: BTreeMap::new(),
            });
        }
        out
    }

    /// The port this endpoint serves Service port `port` on: a WorkloadEntry's port named like
    /// the Service port, else the `targetPort` (a name looked up in the endpoint's named ports).
    pub fn target_port(&self, port: &Port) -> Option<u32> {
        if let Some(n) = self.we_ports.get(port.name.as_str()) {
            return Some(*n);
        }
        match &port.target {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => self
                .we_ports
                .get(name.as_str())
                .or_else(|| self.pod_ports.get(name.as_str()))
                .copied(),
        }
    }
}

/// A PeerAuthentication `mtls` block's mode (`None`: UNSET or absent).
fn pa_mode(mtls: Option<&PeerMtls>) -> Option<PeerMode> {
    match mtls?.mode.as_deref() {
        Some("STRICT") => Some(PeerMode::Strict),
        Some("PERMISSIVE") => Some(PeerMode::Permissive),
        Some("DISABLE") => Some(PeerMode::Disable),
        _ => None,
    }
}

/// A port named by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// `number: 8080`
    Number(u32),
    /// `name: http`
    Name(String),
}

/// The resolved mesh of one snapshot.
#[derive(Debug)]
pub struct Mesh<'a> {
    /// Every DestinationRule, parsed, in snapshot order.
    pub rules: Vec<Rule<'a>>,
    /// The release whose Pilot is modelled.
    pub release: Release,
    /// Per namespace: the rules a proxy of that namespace reads first.
    local: HashMap<&'a str, Pool>,
    /// Per namespace: the rules it exports.
    exported: HashMap<&'a str, Pool>,
    /// The root namespace's private rules (modern: read first by root-namespace proxies).
    root_private: Pool,
    /// Every namespace some rule's `exportTo` names (merged rules share one `exportTo`).
    named_in_exports: BTreeSet<String>,
    /// Every Service as a destination.
    pub dests: Vec<Dest<'a>>,
    dest_by_host: HashMap<String, usize>,
    /// The root namespace.
    pub root_ns: String,
    /// Namespaces with in-mesh clients (injected, or with sidecar pods), sorted.
    pub client_namespaces: BTreeSet<String>,
    /// Whether the source lists Namespaces or Pods (else clients are guessed from rules).
    pub clients_known: bool,
    /// [`Mesh::clients`], computed once: checks resolve for every client many times.
    client_list: Vec<Option<String>>,
    /// The mesh-level policy object, if any.
    pub mesh_policy: Option<ScopePolicy<'a>>,
    /// Namespace-level policy objects.
    pub ns_policies: BTreeMap<&'a str, ScopePolicy<'a>>,
    /// Service-level 1.4 Policies, oldest first.
    pub target_policies: Vec<TargetPolicy<'a>>,
    /// Workload-level PeerAuthentications (a non-empty selector, outside the root namespace),
    /// oldest first.
    pub workload_policies: Vec<WorkloadPolicy<'a>>,
    /// `workload_policies` of each namespace, as indices in their order (asked for every
    /// endpoint of every Service).
    workload_policies_by_ns: HashMap<&'a str, Vec<usize>>,
    /// Whether peer authentication is PeerAuthentication (modern) rather than 1.4's
    /// MeshPolicy/Policy.
    pub peer_authentication: bool,
    /// The mode when no object sets one: PERMISSIVE with PeerAuthentication (modern), else DISABLE (1.4).
    pub default_mode: PeerMode,
}

impl<'a> Mesh<'a> {
    /// Build the model.
    pub fn new(snap: &'a Snapshot, root_ns: &str, istio_ns: &str, era: Option<Era>) -> Self {
        Self::at_release(snap, root_ns, istio_ns, era, Release::of(snap, era))
    }

    /// Build the model as one Pilot release would see it.
    pub fn at_release(
        snap: &'a Snapshot,
        root_ns: &str,
        istio_ns: &str,
        era: Option<Era>,
        release: Release,
    ) -> Self {
        let mut rules: Vec<Rule<'a>> = snap
            .of(Kind::DestinationRule)
            .iter()
            .map(Rule::new)
            .collect();
        // Before 1.14 DestinationRule has no `workloadSelector` (istio/api@1.13.0
        // customresourcedefinitions.gen.yaml lacks the field; @1.22.0 has it — both in
        // ../shared/conformance/releases), so Pilot applies such a rule to every client and
        // merges it with the host's others; every check must see it that way.
        if !release.selectors() {
            for rule in &mut rules {
                rule.selective = false;
            }
        }
        // meshConfig.defaultDestinationRuleExportTo (push_context.go@1.4.2:1111-1118,
        // @1.22.0:1796): unset means `*`.
        let default_private = snap
            .mesh_config()
            .and_then(|m| m.default_destination_rule_export_to.as_ref())
            .is_some_and(|l| l.iter().any(|e| e == "."));
        let mut order: Vec<usize> = (0..rules.len()).collect();
        // Oldest first; equal timestamps by `name.namespace` (config.go@1.4.2:369-382,
        // @1.22.0:356-368); 1.22+ puts workloadSelector rules first (push_context.go@1.22.0:1954).
        let key = |r: &Rule<'_>| {
            (
                release.minor >= 22 && r.selector.is_none(),
                r.obj.created(),
                format!("{}.{}", r.obj.name(), r.ns),
            )
        };
        // Cached: the key formats a string, once per rule rather than per comparison.
        order.sort_by_cached_key(|i| key(&rules[*i]));
        let mut local: HashMap<&'a str, Pool> = HashMap::new();
        let mut exported: HashMap<&'a str, Pool> = HashMap::new();
        let mut root_private = Pool::default();
        let mut rule_namespaces = BTreeSet::new();
        let rules_named: BTreeSet<String> = rules
            .iter()
            .flat_map(|r| r.export_raw.iter().cloned())
            .collect();
        for i in order {
            let r = &rules[i];
            rule_namespaces.insert(r.ns);
            let raw: BTreeSet<String> = if release.selectors() && r.selector.is_some() {
                // workloadSelector rules are never exported (push_context.go@1.14.0:1685).
                [".".to_string()].into()
            } else {
                r.export_raw.iter().cloned().collect()
            };
            if release.legacy() {
                // 1.4: every rule is local to its namespace; only exportTo[0] counts, and
                // anything but `.` exports it to all (push_context.go@1.4.2:1290-1330).
                local
                    .entry(r.ns)
                    .or_default()
                    .merge(&rules, i, BTreeSet::new(), release);
                let public = match r.export_raw.first() {
                    None => !default_private,
                    Some(first) => first != ".",
                };
                if public {
                    exported
                        .entry(r.ns)
                        .or_default()
                        .merge(&rules, i, BTreeSet::new(), release);
                }
                continue;
            }
            // Local pool: unset, `*`, `.` or its own namespace (push_context.go@1.8.0:1411).
            if raw.is_empty() || raw.contains("*") || raw.contains(".") || raw.contains(r.ns) {
                local
                    .entry(r.ns)
                    .or_default()
                    .merge(&rules, i, raw.clone(), release);
            }
            // Private-only: `["."]`, unset with a `.` default, and 1.14+ `[own namespace]`
            // (push_context.go@1.8.0:1425-1431, @1.14.0:1705-1710).
            let private_only = (raw.is_empty() && default_private)
                || (raw.len() == 1
                    && (raw.contains(".") || (release.minor >= 14 && raw.contains(r.ns))));
            if !private_only {
                exported
                    .entry(r.ns)
                    .or_default()
                    .merge(&rules, i, raw, release);
            } else if r.ns == root_ns {
                root_private.merge(&rules, i, raw, release);
            }
        }

        let injected: BTreeSet<&str> = snap
            .typed::<Namespace>()
            .map(|(n, _)| n)
            .filter(|n| {
                n.label("istio-injection") == Some("enabled")
                    || (n.label("istio.io/rev").is_some()
                        && n.label("istio-injection") != Some("disabled"))
            })
            .map(Obj::name)
            .collect();
        let mut pods_by_ns: HashMap<&str, Vec<(&Obj, bool)>> = HashMap::new();
        for (p, _) in snap.pods() {
            pods_by_ns
                .entry(p.namespace())
                .or_default()
                .push((p, has_proxy(p)));
        }
        let mut wes_by_ns: HashMap<&str, Vec<&Obj>> = HashMap::new();
        for we in snap.of(Kind::WorkloadEntry) {
            wes_by_ns.entry(we.namespace()).or_default().push(we);
        }
        let mut client_namespaces: BTreeSet<String> =
            injected.iter().map(|s| (*s).to_string()).collect();
        for (ns, pods) in &pods_by_ns {
            if pods.iter().any(|(_, proxy)| *proxy) {
                client_namespaces.insert((*ns).to_string());
            }
        }

        let workloads = crate::doctor::checks::workloads::collect(snap);
        let mut dests = Vec::new();
        let mut dest_by_host = HashMap::new();
        for (svc, typed) in snap.typed::<Service>() {
            let spec = typed.spec.as_ref();
            if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
                continue;
            }
            let ns = svc.namespace();
            let selector = borrowed(spec.and_then(|s| s.selector.as_ref()));
            // An injected namespace puts a Service in the mesh unless every workload it selects
            // opts out: the injector skips a pod annotated `sidecar.istio.io/inject: "false"`
            // whatever its namespace says (istio/istio@1.4.2 pkg/kube/inject/inject.go:423-430;
            // @1.22.0 the same function, label first, :196-240), and a live pod without
            // istio-proxy has none. Such a Service (a database kept out of the mesh) takes no mTLS.
            let selected: Vec<bool> = if selector.is_empty() {
                Vec::new()
            } else {
                workloads
                    .iter()
                    .filter(|w| w.ns == ns && selects(&selector, &w.labels()))
                    .map(|w| {
                        !matches!(
                            w.sidecar(snap, era),
                            crate::doctor::checks::workloads::Sidecar::No(_)
                        )
                    })
                    .collect()
            };
            let opted_out = !selected.is_empty() && selected.iter().all(|proxy| !proxy);
            let in_mesh = if injected.contains(ns) && !opted_out {
                Some("its namespace has sidecar injection on")
            } else if !selector.is_empty()
                && pods_by_ns.get(ns).is_some_and(|pods| {
                    pods.iter()
                        .any(|(p, proxy)| *proxy && selects(&selector, &p.labels()))
                })
            {
                Some("its pods run istio-proxy")
            } else if selector.is_empty()
                && svc
                    .annotation(crate::istio::SERVICE_ACCOUNTS_ANNOTATION)
                    .is_some()
            {
                Some("it is a registered VM Service")
            } else if !selector.is_empty()
                && wes_by_ns.get(ns).is_some_and(|wes| {
                    wes.iter()
                        .any(|we| selects(&selector, &string_map(we.at(&["spec", "labels"]))))
                })
            {
                Some("it selects WorkloadEntries")
            } else {
                None
            };
            let ports = spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| {
                    let number = u32::try_from(p.port).unwrap_or(0);
                    Port {
                        number,
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        target: match &p.target_port {
                            Some(IntOrString::String(name)) => name
                                .parse()
                                .map_or_else(|_| PortRef::Name(name.clone()), PortRef::Number),
                            Some(IntOrString::Int(n)) => {
                                PortRef::Number(u32::try_from(*n).unwrap_or(0))
                            }
                            None => PortRef::Number(number),
                        },
                    }
                })
                .collect();
            let host = format!("{}.{ns}.svc.{DOMAIN}", svc.name());
            dest_by_host.insert(host.clone(), dests.len());
            dests.push(Dest {
                svc,
                host,
                ports,
                in_mesh,
                exempt: ns == istio_ns || SYSTEM_NAMESPACES.contains(&ns),
            });
        }

        // Peer authentication: PeerAuthentication when the mesh has any, else 1.4 policies.
        let pas = snap.of(Kind::PeerAuthentication);
        let modern = !pas.is_empty() || era == Some(Era::Modern);
        let mut mesh_policy = None;
        let mut ns_policies = BTreeMap::new();
        let mut target_policies = Vec::new();
        let mut workload_policies = Vec::new();
        if pas.is_empty() {
            for mp in snap.of(Kind::MeshPolicy) {
                if mp.name() == "default" {
                    mesh_policy = Some(ScopePolicy {
                        obj: mp,
                        mode: Some(v1alpha1_mode(&policy_spec(mp))),
                    });
                }
            }
            for p in snap.of(Kind::Policy) {
                let spec = policy_spec(p);
                match spec.targets.as_ref().filter(|t| !t.is_empty()) {
                    None if p.name() == "default" => {
                        ns_policies.insert(
                            p.namespace(),
                            ScopePolicy {
                                obj: p,
                                mode: Some(v1alpha1_mode(&spec)),
                            },
                        );
                    }
                    None => {}
                    Some(targets) => target_policies.push(TargetPolicy {
                        obj: p,
                        mode: v1alpha1_mode(&spec),
                        targets: targets
                            .iter()
                            .map(|t| {
                                let ports = t
                                    .ports
                                    .iter()
                                    .filter_map(|p| {
                                        p.number
                                            .map(|n| PortRef::Number(n as u32))
                                            .or_else(|| p.name.clone().map(PortRef::Name))
                                    })
                                    .collect();
                                (t.name.clone().unwrap_or_default(), ports)
                            })
                            .collect(),
                    }),
                }
            }
            // Oldest first: `sortConfigByCreationTime` (push_context.go@1.4.2:945), and the
            // oldest Policy that applies to a port wins (:1245-1265).
            target_policies.sort_by(|a: &TargetPolicy<'_>, b: &TargetPolicy<'_>| {
                (a.obj.created(), a.obj.name()).cmp(&(b.obj.created(), b.obj.name()))
            });
        } else {
            // Mesh level: no selector (or empty matchLabels) in the root namespace; namespace
            // level: the same elsewhere; workload level: a selector outside the root namespace
            // (a root-namespace selector policy is ignored). In each scope the oldest wins
            // (policy_applier.go@1.8.0:401-430, @1.12.0:378-410, @1.13.0:378-410,
            // authn/policy_applier.go@1.22.0:440-470).
            let mut sorted: Vec<&Obj> = pas.iter().collect();
            sorted.sort_by(|a, b| (a.created(), a.name()).cmp(&(b.created(), b.name())));
            for pa in sorted {
                let spec = pa.spec_as::<PeerAuthenticationSpec>();
                let mode = pa_mode(spec.mtls.as_ref());
                let selector = spec.selector.map(|s| s.match_labels).unwrap_or_default();
                if !selector.is_empty() {
                    if pa.namespace() != root_ns {
                        let ports = spec
                            .port_level_mtls
                            .iter()
                            .filter_map(|(k, v)| Some((k.parse().ok()?, pa_mode(Some(v)))))
                            .collect();
                        workload_policies.push(WorkloadPolicy {
                            obj: pa,
                            selector,
                            mode,
                            ports,
                        });
                    }
                    continue;
                }
                let sp = ScopePolicy { obj: pa, mode };
                if pa.namespace() == root_ns {
                    mesh_policy.get_or_insert(sp);
                } else {
                    ns_policies.entry(pa.namespace()).or_insert(sp);
                }
            }
        }

        let clients_known = snap.knows(Kind::Namespace) || snap.knows(Kind::Pod);
        let mut client_set: BTreeSet<&str> = client_namespaces.iter().map(String::as_str).collect();
        if !clients_known {
            client_set.extend(rule_namespaces.iter().copied());
        }
        // The root namespace's gateways are clients too (and resolve differently).
        if snap.of(Kind::Service).iter().any(|s| {
            s.namespace() == root_ns && s.label("istio").is_some_and(|l| l.ends_with("gateway"))
        }) {
            client_set.insert(root_ns);
        }
        let mut client_list: Vec<Option<String>> = client_set
            .into_iter()
            .map(|c| Some(c.to_string()))
            .collect();
        client_list.push(None);
        Mesh {
            rules,
            release,
            local,
            exported,
            root_private,
            named_in_exports: rules_named,
            dests,
            dest_by_host,
            root_ns: root_ns.to_string(),
            client_namespaces,
            clients_known,
            client_list,
            mesh_policy,
            ns_policies,
            target_policies,
            workload_policies_by_ns: {
                let mut index: HashMap<&'a str, Vec<usize>> = HashMap::new();
                for (i, w) in workload_policies.iter().enumerate() {
                    index.entry(w.obj.namespace()).or_default().push(i);
                }
                index
            },
            workload_policies,
            peer_authentication: modern
                && (!pas.is_empty()
                    || (snap.of(Kind::MeshPolicy).is_empty() && snap.of(Kind::Policy).is_empty())),
            default_mode: if modern {
                PeerMode::Permissive
            } else {
                PeerMode::Disable
            },
        }
    }

    /// The destination for a concrete host.
    pub fn dest(&self, host: &str) -> Option<&Dest<'a>> {
        self.dest_by_host.get(host).map(|i| &self.dests[*i])
    }

    /// Destinations a rule host covers (all matching Services for wildcards).
    pub fn dests_matching(&self, host: &str) -> Vec<&Dest<'a>> {
        if host.starts_with('*') {
            self.dests
                .iter()
                .filter(|d| host_matches(host, &d.host))
                .collect()
        } else {
            self.dest(host).into_iter().collect()
        }
    }

    /// Pick from one pool's entries for the host, as the sidecar scope does: a selector entry of
    /// the client's namespace that selects the client's labels, else the last catch-all entry
    /// (sidecar.go@1.22.0:668-690). Members failing `keep` are dropped first.
    fn pick(
        &self,
        entries: &[Entry],
        client: Option<&str>,
        labels: Option<&BTreeMap<&str, &str>>,
        keep: &dyn Fn(usize) -> bool,
        visible: &dyn Fn(&Entry) -> bool,
    ) -> Option<Vec<usize>> {
        let mut catch_all = None;
        for e in entries {
            let members: Vec<usize> = e.members.iter().copied().filter(|i| keep(*i)).collect();
            if members.is_empty() || !visible(e) {
                continue;
            }
            match &e.selector {
                None => catch_all = Some(members),
                Some(sel) => {
                    let own = client.is_some_and(|c| self.rules[e.members[0]].ns == c);
                    if own
                        && labels.is_some_and(|l| {
                            sel.iter()
                                .all(|(k, v)| l.get(k.as_str()) == Some(&v.as_str()))
                        })
                    {
                        return Some(self.policy_first(members));
                    }
                }
            }
        }
        catch_all.map(|m| self.policy_first(m))
    }

    /// Members reordered so the rule whose top-level `trafficPolicy` applies comes first (the
    /// oldest one with a policy; destination_rule.go@1.4.2:50-54, @1.22.0:100-104), the rest oldest first.
    fn policy_first(&self, mut members: Vec<usize>) -> Vec<usize> {
        if let Some(k) = members
            .iter()
            .position(|i| self.rules[*i].policy().is_some())
        {
            let winner = members.remove(k);
            members.insert(0, winner);
        }
        members
    }

    /// One step of the lookup in a pool: `Some(result)` ends the lookup (even when empty:
    /// Pilot found a host and its sidecar scope picked nothing), `None` goes on.
    fn step(
        &self,
        pool: Option<&Pool>,
        host: &str,
        client: Option<&str>,
        labels: Option<&BTreeMap<&str, &str>>,
        keep: &dyn Fn(usize) -> bool,
        exported: bool,
    ) -> Option<Vec<usize>> {
        let pool = pool?;
        let (entries, host_export) = pool.lookup(host, keep)?;
        if !exported {
            return Some(
                self.pick(entries, client, labels, keep, &|_| true)
                    .unwrap_or_default(),
            );
        }
        if self.release.legacy() {
            return Some(
                self.pick(entries, client, labels, keep, &|_| true)
                    .unwrap_or_default(),
            );
        }
        if self.release.enhanced_merge() {
            // 1.24: each entry's own exportTo; none visible goes on (push_context.go@1.24.0:1257-1266).
            return self.pick(entries, client, labels, keep, &|e| {
                export_visible(&e.export, client)
            });
        }
        // Most specific host first, then its exportTo (push_context.go@1.8.0:807-817): a host
        // not exported to the client ends this namespace's step without a rule.
        if !export_visible(host_export, client) {
            return None;
        }
        Some(
            self.pick(entries, client, labels, keep, &|_| true)
                .unwrap_or_default(),
        )
    }

    /// The rules that decide traffic from `client` (`None`: a namespace without rules of its own)
    /// to `host` in `svc_ns`: the merged rules of the entry Pilot picks, the one whose top-level
    /// `trafficPolicy` applies first, then the others oldest first.
    pub fn resolve(&self, client: Option<&str>, host: &str, svc_ns: Option<&str>) -> Vec<usize> {
        self.resolve_with(client, host, svc_ns, &|_| true)
    }

    /// [`Mesh::resolve`] for one workload: its labels pick `workloadSelector` rules (1.14+).
    pub fn resolve_workload(
        &self,
        client: &str,
        labels: &BTreeMap<&str, &str>,
        host: &str,
        svc_ns: Option<&str>,
    ) -> Vec<usize> {
        self.resolve_full(Some(client), Some(labels), host, svc_ns, &|_| true)
    }

    /// [`Mesh::resolve`] as if only the rules that pass `keep` existed.
    pub fn resolve_with(
        &self,
        client: Option<&str>,
        host: &str,
        svc_ns: Option<&str>,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        self.resolve_full(client, None, host, svc_ns, keep)
    }

    fn resolve_full(
        &self,
        client: Option<&str>,
        labels: Option<&BTreeMap<&str, &str>>,
        host: &str,
        svc_ns: Option<&str>,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let root = self.root_ns.as_str();
        // 1. The client's own namespace; a root-namespace proxy reads the root's private rules
        //    (modern, push_context.go@1.8.0:757-773) or nothing (1.4, push_context.go@1.4.2:633).
        let first = if client == Some(root) {
            if self.release.legacy() {
                None
            } else {
                self.step(Some(&self.root_private), host, client, labels, keep, false)
            }
        } else {
            client.and_then(|c| self.step(self.local.get(c), host, client, labels, keep, false))
        };
        if let Some(hit) = first {
            return hit;
        }
        // 2. The Service's namespace's exported rules; 3. the root namespace's.
        for ns in svc_ns.into_iter().chain([root]) {
            if let Some(hit) = self.step(self.exported.get(ns), host, client, labels, keep, true) {
                return hit;
            }
        }
        Vec::new()
    }

    /// The TLS a client uses to `port` (and `subset`) under merged rules `group` (as returned by
    /// [`Mesh::resolve`]): the first rule's top-level policy, the subset from the oldest rule
    /// defining it (later duplicates are dropped, destination_rule.go@1.4.2:40-48).
    pub fn group_tls(
        &self,
        group: &[usize],
        port: Option<u32>,
        subset: Option<&str>,
    ) -> Option<TlsMode> {
        let first = &self.rules[*group.first()?];
        let mut tls = policy_tls(first.policy(), None, port);
        if let Some(name) = subset {
            let mut by_age = group.to_vec();
            by_age.sort_by_cached_key(|i| {
                (
                    self.rules[*i].obj.created(),
                    format!("{}.{}", self.rules[*i].obj.name(), self.rules[*i].ns),
                )
            });
            if let Some(sp) = by_age.iter().find_map(|i| self.rules[*i].subset(name)) {
                tls = policy_tls(sp.traffic_policy.as_ref(), tls, port);
            }
        }
        tls
    }

    /// The client namespaces worth resolving for: every namespace with in-mesh clients (or,
    /// when the source says nothing about workloads, every namespace holding rules), and "any
    /// other namespace" (`None`).
    pub fn clients(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.client_list.iter().map(Option::as_deref)
    }

    /// The clients for which rule `i` can be the one that decides: its own namespace, the
    /// namespaces its `exportTo` names, and "any other namespace" (`None`). Every other client
    /// either resolves to its own local rule or behaves exactly like `None`, so resolving for
    /// these few is enough — and keeps per-rule work independent of the namespace count.
    pub fn rule_clients(&self, i: usize) -> impl Iterator<Item = Option<&str>> + '_ {
        let rule = &self.rules[i];
        let root = self.root_ns.as_str();
        self.clients().filter(move |c| match c {
            None => true,
            Some(c) => *c == rule.ns || *c == root || self.named_in_exports.contains(*c),
        })
    }

    /// A client namespace for which rule `i` decides traffic to `host` (`Some(None)`: any
    /// namespace without rules of its own), or `None` when it never applies.
    pub fn winning_client(
        &self,
        i: usize,
        host: &str,
        svc_ns: Option<&str>,
    ) -> Option<Option<&str>> {
        self.rule_clients(i)
            .find(|c| self.resolve(*c, host, svc_ns).first() == Some(&i))
    }

    /// The peer mode in force for a namespace.
    pub fn ns_mode(&self, ns: &str) -> ModeAt<'a> {
        if let Some(p) = self.ns_policies.get(ns)
            && let Some(mode) = p.mode
        {
            return ModeAt {
                mode,
                by: Some(p.obj),
            };
        }
        self.mesh_mode()
    }

    /// The mesh-level peer mode.
    pub fn mesh_mode(&self) -> ModeAt<'a> {
        match self.mesh_policy {
            Some(ScopePolicy {
                obj,
                mode: Some(mode),
            }) => ModeAt {
                mode,
                by: Some(obj),
            },
            _ => ModeAt {
                mode: self.default_mode,
                by: None,
            },
        }
    }

    /// The peer mode for one Service port under 1.4's `authentication.istio.io/v1alpha1`
    /// policies, as `AuthenticationPolicyForWorkload` picks it (push_context.go@1.4.2:1223-1265):
    /// the Policies targeting the Service's host (a target's short name is qualified with the
    /// Policy's namespace, `ResolveShortnameToFQDN`, config.go@1.4.2:277), oldest first, and
    /// the first whose target names no ports or names this port (by number or name,
    /// `Port.Match`, service.go@1.4.2:467-479) wins — a port-less target also matches every
    /// port, so an older port-less Policy beats a newer port-specific one; then the namespace's
    /// target-less Policy (validation requires the name `default`, validation.go@1.4.2:1454);
    /// then the MeshPolicy `default`; then plaintext.
    pub fn service_mode(&self, dest: &Dest<'_>, port: &Port) -> ModeAt<'a> {
        for tp in &self.target_policies {
            let applies = tp.targets.iter().any(|(name, ports)| {
                resolve_host(name, tp.obj.namespace()) == dest.host
                    && (ports.is_empty()
                        || ports.iter().any(|p| match p {
                            PortRef::Number(n) => *n == port.number,
                            PortRef::Name(n) => *n == port.name,
                        }))
            });
            if applies {
                return ModeAt {
                    mode: tp.mode,
                    by: Some(tp.obj),
                };
            }
        }
        self.ns_mode(dest.ns())
    }

    /// The workload-level PeerAuthentication that applies to a workload: the oldest of its
    /// namespace whose `matchLabels` its labels include (authentication.go@1.22.0:229-262,
    /// policy_applier.go@1.8.0:418-425).
    pub fn workload_policy(
        &self,
        ns: &str,
        labels: &BTreeMap<&str, &str>,
    ) -> Option<&WorkloadPolicy<'a>> {
        self.workload_policies_by_ns
            .get(ns)?
            .iter()
            .map(|i| &self.workload_policies[*i])
            .find(|w| {
                w.selector
                    .iter()
                    .all(|(k, v)| labels.get(k.as_str()) == Some(&v.as_str()))
            })
    }

    /// The peer mode a sidecar enforces on inbound `target_port` (the workload's port, not the
    /// Service's) under PeerAuthentication, as Pilot composes it: mesh, then namespace, then
    /// the workload-level policy, each UNSET inheriting its parent; a `portLevelMtls` entry of
    /// the workload policy decides its port, UNSET inheriting the workload's mode
    /// (policy_applier.go@1.8.0:437-477 and `getMutualTLSModeForPort` :358-369,
    /// @1.12.0:349-357,412-447, @1.13.0:349-357,412-447, authn/policy_applier.go@1.22.0:412-418,474-507).
    pub fn workload_mode(
        &self,
        ns: &str,
        labels: &BTreeMap<&str, &str>,
        target_port: u32,
    ) -> ModeAt<'a> {
        let parent = self.ns_mode(ns);
        let Some(w) = self.workload_policy(ns, labels) else {
            return parent;
        };
        let workload = w.mode.map_or(parent, |mode| ModeAt {
            mode,
            by: Some(w.obj),
        });
        match w.ports.get(&target_port) {
            Some(Some(mode)) => ModeAt {
                mode: *mode,
                by: Some(w.obj),
            },
            _ => workload,
        }
    }

    /// The peer mode an endpoint of `dest` enforces for Service port `port` (served on
    /// `target_port`): 1.4 per Service port ([`Mesh::service_mode`]), modern per workload
    /// ([`Mesh::workload_mode`]).
    pub fn endpoint_mode(
        &self,
        dest: &Dest<'_>,
        port: &Port,
        ep: &Endpoint<'_>,
        target_port: u32,
    ) -> ModeAt<'a> {
        if self.peer_authentication {
            self.workload_mode(&ep.ns, &ep.labels, target_port)
        } else {
            self.service_mode(dest, port)
        }
    }

    /// Whether a client with no DestinationRule TLS for `dest:port` sends mTLS to `ep` (auto
    /// mTLS). Off: never. On: the cluster gets mTLS unless the Service's mode is DISABLE — the
    /// namespace/mesh mode (modern `BestEffortInferServiceMTLSMode`, push_context.go@1.8.0:1722-1729,
    /// @1.22.0:2373-2380) or the Service port's 1.4 policy (cluster.go@1.4.2:225-230) —
    /// (`buildAutoMtlsSettings`, cluster.go@1.4.2:762, @1.8.0:434,
    /// cluster_builder.go@1.12.0:798-830, @1.13.0:802-834, cluster_tls.go@1.22.0:459); that
    /// mTLS is a transport-socket match used only for endpoints labelled
    /// `security.istio.io/tlsMode=istio`, others get plaintext (cluster.go@1.4.2:1207-1226,
    /// @1.8.0:839-856; a missing label is `disabled`, service.go@1.8.0:615-622). From 1.12 the
    /// endpoint's own PeerAuthentication (workload and port level) DISABLE also turns it off
    /// (endpoint_builder.go@1.12.0:467-500, @1.13.0:467-500, endpoints/mtls_checker.go@1.22.0:51-66);
    /// 1.8 does not look at it.
    pub fn auto_mtls_sends(
        &self,
        auto_mtls: bool,
        dest: &Dest<'_>,
        port: &Port,
        ep: &Endpoint<'_>,
        target_port: u32,
    ) -> bool {
        if !auto_mtls {
            return false;
        }
        let service_mode = if self.peer_authentication {
            self.ns_mode(dest.ns()).mode
        } else {
            self.service_mode(dest, port).mode
        };
        if service_mode == PeerMode::Disable || !ep.tls_istio {
            return false;
        }
        !(self.peer_authentication
            && self.release.minor >= 12
            && self.workload_mode(&ep.ns, &ep.labels, target_port).mode == PeerMode::Disable)
    }

    /// The rules at mesh scope: mesh-wide hosts in the root namespace, else in any namespace.
    pub fn mesh_scope_rules(&self) -> Vec<&Rule<'a>> {
        let all: Vec<&Rule<'a>> = self
            .rules
            .iter()
            .filter(|r| is_mesh_wide(&r.host) && !r.selective)
            .collect();
        let root: Vec<&Rule<'a>> = all
            .iter()
            .copied()
            .filter(|r| r.ns == self.root_ns)
            .collect();
        if root.is_empty() { all } else { root }
    }

    /// The rule that decides a namespace's traffic to its own Services, absent host-specific
    /// rules (a namespace-wide or mesh-wide rule), as Pilot resolves it.
    pub fn ns_scope_rule(&self, ns: &str) -> Option<&Rule<'a>> {
        // A label no Service can have, so only wildcard rules match.
        let probe = format!("meshvm--probe.{ns}.svc.{DOMAIN}");
        self.resolve(Some(ns), &probe, Some(ns))
            .first()
            .map(|i| &self.rules[*i])
    }
}

/// The namespace of a cluster-local host `name.ns.svc.cluster.local`.
pub fn host_namespace(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(&format!(".svc.{DOMAIN}"))?;
    let (name, ns) = rest.split_once('.')?;
    (!name.is_empty() && !name.starts_with('*') && !ns.contains('.')).then_some(ns)
}

/// Whether a pod runs Istio's sidecar.
pub fn has_proxy(pod: &Obj) -> bool {
    pod.annotation("sidecar.istio.io/status").is_some()
        || pod
            .pod_spec()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == PROXY_CONTAINER))
}

/// A Service's `spec` (`None` for other objects and a Service without one).
pub fn service_spec(svc: &Obj) -> Option<&ServiceSpec> {
    svc.typed::<Service>()?.spec.as_ref()
}

/// Whether a selector (non-empty) selects labels.
pub fn selects(selector: &BTreeMap<&str, &str>, labels: &BTreeMap<&str, &str>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// 1.4 `authentication.istio.io/v1alpha1` peers: an `mtls` peer means mTLS (STRICT unless
/// `mode: PERMISSIVE`); no `mtls` peer means plaintext.
fn v1alpha1_mode(spec: &PolicySpec) -> PeerMode {
    match spec.peers.iter().find_map(|p| p.mtls.as_ref()) {
        None => PeerMode::Disable,
        Some(m) if m.mode.as_deref() == Some("PERMISSIVE") => PeerMode::Permissive,
        Some(_) => PeerMode::Strict,
    }
}

/// A 1.4 `Policy`'s or `MeshPolicy`'s spec, typed.
fn policy_spec(obj: &Obj) -> PolicySpec {
    obj.spec_as::<PolicySpec>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> (Snapshot, String) {
        (Snapshot::from_yaml(yaml).unwrap(), "istio-system".into())
    }

    fn names(m: &Mesh<'_>, hits: &[usize]) -> Vec<String> {
        hits.iter().map(|i| m.rules[*i].obj.ns_name()).collect()
    }

    const DRS: &str = r"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: ns-wide, namespace: bookinfo}
spec: {host: '*.bookinfo.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  exportTo: ['.']
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - name: v1
    trafficPolicy: {tls: {mode: DISABLE}}
  - name: v2
";

    #[test]
    fn resolution_order_and_specificity() {
        let (snap, root) = mesh(DRS);
        let m = Mesh::new(&snap, &root, "istio-system", None);
        let host = "reviews.bookinfo.svc.cluster.local";
        assert_eq!(
            names(&m, &m.resolve(Some("bookinfo"), host, Some("bookinfo"))),
            ["bookinfo/reviews"]
        );
        // Private to bookinfo: other clients fall through to the namespace-wide rule? No: that
        // one lives in bookinfo too and is exported; the service namespace's exported rules come next.
        assert_eq!(
            names(&m, &m.resolve(Some("other"), host, Some("bookinfo"))),
            ["bookinfo/ns-wide"]
        );
        assert_eq!(
            names(&m, &m.resolve(None, "x.foo.svc.cluster.local", Some("foo"))),
            ["istio-system/default"]
        );
        assert!(m.resolve(None, "example.com", None).is_empty());
    }

    #[test]
    fn port_level_replaces_and_subsets_inherit() {
        let (snap, root) = mesh(DRS);
        let m = Mesh::new(&snap, &root, "istio-system", None);
        let r = m.rules.iter().find(|r| r.obj.name() == "reviews").unwrap();
        assert_eq!(r.tls_for(Some(80), None), Some(TlsMode::IstioMutual));
        assert_eq!(r.tls_for(Some(9080), None), None);
        assert_eq!(r.tls_for(Some(80), Some("v1")), Some(TlsMode::Disable));
        assert_eq!(r.tls_for(Some(80), Some("v2")), Some(TlsMode::IstioMutual));
        assert_eq!(r.tls_for(Some(9080), Some("v2")), None);
        let stated = r.stated_tls();
        assert!(stated.iter().any(|s| s.label == "port 9080"
            && s.mode.is_none()
            && s.pointer == "/spec/trafficPolicy/portLevelSettings/0/tls"));
        assert!(stated.iter().any(|s| s.label == "subset v1"
            && s.mode == Some(TlsMode::Disable)
            && s.pointer == "/spec/subsets/0/trafficPolicy/tls"));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            resolve_host("reviews", "ns"),
            "reviews.ns.svc.cluster.local"
        );
        assert_eq!(resolve_host("reviews.ns", "x"), "reviews.ns");
        assert!(
            is_mesh_wide("*.local")
                && is_mesh_wide("*.svc.cluster.local")
                && !is_mesh_wide("*.a.svc.cluster.local")
        );
        assert_eq!(namespace_wide("*.a.svc.cluster.local"), Some("a"));
        assert!(host_matches("*.local", "a.b.local") && !host_matches("*.b.local", "b.local"));
    }

    #[test]
    fn ten_thousand_rules_resolve_fast() {
        use std::fmt::Write as _;
        let mut yaml = String::new();
        for i in 0..10_000 {
            let _ = write!(
                yaml,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r{i}, namespace: ns{}}}\nspec: {{host: svc{i}.ns{}.svc.cluster.local}}\n",
                i % 100,
                i % 100
            );
        }
        let snap = Snapshot::from_yaml(&yaml).unwrap();
        let start = std::time::Instant::now();
        let m = Mesh::new(&snap, "istio-system", "istio-system", None);
        for i in 0..10_000 {
            let host = format!("svc{i}.ns{}.svc.cluster.local", i % 100);
            assert_eq!(
                m.resolve(None, &host, Some(&format!("ns{}", i % 100)))
                    .len(),
                1
            );
        }
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }

    /// The resolution rules of 1.4 and 1.13, written the slow and obvious way: scan every rule.
    fn naive(m: &Mesh, client: Option<&str>, host: &str, svc_ns: Option<&str>) -> Vec<usize> {
        let legacy = m.release.legacy();
        let specificity = |pattern: &str| -> usize {
            if pattern == host {
                usize::MAX
            } else if pattern == "*" {
                0
            } else {
                pattern.len()
            }
        };
        let age = |i: &usize| {
            let r = &m.rules[*i];
            (r.obj.created(), format!("{}.{}", r.obj.name(), r.ns))
        };
        let raw =
            |i: usize| -> Vec<&str> { m.rules[i].export_raw.iter().map(String::as_str).collect() };
        let local = |i: usize| {
            let e = raw(i);
            legacy
                || e.is_empty()
                || e.contains(&"*")
                || e.contains(&".")
                || e.contains(&m.rules[i].ns)
        };
        let exported = |i: usize| {
            let e = raw(i);
            if legacy {
                e.first() != Some(&".")
            } else {
                !(e.len() == 1 && e[0] == ".")
            }
        };
        let private_root = |i: usize| !legacy && !exported(i) && m.rules[i].ns == m.root_ns;
        // Most specific host in a pool, its rules oldest first.
        let pool = |ns: &str, member: &dyn Fn(usize) -> bool| -> Vec<usize> {
            let hits: Vec<usize> = (0..m.rules.len())
                .filter(|i| {
                    m.rules[*i].ns == ns && member(*i) && host_matches(&m.rules[*i].host, host)
                })
                .collect();
            let best = hits.iter().map(|i| specificity(&m.rules[*i].host)).max();
            let mut group: Vec<usize> = hits
                .into_iter()
                .filter(|i| Some(specificity(&m.rules[*i].host)) == best)
                .collect();
            group.sort_by_key(age);
            group
        };
        let finish = |g: Vec<usize>| m.policy_first(g);
        let first = if client == Some(m.root_ns.as_str()) {
            pool(&m.root_ns, &private_root)
        } else if let Some(c) = client {
            pool(c, &local)
        } else {
            Vec::new()
        };
        if !first.is_empty() {
            return finish(first);
        }
        for ns in svc_ns.into_iter().chain([m.root_ns.as_str()]) {
            let g = pool(ns, &exported);
            if g.is_empty() {
                continue;
            }
            if legacy {
                return finish(g);
            }
            let export: Vec<&str> = g
                .iter()
                .map(|i| raw(*i))
                .find(|e| !e.is_empty())
                .unwrap_or_default();
            if export.is_empty()
                || export.contains(&"*")
                || client.is_some_and(|c| export.contains(&c))
            {
                return finish(g);
            }
        }
        Vec::new()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn indexed_resolution_equals_the_naive_scan(
            rules in proptest::collection::vec((0usize..3, 0usize..8, 0usize..4, 0u8..3), 0..12)
        ) {
            const NS: [&str; 3] = ["a", "b", "istio-system"];
            const HOSTS: [&str; 8] = ["*", "*.local", "*.svc.cluster.local", "*.a.svc.cluster.local", "x", "x.a.svc.cluster.local", "y.b.svc.cluster.local", "*.cluster.local"];
            const EXPORTS: [&str; 4] = ["", "exportTo: ['.'],", "exportTo: ['*'],", "exportTo: [a],"];
            let mut yaml = String::new();
            for (i, (ns, host, export, age)) in rules.iter().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(
                    yaml,
                    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r{i}, namespace: {}, creationTimestamp: '2020-01-0{}T00:00:00Z'}}\nspec: {{{} host: '{}'}}\n",
                    NS[*ns], age + 1, EXPORTS[*export], HOSTS[*host]
                );
            }
            let snap = Snapshot::from_yaml(&yaml).unwrap();
            for minor in [4, 13] {
            let m = Mesh::at_release(&snap, "istio-system", "istio-system", None, Release::minor(minor));
            for client in [Some("a"), Some("b"), Some("c"), Some("istio-system"), None] {
                for (host, svc_ns) in [("x.a.svc.cluster.local", "a"), ("y.b.svc.cluster.local", "b"), ("z.c.svc.cluster.local", "c")] {
                    proptest::prop_assert_eq!(
                        m.resolve(client, host, Some(svc_ns)),
                        naive(&m, client, host, Some(svc_ns)),
                        "1.{} client {:?} host {}", minor, client, host
                    );
                    // The few clients rule_clients picks find every rule some client gets.
                    for i in 0..m.rules.len() {
                        let everyone = m.clients().chain([Some("c")]).any(|c| m.resolve(c, host, Some(svc_ns)).first() == Some(&i));
                        proptest::prop_assert_eq!(
                            m.winning_client(i, host, Some(svc_ns)).is_some(),
                            everyone,
                            "rule {} host {}", i, host
                        );
                    }
                }
            }
            }
        }
    }

    fn dr(ns: &str, name: &str, age: u8, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '2020-01-0{age}T00:00:00Z'}}\nspec: {spec}\n"
        )
    }

    /// The rule names (oldest policy first) a client resolves at each release.
    fn at(yaml: &str, minor: u32, client: Option<&str>, host: &str, svc_ns: &str) -> Vec<String> {
        let snap = Snapshot::from_yaml(yaml).unwrap();
        let m = Mesh::at_release(
            &snap,
            "istio-system",
            "istio-system",
            None,
            Release::minor(minor),
        );
        names(&m, &m.resolve(client, host, Some(svc_ns)))
    }

    const CITADEL: &str = "istio-citadel.istio-system.svc.cluster.local";

    #[test]
    fn root_namespace_private_rule_ignored_by_1_4_read_first_by_modern() {
        // push_context.go@1.4.2:633 (root proxies skip their namespace) and :669 (only exported
        // root rules); push_context.go@1.8.0:766-773 (root proxies read private root rules first).
        let yaml = dr(
            "istio-system",
            "default",
            1,
            "{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "istio-system",
            "citadel",
            2,
            &format!(
                "{{host: {CITADEL}, exportTo: ['.'], trafficPolicy: {{tls: {{mode: DISABLE}}}}}}"
            ),
        );
        let gw = Some("istio-system");
        assert_eq!(
            at(&yaml, 4, gw, CITADEL, "istio-system"),
            ["istio-system/default"]
        );
        for minor in [8, 12, 13, 22, 24] {
            assert_eq!(
                at(&yaml, minor, gw, CITADEL, "istio-system"),
                ["istio-system/citadel"],
                "1.{minor}"
            );
        }
        // Other clients never see the private rule.
        assert_eq!(
            at(&yaml, 22, Some("a"), CITADEL, "istio-system"),
            ["istio-system/default"]
        );
    }

    #[test]
    fn root_proxy_orders_service_namespace_exports_before_root_exports() {
        let host = "x.a.svc.cluster.local";
        let yaml = dr(
            "istio-system",
            "default",
            1,
            "{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "a",
            "x",
            2,
            "{host: x, trafficPolicy: {tls: {mode: DISABLE}}}",
        );
        for minor in [4, 8, 13, 22, 24] {
            assert_eq!(
                at(&yaml, minor, Some("istio-system"), host, "a"),
                ["a/x"],
                "1.{minor}"
            );
        }
        // A private root rule comes before the Service namespace's (modern only); 1.14+ also
        // takes `exportTo: [<root>]` as private (push_context.go@1.14.0:1709).
        let private = dr(
            "istio-system",
            "gw",
            3,
            "{host: '*.local', exportTo: ['.'], trafficPolicy: {tls: {mode: SIMPLE}}}",
        );
        assert_eq!(
            at(
                &(yaml.clone() + &private),
                4,
                Some("istio-system"),
                host,
                "a"
            ),
            ["a/x"]
        );
        assert_eq!(
            at(
                &(yaml.clone() + &private),
                8,
                Some("istio-system"),
                host,
                "a"
            ),
            ["istio-system/gw"]
        );
        let own = dr(
            "istio-system",
            "gw",
            3,
            "{host: '*.local', exportTo: [istio-system], trafficPolicy: {tls: {mode: SIMPLE}}}",
        );
        assert_eq!(
            at(&(yaml.clone() + &own), 13, Some("istio-system"), host, "a"),
            ["a/x"]
        );
        assert_eq!(
            at(&(yaml + &own), 22, Some("istio-system"), host, "a"),
            ["istio-system/gw"]
        );
    }

    #[test]
    fn same_host_rules_merge_oldest_policy_first() {
        // destination_rule.go@1.4.2:33-62, @1.8.0:35-84, @1.22.0:40-120.
        let host = "x.a.svc.cluster.local";
        let no_policy_first = dr("a", "old", 1, "{host: x, subsets: [{name: v1}]}")
            + &dr(
                "a",
                "new",
                2,
                "{host: x, trafficPolicy: {tls: {mode: DISABLE}}, subsets: [{name: v1, trafficPolicy: {tls: {mode: SIMPLE}}}, {name: v2}]}",
            );
        let both = dr(
            "a",
            "old",
            1,
            "{host: x, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "a",
            "new",
            2,
            "{host: x, trafficPolicy: {tls: {mode: DISABLE}}}",
        );
        for minor in [4, 13, 22, 24] {
            assert_eq!(
                at(&no_policy_first, minor, Some("a"), host, "a"),
                ["a/new", "a/old"],
                "1.{minor}"
            );
            assert_eq!(
                at(&both, minor, Some("b"), host, "a"),
                ["a/old", "a/new"],
                "1.{minor}"
            );
        }
        let snap = Snapshot::from_yaml(&no_policy_first).unwrap();
        let m = Mesh::at_release(
            &snap,
            "istio-system",
            "istio-system",
            None,
            Release::minor(22),
        );
        let g = m.resolve(Some("a"), host, Some("a"));
        assert_eq!(m.group_tls(&g, Some(80), None), Some(TlsMode::Disable));
        // The older rule's subset v1 (no policy) wins over the newer duplicate.
        assert_eq!(
            m.group_tls(&g, Some(80), Some("v1")),
            Some(TlsMode::Disable)
        );
        // Equal timestamps: by `name.namespace` (config.go@1.4.2:374-378).
        let tie = dr(
            "b",
            "x",
            1,
            "{host: x.a.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}",
        ) + &dr(
            "a",
            "x",
            1,
            "{host: x, trafficPolicy: {tls: {mode: SIMPLE}}}",
        ) + &dr(
            "a",
            "z",
            1,
            "{host: x, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        );
        assert_eq!(at(&tie, 22, Some("a"), host, "a"), ["a/x", "a/z"]);
    }

    #[test]
    fn export_to_most_specific_host_then_visibility() {
        // push_context.go@1.8.0:807-817: the exact host exported to b only hides the wildcard
        // from c; 1.4 reads exportTo[0] only (push_context.go@1.4.2:1313): [b] is public.
        let host = "x.a.svc.cluster.local";
        let yaml = dr(
            "istio-system",
            "default",
            1,
            "{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "a",
            "wild",
            1,
            "{host: '*.a.svc.cluster.local', trafficPolicy: {tls: {mode: SIMPLE}}}",
        ) + &dr(
            "a",
            "x",
            2,
            "{host: x, exportTo: [b], trafficPolicy: {tls: {mode: DISABLE}}}",
        );
        assert_eq!(at(&yaml, 4, Some("c"), host, "a"), ["a/x"]);
        for minor in [8, 13, 22, 24] {
            assert_eq!(
                at(&yaml, minor, Some("c"), host, "a"),
                ["istio-system/default"],
                "1.{minor}"
            );
            assert_eq!(at(&yaml, minor, Some("b"), host, "a"), ["a/x"], "1.{minor}");
            // Not exported to its own namespace: a's clients do not get it
            // (push_context.go@1.8.0:1411), they get the wildcard.
            assert_eq!(
                at(&yaml, minor, Some("a"), host, "a"),
                ["a/wild"],
                "1.{minor}"
            );
        }
        assert_eq!(at(&yaml, 4, Some("a"), host, "a"), ["a/x"]);
    }

    #[test]
    fn default_destination_rule_export_to_from_mesh_config() {
        let mesh_cm = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    defaultDestinationRuleExportTo: ['.']\n";
        let host = "x.a.svc.cluster.local";
        let yaml = dr(
            "a",
            "x",
            1,
            "{host: x, trafficPolicy: {tls: {mode: DISABLE}}}",
        );
        for minor in [4, 13, 24] {
            assert_eq!(at(&yaml, minor, Some("b"), host, "a"), ["a/x"], "1.{minor}");
            let private = yaml.clone() + mesh_cm;
            assert!(
                at(&private, minor, Some("b"), host, "a").is_empty(),
                "1.{minor}"
            );
            assert_eq!(
                at(&private, minor, Some("a"), host, "a"),
                ["a/x"],
                "1.{minor}"
            );
        }
    }

    #[test]
    fn workload_selector_rules_from_1_14() {
        // sidecar.go@1.22.0:668-690: a selector rule of the client's namespace that selects it,
        // else the host's catch-all; selector rules are private (push_context.go@1.22.0:2002).
        let host = "x.a.svc.cluster.local";
        let yaml = dr(
            "a",
            "all",
            1,
            "{host: x, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "a",
            "legacy-client",
            2,
            "{host: x, workloadSelector: {matchLabels: {app: old}}, trafficPolicy: {tls: {mode: DISABLE}}}",
        );
        let snap = Snapshot::from_yaml(&yaml).unwrap();
        let old: BTreeMap<&str, &str> = [("app", "old")].into();
        let other: BTreeMap<&str, &str> = [("app", "new")].into();
        let m = Mesh::at_release(
            &snap,
            "istio-system",
            "istio-system",
            None,
            Release::minor(22),
        );
        assert_eq!(
            names(&m, &m.resolve_workload("a", &old, host, Some("a"))),
            ["a/legacy-client", "a/all"]
        );
        assert_eq!(
            names(&m, &m.resolve_workload("a", &other, host, Some("a"))),
            ["a/all"]
        );
        assert_eq!(names(&m, &m.resolve(Some("b"), host, Some("a"))), ["a/all"]);
        // 1.13 ignores the selector: one merged rule, the oldest policy.
        let m = Mesh::at_release(
            &snap,
            "istio-system",
            "istio-system",
            None,
            Release::minor(13),
        );
        assert_eq!(
            names(&m, &m.resolve_workload("a", &old, host, Some("a"))),
            ["a/all", "a/legacy-client"]
        );
        // A host with only a selector rule: other workloads of the namespace get no rule at all
        // (Pilot found the host, the sidecar scope picked nothing), not the mesh-wide one.
        let only = dr(
            "a",
            "sel",
            1,
            "{host: x, workloadSelector: {matchLabels: {app: old}}, trafficPolicy: {tls: {mode: DISABLE}}}",
        ) + &dr(
            "istio-system",
            "default",
            1,
            "{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        );
        let snap = Snapshot::from_yaml(&only).unwrap();
        let m = Mesh::at_release(
            &snap,
            "istio-system",
            "istio-system",
            None,
            Release::minor(22),
        );
        assert!(m.resolve_workload("a", &other, host, Some("a")).is_empty());
        assert_eq!(
            names(&m, &m.resolve(Some("b"), host, Some("a"))),
            ["istio-system/default"]
        );
    }

    #[test]
    fn export_to_keeps_same_host_rules_apart_in_1_24() {
        // destination_rule.go@1.24.0:57-66 and push_context.go@1.24.0:1257-1266 against
        // push_context.go@1.22.0:1228-1234 (the host's first non-empty exportTo decides).
        let host = "x.a.svc.cluster.local";
        let yaml = dr(
            "istio-system",
            "default",
            1,
            "{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "a",
            "for-b",
            1,
            "{host: x, exportTo: [b], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        ) + &dr(
            "a",
            "for-all",
            2,
            "{host: x, exportTo: ['*'], trafficPolicy: {tls: {mode: DISABLE}}}",
        );
        assert_eq!(
            at(&yaml, 22, Some("c"), host, "a"),
            ["istio-system/default"]
        );
        assert_eq!(
            at(&yaml, 22, Some("b"), host, "a"),
            ["a/for-b", "a/for-all"]
        );
        assert_eq!(at(&yaml, 24, Some("c"), host, "a"), ["a/for-all"]);
        // Both visible to b: the last catch-all entry is the one its sidecar takes.
        assert_eq!(at(&yaml, 24, Some("b"), host, "a"), ["a/for-all"]);
    }

    #[test]
    fn release_from_the_istiod_image() {
        let snap = Snapshot::from_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\nspec: {template: {spec: {containers: [{name: discovery, image: 'docker.io/istio/pilot:1.22.0'}]}}}\n").unwrap();
        assert_eq!(Release::of(&snap, Some(Era::Modern)), Release::minor(22));
        let bare = Snapshot::from_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n").unwrap();
        let r = Release::of(&bare, Some(Era::Modern));
        assert_eq!(
            (r.minor, r.from),
            (Release::NEWEST, ReleaseFrom::AssumedNewest)
        );
        assert!(r.describe().contains("assumed"));
        assert_eq!(Release::of(&bare, Some(Era::Legacy)).minor, 4);
        assert_eq!(
            crate::snapshot::istio_minor_of_image("gcr.io/istio-release/pilot:1.4.2-distroless"),
            Some(4)
        );
        assert_eq!(
            crate::snapshot::istio_minor_of_image("localhost:5000/pilot"),
            None
        );
        assert_eq!(
            crate::snapshot::istio_minor_of_image("istio/pilot:latest"),
            None
        );
    }

    #[test]
    fn peer_modes() {
        let (snap, root) = mesh(
            "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {peers: [{mtls: {}}]}\n---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: a}\nspec: {peers: [{mtls: {mode: PERMISSIVE}}]}\n",
        );
        let m = Mesh::new(&snap, &root, "istio-system", None);
        assert_eq!(m.mesh_mode().mode, PeerMode::Strict);
        assert_eq!(m.ns_mode("a").mode, PeerMode::Permissive);
        assert_eq!(m.ns_mode("b").mode, PeerMode::Strict);
        let (snap, root) = mesh("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n");
        let m = Mesh::new(&snap, &root, "istio-system", None);
        assert_eq!(m.mesh_mode().mode, PeerMode::Disable);
        assert!(m.mesh_mode().by.is_none());
        let m = Mesh::new(&snap, &root, "istio-system", Some(Era::Modern));
        assert_eq!(m.mesh_mode().mode, PeerMode::Permissive);
    }
}
