//! `mtls.dr-missing-tls`: a host-specific rule without `tls` overrides the mesh-wide mutual rule.

use super::or_pass;
use crate::doctor::mesh::{DOMAIN, TlsMode, host_namespace};
use crate::doctor::{Check, CheckContext, Finding, Severity};
use crate::snapshot::Snapshot;

/// With auto mTLS off, the most specific rule decides TLS alone: a rule for one host that sets no
/// `tls` (say, only a load balancer) sends that host plaintext, although a wider ISTIO_MUTUAL rule
/// would otherwise apply. Fails for in-mesh Services; warns when the host is not a Service the
/// source knows (it may still be in the mesh).
pub struct MtlsDrMissingTls;

const ID: &str = "mtls.dr-missing-tls";

impl Check for MtlsDrMissingTls {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "auto mTLS off and a host-specific DestinationRule without tls overrides the mesh-wide ISTIO_MUTUAL rule"
    }

    fn run(&self, _snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if ctx.auto_mtls {
            return vec![Finding::pass(
                ID,
                format!(
                    "auto mTLS is on ({}): rules without tls get ISTIO_MUTUAL to sidecars",
                    ctx.auto_mtls_source
                ),
            )];
        }
        let mesh = &ctx.mesh;
        let mut out = Vec::new();
        for (i, rule) in mesh.rules.iter().enumerate() {
            if rule.host.starts_with('*') || rule.top_tls().is_some() || rule.selective {
                continue;
            }
            let dest = mesh.dest(&rule.host);
            let (severity, svc_ns, ports): (Severity, Option<&str>, Vec<Option<u32>>) = match dest {
                Some(d) if d.exempt || d.in_mesh.is_none() => continue,
                Some(d) => (
                    Severity::Fail,
                    Some(d.ns()),
                    d.tcp_ports().map(|p| Some(p.number)).collect(),
                ),
                None if rule.host.ends_with(&format!(".svc.{DOMAIN}")) => {
                    // Ports unknown: judge the ports the rule names, else "any port".
                    let named: Vec<Option<u32>> = rule
                        .stated_tls()
                        .iter()
                        .filter_map(|s| s.port.map(Some))
                        .collect();
                    (
                        Severity::Warn,
                        host_namespace(&rule.host),
                        if named.is_empty() { vec![None] } else { named },
                    )
                }
                None => continue,
            };
            // For each client this rule decides for: what would apply without it?
            let mut overridden: Option<String> = None;
            let mut plain_ports = Vec::new();
            for client in mesh.rule_clients(i) {
                if mesh.resolve(client, &rule.host, svc_ns).first() != Some(&i) {
                    continue;
                }
                let fallback = mesh.resolve_with(client, &rule.host, svc_ns, &|j| j != i);
                let Some(&f) = fallback.first() else { continue };
                for port in &ports {
                    if rule.tls_for(*port, None).is_none()
                        && mesh.rules[f].tls_for(*port, None) == Some(TlsMode::IstioMutual)
                    {
                        overridden.get_or_insert_with(|| mesh.rules[f].obj.reference());
                        if let Some(p) = port
                            && !plain_ports.contains(p)
                        {
                            plain_ports.push(*p);
                        }
                    }
                }
            }
            let Some(by) = overridden else { continue };
            let what = if rule.policy().is_some() {
                "has a trafficPolicy but no tls"
            } else {
                "has no trafficPolicy.tls"
            };
            let ports_text = if plain_ports.is_empty() {
                String::new()
            } else {
                format!(
                    " (ports {})",
                    plain_ports
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let refused = if severity == Severity::Fail {
                "STRICT refuses plaintext to this in-mesh Service".to_string()
            } else {
                format!(
                    "{} is not a Service in this source, but if it runs a sidecar STRICT refuses that plaintext",
                    rule.host
                )
            };
            let patch = if rule.policy().is_some() {
                "[{\"op\":\"add\",\"path\":\"/spec/trafficPolicy/tls\",\"value\":{\"mode\":\"ISTIO_MUTUAL\"}}]"
            } else {
                "[{\"op\":\"add\",\"path\":\"/spec/trafficPolicy\",\"value\":{\"tls\":{\"mode\":\"ISTIO_MUTUAL\"}}}]"
            };
            let mut f = Finding::fail(
                ID,
                format!(
                    "{}{ports_text} gets plaintext: this rule {what}, and with auto mTLS off it replaces {by}'s ISTIO_MUTUAL; {refused}",
                    rule.host
                ),
            )
            .on(rule.obj)
            .hint(format!(
                "add tls.mode: ISTIO_MUTUAL to its trafficPolicy: `kubectl -n {} patch destinationrule {} --type=json -p '{patch}'`",
                rule.ns,
                rule.obj.name()
            ));
            f.severity = severity;
            out.push(f);
        }
        or_pass(
            ID,
            out,
            "no host-specific rule drops the mesh-wide ISTIO_MUTUAL setting",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    fn dr(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn table() {
        let lb = "{host: reviews, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}";
        let cases = [
            ("lb-only rule under the mesh-wide rule", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "r", lb)), Fail),
            ("subsets-only rule under the mesh-wide rule", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "r", "{host: reviews, subsets: [{name: v1, labels: {version: v1}}]}")), Fail),
            ("auto mTLS on", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "r", lb)).auto_mtls(true), Pass),
            ("no mesh-wide rule to override", Fixture::legacy().with(&dr("bookinfo", "r", lb)), Pass),
            ("rule sets tls", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "r", "{host: reviews, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}")), Pass),
            ("unknown cluster host", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "r", "{host: ratings}")), Warn),
            ("external host", Fixture::legacy().with_default_dr().with(&dr("bookinfo", "r", "{host: api.example.com}")), Pass),
            (
                "namespace-wide mutual rule overridden",
                Fixture::legacy().with(&dr("bookinfo", "ns", "{host: '*.bookinfo.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}")).with(&dr("bookinfo", "r", lb)),
                Fail,
            ),
            (
                "control plane is exempt",
                Fixture::legacy().with_default_dr().with(&dr("istio-system", "p", "{host: istio-pilot.istio-system.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}}")),
                Pass,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsDrMissingTls), severity, case);
        }
    }

    #[test]
    fn names_the_rule_it_overrides() {
        let out = Fixture::legacy()
            .with_default_dr()
            .with(&dr(
                "bookinfo",
                "r",
                "{host: reviews, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}",
            ))
            .run(&MtlsDrMissingTls);
        assert_eq!(out[0].object, "DestinationRule bookinfo/r");
        assert!(
            out[0].message.contains("(ports 9080)")
                && out[0]
                    .message
                    .contains("DestinationRule istio-system/default"),
            "{}",
            out[0].message
        );
    }
}
