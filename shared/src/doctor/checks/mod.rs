//! Every doctor check, one per file, listed once in [`ALL`].

mod bundle_certs;
mod bundle_cluster_env;
mod bundle_files;
mod bundle_hosts;
mod ca_plugged;
mod ca_root_consistent;
mod ca_valid;
mod gateway_address;
mod gateway_ports;
mod mtls_control_plane_plaintext;
mod mtls_default_dr;
mod mtls_dr_conflict;
mod mtls_dr_missing_tls;
mod mtls_dr_overlap;
mod mtls_excluded_ports;
mod mtls_metrics_scrape;
mod mtls_plaintext_clients;
mod mtls_policy_consistency;
mod mtls_port_level_clears_tls;
mod mtls_probes;
mod network_global_services;
mod network_labels;
mod vm_credential_expiry;
mod vm_registered_identity;
mod vm_workloadentry_identity;
pub mod workloads;

pub use bundle_certs::BundleCerts;
pub use bundle_cluster_env::BundleClusterEnv;
pub use bundle_files::BundleFiles;
pub use bundle_hosts::BundleHosts;
pub use ca_plugged::CaPlugged;
pub use ca_root_consistent::CaRootConsistent;
pub use ca_valid::CaValid;
pub use gateway_address::GatewayAddress;
pub use gateway_ports::GatewayPorts;
pub use mtls_control_plane_plaintext::MtlsControlPlanePlaintext;
pub use mtls_default_dr::MtlsDefaultDr;
pub use mtls_dr_conflict::MtlsDrConflict;
pub use mtls_dr_missing_tls::MtlsDrMissingTls;
pub use mtls_dr_overlap::MtlsDrOverlap;
pub use mtls_excluded_ports::MtlsExcludedPorts;
pub use mtls_metrics_scrape::MtlsMetricsScrape;
pub use mtls_plaintext_clients::MtlsPlaintextClients;
pub use mtls_policy_consistency::MtlsPolicyConsistency;
pub use mtls_port_level_clears_tls::MtlsPortLevelClearsTls;
pub use mtls_probes::MtlsProbes;
pub use network_global_services::NetworkGlobalServices;
pub use network_labels::NetworkLabels;
pub use vm_credential_expiry::VmCredentialExpiry;
pub use vm_registered_identity::VmRegisteredIdentity;
pub use vm_workloadentry_identity::VmWorkloadentryIdentity;

use super::{Check, Finding};
use crate::snapshot::{Kind, Obj, Snapshot};

/// Every check, in report order.
pub static ALL: &[&dyn Check] = &[
    &CaPlugged,
    &CaValid,
    &CaRootConsistent,
    &MtlsDefaultDr,
    &MtlsControlPlanePlaintext,
    &MtlsDrConflict,
    &MtlsPortLevelClearsTls,
    &MtlsDrMissingTls,
    &MtlsDrOverlap,
    &MtlsPolicyConsistency,
    &MtlsPlaintextClients,
    &MtlsProbes,
    &MtlsMetricsScrape,
    &MtlsExcludedPorts,
    &VmRegisteredIdentity,
    &VmWorkloadentryIdentity,
    &VmCredentialExpiry,
    &GatewayAddress,
    &GatewayPorts,
    &NetworkLabels,
    &NetworkGlobalServices,
    &BundleFiles,
    &BundleCerts,
    &BundleClusterEnv,
    &BundleHosts,
];

/// The check with this id.
pub fn by_id(id: &str) -> Option<&'static dyn Check> {
    ALL.iter().copied().find(|c| c.id() == id)
}

