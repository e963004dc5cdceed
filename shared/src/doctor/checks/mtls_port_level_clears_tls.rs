//! `mtls.port-level-clears-tls`: a `portLevelSettings` entry without `tls` replaces ISTIO_MUTUAL.

use super::or_pass;
use crate::doctor::mesh::TlsMode;
use crate::doctor::{Check, CheckContext, Finding};
use crate::snapshot::Snapshot;

/// With auto mTLS off, Pilot builds a port's cluster from the matching `portLevelSettings` entry
/// alone: an entry without `tls` leaves that port in plaintext even though the rule (or its
/// subset) says ISTIO_MUTUAL.
pub struct MtlsPortLevelClearsTls;

const ID: &str = "mtls.port-level-clears-tls";

impl Check for MtlsPortLevelClearsTls {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "auto mTLS off and a portLevelSettings entry without tls replaces an ISTIO_MUTUAL setting"
    }

    fn run(&self, _snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if ctx.auto_mtls {
            return vec![Finding::pass(
                ID,
                format!(
                    "auto mTLS is on ({}): ports without tls get ISTIO_MUTUAL to sidecars",
                    ctx.auto_mtls_source
                ),
            )];
        }
        let mut out = Vec::new();
        for rule in &ctx.mesh.rules {
            let top = rule.top_tls();
            let stated = rule.stated_tls();
            let mut cleared = Vec::new();
            for s in stated
                .iter()
                .filter(|s| s.port.is_some() && s.mode.is_none())
            {
                // The setting the entry replaces: its subset's tls, else the rule's.
                let replaced = match s.label.strip_prefix("subset ") {
                    Some(rest) => {
                        let subset = rest.split(" port ").next().unwrap_or_default();
                        stated
                            .iter()
                            .find(|o| o.port.is_none() && o.label == format!("subset {subset}"))
                            .and_then(|o| o.mode)
                            .or(top)
                    }
                    None => top,
                };
                if replaced == Some(TlsMode::IstioMutual) {
                    cleared.push(s);
                }
            }
            if cleared.is_empty() {
                continue;
            }
            let ports: Vec<String> = cleared.iter().map(|s| s.label.clone()).collect();
            let patch = cleared
                .iter()
                .map(|s| format!("{{\"op\":\"add\",\"path\":\"{}\",\"value\":{{\"mode\":\"ISTIO_MUTUAL\"}}}}", s.pointer))
                .collect::<Vec<_>>()
                .join(",");
            out.push(
                Finding::fail(
                    ID,
                    format!(
                        "{} of host {} ha{} no tls: it replaces the rule's ISTIO_MUTUAL, so that port is plaintext and refused under STRICT",
                        ports.join(", "),
                        rule.host,
                        if ports.len() == 1 { "s" } else { "ve" }
                    ),
                )
                .on(rule.obj)
                .hint(format!(
                    "repeat tls.mode: ISTIO_MUTUAL in each portLevelSettings entry: `kubectl -n {} patch destinationrule {} --type=json -p '[{patch}]'`",
                    rule.ns,
                    rule.obj.name()
                )),
            );
        }
        or_pass(
            ID,
            out,
            "no portLevelSettings entry clears an ISTIO_MUTUAL setting",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass};
    use crate::doctor::testutil::{Fixture, expect};

    fn dr(policy: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n{policy}\n"
        )
    }

    #[test]
    fn table() {
        let cases = [
            (
                "entry without tls under mutual",
                dr(
                    "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: [{port: {number: 9080}, connectionPool: {tcp: {maxConnections: 10}}}]",
                ),
                false,
                Fail,
            ),
            (
                "same with auto mTLS on",
                dr(
                    "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: [{port: {number: 9080}, connectionPool: {tcp: {maxConnections: 10}}}]",
                ),
                true,
                Pass,
            ),
            (
                "entry repeats tls",
                dr(
                    "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: [{port: {number: 9080}, tls: {mode: ISTIO_MUTUAL}}]",
                ),
                false,
                Pass,
            ),
            (
                "no top-level tls",
                dr(
                    "  trafficPolicy:\n    portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: ROUND_ROBIN}}]",
                ),
                false,
                Pass,
            ),
            (
                "subset inherits mutual, its entry clears it",
                dr(
                    "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n  subsets:\n  - name: v1\n    trafficPolicy:\n      portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: RANDOM}}]",
                ),
                false,
                Fail,
            ),
            (
                "subset DISABLE, its entry clears nothing mutual",
                dr(
                    "  subsets:\n  - name: v1\n    trafficPolicy:\n      tls: {mode: DISABLE}\n      portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: RANDOM}}]",
                ),
                false,
                Pass,
            ),
        ];
        for (case, yaml, auto, severity) in cases {
            expect(
                &Fixture::legacy()
                    .with(&yaml)
                    .auto_mtls(auto)
                    .run(&MtlsPortLevelClearsTls),
                severity,
                case,
            );
        }
    }

    #[test]
    fn message_and_patch_name_the_port() {
        let out = Fixture::legacy()
            .with(&dr("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: [{port: {number: 9080}, connectionPool: {}}]"))
            .run(&MtlsPortLevelClearsTls);
        assert!(
            out[0]
                .message
                .starts_with("port 9080 of host reviews.bookinfo.svc.cluster.local has no tls"),
            "{}",
            out[0].message
        );
        assert!(
            out[0]
                .hint
                .contains("/spec/trafficPolicy/portLevelSettings/0/tls"),
            "{}",
            out[0].hint
        );
    }
}
