//! `gateway.address`: the gateway a VM reaches the control plane through has an address.

use super::{gateway_addresses, gateway_service, need};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::snapshot::{Kind, Snapshot, SourceKind};

/// Fails when the era's gateway Service is missing or has no external address; warns when it
/// has only a hostname (the VM's `/etc/hosts` needs an IP).
pub struct GatewayAddress;

const ID: &str = "gateway.address";

impl Check for GatewayAddress {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "the gateway Service has no address (hostname only: warn)"
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
                "era unknown: cannot tell which gateway VMs use",
            )];
        };
        if let Some(skip) = need(ID, snap, &[Kind::Service]) {
            return skip;
        }
        let Some(svc) = gateway_service(snap, era, &ctx.istio_ns) else {
            return vec![
                Finding::fail(ID, format!("no gateway Service {} in {}: VMs cannot reach the control plane", era.default_gateway_service(), ctx.istio_ns))
                    .object(format!("Service {}/{}", ctx.istio_ns, era.default_gateway_service()))
                    .hint("install the gateway (legacy: the ingress gateway with mesh expansion; modern: the east-west gateway)"),
            ];
        };
        let (ips, hosts) = gateway_addresses(svc);
        if !ips.is_empty() {
            return vec![Finding::pass(
                ID,
                format!("{} has address {}", svc.reference(), ips.join(", ")),
            )];
        }
        if !hosts.is_empty() {
            return vec![
                Finding::warn(ID, format!("has only a hostname ({}): a VM's /etc/hosts needs an IP, which may change", hosts.join(", ")))
                    .on(svc)
                    .hint(format!("give bundle the address the name resolves to now (`getent hosts {}` prints it) with --gateway-ip, and bundle again when it changes", hosts[0])),
            ];
        }
        if snap.source == SourceKind::Files
            && svc
                .typed::<k8s_openapi::api::core::v1::Service>()
                .and_then(|s| s.status.as_ref())
                .is_none()
        {
            return vec![Finding::skip(
                ID,
                format!(
                    "{} carries no status in the manifests: only the live cluster knows its address",
                    svc.reference()
                ),
            )];
        }
        let kind = crate::doctor::mesh::service_spec(svc)
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("ClusterIP");
        let why = if kind == "LoadBalancer" {
            "its load balancer has no address yet".to_string()
        } else {
            format!("type {kind} has no external address")
        };
        vec![
            Finding::fail(
                ID,
                format!("{why}: VMs outside the cluster cannot reach it"),
            )
            .on(svc)
            .hint("wait for the load balancer, or set spec.externalIPs / use type LoadBalancer"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    #[test]
    fn table() {
        let modern_with = |status: &str| {
            Fixture::modern()
                .snapshot_yaml_replace("loadBalancer: {ingress: [{ip: 34.9.8.7}]}", status)
        };
        let cases = [
            ("legacy with ip", Fixture::legacy(), Pass),
            ("modern with ip", Fixture::modern(), Pass),
            ("hostname only", modern_with("loadBalancer: {ingress: [{hostname: lb.example.com}]}"), Warn),
            ("pending", modern_with("loadBalancer: {}"), Fail),
            ("no gateway", Fixture::empty().with("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: istiod, namespace: istio-system}\n"), Fail),
            ("unknown era", Fixture::empty().with("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\n"), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&GatewayAddress), severity, case);
        }
    }
}
