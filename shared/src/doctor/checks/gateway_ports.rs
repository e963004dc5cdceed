//! `gateway.ports`: the era's control-plane ports are exposed end to end on the gateway.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{gateway_service, multi_network, need, or_pass};
use crate::doctor::fix::{gateway_servers, service_ports};
use crate::doctor::mesh::service_spec;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{Era, MULTI_NETWORK_PORT};
use crate::snapshot::{Kind, Obj, Snapshot, borrowed, string_map};

/// For each port a VM needs — legacy 15011 (Pilot) and 8060 (Citadel); modern 15012 (istiod's
/// xDS and CA); 15443 when multi-network — fails unless the gateway Service exposes it, a
/// Gateway bound to that gateway has a server on it, and (except 15443's AUTO_PASSTHROUGH) a
/// VirtualService on that Gateway routes it.
///
/// 15017 (istiod's injection webhook), which `samples/multicluster/expose-istiod.yaml` also
/// exposes, is not required: VMs reach istiod on 15012 only (istio/istio@1.22.0
/// istioctl/pkg/workload/workload.go:588-591, the address `istioctl x workload entry configure`
/// writes into the VM's mesh config); 15017 serves remote clusters' API servers calling the
/// injection webhook (manifests/charts/istiod-remote/templates/endpoints.yaml:13-22).
pub struct GatewayPorts;

const ID: &str = "gateway.ports";

