//! `ca.valid`: the `cacerts` files must pass `meshvm::pki` (expiring soon: warn).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{need, or_pass, system_time};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{CACERTS_KEYS, CACERTS_SECRET};
use crate::pki;
use crate::snapshot::{Kind, Snapshot};

/// Judges the plugged-in CA with [`pki::check_ca`]: chain to the root, key matches, CA flags,
/// validity. Errors fail, warnings (expiring soon) warn.
pub struct CaValid;

const ID: &str = "ca.valid";

impl Check for CaValid {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "the cacerts files fail meshvm::pki (expiring soon: warn)"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = need(ID, snap, &[Kind::Secret]) {
            return skip;
        }
        let Some(secret) = snap.get(Kind::Secret, &ctx.istio_ns, CACERTS_SECRET) else {
            return vec![Finding::skip(
                ID,
                format!("no {CACERTS_SECRET} secret in {} to validate", ctx.istio_ns),
            )];
        };
        let data: BTreeMap<String, Vec<u8>> = CACERTS_KEYS
            .iter()
            .filter_map(|k| secret.data(k).map(|v| ((*k).to_string(), v)))
            .collect();
        let name = format!("secret {}/{CACERTS_SECRET}", ctx.istio_ns);
        let material = match pki::CaMaterial::from_secret_data(&name, &data) {
            Ok(m) => m,
            Err(e) => {
                return vec![Finding::fail(ID, e.to_string()).on(secret).hint(format!(
                    "recreate cacerts from a CA directory: {}",
                    super::plug_ca_command(snap, ctx)
                ))];
            }
        };
        let warn_within = Duration::from_secs(ctx.expiry_warn_secs.max(0) as u64);
        let out = pki::check_ca(&material, system_time(ctx.now), warn_within)
            .into_iter()
            .map(|f| {
                let finding = match f.severity {
                    pki::CertSeverity::Error => Finding::fail(ID, f.to_string()),
                    pki::CertSeverity::Warning => Finding::warn(ID, f.to_string()),
                };
                finding.on(secret).hint("replace the CA files (all clusters must keep one shared root), then restart the CA")
            })
            .collect();
        or_pass(
            ID,
            out,
            format!("{CACERTS_SECRET} chains to its root, key matches, valid"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    fn sample(name: &str) -> String {
        let path = kube_sim::testenv::conformance("certs/samples").join(name);
        std::fs::read_to_string(path).unwrap()
    }

    fn cacerts(ca_cert: &str, root: &str) -> String {
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": "istio-system"},
            "stringData": {"ca-cert.pem": ca_cert, "ca-key.pem": sample("ca-key.pem"), "root-cert.pem": root, "cert-chain.pem": ca_cert},
        });
        serde_json::to_string(&value).unwrap()
    }

    #[test]
    fn table() {
        let (ca, root) = (sample("ca-cert.pem"), sample("root-cert.pem"));
        let cases = [
            ("Istio's samples", Fixture::legacy().with(&cacerts(&ca, &root)), Pass),
            ("root swapped for the CA cert", Fixture::legacy().with(&cacerts(&ca, &ca)), Fail),
            ("no cacerts", Fixture::legacy().with("apiVersion: v1\nkind: Secret\nmetadata: {name: istio.x, namespace: a}\n"), Skip),
            ("key missing", Fixture::legacy().with("apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system}\nstringData: {ca-cert.pem: x}\n"), Fail),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&CaValid), severity, case);
        }
    }

    #[test]
    fn expiring_soon_warns() {
        // The samples' root expires in 2117 and the CA in 2117: judge from 2117 minus a week.
        let snap = Fixture::legacy()
            .with(&cacerts(&sample("ca-cert.pem"), &sample("root-cert.pem")))
            .snapshot();
        let x = pki::root_identity(sample("ca-cert.pem").as_bytes()).unwrap();
        let expiry = x
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let opts = crate::doctor::CheckOptions {
            now: Some(expiry - 7 * 24 * 3600),
            ..Default::default()
        };
        let ctx = CheckContext::new(&snap, &opts, vec![]);
        expect(&CaValid.run(&snap, &ctx), Warn, "a week before expiry");
    }
}
