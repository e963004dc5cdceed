//! `mtls.default-dr`: with auto mTLS off, STRICT needs a mesh-wide ISTIO_MUTUAL DestinationRule.

use super::{list, or_pass};
use crate::doctor::mesh::{TlsMode, is_mesh_wide};
use crate::doctor::{Check, CheckContext, Finding, fix};
use crate::snapshot::{Snapshot, SourceKind};

/// Fails when auto mTLS is off and no `*.local` (or `*.svc.cluster.local`) ISTIO_MUTUAL rule
/// lives in the root namespace; warns when that rule reaches Services without sidecars.
pub struct MtlsDefaultDr;

const ID: &str = "mtls.default-dr";

/// What to do about a sidecar-less `host` the mesh-wide rule `i` reaches from `client`'s
/// namespace: add a plaintext rule, or — when one exists but Pilot does not pick it for that
/// client — say which and why. Pilot takes the most specific host among the rules of the
/// client's namespace, then those the Service's namespace exports to it, then the root
/// namespace's (istio/istio@1.4.2 pilot/pkg/model/push_context.go:633-674, @1.22.0 the same
/// three steps in `destinationRule`, modelled by [`crate::doctor::mesh::Mesh::resolve`]).
fn sidecarless_hint(ctx: &CheckContext, i: usize, host: &str, client: Option<&str>) -> String {
    let mesh = &ctx.mesh;
    let svc_ns = crate::doctor::mesh::host_namespace(host).unwrap_or_default();
    let existing = mesh.rules.iter().enumerate().find(|(j, r)| {
        *j != i
            && !is_mesh_wide(&r.host)
            && mesh.dests_matching(&r.host).iter().any(|d| d.host == host)
            && r.top_tls() == Some(TlsMode::Disable)
    });
    let who = client.map_or_else(
        || "clients in namespaces without a rule of their own".to_string(),
        |c| format!("clients in namespace {c}"),
    );
    if let Some((_, r)) = existing {
        let change = if r.ns == svc_ns || r.ns == ctx.root_ns {
            format!(
                "export it to every namespace: `kubectl -n {} patch destinationrule {} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/spec/exportTo\"}}]'`",
                r.ns,
                r.obj.name()
            )
        } else {
            format!("move it to namespace {svc_ns}")
        };
        format!(
            "{} sends {host} plaintext, but {who} do not use it: Pilot takes a rule from the client's own namespace, then from the Service's namespace ({svc_ns}) when exported to the client, then from {}; {change}, or sidecar-inject the Service's pods",
            r.obj.reference(),
            ctx.root_ns
        )
    } else {
        let name = host.split('.').next().unwrap_or(host);
        format!(
            "send it plaintext with a DestinationRule in its namespace: `echo '{{\"apiVersion\":\"{}\",\"kind\":\"DestinationRule\",\"metadata\":{{\"name\":\"{name}-plaintext\",\"namespace\":\"{svc_ns}\"}},\"spec\":{{\"host\":\"{host}\",\"trafficPolicy\":{{\"tls\":{{\"mode\":\"DISABLE\"}}}}}}}}' | kubectl apply -f -` (or sidecar-inject its pods)",
            Some(mesh.rules[i].obj.api_version())
                .filter(|v| !v.is_empty())
                .unwrap_or("networking.istio.io/v1alpha3"),
        )
    }
}

