//! `mtls.dr-conflict`: a DestinationRule sends DISABLE, SIMPLE or MUTUAL to an in-mesh destination.

use super::{list, or_pass};
use crate::doctor::mesh::TlsMode;
use crate::doctor::{Check, CheckContext, Finding};
use crate::snapshot::Snapshot;

/// Fails for each rule that, at host, port or subset level, decides plaintext (DISABLE) or TLS of
/// its own (SIMPLE, MUTUAL) for an in-mesh
/// destination (for at least one client namespace): under STRICT the server side refuses it —
/// `istioctl authn tls-check`'s CONFLICT.
pub struct MtlsDrConflict;

const ID: &str = "mtls.dr-conflict";

/// What the rule sends, in words: DISABLE is plaintext; SIMPLE and MUTUAL are TLS of the rule's
/// own certificates, which a sidecar under STRICT does not accept as Istio's mTLS.
fn sends(modes: &[TlsMode]) -> &'static str {
    let plain = modes.contains(&TlsMode::Disable);
    let own_tls = modes.iter().any(|m| *m != TlsMode::Disable);
    match (plain, own_tls) {
        (true, false) => "sends plaintext (tls.mode DISABLE)",
        (false, _) => {
            "sends TLS with its own certificates (tls.mode SIMPLE or MUTUAL), not Istio's mTLS,"
        }
        (true, true) => {
            "sends plaintext (DISABLE) or TLS with its own certificates (SIMPLE, MUTUAL)"
        }
    }
}

