//! The mesh as Istio sees it: DestinationRule resolution, in-mesh destinations, peer authentication.
//!
//! Resolution follows Pilot: a client namespace's own rules first, then rules the Service's
//! namespace exports to the client, then rules the root namespace exports; within one namespace
//! the most specific host wins (exact, then the longest wildcard suffix, then `*`), and among
//! equally specific rules the oldest. Lookups use hash indexes by exact host and by wildcard
//! suffix, so a host costs O(labels), not O(rules).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::istio::Era;
use crate::snapshot::{Kind, Obj, Snapshot, string_map};

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
    /// Parse a `tls` block: a block without `mode` is DISABLE (the proto's zero value).
    pub fn from_tls(tls: &Value) -> TlsMode {
        match tls.get("mode").and_then(Value::as_str).unwrap_or("DISABLE") {
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
    fn parse(spec: &Value, own: &str) -> Export {
        let Some(list) = spec.get("exportTo").and_then(Value::as_array) else {
            return Export::All;
        };
        let items: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
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
}

impl<'a> Rule<'a> {
    fn new(obj: &'a Obj) -> Self {
        let spec = obj.spec();
        let ns = obj.namespace();
        Rule {
            obj,
            ns,
            host: resolve_host(
                spec.get("host").and_then(Value::as_str).unwrap_or_default(),
                ns,
            ),
            export: Export::parse(spec, ns),
            selective: spec.get("workloadSelector").is_some(),
        }
    }

    /// `spec.trafficPolicy`.
    pub fn policy(&self) -> Option<&'a Value> {
        self.obj.spec().get("trafficPolicy")
    }

    /// The top-level `trafficPolicy.tls` mode.
    pub fn top_tls(&self) -> Option<TlsMode> {
        self.policy()
            .and_then(|p| p.get("tls"))
            .map(TlsMode::from_tls)
    }

    /// Subset names.
    pub fn subsets(&self) -> Vec<&'a str> {
        self.subset_values()
            .iter()
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .collect()
    }

    fn subset_values(&self) -> &'a [Value] {
        self.obj
            .spec()
            .get("subsets")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The TLS a client uses to `port` (and `subset`), as Pilot builds the cluster:
    /// a matching `portLevelSettings` entry replaces the policy's whole TLS block (an entry
    /// without `tls` clears it); a subset's policy overrides what it sets and inherits the rest.
    pub fn tls_for(&self, port: Option<u32>, subset: Option<&str>) -> Option<TlsMode> {
        let mut tls = policy_tls(self.policy(), None, port);
        if let Some(name) = subset
            && let Some(sp) = self
                .subset_values()
                .iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|s| s.get("trafficPolicy"))
        {
            tls = policy_tls(Some(sp), tls, port);
        }
        tls
    }

    /// Every TLS setting the rule states, top-level, per port and per subset. Port entries
    /// without `tls` are listed with `mode: None` (they clear the TLS for that port).
    pub fn stated_tls(&self) -> Vec<Stated> {
        let mut out = Vec::new();
        let mut from_policy = |label: String, pointer: String, p: &Value| {
            if let Some(t) = p.get("tls") {
                out.push(Stated {
                    label: label.clone(),
                    pointer: format!("{pointer}/tls"),
                    port: None,
                    mode: Some(TlsMode::from_tls(t)),
                });
            }
            for (k, e) in p
                .get("portLevelSettings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let n = e
                    .pointer("/port/number")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as u32;
                out.push(Stated {
                    label: format!("{label} port {n}").trim().to_string(),
                    pointer: format!("{pointer}/portLevelSettings/{k}/tls"),
                    port: Some(n),
                    mode: e.get("tls").map(TlsMode::from_tls),
                });
            }
        };
        if let Some(p) = self.policy() {
            from_policy(String::new(), "/spec/trafficPolicy".into(), p);
        }
        for (j, s) in self.subset_values().iter().enumerate() {
            if let Some(p) = s.get("trafficPolicy") {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
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
fn policy_tls(policy: Option<&Value>, base: Option<TlsMode>, port: Option<u32>) -> Option<TlsMode> {
    let Some(p) = policy else { return base };
    let mut tls = p.get("tls").map(TlsMode::from_tls).or(base);
    if let Some(port) = port
        && let Some(entry) = port_entry(p, port)
    {
        tls = entry.get("tls").map(TlsMode::from_tls);
    }
    tls
}

/// The `portLevelSettings` entry for a port number.
pub fn port_entry(policy: &Value, port: u32) -> Option<&Value> {
    policy
        .get("portLevelSettings")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(port)))
}

#[derive(Default, Debug)]
struct NsRules {
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard rules by suffix: `*.local` → `.local`.
    wild: HashMap<String, Vec<usize>>,
    star: Vec<usize>,
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
    by_ns: HashMap<&'a str, NsRules>,
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
    /// Service-level 1.4 Policies.
    pub target_policies: Vec<TargetPolicy<'a>>,
    /// The mode when no object sets one: PERMISSIVE with PeerAuthentication (modern), else DISABLE (1.4).
    pub default_mode: PeerMode,
}

impl<'a> Mesh<'a> {
    /// Build the model.
    pub fn new(snap: &'a Snapshot, root_ns: &str, istio_ns: &str, era: Option<Era>) -> Self {
        let rules: Vec<Rule<'a>> = snap
            .of(Kind::DestinationRule)
            .iter()
            .map(Rule::new)
            .collect();
        let mut order: Vec<usize> = (0..rules.len()).collect();
        // Oldest first, then by name: Pilot's order among equally specific rules.
        order.sort_by(|a, b| {
            let (ra, rb) = (&rules[*a], &rules[*b]);
            (ra.obj.created(), ra.ns, ra.obj.name()).cmp(&(rb.obj.created(), rb.ns, rb.obj.name()))
        });
        let mut by_ns: HashMap<&'a str, NsRules> = HashMap::new();
        for i in order {
            let r = &rules[i];
            if r.selective {
                continue;
            }
            let entry = by_ns.entry(r.ns).or_default();
            if r.host == "*" {
                entry.star.push(i);
            } else if let Some(suffix) = r.host.strip_prefix('*') {
                entry.wild.entry(suffix.to_string()).or_default().push(i);
            } else {
                entry.exact.entry(r.host.clone()).or_default().push(i);
            }
        }

        let injected: BTreeSet<&str> = snap
            .of(Kind::Namespace)
            .iter()
            .filter(|n| {
                n.label("istio-injection") == Some("enabled")
                    || (n.label("istio.io/rev").is_some()
                        && n.label("istio-injection") != Some("disabled"))
            })
            .map(Obj::name)
            .collect();
        let mut pods_by_ns: HashMap<&str, Vec<(&Obj, bool)>> = HashMap::new();
        for p in snap.of(Kind::Pod) {
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

        let mut dests = Vec::new();
        let mut dest_by_host = HashMap::new();
        for svc in snap.of(Kind::Service) {
            if svc.str_at(&["spec", "type"]) == Some("ExternalName") {
                continue;
            }
            let ns = svc.namespace();
            let selector = string_map(svc.at(&["spec", "selector"]));
            let in_mesh = if injected.contains(ns) {
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
            let ports = svc
                .at(&["spec", "ports"])
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| Port {
                    number: p.get("port").and_then(Value::as_u64).unwrap_or(0) as u32,
                    name: p
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    protocol: p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
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
        if pas.is_empty() {
            for mp in snap.of(Kind::MeshPolicy) {
                if mp.name() == "default" {
                    mesh_policy = Some(ScopePolicy {
                        obj: mp,
                        mode: Some(v1alpha1_mode(mp.spec())),
                    });
                }
            }
            for p in snap.of(Kind::Policy) {
                let targets = p.spec().get("targets").and_then(Value::as_array);
                match targets.filter(|t| !t.is_empty()) {
                    None if p.name() == "default" => {
                        ns_policies.insert(
                            p.namespace(),
                            ScopePolicy {
                                obj: p,
                                mode: Some(v1alpha1_mode(p.spec())),
                            },
                        );
                    }
                    None => {}
                    Some(targets) => target_policies.push(TargetPolicy {
                        obj: p,
                        mode: v1alpha1_mode(p.spec()),
                        targets: targets
                            .iter()
                            .map(|t| {
                                let ports = t
                                    .get("ports")
                                    .and_then(Value::as_array)
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|p| {
                                        p.get("number")
                                            .and_then(Value::as_u64)
                                            .map(|n| PortRef::Number(n as u32))
                                            .or_else(|| {
                                                p.get("name")
                                                    .and_then(Value::as_str)
                                                    .map(|n| PortRef::Name(n.to_string()))
                                            })
                                    })
                                    .collect();
                                (
                                    t.get("name")
                                        .and_then(Value::as_str)
                                        .unwrap_or_default()
                                        .to_string(),
                                    ports,
                                )
                            })
                            .collect(),
                    }),
                }
            }
        } else {
            let mut sorted: Vec<&Obj> = pas
                .iter()
                .filter(|p| p.spec().get("selector").is_none())
                .collect();
            sorted.sort_by(|a, b| (a.created(), a.name()).cmp(&(b.created(), b.name())));
            for pa in sorted {
                let mode = match pa.at(&["spec", "mtls", "mode"]).and_then(Value::as_str) {
                    Some("STRICT") => Some(PeerMode::Strict),
                    Some("PERMISSIVE") => Some(PeerMode::Permissive),
                    Some("DISABLE") => Some(PeerMode::Disable),
                    _ => None,
                };
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
            client_set.extend(by_ns.keys().copied());
        }
        let mut client_list: Vec<Option<String>> = client_set
            .into_iter()
            .map(|c| Some(c.to_string()))
            .collect();
        client_list.push(None);
        Mesh {
            rules,
            by_ns,
            dests,
            dest_by_host,
            root_ns: root_ns.to_string(),
            client_namespaces,
            clients_known,
            client_list,
            mesh_policy,
            ns_policies,
            target_policies,
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

    /// Most specific rules for `host` among one namespace's rules that pass `keep`.
    fn lookup(&self, ns: &str, host: &str, keep: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let Some(n) = self.by_ns.get(ns) else {
            return Vec::new();
        };
        let pick = |v: Option<&Vec<usize>>| -> Vec<usize> {
            v.map(|v| v.iter().copied().filter(|i| keep(*i)).collect())
                .unwrap_or_default()
        };
        let exact = pick(n.exact.get(host));
        if !exact.is_empty() {
            return exact;
        }
        // Longest suffix first: `a.b.svc.cluster.local` tries `.b.svc.cluster.local`, `.svc.…`.
        for (i, _) in host.match_indices('.') {
            let hits = pick(n.wild.get(&host[i..]));
            if !hits.is_empty() {
                return hits;
            }
        }
        n.star.iter().copied().filter(|i| keep(*i)).collect()
    }

    /// The rules that decide traffic from `client` (`None`: a namespace without rules of its own)
    /// to `host` in `svc_ns`: equally specific winners, oldest first (the first one applies).
    pub fn resolve(&self, client: Option<&str>, host: &str, svc_ns: Option<&str>) -> Vec<usize> {
        self.resolve_with(client, host, svc_ns, &|_| true)
    }

    /// [`Mesh::resolve`] among the rules that pass `keep`.
    pub fn resolve_with(
        &self,
        client: Option<&str>,
        host: &str,
        svc_ns: Option<&str>,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        if let Some(c) = client {
            let hits = self.lookup(c, host, keep);
            if !hits.is_empty() {
                return hits;
            }
        }
        let exported = |i: usize| keep(i) && self.rules[i].export.visible_to(client);
        if let Some(s) = svc_ns
            && Some(s) != client
        {
            let hits = self.lookup(s, host, &exported);
            if !hits.is_empty() {
                return hits;
            }
        }
        let root = self.root_ns.as_str();
        if Some(root) != client && Some(root) != svc_ns {
            return self.lookup(root, host, &exported);
        }
        Vec::new()
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
        self.clients().filter(move |c| match c {
            None => true,
            Some(c) => {
                *c == rule.ns || matches!(&rule.export, Export::Namespaces(set) if set.contains(*c))
            }
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

    /// The peer mode for one Service port (1.4 service-level Policy, else namespace, else mesh).
    pub fn service_mode(&self, dest: &Dest<'_>, port: &Port) -> ModeAt<'a> {
        for tp in &self.target_policies {
            if tp.obj.namespace() != dest.ns() {
                continue;
            }
            for (name, ports) in &tp.targets {
                if name == dest.svc.name()
                    && (ports.is_empty()
                        || ports.iter().any(|p| match p {
                            PortRef::Number(n) => *n == port.number,
                            PortRef::Name(n) => *n == port.name,
                        }))
                {
                    return ModeAt {
                        mode: tp.mode,
                        by: Some(tp.obj),
                    };
                }
            }
        }
        self.ns_mode(dest.ns())
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
            .at(&["spec", "containers"])
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER))
            })
}

/// Whether a selector (non-empty) selects labels.
pub fn selects(selector: &BTreeMap<&str, &str>, labels: &BTreeMap<&str, &str>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// 1.4 `authentication.istio.io/v1alpha1` peers: an `mtls` peer means mTLS (STRICT unless
/// `mode: PERMISSIVE`); no `mtls` peer means plaintext.
fn v1alpha1_mode(spec: &Value) -> PeerMode {
    let peers = spec.get("peers").and_then(Value::as_array);
    let mtls = peers.into_iter().flatten().find_map(|p| {
        p.as_object()
            .filter(|o| o.contains_key("mtls"))
            .map(|o| &o["mtls"])
    });
    match mtls {
        None => PeerMode::Disable,
        Some(m) if m.get("mode").and_then(Value::as_str) == Some("PERMISSIVE") => {
            PeerMode::Permissive
        }
        Some(_) => PeerMode::Strict,
    }
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

    /// The resolution rules, written the slow and obvious way: scan every rule.
    fn naive(m: &Mesh, client: Option<&str>, host: &str, svc_ns: Option<&str>) -> Vec<usize> {
        let specificity = |pattern: &str| -> usize {
            if pattern == host {
                usize::MAX
            } else if pattern == "*" {
                0
            } else {
                pattern.len()
            }
        };
        let mut order: Vec<usize> = (0..m.rules.len()).collect();
        order.sort_by(|a, b| {
            let (ra, rb) = (&m.rules[*a], &m.rules[*b]);
            (ra.obj.created(), ra.ns, ra.obj.name()).cmp(&(rb.obj.created(), rb.ns, rb.obj.name()))
        });
        let pick = |ns: &str, exported: bool| -> Vec<usize> {
            let hits: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| {
                    let r = &m.rules[*i];
                    r.ns == ns
                        && host_matches(&r.host, host)
                        && (!exported || r.export.visible_to(client))
                })
                .collect();
            let best = hits.iter().map(|i| specificity(&m.rules[*i].host)).max();
            hits.into_iter()
                .filter(|i| Some(specificity(&m.rules[*i].host)) == best)
                .collect()
        };
        if let Some(c) = client {
            let hits = pick(c, false);
            if !hits.is_empty() {
                return hits;
            }
        }
        if let Some(s) = svc_ns.filter(|s| Some(*s) != client) {
            let hits = pick(s, true);
            if !hits.is_empty() {
                return hits;
            }
        }
        let root = m.root_ns.as_str();
        if Some(root) != client && Some(root) != svc_ns {
            return pick(root, true);
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
            let m = Mesh::new(&snap, "istio-system", "istio-system", None);
            for client in [Some("a"), Some("b"), Some("c"), None] {
                for (host, svc_ns) in [("x.a.svc.cluster.local", "a"), ("y.b.svc.cluster.local", "b"), ("z.c.svc.cluster.local", "c")] {
                    proptest::prop_assert_eq!(
                        m.resolve(client, host, Some(svc_ns)),
                        naive(&m, client, host, Some(svc_ns)),
                        "client {:?} host {}", client, host
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
