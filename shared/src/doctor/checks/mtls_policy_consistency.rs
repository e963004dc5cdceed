//! `mtls.policy-consistency`: peer authentication and DestinationRules must agree.

use std::collections::BTreeMap;

use super::or_pass;
use crate::doctor::mesh::{
    DOMAIN, Dest, Mesh, ModeAt, PeerMode, PortRef, TlsMode, is_mesh_wide, namespace_wide, tls_text,
};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::snapshot::{Obj, Snapshot};

/// Mesh-, namespace- and (1.4) service-level PeerAuthentication / MeshPolicy / Policy against
/// the DestinationRules at the same scope — the cases of Kiali's KIA0205–0208, 0401, 0501,
/// 0505, 0506 and istioctl 1.5's IST0113:
/// - a rule sends DISABLE/SIMPLE/MUTUAL where a policy object requires STRICT (rule fails);
/// - a rule sends ISTIO_MUTUAL (auto mTLS off) where nothing enables mTLS (rule fails);
/// - a policy disables mTLS while its scope's rule sends mTLS (policy fails);
/// - a policy requires STRICT, auto mTLS is off and its scope's rule is not ISTIO_MUTUAL (policy fails).
pub struct MtlsPolicyConsistency;

const ID: &str = "mtls.policy-consistency";