/// Whether a Gateway's selector picks the pods behind the gateway Service. Pilot matches a
/// Gateway's `selector` against the gateway proxy's own labels — its pod's — not the Service's
/// selector (istio/istio@1.4.2 pilot/pkg/model/push_context.go:1537-1545 `mergeGateways` via
/// `Labels.IsSupersetOf`; @1.22.0 pilot/pkg/model/push_context.go:2214-2228). The operator's
/// 1.4.2 ingress Service selects `app: istio-ingressgateway` while its Gateways select
/// `istio: ingressgateway`: both are on the pods. So the pods' labels are the pod templates of the
/// Deployments (and the Pods) the Service selects; only when none is visible (manifest files
/// without the Deployment) does the Service's selector stand in for them.
pub(super) fn binds(snap: &Snapshot, gateway: &Obj, svc: &Obj) -> bool {
    let selector = string_map(gateway.at(&["spec", "selector"]));
    if selector.is_empty() {
        return false;
    }
    let svc_selector = borrowed(service_spec(svc).and_then(|s| s.selector.as_ref()));
    let behind = |labels: &BTreeMap<&str, &str>| {
        !svc_selector.is_empty() && svc_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let templates = snap
        .of(Kind::Deployment)
        .iter()
        .filter(|d| d.namespace() == svc.namespace())
        .map(Obj::template_labels);
    let pods = snap.pods_in(svc.namespace()).map(|(p, _)| p.labels());
    let workloads: Vec<BTreeMap<&str, &str>> = templates.chain(pods).filter(behind).collect();
    if workloads.is_empty() {
        return selector.iter().all(|(k, v)| svc_selector.get(k) == Some(v));
    }
    workloads
        .iter()
        .any(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Whether a VirtualService bound to `gateway` routes TCP/TLS (or HTTP) traffic on `port`.
fn routed(snap: &Snapshot, gateway: &Obj, port: u32) -> bool {
    snap.of(Kind::VirtualService).iter().any(|vs| {
        let bound = vs
            .at(&["spec", "gateways"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|g| {
                g == format!("{}/{}", gateway.namespace(), gateway.name())
                    || (g == gateway.name() && vs.namespace() == gateway.namespace())
            });
        bound
            && ["tcp", "tls", "http"].iter().any(|kind| {
                vs.spec()
                    .get(*kind)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|route| {
                        let matches = route.get("match").and_then(Value::as_array);
                        matches.is_none_or(|ms| {
                            ms.is_empty()
                                || ms.iter().any(|m| {
                                    m.get("port")
                                        .and_then(Value::as_u64)
                                        .is_none_or(|p| p == u64::from(port))
                                })
                        })
                    })
            })
    })
}

impl Check for GatewayPorts {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "an era's port is not exposed end to end (Service port + Gateway server + VirtualService route): legacy 15011, 8060; modern 15012; 15443 when multi-network"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let Some(era) = ctx.era else {
            return vec![Finding::skip(
                ID,
                "era unknown: cannot tell which ports VMs need",
            )];
        };
        if let Some(skip) = need(ID, snap, &[Kind::Service]) {
            return skip;
        }
        let Some(svc) = gateway_service(snap, era, &ctx.istio_ns) else {
            return vec![Finding::skip(
                ID,
                format!(
                    "no gateway Service {} (see gateway.address)",
                    era.default_gateway_service()
                ),
            )];
        };
        let mut ports: Vec<(u32, &str)> = match era {
            Era::Legacy => vec![(15011, "Pilot xDS"), (8060, "Citadel CSR")],
            Era::Modern => vec![(15012, "istiod xDS and CA")],
        };
        if multi_network(snap, ctx) {
            ports.push((u32::from(MULTI_NETWORK_PORT), "cross-network traffic"));
        }
        let on_service = service_ports(svc);
        let mut out = Vec::new();
        for (port, what) in &ports {
            let mut missing = Vec::new();
            if !on_service.contains(port) {
                missing.push(format!("a port on Service {}", svc.ns_name()));
            }
            let servers: Vec<_> = gateway_servers(snap, *port)
                .into_iter()
                .filter(|(g, _)| binds(snap, g, svc))
                .collect();
            if servers.is_empty() {
                missing.push("a Gateway server".to_string());
            } else if *port != u32::from(MULTI_NETWORK_PORT)
                && !servers.iter().any(|(g, _)| routed(snap, g, *port))
            {
                missing.push("a VirtualService route".to_string());
            }
            if !missing.is_empty() {
                out.push(
                    Finding::fail(ID, format!("port {port} ({what}) is not exposed end to end: missing {}", missing.join(", ")))
                        .on(svc)
                        .hint(match era {
                            Era::Legacy => "install mesh expansion on the ingress gateway (meshExpansion.enabled): Service ports, meshexpansion-gateway, meshexpansion-vs-*".to_string(),
                            Era::Modern => "apply samples/multicluster/expose-istiod.yaml (and expose-services.yaml for 15443) and add the ports to the east-west gateway Service".to_string(),
                        }),
                );
            }
        }
        let list: Vec<String> = ports.iter().map(|(p, _)| p.to_string()).collect();
        or_pass(
            ID,
            out,
            format!(
                "ports {} exposed end to end on {}",
                list.join(", "),
                svc.reference()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{Fixture, expect};

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istio-ingressgateway, namespace: istio-system}\nspec:\n  template:\n    metadata: {labels: {app: istio-ingressgateway, istio: LABEL}}\n";

    #[test]
    fn table() {
        let cases = [
            ("legacy mesh expansion", Fixture::legacy(), Pass),
            ("modern east-west gateway", Fixture::modern(), Pass),
            (
                "legacy without the citadel route",
                Fixture::legacy().snapshot_yaml_replace(
                    "{name: meshexpansion-vs-citadel, namespace: istio-system}",
                    "{name: meshexpansion-vs-citadel, namespace: elsewhere}",
                ),
                Fail,
            ),
            (
                "modern without the webhook port: VMs do not need 15017",
                Fixture::modern().snapshot_yaml_replace(", {name: tls-webhook, port: 15017}", ""),
                Pass,
            ),
            (
                "modern without the istiod Service port",
                Fixture::modern().snapshot_yaml_replace("{name: tls-istiod, port: 15012}, ", ""),
                Fail,
            ),
            (
                "modern, 15443 server missing",
                Fixture::modern().snapshot_yaml_replace("number: 15443", "number: 15444"),
                Fail,
            ),
            (
                "legacy operator install: the Service selects app=, the Gateways istio=, the pods carry both",
                Fixture::legacy()
                    .snapshot_yaml_replace(
                        "  selector: {istio: ingressgateway}\n  ports: [{name: tcp-pilot-grpc-tls",
                        "  selector: {app: istio-ingressgateway}\n  ports: [{name: tcp-pilot-grpc-tls",
                    )
                    .with(&DEPLOYMENT.replace("LABEL", "ingressgateway")),
                Pass,
            ),
            (
                "the same, but the pods do not carry the Gateways' label",
                Fixture::legacy()
                    .snapshot_yaml_replace(
                        "  selector: {istio: ingressgateway}\n  ports: [{name: tcp-pilot-grpc-tls",
                        "  selector: {app: istio-ingressgateway}\n  ports: [{name: tcp-pilot-grpc-tls",
                    )
                    .with(&DEPLOYMENT.replace("LABEL", "other")),
                Fail,
            ),
            ("unknown era", Fixture::empty(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&GatewayPorts), severity, case);
        }
    }
}
