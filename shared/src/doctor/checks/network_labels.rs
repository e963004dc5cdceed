//! `network.labels`: multi-network labels are present and consistent.

use serde_json::Value;

use super::{gateway_service, mesh_networks, multi_network, or_pass};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{Era, NETWORK_LABEL};
use crate::snapshot::{Kind, Snapshot};

/// Warns, on a multi-network mesh, when the Istio namespace or the gateway Service lacks the
/// network label or they disagree, when WorkloadGroups/WorkloadEntries name no network, or (legacy)
/// when meshNetworks is missing or a network has no gateway.
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
}