/// One finding per `(check, object)`: several warn/fail findings of one check about the same
/// object (one bad rule seen per port, subset or client) become one — the worst severity, its
/// first hint alone, the other messages appended, namespaces joined, the earliest breakage.
/// Findings that name no object, passes and skips are kept as they are.
pub fn dedupe(mut findings: Vec<Finding>) -> Vec<Finding> {
    use crate::doctor::Severity;
    fn key(f: &Finding) -> (&'static str, &str, Option<&str>) {
        (f.check, f.object.as_str(), f.context.as_deref())
    }
    let bad = |s: Severity| matches!(s, Severity::Warn | Severity::Fail);
    // In place, and grouped by sorting indices rather than by a map of copied keys: at 10 000
    // findings a second vector of them, or of their keys, was megabytes at doctor's peak.
    let mut order: Vec<usize> = (0..findings.len())
        .filter(|i| bad(findings[*i].severity) && !findings[*i].object.is_empty())
        .collect();
    // Stable: within a group, list order, so the first finding of each is the one kept.
    order.sort_by(|a, b| key(&findings[*a]).cmp(&key(&findings[*b])));
    let mut groups: Vec<&[usize]> = order
        .chunk_by(|a, b| key(&findings[*a]) == key(&findings[*b]))
        .filter(|g| g.len() > 1)
        .collect();
    groups.sort_by_key(|g| g[0]);
    let mut merged = vec![false; findings.len()];
    let mut others: std::collections::HashMap<usize, Vec<String>> =
        std::collections::HashMap::new();
    for group in groups {
        let at = group[0];
        for &i in &group[1..] {
            let f = std::mem::take(&mut findings[i]);
            merged[i] = true;
            let kept = &mut findings[at];
            let (mut first, second) = if f.severity > kept.severity {
                (f, std::mem::take(kept))
            } else {
                (std::mem::take(kept), f)
            };
            if first.hint.is_empty() {
                first.hint = second.hint;
            }
            first.breaks = match (first.breaks, second.breaks) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            first.origin = first.origin.or(second.origin);
            let others = others.entry(at).or_default();
            if second.message != first.message && !others.contains(&second.message) {
                others.push(second.message);
            }
            *kept = first.namespaces(second.namespaces);
        }
    }
    let mut i = 0;
    findings.retain_mut(|f| {
        let keep = !merged[i];
        if let Some(others) = others.remove(&i) {
            match others.len() {
                0 => {}
                1 => f.message = format!("{}; also: {}", f.message, others[0]),
                n => {
                    f.message = format!(
                        "{}; also: {} (and {} more like it)",
                        f.message,
                        others[0],
                        n - 1
                    );
                }
            }
        }
        i += 1;
        keep
    });
    findings
}

/// The `kubectl meshvm bundle` command that writes this bundle again, over the old one: its
/// namespace, service account, Service and inbound ports as its cluster.env names them, into the
/// same directory (or archive), in backticks as every hinted command. Every token is real.
pub fn rebundle_command(bundle: &crate::snapshot::VmBundle) -> String {
    use std::fmt::Write as _;
    let env = bundle.cluster_env().unwrap_or_default();
    let get = |k: &str| {
        env.get(k)
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"'))
            .filter(|v| !v.is_empty())
    };
    let mut cmd = String::from("kubectl meshvm bundle");
    if let Some(ns) = get("ISTIO_NAMESPACE") {
        let _ = write!(cmd, " -n {ns}");
    }
    if let Some(sa) = get("SERVICE_ACCOUNT").or_else(|| get("ISTIO_SERVICE_ACCOUNT")) {
        let _ = write!(cmd, " -s {sa}");
    }
    if let Some(svc) = get("ISTIO_SERVICE") {
        let _ = write!(cmd, " --service {svc}");
    }
    if let Some(ports) = get("ISTIO_INBOUND_PORTS").filter(|p| *p != "*") {
        let _ = write!(cmd, " --inbound-ports {ports}");
    }
    let path = bundle.path.display().to_string();
    match path
        .strip_suffix(".tar.gz")
        .or_else(|| path.strip_suffix(".tgz"))
    {
        Some(dir) => {
            let _ = write!(cmd, " -d {dir} --archive {path} --force");
        }
        None => {
            let _ = write!(cmd, " -d {path} --force");
        }
    }
    format!("`{cmd}`")
}

/// ` --context NAME` when several clusters are checked (a hint then names its cluster), else empty.
fn context_flag(snap: &Snapshot, ctx: &crate::doctor::CheckContext<'_>) -> String {
    match &snap.context {
        Some(c) if !ctx.others.is_empty() => format!(" --context {c}"),
        _ => String::new(),
    }
}

