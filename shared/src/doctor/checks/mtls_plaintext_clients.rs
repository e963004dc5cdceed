//! `mtls.plaintext-clients`: workloads without a sidecar that call in-mesh Services.

use std::collections::BTreeMap;

use super::workloads::{Sidecar, is_system};
use super::{list, or_pass};
use crate::doctor::mesh::PeerMode;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::snapshot::Snapshot;

/// A workload without Istio's sidecar speaks plaintext; under STRICT the in-mesh Services'
/// sidecars refuse it (PERMISSIVE is what lets it through today). Warns once per client
/// namespace, naming the workloads and why they have no sidecar. The Istio namespace's own
/// workloads (the control plane, gateways, addons) and Kubernetes' system namespaces are left
/// out: mesh policy does not govern them.
pub struct MtlsPlaintextClients;

const ID: &str = "mtls.plaintext-clients";

impl Check for MtlsPlaintextClients {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "workloads without a sidecar (namespace not injected, sidecar.istio.io/inject: false, hostNetwork) that call in-mesh Services in plaintext"
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = super::need_workloads(ID, ctx) {
            return skip;
        }
        let in_mesh: Vec<_> = ctx
            .mesh
            .dests
            .iter()
            .filter(|d| d.in_mesh.is_some() && !d.exempt)
            .collect();
        if in_mesh.is_empty() {
            return vec![Finding::pass(
                ID,
                "no in-mesh Services: STRICT guards nothing a plaintext client could call",
            )];
        }
        let strict_now: Vec<String> = in_mesh
            .iter()
            .filter(|d| ctx.mesh.ns_mode(d.ns()).mode == PeerMode::Strict)
            .map(|d| d.svc.ns_name())
            .collect();
        let mut by_ns: BTreeMap<&str, Vec<(&super::workloads::Workload<'_>, String)>> =
            BTreeMap::new();
        let mut unknown = 0;
        for w in &ctx.workloads {
            if is_system(w, &ctx.istio_ns) {
                continue;
            }
            match w.sidecar(snap, ctx.era) {
                Sidecar::Yes => {}
                Sidecar::Unknown => unknown += 1,
                Sidecar::No(why) => by_ns.entry(w.ns.as_str()).or_default().push((w, why)),
            }
        }
        let targets: Vec<String> = in_mesh.iter().map(|d| d.svc.ns_name()).collect();
        let mut out = Vec::new();
        for (ns, ws) in by_ns {
            let named: Vec<String> = ws
                .iter()
                .map(|(w, why)| format!("{} ({why})", w.reference))
                .collect();
            let (breaks, when) = if strict_now.is_empty() {
                (
                    Breaks::WhenStrict,
                    "their calls will be refused once STRICT is turned on".to_string(),
                )
            } else {
                (
                    Breaks::Now,
                    format!(
                        "calls to {} are refused now (STRICT already), the rest once STRICT is turned on",
                        list(&strict_now, 3)
                    ),
                )
            };
            let mut f = Finding::warn(
                ID,
                format!(
                    "{} workload(s) in namespace {ns} run no sidecar and reach {} in-mesh Service(s) ({}) in plaintext: {}; {when}",
                    ws.len(),
                    targets.len(),
                    list(&targets, 3),
                    list(&named, 5),
                ),
            )
            .ns(ns)
            .breaks(breaks)
            .hint(format!(
                "give them a sidecar (`kubectl label namespace {ns} istio-injection=enabled`{}, drop sidecar.istio.io/inject: \"false\", then restart them), or keep the Services they call PERMISSIVE",
                if ctx.era == Some(crate::istio::Era::Legacy) { "" } else { ", or your control plane's istio.io/rev label" }
            ));
            if let [(w, _)] = ws.as_slice() {
                f = f.on(w.obj).object(w.reference.clone());
            } else {
                f.origin = ws[0].0.obj.origin.as_deref().cloned();
            }
            out.push(f);
        }
        let checked = ctx.workloads.len();
        or_pass(
            ID,
            out,
            if unknown > 0 {
                format!(
                    "every workload judged runs a sidecar; {unknown} could not be judged (the source holds no Namespaces to read injection labels from)"
                )
            } else {
                format!("all {checked} workload(s) outside the control plane run a sidecar")
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    fn deploy(ns: &str, name: &str, meta: &str, spec: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  template:\n    metadata: {meta}\n    spec: {spec}\n"
        )
    }

    const PLAIN_NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy-apps}\n";
    const C: &str = "{containers: [{name: app, image: app:1}]}";

    /// The modern fixture plus an injected namespace with a Service.
    fn modern_app() -> Fixture {
        Fixture::modern().with(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/rev: default}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {selector: {app: cart}, ports: [{name: http, port: 80}]}\n",
        )
    }

