//! `bundle.cluster-env`: cluster.env has the keys the VM's sidecar reads, well-formed, and covers the Service CIDR.

use std::net::IpAddr;

use super::{list, or_pass};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::Era;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::ServiceCIDR;

use crate::snapshot::{Kind, Snapshot, parse_env};

/// Fails when required keys are missing or malformed (CIDRs, ports, `ISTIO_CP_AUTH`), and — with
/// a cluster to compare — when `ISTIO_SERVICE_CIDR` does not cover every Service ClusterIP (the
/// VM's iptables then let traffic to those Services bypass the sidecar); warns (modern) when
/// ISTIO_INBOUND_PORTS differ from the ports of the WorkloadGroup the bundle was made from.
pub struct BundleClusterEnv;

const ID: &str = "bundle.cluster-env";

/// Keys each era's sidecar scripts need (the runbook's cluster.env; istioctl's golden for modern).
fn required(era: Era) -> &'static [&'static str] {
    match era {
        Era::Legacy => &[
            "ISTIO_CP_AUTH",
            "ISTIO_SERVICE",
            "ISTIO_SERVICE_CIDR",
            "ISTIO_INBOUND_PORTS",
            "ISTIO_NAMESPACE",
        ],
        Era::Modern => &[
            "ISTIO_NAMESPACE",
            "SERVICE_ACCOUNT",
            "ISTIO_SERVICE_CIDR",
            "ISTIO_INBOUND_PORTS",
        ],
    }
}

/// A parsed CIDR: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr(IpAddr, u8);

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (ip, len) = text.trim().split_once('/')?;
        let ip: IpAddr = ip.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr(ip, len))
    }

    /// Whether this range includes all of `other`.
    fn covers(self, other: Cidr) -> bool {
        self.1 <= other.1 && self.contains(other.0)
    }

    fn contains(self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((net, w1), (addr, w2)) = (bits(self.0), bits(ip));
        if w1 != w2 {
            return false;
        }
        let shift = w1 - u32::from(self.1);
        shift >= w1 || (net >> shift) == (addr >> shift)
    }
}

