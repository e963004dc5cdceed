//! `mtls.policy-consistency`: peer authentication and DestinationRules must agree.

use std::collections::{BTreeMap, BTreeSet};

use super::or_pass;
use crate::doctor::mesh::{
    DOMAIN, Dest, Endpoint, Mesh, ModeAt, PeerMode, Port, PortRef, TLS_MODE_LABEL, TlsMode,
    is_mesh_wide, namespace_wide, tls_text,
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

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let mesh = &ctx.mesh;
        let mut out = Vec::new();
        rules_against_policies(mesh, ctx.auto_mtls, &mut out);
        policies_against_rules(mesh, ctx.auto_mtls, &mut out);
        target_policies(mesh, ctx.auto_mtls, &mut out);
        endpoints_against_clients(snap, mesh, &ctx.workloads, ctx.auto_mtls, &mut out);
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
                        "set tls.mode: ISTIO_MUTUAL (`kubectl -n {} patch destinationrule {} --type=merge -p '{{\"spec\":{{\"trafficPolicy\":{{\"tls\":{{\"mode\":\"ISTIO_MUTUAL\"}}}}}}}}'`), or make the policy PERMISSIVE",
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

/// What a client sends to one endpoint port.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sends {
    /// The resolved DestinationRule's tls (rule index).
    Rule(usize, bool),
    /// No DestinationRule TLS; auto mTLS decides (`true`: mTLS).
    Auto(bool),
}

