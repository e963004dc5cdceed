//! `ca.plugged`: the Istio namespace should hold a plugged-in CA (`cacerts` with its four keys).

use super::need;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{CACERTS_KEYS, CACERTS_SECRET};
use crate::snapshot::{Kind, Snapshot};

/// Warns when `cacerts` is missing or incomplete: the CA then signs with a self-generated root,
/// so clusters (and VM bundles made elsewhere) do not share one root of trust.
pub struct CaPlugged;

const ID: &str = "ca.plugged";

impl Check for CaPlugged {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "no cacerts secret with the four keys in the Istio namespace"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = need(ID, snap, &[Kind::Secret]) {
            return skip;
        }
        let hint = format!("plug in a shared CA: {}", super::plug_ca_command(snap, ctx));
        let Some(secret) = snap.get(Kind::Secret, &ctx.istio_ns, CACERTS_SECRET) else {
            return vec![
                Finding::warn(
                    ID,
                    format!(
                        "no {CACERTS_SECRET} secret in {}: the CA signs with a self-generated root that other clusters and VM bundles do not share",
                        ctx.istio_ns
                    ),
                )
                .object(format!("Secret {}/{CACERTS_SECRET}", ctx.istio_ns))
                .hint(hint),
            ];
        };
        let keys = secret.data_keys();
        let missing: Vec<&str> = CACERTS_KEYS
            .iter()
            .copied()
            .filter(|k| !keys.contains(k))
            .collect();
        if missing.is_empty() {
            vec![Finding::pass(
                ID,
                format!("{CACERTS_SECRET} in {} has all four keys", ctx.istio_ns),
            )]
        } else {
            vec![
                Finding::warn(
                    ID,
                    format!(
                        "lacks {}: Istio ignores an incomplete plugged-in CA",
                        missing.join(", ")
                    ),
                )
                .on(secret)
                .hint(hint),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    #[test]
    fn table() {
        let secret = |keys: &str| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: cacerts, namespace: istio-system}}\nstringData: {{{keys}}}\n"
            )
        };
        let other = "apiVersion: v1\nkind: Secret\nmetadata: {name: istio.default, namespace: default}\ndata: {}\n";
        let cases = [
            (
                "all four keys",
                Fixture::legacy().with(&secret(
                    "ca-cert.pem: a, ca-key.pem: b, root-cert.pem: c, cert-chain.pem: d",
                )),
                Pass,
            ),
            (
                "missing key",
                Fixture::legacy().with(&secret("ca-cert.pem: a, ca-key.pem: b, root-cert.pem: c")),
                Warn,
            ),
            ("no cacerts", Fixture::legacy().with(other), Warn),
            ("manifests without secrets", Fixture::legacy(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&CaPlugged), severity, case);
        }
    }

    #[test]
    fn hint_is_a_command_for_the_vm_namespace_with_ca_dir_the_only_placeholder() {
        let other = "apiVersion: v1\nkind: Secret\nmetadata: {name: istio.default, namespace: default}\ndata: {}\n";
        let out = Fixture::legacy()
            .with(other)
            .with("apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadEntry\nmetadata: {name: vm1, namespace: expandvm}\nspec: {address: 10.0.0.5}\n")
            .run(&CaPlugged);
        assert_eq!(
            out[0].hint,
            "plug in a shared CA: `kubectl meshvm prepare -n expandvm --ca-dir CA_DIR --restart-control-plane`"
        );
        let out = Fixture::legacy().with(other).run(&CaPlugged);
        assert!(
            out[0].hint.contains("`kubectl create secret generic cacerts -n istio-system --from-file=CA_DIR/ca-cert.pem --from-file=CA_DIR/ca-key.pem --from-file=CA_DIR/root-cert.pem --from-file=CA_DIR/cert-chain.pem`")
                && out[0].hint.ends_with("`kubectl rollout restart deployment/istio-citadel -n istio-system`"),
            "{}",
            out[0].hint
        );
    }
}