    #[test]
    fn table() {
        let cases = [
            (
                "legacy: injected workload",
                Fixture::legacy().with(&deploy("bookinfo", "reviews", "{}", C)),
                Pass,
            ),
            (
                "legacy: workload in an uninjected namespace",
                Fixture::legacy().with(PLAIN_NS).with(&deploy("legacy-apps", "batch", "{}", C)),
                Warn,
            ),
            (
                "legacy: inject false",
                Fixture::legacy().with(&deploy(
                    "bookinfo",
                    "db",
                    "{annotations: {sidecar.istio.io/inject: 'false'}}",
                    C,
                )),
                Warn,
            ),
            (
                "legacy: hostNetwork",
                Fixture::legacy().with(&deploy(
                    "bookinfo",
                    "agent",
                    "{}",
                    "{hostNetwork: true, containers: [{name: a}]}",
                )),
                Warn,
            ),
            (
                "legacy: istio.io/rev does not inject in 1.4",
                Fixture::legacy()
                    .with("apiVersion: v1\nkind: Namespace\nmetadata: {name: r, labels: {istio.io/rev: x}}\n")
                    .with(&deploy("r", "a", "{}", C)),
                Warn,
            ),
            (
                "legacy: control plane and kube-system are not clients",
                Fixture::legacy()
                    .with(&deploy("istio-system", "prometheus", "{annotations: {sidecar.istio.io/inject: 'false'}}", C))
                    .with(&deploy("kube-system", "coredns", "{}", C)),
                Pass,
            ),
            (
                "modern: istio.io/rev namespace",
                modern_app().with(&deploy("shop", "cart", "{}", C)),
                Pass,
            ),
            (
                "modern: uninjected namespace",
                modern_app().with(PLAIN_NS).with(&deploy("legacy-apps", "cron", "{}", C)),
                Warn,
            ),
            (
                "modern: live pod without istio-proxy",
                modern_app().with("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop, annotations: {sidecar.istio.io/inject: 'false'}}\nspec: {containers: [{name: app}]}\n"),
                Warn,
            ),
            (
                "modern: no in-mesh Services",
                Fixture::modern().with(PLAIN_NS).with(&deploy("legacy-apps", "cron", "{}", C)),
                Pass,
            ),
            ("no workloads", Fixture::legacy(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsPlaintextClients), severity, case);
        }
    }

    #[test]
    fn names_workloads_namespaces_and_when() {
        let out = Fixture::legacy()
            .with(PLAIN_NS)
            .with(&deploy("legacy-apps", "batch", "{}", C))
            .with(&deploy("legacy-apps", "report", "{}", C))
            .run(&MtlsPlaintextClients);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.namespaces, ["legacy-apps"]);
        assert_eq!(f.breaks, Some(Breaks::WhenStrict));
        assert!(
            f.message.contains("Deployment legacy-apps/batch")
                && f.message.contains("Deployment legacy-apps/report")
                && f.message.contains("not labelled for injection")
                && f.message.contains("bookinfo/reviews"),
            "{}",
            f.message
        );
        // Already STRICT in the Service's namespace: refused now.
        let out = Fixture::legacy()
            .with(PLAIN_NS)
            .with(&deploy("legacy-apps", "batch", "{}", C))
            .with("apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: bookinfo}\nspec: {peers: [{mtls: {}}]}\n")
            .run(&MtlsPlaintextClients);
        assert_eq!(out[0].breaks, Some(Breaks::Now), "{out:#?}");
        assert_eq!(out[0].object, "Deployment legacy-apps/batch");
    }
}
