//! Legacy-era (Istio 1.4) files, as the runbook's "additional information" and "VM Setup" steps make them.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::istio::{DEFAULT_ISTIO_NAMESPACE, LEGACY_HOST_SERVICES};

/// What `cluster.env` says in the legacy era.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyEnv<'a> {
    /// `ISTIO_SERVICE`: the Service the VM is an endpoint of.
    pub service: &'a str,
    /// `ISTIO_SERVICE_CIDR`: what outbound traffic the sidecar captures.
    pub service_cidr: &'a str,
    /// `ISTIO_INBOUND_PORTS`: the ports the VM's workload serves.
    pub inbound_ports: &'a [u16],
    /// `ISTIO_NAMESPACE`: the VM's namespace.
    pub namespace: &'a str,
    /// The Istio namespace (`ISTIO_SYSTEM_NAMESPACE` when not `istio-system`).
    pub istio_namespace: &'a str,
}

/// `cluster.env` in the runbook's order. Every value is a DNS name, a CIDR list or a port list,
/// so no quoting is needed when the sidecar's start script sources it.
pub fn cluster_env(env: &LegacyEnv<'_>) -> String {
    let ports: Vec<String> = env.inbound_ports.iter().map(u16::to_string).collect();
    let mut out = String::new();
    let _ = writeln!(out, "ISTIO_CP_AUTH=MUTUAL_TLS");
    let _ = writeln!(out, "ISTIO_SERVICE={}", env.service);
    let _ = writeln!(out, "ISTIO_SERVICE_CIDR={}", env.service_cidr);
    let _ = writeln!(out, "ISTIO_INBOUND_PORTS={}", ports.join(","));
    let _ = writeln!(out, "ISTIO_NAMESPACE={}", env.namespace);
    if env.istio_namespace != DEFAULT_ISTIO_NAMESPACE {
        let _ = writeln!(out, "ISTIO_SYSTEM_NAMESPACE={}", env.istio_namespace);
    }
    out
}

/// The runbook's `/etc/hosts` lines for the control-plane services, in its order.
pub fn hosts(gateway: IpAddr, istio_namespace: &str) -> String {
    let mut out = String::new();
    for svc in LEGACY_HOST_SERVICES {
        let _ = writeln!(out, "{gateway} {svc} {svc}.{istio_namespace}");
    }
    out
}

/// `gwip.txt` as the runbook's `kubectl … -o jsonpath=… > gwip.txt` leaves it: no newline.
pub fn gwip(gateway: IpAddr) -> String {
    gateway.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_cluster_env() {
        let env = LegacyEnv {
            service: "expandvm",
            service_cidr: "172.16.0.0/16",
            inbound_ports: &[80],
            namespace: "expandvm",
            istio_namespace: "istio-system",
        };
        assert_eq!(
            cluster_env(&env),
            "ISTIO_CP_AUTH=MUTUAL_TLS\nISTIO_SERVICE=expandvm\nISTIO_SERVICE_CIDR=172.16.0.0/16\nISTIO_INBOUND_PORTS=80\nISTIO_NAMESPACE=expandvm\n"
        );
        let other = LegacyEnv {
            istio_namespace: "mesh",
            inbound_ports: &[80, 8080],
            ..env
        };
        let text = cluster_env(&other);
        assert!(text.ends_with("ISTIO_INBOUND_PORTS=80,8080\nISTIO_NAMESPACE=expandvm\nISTIO_SYSTEM_NAMESPACE=mesh\n"), "{text}");
    }

    #[test]
    fn runbook_hosts_use_the_istio_namespace() {
        let ip: IpAddr = "35.1.2.3".parse().unwrap();
        assert_eq!(
            hosts(ip, "istio-system"),
            "35.1.2.3 istio-citadel istio-citadel.istio-system\n35.1.2.3 istio-pilot istio-pilot.istio-system\n35.1.2.3 istio-telemetry istio-telemetry.istio-system\n35.1.2.3 istio-policy istio-policy.istio-system\n"
        );
        assert!(hosts(ip, "mesh").contains("istio-pilot istio-pilot.mesh\n"));
        assert_eq!(gwip(ip), "35.1.2.3");
    }
}
