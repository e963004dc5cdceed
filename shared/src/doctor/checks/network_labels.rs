//! `network.labels`: multi-network labels are present and consistent.

use serde_json::Value;

use super::{gateway_service, mesh_networks, multi_network, or_pass};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{Era, NETWORK_LABEL};
use crate::snapshot::{Kind, Snapshot};

/// Warns, on a multi-network mesh, when the Istio namespace or the gateway Service lacks the
/// network label or they disagree, when WorkloadGroups/WorkloadEntries name no network, or (legacy)
/// when meshNetworks is missing or a network has no gateway; (modern) when a WorkloadGroup names
/// the cluster's network although its VM's bundle reaches istiod through the east-west gateway.
pub struct NetworkLabels;

const ID: &str = "network.labels";

impl Check for NetworkLabels {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "multi-network labels missing or inconsistent (Istio namespace, gateway Service, WorkloadGroup/Entry network)"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if !multi_network(snap, ctx) {
            return vec![Finding::pass(
                ID,
                "single network: no network labels, meshNetworks or cross-network gateway",
            )];
        }
        let mut out = Vec::new();
        if ctx.era == Some(Era::Legacy) {
            match mesh_networks(snap, &ctx.istio_ns) {
                None => out.push(
                    Finding::warn(ID, "multi-network legacy mesh without meshNetworks: Pilot cannot route to VMs on the other network through the gateway")
                        .object(format!("ConfigMap {}/istio", ctx.istio_ns))
                        .hint("set global.meshNetworks (helm) so each network names its gateway (registryServiceName or address)"),
                ),
                Some(networks) => {
                    for (name, net) in &networks {
                        if net.get("gateways").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                            out.push(
                                Finding::warn(ID, format!("meshNetworks network {name} has no gateways: traffic to it is not routed"))
                                    .object(format!("ConfigMap {}/istio", ctx.istio_ns)),
                            );
                        }
                    }
                }
            }
        } else {
            let ns_net = snap
                .get(Kind::Namespace, "", &ctx.istio_ns)
                .and_then(|n| n.label(NETWORK_LABEL));
            // The network to name when none is set: the gateway's, else Istio's sample name for a
            // cluster's own network (istio 1.22.0 samples/multicluster/README.md:22 `export
            // NETWORK=network1`; rendered/eastwest-gateway.network1.iop.yaml:14).
            let gateway_net = gateway_service(snap, Era::Modern, &ctx.istio_ns)
                .and_then(|s| s.label(NETWORK_LABEL).map(str::to_string));
            let suggest = ns_net
                .map(str::to_string)
                .or(gateway_net)
                .unwrap_or_else(|| "network1".to_string());
            if snap.knows(Kind::Namespace) && ns_net.is_none() {
                out.push(
                        Finding::warn(ID, format!("Istio namespace lacks {NETWORK_LABEL}: istiod does not know its own network"))
                            .object(format!("Namespace {}", ctx.istio_ns))
                            .hint(format!("label it with the cluster's network: `kubectl label namespace {} {NETWORK_LABEL}={suggest}`", ctx.istio_ns)),
                    );
            }
            if let Some(svc) = gateway_service(snap, Era::Modern, &ctx.istio_ns) {
                match (svc.label(NETWORK_LABEL), ns_net) {
                        (None, _) => out.push(
                            Finding::warn(ID, format!("gateway Service lacks {NETWORK_LABEL}: istiod does not use it for cross-network traffic"))
                                .on(svc)
                                .hint(format!("label it with the cluster's network: `kubectl -n {} label service {} {NETWORK_LABEL}={suggest}`", ctx.istio_ns, svc.name())),
                        ),
                        (Some(g), Some(n)) if g != n => out.push(
                            Finding::warn(ID, format!("gateway Service is on network {g} but the Istio namespace says {n}"))
                                .on(svc),
                        ),
                        _ => {}
                    }
            }
            for wg in snap.of(Kind::WorkloadGroup) {
                if wg
                    .str_at(&["spec", "template", "network"])
                    .is_none_or(str::is_empty)
                {
                    out.push(
                            Finding::warn(ID, "template names no network: VMs registered from it are assumed to share the cluster's network")
                                .on(wg)
                                .hint("set spec.template.network to the VMs' network"),
                        );
                }
            }
            out.extend(vm_on_cluster_network(snap, ctx, ns_net));
            for we in snap.of(Kind::WorkloadEntry) {
                if we.str_at(&["spec", "network"]).is_none_or(str::is_empty) {
                    out.push(
                            Finding::warn(ID, "names no network: traffic to it is not sent through the cross-network gateway")
                                .on(we)
                                .hint("set spec.network to the VM's network"),
                        );
                }
            }
        }
        or_pass(ID, out, "network labels present and consistent")
    }
}

/// The network name Istio's VM docs give VMs outside the cluster's network
/// (istio.io/latest/docs/setup/install/virtual-machine/ "multi-network": `VM_NETWORK="vm-network"`).
const VM_NETWORK: &str = "vm-network";