impl Check for BundleClusterEnv {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "cluster.env lacks required keys or has malformed ones; with a cluster: ISTIO_SERVICE_CIDR does not cover the Service CIDR, or (modern) ISTIO_INBOUND_PORTS differ from the WorkloadGroup's ports"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let Some(bundle) = &snap.bundle else {
            return vec![Finding::skip(ID, "no --bundle given")];
        };
        let Some(text) = bundle.text("cluster.env") else {
            return vec![Finding::skip(
                ID,
                "the bundle has no cluster.env (see bundle.files)",
            )];
        };
        let Some(era) = bundle.era().or(ctx.era) else {
            return vec![Finding::skip(
                ID,
                "cannot tell the bundle's era (see bundle.files)",
            )];
        };
        let object = format!("Bundle {}", bundle.path.display());
        let fail = |msg: String, hint: &str| {
            Finding::fail(ID, msg)
                .object(object.clone())
                .hint(hint.to_string())
        };
        let regen_text = format!("re-create the bundle: {}", super::rebundle_command(bundle));
        let regen = regen_text.as_str();
        let mut out = Vec::new();
        let entries = parse_env(&text);
        for (key, value, line) in &entries {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(fail(
                    format!("cluster.env line {line} is not KEY=value: {value:?}"),
                    regen,
                ));
            }
        }
        let get = |k: &str| {
            entries
                .iter()
                .rev()
                .find(|(key, ..)| key == k)
                .map(|(_, v, _)| v.as_str())
        };
        let missing: Vec<&str> = required(era)
            .iter()
            .copied()
            .filter(|k| get(k).is_none_or(str::is_empty))
            .collect();
        if !missing.is_empty() {
            out.push(fail(
                format!("cluster.env lacks {}", missing.join(", ")),
                regen,
            ));
        }
        let mut cidrs = Vec::new();
        let mut any_cidr = false;
        if let Some(v) = get("ISTIO_SERVICE_CIDR").filter(|v| !v.is_empty()) {
            for part in v.split(',').map(str::trim) {
                if part == "*" {
                    any_cidr = true;
                } else if let Some(c) = Cidr::parse(part) {
                    cidrs.push(c);
                } else {
                    out.push(fail(
                        format!("ISTIO_SERVICE_CIDR has {part:?}, which is not a CIDR"),
                        regen,
                    ));
                }
            }
        }
        if let Some(v) = get("ISTIO_INBOUND_PORTS").filter(|v| !v.is_empty() && *v != "*")
            && let Some(bad) = v
                .split(',')
                .map(str::trim)
                .find(|p| p.parse::<u16>().map_or(true, |n| n == 0))
        {
            out.push(fail(
                format!("ISTIO_INBOUND_PORTS has {bad:?}, which is not a port"),
                regen,
            ));
        }
        if let Some(v) = get("ISTIO_CP_AUTH")
            && v != "MUTUAL_TLS"
        {
            out.push(fail(
                format!("ISTIO_CP_AUTH is {v:?}: with STRICT (and controlPlaneSecurityEnabled) the VM must talk to Pilot with MUTUAL_TLS"),
                "set ISTIO_CP_AUTH=MUTUAL_TLS",
            ));
        }
        // With a cluster: the Service CIDR (ServiceCIDR objects, else every ClusterIP) must fall
        // in the captured range.
        if !any_cidr && !cidrs.is_empty() {
            let service_cidrs: Vec<Cidr> = snap
                .typed::<ServiceCIDR>()
                .flat_map(|(_, o)| o.spec.iter().flat_map(|s| s.cidrs.iter().flatten()))
                .filter_map(|c| Cidr::parse(c))
                .collect();
            let outside: Vec<String> = if service_cidrs.is_empty() {
                snap.typed::<Service>()
                    .filter_map(|(s, typed)| {
                        let ip: IpAddr =
                            typed.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()?;
                        (!cidrs.iter().any(|c| c.contains(ip)))
                            .then(|| format!("{ip} ({})", s.ns_name()))
                    })
                    .collect()
            } else {
                service_cidrs
                    .iter()
                    .filter(|sc| !cidrs.iter().any(|c| c.covers(**sc)))
                    .map(|sc| format!("{}/{} (ServiceCIDR)", sc.0, sc.1))
                    .collect()
            };
            if !outside.is_empty() {
                out.push(fail(
                    format!(
                        "ISTIO_SERVICE_CIDR {} does not cover the cluster's Service addresses {}: the VM's traffic to them bypasses its sidecar",
                        get("ISTIO_SERVICE_CIDR").unwrap_or_default(),
                        list(&outside, 3)
                    ),
                    "set ISTIO_SERVICE_CIDR to the cluster's Service CIDR (kube-apiserver --service-cluster-ip-range)",
                ));
            }
        }
        if era == Era::Modern
            && let Some(finding) = inbound_ports_vs_group(snap, &get, &object)
        {
            out.push(finding);
        }
        out.extend(identity_in_cluster(snap, bundle, &entries, &object));
        or_pass(
            ID,
            out,
            format!("cluster.env has the {era} keys, well-formed"),
        )
    }
}

/// Modern, with the cluster: `ISTIO_INBOUND_PORTS` (bundle's `--inbound-ports`) against the
/// ports of the WorkloadGroup the bundle was made from (`ISTIO_META_WORKLOAD_NAME` in
/// `ISTIO_NAMESPACE`): when they differ, the sidecar captures other ports than the mesh sends
/// the VM traffic on. `*` captures every port, so it never disagrees.
fn inbound_ports_vs_group<'a>(
    snap: &Snapshot,
    get: &impl Fn(&str) -> Option<&'a str>,
    object: &str,
) -> Option<Finding> {
    let inbound = get("ISTIO_INBOUND_PORTS").filter(|v| !v.is_empty() && *v != "*")?;
    let name = get("ISTIO_META_WORKLOAD_NAME")?;
    let namespace = get("ISTIO_NAMESPACE")?;
    let group = snap.get(Kind::WorkloadGroup, namespace, name)?;
    let ports = group.at(&["spec", "template", "ports"])?.as_object()?;
    let group_ports: std::collections::BTreeSet<u64> = ports
        .values()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    let bundle_ports: std::collections::BTreeSet<u64> = inbound
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    if group_ports.is_empty() || group_ports == bundle_ports {
        return None;
    }
    let join = |set: &std::collections::BTreeSet<u64>| {
        set.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    };
    Some(
        Finding::warn(
            ID,
            format!(
                "ISTIO_INBOUND_PORTS {} differ from the ports {} of WorkloadGroup {namespace}/{name}: the VM's sidecar captures {} while the mesh sends traffic for {}",
                join(&bundle_ports),
                join(&group_ports),
                join(&bundle_ports),
                join(&group_ports),
            ),
        )
        .object(object.to_owned())
        .hint(format!(
            "bundle again without --inbound-ports (the group's ports are used), or with --inbound-ports {}",
            join(&group_ports)
        )),
    )
}