/// The command that plugs a CA from the user's CA directory (the one placeholder: `CA_DIR`):
/// `kubectl meshvm prepare -n NS --ca-dir CA_DIR` for the namespace VMs live in (WorkloadGroups,
/// WorkloadEntries, namespaces meshvm made, the bundle's), else the plain Secret.
fn plug_ca_command(snap: &Snapshot, ctx: &crate::doctor::CheckContext<'_>) -> String {
    let managed = |o: &&Obj| o.label("app.kubernetes.io/managed-by") == Some("meshvm");
    let vm_ns = snap
        .of(Kind::WorkloadGroup)
        .iter()
        .chain(snap.of(Kind::WorkloadEntry))
        .map(|o| o.namespace().to_string())
        .chain(
            snap.of(Kind::Namespace)
                .iter()
                .filter(managed)
                .map(|n| n.name().to_string()),
        )
        .chain(
            snap.bundle
                .as_ref()
                .and_then(crate::snapshot::VmBundle::cluster_env)
                .and_then(|e| e.get("ISTIO_NAMESPACE").cloned()),
        )
        .find(|n| !n.is_empty() && *n != ctx.istio_ns);
    let context = context_flag(snap, ctx);
    // The CA reads cacerts only when it starts (Citadel 1.4, istiod alike), so the command
    // restarts it too.
    let ca = match ctx.era {
        Some(crate::istio::Era::Legacy) => "istio-citadel",
        _ => "istiod",
    };
    match vm_ns {
        Some(ns) => format!(
            "`kubectl meshvm prepare -n {ns} --ca-dir CA_DIR --restart-control-plane{context}`"
        ),
        None => format!(
            "`kubectl create secret generic cacerts -n {ns}{context} --from-file=CA_DIR/ca-cert.pem --from-file=CA_DIR/ca-key.pem --from-file=CA_DIR/root-cert.pem --from-file=CA_DIR/cert-chain.pem`, then restart the CA so it loads it: `kubectl rollout restart deployment/{ca} -n {ns}{context}`",
            ns = ctx.istio_ns
        ),
    }
}

/// How a finding that `--fix` repairs introduces the manifest after it: on a cluster, the
/// `--fix` command (with the context when several are checked); from `-f` manifests, which
/// `--fix` does not write to, only the manifest to add.
pub(crate) fn fix_lead(snap: &Snapshot, ctx: &crate::doctor::CheckContext<'_>) -> String {
    if snap.source == crate::snapshot::SourceKind::Files {
        "add this to your manifests".to_string()
    } else {
        format!(
            "`kubectl meshvm doctor --fix{}` creates it; or apply",
            context_flag(snap, ctx)
        )
    }
}

/// `findings`, or one `pass` with `message` when there are none.
fn or_pass(id: &'static str, findings: Vec<Finding>, message: impl Into<String>) -> Vec<Finding> {
    if findings.is_empty() {
        vec![Finding::pass(id, message)]
    } else {
        findings
    }
}

/// A `skip` when the source cannot list one of `kinds`, naming why.
/// The skip a workload check returns when there are no workloads to judge.
fn need_workloads(id: &'static str, ctx: &crate::doctor::CheckContext<'_>) -> Option<Vec<Finding>> {
    ctx.workloads.is_empty().then(|| {
        vec![Finding::skip(
            id,
            "no workloads: no Pods, and no Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs or CronJobs in the manifests",
        )]
    })
}

fn need(id: &'static str, snap: &Snapshot, kinds: &[Kind]) -> Option<Vec<Finding>> {
    for kind in kinds {
        if let Some(why) = snap.refused.get(kind) {
            return Some(vec![
                Finding::skip(id, format!("cannot read {}: {why}", plural(*kind))).hint(
                    "`kubectl meshvm doctor --print-rbac` prints the role doctor needs to read it",
                ),
            ]);
        }
        if let Some(why) = snap.not_served.get(kind) {
            return Some(vec![Finding::skip(
                id,
                format!("the cluster does not serve {}: {why}", plural(*kind)),
            )]);
        }
        if !snap.knows(*kind) {
            let what = match snap.source {
                crate::snapshot::SourceKind::Live => "the cluster does not serve",
                crate::snapshot::SourceKind::Files => "the manifests hold no",
                crate::snapshot::SourceKind::None => "no cluster or manifests given for",
            };
            return Some(vec![Finding::skip(id, format!("{what} {}", plural(*kind)))]);
        }
    }
    None
}

/// `Secrets`, `Endpoints`.
fn plural(kind: Kind) -> String {
    let name = kind.name();
    if name.ends_with('s') {
        name.to_string()
    } else {
        format!("{name}s")
    }
}

/// `a, b, c (+2 more)`.
fn list<S: AsRef<str>>(items: &[S], max: usize) -> String {
    let shown = items
        .iter()
        .take(max)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    let more = items.len().saturating_sub(max);
    if more > 0 {
        format!("{shown} (+{more} more)")
    } else {
        shown
    }
}