impl Check for MtlsDrConflict {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a DestinationRule sends DISABLE, SIMPLE or MUTUAL to an in-mesh destination (refused under STRICT)"
    }

    fn run(&self, _snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let mesh = &ctx.mesh;
        let mut out = Vec::new();
        for (i, rule) in mesh.rules.iter().enumerate() {
            let stated = rule.stated_tls();
            let bad: Vec<_> = stated
                .iter()
                .filter(|s| matches!(s.mode, Some(m) if m != TlsMode::IstioMutual))
                .collect();
            if bad.is_empty() {
                continue;
            }
            let mut subsets: Vec<Option<&str>> = vec![None];
            subsets.extend(rule.subsets().into_iter().map(Some));
            let mut hits = Vec::new();
            let mut modes = Vec::new();
            for dest in mesh.dests_matching(&rule.host) {
                let (Some(_), false) = (dest.in_mesh, dest.exempt) else {
                    continue;
                };
                if mesh
                    .winning_client(i, &dest.host, Some(dest.ns()))
                    .is_none()
                {
                    continue;
                }
                for port in dest.tcp_ports() {
                    for subset in &subsets {
                        if let Some(mode) = rule.tls_for(Some(port.number), *subset)
                            && mode != TlsMode::IstioMutual
                        {
                            if !modes.contains(&mode) {
                                modes.push(mode);
                            }
                            let at = subset.map(|s| format!(" (subset {s})")).unwrap_or_default();
                            hits.push(format!(
                                "{}:{}{at} {}",
                                dest.host,
                                port.number,
                                mode.as_str()
                            ));
                        }
                    }
                }
            }
            if hits.is_empty() {
                continue;
            }
            let patch = bad
                .iter()
                .map(|s| {
                    format!(
                        "{{\"op\":\"replace\",\"path\":\"{}/mode\",\"value\":\"ISTIO_MUTUAL\"}}",
                        s.pointer
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            out.push(
                Finding::fail(
                    ID,
                    format!(
                        "{} to in-mesh destinations: {}; under STRICT their sidecars refuse these connections",
                        sends(&modes),
                        list(&hits, 4)
                    ),
                )
                .on(rule.obj)
                .hint(format!(
                    "use ISTIO_MUTUAL (or drop the tls block when auto mTLS is on): `kubectl -n {} patch destinationrule {} --type=json -p '[{patch}]'`",
                    rule.ns,
                    rule.obj.name()
                )),
            );
        }
        or_pass(
            ID,
            out,
            "no DestinationRule sends plaintext or TLS of its own to an in-mesh destination",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass};
    use crate::doctor::testutil::{Fixture, expect};

    fn dr(ns: &str, body: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: r, namespace: {ns}}}\nspec:\n{body}\n"
        )
    }

    #[test]
    fn table() {
        let cases = [
            (
                "host-level DISABLE to injected namespace",
                dr(
                    "bookinfo",
                    "  host: reviews\n  trafficPolicy: {tls: {mode: DISABLE}}",
                ),
                Fail,
            ),
            (
                "SIMPLE from the root namespace",
                dr(
                    "istio-system",
                    "  host: reviews.bookinfo.svc.cluster.local\n  trafficPolicy: {tls: {mode: SIMPLE}}",
                ),
                Fail,
            ),
            (
                "port-level MUTUAL",
                dr(
                    "bookinfo",
                    "  host: reviews\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: [{port: {number: 9080}, tls: {mode: MUTUAL}}]",
                ),
                Fail,
            ),
            (
                "port-level on another port",
                dr(
                    "bookinfo",
                    "  host: reviews\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: [{port: {number: 1}, tls: {mode: DISABLE}}]",
                ),
                Pass,
            ),
            (
                "subset DISABLE",
                dr(
                    "bookinfo",
                    "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n  subsets: [{name: v1, trafficPolicy: {tls: {mode: DISABLE}}}]",
                ),
                Fail,
            ),
            (
                "ISTIO_MUTUAL everywhere",
                dr(
                    "bookinfo",
                    "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
                ),
                Pass,
            ),
            (
                "DISABLE to a Service outside the mesh",
                dr(
                    "bookinfo",
                    "  host: kubernetes.default.svc.cluster.local\n  trafficPolicy: {tls: {mode: DISABLE}}",
                ),
                Pass,
            ),
            (
                "DISABLE to the control plane is exempt",
                dr(
                    "istio-system",
                    "  host: istio-citadel.istio-system.svc.cluster.local\n  trafficPolicy: {tls: {mode: DISABLE}}",
                ),
                Pass,
            ),
            (
                "private rule in a namespace without mesh clients never applies",
                dr(
                    "other",
                    "  host: reviews.bookinfo.svc.cluster.local\n  exportTo: ['.']\n  trafficPolicy: {tls: {mode: DISABLE}}",
                ),
                Pass,
            ),
            (
                "private rule in a namespace with mesh clients applies to them",
                dr(
                    "other",
                    "  host: reviews.bookinfo.svc.cluster.local\n  exportTo: ['.']\n  trafficPolicy: {tls: {mode: DISABLE}}",
                ) + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {istio-injection: enabled}}\n",
                Fail,
            ),
            (
                "wildcard DISABLE shadowed by a more specific mutual rule",
                format!(
                    "{}---\n{}",
                    dr(
                        "istio-system",
                        "  host: '*.local'\n  trafficPolicy: {tls: {mode: DISABLE}}"
                    ),
                    dr(
                        "bookinfo",
                        "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"
                    )
                    .replace("name: r,", "name: m,")
                ),
                Pass,
            ),
        ];
        for (case, yaml, severity) in cases {
            let f = Fixture::legacy().with(&yaml).with("apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec: {ports: [{port: 443}]}\n");
            expect(&f.run(&MtlsDrConflict), severity, case);
        }
    }

    #[test]
    fn hint_is_a_json_patch() {
        let f = Fixture::legacy().with(&dr(
            "bookinfo",
            "  host: reviews\n  trafficPolicy: {tls: {mode: DISABLE}}",
        ));
        let out = f.run(&MtlsDrConflict);
        assert!(
            out[0]
                .message
                .contains("reviews.bookinfo.svc.cluster.local:9080 DISABLE"),
            "{}",
            out[0].message
        );
        assert!(
            out[0]
                .hint
                .contains("\"path\":\"/spec/trafficPolicy/tls/mode\""),
            "{}",
            out[0].hint
        );
    }
}
