//! `vm.workloadentry-identity`: WorkloadEntries behind Services carry an identity and stay in mTLS.

use k8s_openapi::api::core::v1::Service;

use super::or_pass;
use crate::doctor::mesh::selects;
use crate::doctor::{Check, CheckContext, Finding};
use crate::snapshot::{Kind, Snapshot, SourceKind, borrowed, string_map};

/// The label Istio reads a workload's TLS mode from.
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Fails for a WorkloadEntry a Service selects that has no `serviceAccount` (Istio then treats
/// it as plaintext and gives it no identity), names a missing ServiceAccount, or is labelled
/// out of mTLS (`security.istio.io/tlsMode` other than `istio`).
pub struct VmWorkloadentryIdentity;

const ID: &str = "vm.workloadentry-identity";

impl Check for VmWorkloadentryIdentity {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a WorkloadEntry selected by a Service has no serviceAccount, names a missing one, or is labelled out of mTLS"
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, _ctx: &CheckContext) -> Vec<Finding> {
        if snap.source == SourceKind::Live && !snap.knows(Kind::WorkloadEntry) {
            let why = match (
                snap.refused.get(&Kind::WorkloadEntry),
                snap.not_served.get(&Kind::WorkloadEntry),
            ) {
                (Some(refused), _) => refused.clone(),
                (None, Some(why)) => format!("the cluster does not serve WorkloadEntries: {why}"),
                (None, None) => "the cluster does not serve WorkloadEntries".to_owned(),
            };
            return vec![Finding::skip(ID, why)];
        }
        let mut out = Vec::new();
        let mut seen = 0;
        for we in snap.of(Kind::WorkloadEntry) {
            let labels = string_map(we.at(&["spec", "labels"]));
            let selected: Vec<&str> = snap
                .typed::<Service>()
                .filter(|(s, typed)| {
                    let selector = typed.spec.as_ref().and_then(|s| s.selector.as_ref());
                    s.namespace() == we.namespace() && selects(&borrowed(selector), &labels)
                })
                .map(|(s, _)| s.name())
                .collect();
            if selected.is_empty() {
                continue;
            }
            seen += 1;
            let services = selected.join(", ");
            match we.str_at(&["spec", "serviceAccount"]).filter(|s| !s.is_empty()) {
                None => out.push(
                    Finding::fail(ID, format!("selected by Service {services} but has no serviceAccount: Istio gives it no identity and sends it plaintext, refused under STRICT"))
                        .on(we)
                        .hint(format!("set spec.serviceAccount, e.g. to the account prepare makes for the namespace: `kubectl -n {ns} patch workloadentry {} --type=merge -p '{{\"spec\":{{\"serviceAccount\":\"{ns}\"}}}}'`", we.name(), ns = we.namespace())),
                ),
                Some(sa) if snap.knows(Kind::ServiceAccount) && snap.get(Kind::ServiceAccount, we.namespace(), sa).is_none() => out.push(
                    Finding::fail(ID, format!("names ServiceAccount {}/{sa}, which does not exist: the VM cannot get a certificate for it", we.namespace()))
                        .on(we)
                        .now()
                        .hint(format!("`kubectl -n {} create serviceaccount {sa}`", we.namespace())),
                ),
                Some(_) => {}
            }
            if let Some(mode) = labels.get(TLS_MODE_LABEL).filter(|m| **m != "istio") {
                out.push(
                    Finding::fail(ID, format!("labelled {TLS_MODE_LABEL}={mode}: clients send it plaintext, refused under STRICT"))
                        .on(we)
                        .hint(format!("remove the label or set it to istio (spec.labels.{TLS_MODE_LABEL})")),
                );
            }
        }
        or_pass(
            ID,
            out,
            format!("{seen} selected WorkloadEntry(ies) with identity and mTLS"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass};
    use crate::doctor::testutil::{Fixture, expect};

    fn we(spec: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: vm, namespace: vms}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: vms}}\nspec: {{selector: {{app: vm}}, ports: [{{port: 80}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm-1, namespace: vms}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn table() {
        let cases = [
            (
                "good",
                we("{address: 10.0.0.1, labels: {app: vm}, serviceAccount: vm}"),
                Pass,
            ),
            ("no SA", we("{address: 10.0.0.1, labels: {app: vm}}"), Fail),
            (
                "missing SA",
                we("{address: 10.0.0.1, labels: {app: vm}, serviceAccount: ghost}"),
                Fail,
            ),
            (
                "labelled out",
                we(
                    "{address: 10.0.0.1, labels: {app: vm, security.istio.io/tlsMode: disabled}, serviceAccount: vm}",
                ),
                Fail,
            ),
            (
                "not selected",
                we("{address: 10.0.0.1, labels: {app: other}}"),
                Pass,
            ),
        ];
        for (case, yaml, severity) in cases {
            expect(
                &Fixture::modern().with(&yaml).run(&VmWorkloadentryIdentity),
                severity,
                case,
            );
        }
    }
}