/// The gateway Service a VM reaches the control plane through: the era's default name in the
/// Istio namespace, else any Service labelled `istio=eastwestgateway`/`ingressgateway` there.
fn gateway_service<'a>(
    snap: &'a Snapshot,
    era: crate::istio::Era,
    istio_ns: &str,
) -> Option<&'a Obj> {
    snap.get(Kind::Service, istio_ns, era.default_gateway_service())
        .or_else(|| {
            let wanted = match era {
                crate::istio::Era::Modern => "eastwestgateway",
                crate::istio::Era::Legacy => "ingressgateway",
            };
            snap.of(Kind::Service)
                .iter()
                .find(|s| s.namespace() == istio_ns && s.label("istio") == Some(wanted))
        })
}

/// A gateway Service's current addresses: `(IPs, hostnames)` from its load balancer status and
/// `externalIPs`.
fn gateway_addresses(svc: &Obj) -> (Vec<String>, Vec<String>) {
    let mut ips = Vec::new();
    let mut hosts = Vec::new();
    let Some(svc) = svc.typed::<k8s_openapi::api::core::v1::Service>() else {
        return (ips, hosts);
    };
    for ing in svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(ip) = &ing.ip {
            ips.push(ip.clone());
        } else if let Some(h) = &ing.hostname {
            hosts.push(h.clone());
        }
    }
    for ip in svc
        .spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
    {
        ips.push(ip.clone());
    }
    (ips, hosts)
}

/// The mesh's `meshNetworks` (from the `istio` ConfigMap's `meshNetworks` key or the mesh
/// config), as `network → gateways`.
fn mesh_networks(
    snap: &Snapshot,
    istio_ns: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let from_cm = snap
        .get(Kind::ConfigMap, istio_ns, "istio")
        .and_then(|cm| cm.data("meshNetworks"))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| serde_saphyr::from_str::<serde_json::Value>(&t).ok());
    let value = from_cm.or_else(|| snap.mesh_config().and_then(|m| m.mesh_networks.clone()))?;
    let networks = value.get("networks")?.as_object()?.clone();
    (!networks.is_empty()).then_some(networks)
}

/// Whether the mesh spans several networks: network labels, meshNetworks, or a 15443
/// AUTO_PASSTHROUGH gateway server.
fn multi_network(snap: &Snapshot, ctx: &crate::doctor::CheckContext) -> bool {
    let label = crate::istio::NETWORK_LABEL;
    snap.get(Kind::Namespace, "", &ctx.istio_ns)
        .is_some_and(|n| n.label(label).is_some())
        || snap
            .of(Kind::Service)
            .iter()
            .any(|s| s.namespace() == ctx.istio_ns && s.label(label).is_some())
        || mesh_networks(snap, &ctx.istio_ns).is_some()
        || crate::doctor::fix::gateway_servers(snap, u32::from(crate::istio::MULTI_NETWORK_PORT))
            .iter()
            .any(|(_, s)| {
                s.pointer("/tls/mode").and_then(serde_json::Value::as_str)
                    == Some("AUTO_PASSTHROUGH")
            })
}

