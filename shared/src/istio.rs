//! Istio eras, well-known names and ports, and the API resources of Istio's kinds.

use std::fmt;

use ::kube::core::{ApiResource, GroupVersionKind};
use clap::ValueEnum;
use serde::Serialize;

/// The Istio namespace unless told otherwise.
pub const DEFAULT_ISTIO_NAMESPACE: &str = "istio-system";
/// The plugged-in CA secret Citadel and istiod read.
pub const CACERTS_SECRET: &str = "cacerts";
/// The four keys of [`CACERTS_SECRET`], in `kubectl create secret --from-file` order.
pub const CACERTS_KEYS: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];
/// The annotation `istioctl register` puts on a VM Service (legacy era).
pub const SERVICE_ACCOUNTS_ANNOTATION: &str = "alpha.istio.io/kubernetes-serviceaccounts";
/// The per-namespace root certificate ConfigMap istiod writes (modern era).
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// The label Istio reads a workload's or namespace's network from.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Which generation of Istio runs in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// Istio 1.4: Citadel, `istio.<sa>` secrets, mesh-expansion ports on the ingress gateway.
    Legacy,
    /// istiod (1.5 and later): WorkloadGroup/WorkloadEntry, token bootstrap, east-west gateway.
    Modern,
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        })
    }
}

impl Era {
    /// The gateway Service a VM reaches the control plane through, by default.
    pub fn default_gateway_service(self) -> &'static str {
        match self {
            Era::Legacy => "istio-ingressgateway",
            Era::Modern => "istio-eastwestgateway",
        }
    }

    /// Ports the gateway must expose for a VM: `(port, what)`.
    pub fn gateway_ports(self) -> &'static [(u16, &'static str)] {
        match self {
            Era::Legacy => &[
                (15011, "pilot (xDS over mTLS)"),
                (8060, "citadel (CSR)"),
                (15004, "mixer"),
                (853, "DNS over TLS"),
            ],
            Era::Modern => &[(15012, "istiod (xDS + CA)"), (15017, "istiod webhook")],
        }
    }
}

/// The cross-network port both eras use when the VM is on another network.
pub const MULTI_NETWORK_PORT: u16 = 15443;

/// The legacy control-plane services a VM reaches through `/etc/hosts`, in the runbook's order.
pub const LEGACY_HOST_SERVICES: [&str; 4] = [
    "istio-citadel",
    "istio-pilot",
    "istio-telemetry",
    "istio-policy",
];

/// Tell the era from the Deployments of the Istio namespace: istiod is modern; Citadel or
/// Pilot without istiod is legacy; neither is unknown (`None`).
pub fn era_from_deployments<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Era> {
    let mut legacy = false;
    for name in names {
        if name == "istiod" || name.starts_with("istiod-") {
            return Some(Era::Modern);
        }
        if matches!(name, "istio-citadel" | "istio-pilot") {
            legacy = true;
        }
    }
    legacy.then_some(Era::Legacy)
}

/// Detect the era from the Deployments of the Istio namespace (one metadata list, in full
/// before Kubernetes 1.15: see [`crate::read::list_metadata`]).
/// `None` when neither Citadel/Pilot nor istiod runs there.
pub async fn detect_era(
    conn: &crate::kube::Connection,
    istio_namespace: &str,
) -> Result<Option<Era>, crate::kube::Error> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: ::kube::Api<Deployment> =
        ::kube::Api::namespaced(conn.client.clone(), istio_namespace);
    let names = crate::read::list_metadata(
        conn,
        &api,
        crate::kube::Request::new("list", "deployments.apps").ns(istio_namespace),
        &::kube::api::ListParams::default(),
    )
    .await?;
    Ok(era_from_deployments(
        names.iter().filter_map(|m| m.name.as_deref()),
    ))
}

/// An Istio kind meshvm reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IstioKind {
    /// networking.istio.io DestinationRule
    DestinationRule,
    /// networking.istio.io Gateway
    Gateway,
    /// networking.istio.io VirtualService
    VirtualService,
    /// networking.istio.io ServiceEntry
    ServiceEntry,
    /// networking.istio.io WorkloadEntry (modern)
    WorkloadEntry,
    /// networking.istio.io WorkloadGroup (modern)
    WorkloadGroup,
    /// security.istio.io PeerAuthentication (modern)
    PeerAuthentication,
    /// authentication.istio.io MeshPolicy (1.4, cluster-scoped)
    MeshPolicy,
    /// authentication.istio.io Policy (1.4)
    Policy,
}