/// With a live cluster: the bundle's namespace and ServiceAccount (cluster.env's, else the
/// certificate's SAN) must exist there, or the VM's identity belongs to nothing — with the
/// command that makes them.
fn identity_in_cluster(
    snap: &Snapshot,
    bundle: &crate::snapshot::VmBundle,
    entries: &[(String, String, usize)],
    object: &str,
) -> Vec<Finding> {
    if snap.source != crate::snapshot::SourceKind::Live
        || !snap.knows(Kind::Namespace)
        || !snap.knows(Kind::ServiceAccount)
    {
        return Vec::new();
    }
    let get = |k: &str| {
        entries
            .iter()
            .rev()
            .find(|(key, ..)| key == k)
            .map(|(_, v, _)| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            .filter(|v| !v.is_empty())
    };
    let san = bundle
        .file("cert-chain.pem")
        .and_then(|c| super::bundle_certs::leaf_spiffe_id(&c.data));
    let Some(ns) = get("ISTIO_NAMESPACE").or_else(|| san.as_ref().map(|id| id.namespace.clone()))
    else {
        return Vec::new();
    };
    let sa = get("SERVICE_ACCOUNT")
        .or_else(|| get("ISTIO_SERVICE_ACCOUNT"))
        .or_else(|| san.as_ref().map(|id| id.service_account.clone()));
    let context = snap
        .context
        .as_deref()
        .map(|c| format!(" --context {c}"))
        .unwrap_or_default();
    if snap.get(Kind::Namespace, "", &ns).is_none() {
        return vec![
            Finding::fail(
                ID,
                format!("the bundle's namespace {ns} does not exist in this cluster: the VM's identity belongs to nothing there"),
            )
            .object(object)
            .hint(format!("`kubectl meshvm prepare -n {ns}{context}`, then re-create the bundle")),
        ];
    }
    match sa {
        Some(sa) if snap.get(Kind::ServiceAccount, &ns, &sa).is_none() => {
            // prepare makes the ServiceAccount named after the namespace; another one is the user's.
            let fix = if sa == ns {
                format!("`kubectl meshvm prepare -n {ns}{context}`")
            } else {
                format!("`kubectl create serviceaccount {sa} -n {ns}{context}`")
            };
            vec![
                Finding::fail(
                    ID,
                    format!("the bundle's ServiceAccount {ns}/{sa} does not exist in this cluster: istiod/Citadel will not issue certificates for it"),
                )
                .object(object)
                .hint(fix),
            ]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    const GOOD: &str = "ISTIO_CP_AUTH=MUTUAL_TLS\nISTIO_SERVICE=expandvm\nISTIO_SERVICE_CIDR=172.16.0.0/16\nISTIO_INBOUND_PORTS=80\nISTIO_NAMESPACE=expandvm\n";
    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 172.16.0.1, ports: [{port: 443}]}\n";

    /// A modern bundle for WorkloadGroup bar/vm, whose ports are 8080 and 9090, in the cluster.
    fn modern_vm(inbound: &str) -> Fixture {
        let env = format!(
            "ISTIO_INBOUND_PORTS='{inbound}'\nISTIO_META_WORKLOAD_NAME='vm'\nISTIO_NAMESPACE='bar'\nISTIO_SERVICE_CIDR='*'\nSERVICE_ACCOUNT='sa'\n"
        );
        Fixture::modern()
            .with("apiVersion: networking.istio.io/v1beta1\nkind: WorkloadGroup\nmetadata: {name: vm, namespace: bar}\nspec: {template: {serviceAccount: sa, ports: {http: 8080, grpc: 9090}}}\n")
            .bundle(&[
                ("cluster.env", env.as_bytes(), 0o644),
                ("istio-token", b"t", 0o600),
            ])
    }

    #[test]
    fn inbound_ports_that_differ_from_the_group_name_both_lists() {
        let findings = modern_vm("8080").run(&BundleClusterEnv);
        let warn: Vec<&Finding> = findings.iter().filter(|f| f.severity == Warn).collect();
        assert_eq!(warn.len(), 1, "{findings:?}");
        assert!(
            warn[0].message.contains(
                "ISTIO_INBOUND_PORTS 8080 differ from the ports 8080,9090 of WorkloadGroup bar/vm"
            ),
            "{}",
            warn[0].message
        );
    }

    fn legacy(env: &str) -> Fixture {
        Fixture::legacy().with(SVC).bundle(&[
            ("cluster.env", env.as_bytes(), 0o644),
            ("key.pem", b"k", 0o600),
        ])
    }

    #[test]
    fn table() {
        let cases = [
            ("the runbook's cluster.env", legacy(GOOD), Pass),
            ("missing namespace", legacy(&GOOD.replace("ISTIO_NAMESPACE=expandvm\n", "")), Fail),
            ("bad cidr", legacy(&GOOD.replace("172.16.0.0/16", "172.16.0.0")), Fail),
            ("cidr misses the Service IPs", legacy(&GOOD.replace("172.16.0.0/16", "10.0.0.0/8")), Fail),
            (
                "cidr narrower than the ServiceCIDR",
                legacy(&GOOD.replace("172.16.0.0/16", "172.16.0.0/24"))
                    .with("apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [172.16.0.0/16]}\n"),
                Fail,
            ),
            (
                "cidr covers the ServiceCIDR",
                legacy(&GOOD.replace("172.16.0.0/16", "172.0.0.0/8"))
                    .with("apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [172.16.0.0/16]}\n"),
                Pass,
            ),
            ("bad port", legacy(&GOOD.replace("PORTS=80", "PORTS=80,http")), Fail),
            ("plaintext control plane", legacy(&GOOD.replace("MUTUAL_TLS", "NONE")), Fail),
            ("garbage line", legacy(&format!("{GOOD}oops\n")), Fail),
            (
                "istioctl's modern golden",
                Fixture::modern().bundle(&[("cluster.env", b"ISTIO_INBOUND_PORTS='*'\nISTIO_NAMESPACE='bar'\nISTIO_SERVICE_CIDR='*'\nSERVICE_ACCOUNT='vm-serviceaccount'\n", 0o644), ("istio-token", b"t", 0o600)]),
                Pass,
            ),
            ("no bundle", Fixture::legacy(), Skip),
            ("inbound ports as the WorkloadGroup's", modern_vm("8080,9090"), Pass),
            ("inbound ports capture all", modern_vm("*"), Pass),
            ("inbound ports differ from the WorkloadGroup's", modern_vm("8080"), Warn),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&BundleClusterEnv), severity, case);
        }
    }

    #[test]
    fn the_bundles_namespace_and_service_account_must_exist_in_the_cluster() {
        let env = "ISTIO_NAMESPACE=expandvm\nSERVICE_ACCOUNT=expandvm\nISTIO_SERVICE_CIDR=*\nISTIO_INBOUND_PORTS=80\n";
        let bundle = |f: Fixture| {
            f.bundle(&[
                ("cluster.env", env.as_bytes(), 0o644),
                ("istio-token", b"t", 0o600),
            ])
        };
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: expandvm}\n";
        let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: expandvm, namespace: expandvm}\n";
        let out = bundle(Fixture::modern().with(ns).with(sa).live()).run(&BundleClusterEnv);
        expect(&out, Pass, "both exist");
        let out = bundle(Fixture::modern().with(ns).live()).run(&BundleClusterEnv);
        expect(&out, Fail, "no ServiceAccount");
        assert!(
            out[0]
                .message
                .contains("ServiceAccount expandvm/expandvm does not exist"),
            "{out:#?}"
        );
        assert_eq!(
            out[0].hint,
            "`kubectl meshvm prepare -n expandvm --context test`"
        );
        let out = bundle(Fixture::modern().live()).run(&BundleClusterEnv);
        expect(&out, Fail, "no namespace");
        assert!(
            out[0].message.contains("namespace expandvm does not exist"),
            "{out:#?}"
        );
        assert!(
            out[0]
                .hint
                .starts_with("`kubectl meshvm prepare -n expandvm --context test`"),
            "{out:#?}"
        );
        // Manifests may leave namespaces out: judged only against a live cluster.
        expect(
            &bundle(Fixture::modern()).run(&BundleClusterEnv),
            Pass,
            "-f",
        );
    }

    #[test]
    fn cidr_math() {
        let c = Cidr::parse("10.96.0.0/12").unwrap();
        assert!(c.contains("10.100.1.1".parse().unwrap()));
        assert!(!c.contains("10.112.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00:10:96::/112")
                .unwrap()
                .contains("fd00:10:96::1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("fd00:10:96::/112")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