/// `now` as a `SystemTime`.
fn system_time(secs: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_stable_and_match_file_names() {
        let ids: Vec<&str> = ALL.iter().map(|c| c.id()).collect();
        let expected = [
            "ca.plugged",
            "ca.valid",
            "ca.root-consistent",
            "mtls.default-dr",
            "mtls.control-plane-plaintext",
            "mtls.dr-conflict",
            "mtls.port-level-clears-tls",
            "mtls.dr-missing-tls",
            "mtls.dr-overlap",
            "mtls.policy-consistency",
            "mtls.plaintext-clients",
            "mtls.probes",
            "mtls.metrics-scrape",
            "mtls.excluded-ports",
            "vm.registered-identity",
            "vm.workloadentry-identity",
            "vm.credential-expiry",
            "gateway.address",
            "gateway.ports",
            "network.labels",
            "network.global-services",
            "bundle.files",
            "bundle.certs",
            "bundle.cluster-env",
            "bundle.hosts",
        ];
        assert_eq!(ids, expected);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/doctor/checks");
        for id in ids {
            let file = format!("{dir}/{}.rs", id.replace(['.', '-'], "_"));
            assert!(std::path::Path::new(&file).exists(), "{file}");
            assert!(!by_id(id).unwrap().describe().is_empty());
        }
    }

    #[test]
    fn skip_reasons_read_naturally() {
        let snap = Snapshot::from_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\n",
        )
        .unwrap();
        let skip = need("x", &snap, &[Kind::Service, Kind::Endpoints]).unwrap();
        assert_eq!(skip[0].message, "the manifests hold no Endpoints");
    }

    #[test]
    fn dedupe_keeps_one_finding_per_check_and_object() {
        let on = |f: Finding| f.object("DestinationRule bookinfo/reviews");
        let findings = vec![
            on(Finding::warn("x", "port 9080").hint("patch A").ns("a")),
            on(Finding::fail("x", "subset v1")
                .hint("patch B")
                .ns("b")
                .now()),
            on(Finding::fail("y", "other check")),
            Finding::fail("x", "no object"),
            Finding::fail("x", "no object either"),
        ];
        let out = dedupe(findings);
        assert_eq!(out.len(), 4, "{out:#?}");
        let x = &out[0];
        assert_eq!(x.severity, crate::doctor::Severity::Fail);
        assert_eq!(x.message, "subset v1; also: port 9080");
        assert_eq!(x.hint, "patch B", "one hint: the worst finding's");
        assert_eq!(x.namespaces, ["a", "b"]);
        assert_eq!(x.breaks, Some(crate::doctor::Breaks::Now));
    }

    #[test]
    fn dedupe_merges_interleaved_duplicates_in_list_order_and_keeps_contexts_apart() {
        let on = |f: Finding, o: &str| f.object(o);
        let mut west = on(Finding::warn("x", "in west"), "DestinationRule a/r");
        west.context = Some("west".into());
        let findings = vec![
            on(Finding::warn("x", "m1"), "DestinationRule a/r"),
            on(Finding::warn("x", "n1"), "DestinationRule b/s"),
            on(Finding::warn("x", "m2"), "DestinationRule a/r"),
            west,
            on(Finding::fail("x", "n2"), "DestinationRule b/s"),
            on(Finding::warn("x", "m3"), "DestinationRule a/r"),
        ];
        let out = dedupe(findings);
        let got: Vec<(&str, &str, Option<&str>)> = out
            .iter()
            .map(|f| (f.object.as_str(), f.message.as_str(), f.context.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "DestinationRule a/r",
                    "m1; also: m2 (and 1 more like it)",
                    None
                ),
                ("DestinationRule b/s", "n2; also: n1", None),
                ("DestinationRule a/r", "in west", Some("west")),
            ]
        );
        assert_eq!(out[1].severity, crate::doctor::Severity::Fail);
    }

    /// Three namespaces around one Service kept out of the mesh: `db` lives in an injected
    /// namespace, but its pods opt out of injection. The mesh-wide ISTIO_MUTUAL rule plus a
    /// DISABLE rule for `db` is the right setup (the most specific host wins), at 1.4 and 1.22.
    const SIDECARLESS_DB: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: data, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\nspec: {selector: {app: db}, ports: [{name: tcp-pg, port: 5432}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: data}\nspec: {template: {metadata: {labels: {app: db}, annotations: {sidecar.istio.io/inject: 'false'}}, spec: {containers: [{name: postgres}]}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: db, namespace: data}\nspec: {host: db.data.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}\n";

    fn bad_findings(f: &crate::doctor::testutil::Fixture) -> Vec<Finding> {
        let snap = f.snapshot();
        let opts = crate::doctor::CheckOptions {
            now: Some(crate::doctor::testutil::NOW),
            ..Default::default()
        };
        crate::doctor::run_all(std::slice::from_ref(&snap), &opts)
            .findings
            .into_iter()
            .filter(|f| {
                matches!(
                    f.severity,
                    crate::doctor::Severity::Warn | crate::doctor::Severity::Fail
                )
            })
            .collect()
    }

    #[test]
    fn a_plaintext_rule_for_a_sidecarless_service_is_no_finding_at_1_4_and_1_22() {
        use crate::doctor::testutil::Fixture;
        let cases = [
            (
                "1.4",
                Fixture::legacy()
                    .release(4)
                    .with_default_dr()
                    .with_citadel_dr(),
            ),
            (
                "1.22, auto mTLS off",
                Fixture::modern()
                    .release(22)
                    .auto_mtls(false)
                    .with_default_dr(),
            ),
            (
                "1.22, auto mTLS on",
                Fixture::modern().release(22).with_default_dr(),
            ),
        ];
        for (case, base) in cases {
            let bad = bad_findings(&base.with(SIDECARLESS_DB));
            let about_db: Vec<&Finding> = bad
                .iter()
                .filter(|f| {
                    f.object == "DestinationRule data/db"
                        || f.object == "DestinationRule istio-system/default"
                        || f.message.contains("db.data.svc")
                })
                .collect();
            assert!(about_db.is_empty(), "{case}: {about_db:#?}");
        }
    }

    #[test]
    fn one_bad_rule_gives_one_finding_per_check_with_one_hint() {
        use crate::doctor::testutil::Fixture;
        // A plaintext rule for an in-mesh Service, bad at host, port and subset level, under a
        // STRICT namespace policy, seen by clients of several namespaces.
        let rule = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: ratings, namespace: bookinfo}\nspec: {host: ratings.bookinfo.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}, portLevelSettings: [{port: {number: 9080}, tls: {mode: DISABLE}}]}, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: SIMPLE}}}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: bookinfo}\nspec: {selector: {app: ratings}, ports: [{name: http, port: 9080}, {name: http-admin, port: 9081}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: ratings-a, namespace: bookinfo, labels: {app: ratings, version: v1}}\nspec: {containers: [{name: ratings}, {name: istio-proxy}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: ratings-b, namespace: bookinfo, labels: {app: ratings, version: v2}}\nspec: {containers: [{name: ratings}, {name: istio-proxy}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\nspec: {template: {metadata: {labels: {app: cart}}, spec: {containers: [{name: cart}]}}}\n";
        let cases = [
            (
                "1.4",
                Fixture::legacy().release(4).with_default_dr().with_citadel_dr().with(
                    "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: bookinfo}\nspec: {peers: [{mtls: {mode: STRICT}}]}\n",
                ),
            ),
            (
                "1.22",
                Fixture::modern().release(22).auto_mtls(false).with_default_dr().with(
                    &crate::doctor::testutil::LEGACY[crate::doctor::testutil::LEGACY.find("kind: Namespace\nmetadata: {name: bookinfo").unwrap() - "apiVersion: v1\n".len()..],
                ).with(
                    "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: ratings, namespace: bookinfo}\nspec: {selector: {matchLabels: {app: ratings}}, mtls: {mode: STRICT}}\n",
                ),
            ),
        ];
        for (case, base) in cases {
            let bad = bad_findings(&base.with(rule));
            let on_rule: Vec<&Finding> = bad
                .iter()
                .filter(|f| f.object == "DestinationRule bookinfo/ratings")
                .collect();
            assert!(!on_rule.is_empty(), "{case}: the rule is flagged: {bad:#?}");
            let mut checks: Vec<&str> = on_rule.iter().map(|f| f.check).collect();
            checks.sort_unstable();
            let n = checks.len();
            checks.dedup();
            assert_eq!(
                n,
                checks.len(),
                "{case}: one finding per check: {on_rule:#?}"
            );
            for f in &on_rule {
                assert!(
                    !f.hint.is_empty() && f.hint.matches("kubectl ").count() <= 1,
                    "{case}: one hint: {f:#?}"
                );
            }
        }
    }

    #[test]
    fn a_fix_hint_of_one_of_several_clusters_names_its_context() {
        use crate::doctor::testutil::Fixture;
        let mut west = Fixture::legacy().live().snapshot();
        west.context = Some("west".into());
        let out = Fixture::legacy().live().other(west).run(&MtlsDefaultDr);
        assert!(
            out[0]
                .hint
                .starts_with("`kubectl meshvm doctor --fix --context test` creates it"),
            "{}",
            out[0].hint
        );
        let out = Fixture::legacy().live().run(&MtlsDefaultDr);
        assert!(
            out[0]
                .hint
                .starts_with("`kubectl meshvm doctor --fix` creates it"),
            "{}",
            out[0].hint
        );
    }

    #[test]
    fn manifests_read_with_f_are_told_what_to_add_not_to_run_fix() {
        use crate::doctor::testutil::Fixture;
        let mut snap = Fixture::legacy().snapshot();
        snap.source = crate::snapshot::SourceKind::Files;
        let opts = crate::doctor::CheckOptions::default();
        let ctx = crate::doctor::CheckContext::new(&snap, &opts, Vec::new());
        let out = MtlsDefaultDr.run(&snap, &ctx);
        assert!(
            out[0].hint.starts_with("add this to your manifests:\n"),
            "{}",
            out[0].hint
        );
        assert!(!out[0].hint.contains("--fix"), "{}", out[0].hint);
    }

    #[test]
    fn list_truncates() {
        assert_eq!(list(&["a", "b", "c"], 2), "a, b (+1 more)");
        assert_eq!(list(&["a"], 2), "a");
    }
}