impl Check for MtlsDefaultDr {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "auto mTLS is off and no mesh-wide ISTIO_MUTUAL DestinationRule exists in the root namespace"
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if snap.source == SourceKind::None {
            return vec![Finding::skip(
                ID,
                "no cluster or manifests to read DestinationRules from",
            )];
        }
        let mesh = &ctx.mesh;
        let wide: Vec<(usize, &_)> = mesh
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| is_mesh_wide(&r.host) && !r.selective)
            .collect();
        let in_root =
            |r: &&crate::doctor::mesh::Rule| r.ns == ctx.root_ns && r.export.visible_to(None);
        let mutual: Vec<usize> = wide
            .iter()
            .filter(|(_, r)| in_root(r) && r.top_tls() == Some(TlsMode::IstioMutual))
            .map(|(i, _)| *i)
            .collect();
        let mut out = Vec::new();
        if mutual.is_empty() && !ctx.auto_mtls {
            let plan = fix::plan(snap, ctx);
            let hint = format!(
                "{}:\n{}",
                super::fix_lead(snap, ctx),
                fix::render_yaml(
                    &plan
                        .iter()
                        .filter(|o| o.name() == fix::DEFAULT_DR_NAME)
                        .cloned()
                        .collect::<Vec<_>>()
                )
            );
            let why = format!("auto mTLS is off ({})", ctx.auto_mtls_source);
            if let Some((_, r)) = wide.iter().find(|(_, r)| in_root(r)) {
                out.push(
                    Finding::fail(
                        ID,
                        format!(
                            "{why} and the mesh-wide rule for {} sets {}, not ISTIO_MUTUAL: under STRICT sidecars refuse that traffic",
                            r.host,
                            crate::doctor::mesh::tls_text(r.top_tls())
                        ),
                    )
                    .on(r.obj)
                    .hint(format!("set spec.trafficPolicy.tls.mode: ISTIO_MUTUAL : `kubectl -n {} patch destinationrule {} --type=merge -p '{{\"spec\":{{\"trafficPolicy\":{{\"tls\":{{\"mode\":\"ISTIO_MUTUAL\"}}}}}}}}'`", r.ns, r.obj.name())),
                );
            } else {
                let elsewhere: Vec<String> = wide.iter().map(|(_, r)| r.obj.ns_name()).collect();
                let extra = if elsewhere.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} only reach clients of their own namespace, or are not exported)",
                        list(&elsewhere, 3)
                    )
                };
                out.push(
                    Finding::fail(
                        ID,
                        format!(
                            "{why} and there is no mesh-wide ISTIO_MUTUAL DestinationRule (host *.local in {}){extra}: under STRICT every sidecar-to-sidecar call is sent in plaintext and refused",
                            ctx.root_ns
                        ),
                    )
                    .hint(hint),
                );
            }
        }
        // What istioctl 1.5 called IST0115: the mesh-wide rule also sends mTLS to Services that
        // have no sidecar to terminate it.
        for &i in &mutual {
            let rule = &mesh.rules[i];
            // `(host, a client namespace the mesh-wide rule decides for)`.
            let reached: Vec<(&str, Option<&str>)> = mesh
                .dests
                .iter()
                .filter(|d| d.in_mesh.is_none() && !d.exempt)
                .filter_map(|d| {
                    mesh.winning_client(i, &d.host, Some(d.ns()))
                        .map(|c| (d.host.as_str(), c))
                })
                .collect();
            if let Some(&(first, client)) = reached.first() {
                let hosts: Vec<&str> = reached.iter().map(|(h, _)| *h).collect();
                out.push(
                    Finding::warn(
                        ID,
                        format!(
                            "the mesh-wide rule sends ISTIO_MUTUAL to {} Service(s) without a sidecar: {}; calls to them from the mesh fail",
                            hosts.len(),
                            list(&hosts, 5)
                        ),
                    )
                    .on(rule.obj)
                    .namespaces(hosts.iter().filter_map(|h| crate::doctor::mesh::host_namespace(h)))
                    .now()
                    .hint(sidecarless_hint(ctx, i, first, client)),
                );
            }
        }
        let pass = if ctx.auto_mtls && mutual.is_empty() {
            format!(
                "auto mTLS is on ({}): sidecars choose ISTIO_MUTUAL without a mesh-wide rule",
                ctx.auto_mtls_source
            )
        } else {
            format!("mesh-wide ISTIO_MUTUAL rule present in {}", ctx.root_ns)
        };
        or_pass(ID, out, pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Warn};
    use crate::doctor::testutil::{Fixture, expect, flagged};

    #[test]
    fn table() {
        let cases = [
            ("legacy without rule", Fixture::legacy(), Fail),
            ("legacy with rule", Fixture::legacy().with_default_dr(), Pass),
            ("modern: auto mTLS on by default", Fixture::modern(), Pass),
            ("modern with auto mTLS forced off", Fixture::modern().auto_mtls(false), Fail),
            ("legacy with auto mTLS forced on", Fixture::legacy().auto_mtls(true), Pass),
            (
                "rule only in an app namespace",
                Fixture::legacy().with("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: d, namespace: bookinfo}\nspec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n"),
                Fail,
            ),
            (
                "mesh-wide rule with DISABLE",
                Fixture::legacy().with("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: default, namespace: istio-system}\nspec: {host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}\n"),
                Fail,
            ),
            (
                "svc.cluster.local counts as mesh-wide",
                Fixture::legacy().with("apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: default, namespace: istio-system}\nspec: {host: '*.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n"),
                Pass,
            ),
            (
                "mesh config says auto mTLS off",
                Fixture::modern().with("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata: {mesh: 'enableAutoMtls: false'}\n"),
                Fail,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsDefaultDr), severity, case);
        }
    }

    #[test]
    fn failure_hint_carries_the_runbook_rule() {
        let out = Fixture::legacy().run(&MtlsDefaultDr);
        assert!(
            out[0]
                .message
                .contains("auto mTLS is off (the legacy era's default)"),
            "{}",
            out[0].message
        );
        assert!(
            out[0].hint.contains("host: '*.local'") || out[0].hint.contains("host: \"*.local\""),
            "{}",
            out[0].hint
        );
    }

    #[test]
    fn mutual_rule_reaching_sidecarless_services_warns() {
        let out = Fixture::legacy()
            .with_default_dr()
            .with("apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: legacy-db}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n")
            .run(&MtlsDefaultDr);
        assert_eq!(
            flagged(&out),
            [(Warn, "DestinationRule istio-system/default".to_string())]
        );
        assert!(out[0].message.contains("db.legacy-db.svc.cluster.local"));
        // A DISABLE rule for it takes the Service out of the mesh-wide rule's reach.
        let out = Fixture::legacy()
            .with_default_dr()
            .with("apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: legacy-db}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: db, namespace: istio-system}\nspec: {host: db.legacy-db.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}\n")
            .run(&MtlsDefaultDr);
        expect(&out, Pass, "disabled for the sidecar-less db");
        // A plaintext rule that only its own namespace sees: the hint names it, not "add one".
        let out = Fixture::legacy()
            .with_default_dr()
            .with("apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: legacy-db}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: db, namespace: legacy-db}\nspec: {host: db, exportTo: ['.'], trafficPolicy: {tls: {mode: DISABLE}}}\n")
            .run(&MtlsDefaultDr);
        assert_eq!(flagged(&out).len(), 1, "{out:#?}");
        assert!(
            out[0].hint.starts_with(
                "DestinationRule legacy-db/db sends db.legacy-db.svc.cluster.local plaintext"
            ) && out[0]
                .hint
                .contains("kubectl -n legacy-db patch destinationrule db --type=json"),
            "{}",
            out[0].hint
        );
        assert!(
            !out[0].hint.contains("add a DestinationRule"),
            "{}",
            out[0].hint
        );
    }
}
