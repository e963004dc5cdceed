//! `mtls.excluded-ports`: clients sending ISTIO_MUTUAL to ports the sidecar does not capture.
//!
//! `traffic.sidecar.istio.io/excludeInboundPorts` keeps ports out of the inbound iptables
//! capture (istio/istio@1.4.2 install/kubernetes/helm/istio/files/injection-template.yaml:27-29,
//! @1.22.0 manifests/charts/istio-control/istio-discovery/files/injection-template.yaml:56,100-101):
//! the app answers them itself, in plaintext, whatever PeerAuthentication/Policy says. A client
//! whose DestinationRule (resolved as Pilot does, [`crate::doctor::mesh::Mesh::resolve`]) sends
//! ISTIO_MUTUAL to such a port hands the app a TLS handshake it does not speak.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;

use super::workloads::Sidecar;
use super::{list, or_pass};
use crate::doctor::mesh::{DOMAIN, TlsMode, selects};
use crate::doctor::{Check, CheckContext, Finding};
use crate::snapshot::{Snapshot, borrowed};

/// Fails for each Service port that targets an excluded inbound port while a client's rule
/// sends ISTIO_MUTUAL to it (top level or any subset).
pub struct MtlsExcludedPorts;

const ID: &str = "mtls.excluded-ports";

