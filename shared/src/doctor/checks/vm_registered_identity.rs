//! `vm.registered-identity`: legacy registered VM Services carry a usable identity and matching ports.

use super::{need, or_pass};
use crate::doctor::mesh::SYSTEM_NAMESPACES;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::SERVICE_ACCOUNTS_ANNOTATION;
use crate::snapshot::{Kind, Snapshot};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A VM registered the 1.4 way (`istioctl register`) is a selector-less Service with Endpoints.
/// Pilot reads the VM's identity from the Service's `alpha.istio.io/kubernetes-serviceaccounts`
/// annotation and its ports from the Service: fails when the annotation is missing, names a
/// ServiceAccount that does not exist, or the Endpoints use ports the Service does not have.
pub struct VmRegisteredIdentity;

const ID: &str = "vm.registered-identity";

fn endpoint_addresses(ep: &Endpoints) -> usize {
    ep.subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum()
}

impl Check for VmRegisteredIdentity {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a registered VM Service lacks alpha.istio.io/kubernetes-serviceaccounts, names a missing SA, or its Endpoints ports are not in the Service"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, _ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = need(ID, snap, &[Kind::Service, Kind::Endpoints]) {
            return skip;
        }
        let mut out = Vec::new();
        let mut seen = 0;
        for (svc, typed) in snap.typed::<Service>() {
            let ns = svc.namespace();
            let spec = typed.spec.as_ref();
            if spec
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| !s.is_empty())
                || SYSTEM_NAMESPACES.contains(&ns)
                || (ns == "default" && svc.name() == "kubernetes")
                || spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName")
            {
                continue;
            }
            let Some((ep, endpoints)) = snap.get_typed::<Endpoints>(ns, svc.name()) else {
                continue;
            };
            if endpoint_addresses(endpoints) == 0 {
                continue;
            }
            seen += 1;
            match svc.annotation(SERVICE_ACCOUNTS_ANNOTATION) {
                None => {
                    let where_ = if ep.annotation(SERVICE_ACCOUNTS_ANNOTATION).is_some() {
                        "the annotation is on the Endpoints, but Pilot reads it from the Service"
                    } else {
                        "Pilot knows no identity for the VM, so peers cannot verify it under mTLS"
                    };
                    out.push(
                        Finding::fail(ID, format!("registered VM Service lacks {SERVICE_ACCOUNTS_ANNOTATION}: {where_}"))
                            .on(svc)
                            .hint(format!("name the VM's ServiceAccount, e.g. the one prepare makes for the namespace: `kubectl -n {ns} annotate service {} {SERVICE_ACCOUNTS_ANNOTATION}={ns}`", svc.name())),
                    );
                }
                Some(value) => {
                    if snap.knows(Kind::ServiceAccount) {
                        for sa in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            // Values may be plain names (this namespace) or spiffe://td/ns/N/sa/S.
                            let (sa_ns, sa_name) = crate::pki::spiffe_id(sa)
                                .map_or((ns.to_string(), sa.to_string()), |id| {
                                    (id.namespace, id.service_account)
                                });
                            if snap.get(Kind::ServiceAccount, &sa_ns, &sa_name).is_none() {
                                out.push(
                                    Finding::fail(ID, format!("names ServiceAccount {sa_ns}/{sa_name}, which does not exist: the VM's certificate identity matches nothing"))
                                        .on(svc)
                                        .hint(format!("`kubectl -n {sa_ns} create serviceaccount {sa_name}`, or fix the annotation")),
                                );
                            }
                        }
                    }
                }
            }
            let ports: Vec<(String, u64, Option<u64>)> = spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        u64::try_from(p.port).unwrap_or(0),
                        match &p.target_port {
                            Some(IntOrString::Int(n)) => u64::try_from(*n).ok(),
                            _ => None,
                        },
                    )
                })
                .collect();
            for subset in endpoints.subsets.iter().flatten() {
                for p in subset.ports.iter().flatten() {
                    let name = p.name.as_deref().unwrap_or_default();
                    let number = u64::try_from(p.port).unwrap_or(0);
                    let ok = ports.iter().any(|(n, port, target)| {
                        (n == name || (name.is_empty() && ports.len() == 1))
                            && target.unwrap_or(*port) == number
                    });
                    if !ok {
                        out.push(
                            Finding::fail(
                                ID,
                                format!(
                                    "Endpoints port {}{number} is not a port of the Service ({}): Pilot sends no traffic to it",
                                    if name.is_empty() { String::new() } else { format!("{name}/") },
                                    ports.iter().map(|(n, p, t)| format!("{n}/{p}->{}", t.unwrap_or(*p))).collect::<Vec<_>>().join(", ")
                                ),
                            )
                            .on(ep)
                            .hint("re-register the VM with the Service's port names and target ports (`kubectl meshvm register`)"),
                        );
                    }
                }
            }
        }
        or_pass(
            ID,
            out,
            format!("{seen} registered VM Service(s) with identity and matching ports"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{Fixture, expect};

    fn vm(annotation: Option<&str>, ep_port: &str) -> String {
        let ann = annotation
            .map(|a| format!(", annotations: {{alpha.istio.io/kubernetes-serviceaccounts: {a}}}"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: vm, namespace: vms}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: vms{ann}}}\nspec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: app, namespace: vms}}\nsubsets: [{{addresses: [{{ip: 10.1.1.1}}], ports: [{ep_port}]}}]\n"
        )
    }

    #[test]
    fn table() {
        let cases = [
            ("good", vm(Some("vm"), "{name: http, port: 8080}"), Pass),
            ("no annotation", vm(None, "{name: http, port: 8080}"), Fail),
            (
                "missing SA",
                vm(Some("ghost"), "{name: http, port: 8080}"),
                Fail,
            ),
            (
                "spiffe form",
                vm(
                    Some("'spiffe://cluster.local/ns/vms/sa/vm'"),
                    "{name: http, port: 8080}",
                ),
                Pass,
            ),
            (
                "port not in Service",
                vm(Some("vm"), "{name: grpc, port: 9090}"),
                Fail,
            ),
            (
                "service port instead of target port",
                vm(Some("vm"), "{name: http, port: 80}"),
                Fail,
            ),
        ];
        for (case, yaml, severity) in cases {
            expect(
                &Fixture::legacy().with(&yaml).run(&VmRegisteredIdentity),
                severity,
                case,
            );
        }
        expect(
            &Fixture::empty()
                .with("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\n")
                .run(&VmRegisteredIdentity),
            Skip,
            "no Endpoints in the manifests",
        );
    }
}
