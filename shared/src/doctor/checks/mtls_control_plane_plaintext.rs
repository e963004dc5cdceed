//! `mtls.control-plane-plaintext`: legacy mesh expansion needs Citadel 8060 (and Pilot 15011) in plaintext.

use super::or_pass;
use crate::doctor::mesh::tls_text;
use crate::doctor::{Breaks, Check, CheckContext, Finding, fix};
use crate::istio::Era;
use crate::snapshot::{Kind, Snapshot};

/// Fails when a legacy mesh-expansion gateway would wrap the VM's own TLS to Citadel (8060) or,
/// when the gateway forwards it as raw TCP, to Pilot (15011) in ISTIO_MUTUAL.
pub struct MtlsControlPlanePlaintext;

const ID: &str = "mtls.control-plane-plaintext";

impl Check for MtlsControlPlanePlaintext {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "legacy mesh expansion with a mesh-wide ISTIO_MUTUAL rule but no DISABLE rule for istio-citadel 8060 (and istio-pilot 15011)"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        match ctx.era {
            Some(Era::Modern) => {
                return vec![Finding::pass(
                    ID,
                    "modern mesh: VMs reach istiod on 15012 with their own TLS through a passthrough gateway",
                )];
            }
            None => {
                return vec![Finding::skip(
                    ID,
                    "era unknown: no istiod, istio-citadel or istio-pilot Deployment in the source",
                )];
            }
            Some(Era::Legacy) => {}
        }
        if !fix::mesh_expansion(snap) {
            return vec![Finding::pass(
                ID,
                "no mesh-expansion ports (8060, 15011) on a gateway",
            )];
        }
        let plan = fix::plan(snap, ctx);
        let mut out = Vec::new();
        for gap in fix::control_plane_gaps(snap, ctx) {
            let now = match (&gap.decided_by, gap.current) {
                (Some(by), Some(mode)) => format!("{by} sends it {}", mode.as_str()),
                (Some(by), None) => format!("{by} sets {}", tls_text(None)),
                (None, _) => {
                    "with auto mTLS off, the mesh-wide ISTIO_MUTUAL rule STRICT needs will cover it"
                        .to_string()
                }
            };
            let rule: Vec<_> = plan
                .iter()
                .filter(|o| o.name() == gap.rule_name)
                .cloned()
                .collect();
            let hint = if rule.is_empty() {
                format!(
                    "set tls.mode: DISABLE for port {} in the portLevelSettings of the rule for {}.{}",
                    gap.port, gap.service, ctx.istio_ns
                )
            } else {
                format!(
                    "{}:\n{}",
                    super::fix_lead(snap, ctx),
                    fix::render_yaml(&rule)
                )
            };
            let mut f = Finding::fail(
                ID,
                format!(
                    "no DestinationRule disables TLS for {} port {} ({now}): the gateway would wrap the VM's own TLS in mTLS and the VM cannot reach {}",
                    gap.service,
                    gap.port,
                    if gap.port == 8060 { "Citadel for its certificate" } else { "Pilot" }
                ),
            )
            .hint(hint);
            f = match snap.get(Kind::Service, &ctx.istio_ns, gap.service) {
                Some(svc) => f.on(svc),
                None => f.object(format!("Service {}/{}", ctx.istio_ns, gap.service)),
            };
            out.push(f);
        }
        or_pass(
            ID,
            out,
            "control-plane ports reach Citadel/Pilot in plaintext through the gateway",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{CITADEL_DR, Fixture, expect, flagged};

    const PILOT_DR: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: meshexpansion-dr-pilot, namespace: istio-system}\nspec: {host: istio-pilot.istio-system.svc.cluster.local, trafficPolicy: {portLevelSettings: [{port: {number: 15011}, tls: {mode: DISABLE}}]}}\n";

    #[test]
    fn table() {
        let cases = [
            ("legacy before the Gotchas", Fixture::legacy(), Fail),
            ("legacy with the default rule only", Fixture::legacy().with_default_dr(), Fail),
            ("legacy with both Gotcha rules, pilot still mutual", Fixture::legacy().with_default_dr().with_citadel_dr(), Fail),
            ("legacy fully fixed", Fixture::legacy().with_default_dr().with_citadel_dr().with(PILOT_DR), Pass),
            ("legacy, auto mTLS on, no mesh-wide rule", Fixture::legacy().auto_mtls(true), Pass),
            ("modern", Fixture::modern(), Pass),
            ("unknown era", Fixture::empty().with(CITADEL_DR), Skip),
            (
                "citadel rule without tls on the port (plaintext)",
                Fixture::legacy().with_default_dr().with(PILOT_DR).with("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: c, namespace: istio-system}\nspec: {host: istio-citadel.istio-system.svc.cluster.local, trafficPolicy: {portLevelSettings: [{port: {number: 8060}}]}}\n"),
                Pass,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsControlPlanePlaintext), severity, case);
        }
    }

    #[test]
    fn private_citadel_rule_in_the_root_namespace_is_ignored_by_1_4() {
        // The 1.4 gateway in the root namespace reads only exported root rules
        // (pilot/pkg/model/push_context.go@1.4.2:633,669): `exportTo: ['.']` hides the rule.
        let private = CITADEL_DR.replace("spec:\n", "spec:\n  exportTo: ['.']\n");
        let fixture = Fixture::legacy()
            .with_default_dr()
            .with(&private)
            .with(PILOT_DR);
        let out = fixture.run(&MtlsControlPlanePlaintext);
        assert_eq!(
            flagged(&out),
            [(Fail, "Service istio-system/istio-citadel".into())],
            "{out:#?}"
        );
        assert!(
            out[0].message.contains("istio-system/default"),
            "{}",
            out[0].message
        );
        // Exported, the same rule is what the gateway takes.
        let out = Fixture::legacy()
            .with_default_dr()
            .with_citadel_dr()
            .with(PILOT_DR)
            .run(&MtlsControlPlanePlaintext);
        expect(&out, Pass, "exported citadel rule");
    }

    #[test]
    fn names_the_service_and_offers_the_runbook_rule() {
        let out = Fixture::legacy()
            .with_default_dr()
            .run(&MtlsControlPlanePlaintext);
        assert_eq!(
            flagged(&out),
            [
                (Fail, "Service istio-system/istio-citadel".into()),
                (Fail, "Service istio-system/istio-pilot".into())
            ]
        );
        assert!(
            out[0]
                .message
                .contains("DestinationRule istio-system/default sends it ISTIO_MUTUAL"),
            "{}",
            out[0].message
        );
        assert!(
            out[0].hint.contains("meshexpansion-dr-citadel"),
            "{}",
            out[0].hint
        );
    }
}