impl Check for MtlsExcludedPorts {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a DestinationRule sends ISTIO_MUTUAL to a port excluded from inbound capture (traffic.sidecar.istio.io/excludeInboundPorts), which serves plaintext"
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = super::need_workloads(ID, ctx) {
            return skip;
        }
        let mesh = &ctx.mesh;
        let mut out = Vec::new();
        let mut excluded_total = 0;
        let mut seen = BTreeSet::new();
        for w in &ctx.workloads {
            let excluded = w.excluded_ports();
            if excluded.is_empty() || w.sidecar(snap, ctx.era) != Sidecar::Yes {
                continue;
            }
            excluded_total += excluded.len();
            let labels = w.labels();
            for (svc, typed) in snap.typed::<Service>() {
                let spec = typed.spec.as_ref();
                let selector = borrowed(spec.and_then(|s| s.selector.as_ref()));
                if svc.namespace() != w.ns || !selects(&selector, &labels) {
                    continue;
                }
                let host = format!("{}.{}.svc.{DOMAIN}", svc.name(), w.ns);
                for p in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
                    let Ok(port) = u32::try_from(p.port) else {
                        continue;
                    };
                    let target = p
                        .target_port
                        .as_ref()
                        .and_then(|t| w.port_number(t))
                        .unwrap_or(port);
                    if !excluded.contains(&target) || !seen.insert((host.clone(), port)) {
                        continue;
                    }
                    // Which clients' rules send ISTIO_MUTUAL to this port (or a subset of it)?
                    let mut rules = BTreeSet::new();
                    let mut clients = BTreeSet::new();
                    for client in mesh.clients() {
                        let group = mesh.resolve(client, &host, Some(&w.ns));
                        if group.is_empty() {
                            continue;
                        }
                        let subsets: BTreeSet<&str> = group
                            .iter()
                            .flat_map(|i| mesh.rules[*i].subsets())
                            .collect();
                        let mutual = std::iter::once(None)
                            .chain(subsets.iter().map(|s| Some(*s)))
                            .any(|s| {
                                mesh.group_tls(&group, Some(port), s) == Some(TlsMode::IstioMutual)
                            });
                        if mutual {
                            rules.insert(mesh.rules[group[0]].obj.reference());
                            clients.insert(
                                client.map_or("any other namespace".to_string(), str::to_string),
                            );
                        }
                    }
                    if rules.is_empty() {
                        continue;
                    }
                    let rules: Vec<String> = rules.into_iter().collect();
                    let clients: Vec<String> = clients.into_iter().collect();
                    let client_namespaces: Vec<&str> = mesh
                        .clients()
                        .flatten()
                        .filter(|c| clients.iter().any(|x| x == c))
                        .collect();
                    out.push(
                        Finding::fail(
                            ID,
                            format!(
                                "port {port} of Service {} targets port {target}, which {} excludes from the sidecar (traffic.sidecar.istio.io/excludeInboundPorts), so it serves plaintext whatever the policy; {} send(s) ISTIO_MUTUAL to it for clients in {}: the app gets a TLS handshake it does not speak — broken now",
                                svc.ns_name(),
                                w.reference,
                                list(&rules, 3),
                                list(&clients, 4),
                            ),
                        )
                        .on(svc)
                        .ns(&w.ns)
                        .namespaces(client_namespaces)
                        .now()
                        .hint(format!(
                            "turn TLS off for that port in the rule clients use: add trafficPolicy.portLevelSettings [{{port: {{number: {port}}}, tls: {{mode: DISABLE}}}}] to a DestinationRule for {host} (and to each subset that sets tls), or stop excluding port {target}"
                        )),
                    );
                }
            }
        }
        or_pass(
            ID,
            out,
            if excluded_total == 0 {
                "no injected workload excludes inbound ports from the sidecar".to_string()
            } else {
                format!(
                    "{excluded_total} excluded inbound port(s): no client rule sends ISTIO_MUTUAL to them"
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Breaks;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{Fixture, expect};

    fn workload(ns: &str, exclude: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  template:\n    metadata: {{labels: {{app: db}}, annotations: {{traffic.sidecar.istio.io/excludeInboundPorts: '{exclude}'}}}}\n    spec: {{containers: [{{name: db, ports: [{{name: sql, containerPort: 5432}}]}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: {ns}}}\nspec: {{selector: {{app: db}}, ports: [{{name: tcp-sql, port: 5432, targetPort: sql}}]}}\n"
        )
    }

    fn dr(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }

    fn modern_app() -> Fixture {
        Fixture::modern().with(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n",
        )
    }

    #[test]
    fn table() {
        let disable = "{host: db.bookinfo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 5432}, tls: {mode: DISABLE}}]}}";
        let cases = [
            ("legacy: mesh-wide ISTIO_MUTUAL reaches the excluded port", Fixture::legacy().with_default_dr().with(&workload("bookinfo", "5432")), Fail),
            ("legacy: no rule, plaintext", Fixture::legacy().with(&workload("bookinfo", "5432")), Pass),
            ("legacy: port-level DISABLE", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "db", disable)).with(&workload("bookinfo", "5432")), Pass),
            ("legacy: other port excluded", Fixture::legacy().with_default_dr().with(&workload("bookinfo", "3306")), Pass),
            (
                "legacy: a subset sends ISTIO_MUTUAL",
                Fixture::legacy()
                    .with(&dr("bookinfo", "db", "{host: db, subsets: [{name: v1, labels: {v: '1'}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}]}"))
                    .with(&workload("bookinfo", "5432")),
                Fail,
            ),
            ("modern: namespace rule", modern_app().with(&dr("shop", "all", "{host: '*.shop.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}")).with(&workload("shop", "5432")), Fail),
            ("modern: no rule (auto mTLS not judged)", modern_app().with(&workload("shop", "5432")), Pass),
            (
                "modern: rule private to another namespace does not apply",
                modern_app()
                    .with(&dr("other", "db", "{host: db.shop.svc.cluster.local, exportTo: ['.'], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"))
                    .with(&workload("shop", "5432")),
                Pass,
            ),
            ("no workloads", Fixture::legacy(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsExcludedPorts), severity, case);
        }
    }

    #[test]
    fn names_rule_port_and_breaks_now() {
        let out = Fixture::legacy()
            .with_default_dr()
            .with(&workload("bookinfo", "5432, 9999"))
            .run(&MtlsExcludedPorts);
        assert_eq!(out.len(), 1, "{out:#?}");
        let f = &out[0];
        assert_eq!(f.object, "Service bookinfo/db");
        assert_eq!(f.breaks, Some(Breaks::Now));
        assert!(f.namespaces.contains(&"bookinfo".to_string()));
        assert!(
            f.message.contains("DestinationRule istio-system/default")
                && f.message.contains("port 5432")
                && f.message.contains("Deployment bookinfo/db"),
            "{}",
            f.message
        );
    }
}