enum Scope<'m, 'a> {
    Mesh,
    Namespace(&'m str),
    Host(&'m Dest<'a>),
}

fn by_text(at: &ModeAt) -> String {
    at.by.map_or_else(
        || format!("Istio's default ({})", at.mode.as_str()),
        |o| format!("{} ({})", o.reference(), at.mode.as_str()),
    )
}

fn is_mtls(tls: Option<TlsMode>) -> bool {
    matches!(tls, Some(TlsMode::IstioMutual | TlsMode::Mutual))
}

impl Check for MtlsPolicyConsistency {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "mesh/namespace-wide PeerAuthentication (or 1.4 MeshPolicy/Policy) and DestinationRules disagree"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn run(&self, _snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let mesh = &ctx.mesh;
        let mut out = Vec::new();
        rules_against_policies(mesh, ctx.auto_mtls, &mut out);
        policies_against_rules(mesh, ctx.auto_mtls, &mut out);
        target_policies(mesh, ctx.auto_mtls, &mut out);
        or_pass(
            ID,
            out,
            "peer authentication and DestinationRules agree at mesh and namespace level",
        )
    }
}

/// Rule side: KIA0205/0206 (mutual, nothing enables mTLS), KIA0207/0208 (non-mutual vs STRICT).
fn rules_against_policies(mesh: &Mesh, auto_mtls: bool, out: &mut Vec<Finding>) {
    for rule in mesh.rules.iter().filter(|r| !r.selective) {
        let scope = if is_mesh_wide(&rule.host) {
            Scope::Mesh
        } else if let Some(ns) = namespace_wide(&rule.host) {
            Scope::Namespace(ns)
        } else if let Some(d) = mesh.dest(&rule.host).filter(|d| !d.exempt) {
            Scope::Host(d)
        } else {
            continue;
        };
        let (at, scope_text) = match &scope {
            Scope::Mesh => (mesh.mesh_mode(), "mesh-wide".to_string()),
            Scope::Namespace(ns) => (mesh.ns_mode(ns), format!("namespace {ns}")),
            Scope::Host(d) => {
                let Some(port) = d.tcp_ports().next() else {
                    continue;
                };
                (mesh.service_mode(d, port), d.host.clone())
            }
        };
        let tls = rule.top_tls();
        match tls {
            Some(TlsMode::Disable | TlsMode::Simple | TlsMode::Mutual)
                if at.mode == PeerMode::Strict
                    && at.by.is_some()
                    && !matches!(scope, Scope::Host(_)) =>
            {
                out.push(
                    Finding::fail(
                        ID,
                        format!(
                            "sends {} {scope_text} where {} requires mTLS: those connections are refused",
                            tls_text(tls),
                            by_text(&at)
                        ),
                    )
                    .on(rule.obj)
                    .hint(format!(
                        "set tls.mode: ISTIO_MUTUAL (kubectl -n {} patch destinationrule {} --type=merge -p '{{\"spec\":{{\"trafficPolicy\":{{\"tls\":{{\"mode\":\"ISTIO_MUTUAL\"}}}}}}}}'), or make the policy PERMISSIVE",
                        rule.ns,
                        rule.obj.name()
                    )),
                );
            }
            Some(TlsMode::IstioMutual)
                if !auto_mtls
                    && at.mode == PeerMode::Disable
                    && (at.by.is_none() || matches!(scope, Scope::Host(_))) =>
            {
                out.push(
                    Finding::fail(
                        ID,
                        format!(
                            "sends ISTIO_MUTUAL {scope_text}, but {} leaves servers plaintext-only: those connections fail",
                            by_text(&at)
                        ),
                    )
                    .on(rule.obj)
                    .hint(match scope {
                        Scope::Mesh => "enable mTLS mesh-wide first: a MeshPolicy/PeerAuthentication `default` with mode PERMISSIVE, then STRICT".to_string(),
                        Scope::Namespace(ns) => format!("enable mTLS in namespace {ns} first (PeerAuthentication/Policy `default`, PERMISSIVE then STRICT)"),
                        Scope::Host(d) => format!("enable mTLS for {} first (PERMISSIVE, then STRICT)", d.host),
                    }),
                );
            }
            _ => {}
        }
    }
}

/// Policy side: KIA0401/0501 (STRICT without a mutual rule), KIA0505/0506 (DISABLE with a mutual rule).
fn policies_against_rules(mesh: &Mesh, auto_mtls: bool, out: &mut Vec<Finding>) {
    let mut scopes: Vec<(&Obj, PeerMode, Option<&str>)> = Vec::new();
    if let Some(p) = mesh.mesh_policy
        && let Some(mode) = p.mode
    {
        scopes.push((p.obj, mode, None));
    }
    for (ns, p) in &mesh.ns_policies {
        if let Some(mode) = p.mode {
            scopes.push((p.obj, mode, Some(ns)));
        }
    }
    for (obj, mode, ns) in scopes {
        let (rule, where_) = match ns {
            None => {
                let rules = mesh.mesh_scope_rules();
                let pick = rules
                    .iter()
                    .find(|r| {
                        if mode == PeerMode::Disable {
                            is_mtls(r.top_tls())
                        } else {
                            r.top_tls() == Some(TlsMode::IstioMutual)
                        }
                    })
                    .or_else(|| rules.first())
                    .copied();
                (pick, "mesh-wide".to_string())
            }
            Some(ns) => (mesh.ns_scope_rule(ns), format!("namespace {ns}")),
        };
        let tls = rule.and_then(crate::doctor::mesh::Rule::top_tls);
        let rule_text = rule.map_or_else(
            || format!("no {where_} DestinationRule"),
            |r| format!("{} ({})", r.obj.reference(), tls_text(tls)),
        );
        match mode {
            PeerMode::Disable if is_mtls(tls) => out.push(
                Finding::fail(
                    ID,
                    format!("disables mTLS {where_}, but {rule_text} still sends mTLS: those connections fail"),
                )
                .on(obj)
                .hint(format!(
                    "add a {where_} DestinationRule with tls.mode: DISABLE (host {}), or enable mTLS",
                    ns.map_or_else(|| "*.local".to_string(), |n| format!("*.{n}.svc.{DOMAIN}"))
                )),
            ),
            PeerMode::Strict if !auto_mtls && tls != Some(TlsMode::IstioMutual) => out.push(
                Finding::fail(
                    ID,
                    format!(
                        "requires mTLS {where_}, but with auto mTLS off {rule_text} leaves clients sending plaintext, which is refused"
                    ),
                )
                .on(obj)
                .hint(format!(
                    "add a {where_} DestinationRule with tls.mode: ISTIO_MUTUAL (host {})",
                    ns.map_or_else(|| "*.local".to_string(), |n| format!("*.{n}.svc.{DOMAIN}"))
                )),
            ),
            _ => {}
        }
    }
}

/// 1.4 service-level Policies (istioctl 1.5's IST0113): every in-mesh client must resolve an
/// ISTIO_MUTUAL rule for each targeted TCP port.
fn target_policies(mesh: &Mesh, auto_mtls: bool, out: &mut Vec<Finding>) {
    if auto_mtls {
        return;
    }
    for tp in mesh
        .target_policies
        .iter()
        .filter(|t| t.mode == PeerMode::Strict)
    {
        let mut unresolved: Vec<String> = Vec::new();
        let mut wrong: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (name, ports) in &tp.targets {
            let host = format!("{name}.{}.svc.{DOMAIN}", tp.obj.namespace());
            let Some(dest) = mesh.dest(&host) else {
                continue;
            };
            let targeted: Vec<_> = dest
                .tcp_ports()
                .filter(|p| {
                    ports.is_empty()
                        || ports.iter().any(|r| match r {
                            PortRef::Number(n) => *n == p.number,
                            PortRef::Name(n) => *n == p.name,
                        })
                })
                .collect();
            for client in mesh.clients() {
                let winners = mesh.resolve(client, &host, Some(dest.ns()));
                let Some(&i) = winners.first() else {
                    let who = client.map_or_else(
                        || "other namespaces".to_string(),
                        |c| format!("namespace {c}"),
                    );
                    if !unresolved.contains(&who) {
                        unresolved.push(who);
                    }
                    continue;
                };
                for port in &targeted {
                    let tls = mesh.rules[i].tls_for(Some(port.number), None);
                    if tls != Some(TlsMode::IstioMutual) {
                        let text = format!("{host}:{} ({})", port.number, tls_text(tls));
                        let entry = wrong.entry(i).or_default();
                        if !entry.contains(&text) {
                            entry.push(text);
                        }
                    }
                }
            }
        }
        if !unresolved.is_empty() {
            out.push(
                Finding::fail(
                    ID,
                    format!(
                        "requires mTLS for its targets, but clients in {} resolve no DestinationRule for them and send plaintext (auto mTLS off)",
                        unresolved.join(", ")
                    ),
                )
                .on(tp.obj)
                .hint("add an ISTIO_MUTUAL DestinationRule for the targeted hosts that these namespaces see (exportTo)"),
            );
        }
        for (i, texts) in wrong {
            out.push(
                Finding::fail(
                    ID,
                    format!("sends {} where {} requires mTLS", texts.join(", "), tp.obj.reference()),
                )
                .on(mesh.rules[i].obj)
                .hint("set tls.mode: ISTIO_MUTUAL for these ports (each portLevelSettings entry replaces the rule's tls)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass};
    use crate::doctor::testutil::{Fixture, expect, flagged};

    fn dr(ns: &str, name: &str, host: &str, mode: Option<&str>) -> String {
        let tp = mode
            .map(|m| format!(", trafficPolicy: {{tls: {{mode: {m}}}}}"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{host: '{host}'{tp}}}\n"
        )
    }
    fn pa(ns: &str, name: &str, mode: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
        )
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, String, bool, Vec<&str>)> = vec![
            (
                "mutual mesh rule, no policy, 1.4 default plaintext",
                dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL")),
                false,
                vec!["DestinationRule istio-system/d"],
            ),
            (
                "same with auto mTLS",
                dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL")),
                true,
                vec![],
            ),
            (
                "mutual mesh rule, PERMISSIVE mesh",
                dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL"))
                    + &pa("istio-system", "default", "PERMISSIVE"),
                false,
                vec![],
            ),
            (
                "DISABLE mesh rule, STRICT mesh",
                dr("bookinfo", "d", "*.local", Some("DISABLE"))
                    + &pa("istio-system", "default", "STRICT"),
                true,
                vec!["DestinationRule bookinfo/d"],
            ),
            (
                "DISABLE ns rule, STRICT ns",
                dr(
                    "bookinfo",
                    "d",
                    "*.bookinfo.svc.cluster.local",
                    Some("DISABLE"),
                ) + &pa("bookinfo", "default", "STRICT"),
                true,
                vec!["DestinationRule bookinfo/d"],
            ),
            (
                "DISABLE ns rule, PERMISSIVE ns under STRICT mesh",
                dr(
                    "bookinfo",
                    "d",
                    "*.bookinfo.svc.cluster.local",
                    Some("DISABLE"),
                ) + &pa("bookinfo", "default", "PERMISSIVE")
                    + &pa("istio-system", "default", "STRICT"),
                true,
                vec![],
            ),
            (
                "STRICT mesh, no mutual rule",
                pa("istio-system", "default", "STRICT"),
                false,
                vec!["PeerAuthentication istio-system/default"],
            ),
            (
                "STRICT mesh, no mutual rule, auto mTLS",
                pa("istio-system", "default", "STRICT"),
                true,
                vec![],
            ),
            (
                "STRICT ns, ns rule without tls",
                pa("bar", "default", "STRICT") + &dr("bar", "d", "*.bar.svc.cluster.local", None),
                false,
                vec!["PeerAuthentication bar/default"],
            ),
            (
                "STRICT ns, mesh mutual rule",
                pa("bar", "default", "STRICT")
                    + &dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL")),
                false,
                vec![],
            ),
            (
                "DISABLE mesh, mutual mesh rule",
                pa("istio-system", "disable-all", "DISABLE")
                    + &dr("bookinfo", "d", "*.local", Some("ISTIO_MUTUAL")),
                true,
                vec!["PeerAuthentication istio-system/disable-all"],
            ),
            (
                "DISABLE ns, mesh mutual rule",
                pa("bookinfo", "disable-all", "DISABLE")
                    + &dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL")),
                true,
                vec!["PeerAuthentication bookinfo/disable-all"],
            ),
            (
                "DISABLE ns, ns DISABLE rule cancels the mesh one",
                pa("bookinfo", "disable-all", "DISABLE")
                    + &dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL"))
                    + &dr(
                        "bookinfo",
                        "n",
                        "*.bookinfo.svc.cluster.local",
                        Some("DISABLE"),
                    ),
                true,
                vec![],
            ),
        ];
        for (case, yaml, auto, objects) in cases {
            let out = Fixture::empty()
                .with(&yaml)
                .auto_mtls(auto)
                .run(&MtlsPolicyConsistency);
            let got: Vec<String> = flagged(&out)
                .into_iter()
                .map(|(s, o)| {
                    assert_eq!(s, Fail, "{case}");
                    o
                })
                .collect();
            assert_eq!(got, objects, "{case}: {out:#?}");
        }
    }

    #[test]
    fn legacy_policies() {
        let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {selector: {app: s}, ports: [{port: 80}, {port: 81}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {app: s}}\nspec: {containers: [{name: istio-proxy}]}\n";
        let policy = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: a}\nspec: {targets: [{name: s}], peers: [{mtls: {}}]}\n";
        let cases = [
            ("targeted STRICT, no rule", format!("{svc}{policy}"), Fail),
            (
                "targeted STRICT, mutual rule",
                format!("{svc}{policy}{}", dr("a", "d", "s", Some("ISTIO_MUTUAL"))),
                Pass,
            ),
            (
                "MeshPolicy without peers is plaintext; mutual rule fails",
                format!(
                    "{}---\napiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: default}}\nspec: {{}}\n",
                    dr("istio-system", "d", "*.local", Some("ISTIO_MUTUAL"))
                ),
                Fail,
            ),
        ];
        for (case, yaml, severity) in cases {
            expect(
                &Fixture::empty().with(&yaml).run(&MtlsPolicyConsistency),
                severity,
                case,
            );
        }
    }
}