impl IstioKind {
    /// `(group, kind, plural, namespaced)`.
    pub fn parts(self) -> (&'static str, &'static str, &'static str, bool) {
        match self {
            IstioKind::DestinationRule => (
                "networking.istio.io",
                "DestinationRule",
                "destinationrules",
                true,
            ),
            IstioKind::Gateway => ("networking.istio.io", "Gateway", "gateways", true),
            IstioKind::VirtualService => (
                "networking.istio.io",
                "VirtualService",
                "virtualservices",
                true,
            ),
            IstioKind::ServiceEntry => (
                "networking.istio.io",
                "ServiceEntry",
                "serviceentries",
                true,
            ),
            IstioKind::WorkloadEntry => (
                "networking.istio.io",
                "WorkloadEntry",
                "workloadentries",
                true,
            ),
            IstioKind::WorkloadGroup => (
                "networking.istio.io",
                "WorkloadGroup",
                "workloadgroups",
                true,
            ),
            IstioKind::PeerAuthentication => (
                "security.istio.io",
                "PeerAuthentication",
                "peerauthentications",
                true,
            ),
            IstioKind::MeshPolicy => (
                "authentication.istio.io",
                "MeshPolicy",
                "meshpolicies",
                false,
            ),
            IstioKind::Policy => ("authentication.istio.io", "Policy", "policies", true),
        }
    }

    /// The API versions meshvm speaks for this kind, newest first. Which one a cluster serves
    /// is discovered per kind ([`crate::read::served`]): Istio 1.8–1.12 serve WorkloadGroup only
    /// at v1alpha3 while the group prefers v1beta1 (istio/api@1.8.0, @1.12.0
    /// `customresourcedefinitions.gen.yaml`: `workloadgroups` versions `[v1alpha3]`), 1.13 adds
    /// v1beta1 (istio/api@1.13.0), 1.22 serves v1 for every networking kind (istio/api@1.22.0).
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            IstioKind::MeshPolicy | IstioKind::Policy => &["v1alpha1"],
            IstioKind::PeerAuthentication => &["v1", "v1beta1"],
            _ => &["v1", "v1beta1", "v1alpha3"],
        }
    }

    /// The kind as discovery names it, for [`crate::read::served`].
    pub fn kind_ref(self) -> crate::read::KindRef {
        let (group, kind, plural, _) = self.parts();
        crate::read::KindRef {
            group,
            kind,
            plural,
            versions: self.versions(),
        }
    }

    /// The version the cluster serves this kind at (discovered per kind: Istio 1.8–1.12 serve
    /// WorkloadGroup only at v1alpha3), `None` when it does not serve it.
    pub async fn served_version(
        self,
        conn: &crate::kube::Connection,
    ) -> Result<Option<String>, crate::kube::Error> {
        Ok(crate::read::served(conn, &self.kind_ref())
            .await?
            .version()
            .map(str::to_owned))
    }

    /// The kube-rs resource for this kind at `version`.
    pub fn resource(self, version: &str) -> ApiResource {
        let (group, kind, plural, _) = self.parts();
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// `destinationrules.networking.istio.io`, as RBAC and error messages name it.
    pub fn resource_name(self) -> String {
        let (group, _, plural, _) = self.parts();
        format!("{plural}.{group}")
    }
}

/// The gateway's address from its Service: the load balancer's IP, else the first external IP.
pub fn gateway_address(
    service: &k8s_openapi::api::core::v1::Service,
) -> Result<std::net::IpAddr, GatewayProblem> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_from_deployments() {
        assert_eq!(
            era_from_deployments(["istiod", "istio-ingressgateway"]),
            Some(Era::Modern)
        );
        assert_eq!(era_from_deployments(["istiod-rev-1"]), Some(Era::Modern));
        assert_eq!(
            era_from_deployments(["istio-citadel", "istio-pilot", "istio-ingressgateway"]),
            Some(Era::Legacy)
        );
        assert_eq!(era_from_deployments(["istio-ingressgateway"]), None);
        assert_eq!(era_from_deployments([]), None);
    }

    #[test]
    fn resources_have_group_version_plural() {
        let r = IstioKind::DestinationRule.resource("v1alpha3");
        assert_eq!(r.api_version, "networking.istio.io/v1alpha3");
        assert_eq!(r.plural, "destinationrules");
        assert_eq!(
            IstioKind::PeerAuthentication.resource_name(),
            "peerauthentications.security.istio.io"
        );
    }
}