/// A network is a set of endpoints that reach each other by IP (istio.io/latest/docs/ops/
/// deployment/deployment-models/#network-models). A VM whose bundle reaches istiod through the
/// east-west gateway (its `hosts` maps istiod to the gateway's address) is not on the pod
/// network; if its WorkloadGroup still names the cluster's network, istiod hands pods the VM's
/// IP to dial directly, and the VM pod IPs it cannot reach, instead of routing both ways through
/// the gateway. Warn, not fail: a VM routed to the pod network may use the gateway by choice.
/// Without a bundle doctor cannot tell how the VM reaches istiod, and says nothing.
fn vm_on_cluster_network(
    snap: &Snapshot,
    ctx: &CheckContext,
    cluster_net: Option<&str>,
) -> Vec<Finding> {
    let (Some(bundle), Some(cluster_net)) = (&snap.bundle, cluster_net) else {
        return Vec::new();
    };
    let Some(gateway) = gateway_service(snap, Era::Modern, &ctx.istio_ns) else {
        return Vec::new();
    };
    let (ips, _) = super::gateway_addresses(gateway);
    let hosts = bundle
        .text("hosts")
        .map(|t| super::bundle_hosts::parse_hosts(&t))
        .unwrap_or_default();
    let Some((name, ip)) = hosts
        .iter()
        .find(|(n, ip)| n.starts_with("istiod") && ips.contains(ip))
    else {
        return Vec::new();
    };
    let env = bundle.cluster_env().unwrap_or_default();
    let get = |k: &str| {
        env.get(k)
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            .filter(|v| !v.is_empty())
    };
    let (vm_ns, sa) = (get("ISTIO_NAMESPACE"), get("SERVICE_ACCOUNT"));
    snap.of(Kind::WorkloadGroup)
        .iter()
        .filter(|wg| Some(wg.namespace()) == vm_ns.as_deref())
        .filter(|wg| {
            sa.is_none() || wg.str_at(&["spec", "template", "serviceAccount"]) == sa.as_deref()
        })
        .filter(|wg| wg.str_at(&["spec", "template", "network"]) == Some(cluster_net))
        .map(|wg| {
            Finding::warn(ID, format!("puts its VMs on network {cluster_net}, the cluster's own, but the bundle reaches istiod through the east-west gateway ({name} → {ip}): pods would dial the VM's IP directly, and the VM pod IPs it cannot reach"))
                .on(wg)
                .hint(format!("put the VM on a network of its own, then re-register it: `kubectl -n {} patch workloadgroup {} --type=merge -p '{{\"spec\":{{\"template\":{{\"network\":\"{VM_NETWORK}\"}}}}}}'`", wg.namespace(), wg.name()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Pass, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    #[test]
    fn table() {
        let wg = |network: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: vm, namespace: vms}}\nspec: {{template: {{serviceAccount: vm{network}}}}}\n"
            )
        };
        let cases = [
            ("modern, labelled", Fixture::modern(), Pass),
            ("workload group with network", Fixture::modern().with(&wg(", network: vm-net")), Pass),
            ("workload group without network", Fixture::modern().with(&wg("")), Warn),
            ("gateway label disagrees", Fixture::modern().snapshot_yaml_replace("istio: eastwestgateway, topology.istio.io/network: network1", "istio: eastwestgateway, topology.istio.io/network: network2"), Warn),
            ("legacy single network", Fixture::legacy(), Pass),
            ("legacy multi-network without meshNetworks", Fixture::legacy().with("apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {name: x, namespace: istio-system}\nspec: {selector: {istio: ingressgateway}, servers: [{port: {number: 15443, protocol: TLS}, tls: {mode: AUTO_PASSTHROUGH}, hosts: ['*.local']}]}\n"), Warn),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&NetworkLabels), severity, case);
        }
    }

    #[test]
    fn a_vm_behind_the_gateway_is_not_on_the_cluster_network() {
        let wg = |network: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: vm, namespace: vms}}\nspec: {{template: {{serviceAccount: vm, network: {network}}}}}\n"
            )
        };
        let bundle_on = |ip: &str, network: &str| {
            let hosts = format!("{ip} istiod.istio-system.svc\n");
            let env = b"ISTIO_NAMESPACE='vms'\nSERVICE_ACCOUNT='vm'\n";
            Fixture::modern().with(&wg(network)).bundle(&[
                ("hosts", hosts.as_bytes(), 0o644),
                ("cluster.env", env, 0o644),
            ])
        };
        let bundle = |ip: &str| bundle_on(ip, "network1");
        let cases = [
            (
                "through the gateway, same network",
                bundle("34.9.8.7"),
                Warn,
            ),
            ("direct to istiod, same network", bundle("10.96.0.10"), Pass),
            (
                "through the gateway, own network",
                bundle_on("34.9.8.7", "vm-network"),
                Pass,
            ),
            ("no bundle", Fixture::modern().with(&wg("network1")), Pass),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&NetworkLabels), severity, case);
        }
        let out = bundle("34.9.8.7").run(&NetworkLabels);
        assert_eq!(out[0].object, "WorkloadGroup vms/vm");
        assert!(
            out[0].hint.ends_with(r#"`kubectl -n vms patch workloadgroup vm --type=merge -p '{"spec":{"template":{"network":"vm-network"}}}'`"#),
            "{out:#?}"
        );
    }
}