/// Per endpoint and port, the server mode as Pilot composes it (workload- and port-level
/// PeerAuthentication, 1.4 per-port Policies) against what every client namespace sends —
/// its resolved DestinationRule's tls for the port, else auto mTLS per endpoint:
/// - mTLS to a DISABLE port fails now;
/// - plaintext to a STRICT port fails now;
/// - auto mTLS sending plaintext to a sidecar endpoint without `security.istio.io/tlsMode=istio`
///   under PERMISSIVE breaks when STRICT is on.
///
/// Namespace- and mesh-level modes against rules are judged by the functions above, and 1.4
/// STRICT target Policies with auto mTLS off by [`target_policies`]; this skips those.
fn endpoints_against_clients(
    snap: &Snapshot,
    mesh: &Mesh,
    workloads: &[super::workloads::Workload<'_>],
    auto_mtls: bool,
    out: &mut Vec<Finding>,
) {
    // (object to change, message, hint, when-strict) → client namespaces.
    type Key = (String, String, String, bool);
    let mut found: BTreeMap<Key, (BTreeSet<String>, String)> = BTreeMap::new();
    let workload_scoped = |by: Option<&Obj>| {
        by.is_some_and(|o| {
            mesh.workload_policies
                .iter()
                .any(|w| std::ptr::eq(w.obj, o))
        })
    };
    let scoped = |by: Option<&Obj>| {
        by.is_some_and(|o| {
            mesh.workload_policies
                .iter()
                .any(|w| std::ptr::eq(w.obj, o))
                || mesh.target_policies.iter().any(|t| std::ptr::eq(t.obj, o))
        })
    };
    // The workloads a rule's `workloadSelector` picks in their namespace: the same for every
    // destination, so found once (scanned per destination, this was a quarter of doctor's time
    // on a cluster of 1 000 rules and 200 workloads).
    let selected: Vec<&super::workloads::Workload<'_>> = workloads
        .iter()
        .filter(|w| {
            mesh.rules.iter().any(|r| {
                r.ns == w.ns
                    && r.selector.as_ref().is_some_and(|sel| {
                        let labels = w.labels();
                        !sel.is_empty()
                            && sel
                                .iter()
                                .all(|(k, v)| labels.get(k.as_str()) == Some(&v.as_str()))
                    })
            })
        })
        .collect();
    for dest in mesh.dests.iter().filter(|d| !d.exempt) {
        let endpoints = Endpoint::of(snap, dest);
        if endpoints.is_empty() {
            continue;
        }
        let mut groups: Vec<(String, Vec<usize>)> = mesh
            .clients()
            .map(|c| {
                (
                    c.map_or_else(
                        || "other namespaces".to_string(),
                        |c| format!("namespace {c}"),
                    ),
                    mesh.resolve(c, &dest.host, Some(dest.ns())),
                )
            })
            .collect();
        // From 1.14 a DestinationRule with a `workloadSelector` decides for the workloads it
        // selects in its namespace, before that namespace's other rules (istio/istio@1.22.0
        // pilot/pkg/model/sidecar.go:668-690): judge each such workload as a client of its own.
        if mesh.release.selectors() {
            for w in &selected {
                let group = mesh.resolve_workload(&w.ns, &w.labels(), &dest.host, Some(dest.ns()));
                let namespace_group = mesh.resolve(Some(&w.ns), &dest.host, Some(dest.ns()));
                if group != namespace_group {
                    groups.push((w.reference.clone(), group));
                }
            }
        }
        for port in dest.tcp_ports() {
            for ep in endpoints.iter().filter(|e| e.sidecar) {
                let Some(target) = ep.target_port(port) else {
                    continue;
                };
                let server = mesh.endpoint_mode(dest, port, ep, target);
                for (client, group) in &groups {
                    let tls = mesh.group_tls(group, Some(port.number), None);
                    let sends = match tls {
                        Some(TlsMode::IstioMutual) => Sends::Rule(group[0], true),
                        Some(TlsMode::Disable) => Sends::Rule(group[0], false),
                        Some(TlsMode::Simple | TlsMode::Mutual) => continue,
                        None => {
                            Sends::Auto(mesh.auto_mtls_sends(auto_mtls, dest, port, ep, target))
                        }
                    };
                    // Formatted only for a finding: this runs for every endpoint, port and
                    // client namespace of every Service.
                    let at = || {
                        format!(
                            "{}:{} (port {target} of {})",
                            dest.host,
                            port.number,
                            ep.obj.reference()
                        )
                    };
                    let via = || match sends {
                        Sends::Rule(i, _) => {
                            format!("{} ({})", mesh.rules[i].obj.reference(), tls_text(tls))
                        }
                        Sends::Auto(true) => {
                            "auto mTLS (the endpoint is labelled security.istio.io/tlsMode=istio)"
                                .to_string()
                        }
                        Sends::Auto(false) if !auto_mtls => {
                            "no DestinationRule TLS and auto mTLS off".to_string()
                        }
                        Sends::Auto(false) => format!(
                            "auto mTLS, which sends plaintext to {}",
                            auto_plaintext_reason(mesh, dest, port, ep, target)
                        ),
                    };
                    let mtls = matches!(sends, Sends::Rule(_, true) | Sends::Auto(true));
                    let key = match (mtls, server.mode) {
                        (true, PeerMode::Disable)
                            if scoped(server.by) || matches!(sends, Sends::Auto(_)) =>
                        {
                            let by = server
                                .by
                                .map_or_else(|| "Istio's default".to_string(), Obj::reference);
                            let (obj, hint) = match sends {
                                Sends::Rule(i, _) => (
                                    mesh.rules[i].obj.reference(),
                                    format!(
                                        "give {} a portLevelSettings entry for port {} with tls.mode: DISABLE, or stop disabling mTLS in {by}",
                                        mesh.rules[i].obj.reference(),
                                        port.number
                                    ),
                                ),
                                Sends::Auto(_) => (
                                    by.clone(),
                                    format!(
                                        "this Pilot release ignores workload-level DISABLE for auto mTLS: add a DestinationRule for {} with tls.mode: DISABLE on port {}, or stop disabling mTLS",
                                        dest.host, port.number
                                    ),
                                ),
                            };
                            (
                                obj,
                                format!(
                                    "{} sends mTLS to {}, where {by} disables mTLS: those connections fail",
                                    via(),
                                    at()
                                ),
                                hint,
                                false,
                            )
                        }
                        // 1.4 STRICT target Policies with auto mTLS off are `target_policies`'.
                        (false, PeerMode::Strict)
                            if workload_scoped(server.by)
                                || (auto_mtls
                                    && (scoped(server.by) || matches!(sends, Sends::Auto(_)))) =>
                        {
                            let by = server
                                .by
                                .map_or_else(|| "Istio's default".to_string(), Obj::reference);
                            let obj = match sends {
                                Sends::Rule(i, _) => mesh.rules[i].obj.reference(),
                                Sends::Auto(_) if !ep.tls_istio => ep.obj.reference(),
                                Sends::Auto(_) => by.clone(),
                            };
                            let hint = if matches!(sends, Sends::Auto(_)) && !ep.tls_istio {
                                format!(
                                    "label {} {TLS_MODE_LABEL}=istio (it runs the sidecar), or add an ISTIO_MUTUAL DestinationRule for {}",
                                    ep.obj.reference(),
                                    dest.host
                                )
                            } else {
                                format!(
                                    "send ISTIO_MUTUAL to port {} of {} (DestinationRule tls.mode: ISTIO_MUTUAL), or make {by} PERMISSIVE",
                                    port.number, dest.host
                                )
                            };
                            (
                                obj,
                                format!(
                                    "{} sends plaintext to {}, where {by} requires mTLS: those connections are refused",
                                    via(),
                                    at()
                                ),
                                hint,
                                false,
                            )
                        }
                        (false, PeerMode::Permissive)
                            if auto_mtls
                                && matches!(sends, Sends::Auto(false))
                                && !ep.tls_istio =>
                        {
                            (
                                ep.obj.reference(),
                                format!(
                                    "{} sends plaintext to {}: once the port is STRICT those connections are refused",
                                    via(),
                                    at()
                                ),
                                format!(
                                    "label {} {TLS_MODE_LABEL}=istio (it runs the sidecar), or add an ISTIO_MUTUAL DestinationRule for {}",
                                    ep.obj.reference(),
                                    dest.host
                                ),
                                true,
                            )
                        }
                        _ => continue,
                    };
                    let entry = found
                        .entry(key)
                        .or_insert_with(|| (BTreeSet::new(), dest.ns().to_string()));
                    entry.0.insert(client.clone());
                }
            }
        }
    }
    for ((obj, message, hint, when_strict), (clients, ns)) in found {
        let clients: Vec<String> = clients.into_iter().collect();
        let f = Finding::fail(ID, format!("{message} (clients in {})", clients.join(", ")))
            .object(obj)
            .ns(&ns)
            .hint(hint);
        out.push(if when_strict {
            f.when_strict()
        } else {
            f.now()
        });
    }
}

/// Why auto mTLS sends plaintext to an endpoint.
fn auto_plaintext_reason(
    mesh: &Mesh,
    dest: &Dest<'_>,
    port: &Port,
    ep: &Endpoint<'_>,
    target: u32,
) -> String {
    if !ep.tls_istio {
        return format!("{} (no {TLS_MODE_LABEL}=istio label)", ep.obj.reference());
    }
    let service = if mesh.peer_authentication {
        mesh.ns_mode(dest.ns())
    } else {
        mesh.service_mode(dest, port)
    };
    if service.mode == PeerMode::Disable {
        return format!(
            "{} ({} disables mTLS for the Service)",
            ep.obj.reference(),
            by_text(&service)
        );
    }
    let at = mesh.workload_mode(&ep.ns, &ep.labels, target);
    format!(
        "{} ({} disables mTLS on port {target})",
        ep.obj.reference(),
        by_text(&at)
    )
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

#[cfg(test)]
mod endpoint_tests {
    use super::*;
    use crate::doctor::Breaks;
    use crate::doctor::testutil::Fixture;

    /// A Service `s` in `a` (port 80 → 8080) with one sidecar Pod and one VM WorkloadEntry.
    fn svc(we_labels: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: a, labels: {{istio-injection: enabled}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: a}}\nspec: {{selector: {{app: s}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: a, labels: {{app: s, security.istio.io/tlsMode: istio}}}}\nspec: {{containers: [{{name: app}}, {{name: istio-proxy}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm, namespace: a}}\nspec: {{address: 10.0.0.9, labels: {{app: s{we_labels}}}}}\n"
        )
    }
    fn pa(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '2024-01-01T00:00:0{}Z'}}\nspec: {spec}\n",
            name.len() % 10
        )
    }
    fn dr(mode: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: s, namespace: a}}\nspec: {{host: s, trafficPolicy: {{tls: {{mode: {mode}}}}}}}\n"
        )
    }
    const LABELLED: &str = ", security.istio.io/tlsMode: istio";

    fn run(yaml: &str, minor: u32, auto: bool) -> Vec<Finding> {
        Fixture::empty()
            .with(yaml)
            .release(minor)
            .auto_mtls(auto)
            .run(&MtlsPolicyConsistency)
            .into_iter()
            .filter(|f| f.severity == crate::doctor::Severity::Fail)
            .collect()
    }
    /// Flagged objects and when they break, once each (findings are per endpoint and port).
    fn objects(fs: &[Finding]) -> Vec<(String, Breaks)> {
        let mut out: Vec<(String, Breaks)> = fs
            .iter()
            .map(|f| (f.object.clone(), f.breaks.unwrap_or(Breaks::Now)))
            .collect();
        out.dedup();
        out
    }

    #[test]
    fn workload_selector_beats_namespace_and_port_level_beats_workload() {
        // Namespace STRICT, workload PERMISSIVE, port 8080 UNSET (inherits PERMISSIVE): the VM
        // without the tlsMode label gets plaintext from auto mTLS, fine until STRICT.
        let base = svc("") + &pa("a", "ns", "{mtls: {mode: STRICT}}");
        let wl = pa(
            "a",
            "wl",
            "{selector: {matchLabels: {app: s}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {'8080': {mode: UNSET}}}",
        );
        let got = objects(&run(&(base.clone() + &wl), 22, true));
        assert_eq!(
            got,
            [("WorkloadEntry a/vm".to_string(), Breaks::WhenStrict)]
        );
        // Without the workload policy the namespace's STRICT applies: refused now.
        let got = objects(&run(&base, 22, true));
        assert_eq!(got, [("WorkloadEntry a/vm".to_string(), Breaks::Now)]);
        // Port-level STRICT on the target port beats the workload's PERMISSIVE.
        let port = pa(
            "a",
            "wl",
            "{selector: {matchLabels: {app: s}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {'8080': {mode: STRICT}}}",
        );
        let got = objects(&run(&(svc("") + &port), 22, true));
        assert_eq!(got, [("WorkloadEntry a/vm".to_string(), Breaks::Now)]);
        // Port-level on another port (the Service port, not the target) does not apply.
        let other = pa(
            "a",
            "wl",
            "{selector: {matchLabels: {app: s}}, portLevelMtls: {'80': {mode: STRICT}}}",
        );
        let got = objects(&run(&(svc(LABELLED) + &other), 22, true));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn labelled_endpoints_pass_with_auto_mtls() {
        let yaml = svc(LABELLED) + &pa("a", "ns", "{mtls: {mode: STRICT}}");
        assert!(run(&yaml, 22, true).is_empty());
        assert!(run(&yaml, 8, true).is_empty());
    }

    #[test]
    fn root_namespace_selector_policy_is_ignored() {
        let yaml = svc(LABELLED)
            + &pa(
                "istio-system",
                "wl",
                "{selector: {matchLabels: {app: s}}, mtls: {mode: DISABLE}}",
            )
            + &dr("ISTIO_MUTUAL");
        assert!(run(&yaml, 22, true).is_empty());
    }

    #[test]
    fn mutual_rule_to_a_disabled_workload_fails_now() {
        let yaml = svc(LABELLED)
            + &pa(
                "a",
                "wl",
                "{selector: {matchLabels: {app: s}}, mtls: {mode: DISABLE}}",
            )
            + &dr("ISTIO_MUTUAL");
        for minor in [8, 12, 13, 22] {
            let fs = run(&yaml, minor, true);
            assert_eq!(
                objects(&fs),
                [("DestinationRule a/s".to_string(), Breaks::Now)],
                "1.{minor}"
            );
        }
        // A DISABLE rule agrees with the workload.
        let ok = svc(LABELLED)
            + &pa(
                "a",
                "wl",
                "{selector: {matchLabels: {app: s}}, mtls: {mode: DISABLE}}",
            )
            + &dr("DISABLE");
        assert!(run(&ok, 22, true).is_empty());
    }

    #[test]
    fn auto_mtls_honours_workload_disable_from_1_12_only() {
        let yaml = svc(LABELLED)
            + &pa(
                "a",
                "wl",
                "{selector: {matchLabels: {app: s}}, mtls: {mode: DISABLE}}",
            );
        assert_eq!(
            objects(&run(&yaml, 8, true)),
            [("PeerAuthentication a/wl".to_string(), Breaks::Now)]
        );
        for minor in [12, 13, 22] {
            assert!(run(&yaml, minor, true).is_empty(), "1.{minor}");
        }
    }

    /// From 1.14 a `workloadSelector` DestinationRule decides for the client workloads it selects
    /// (istio/istio@1.22.0 pilot/pkg/model/sidecar.go:668-690): a DISABLE rule that selects one
    /// client Pod in `b` makes that Pod send plaintext to a STRICT workload, while `b`'s other
    /// workloads send mTLS. Before 1.14 the selector is unknown and the rule applies to all of `b`.
    #[test]
    fn a_selector_rule_is_judged_for_the_client_workloads_it_selects() {
        let client = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: legacy-1, namespace: b, labels: {app: legacy}}\nspec: {containers: [{name: app}, {name: istio-proxy}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: sel, namespace: b}\nspec: {host: s.a.svc.cluster.local, exportTo: ['.'], workloadSelector: {matchLabels: {app: legacy}}, trafficPolicy: {tls: {mode: DISABLE}}}\n";
        let yaml = svc(LABELLED)
            + &pa(
                "a",
                "wl",
                "{selector: {matchLabels: {app: s}}, mtls: {mode: STRICT}}",
            )
            + &dr("ISTIO_MUTUAL")
            + client;
        let found = run(&yaml, 22, false);
        let selected: Vec<&Finding> = found
            .iter()
            .filter(|f| f.object == "DestinationRule b/sel")
            .collect();
        assert!(!selected.is_empty(), "{found:#?}");
        assert!(
            selected.iter().all(|f| f.message.contains("Pod b/legacy-1")
                && !f.message.contains("namespace b")),
            "only the selected Pod sends plaintext: {selected:#?}"
        );
        // Without a client the rule selects, nothing is judged through it.
        let unselected = yaml.replace("labels: {app: legacy}}", "labels: {app: other}}");
        assert!(
            run(&unselected, 22, false)
                .iter()
                .all(|f| f.object != "DestinationRule b/sel"),
            "{:#?}",
            run(&unselected, 22, false)
        );
    }

    #[test]
    fn plaintext_rule_to_strict_workload_fails_now() {
        let yaml = svc(LABELLED)
            + &pa(
                "a",
                "wl",
                "{selector: {matchLabels: {app: s}}, mtls: {mode: STRICT}}",
            )
            + &dr("DISABLE");
        assert_eq!(
            objects(&run(&yaml, 13, false)),
            [("DestinationRule a/s".to_string(), Breaks::Now)]
        );
        let ok = yaml.replace("mode: DISABLE}}}", "mode: ISTIO_MUTUAL}}}");
        assert!(run(&ok, 13, false).is_empty());
    }

    const LEGACY_SVC: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {selector: {app: s}, ports: [{name: http, port: 80}, {name: grpc, port: 81}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {app: s, security.istio.io/tlsMode: istio}}\nspec: {containers: [{name: istio-proxy}]}\n---\napiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {peers: [{mtls: {mode: PERMISSIVE}}]}\n";
    fn policy(name: &str, ts: u32, targets: &str, peers: &str) -> String {
        format!(
            "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {{name: {name}, namespace: a, creationTimestamp: '2019-01-01T00:00:0{ts}Z'}}\nspec: {{targets: {targets}, peers: {peers}}}\n"
        )
    }

    #[test]
    fn legacy_oldest_applicable_policy_wins_per_port() {
        // Older port-less DISABLE, newer port-81 STRICT: the older applies to port 81 too
        // (Port.Match(nil) is true), so an ISTIO_MUTUAL rule fails on both ports.
        let yaml = LEGACY_SVC.to_string()
            + &policy("old", 1, "[{name: s}]", "[]")
            + &policy(
                "new",
                2,
                "[{name: s, ports: [{number: 81}]}]",
                "[{mtls: {}}]",
            )
            + &dr("ISTIO_MUTUAL");
        let fs = run(&yaml, 4, false);
        assert_eq!(
            objects(&fs),
            [("DestinationRule a/s".to_string(), Breaks::Now)]
        );
        assert!(
            fs.iter().all(|f| f.message.contains("Policy a/old")),
            "{fs:?}"
        );
        assert!(fs.iter().any(|f| f.message.contains(":81 ")), "{fs:?}");
        // Reversed ages: the port-81 STRICT Policy is older and wins on 81; port 80 keeps the
        // DISABLE Policy, so the mutual rule fails there only.
        let yaml = LEGACY_SVC.to_string()
            + &policy("old", 2, "[{name: s}]", "[]")
            + &policy(
                "new",
                1,
                "[{name: s, ports: [{number: 81}]}]",
                "[{mtls: {}}]",
            )
            + &dr("ISTIO_MUTUAL");
        let fs = run(&yaml, 4, false);
        assert!(fs.iter().any(|f| f.message.contains(":80 ")), "{fs:?}");
        assert!(fs.iter().all(|f| !f.message.contains(":81 ")), "{fs:?}");
    }

    #[test]
    fn legacy_service_policy_beats_namespace_default() {
        // Namespace default STRICT, service Policy PERMISSIVE for port name grpc; a DISABLE rule
        // is refused on 80 only (the namespace default), and reported by the namespace check.
        let yaml = LEGACY_SVC.to_string()
            + &policy(
                "svc",
                1,
                "[{name: s, ports: [{name: grpc}]}]",
                "[{mtls: {mode: PERMISSIVE}}]",
            )
            + "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: a}\nspec: {peers: [{mtls: {}}]}\n";
        let m_snap = Snapshot::from_yaml(&yaml).unwrap();
        let mesh = Mesh::at_release(
            &m_snap,
            "istio-system",
            "istio-system",
            None,
            crate::doctor::mesh::Release::minor(4),
        );
        let dest = mesh.dest("s.a.svc.cluster.local").unwrap();
        let modes: Vec<PeerMode> = dest
            .ports
            .iter()
            .map(|p| mesh.service_mode(dest, p).mode)
            .collect();
        assert_eq!(modes, [PeerMode::Strict, PeerMode::Permissive]);
    }
}
